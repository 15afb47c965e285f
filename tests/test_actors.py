"""Actors on real processes: the handle API, options and the resources an actor holds,
call ordering, threaded and asyncio concurrency, names and namespaces, the actor's life
(kill, exit, terminate, crash, restart, retry) and errors raised in methods.

Most tests share one node (the module fixture ``cluster``: 2 CPUs, 1 GPU, 2 "widget").
After each test every resource must be available again (``resources_returned``), so a
test that leaves an actor holding resources fails itself instead of starving the next
one; actors a test does not stop on purpose are killed by the ``kill_at_end`` fixture.
Tests that need a second driver run ``tests/scripts/actor_driver.py`` as a subprocess
connected to the same node.

Nothing here sleeps to let things settle: the test waits for a condition with a deadline
(``wait_for``), an actor waits for a marker file the test creates, and concurrency is
proven with barriers that only open when enough calls are in at once.
"""

import asyncio
import atexit
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

import purerun
from purerun.actor import ActorClass, ActorHandle, exit_actor
from purerun.exceptions import (ActorDiedError, PendingCallsLimitExceeded, RayActorError,
                                RayError, RayTaskError)
from purerun.object_ref import ObjectRef

from helpers import pid_gone, touch, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "actor_driver.py")

# Upper bound on one get(): far above what any call here takes; it only turns a hang into
# a failure that names the call, before pytest-timeout has to dump every stack.
CALL_TIMEOUT_S = 60
# How long an actor or task waits for a marker file the test will create.
MARKER_TIMEOUT_S = 60
# How long a barrier or rendezvous inside an actor waits for the other calls: long enough
# for a loaded machine, short enough that a concurrency bug fails in reasonable time.
RENDEZVOUS_TIMEOUT_S = 20
# How long a call that must NOT have started (or run alongside another) is watched. Only
# negative checks use it; passing never depends on it being long enough.
NOT_STARTED_GRACE_S = 0.3
# Upper bound on one subprocess driver run (interpreter start, connect, a few calls).
DRIVER_TIMEOUT_S = 60


# --- helpers (also used inside actors and tasks: workers import this module) --------------


def get(refs):
    """purerun.get with a deadline."""
    return purerun.get(refs, timeout=CALL_TIMEOUT_S)


def wait_path(path, timeout=MARKER_TIMEOUT_S):
    """Block (in an actor or task) until the test creates ``path``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never created")
        time.sleep(0.005)


async def async_wait_path(path, timeout=MARKER_TIMEOUT_S):
    """wait_path for asyncio actors: yields to the event loop while it waits."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never created")
        await asyncio.sleep(0.005)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def pid_reaped(pid):
    """The node has waited for the process, so it has noticed the death and acted on it."""
    return not psutil.pid_exists(pid)


def held():
    """Resources in use right now: {name: total - available}, without zero amounts."""
    total = purerun.cluster_resources()
    available = purerun.available_resources()
    used = {}
    for name, amount in total.items():
        in_use = round(amount - available.get(name, 0.0), 4)
        if in_use:
            used[name] = in_use
    return used


def lookup_fails(name, namespace=None):
    try:
        purerun.get_actor(name, namespace=namespace)
    except ValueError:
        return True
    return False


