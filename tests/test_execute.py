"""core.execute without a process: one call from its TaskSpec and argument payloads to the
results TASK_DONE carries, with a fake reader and storer standing in for the arena."""

import asyncio
import os
import sys

import pytest

from purerun import exceptions
from purerun.actor import exit_actor
from purerun.core import context, ids, serialization
from purerun.core.execute import TERMINATE, Executor, WorkerExit, split_returns
from purerun.core.protocol import ERROR, INLINE
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD, ActorSpec, Dep, TaskSpec

NODE_IP = "10.1.2.3"


class Calls:
    """The fake process around an Executor: a function table, an object table of INLINE
    payloads read by ``read``, a log of what ``release`` and ``created`` got."""

    def __init__(self):
        self.functions = {}
        self.read_ids = []
        self.released = []
        self.instances = []
        self.executor = Executor(self.function_of, self.read, self.store,
                                 release=self.release, created=self.created, node_ip=NODE_IP)

    def function_of(self, spec):
        return self.functions[spec.function_key]

    def read(self, object_id, entry):
        self.read_ids.append(object_id)
        kind, payload = entry
        assert kind == INLINE
        return serialization.deserialize(*payload)

    def store(self, sv):
        return INLINE, serialization.to_inline(sv)

    def release(self, object_id, entry):
        self.released.append(object_id)

    def created(self, spec, instance):
        self.instances.append(instance)

    def spec(self, fn, *args, deps=(), num_returns=1, kind=None, **fields):
        """A TaskSpec calling ``fn`` (registered here) with ``args``; Dep markers in them
        stand for ``deps``."""
        key = fn.__name__.encode() if fn is not None else None
        if fn is not None:
            self.functions[key] = fn
        return TaskSpec(task_id=ids.new_task_id(), name=getattr(fn, "__name__", "method"),
                        function_key=key, args=inline((list(args), {})) if args else None,
                        args_in_store=False, deps=list(deps), contained=[],
                        num_returns=num_returns, **({"kind": kind} if kind else {}), **fields)


def inline(value):
    return serialization.to_inline(serialization.serialize(value))


def values_of(results):
    """The values of INLINE results, or the error of ERROR ones."""
    out = []
    for _object_id, kind, payload, _contained in results:
        if kind == ERROR:
            out.append(serialization.deserialize(payload))
        else:
            out.append(serialization.deserialize(*payload))
    return out


@pytest.fixture
def calls():
    return Calls()


def add(a, b):
    return a + b


def test_a_plain_result(calls):
    spec = calls.spec(add, 2, 3)
    results, retry, exiting = calls.executor.run(spec, [])
    assert (retry, exiting) == (False, False)
    assert [r[0] for r in results] == spec.return_ids()
    assert values_of(results) == [5]


def test_dependencies_replace_their_markers_and_nested_args_stay(calls):
    first, second = ids.new_put_id(), ids.new_put_id()
    spec = calls.spec(add, Dep(1), Dep(0), deps=[first, second])
    results, _, _ = calls.executor.run(spec, [(INLINE, inline("b")), (INLINE, inline("a"))])
    assert values_of(results) == ["ab"]
    assert calls.read_ids == [first, second]
    assert calls.released == []


def test_arguments_stored_as_an_object_are_the_last_dependency(calls):
    calls.functions[b"add"] = add
    stored = ids.new_put_id()
    spec = TaskSpec(task_id=ids.new_task_id(), name="add", function_key=b"add", args=None,
                    args_in_store=True, deps=[stored], contained=[])
    results, _, _ = calls.executor.run(spec, [(INLINE, inline(([40, 2], {})))])
    assert values_of(results) == [42]


def test_num_returns_zero_and_two(calls):
    results, _, _ = calls.executor.run(calls.spec(lambda: None, num_returns=0), [])
    assert results == []
    results, _, _ = calls.executor.run(calls.spec(lambda: (1, 2), num_returns=2), [])
    assert values_of(results) == [1, 2]


def test_a_value_returned_with_num_returns_zero_has_nowhere_to_go(calls):
    spec = calls.spec(lambda: 7, num_returns=0)
    results, retry, exiting = calls.executor.run(spec, [])
    assert (results, retry, exiting) == ([], False, False)  # no return id to carry the error
    with pytest.raises(ValueError, match="num_returns=0 but returned int"):
        split_returns(spec, 7)


