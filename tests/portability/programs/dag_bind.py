"""ray.dag: build a graph with .bind(), run it with execute(), inputs and several outputs."""

import ray
from ray.dag import InputNode, MultiOutputNode


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def mul(a, b):
    return a * b


@ray.remote
class Acc:
    def __init__(self, start):
        self.total = start

    def add(self, x):
        self.total += x
        return self.total


def main():
    ray.init(num_cpus=2)
    graph = add.bind(mul.bind(2, 3), 4)
    print("constant graph:", ray.get(graph.execute()))
    with InputNode() as inp:
        dag = add.bind(mul.bind(inp, 10), inp)
    print("input 3:", ray.get(dag.execute(3)), "input 5:", ray.get(dag.execute(5)))
    with InputNode() as inp:
        dag = MultiOutputNode([add.bind(inp[0], inp[1]), mul.bind(inp.x, 2)])
    # inp[0], inp[1] from positional arguments and inp.x from a keyword argument.
    print("multi output:", ray.get(dag.execute(1, 2, x=7)))
    acc = Acc.bind(100)
    dag = acc.add.bind(add.bind(1, 1))
    print("actor in a graph:", ray.get(dag.execute()))
    with InputNode() as inp:
        shared = mul.bind(inp, inp)
        dag = add.bind(shared, shared)
    print("shared node:", ray.get(dag.execute(4)))
    print("bind returns a DAGNode:", type(dag).__name__)
    ray.shutdown()


if __name__ == "__main__":
    main()
