"""Local mode: ``purerun.init(local_mode=True)`` gives the same results and the same errors as
the real runtime, and starts nothing.

PROGRAMS is a table of small programs, each with the outcome it must have. Every program runs
twice, in a fresh session each time: once in local mode, once on a real node with 2 CPUs. Both
outcomes must match the expected one, and each other exactly — error messages included, once
process ids, object ids and memory addresses are blanked out.

A program's outcome is ("value", what it returned) or ("raised", summary of the exception);
programs that need to look at an error more closely catch it and return ``facts(error)``.
"""

import asyncio
import re
import threading
import weakref

import numpy as np
import psutil
import pytest

import purerun as ray
from purerun import exceptions
from purerun.core import context


class CodedError(Exception):
    """A user exception whose constructor takes two arguments."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


class NotUnpicklableError(Exception):
    """Pickles, but unpickling calls __init__ with one argument: it cannot travel."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


# -- describing outcomes --------------------------------------------------------------------------

# Things that differ from run to run, not from mode to mode. An actor's repr is blanked too:
# on the real runtime its class was rebuilt by cloudpickle, which drops the __qualname__ of a
# class defined in a function ("module.<locals>.Cls" becomes "module.Cls").
_VARYING = [
    (re.compile(r"repr=<.*>\)"), "repr=<actor>)"),
    (re.compile(r"pid=\d+"), "pid=<pid>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "0x<addr>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<id>"),
]

# Classes a summary says the error is an instance of.
_CHECKED = (exceptions.RayTaskError, exceptions.RayActorError, exceptions.ActorDiedError,
            exceptions.ObjectLostError, exceptions.ObjectFreedError,
            exceptions.TaskCancelledError, exceptions.GetTimeoutError,
            exceptions.UnserializableException, ValueError, TypeError, KeyError,
            ZeroDivisionError, RuntimeError, CodedError)


def _blank(text):
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return text


def facts(exc):
    """What two runs of one program must agree on about an error."""
    summary = {"type": type(exc).__name__,
               "is": [c.__name__ for c in _CHECKED if isinstance(exc, c)],
               "str": _blank(str(exc))}
    if isinstance(exc, exceptions.RayTaskError):
        summary["function"] = exc.function_name
        summary["cause"] = (type(exc.cause).__name__, _blank(str(exc.cause)))
    if isinstance(exc, exceptions.RayActorError):
        summary["actor_init_failed"] = exc.actor_init_failed
    return summary


def outcome(program):
    try:
        return ("value", program())
    except Exception as exc:  # the program's error is its outcome
        return ("raised", facts(exc))


class Raises:
    """Expected outcome: an error of type ``name`` whose text contains ``match``."""

    def __init__(self, name, *instance_of, match=""):
        self.name = name
        self.instance_of = [c.__name__ for c in instance_of]
        self.match = match

    def matches(self, result):
        kind, summary = result
        return (kind == "raised" and summary["type"] == self.name
                and all(c in summary["is"] for c in self.instance_of)
                and self.match in summary["str"])

    def __repr__(self):
        return f"Raises({self.name!r}, {self.instance_of}, match={self.match!r})"


def _matches(expected, result):
    if isinstance(expected, Raises):
        return expected.matches(result)
    return result == ("value", expected)


def run_in(mode, program):
    """Run ``program`` in a fresh session of ``mode`` ("local" or "real"); its outcome."""
    if mode == "local":
        ray.init(local_mode=True, num_cpus=2)
    else:
        ray.init(num_cpus=2)
    try:
        return outcome(program)
    finally:
        ray.shutdown()


# -- the programs ---------------------------------------------------------------------------------


@ray.remote
class Counter:
    """Counts calls; shared by programs that count task attempts."""

    def __init__(self, start=0):
        self.n = start

    def inc(self):
        self.n += 1
        return self.n

    def count(self):
        return self.n


def tasks_with_ref_arguments():
    @ray.remote
    def add(x, y=0):
        return x + y

    a = add.remote(1, 2)
    b = add.remote(a, y=add.remote(10))  # top-level refs, positional or keyword, are values
    return ray.get([a, b]), ray.get(add.options(name="renamed").remote(1))


def nested_tasks():
    @ray.remote
    def leaf(x):
        return x * 2

    @ray.remote
    def tree(n):
        return sum(ray.get([leaf.remote(i) for i in range(n)]))

    return ray.get(tree.remote(4))


def refs_nested_in_arguments_stay_refs():
    @ray.remote
    def look(items):
        return type(items[0]).__name__, ray.get(items[0])

    return ray.get(look.remote([ray.put(5)]))


def returned_refs():
    @ray.remote
    def inner():
        return "deep"

    @ray.remote
    def outer():
        ref = inner.remote()
        ray.get(ref)  # finished before it is returned (the value must still be kept)
        return ref

    ref = ray.get(outer.remote())
    return type(ref).__name__, ray.get(ref)


def arguments_are_copies():
    @ray.remote
    def mutate(items, table):
        items.append(4)
        table["k"] = "changed"
        return items, table

    items, table = [1, 2, 3], {"k": "v"}
    returned = ray.get(mutate.remote(items, table))
    return items, table, returned


def stored_values_are_copies():
    value = {"a": [1]}
    ref = ray.put(value)
    value["a"].append(2)
    ray.get(ref)["a"].append(3)
    return ray.get(ref)


def numpy_arrays():
    @ray.remote
    def describe(a):
        return a.dtype.str, a.shape, int(a.sum()), a.flags.writeable

    refs = [ray.put(np.arange(n, dtype=np.int64)) for n in (4, 500, 200_000)]
    got = [(a.shape, int(a.sum()), a.flags.writeable) for a in ray.get(refs)]
    by_ref = ray.get([describe.remote(r) for r in refs])
    by_value = ray.get(describe.remote(np.ones((300, 300), dtype=np.float32)))
    return got, by_ref, by_value


def numpy_argument_is_read_only():
    @ray.remote
    def scale(a):
        a *= 2
        return a

    return ray.get(scale.remote(np.ones(100_000)))


def task_error():
    @ray.remote
    def fail():
        raise ValueError("boom")

    return ray.get(fail.remote())


def task_error_is_both_types():
    @ray.remote
    def fail():
        raise ValueError("boom")

    try:
        ray.get(fail.remote())
    except ValueError as error:
        return (isinstance(error, exceptions.RayTaskError), type(error).__name__,
                error.args, type(error.cause).__name__, error.cause.args)


def user_error_with_state():
    @ray.remote
    def fail():
        raise CodedError("bad code", 7)

    try:
        ray.get(fail.remote())
    except CodedError as error:
        return error.code, error.args, facts(error)


def error_that_cannot_travel():
    @ray.remote
    def fail():
        raise NotUnpicklableError(1, 2)

    return ray.get(fail.remote())


def dependency_failure():
    @ray.remote
    def fail():
        raise KeyError("missing")

    @ray.remote
    def use(x):
        return ("ran", x)

    return ray.get(use.remote(fail.remote()))


def failed_ref_inside_a_container():
    @ray.remote
    def fail():
        raise KeyError("missing")

    @ray.remote
    def use(items):
        return ray.get(items[0])

    return ray.get(use.remote([fail.remote()]))


def num_returns():
    @ray.remote(num_returns=3)
    def three():
        return 1, 2, 3

    @ray.remote(num_returns=0)
    def nothing():
        return None

    a, b, c = three.remote()
    return ray.get([c, b, a]), nothing.remote(), ray.get(three.options(num_returns=1).remote())


def too_many_returns():
    @ray.remote(num_returns=2)
    def three():
        return 1, 2, 3

    return ray.get(three.remote()[1])


def not_iterable_returns():
    @ray.remote(num_returns=2)
    def one():
        return 5

    return ray.get(one.remote()[0])


def retried_until_it_works():
    @ray.remote(max_retries=3, retry_exceptions=True)
    def flaky(counter):
        n = ray.get(counter.inc.remote())
        if n < 3:
            raise ValueError(f"attempt {n}")
        return n

    return ray.get(flaky.remote(Counter.remote()))


def retries_run_out():
    @ray.remote(max_retries=1, retry_exceptions=True)
    def flaky(counter):
        raise ValueError(f"attempt {ray.get(counter.inc.remote())}")

    counter = Counter.remote()
    try:
        ray.get(flaky.remote(counter))
    except ValueError as error:
        return str(error.cause), ray.get(counter.count.remote())


def only_listed_exceptions_are_retried():
    @ray.remote(max_retries=2, retry_exceptions=[KeyError])
    def flaky(counter, error_type):
        raise error_type(ray.get(counter.inc.remote()))

    attempts = []
    for error_type in (ValueError, KeyError):
        counter = Counter.remote()
        try:
            ray.get(flaky.remote(counter, error_type))
        except error_type:
            attempts.append(ray.get(counter.count.remote()))
    return attempts


def exceptions_are_not_retried_by_default():
    @ray.remote
    def fail(counter):
        raise ValueError(ray.get(counter.inc.remote()))

    counter = Counter.remote()
    with pytest.raises(ValueError):
        ray.get(fail.remote(counter))
    return ray.get(counter.count.remote())


def wait_for_ready_objects():
    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def fail():
        raise ValueError("x")

    refs = [square.remote(i) for i in range(4)] + [fail.remote()]
    ray.get(refs[:4])
    with pytest.raises(ValueError):
        ray.get(refs[4])
    ready, not_ready = ray.wait(refs, num_returns=2)
    every, none = ray.wait(refs, num_returns=5, timeout=0)
    return ([refs.index(r) for r in ready], [refs.index(r) for r in not_ready],
            len(every), none)


def actor_with_state():
    @ray.remote
    class Account:
        def __init__(self, balance):
            self.balance = balance

        def deposit(self, amount):
            self.balance += amount
            return self.balance

    a, b = Account.remote(10), Account.remote(100)
    for _ in range(3):
        a.deposit.remote(5)
    return ray.get([a.deposit.remote(0), b.deposit.remote(1)])


def actor_method_error_keeps_the_actor():
    @ray.remote
    class Divider:
        def div(self, x):
            return 10 // x

    d = Divider.remote()
    try:
        ray.get(d.div.remote(0))
    except ZeroDivisionError as error:
        return facts(error), ray.get(d.div.remote(2))


def actor_method_retries():
    @ray.remote
    class Flaky:
        def __init__(self):
            self.calls = 0

        @ray.method(max_task_retries=2, retry_exceptions=True)
        def call(self):
            self.calls += 1
            if self.calls < 3:
                raise RuntimeError(f"call {self.calls}")
            return self.calls

    flaky = Flaky.remote()
    return ray.get(flaky.call.remote())


def call_on_a_handle_not_kept():
    # The handle goes right after the call is submitted: the call must still run.
    return ray.get(Counter.remote(41).inc.remote())


def actor_handles_in_tasks():
    @ray.remote
    def bump(counter, times):
        return ray.get([counter.inc.remote() for _ in range(times)])

    counter = Counter.remote()
    return ray.get(bump.remote(counter, 3)), ray.get(counter.count.remote())


def async_actor():
    @ray.remote
    def double(x):
        return 2 * x

    @ray.remote
    class Service:
        async def compute(self, x):
            await asyncio.sleep(0)
            return await double.remote(x) + 1

        def sync_method_runs_on_the_loop(self):
            return asyncio.get_running_loop() is not None

        async def fail(self):
            await asyncio.sleep(0)
            raise RuntimeError("async boom")

    s = Service.remote()
    try:
        ray.get(s.fail.remote())
    except RuntimeError as error:
        failure = facts(error)
    return ray.get(s.compute.remote(5)), ray.get(s.sync_method_runs_on_the_loop.remote()), failure


def asyncio_driver():
    @ray.remote
    def double(x):
        return 2 * x

    @ray.remote
    class Echo:
        async def echo(self, x):
            await asyncio.sleep(0)
            return x

    async def main():
        echo = Echo.remote()
        values = await asyncio.gather(double.remote(1), echo.echo.remote("hi"))
        return values, await double.remote(5).as_future()

    return asyncio.run(main())


def named_actor():
    first = Counter.options(name="counter", namespace="ns").remote()
    ray.get(first.inc.remote())
    found = ray.get_actor("counter", namespace="ns")
    ray.get(found.inc.remote())
    again = Counter.options(name="counter", namespace="ns", get_if_exists=True).remote()
    return ray.get(again.inc.remote()), found == first, again == first


def duplicate_actor_name():
    keep = Counter.options(name="twice").remote()
    Counter.options(name="twice").remote()
    return keep


def missing_named_actor():
    return ray.get_actor("nobody", namespace="elsewhere")


def actor_init_failure():
    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("bad init")

        def ping(self):
            return "pong"

    broken = Broken.remote()
    first = outcome(lambda: ray.get(broken.ping.remote()))
    second = outcome(lambda: ray.get(broken.ping.remote()))
    return first, second


def exit_actor():
    @ray.remote
    class Quitter:
        def quit(self):
            ray.actor.exit_actor()

        def ping(self):
            return "pong"

    q = Quitter.remote()
    before = ray.get(q.ping.remote())
    return (before, outcome(lambda: ray.get(q.quit.remote())),
            outcome(lambda: ray.get(q.ping.remote())))


def exit_async_actor():
    @ray.remote
    class AsyncQuitter:
        async def quit(self):
            ray.actor.exit_actor()

        async def ping(self):
            return "pong"

    q = AsyncQuitter.remote()
    before = ray.get(q.ping.remote())
    return (before, outcome(lambda: ray.get(q.quit.remote())),
            outcome(lambda: ray.get(q.ping.remote())))


def exit_actor_outside_an_actor():
    @ray.remote
    def task():
        ray.actor.exit_actor()

    return outcome(ray.actor.exit_actor), outcome(lambda: ray.get(task.remote()))


def kill_actor():
    c = Counter.remote()
    ray.get(c.inc.remote())
    ray.kill(c)
    return ray.get(c.inc.remote())


def kill_restarts_an_actor_with_restarts_left():
    # max_task_retries: a call that reached the killed process is run again after the restart.
    c = Counter.options(max_restarts=1, max_task_retries=1).remote(10)
    before = ray.get([c.inc.remote(), c.inc.remote()])
    ray.kill(c, no_restart=False)
    after = ray.get(c.inc.remote())
    ray.kill(c, no_restart=False)
    return before, after, outcome(lambda: ray.get(c.inc.remote()))


def terminate_actor():
    c = Counter.remote()
    return (ray.get(c.__ray_terminate__.remote()),
            outcome(lambda: ray.get(c.inc.remote())))


def runtime_context():
    @ray.remote
    def task():
        ctx = ray.get_runtime_context()
        return ctx.get_task_id() is not None, ctx.get_actor_id(), ctx.get_task_name()

    @ray.remote
    class Probe:
        def ids(self):
            ctx = ray.get_runtime_context()
            return ctx.get_actor_id(), ctx.get_task_id() is not None

    ctx = ray.get_runtime_context()
    p = Probe.remote()
    actor_id, has_task = ray.get(p.ids.remote())
    return (ctx.get_task_id(), ctx.get_actor_id(), ctx.get_job_id(), ray.get(task.remote()),
            actor_id == p._actor_id.hex(), has_task)


def actor_id_in_init():
    @ray.remote
    class Probe:
        def __init__(self):
            self.actor_id = ray.get_runtime_context().get_actor_id()

        def init_actor_id(self):
            return self.actor_id

    p = Probe.remote()
    return ray.get(p.init_actor_id.remote()) == p._actor_id.hex()


def assigned_resources():
    @ray.remote(num_cpus=1)
    def task():
        return ray.get_runtime_context().get_assigned_resources()

    @ray.remote(num_cpus=1)
    class Probe:
        def resources(self):
            return ray.get_runtime_context().get_assigned_resources()

    probe = Probe.remote()
    return ray.get(task.remote()), ray.get(probe.resources.remote())


def available_resources_with_an_actor():
    @ray.remote(num_cpus=1)
    class Busy:
        def ping(self):
            return "pong"

    busy = Busy.remote()
    ray.get(busy.ping.remote())
    return ray.available_resources().get("CPU"), ray.cluster_resources()["CPU"]


def put_an_object_ref():
    return ray.put(ray.put(1))


def unpicklable_argument():
    @ray.remote
    def f(x):
        return x

    return f.remote(threading.Lock())


def unpicklable_return_value():
    @ray.remote
    def f():
        return threading.Lock()

    return ray.get(f.remote())


def unpicklable_function():
    lock = threading.Lock()

    @ray.remote
    def f():
        return lock.locked()

    return f.remote()


def futures():
    @ray.remote
    def f(x):
        return x + 1

    @ray.remote
    def fail():
        raise ValueError("in future")

    error = fail.remote().future().exception(timeout=30)
    return f.remote(1).future().result(timeout=30), facts(error)


def cancel_a_finished_task():
    @ray.remote
    def f():
        return "done"

    ref = f.remote()
    ray.get(ref)
    ray.cancel(ref)
    return ray.get(ref)


def free_then_get():
    ref = ray.put("value")
    ray.get(ref)
    ray.internal.free(ref)
    return ray.get(ref)


def get_with_timeout():
    @ray.remote
    def f():
        return "done"

    return ray.get(f.remote(), timeout=30), ray.get([ray.put(1)], timeout=30)


PROGRAMS = [
    (tasks_with_ref_arguments, ([3, 13], 1)),
    (nested_tasks, 12),
    (refs_nested_in_arguments_stay_refs, ("ObjectRef", 5)),
    (returned_refs, ("ObjectRef", "deep")),
    (arguments_are_copies, ([1, 2, 3], {"k": "v"}, ([1, 2, 3, 4], {"k": "changed"}))),
    (stored_values_are_copies, {"a": [1]}),
    # Read-only at every size, as in Ray: the smallest arrays too.
    (numpy_arrays, ([((4,), 6, False), ((500,), 124750, False),
                     ((200_000,), 19999900000, False)],
                    [("<i8", (4,), 6, False), ("<i8", (500,), 124750, False),
                     ("<i8", (200_000,), 19999900000, False)],
                    ("<f4", (300, 300), 90000, False))),
    (numpy_argument_is_read_only,
     Raises("RayTaskError(ValueError)", exceptions.RayTaskError, ValueError,
            match="read-only")),
    (task_error, Raises("RayTaskError(ValueError)", exceptions.RayTaskError, ValueError,
                        match="ValueError: boom")),
    (task_error_is_both_types, (True, "RayTaskError(ValueError)", ("boom",), "ValueError",
                                ("boom",))),
    (user_error_with_state, None),  # checked by comparing the modes only
    (error_that_cannot_travel, Raises("RayTaskError(UnserializableException)",
                                      exceptions.UnserializableException, match="1-2")),
    (dependency_failure, Raises("RayTaskError(KeyError)", KeyError,
                                match="purerun::dependency_failure.<locals>.fail()")),
    (failed_ref_inside_a_container,
     Raises("RayTaskError(KeyError)", KeyError,
            match="purerun::failed_ref_inside_a_container.<locals>.use()")),
    (num_returns, ([3, 2, 1], None, (1, 2, 3))),
    (too_many_returns, Raises("RayTaskError(ValueError)", ValueError,
                              match="has num_returns=2 but returned 3 values.")),
    (not_iterable_returns, Raises("RayTaskError(ValueError)", ValueError,
                                  match="has num_returns=2 but returned a non-iterable int.")),
    (retried_until_it_works, 3),
    (retries_run_out, ("attempt 2", 2)),
    (only_listed_exceptions_are_retried, [1, 3]),
    (exceptions_are_not_retried_by_default, 1),
    (wait_for_ready_objects, ([0, 1], [2, 3, 4], 5, [])),
    (actor_with_state, [25, 101]),
    (actor_method_error_keeps_the_actor, None),
    (actor_method_retries, 3),
    (call_on_a_handle_not_kept, 42),
    (actor_handles_in_tasks, ([1, 2, 3], 3)),
    (async_actor, None),
    (asyncio_driver, ([2, "hi"], 10)),
    (named_actor, (3, True, True)),
    (duplicate_actor_name, Raises("ValueError", match="The name twice (namespace=anonymous:")),
    (missing_named_actor, Raises("ValueError", match="Failed to look up actor with name "
                                                     "'nobody' in namespace 'elsewhere'")),
    (actor_init_failure, None),
    (exit_actor, None),
    (exit_async_actor, None),
    (exit_actor_outside_an_actor, None),
    (kill_actor, Raises("ActorDiedError", exceptions.ActorDiedError,
                        match="The actor is dead: it was killed")),
    (kill_restarts_an_actor_with_restarts_left, None),
    (terminate_actor, None),
    (runtime_context, (None, None, "01000000", (True, None, "runtime_context.<locals>.task"),
                       True, True)),
    (actor_id_in_init, True),
    (assigned_resources, ({"CPU": 1.0}, {"CPU": 1.0})),
    (available_resources_with_an_actor, (1.0, 2.0)),
    (put_an_object_ref, Raises("TypeError", match="Calling put() on an ObjectRef")),
    (unpicklable_argument, Raises("TypeError", match="Could not serialize the tuple object "
                                                     "at value[0][0] (type lock)")),
    (unpicklable_return_value, Raises("RayTaskError(TypeError)", TypeError,
                                      match="Could not serialize the lock object")),
    (unpicklable_function, Raises("TypeError", match="Could not serialize the function")),
    (futures, None),
    (cancel_a_finished_task, "done"),
    (free_then_get, Raises("ObjectFreedError", exceptions.ObjectFreedError)),
    (get_with_timeout, ("done", [1])),
]


@pytest.mark.parametrize("program, expected", PROGRAMS, ids=[p.__name__ for p, _ in PROGRAMS])
def test_same_outcome_in_local_mode_and_on_the_real_runtime(program, expected):
    local = run_in("local", program)
    real = run_in("real", program)
    if expected is not None:
        assert _matches(expected, local), f"local mode: {local!r}\nexpected: {expected!r}"
        assert _matches(expected, real), f"real runtime: {real!r}\nexpected: {expected!r}"
    assert local == real


def test_rows_without_an_expected_outcome_are_right_in_local_mode():
    # The rows without an expected outcome are compared between the modes; these facts make
    # sure the two do not agree on something wrong.
    ray.init(local_mode=True, num_cpus=2)
    try:
        code, args, summary = user_error_with_state()
        assert (code, args) == (7, ("bad code", 7))
        assert summary["type"] == "RayTaskError(CodedError)"

        summary, after = actor_method_error_keeps_the_actor()
        assert after == 5 and summary["cause"][0] == "ZeroDivisionError"
        assert "repr=<actor>" in summary["str"]  # the actor is named in the error's header

        result, on_loop, failure = async_actor()
        assert (result, on_loop) == (11, True)
        assert failure["type"] == "RayTaskError(RuntimeError)"
        assert failure["str"].rstrip().endswith("RuntimeError: async boom")

        first, second = actor_init_failure()
        for kind, died in (first, second):
            assert kind == "raised" and died["type"] == "ActorDiedError"
            assert died["actor_init_failed"] is True
            assert died["str"].startswith("The actor died because of an error raised in its "
                                          "creation task")
            assert died["str"].rstrip().endswith("ValueError: bad init")

        for program in (exit_actor, exit_async_actor):
            before, on_exit, after = program()
            assert before == "pong"
            assert on_exit[1]["type"] == "ActorDiedError"
            assert "The actor exited via exit_actor()." in on_exit[1]["str"]
            assert "The actor is dead" in after[1]["str"]

        in_driver, in_task = exit_actor_outside_an_actor()
        assert in_driver[1]["type"] == "TypeError"
        assert in_task[1]["type"] == "RayTaskError(TypeError)"

        before, after, dead = kill_restarts_an_actor_with_restarts_left()
        assert (before, after) == ([11, 12], 11)
        assert dead[1]["type"] == "ActorDiedError"

        terminated, later = terminate_actor()
        assert terminated is None and later[1]["type"] == "ActorDiedError"

        value, error = futures()
        assert value == 2 and error["type"] == "RayTaskError(ValueError)"
    finally:
        ray.shutdown()


# -- local mode only ---------------------------------------------------------------------------


def test_local_mode_starts_no_process_and_no_thread():
    me = psutil.Process()
    children = {p.pid for p in me.children(recursive=True)}
    threads = threading.active_count()
    ray.init(local_mode=True, num_cpus=2)
    try:
        for program in (nested_tasks, actor_with_state, async_actor, asyncio_driver,
                        retried_until_it_works, numpy_arrays):
            program()
        assert {p.pid for p in me.children(recursive=True)} == children
        assert threading.active_count() == threads
    finally:
        ray.shutdown()


class _Tracked:
    """Instances announce themselves in LIVE, so a test can see when they are gone."""

    LIVE = weakref.WeakSet()

    def __init__(self):
        _Tracked.LIVE.add(self)

    def ping(self):
        return "pong"


@pytest.fixture
def local():
    ray.init(local_mode=True, num_cpus=2)
    yield context.client
    ray.shutdown()


def _num_objects(client):
    return client.request("stats")["num_objects"]


def test_values_go_with_their_last_ref(local):
    ref = ray.put(np.zeros(1000))
    copy = ray.get(ray.put([ref]))[0]  # a second ref, rebuilt from a stored value
    assert copy == ref
    del ref
    assert ray.get(copy).shape == (1000,)
    del copy
    assert _num_objects(local) == 0


def test_a_stored_value_keeps_the_objects_it_refers_to(local):
    inner = ray.put("inner")
    outer = ray.put({"ref": inner})
    inner_id = inner.binary()
    del inner
    assert _num_objects(local) == 2
    assert ray.get(ray.get(outer)["ref"]) == "inner"
    del outer
    assert _num_objects(local) == 0 and local.state.objects.get(inner_id) is None


def test_an_actor_ends_with_its_last_handle_unless_named(local):
    tracked = ray.remote(_Tracked)
    handle = tracked.remote()
    assert ray.get(handle.ping.remote()) == "pong" and len(_Tracked.LIVE) == 1
    del handle
    local.flush()
    assert len(_Tracked.LIVE) == 0

    named = tracked.options(name="kept").remote()
    del named
    local.flush()
    assert len(_Tracked.LIVE) == 1
    found = ray.get_actor("kept")
    ray.kill(found)
    del found
    local.flush()
    assert len(_Tracked.LIVE) == 0 and _num_objects(local) == 0


def test_tasks_run_at_once_in_the_calling_thread(local):
    caller = threading.get_ident()

    @ray.remote
    def where():
        return threading.get_ident()

    @ray.remote
    class Where:
        async def where(self):
            return threading.get_ident()

    assert ray.get(where.remote()) == caller
    assert ray.get(Where.remote().where.remote()) == caller


def test_an_error_the_caller_is_handling_does_not_leak_into_the_task_error(local):
    @ray.remote
    def fail():
        raise ValueError("inside")

    try:
        raise KeyError("the caller's own")
    except KeyError:
        ref = fail.remote()
    with pytest.raises(ValueError) as info:
        ray.get(ref)
    assert "the caller's own" not in str(info.value)


def test_get_of_an_object_this_session_never_had(local):
    stranger = local.new_ref(b"\x01" * 20)
    with pytest.raises(exceptions.ObjectLostError):
        ray.get(stranger)
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(stranger, timeout=0)
    assert ray.wait([stranger], timeout=0) == ([], [stranger])


def test_a_closed_local_client_refuses_calls():
    ray.init(local_mode=True)
    client = context.client
    ref = ray.put(1)
    ray.shutdown()
    with pytest.raises(exceptions.RaySystemError):
        client.get([ref])
    del ref  # dropping a ref after shutdown is harmless


def test_async_actors_calling_each_other_and_themselves(local):
    @ray.remote
    class Inner:
        async def double(self, x):
            await asyncio.sleep(0)
            return 2 * x

    @ray.remote
    class Outer:
        def __init__(self, inner):
            self.inner = inner

        async def via_inner(self, x):
            return await self.inner.double.remote(x) + 1

        async def via_self(self, x):
            me = ray.get_runtime_context().current_actor
            return await me.via_inner.remote(x) * 10

    outer = Outer.remote(Inner.remote())
    assert ray.get(outer.via_inner.remote(1)) == 3
    assert ray.get(outer.via_self.remote(1)) == 30


def test_calls_from_several_threads_take_turns(local):
    @ray.remote
    class Tally:
        def __init__(self):
            self.n = 0

        async def add(self):
            n = self.n
            await asyncio.sleep(0)
            self.n = n + 1
            return self.n

    tally = Tally.remote()
    errors = []

    def caller():
        try:
            for _ in range(20):
                ray.get(tally.add.remote())
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert ray.get(tally.add.remote()) == 81


def test_generator_calls_in_local_mode(local):
    @ray.remote
    def count(n, bad=None):
        for i in range(n):
            if i == bad:
                raise ValueError("bad item")
            yield i

    assert [ray.get(r) for r in count.remote(3)] == [0, 1, 2]
    gen = count.remote(3, bad=1)
    assert ray.get(next(gen)) == 0
    with pytest.raises(ValueError, match="bad item"):
        ray.get(next(gen))
    assert list(gen) == []
    assert [ray.get(r) for r in ray.get(count.options(num_returns="dynamic").remote(2))] \
        == [0, 1]
    del gen
    local.flush()
    assert len(local.state.objects.entries) == 0