def run_driver(address, namespace, steps):
    """Run tests/scripts/actor_driver.py against ``address``; return its per-step results."""
    spec = json.dumps({"address": address, "namespace": namespace, "steps": steps})
    env = dict(os.environ)
    env.pop("PURERUN_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, DRIVER, spec], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S)
    assert proc.returncode == 0, f"driver failed:\n{proc.stdout}\n{proc.stderr}"
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, f"driver printed no result:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(results[-1][len("RESULT "):])


# --- actor classes shared by several tests -------------------------------------------------


class InventoryError(LookupError):
    """A user exception with state of its own, raised by Counter.fail_custom."""

    def __init__(self, item, count):
        super().__init__(item, count)
        self.item = item
        self.count = count


class Base:
    def inherited(self):
        return "from Base"


@purerun.remote
class Counter(Base):
    """A small stateful actor; ``init_log`` (a path) gets a line each time __init__ runs."""

    def __init__(self, start=0, init_log=None):
        if init_log is not None:
            with open(init_log, "a") as f:
                f.write(f"{os.getpid()}\n")
        self.value = start
        self.items = []
        self.kept = None

    def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def reset(self):
        self.value = 0

    def append(self, item):
        self.items.append(item)
        return len(self.items)

    def log(self):
        return list(self.items)

    def echo(self, *args, **kwargs):
        return args, kwargs

    def pid(self):
        return os.getpid()

    @purerun.method(num_returns=2)
    def pair(self):
        return "left", "right"

    def triple(self):
        return 1, 2, 3

    def gpus(self):
        return purerun.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    def block(self, gate, entered=None):
        """Return only once the test creates ``gate`` (touching ``entered`` on the way in)."""
        if entered is not None:
            touch(entered)
        wait_path(gate)
        return "released"

    def fail(self, message):
        raise ValueError(message)

    def fail_custom(self, item):
        raise InventoryError(item, 3)

    def crash_once(self, marker):
        """Kill this process the first time (marker absent); return the pid on the retry."""
        self.items.append("crash_once")
        if not os.path.exists(marker):
            touch(marker)
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()

    def keep(self, handle):
        self.kept = handle
        return True

    def call_kept(self, method, *args):
        return get(getattr(self.kept, method).remote(*args))


@purerun.remote
class AsyncCounter:
    """Counter's asyncio twin (any ``async def`` makes an actor an asyncio actor)."""

    def __init__(self):
        self.value = 0

    async def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()

    async def fail(self, message):
        raise ValueError(message)

    async def fail_custom(self, item):
        raise InventoryError(item, 3)


@purerun.remote
class Exiter:
    """Registers an atexit handler that writes ``atexit_path``; ``leave`` exits the actor."""

    def __init__(self, atexit_path):
        atexit.register(touch, atexit_path)
        self.value = 0

    def incr(self):
        self.value += 1
        return self.value

    def pid(self):
        return os.getpid()

    def block(self, gate, entered):
        touch(entered)
        wait_path(gate)
        return "released"

    def leave(self):
        exit_actor()
        return "still here"


@purerun.remote
class AsyncExiter:
    """Exiter's asyncio twin; ``leave_from_sync_method`` exits from a plain method."""

    def __init__(self, atexit_path):
        atexit.register(touch, atexit_path)
        self.value = 0

    async def incr(self):
        self.value += 1
        return self.value

    async def pid(self):
        return os.getpid()

    async def leave(self):
        exit_actor()
        return "still here"

    def leave_from_sync_method(self):
        exit_actor()
        return "still here"


@purerun.remote
def add_one(x):
    return x + 1


@purerun.remote
def produce_when(gate, value):
    """A task that is still running until the test creates ``gate``."""
    wait_path(gate)
    return value


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    info = purerun.init(num_cpus=2, num_gpus=1, resources={"widget": 2})
    try:
        yield info
    finally:
        purerun.shutdown()


@pytest.fixture(autouse=True)
def resources_returned(cluster):
    """After each test, every resource of the node is available again."""
    yield
    wait_for(lambda: held() == {}, timeout=15,
             message="every resource to be available again after the test "
                     "(an actor it made still holds some)")


@pytest.fixture
def kill_at_end(cluster):
    """``kill_at_end(handle)`` returns the handle and kills the actor when the test ends."""
    handles = []

    def track(handle):
        handles.append(handle)
        return handle
    yield track
    for handle in handles:
        try:
            purerun.kill(handle)
        except Exception:  # already dead, or purerun is down: nothing left to stop
            pass


# --- 1. the API: ActorClass, ActorHandle, ActorMethod ---------------------------------------


def test_remote_on_a_class_gives_an_actor_class(cluster):
    @purerun.remote(num_cpus=0, max_restarts=1)
    class WithOptions:
        def ping(self):
            return "pong"

    assert isinstance(Counter, ActorClass)
    assert isinstance(WithOptions, ActorClass)
    copy = Counter.options(num_cpus=0)
    assert isinstance(copy, ActorClass) and copy is not Counter
    assert Counter.__name__ == "Counter"


def test_remote_returns_the_handle_before_init_finishes(tmp_path, kill_at_end):
    @purerun.remote
    class SlowStart:
        def __init__(self, gate):
            wait_path(gate)

        def ping(self):
            return "pong"

    gate = str(tmp_path / "gate")
    handle = kill_at_end(SlowStart.remote(gate))  # returns although __init__ is blocked
    assert isinstance(handle, ActorHandle)
    ref = handle.ping.remote()
    assert isinstance(ref, ObjectRef)
    ready, _ = purerun.wait([ref], timeout=0)
    assert ready == []
    touch(gate)
    assert get(ref) == "pong"


def test_method_calls_return_refs_as_num_returns_says(kill_at_end):
    counter = kill_at_end(Counter.remote())
    ref = counter.incr.remote()
    assert isinstance(ref, ObjectRef) and get(ref) == 1

    pair = counter.pair.remote()  # @purerun.method(num_returns=2)
    assert isinstance(pair, list) and len(pair) == 2
    assert all(isinstance(r, ObjectRef) for r in pair)
    assert get(pair) == ["left", "right"]

    triple = counter.triple.options(num_returns=3).remote()
    assert isinstance(triple, list) and get(triple) == [1, 2, 3]

    whole = counter.pair.options(num_returns=1).remote()
    assert isinstance(whole, ObjectRef) and get(whole) == ("left", "right")

    assert counter.reset.options(num_returns=0).remote() is None
    assert get(counter.get.remote()) == 0  # the num_returns=0 call ran, in order


def test_async_method_with_num_returns(kill_at_end):
    @purerun.remote
    class AsyncPair:
        @purerun.method(num_returns=2)
        async def pair(self):
            return 1, 2

    actor = kill_at_end(AsyncPair.remote())
    refs = actor.pair.remote()
    assert isinstance(refs, list) and get(refs) == [1, 2]


def test_inherited_methods_are_callable(kill_at_end):
    counter = kill_at_end(Counter.remote())
    assert get(counter.inherited.remote()) == "from Base"


def test_calling_without_remote_raises_type_error(kill_at_end):
    with pytest.raises(TypeError, match=r"Counter\.remote\(\)"):
        Counter()
    counter = kill_at_end(Counter.remote())
    with pytest.raises(TypeError, match=r"incr\.remote\(\)"):
        counter.incr()


def test_unknown_method_raises_attribute_error(kill_at_end):
    counter = kill_at_end(Counter.remote())
    with pytest.raises(AttributeError, match="no_such_method"):
        counter.no_such_method


@pytest.mark.parametrize("call", [
    pytest.param(lambda: Counter.remote(1, "log", "extra"), id="init-too-many"),
    pytest.param(lambda: Counter.remote(bogus=1), id="init-unknown-keyword"),
])
def test_wrong_init_arguments_raise_type_error_in_the_caller(call):
    with pytest.raises(TypeError):
        call()


def test_class_without_init_takes_no_arguments():
    @purerun.remote
    class NoInit:
        def ping(self):
            return "pong"

    with pytest.raises(TypeError):
        NoInit.remote(1)


@pytest.mark.parametrize("call", [
    pytest.param(lambda c: c.incr.remote(1, 2), id="too-many"),
    pytest.param(lambda c: c.incr.remote(bogus=1), id="unknown-keyword"),
    pytest.param(lambda c: c.pid.remote(1), id="method-takes-none"),
    pytest.param(lambda c: c.append.remote(), id="missing"),
])
def test_wrong_method_arguments_raise_type_error_in_the_caller(call, kill_at_end):
    counter = kill_at_end(Counter.remote())
    with pytest.raises(TypeError):
        call(counter)
    assert get(counter.get.remote()) == 0  # nothing was sent


@pytest.mark.parametrize("look_up", [
    pytest.param(lambda: purerun.get_actor("checked-lookup"), id="get_actor"),
    pytest.param(lambda: Counter.options(name="checked-lookup", get_if_exists=True).remote(),
                 id="get_if_exists"),
])
def test_wrong_arguments_checked_in_the_caller_for_a_looked_up_handle(look_up, kill_at_end):
    kill_at_end(Counter.options(name="checked-lookup").remote())
    found = look_up()
    with pytest.raises(TypeError):
        found.incr.remote(1, 2, 3)


def test_wrong_arguments_checked_in_the_caller_for_a_handle_passed_to_a_task(kill_at_end):
    @purerun.remote
    def misuse(counter):
        try:
            counter.incr.remote(1, 2, 3)
        except TypeError:
            return "TypeError raised in the task"
        return "submitted"

    counter = kill_at_end(Counter.remote())
    assert get(misuse.remote(counter)) == "TypeError raised in the task"


# --- 2. options, and the resources an actor holds -----------------------------------------


@pytest.mark.parametrize("options, expected_held", [
    pytest.param({}, {}, id="default-holds-nothing"),
    pytest.param({"num_cpus": 1}, {"CPU": 1.0}, id="num_cpus=1"),
    pytest.param({"num_cpus": 0.5}, {"CPU": 0.5}, id="num_cpus=0.5"),
    pytest.param({"num_cpus": 2}, {"CPU": 2.0}, id="num_cpus=2"),
    pytest.param({"num_gpus": 1}, {"CPU": 1.0, "GPU": 1.0}, id="num_gpus=1"),
    pytest.param({"resources": {"widget": 1}}, {"CPU": 1.0, "widget": 1.0}, id="custom"),
    pytest.param({"num_cpus": 0, "resources": {"widget": 2}}, {"widget": 2.0},
                 id="custom-only"),
    pytest.param({"num_cpus": 0, "memory": 10**8}, {"memory": 1e8}, id="memory"),
])
def test_actor_holds_its_resources_while_alive(options, expected_held, kill_at_end):
    total = purerun.cluster_resources()
    actor = kill_at_end(Counter.options(**options).remote())
    assert get(actor.pid.remote())  # placed and running
    assert held() == expected_held
    available = purerun.available_resources()
    cpus_left = total["CPU"] - expected_held.get("CPU", 0.0)
    if cpus_left:
        assert available["CPU"] == cpus_left
    else:
        assert "CPU" not in available  # a resource with nothing available is left out
    purerun.kill(actor)
    wait_for(lambda: held() == {}, message="the killed actor's resources to come back")


def test_default_actors_leave_cpus_to_tasks(kill_at_end):
    actors = [kill_at_end(Counter.remote()) for _ in range(4)]
    assert len(set(get([a.pid.remote() for a in actors]))) == 4
    assert purerun.available_resources()["CPU"] == 2.0
    assert get(add_one.options(num_cpus=2).remote(1)) == 2


def test_actor_waits_for_resources_another_actor_holds(kill_at_end):
    first = kill_at_end(Counter.options(num_cpus=2).remote())
    get(first.pid.remote())
    second = kill_at_end(Counter.options(num_cpus=1).remote())
    ref = second.pid.remote()
    ready, _ = purerun.wait([ref], timeout=NOT_STARTED_GRACE_S)
    assert ready == []  # no CPU left to place it
    purerun.kill(first)
    assert get(ref) > 0


def test_gpu_actor_gets_its_gpu(kill_at_end):
    with_gpu = kill_at_end(Counter.options(num_gpus=1).remote())
    assert get(with_gpu.gpus.remote()) == ([0], "0")
    without = kill_at_end(Counter.remote())
    assert get(without.gpus.remote())[0] == []
    assert purerun.get_gpu_ids() == []


def test_max_pending_calls_limits_calls_in_flight(tmp_path, kill_at_end):
    counter = kill_at_end(Counter.options(max_pending_calls=2).remote())
    gate = str(tmp_path / "gate")
    first = counter.block.remote(gate)
    second = counter.incr.remote()
    with pytest.raises(PendingCallsLimitExceeded) as info:
        counter.incr.remote()
    assert isinstance(info.value, RayError)
    touch(gate)
    assert get([first, second]) == ["released", 1]
    assert get(counter.incr.remote()) == 2  # room again once the results are in


@pytest.mark.parametrize("option", ["max_restarts", "max_reconstructions"])
def test_max_restarts_and_its_old_name_restart_a_killed_actor(option, tmp_path, kill_at_end):
    init_log = str(tmp_path / "init.log")
    counter = kill_at_end(Counter.options(**{option: 1}).remote(0, init_log))
    first_pid = get(counter.pid.remote())
    purerun.kill(counter, no_restart=False)
    wait_for(lambda: pid_reaped(first_pid))
    second_pid = get(counter.pid.remote())
    assert second_pid != first_pid
    assert lines(init_log) == [str(first_pid), str(second_pid)]


ACTOR_OPTION_VALUE_ERRORS = [
    pytest.param({"bogus_option": 1}, "bogus_option", id="unknown"),
    pytest.param({"max_concurrency": 0}, "max_concurrency", id="max_concurrency"),
    pytest.param({"max_restarts": -2}, "max_restarts", id="max_restarts"),
    pytest.param({"max_reconstructions": -2}, "max_re", id="max_reconstructions"),
    pytest.param({"max_task_retries": -2}, "max_task_retries", id="max_task_retries"),
    pytest.param({"max_pending_calls": 0}, "max_pending_calls", id="max_pending_calls"),
    pytest.param({"lifetime": "forever"}, "lifetime", id="lifetime"),
    pytest.param({"namespace": ""}, "namespace", id="namespace"),
    pytest.param({"name": ""}, "name", id="name"),
    pytest.param({"get_if_exists": True}, "name", id="get_if_exists-without-name"),
    pytest.param({"num_cpus": -1}, "num_cpus", id="num_cpus"),
    pytest.param({"num_gpus": -1}, "num_gpus", id="num_gpus"),
    pytest.param({"memory": -1}, "memory", id="memory"),
    pytest.param({"resources": {"CPU": 1}}, "num_cpus", id="resources-CPU"),
    pytest.param({"resources": {"widget": -1}}, "widget", id="resources-negative"),
    pytest.param({"max_retries": 3}, "max_retries", id="task-only-max_retries"),
    pytest.param({"num_returns": 2}, "num_returns", id="task-only-num_returns"),
    pytest.param({"max_calls": 2}, "max_calls", id="task-only-max_calls"),
]


@pytest.mark.parametrize("options, named", ACTOR_OPTION_VALUE_ERRORS)
@pytest.mark.parametrize("where", ["decorator", "options"])
def test_invalid_actor_option_raises_value_error_naming_it(where, options, named):
    class Plain:
        pass

    with pytest.raises(ValueError, match=named):
        if where == "decorator":
            purerun.remote(**options)(Plain)
        else:
            purerun.remote(Plain).options(**options)


@pytest.mark.parametrize("options, named", [
    pytest.param({"num_cpus": "1"}, "num_cpus", id="num_cpus"),
    pytest.param({"max_concurrency": 1.5}, "max_concurrency", id="max_concurrency"),
    pytest.param({"max_restarts": "1"}, "max_restarts", id="max_restarts"),
    pytest.param({"name": 3}, "name", id="name"),
    pytest.param({"get_if_exists": "yes"}, "get_if_exists", id="get_if_exists"),
])
def test_option_of_the_wrong_type_raises_type_error_naming_it(options, named):
    with pytest.raises(TypeError, match=named):
        Counter.options(**options)


def test_invalid_method_options_raise_value_error(kill_at_end):
    counter = kill_at_end(Counter.remote())
    with pytest.raises(ValueError, match="bogus"):
        counter.incr.options(bogus=1)
    with pytest.raises(ValueError, match="bogus"):
        purerun.method(bogus=1)


def test_method_options_are_checked_the_same_in_the_decorator_and_in_options(kill_at_end):
    counter = kill_at_end(Counter.remote())
    for give in (purerun.method, counter.incr.options):
        with pytest.raises(ValueError, match="num_returns"):
            give(num_returns=-1)
        with pytest.raises(TypeError, match="concurrency_group"):
            give(concurrency_group=1)
        with pytest.raises(ValueError, match="Invalid option keyword max_restarts"):
            give(max_restarts=1)
        give(name="call", tensor_transport="nccl", _generator_backpressure_num_objects=2,
             enable_task_events=False, max_task_retries=1)
    assert get(counter.incr.options(name="call", max_task_retries=None).remote(2)) == 2


# --- 3. ordering, handles as values, ObjectRef arguments -----------------------------------


def test_calls_from_one_caller_run_in_submission_order(kill_at_end):
    counter = kill_at_end(Counter.remote())
    refs = [counter.append.remote(i) for i in range(200)]
    assert get(refs) == list(range(1, 201))
    assert get(counter.log.remote()) == list(range(200))


def test_a_call_waiting_for_its_argument_holds_back_later_calls(tmp_path, kill_at_end):
    gate = str(tmp_path / "gate")
    counter = kill_at_end(Counter.remote())
    pending = produce_when.remote(gate, "from the task")
    first = counter.append.remote(pending)
    second = counter.append.remote("after")
    ready, _ = purerun.wait([second], timeout=NOT_STARTED_GRACE_S)
    assert ready == []
    touch(gate)
    assert get([first, second]) == [1, 2]
    assert get(counter.log.remote()) == ["from the task", "after"]


def test_object_ref_arguments_are_resolved_at_top_level_only(kill_at_end):
    stored = purerun.put(41)
    computed = add_one.remote(1)
    counter = kill_at_end(Counter.remote(stored))  # creation arguments too
    assert get(counter.get.remote()) == 41
    args, kwargs = get(counter.echo.remote(stored, computed, [stored], key=computed))
    assert args[:2] == (41, 2)
    assert kwargs == {"key": 2}
    nested = args[2][0]
    assert isinstance(nested, ObjectRef) and get(nested) == 41


def test_creation_waits_for_an_argument_from_a_running_task(tmp_path, kill_at_end):
    gate = str(tmp_path / "gate")
    counter = kill_at_end(Counter.remote(produce_when.remote(gate, 7)))
    ref = counter.get.remote()
    ready, _ = purerun.wait([ref], timeout=NOT_STARTED_GRACE_S)
    assert ready == []
    touch(gate)
    assert get(ref) == 7


def test_large_arguments_and_results(kill_at_end):
    big = os.urandom(2 * 1024 * 1024)  # far above the inline limit: goes through the arena
    counter = kill_at_end(Counter.remote())
    args, kwargs = get(counter.echo.remote(big, key=big[:10]))
    assert args == (big,) and kwargs == {"key": big[:10]}
    stored = purerun.put(big)
    args, _ = get(counter.echo.remote(stored))
    assert args == (big,)


def test_handles_are_picklable_and_work_anywhere(kill_at_end):
    @purerun.remote
    def incr_from_task(counter):
        return get(counter.incr.remote())

    counter = kill_at_end(Counter.remote())
    copy = pickle.loads(pickle.dumps(counter))
    assert copy == counter and hash(copy) == hash(counter)
    assert get(copy.incr.remote()) == 1

    assert get(incr_from_task.remote(counter)) == 2

    other = kill_at_end(Counter.remote())
    assert get(other.keep.remote(counter)) is True
    assert get(other.call_kept.remote("incr")) == 3

    stored = get(purerun.put(counter))
    assert get(stored.incr.remote()) == 4
    assert get(counter.get.remote()) == 4


def test_actor_made_inside_a_task_outlives_the_task(kill_at_end):
    @purerun.remote
    def make_counter(start):
        counter = Counter.remote(start)
        get(counter.incr.remote())
        return counter

    counter = kill_at_end(get(make_counter.remote(10)))
    assert get(counter.incr.remote()) == 12


def test_actor_made_by_an_actor_can_be_returned_and_used(kill_at_end):
    @purerun.remote
    class Parent:
        def make_child(self, start):
            self.child = Counter.remote(start)
            return self.child

        def child_value(self):
            return get(self.child.get.remote())

    parent = kill_at_end(Parent.remote())
    child = kill_at_end(get(parent.make_child.remote(3)))
    assert get(child.incr.remote()) == 4
    assert get(parent.child_value.remote()) == 4


# --- 4. concurrency -------------------------------------------------------------------------


@purerun.remote
class Meeting:
    """``meet`` returns only when ``parties`` calls are in it at once (a Barrier)."""

    def __init__(self, parties):
        self.barrier = threading.Barrier(parties, timeout=RENDEZVOUS_TIMEOUT_S)

    def meet(self):
        return self.barrier.wait()


@pytest.mark.parametrize("concurrency", [2, 3])
def test_threaded_actor_runs_max_concurrency_calls_at_once(concurrency, kill_at_end):
    meeting = kill_at_end(Meeting.options(max_concurrency=concurrency).remote(concurrency))
    # Two rounds: each opens only if `concurrency` calls are in at once.
    refs = [meeting.meet.remote() for _ in range(2 * concurrency)]
    assert sorted(get(refs)) == sorted(list(range(concurrency)) * 2)


def test_default_actor_runs_one_call_at_a_time(kill_at_end):
    @purerun.remote
    class Overlap:
        def __init__(self):
            self.lock = threading.Lock()
            self.inside = 0
            self.peak = 0
            self.crowded = threading.Event()

        def visit(self):
            with self.lock:
                self.inside += 1
                self.peak = max(self.peak, self.inside)
                if self.inside > 1:
                    self.crowded.set()
            # Stay long enough for a call running alongside to be seen.
            self.crowded.wait(NOT_STARTED_GRACE_S)
            with self.lock:
                self.inside -= 1
            return self.peak

    overlap = kill_at_end(Overlap.remote())
    assert get([overlap.visit.remote() for _ in range(3)]) == [1, 1, 1]


def test_async_actor_runs_every_method_on_one_thread(kill_at_end):
    @purerun.remote
    class Threads:
        async def async_ident(self):
            await asyncio.sleep(0)
            return threading.get_ident()

        def sync_ident(self):
            return threading.get_ident()

    actor = kill_at_end(Threads.remote())
    refs = [actor.async_ident.remote() if i % 2 else actor.sync_ident.remote()
            for i in range(10)]
    assert len(set(get(refs))) == 1


@purerun.remote
class AsyncMeeting:
    """``meet`` returns only when ``parties`` coroutines have come in (none leave before)."""

    def __init__(self, parties):
        self.parties = parties
        self.arrived = 0
        self.all_in = None  # made on the actor's event loop (Python 3.9 binds it at creation)

    async def meet(self):
        if self.all_in is None:
            self.all_in = asyncio.Event()
        self.arrived += 1
        if self.arrived >= self.parties:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), RENDEZVOUS_TIMEOUT_S)
        return self.arrived


