"""The public API on a real cluster: init/shutdown, get/put/wait, ObjectRef, the runtime
context, cluster state and the errors a user can cause with ``remote``/``.options``.

The first section starts its own clusters (init arguments, auto-start); everything after it
shares one module-scoped cluster. Tests that need a task to stay running hold it on a
``Gate``: the task waits for a file to appear, with a deadline, and the test (or the
fixture's teardown) creates the file.
"""

import asyncio
import concurrent.futures
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import time
import uuid

import cloudpickle
import pytest

import purerun
from purerun import exceptions
from helpers import wait_for

# A task held on a gate gives up after this long, so a broken test cannot hold a worker
# for the rest of the session.
GATE_DEADLINE_S = 30.0


@purerun.remote
def wait_for_file(path, value=None, timeout=GATE_DEADLINE_S):
    """Return ``value`` once ``path`` exists; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.002)
    return value


@purerun.remote
def identity(x):
    return x


@purerun.remote
def fail(message):
    raise ValueError(message)


class Gate:
    """A file that tasks wait for: ``hold(...)`` submits a task that runs until ``open()``."""

    def __init__(self, directory):
        self.path = str(directory / f"gate-{uuid.uuid4().hex}")
        self.refs = []

    def hold(self, value=None, **task_options):
        fn = wait_for_file.options(**task_options) if task_options else wait_for_file
        ref = fn.remote(self.path, value)
        self.refs.append(ref)
        return ref

    def open(self):
        with open(self.path, "w"):
            pass

    def close(self):
        """Open the gate and wait until every held task finished (frees their workers)."""
        self.open()
        if self.refs:
            purerun.wait(self.refs, num_returns=len(self.refs), timeout=GATE_DEADLINE_S)


@pytest.fixture
def no_cluster():
    """For tests that start (or must not start) their own cluster: none may be running,
    and whatever the test started is shut down afterwards."""
    assert not purerun.is_initialized(), (
        "a cluster is already running: tests with their own cluster must come before the "
        "first test that uses the module's shared cluster")
    yield
    purerun.shutdown()


# --- init and shutdown (each test starts its own cluster) ----------------------------------


def test_init_rejects_unknown_keyword_naming_it(no_cluster):
    with pytest.raises(RuntimeError, match="not_a_real_argument"):
        purerun.init(num_cpus=1, not_a_real_argument=True)
    assert not purerun.is_initialized()


def test_init_accepts_and_ignores_ray_only_arguments(no_cluster):
    purerun.init(num_cpus=1, include_dashboard=False, dashboard_port=8265,
                 _system_config={"automatic_object_spilling_enabled": False},
                 logging_level=logging.WARNING, configure_logging=False, _temp_dir="/nowhere",
                 namespace="test")
    assert purerun.is_initialized()
    assert purerun.get(identity.remote(7)) == 7


def test_second_init_raises_unless_told_to_ignore_it(no_cluster):
    first = purerun.init(num_cpus=1)
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        purerun.init(num_cpus=1)
    again = purerun.init(num_cpus=2, ignore_reinit_error=True)
    # The running cluster is kept, not replaced.
    assert again["node_id"] == first["node_id"]
    assert purerun.cluster_resources()["CPU"] == 1.0
    assert purerun.get(identity.remote("still running")) == "still running"


def test_init_returns_a_context_manager_that_shuts_down(no_cluster):
    with purerun.init(num_cpus=1) as info:
        assert purerun.is_initialized()
        assert info["node_id"] == purerun.get_runtime_context().get_node_id()
        session_dir = info["session_dir"]
        assert os.path.isdir(session_dir)
        assert purerun.get(identity.remote(1)) == 1
    assert not purerun.is_initialized()
    assert not os.path.exists(session_dir)


def test_shutdown_is_idempotent_and_init_works_again(no_cluster):
    purerun.shutdown()  # nothing running: a no-op
    first = purerun.init(num_cpus=1)
    first_node = first["node_id"]
    assert purerun.is_initialized()
    purerun.shutdown()
    assert not purerun.is_initialized()
    purerun.shutdown()
    assert not purerun.is_initialized()
    second = purerun.init(num_cpus=1)
    assert second["node_id"] != first_node
    assert purerun.get(identity.remote(2)) == 2


def test_init_auto_without_a_running_node_raises_connection_error(no_cluster, monkeypatch):
    monkeypatch.delenv("PURERUN_ADDRESS", raising=False)
    with pytest.raises(ConnectionError):
        purerun.init(address="auto")
    assert not purerun.is_initialized()


def test_is_initialized_follows_init_and_shutdown(no_cluster):
    assert purerun.is_initialized() is False
    purerun.init(num_cpus=1)
    assert purerun.is_initialized() is True
    purerun.shutdown()
    assert purerun.is_initialized() is False


@pytest.mark.parametrize("start", [
    pytest.param(lambda: purerun.get(purerun.put("auto")) == "auto", id="put-and-get"),
    pytest.param(lambda: purerun.get([]) == [], id="get"),
    pytest.param(lambda: purerun.wait([]) == ([], []), id="wait"),
    pytest.param(lambda: purerun.get(identity.remote("auto")) == "auto", id="remote"),
    pytest.param(lambda: purerun.get_runtime_context().get_job_id(), id="runtime-context"),
    pytest.param(lambda: purerun.get_gpu_ids() == [], id="get_gpu_ids"),
])
def test_api_calls_start_a_cluster_when_none_is_running(no_cluster, start):
    assert start()
    assert purerun.is_initialized()


@pytest.mark.parametrize("call", [purerun.nodes, purerun.cluster_resources,
                                  purerun.available_resources])
def test_state_calls_do_not_start_a_cluster(no_cluster, call):
    with pytest.raises(Exception, match="init"):
        call()
    assert not purerun.is_initialized()


# --- everything below shares one cluster ----------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    purerun.init(num_cpus=2, resources={"slot": 1})
    yield
    purerun.shutdown()


@pytest.fixture
def gate(cluster, tmp_path):
    gate = Gate(tmp_path)
    yield gate
    gate.close()


# --- get -------------------------------------------------------------------------------------


def test_get_of_one_ref_returns_the_value_and_of_a_list_a_list(cluster):
    ref = purerun.put({"a": 1})
    assert purerun.get(ref) == {"a": 1}
    refs = [purerun.put(i) for i in range(5)]
    assert purerun.get(refs) == [0, 1, 2, 3, 4]
    assert purerun.get([ref]) == [{"a": 1}]


@pytest.mark.parametrize("bad", [
    pytest.param("tuple", id="tuple"),
    pytest.param("int", id="int"),
])
def test_get_rejects_anything_but_a_ref_or_a_list_of_refs(cluster, bad):
    ref = purerun.put(1)
    value = {"tuple": (ref,), "int": 1}[bad]
    with pytest.raises(ValueError, match="Invalid type of object refs"):
        purerun.get(value)


def test_get_of_a_list_holding_a_value_raises_type_error_naming_it(cluster):
    # As Ray: the list is fine, one of its items is not a ref.
    with pytest.raises(TypeError, match="on the value 2, which is not an ObjectRef"):
        purerun.get([purerun.put(1), 2])


def test_get_timeout_raises_get_timeout_error_which_is_a_timeout_error(gate):
    ref = gate.hold("late")
    with pytest.raises(exceptions.GetTimeoutError) as info:
        purerun.get(ref, timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, exceptions.RayError)
    with pytest.raises(TimeoutError):
        purerun.get([purerun.put(1), ref], timeout=0.01)
    gate.open()
    assert purerun.get(ref, timeout=GATE_DEADLINE_S) == "late"


def test_get_timeout_zero_returns_ready_values_and_raises_for_pending_ones(gate):
    ready = purerun.put("ready")
    assert purerun.get(ready, timeout=0) == "ready"
    pending = gate.hold()
    with pytest.raises(exceptions.GetTimeoutError):
        purerun.get(pending, timeout=0)


def test_get_rejects_a_negative_timeout(cluster):
    with pytest.raises(ValueError):
        purerun.get(purerun.put(1), timeout=-1)


def test_get_raises_the_first_error_without_waiting_for_the_rest(gate):
    pending = gate.hold()
    failed = fail.remote("boom")
    with pytest.raises(ValueError, match="boom"):
        purerun.get([pending, failed], timeout=GATE_DEADLINE_S)


def test_get_of_one_pending_ref_from_many_threads_and_twice_in_a_list(gate):
    pending = gate.hold("shared")
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        singles = [pool.submit(purerun.get, pending, timeout=GATE_DEADLINE_S)
                   for _ in range(4)]
        twice = pool.submit(purerun.get, [pending, pending], timeout=GATE_DEADLINE_S)
        gate.open()
        assert [f.result() for f in singles] == ["shared"] * 4
        assert twice.result() == ["shared", "shared"]


# --- put ------------------------------------------------------------------------------------


def test_a_ref_pickled_by_anyone_else_leaves_after_its_put(cluster, tmp_path, monkeypatch):
    # Small puts wait for the next batch; a ref pickled outside purerun (here with plain
    # pickle, to hand to another driver through a file) must not get ahead of its put,
    # even when the background flush comes late (here: never).
    from purerun.core import context
    monkeypatch.setattr(context.client._flush_event, "set", lambda: None)
    earlier = [purerun.put(i) for i in range(3)]   # a burst: the next put is batched
    ref = purerun.put({"handed": "over"})
    assert context.client._pending, "the put should be waiting for its batch"
    (tmp_path / "ref.pickle").write_bytes(pickle.dumps(ref))
    assert not context.client._pending   # the put left when the ref was pickled
    script = tmp_path / "other_driver.py"
    script.write_text(textwrap.dedent(f"""
        import pickle, purerun
        purerun.init(address={context.client.node.address!r})
        with open({str(tmp_path / "ref.pickle")!r}, "rb") as f:
            print(purerun.get(pickle.load(f), timeout=30))
        purerun.shutdown()
    """))
    other = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=60)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "{'handed': 'over'}"
    assert purerun.get(earlier) == [0, 1, 2]


def test_a_burst_of_puts_queues_a_bounded_amount_of_values(cluster, monkeypatch):
    # Small puts wait for their batch, but a batch stops growing at SUBMIT_BATCH_BYTES of
    # values: a bigger one would block its write until the node had handled most of it.
    from purerun.core import client as client_module, context, protocol
    client = context.client
    monkeypatch.setattr(client._flush_event, "set", lambda: None)   # no background flush

    def queued_bytes():
        return sum(len(meta) + sum(map(len, buffers))
                   for kind, *fields in client._pending if kind == protocol.PUT
                   for meta, buffers in [fields[2]])

    small = [purerun.put(i) for i in range(5)]
    assert len(client._pending) >= 4, "small puts in a burst should wait for their batch"
    value = b"x" * (80 * 1024)
    large = []
    for _ in range(10):
        large.append(purerun.put(value))
        assert queued_bytes() < client_module.SUBMIT_BATCH_BYTES
    assert purerun.get(small) == list(range(5))
    assert purerun.get(large) == [value] * 10


def test_put_of_an_object_ref_is_refused(cluster):
    with pytest.raises(TypeError):
        purerun.put(purerun.put(1))


def test_put_of_an_unpicklable_value_names_its_type(cluster):
    import threading
    with pytest.raises(TypeError, match="lock"):
        purerun.put({"lock": threading.Lock()})


# --- wait -------------------------------------------------------------------------------------


def test_wait_returns_num_returns_ready_refs_in_input_order(gate):
    a, b, c = (purerun.put(i) for i in "abc")
    pending = gate.hold()
    ready, not_ready = purerun.wait([c, pending, a, b], num_returns=3, timeout=GATE_DEADLINE_S)
    assert ready == [c, a, b]
    assert not_ready == [pending]


def test_wait_returns_at_most_num_returns_ready_refs(cluster):
    refs = [purerun.put(i) for i in range(4)]
    ready, not_ready = purerun.wait(refs, num_returns=2)
    assert ready == refs[:2]
    assert not_ready == refs[2:]
    ready, not_ready = purerun.wait(refs)
    assert ready == refs[:1]
    assert not_ready == refs[1:]


def test_wait_with_timeout_returns_what_is_ready(gate):
    done = purerun.put("done")
    pending = gate.hold()
    ready, not_ready = purerun.wait([pending, done], num_returns=2, timeout=0.05)
    assert ready == [done]
    assert not_ready == [pending]
    ready, not_ready = purerun.wait([pending], timeout=0)
    assert (ready, not_ready) == ([], [pending])
    gate.open()
    ready, not_ready = purerun.wait([pending, done], num_returns=2, timeout=GATE_DEADLINE_S)
    assert ready == [pending, done]
    assert not_ready == []


def test_a_wait_loop_over_the_returned_list_sees_refs_as_they_become_ready(gate):
    done = [purerun.put(i) for i in range(3)]
    held = [gate.hold(i) for i in range(2)]
    refs = [held[0], done[0], held[1], done[1], done[2]]
    ready, refs = purerun.wait(refs)
    assert ready == [done[0]] and refs == [held[0], held[1], done[1], done[2]]
    ready, refs = purerun.wait(refs, num_returns=2)
    assert ready == [done[1], done[2]] and refs == held
    ready, refs = purerun.wait(refs, timeout=0)
    assert ready == [] and refs == held
    gate.open()
    seen = []
    while refs:
        ready, refs = purerun.wait(refs, timeout=GATE_DEADLINE_S)
        assert len(ready) == 1
        seen += ready
    assert sorted(purerun.get(seen)) == [0, 1]


def test_a_returned_list_changed_by_the_caller_is_checked_again(cluster):
    refs = [purerun.put(i) for i in range(4)]
    _ready, rest = purerun.wait(refs)
    rest.append(rest[0])
    with pytest.raises(ValueError, match="unique"):
        purerun.wait(rest)
    _ready, rest = purerun.wait(refs[1:])
    rest[0] = "not a ref"
    with pytest.raises(TypeError, match="got list containing"):
        purerun.wait(rest)
    _ready, rest = purerun.wait(refs)
    rest[0] = refs[0]   # ready again, where refs[1] was
    ready, rest = purerun.wait(rest)
    assert ready == [refs[0]] and rest == refs[2:]


def test_wait_for_many_of_a_long_list_keeps_the_order(cluster):
    refs = [identity.remote(i) for i in range(200)]
    ready, rest = purerun.wait(refs, num_returns=150, timeout=GATE_DEADLINE_S)
    assert len(ready) == 150 and len(rest) == 50
    chosen = set(ready)
    assert ready == [r for r in refs if r in chosen]
    assert rest == [r for r in refs if r not in chosen]
    last, rest2 = purerun.wait(rest, num_returns=50, timeout=GATE_DEADLINE_S)
    assert last == rest and rest2 == []


def test_wait_counts_a_failed_task_as_ready(cluster):
    failed = fail.remote("x")
    ready, not_ready = purerun.wait([failed], timeout=GATE_DEADLINE_S)
    assert ready == [failed]


def test_wait_of_an_empty_list_returns_two_empty_lists(cluster):
    assert purerun.wait([]) == ([], [])
    assert purerun.wait([], timeout=0) == ([], [])


def test_wait_rejects_duplicates(cluster):
    ref = purerun.put(1)
    with pytest.raises(ValueError, match="unique"):
        purerun.wait([ref, ref])


@pytest.mark.parametrize("make", [
    pytest.param(lambda ref: ref, id="single-ref"),
    pytest.param(lambda ref: (ref,), id="tuple"),
    pytest.param(lambda ref: {ref}, id="set"),
    pytest.param(lambda ref: [ref, 1], id="list-with-non-ref"),
])
def test_wait_rejects_anything_but_a_list_of_refs(cluster, make):
    with pytest.raises(TypeError):
        purerun.wait(make(purerun.put(1)))


def test_wait_rejects_bad_num_returns_and_timeout(cluster):
    refs = [purerun.put(1), purerun.put(2)]
    with pytest.raises(ValueError):
        purerun.wait(refs, num_returns=3)
    with pytest.raises(ValueError):
        purerun.wait(refs, num_returns=0)
    with pytest.raises(ValueError):
        purerun.wait(refs, timeout=-1)


# --- ObjectRef ------------------------------------------------------------------------------


def test_object_ref_is_hashable_and_compares_by_id(cluster):
    a = purerun.put(1)
    b = purerun.put(1)
    assert a != b
    assert len({a, b, a}) == 2
    table = {a: "a", b: "b"}
    assert table[a] == "a"
    same = pickle.loads(pickle.dumps(a))
    assert same == a and hash(same) == hash(a)
    assert table[same] == "a"


def test_object_ref_hex_is_the_hex_of_its_binary_id(cluster):
    ref = purerun.put("x")
    text = ref.hex()
    assert isinstance(text, str)
    assert bytes.fromhex(text) == ref.binary()
    assert repr(ref).find(text) >= 0


def test_a_top_level_ref_argument_arrives_as_its_value(cluster):
    ref = purerun.put([1, 2, 3])
    assert purerun.get(identity.remote(ref)) == [1, 2, 3]


@purerun.remote
def describe_nested(container):
    inner = container[0]
    return type(inner).__name__, isinstance(inner, purerun.ObjectRef), purerun.get(inner)


def test_a_ref_nested_in_an_argument_arrives_as_a_ref(cluster):
    ref = purerun.put("payload")
    assert purerun.get(describe_nested.remote([ref])) == ("ObjectRef", True, "payload")


def test_a_ref_of_a_task_result_can_be_passed_on_before_it_is_ready(gate):
    pending = gate.hold("later")
    chained = describe_nested.remote([pending])
    follow = identity.remote(pending)
    gate.open()
    assert purerun.get(chained, timeout=GATE_DEADLINE_S) == ("ObjectRef", True, "later")
    assert purerun.get(follow, timeout=GATE_DEADLINE_S) == "later"


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_a_pickled_ref_still_gets_its_value(cluster, dumps):
    ref = purerun.put({"k": "v"})
    copy = pickle.loads(dumps(ref))
    del ref
    assert purerun.get(copy) == {"k": "v"}


def test_future_completes_with_the_value(gate):
    ref = gate.hold(42)
    future = ref.future()
    assert isinstance(future, concurrent.futures.Future)
    assert not future.done()
    gate.open()
    assert future.result(timeout=GATE_DEADLINE_S) == 42
    # A future of an object that is already there is done at once.
    assert purerun.put("now").future().result(timeout=GATE_DEADLINE_S) == "now"


def test_a_cancelled_future_is_left_alone_when_its_value_arrives(gate):
    ref = gate.hold("late")
    future = ref.future()
    assert future.cancel()
    gate.open()
    # The client goes on working: the value arrived and nothing tried to complete the future.
    assert purerun.get(ref, timeout=GATE_DEADLINE_S) == "late"
    assert future.cancelled()
    assert purerun.get(purerun.put("still up"), timeout=GATE_DEADLINE_S) == "still up"


def test_future_of_a_failed_task_raises_its_error(cluster):
    future = fail.remote("from a future").future()
    error = future.exception(timeout=GATE_DEADLINE_S)
    assert isinstance(error, ValueError)
    assert isinstance(error, exceptions.RayTaskError)
    assert "from a future" in str(error)


def test_await_ref_in_asyncio_code(gate):
    pending = gate.hold("awaited")

    async def main():
        ready = await purerun.put("ready")
        gate.open()
        awaited = await asyncio.wait_for(pending, GATE_DEADLINE_S)
        gathered = await asyncio.gather(identity.remote(1), identity.remote(2))
        with pytest.raises(ValueError, match="async failure"):
            await fail.remote("async failure")
        return ready, awaited, gathered

    assert asyncio.run(main()) == ("ready", "awaited", [1, 2])


# --- runtime context and cluster state ----------------------------------------------------


@purerun.remote
def context_in_task():
    ctx = purerun.get_runtime_context()
    return {"job": ctx.get_job_id(), "node": ctx.get_node_id(), "task": ctx.get_task_id(),
            "worker": ctx.get_worker_id(), "gpus": purerun.get_gpu_ids()}


def test_runtime_context_in_the_driver(cluster):
    ctx = purerun.get_runtime_context()
    assert ctx.get_task_id() is None
    assert isinstance(ctx.get_job_id(), str) and ctx.get_job_id()
    assert ctx.get_node_id() == purerun.nodes()[0]["NodeID"]
    assert isinstance(ctx.get_worker_id(), str)


def test_runtime_context_in_tasks(cluster):
    driver = purerun.get_runtime_context()
    first_ref, second_ref = context_in_task.remote(), context_in_task.remote()
    first, second = purerun.get([first_ref, second_ref])
    for seen, ref in ((first, first_ref), (second, second_ref)):
        assert seen["job"] == driver.get_job_id()
        assert seen["node"] == driver.get_node_id()
        assert seen["task"] is not None
        assert seen["task"] == ref.task_id().hex()
        assert seen["worker"] != driver.get_worker_id()
        assert seen["gpus"] == []
    assert first["task"] != second["task"]


@purerun.remote
def context_dict_in_task():
    return purerun.get_runtime_context().get()


@purerun.remote
class ContextReporter:
    def context(self):
        return purerun.get_runtime_context().get()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # get() and job_id, as Ray's
def test_runtime_context_get_leaves_out_what_the_caller_does_not_have(cluster):
    # As in Ray: a driver has no task and no actor id, a task no actor id.
    driver = purerun.get_runtime_context()
    assert set(driver.get()) == {"job_id", "node_id", "namespace"}
    assert driver.get()["job_id"] == driver.job_id
    ref = context_dict_in_task.remote()
    in_task = purerun.get(ref)
    assert set(in_task) == {"job_id", "node_id", "namespace", "task_id"}
    assert in_task["task_id"] == ref.task_id()
    actor = ContextReporter.remote()
    try:
        in_actor = purerun.get(actor.context.remote())
        assert set(in_actor) == {"job_id", "node_id", "namespace", "task_id", "actor_id"}
        assert in_actor["actor_id"] == actor._ray_actor_id
    finally:
        purerun.kill(actor)


def test_get_gpu_ids_is_empty_without_gpus(cluster):
    assert purerun.get_gpu_ids() == []


def test_nodes_describes_the_one_node(cluster):
    nodes = purerun.nodes()
    assert len(nodes) == 1
    node = nodes[0]
    assert node["Alive"] is True
    assert node["NodeID"] == purerun.get_runtime_context().get_node_id()
    assert node["Resources"]["CPU"] == 2.0
    assert node["Resources"]["slot"] == 1.0


def test_cluster_resources_are_the_declared_totals(cluster):
    total = purerun.cluster_resources()
    assert total["CPU"] == 2.0
    assert total["slot"] == 1.0
    assert "GPU" not in total


def test_available_resources_omit_what_is_all_in_use(gate):
    wait_for(lambda: purerun.available_resources().get("slot") == 1.0,
             message="the slot to be free before the test")
    gate.hold(resources={"slot": 1}, num_cpus=0)
    available = wait_for(lambda: (lambda a: a if "slot" not in a else None)(
        purerun.available_resources()), timeout=GATE_DEADLINE_S,
        message="'slot' to leave available_resources() while a task holds it")
    assert available["CPU"] == 2.0
    gate.close()
    wait_for(lambda: purerun.available_resources().get("slot") == 1.0,
             message="the slot to come back once the task finished")


# --- remote and options errors ----------------------------------------------------------------


def test_calling_a_remote_function_directly_says_to_use_remote(cluster):
    with pytest.raises(TypeError, match=r"identity\.remote\(\)"):
        identity(1)


@pytest.mark.parametrize("options, error, words", [
    ({"num_cpus": -1}, ValueError, "num_cpus"),
    ({"num_returns": -1}, ValueError, "num_returns"),
    ({"max_retries": -2}, ValueError, "max_retries"),
    ({"resources": {"CPU": 1}}, ValueError, "CPU"),
    ({"not_an_option": 1}, ValueError, "not_an_option"),
    ({"max_restarts": 1}, ValueError, "max_restarts"),
])
def test_remote_with_bad_options_fails_at_decoration(options, error, words):
    with pytest.raises(error, match=words):
        @purerun.remote(**options)
        def f():
            return 1


def test_remote_on_an_async_function_raises_value_error():
    async def coroutine_function():
        return 1

    with pytest.raises(ValueError, match="'async def' cannot be a remote function"):
        purerun.remote(coroutine_function)
    with pytest.raises(ValueError, match="asyncio.run"):
        purerun.remote(num_cpus=1)(coroutine_function)


def test_remote_needs_a_function_or_class():
    with pytest.raises(TypeError):
        purerun.remote(1, 2)
    with pytest.raises(TypeError):
        purerun.remote(42)


def test_options_with_an_unknown_option_names_it(cluster):
    with pytest.raises(ValueError, match="bogus_option"):
        identity.options(bogus_option=1)
    with pytest.raises(ValueError, match="max_calls"):
        identity.options(max_calls=2)


def test_options_returns_a_copy_and_leaves_the_original_alone(cluster):
    two = identity.options(num_returns=2)
    first, second = two.remote((1, 2))
    assert purerun.get([first, second]) == [1, 2]
    assert purerun.get(identity.remote((1, 2))) == (1, 2)
