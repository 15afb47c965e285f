"""The classic DAG API: ``.bind`` builds a graph without running it, ``execute`` runs it.

Behaviour checked against Ray's documentation of ray.dag: results flow from node to node
as ObjectRefs (a top-level ref arrives as its value, a nested one as the ref), each node
runs once per execute, a class node makes one actor per execute, InputNode selections
read the execute arguments, and misuse fails with Ray's errors.
"""

import pytest

import purerun
from purerun.dag import (ClassMethodNode, ClassNode, DAGInputData, DAGNode, FunctionNode,
                         InputAttributeNode, InputNode, MultiOutputNode)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    purerun.init(num_cpus=2)
    try:
        yield
    finally:
        purerun.shutdown()


@purerun.remote
def add(a, b):
    return a + b


@purerun.remote
def double(x):
    return 2 * x


@purerun.remote
def identity(x):
    return x


@purerun.remote
def kinds(top, nested):
    return type(top).__name__, [type(v).__name__ for v in nested["refs"]]


@purerun.remote
def pid():
    import os
    return os.getpid()


@purerun.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def add(self, x):
        self.value += x
        return self.value

    def pid(self):
        import os
        return os.getpid()


def test_bind_builds_nodes_without_running_anything():
    node = add.bind(1, 2)
    assert isinstance(node, FunctionNode) and isinstance(node, DAGNode)
    assert node.get_args() == (1, 2) and node.get_kwargs() == {}
    counter = Counter.bind(5)
    assert isinstance(counter, ClassNode)
    method = counter.add.bind(1)
    assert isinstance(method, ClassMethodNode)
    assert purerun.get(counter.__ray_ready__.bind().execute()) is True
    assert purerun.get(node.execute()) == 3


def test_nodes_chain_and_each_runs_once_per_execute():
    shared = pid.bind()
    dag = MultiOutputNode([shared, add.bind(double.bind(shared), 0), shared])
    first, second, third = purerun.get(dag.execute())
    assert first == third and second == 2 * first


def test_nested_nodes_arrive_as_refs_top_level_as_values():
    dag = kinds.bind(double.bind(1), {"refs": [double.bind(2), 7]})
    top, nested = purerun.get(dag.execute())
    assert top == "int"
    assert nested == ["ObjectRef", "int"]


def test_input_node_selections():
    with InputNode() as inp:
        dag = MultiOutputNode([identity.bind(inp[0]), identity.bind(inp.y),
                               identity.bind(inp["y"]), add.bind(inp[1], inp.y)])
    assert purerun.get(dag.execute(1, 2, y=10)) == [1, 10, 10, 12]
    # One positional argument and no keyword: the selections apply to that object.
    with InputNode() as inp:
        whole = double.bind(inp)
        parts = add.bind(inp[0], inp[1])
    assert purerun.get(whole.execute(4)) == 8
    assert purerun.get(parts.execute([3, 4])) == 7

    class Point:
        x, y = 2, 3

    with InputNode() as inp:
        dag = add.bind(inp.x, inp.y)
    assert purerun.get(dag.execute(Point())) == 5
    with InputNode() as inp:
        dag = add.bind(inp["a"], inp["b"])
    assert purerun.get(dag.execute({"a": 1, "b": 2})) == 3
    assert isinstance(inp.x, InputAttributeNode)
    assert inp.x is inp.x  # one node per selection


def test_execute_returns_refs_lists_and_handles():
    assert isinstance(add.bind(1, 1).execute(), purerun.ObjectRef)
    two = add.options(num_returns=1).bind(1, 1).execute()
    assert purerun.get(two) == 2
    handle = Counter.bind(3).execute()
    assert purerun.get(handle.add.remote(1)) == 4
    purerun.kill(handle)
    refs = MultiOutputNode([add.bind(1, 2), double.bind(5)]).execute()
    assert isinstance(refs, list) and purerun.get(refs) == [3, 10]


def test_class_node_one_actor_per_execute():
    with InputNode() as inp:
        counter = Counter.bind(100)
        first = counter.add.bind(inp)
        second = counter.add.bind(first)
        dag = MultiOutputNode([first, second, counter.pid.bind()])
    a1, a2, pid1 = purerun.get(dag.execute(1))
    assert (a1, a2) == (101, 202)  # the same actor got both calls, in order
    b1, b2, pid2 = purerun.get(dag.execute(1))
    assert (b1, b2) == (101, 202)  # a new actor: its state starts again
    assert pid1 != pid2


def test_options_before_bind():
    dag = Counter.options(num_cpus=0).bind(1).add.options(name="step").bind(2)
    assert purerun.get(dag.execute()) == 3
    node = double.options(max_retries=0).bind(4)
    assert node.get_options()["max_retries"] == 0
    assert purerun.get(node.execute()) == 8
    with pytest.raises(ValueError):
        Counter.bind().add.options(not_an_option=1)


def test_bind_on_a_live_actor_handle():
    handle = Counter.remote(10)
    dag = add.bind(handle.add.bind(1), handle.add.bind(1))
    assert purerun.get(dag.execute()) == 23
    purerun.kill(handle)


def test_misuse_errors():
    node = add.bind(1, 2)
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used"):
        node.remote()
    with pytest.raises(AttributeError, match=r"\.bind\(\) cannot be used again"):
        node.bind(1)
    with pytest.raises(TypeError):
        add.bind(1, 2, 3)  # checked against the signature in the caller, as .remote
    with pytest.raises(TypeError):
        Counter.bind(1, 2, 3)
    with pytest.raises(AttributeError, match="no method 'nope'"):
        Counter.bind().nope
    with pytest.raises(ValueError, match="should not take any args"):
        InputNode(1)
    outside = InputNode()
    with pytest.raises(AssertionError, match="context manager"):
        double.bind(outside).execute(1)
    with InputNode() as one, InputNode() as two:
        dag = add.bind(one, two)
    with pytest.raises(AssertionError, match="only have one unique InputNode"):
        dag.execute(1)
    with pytest.raises(ValueError):
        MultiOutputNode(add.bind(1, 2))
    with pytest.raises(NotImplementedError, match="Compiled Graphs"):
        node.experimental_compile()


def test_errors_flow_through_the_graph():
    @purerun.remote
    def fail(x):
        raise ValueError(f"bad {x}")

    dag = add.bind(fail.bind(1), 2)
    with pytest.raises(ValueError, match="bad 1"):
        purerun.get(dag.execute())


def test_dag_input_data_and_long_chain():
    data = DAGInputData(1, 2, k=3)
    assert (data[0], data[1], data["k"]) == (1, 2, 3)
    with pytest.raises(ValueError):
        data[1.5]
    with InputNode() as inp:
        node = inp
        for _ in range(30):
            node = add.bind(node, 1)
    assert purerun.get(node.execute(0)) == 30


def test_import_paths_as_ray():
    from purerun.dag.class_node import ClassMethodNode as A, ClassNode as B
    from purerun.dag.dag_node import DAGNode as C
    from purerun.dag.function_node import FunctionNode as D
    from purerun.dag.input_node import InputAttributeNode as E, InputNode as F
    from purerun.dag.output_node import MultiOutputNode as G
    assert (A, B, C, D, E, F, G) == (ClassMethodNode, ClassNode, DAGNode, FunctionNode,
                                     InputAttributeNode, InputNode, MultiOutputNode)
    assert purerun.dag.InputNode is InputNode