def test_async_actor_runs_many_coroutines_at_once_by_default(kill_at_end):
    meeting = kill_at_end(AsyncMeeting.remote(20))
    assert get([meeting.meet.remote() for _ in range(20)]) == [20] * 20


def test_async_actor_max_concurrency_bounds_coroutines_in_flight(tmp_path, kill_at_end):
    @purerun.remote
    class Gate:
        def __init__(self):
            self.inside = 0
            self.peak = 0

        async def hold(self, entered, gate):
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            touch(entered)
            await async_wait_path(gate)
            self.inside -= 1
            return self.peak

    actor = kill_at_end(Gate.options(max_concurrency=2).remote())
    entered = [str(tmp_path / f"entered-{i}") for i in range(3)]
    gate = str(tmp_path / "gate")
    refs = [actor.hold.remote(path, gate) for path in entered]
    # The first two are in at once...
    wait_for(lambda: os.path.exists(entered[0]) and os.path.exists(entered[1]),
             message="two calls inside the actor")
    # ... and the third does not start while they are.
    ready, _ = purerun.wait([refs[2]], timeout=NOT_STARTED_GRACE_S)
    assert ready == [] and not os.path.exists(entered[2])
    touch(gate)
    assert max(get(refs)) == 2


def test_await_object_refs_inside_async_methods(tmp_path, kill_at_end):
    @purerun.remote
    class Awaiter:
        async def fetch(self, boxed):
            return await boxed[0]

        async def fetch_all(self, boxed):
            return list(await asyncio.gather(*boxed))

        async def call(self, counter):
            return await counter.incr.remote()

        def ping(self):
            return "pong"

    actor = kill_at_end(Awaiter.remote())
    gate = str(tmp_path / "gate")
    fetched = actor.fetch.remote([produce_when.remote(gate, "late")])  # task still running
    assert get(actor.ping.remote()) == "pong"  # the loop is free while fetch awaits
    touch(gate)
    assert get(fetched) == "late"
    assert get(actor.fetch_all.remote([purerun.put(1), add_one.remote(1)])) == [1, 2]
    counter = kill_at_end(Counter.remote())
    assert get(actor.call.remote(counter)) == 1
    # A failed ref raises its error at the await; the method's caller gets it.
    with pytest.raises(ValueError, match="awaited failure"):
        get(actor.fetch.remote([counter.fail.remote("awaited failure")]))