@pytest.mark.parametrize("returned, num_returns, message", [
    ((1, 2, 3), 2, "num_returns=2 but returned 3 values"),
    (7, 2, "num_returns=2 but returned a non-iterable int"),
])
def test_a_result_that_does_not_match_num_returns_is_a_value_error(calls, returned,
                                                                  num_returns, message):
    spec = calls.spec(lambda: returned, num_returns=num_returns)
    results, retry, _ = calls.executor.run(spec, [])
    assert len(results) == num_returns
    assert all(kind == ERROR for _, kind, _, _ in results)
    error = values_of(results)[0]
    assert isinstance(error, exceptions.RayTaskError)
    assert isinstance(error.cause, ValueError) and message in str(error.cause)
    assert retry is False


def raises_key_error(x):
    raise KeyError(x)


def test_a_raising_function_is_a_ray_task_error_with_the_original_cause(calls):
    results, retry, exiting = calls.executor.run(calls.spec(raises_key_error, "k"), [])
    assert (retry, exiting) == (False, False)
    (error,) = values_of(results)
    assert isinstance(error, exceptions.RayTaskError)
    assert type(error.cause) is KeyError and error.cause.args == ("k",)
    assert "raises_key_error" in error.traceback_str
    assert "core/execute.py" not in str(error)  # purerun's own frames are not shown
    assert error.ip == NODE_IP and error.pid == os.getpid()
    with pytest.raises(KeyError):  # the caller can catch the original type
        raise error.as_instanceof_cause()


def test_an_exception_being_handled_around_the_call_is_not_its_context(calls):
    try:
        raise RuntimeError("the caller's own")
    except RuntimeError:
        results, _, _ = calls.executor.run(calls.spec(raises_key_error, "k"), [])
    (error,) = values_of(results)
    assert "the caller's own" not in error.traceback_str


def test_an_error_that_cannot_be_pickled_keeps_its_type_name_and_text(calls):
    class Local(Exception):  # a class inside a function pickles by value: make it fail
        def __reduce__(self):
            raise TypeError("not today")

    def fails():
        raise Local("boom")

    (error,) = values_of(calls.executor.run(calls.spec(fails), [])[0])
    assert isinstance(error.cause, exceptions.UnserializableException)
    assert "Local: boom" in str(error.cause)


def test_a_failed_dependency_fails_the_call_with_rays_wrapper_and_releases_the_others(calls):
    upstream = exceptions.RayTaskError("upstream", "Traceback (most recent call last):\n"
                                       "KeyError: 'x'", KeyError("x"), pid=42)
    original = serialization.dumps(upstream)
    stored, failed = ids.new_put_id(), ids.new_put_id()
    spec = calls.spec(add, Dep(0), Dep(1), deps=[stored, failed], num_returns=2)
    results, retry, exiting = calls.executor.run(spec, [(INLINE, inline(1)), (ERROR, original)])
    assert (retry, exiting) == (False, False)  # never retried: the argument stays failed
    assert [kind for _, kind, _, _ in results] == [ERROR, ERROR]
    first, second = values_of(results)
    assert str(first) == str(second)
    # As Ray: this call's own error, the original cause under it, the upstream error quoted.
    assert first.function_name == "add" and first.pid == os.getpid() and first.ip == NODE_IP
    assert isinstance(first.cause, KeyError)
    assert str(first).split("\n") == [
        f"purerun::add() (pid={os.getpid()}, ip={NODE_IP})",
        "  At least one of the input arguments for this task could not be computed:",
        f"purerun.exceptions.RayTaskError: purerun::upstream() (pid=42, ip={upstream.ip})",
        "KeyError: 'x'"]
    assert calls.read_ids == []
    assert calls.released == [stored, failed]


def test_an_argument_that_is_a_system_error_is_the_cause_of_the_call_error(calls):
    lost = serialization.dumps(exceptions.ObjectLostError("ab" * 14))
    spec = calls.spec(add, Dep(0), 1, deps=[ids.new_put_id()])
    (error,) = values_of(calls.executor.run(spec, [(ERROR, lost)])[0])
    assert isinstance(error, exceptions.RayTaskError)
    assert isinstance(error.cause, exceptions.ObjectLostError)
    assert isinstance(error.as_instanceof_cause(), exceptions.ObjectLostError)
    assert "could not be computed:\npurerun.exceptions.ObjectLostError: " in str(error)