# --- 5. names and namespaces ---------------------------------------------------------------


def test_get_actor_returns_the_named_actor(kill_at_end):
    counter = kill_at_end(Counter.options(name="by-name").remote())
    assert get(counter.incr.remote()) == 1
    found = purerun.get_actor("by-name")
    assert isinstance(found, ActorHandle) and found == counter
    assert get(found.incr.remote()) == 2
    assert get(counter.get.remote()) == 2
    assert get(found.pair.remote()) == ["left", "right"]  # method options travel too


def test_get_actor_of_an_unknown_name_raises_value_error():
    with pytest.raises(ValueError):
        purerun.get_actor("nobody-has-this-name")
    with pytest.raises(ValueError):
        purerun.get_actor("")


def test_get_if_exists_returns_the_existing_actor(kill_at_end):
    first = kill_at_end(Counter.options(name="shared", get_if_exists=True).remote(10))
    assert get(first.incr.remote()) == 11
    second = Counter.options(name="shared", get_if_exists=True).remote(99)
    assert second == first
    assert get(second.incr.remote()) == 12  # same actor: its state, not a new 99
    assert get(first.pid.remote()) == get(second.pid.remote())


def test_get_if_exists_creates_the_actor_when_missing(kill_at_end):
    counter = kill_at_end(Counter.options(name="made-on-demand", get_if_exists=True).remote(5))
    assert get(counter.get.remote()) == 5
    assert purerun.get_actor("made-on-demand") == counter


def test_a_taken_name_raises_value_error_in_the_caller(kill_at_end):
    kill_at_end(Counter.options(name="taken").remote())
    with pytest.raises(ValueError, match="taken"):
        Counter.options(name="taken").remote()


def test_a_name_is_free_again_once_its_actor_is_dead(kill_at_end):
    first = Counter.options(name="reused").remote(1)
    assert get(first.get.remote()) == 1
    purerun.kill(first)
    wait_for(lambda: lookup_fails("reused"), message="the killed actor's name to be released")
    second = kill_at_end(Counter.options(name="reused").remote(2))
    assert get(purerun.get_actor("reused").get.remote()) == 2
    assert second != first


def test_namespace_option_scopes_the_name(kill_at_end):
    in_team = kill_at_end(Counter.options(name="scoped", namespace="team").remote(1))
    assert get(in_team.get.remote()) == 1
    assert get(purerun.get_actor("scoped", namespace="team").get.remote()) == 1
    assert lookup_fails("scoped")  # not in this job's namespace
    mine = kill_at_end(Counter.options(name="scoped").remote(2))  # no clash
    assert get(purerun.get_actor("scoped").get.remote()) == 2
    assert mine != in_team


def test_get_actor_finds_an_actor_still_waiting_to_be_placed(kill_at_end):
    waiting = kill_at_end(Counter.options(name="not-placed-yet",
                                          resources={"widget": 5}).remote())
    assert purerun.get_actor("not-placed-yet") == waiting