def test_a_function_that_cannot_be_had_fails_the_call_and_releases_its_arguments(calls):
    stored = ids.new_put_id()
    spec = calls.spec(add, Dep(0), 1, deps=[stored])
    del calls.functions[spec.function_key]
    results, _, _ = calls.executor.run(spec, [(INLINE, inline(1))])
    (error,) = values_of(results)
    assert isinstance(error.cause, KeyError)
    assert calls.released == [stored]


def interrupted():
    raise KeyboardInterrupt


def test_keyboard_interrupt_is_task_cancelled_error(calls):
    spec = calls.spec(interrupted, max_retries=3, retry_exceptions=True)
    results, retry, exiting = calls.executor.run(spec, [])
    (error,) = values_of(results)
    assert isinstance(error, exceptions.TaskCancelledError)
    assert error.task_id == spec.task_id.hex()
    assert (retry, exiting) == (False, False)  # a cancelled call is not retried


def test_keyboard_interrupt_propagates_when_it_is_not_a_cancellation(calls):
    executor = Executor(calls.function_of, calls.read, calls.store, interrupt_cancels=False)
    with pytest.raises(KeyboardInterrupt):
        executor.run(calls.spec(interrupted), [])


@pytest.mark.parametrize("policy, max_retries, error, retry", [
    (True, 3, ValueError, True),
    (True, 0, ValueError, False),               # no retries left to give
    (False, 3, ValueError, False),
    (serialization.dumps((KeyError, ValueError)), 3, ValueError, True),
    (serialization.dumps((KeyError,)), 3, ValueError, False),
], ids=["true", "true-no-retries", "false", "listed", "not-listed"])
def test_retry_exceptions(calls, policy, max_retries, error, retry):
    def fails():
        raise error("x")

    spec = calls.spec(fails, max_retries=max_retries, retry_exceptions=policy)
    results, got_retry, _ = calls.executor.run(spec, [])
    assert got_retry is retry
    assert values_of(results)[0].cause.__class__ is error


class NotAnError(BaseException):
    pass


@pytest.mark.parametrize("raised, intended, code", [
    (SystemExit(0), True, 0),
    (SystemExit(False), True, 0),
    (SystemExit(3), False, 3),
    (SystemExit(None), False, 1),          # as Ray: only an exit code equal to 0 is intended
    (SystemExit("bye"), False, 1),
    (NotAnError("x"), False, 1),
    (GeneratorExit(), False, 1),
], ids=["exit-0", "exit-false", "exit-3", "exit-none", "exit-text", "base-exception",
        "generator-exit"])
def test_a_system_exit_or_base_exception_ends_the_worker(calls, raised, intended, code):
    def leaves():
        raise raised

    spec = calls.spec(leaves, max_retries=3, retry_exceptions=True)
    with pytest.raises(WorkerExit) as info:
        calls.executor.run(spec, [])
    end = info.value
    assert end.exc is raised and (end.intended, end.code) == (intended, code)
    assert type(raised).__name__ in end.reason or "exit code" in end.reason


def test_a_system_exit_while_reading_an_argument_ends_the_worker(calls):
    class ExitsOnLoad:
        def __reduce__(self):
            return sys.exit, (4,)

    spec = calls.spec(add, Dep(0), 1, deps=[ids.new_put_id()])
    with pytest.raises(WorkerExit) as info:
        calls.executor.run(spec, [(INLINE, inline(ExitsOnLoad()))])
    assert info.value.code == 4 and not info.value.intended


def test_a_system_exit_propagates_in_local_mode(calls):
    executor = Executor(calls.function_of, calls.read, calls.store, interrupt_cancels=False)

    def leaves():
        sys.exit(2)

    with pytest.raises(SystemExit) as info:
        executor.run(calls.spec(leaves), [])
    assert type(info.value) is SystemExit and info.value.code == 2


class Counter:
    def __init__(self, start):
        self.value = start

    def incr(self):
        self.value += 1
        return self.value

    def leave(self):
        exit_actor()

    def __repr__(self):
        return f"Counter({self.value})"

    async def slow(self):
        await asyncio.sleep(60)

    async def add_later(self, x):
        await asyncio.sleep(0)
        return self.value + x