def test_the_name_of_an_actor_failing_in_init_is_released():
    @purerun.remote
    class Broken:
        def __init__(self):
            raise ValueError("no")

        def ping(self):
            return "pong"

    broken = Broken.options(name="broken-init").remote()
    with pytest.raises(ActorDiedError):
        get(broken.ping.remote())
    wait_for(lambda: lookup_fails("broken-init"), message="the dead actor's name to go")


def test_named_actor_outlives_its_handles(kill_at_end):
    counter = Counter.options(name="kept-by-name").remote()
    pid = get(counter.pid.remote())
    del counter
    gc.collect()
    purerun.available_resources()  # a round trip: our dropped reference has reached the node
    found = kill_at_end(purerun.get_actor("kept-by-name"))
    assert get(found.pid.remote()) == pid


def test_namespaces_isolate_names_across_drivers(cluster, kill_at_end):
    address = cluster["address"]
    [made] = run_driver(address, "alpha", [{"make": "svc", "detached": True, "value": 1}])
    assert "error" not in made, made
    beta = run_driver(address, "beta", [
        {"lookup": "svc"},                         # not in beta
        {"lookup": "svc", "namespace": "alpha"},   # but reachable by naming alpha
        {"make": "svc", "detached": True, "value": 2},  # the name is free in beta
    ])
    assert beta[0]["error"] == "ValueError"
    assert beta[1]["value"] == 1 and beta[1]["pid"] == made["pid"]
    assert "error" not in beta[2], beta[2]
    alpha = run_driver(address, "alpha", [
        {"lookup": "svc"},
        {"make": "svc", "value": 3},  # taken in alpha
    ])
    assert alpha[0]["value"] == 1
    assert alpha[1]["error"] == "ValueError"

    in_alpha = kill_at_end(purerun.get_actor("svc", namespace="alpha"))
    in_beta = kill_at_end(purerun.get_actor("svc", namespace="beta"))
    assert get([in_alpha.get.remote(), in_beta.get.remote()]) == [1, 2]
    assert lookup_fails("svc")  # this driver's own (anonymous) namespace has no "svc"


def test_named_actor_dies_with_the_driver_that_made_it(cluster):
    [made] = run_driver(cluster["address"], "ephemeral", [{"make": "short-lived"}])
    assert "error" not in made, made
    wait_for(lambda: lookup_fails("short-lived", "ephemeral"),
             message="the exited driver's named actor to be gone")
    wait_for(lambda: pid_gone(made["pid"]), message="its process to exit")


def test_detached_actor_outlives_the_driver_that_made_it(cluster, kill_at_end):
    keeper, sentinel = run_driver(cluster["address"], "keepers", [
        {"make": "keeper", "detached": True, "value": 5, "add": 1},
        {"make": "sentinel"},
    ])
    assert "error" not in keeper and "error" not in sentinel, (keeper, sentinel)
    # Once the non-detached sentinel is gone, the node has dealt with the driver's exit.
    wait_for(lambda: lookup_fails("sentinel", "keepers"), message="the sentinel to be gone")
    found = kill_at_end(purerun.get_actor("keeper", namespace="keepers"))
    assert get([found.get.remote(), found.pid.remote()]) == [6, keeper["pid"]]
    assert get(found.add.remote(1)) == 7


# --- 6. the actor's life: kill, exit, terminate, crash, restart, retry ----------------------


@pytest.mark.parametrize("max_restarts", [0, 1])
def test_kill_fails_pending_and_later_calls(max_restarts, tmp_path, kill_at_end):
    counter = kill_at_end(Counter.options(max_restarts=max_restarts).remote())
    pid = get(counter.pid.remote())
    entered, gate = str(tmp_path / "entered"), str(tmp_path / "gate")
    running = counter.block.remote(gate, entered)
    queued = counter.incr.remote()
    wait_for(lambda: os.path.exists(entered), message="the blocking call to start")
    purerun.kill(counter)  # no_restart=True by default: max_restarts does not matter
    for ref in (running, queued, counter.incr.remote()):
        with pytest.raises(ActorDiedError) as info:
            get(ref)
        assert isinstance(info.value, RayActorError)
    wait_for(lambda: pid_gone(pid), message="the killed actor's process to exit")


def test_kill_something_else_raises_value_error():
    with pytest.raises(ValueError):
        purerun.kill("not an actor")


def test_kill_an_actor_that_was_never_placed(kill_at_end):
    unplaceable = kill_at_end(Counter.options(resources={"widget": 5}).remote())  # node: 2
    ref = unplaceable.incr.remote()
    purerun.kill(unplaceable)
    with pytest.raises(ActorDiedError):
        get(ref)


@pytest.mark.parametrize("actor_class, options, method", [
    pytest.param(Exiter, {}, "leave", id="sync"),
    pytest.param(Exiter, {"max_concurrency": 2}, "leave", id="threaded"),
    pytest.param(AsyncExiter, {}, "leave", id="async"),
    pytest.param(AsyncExiter, {}, "leave_from_sync_method", id="async-sync-method"),
])
def test_exit_actor_ends_the_actor_and_runs_atexit(actor_class, options, method, tmp_path,
                                                  kill_at_end):
    atexit_file = str(tmp_path / "atexit-ran")
    actor = kill_at_end(actor_class.options(num_cpus=1, max_restarts=1, **options)
                        .remote(atexit_file))
    pid = get(actor.pid.remote())
    leaving = getattr(actor, method).remote()
    after = actor.incr.remote()
    with pytest.raises(ActorDiedError):
        get(leaving)
    if "max_concurrency" in options:
        # A threaded actor may finish a call that ran alongside the exiting one.
        try:
            assert get(after) == 1
        except ActorDiedError:
            pass
    else:
        with pytest.raises(ActorDiedError):  # queued behind the exit
            get(after)
    with pytest.raises(ActorDiedError):  # not restarted, though max_restarts=1
        get(actor.incr.remote())
    wait_for(lambda: os.path.exists(atexit_file), message="the actor's atexit handler")
    wait_for(lambda: pid_gone(pid), message="the actor's process to exit")