@pytest.fixture
def inside_an_actor(monkeypatch):
    """What exit_actor() looks at: a client that hosts an actor."""
    class Client:
        actor_id = ids.new_task_id()
        actor_is_async = False
    monkeypatch.setattr(context, "client", Client())
    return Client


def method_spec(name, *args, num_returns=1):
    return TaskSpec(task_id=ids.new_task_id(), name=f"Counter.{name}", function_key=None,
                    args=inline((list(args), {})) if args else None, args_in_store=False,
                    deps=[], contained=[], num_returns=num_returns, kind=ACTOR_METHOD,
                    actor_id=ids.new_task_id(), method=name)


def test_a_creation_hands_the_instance_over_and_methods_run_on_it(calls):
    calls.functions[b"Counter"] = Counter
    creation = TaskSpec(task_id=ids.new_task_id(), name="Counter.__init__",
                        function_key=b"Counter", args=inline(([10], {})), args_in_store=False,
                        deps=[], contained=[], kind=ACTOR_CREATION, actor_id=ids.new_task_id(),
                        actor=ActorSpec(class_name="Counter"))
    results, _, exiting = calls.executor.run(creation, [])
    assert values_of(results) == [None] and not exiting
    (instance,) = calls.instances
    assert values_of(calls.executor.run(method_spec("incr"), [], instance=instance)[0]) == [11]
    (error,) = values_of(calls.executor.run(method_spec("missing"), [], instance=instance)[0])
    assert isinstance(error.cause, AttributeError)
    assert error.actor_repr == "Counter(11)"


def test_exit_actor_in_a_method_ends_the_actor(calls, inside_an_actor):
    results, retry, exiting = calls.executor.run(method_spec("leave", num_returns=2), [],
                                                 instance=Counter(0))
    assert (retry, exiting) == (False, True)
    assert len(results) == 2


def test_terminate_returns_none_and_ends_the_actor(calls):
    results, _, exiting = calls.executor.run(method_spec(TERMINATE), [], instance=Counter(0))
    assert values_of(results) == [None] and exiting


def test_keep_holds_the_return_value(calls):
    value = object.__new__(Counter)
    keep = []
    calls.executor.run(calls.spec(lambda: value), [], keep=keep)
    assert keep == [value]


def test_env_vars_are_applied_during_the_call_and_restored(calls, monkeypatch):
    monkeypatch.setenv("PURERUN_TEST_SET", "before")
    monkeypatch.delenv("PURERUN_TEST_NEW", raising=False)

    def read_env():
        return os.environ["PURERUN_TEST_SET"], os.environ["PURERUN_TEST_NEW"]

    env_vars = {"PURERUN_TEST_SET": "during", "PURERUN_TEST_NEW": "new"}
    results, _, _ = calls.executor.run(calls.spec(read_env), [], env_vars=env_vars)
    assert values_of(results) == [("during", "new")]
    assert os.environ["PURERUN_TEST_SET"] == "before"
    assert "PURERUN_TEST_NEW" not in os.environ
    # Restored after a failing call too.
    calls.executor.run(calls.spec(raises_key_error, "k"), [], env_vars=env_vars)
    assert os.environ["PURERUN_TEST_SET"] == "before"
    assert "PURERUN_TEST_NEW" not in os.environ


def test_an_async_method_is_awaited(calls):
    results, _, _ = asyncio.run(calls.executor.run_async(method_spec("add_later", 5), [],
                                                         Counter(1)))
    assert values_of(results) == [6]


def test_cancelling_an_async_call_is_task_cancelled_error(calls):
    spec = method_spec("slow")

    async def cancel_it():
        task = asyncio.ensure_future(calls.executor.run_async(spec, [], Counter(0)))
        await asyncio.sleep(0)  # let it reach its sleep
        task.cancel()
        return await task

    results, retry, exiting = asyncio.run(cancel_it())
    (error,) = values_of(results)
    assert isinstance(error, exceptions.TaskCancelledError)
    assert (retry, exiting) == (False, False)


def test_cancelled_results_without_running(calls):
    spec = calls.spec(add, 1, 2, num_returns=2)
    errors = values_of(calls.executor.cancelled(spec))
    assert [type(e) for e in errors] == [exceptions.TaskCancelledError] * 2