def test_exit_actor_outside_an_actor_raises_type_error():
    @purerun.remote
    def in_a_task():
        try:
            exit_actor()
        except TypeError:
            return "TypeError"
        return "no error"

    with pytest.raises(TypeError):
        exit_actor()
    assert get(in_a_task.remote()) == "TypeError"


def test_ray_terminate_exits_after_pending_calls(tmp_path, kill_at_end):
    atexit_file = str(tmp_path / "atexit-ran")
    entered, gate = str(tmp_path / "entered"), str(tmp_path / "gate")
    actor = kill_at_end(Exiter.remote(atexit_file))
    pid = get(actor.pid.remote())
    blocked = actor.block.remote(gate, entered)
    pending = [actor.incr.remote() for _ in range(3)]
    actor.__ray_terminate__.remote()
    after = actor.incr.remote()
    wait_for(lambda: os.path.exists(entered), message="the first call to start")
    touch(gate)
    assert get(blocked) == "released"
    assert get(pending) == [1, 2, 3]
    with pytest.raises(ActorDiedError):
        get(after)
    wait_for(lambda: os.path.exists(atexit_file), message="the actor's atexit handler")
    wait_for(lambda: pid_gone(pid), message="the actor's process to exit")


def test_ray_terminate_ends_an_async_actor(tmp_path, kill_at_end):
    atexit_file = str(tmp_path / "atexit-ran")
    actor = kill_at_end(AsyncExiter.remote(atexit_file))
    pid = get(actor.pid.remote())
    assert get([actor.incr.remote() for _ in range(3)]) == [1, 2, 3]
    actor.__ray_terminate__.remote()
    wait_for(lambda: pid_gone(pid), timeout=10, message="the async actor's process to exit")
    wait_for(lambda: os.path.exists(atexit_file), message="the actor's atexit handler")
    with pytest.raises(ActorDiedError):
        get(actor.incr.remote())


def test_sigkill_fails_pending_and_later_calls(tmp_path, kill_at_end):
    counter = kill_at_end(Counter.options(num_cpus=1).remote())
    pid = get(counter.pid.remote())
    entered, gate = str(tmp_path / "entered"), str(tmp_path / "gate")
    running = counter.block.remote(gate, entered)
    queued = counter.incr.remote()
    wait_for(lambda: os.path.exists(entered), message="the blocking call to start")
    os.kill(pid, signal.SIGKILL)
    for ref in (running, queued):
        with pytest.raises(ActorDiedError):
            get(ref)
    with pytest.raises(ActorDiedError):
        get(counter.incr.remote())


def test_crashed_actor_restarts_once_with_max_restarts_1(tmp_path, kill_at_end):
    init_log = str(tmp_path / "init.log")
    counter = kill_at_end(Counter.options(max_restarts=1).remote(0, init_log))
    assert get(counter.incr.remote()) == 1
    first_pid = get(counter.pid.remote())
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: pid_reaped(first_pid), message="the node to notice the crash")

    second_pid = get(counter.pid.remote())  # queued while restarting, run after
    assert second_pid != first_pid
    assert get(counter.get.remote()) == 0  # __init__ ran again: state is new
    assert lines(init_log) == [str(first_pid), str(second_pid)]

    os.kill(second_pid, signal.SIGKILL)
    wait_for(lambda: pid_reaped(second_pid), message="the node to notice the second crash")
    with pytest.raises(ActorDiedError):  # no restarts left
        get(counter.pid.remote())
    assert len(lines(init_log)) == 2


def test_restarted_actor_keeps_its_name_resources_and_creation_arguments(kill_at_end):
    start = purerun.put(40)
    counter = kill_at_end(Counter.options(name="phoenix", num_cpus=1, max_restarts=1)
                          .remote(start))
    del start  # the actor itself keeps its creation arguments for the restart
    assert get(counter.incr.remote()) == 41
    first_pid = get(counter.pid.remote())
    assert held() == {"CPU": 1.0}
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: pid_reaped(first_pid), message="the node to notice the crash")
    assert get(counter.get.remote()) == 40
    assert held() == {"CPU": 1.0}  # held once, not twice nor released
    found = purerun.get_actor("phoenix")
    assert get(found.pid.remote()) == get(counter.pid.remote()) != first_pid


def test_max_restarts_minus_one_restarts_again_and_again(tmp_path, kill_at_end):
    init_log = str(tmp_path / "init.log")
    counter = kill_at_end(Counter.options(max_restarts=-1).remote(0, init_log))
    for _ in range(3):
        pid = get(counter.pid.remote())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: pid_reaped(pid), message="the node to notice the crash")
    assert get(counter.incr.remote()) == 1
    assert len(lines(init_log)) == 4


@pytest.mark.parametrize("max_restarts", [0, 1])
def test_process_dying_in_init(max_restarts, tmp_path, kill_at_end):
    init_log, marker = str(tmp_path / "init.log"), str(tmp_path / "crashed")

    @purerun.remote
    class DiesInInit:
        def __init__(self, marker, init_log):
            with open(init_log, "a") as f:
                f.write("init\n")
            if not os.path.exists(marker):
                touch(marker)
                os.kill(os.getpid(), signal.SIGKILL)

        def ping(self):
            return "pong"

    actor = kill_at_end(DiesInInit.options(num_cpus=1, max_restarts=max_restarts)
                        .remote(marker, init_log))
    if max_restarts:
        assert get(actor.ping.remote()) == "pong"
        assert lines(init_log) == ["init", "init"]
    else:
        with pytest.raises(ActorDiedError):
            get(actor.ping.remote())
        assert lines(init_log) == ["init"]


def test_max_task_retries_reruns_the_calls_in_flight_at_a_crash(tmp_path, kill_at_end):
    init_log, marker = str(tmp_path / "init.log"), str(tmp_path / "crashed")
    counter = kill_at_end(Counter.options(max_restarts=1, max_task_retries=1)
                          .remote(0, init_log))
    first_pid = get(counter.pid.remote())
    crashing = counter.crash_once.remote(marker)
    after = counter.append.remote("after")
    retried_pid = get(crashing)
    assert retried_pid != first_pid and os.path.exists(marker)
    assert get(after) == 2
    assert get(counter.log.remote()) == ["crash_once", "after"]  # in order, on the new one
    assert lines(init_log) == [str(first_pid), str(retried_pid)]


def test_method_level_max_task_retries(tmp_path, kill_at_end):
    init_log, marker = str(tmp_path / "init.log"), str(tmp_path / "crashed")
    counter = kill_at_end(Counter.options(max_restarts=1).remote(0, init_log))
    first_pid = get(counter.pid.remote())
    retried_pid = get(counter.crash_once.options(max_task_retries=1).remote(marker))
    assert retried_pid != first_pid
    assert len(lines(init_log)) == 2


def test_call_in_flight_at_a_crash_fails_without_task_retries(tmp_path, kill_at_end):
    marker = str(tmp_path / "crashed")
    counter = kill_at_end(Counter.options(max_restarts=1).remote())
    with pytest.raises(ActorDiedError):
        get(counter.crash_once.remote(marker))
    assert get(counter.log.remote()) == []  # restarted, and the failed call was not re-run


@purerun.remote
class Phoenix:
    """Reports was_current_actor_reconstructed, as __init__ saw it and as a method sees it."""

    def __init__(self):
        self.in_init = purerun.get_runtime_context().was_current_actor_reconstructed

    def reconstructed(self):
        return self.in_init, purerun.get_runtime_context().was_current_actor_reconstructed

    def pid(self):
        return os.getpid()

    def die(self):
        os._exit(1)


@pytest.mark.parametrize("how", ["os._exit", "kill"])
def test_was_current_actor_reconstructed_after_a_restart(how, kill_at_end):
    phoenix = kill_at_end(Phoenix.options(num_cpus=0, max_restarts=1).remote())
    assert get(phoenix.reconstructed.remote()) == (False, False)
    first_pid = get(phoenix.pid.remote())
    if how == "kill":
        purerun.kill(phoenix, no_restart=False)
    else:
        with pytest.raises(ActorDiedError):
            get(phoenix.die.remote())
    wait_for(lambda: pid_reaped(first_pid), message="the node to notice the death")
    assert get(phoenix.reconstructed.remote()) == (True, True)
    assert get(phoenix.pid.remote()) != first_pid


def test_exception_in_init_fails_every_call(tmp_path, kill_at_end):
    init_log = str(tmp_path / "init.log")

    @purerun.remote
    class BrokenInit:
        def __init__(self, log):
            with open(log, "a") as f:
                f.write("init\n")
            raise ValueError("bad init 42")

        def ping(self):
            return "pong"

    actor = kill_at_end(BrokenInit.options(num_cpus=1, max_restarts=2).remote(init_log))
    refs = [actor.ping.remote() for _ in range(3)]
    for ref in refs + [actor.ping.remote()]:
        with pytest.raises(ActorDiedError) as info:
            get(ref)
        error = info.value
        assert isinstance(error, RayActorError)
        assert error.actor_init_failed
        assert "ValueError" in str(error) and "bad init 42" in str(error)
    assert lines(init_log) == ["init"]  # a failing __init__ is not retried
    wait_for(lambda: held() == {}, message="the failed actor's CPU to come back")


# --- 7. an actor ends with its last handle --------------------------------------------------


def test_actor_stops_when_its_last_handle_goes():
    counter = Counter.options(num_cpus=1).remote()
    pid = get(counter.pid.remote())
    assert held() == {"CPU": 1.0}
    last_call = counter.incr.remote()
    del counter
    gc.collect()
    assert get(last_call) == 1  # a call made before the handle went is still answered
    wait_for(lambda: pid_gone(pid), message="the actor's process to exit")
    wait_for(lambda: held() == {}, message="the actor's CPU to come back")


def test_actor_lives_while_another_actor_holds_its_handle():
    target = Counter.remote()
    pid = get(target.pid.remote())
    holder = Counter.remote()
    assert get(holder.keep.remote(target)) is True
    del target
    gc.collect()
    purerun.available_resources()  # a round trip: our dropped reference has reached the node
    assert get(holder.call_kept.remote("incr")) == 1
    assert not pid_gone(pid)
    del holder  # the holder stops, and with it the last handle to the target
    gc.collect()
    wait_for(lambda: pid_gone(pid), message="the target actor's process to exit")


def test_actor_lives_while_a_task_holds_its_handle(tmp_path):
    @purerun.remote
    def use_later(counter, gate):
        wait_path(gate)
        return get(counter.incr.remote())

    gate = str(tmp_path / "gate")
    counter = Counter.remote()
    pid = get(counter.pid.remote())
    result = use_later.remote(counter, gate)
    del counter
    gc.collect()
    purerun.available_resources()  # a round trip: our dropped reference has reached the node
    touch(gate)
    assert get(result) == 1
    wait_for(lambda: pid_gone(pid), message="the actor's process to exit after the task")


# --- 8. errors raised in methods ------------------------------------------------------------


@pytest.mark.parametrize("actor_class, options", [
    pytest.param(Counter, {}, id="sync"),
    pytest.param(Counter, {"max_concurrency": 2}, id="threaded"),
    pytest.param(AsyncCounter, {}, id="async"),
])
def test_method_exception_is_raised_as_ray_task_error_and_the_actor_lives_on(
        actor_class, options, kill_at_end):
    actor = kill_at_end(actor_class.options(**options).remote())
    assert get(actor.incr.remote()) == 1
    pid = get(actor.pid.remote())

    with pytest.raises(ValueError) as info:
        get(actor.fail.remote("boom 7"))
    error = info.value
    assert isinstance(error, RayTaskError)
    assert isinstance(error.cause, ValueError) and "boom 7" in str(error)

    with pytest.raises(InventoryError) as info:
        get(actor.fail_custom.remote("spoon"))
    assert isinstance(info.value, RayTaskError)
    assert (info.value.item, info.value.count) == ("spoon", 3)

    assert get(actor.incr.remote()) == 2  # same actor, state kept
    assert get(actor.pid.remote()) == pid
