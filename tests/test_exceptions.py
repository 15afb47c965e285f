"""Unit tests of purerun.exceptions: Ray 2.x names and bases, messages, pickling, and the
``RayTaskError(<Cause>)`` dual exception type."""

import copy
import inspect
import logging
import pickle
import sys
import traceback

import cloudpickle
import pytest

from purerun import exceptions as exc
from purerun.exceptions import RayTaskError

PICKLERS = [pytest.param(pickle, id="pickle"), pytest.param(cloudpickle, id="cloudpickle")]


# --- module-level exception classes, so that plain pickle can find them by name ----------


class PlainUserError(Exception):
    pass


class UserErrorWithState(ValueError):
    """A user exception carrying attributes, including names RayTaskError also uses."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code
        self.pid = "user pid"


class SlottedUserError(Exception):
    __slots__ = ("detail",)


class UserErrorWithProperty(Exception):
    @property
    def doubled(self):
        return self.args[0] * 2


class NotUnpicklableError(Exception):
    """Pickles, but unpickling calls __init__(message) and lacks ``b``: a common mistake."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


class FinalError(Exception):
    """Refuses subclasses, like a final class of a C extension."""

    def __init_subclass__(cls, **kwargs):
        raise TypeError("FinalError cannot be subclassed")


class CustomRayError(exc.RayError):
    """A user subclass of RayError whose constructor differs from its args."""

    def __init__(self, a, *, b):
        super().__init__(f"{a}/{b}")
        self.a = a
        self.b = b


def _raise(error):
    raise error


def _comparable(value):
    """Exceptions do not compare equal; compare their type and args instead."""
    if isinstance(value, BaseException):
        return (type(value), _comparable(value.args))
    if isinstance(value, tuple):
        return tuple(_comparable(v) for v in value)
    return value


def _task_error(cause, function_name="f", **kwargs):
    """A RayTaskError as a worker would make it: with the real traceback of ``cause``."""
    try:
        _raise(cause)
    except BaseException as e:  # noqa: BLE001 - any cause, including KeyboardInterrupt
        return RayTaskError.from_exception(e, function_name, **kwargs)


# --- class hierarchy and constructors, as in Ray 2.x -------------------------------------

EXPECTED_BASES = {
    exc.RayError: (Exception,),
    exc.CrossLanguageError: (exc.RayError,),
    exc.TaskCancelledError: (exc.RayError,),
    exc.RayTaskError: (exc.RayError,),
    exc.LocalRayletDiedError: (exc.RayError,),
    exc.WorkerCrashedError: (exc.RayError,),
    exc.RayActorError: (exc.RayError,),
    exc.ActorDiedError: (exc.RayActorError,),
    exc.ActorUnavailableError: (exc.RayActorError,),
    exc.RaySystemError: (exc.RayError,),
    exc.RayChannelError: (exc.RaySystemError,),
    exc.RayChannelTimeoutError: (exc.RayChannelError, TimeoutError),
    exc.UserCodeException: (exc.RayError,),
    exc.ObjectStoreFullError: (exc.RayError,),
    exc.OutOfDiskError: (exc.RayError,),
    exc.OutOfMemoryError: (exc.RayError,),
    exc.NodeDiedError: (exc.RayError,),
    exc.ObjectLostError: (exc.RayError,),
    exc.ObjectFetchTimedOutError: (exc.ObjectLostError,),
    exc.ReferenceCountingAssertionError: (exc.ObjectLostError, AssertionError),
    exc.ObjectFreedError: (exc.ObjectLostError,),
    exc.OwnerDiedError: (exc.ObjectLostError,),
    exc.ObjectReconstructionFailedError: (exc.ObjectLostError,),
    exc.ObjectReconstructionFailedMaxAttemptsExceededError: (exc.ObjectLostError,),
    exc.ObjectReconstructionFailedLineageEvictedError: (exc.ObjectLostError,),
    exc.GetTimeoutError: (exc.RayError, TimeoutError),
    exc.PlasmaObjectNotAvailable: (exc.RayError,),
    exc.AsyncioActorExit: (exc.RayError,),
    exc.RuntimeEnvSetupError: (exc.RayError,),
    exc.TaskPlacementGroupRemoved: (exc.RayError,),
    exc.ActorPlacementGroupRemoved: (exc.RayError,),
    exc.PendingCallsLimitExceeded: (exc.RayError,),
    exc.TaskUnschedulableError: (exc.RayError,),
    exc.ActorUnschedulableError: (exc.RayError,),
    exc.ObjectRefStreamEndOfStreamError: (exc.RayError,),
    exc.UnserializableException: (exc.RayError,),
}


def _public_exception_classes():
    return {
        obj
        for name, obj in vars(exc).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and not name.startswith("_")
    }


@pytest.mark.parametrize("cls", list(EXPECTED_BASES), ids=lambda c: c.__name__)
def test_bases_match_ray(cls):
    assert cls.__bases__ == EXPECTED_BASES[cls]
    assert cls.__module__ == "purerun.exceptions"


def test_every_public_class_is_declared_and_listed():
    public = _public_exception_classes()
    assert public == set(EXPECTED_BASES)
    assert set(exc.RAY_EXCEPTION_TYPES) == public


@pytest.mark.parametrize(
    "cls, parameters",
    [
        (exc.TaskCancelledError, ["task_id", "error_message"]),
        (
            exc.RayTaskError,
            ["function_name", "traceback_str", "cause", "proctitle", "pid", "ip",
             "actor_repr", "actor_id"],
        ),
        (exc.RayActorError, ["actor_id", "error_msg", "actor_init_failed", "preempted"]),
        (exc.ActorDiedError, ["cause"]),
        (exc.ActorUnavailableError, ["error_message", "actor_id"]),
        (exc.RaySystemError, ["client_exc", "traceback_str"]),
        (exc.OutOfMemoryError, ["message"]),
        (exc.NodeDiedError, ["message"]),
        (exc.ObjectLostError, ["object_ref_hex", "owner_address", "call_site"]),
        (exc.OwnerDiedError, ["object_ref_hex", "owner_address", "call_site"]),
        (exc.RuntimeEnvSetupError, ["error_message"]),
        (exc.TaskUnschedulableError, ["error_message"]),
        (exc.ActorUnschedulableError, ["error_message"]),
        (exc.UnserializableException, ["original_stack_trace"]),
    ],
    ids=lambda v: v.__name__ if inspect.isclass(v) else None,
)
def test_constructor_signatures_match_ray(cls, parameters):
    assert list(inspect.signature(cls).parameters) == parameters


def test_optional_constructor_arguments_default_like_ray():
    assert exc.TaskCancelledError().task_id is None
    err = exc.RayActorError()
    assert (err.actor_id, err.actor_init_failed, err.preempted) == (None, False, False)
    assert err.error_msg == exc.RayActorError.BASE_ERROR_MSG
    lost = exc.ObjectLostError("ab12")
    assert (lost.owner_address, lost.call_site) == (None, None)
    assert exc.RuntimeEnvSetupError().error_message is None


def test_timeout_and_assertion_errors_are_caught_by_builtin_except():
    with pytest.raises(TimeoutError):
        raise exc.GetTimeoutError("Get timed out: some object(s) not ready.")
    with pytest.raises(TimeoutError):
        raise exc.RayChannelTimeoutError("channel read timed out")
    with pytest.raises(AssertionError):
        raise exc.ReferenceCountingAssertionError("ab12")


# --- pickling: every class round-trips to an equal message --------------------------------

SAMPLES = [
    exc.RayError("generic failure"),
    exc.CrossLanguageError("formatted text from elsewhere"),
    exc.TaskCancelledError(),
    exc.TaskCancelledError("task-1f2e", "cancelled by the user"),
    exc.TaskCancelledError(task_id="task-1f2e"),
    RayTaskError("f", "Traceback (most recent call last):\nValueError: bad", ValueError("bad"),
                 pid=11, ip="10.0.0.1"),
    exc.LocalRayletDiedError(),
    exc.WorkerCrashedError(),
    exc.WorkerCrashedError("exit code -9"),
    exc.RayActorError(),
    exc.RayActorError(actor_id="a1", error_msg="custom", actor_init_failed=True, preempted=True),
    exc.ActorDiedError(),
    exc.ActorDiedError({"class_name": "Counter", "actor_id": "a1", "pid": 5,
                        "error_message": "killed", "preempted": True}),
    exc.ActorDiedError("the node died"),
    exc.ActorUnavailableError("connection lost", b"\x01\x02"),
    exc.RaySystemError("node gone", "Traceback..."),
    exc.RayChannelError("broken channel"),
    exc.RayChannelTimeoutError("channel read timed out"),
    exc.UserCodeException("wrapped"),
    exc.ObjectStoreFullError("Failed to put object ab12 of 1 GiB."),
    exc.OutOfDiskError("Failed to spill ab12."),
    exc.OutOfMemoryError("Task f was killed because the node ran out of memory."),
    exc.NodeDiedError("Node 10.0.0.2 missed 3 heartbeats."),
    exc.ObjectLostError("ab12", "10.0.0.1:1234", "f.remote() at test.py:3"),
    exc.ObjectLostError(object_ref_hex="ab12"),
    exc.ObjectFetchTimedOutError("ab12"),
    exc.ReferenceCountingAssertionError("ab12"),
    exc.ObjectFreedError("ab12"),
    exc.OwnerDiedError("ab12", owner_address="10.0.0.1:1234"),
    exc.ObjectReconstructionFailedError("ab12"),
    exc.ObjectReconstructionFailedMaxAttemptsExceededError("ab12"),
    exc.ObjectReconstructionFailedLineageEvictedError("ab12"),
    exc.GetTimeoutError("Get timed out: some object(s) not ready."),
    exc.PlasmaObjectNotAvailable(),
    exc.AsyncioActorExit(),
    exc.RuntimeEnvSetupError(),
    exc.RuntimeEnvSetupError("pip failed"),
    exc.TaskPlacementGroupRemoved(),
    exc.ActorPlacementGroupRemoved(),
    exc.PendingCallsLimitExceeded("The actor has 10 pending calls (max_pending_calls=10)."),
    exc.TaskUnschedulableError("node n1 is dead"),
    exc.ActorUnschedulableError("node n1 is dead"),
    exc.ObjectRefStreamEndOfStreamError(),
    exc.UnserializableException("MyError: boom"),
    CustomRayError("x", b="y"),
]


def test_samples_cover_every_class():
    assert {type(s) for s in SAMPLES} >= _public_exception_classes()


@pytest.mark.parametrize("pickler", PICKLERS)
@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_exception_pickles_to_an_equal_instance(error, pickler):
    restored = pickler.loads(pickler.dumps(error))
    assert type(restored) is type(error)
    assert str(restored) == str(error)
    assert _comparable(restored.args) == _comparable(error.args)
    assert vars(restored).keys() == vars(error).keys()


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_exception_survives_copy(error):
    assert str(copy.copy(error)) == str(error)
    assert str(copy.deepcopy(error)) == str(error)


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_exception_has_a_message_and_is_raisable(error):
    assert str(error).strip() or isinstance(
        error, (exc.PlasmaObjectNotAvailable, exc.AsyncioActorExit,
                exc.ObjectRefStreamEndOfStreamError)
    )
    with pytest.raises(type(error)):
        raise error


# --- messages name the problem -------------------------------------------------------------


def test_task_cancelled_messages():
    assert str(exc.TaskCancelledError()) == "This task or one of its dependencies was cancelled."
    assert str(exc.TaskCancelledError("t1")) == "Task: t1 was cancelled."
    assert str(exc.TaskCancelledError("t1", "by cancel()")) == "Task: t1 was cancelled. by cancel()"


def test_fixed_messages_append_the_detail_given():
    assert str(exc.WorkerCrashedError()) == (
        "The worker died unexpectedly while executing this task."
    )
    assert str(exc.WorkerCrashedError("Exit code -9.")) == (
        "The worker died unexpectedly while executing this task. Exit code -9."
    )
    assert "local node process died" in str(exc.LocalRayletDiedError())


def test_object_lost_family_names_the_object_and_the_reason():
    reasons = {
        exc.ObjectLostError: "have been lost",
        exc.ObjectFetchTimedOutError: "timed out",
        exc.ReferenceCountingAssertionError: "reference counting",
        exc.ObjectFreedError: "manually freed",
        exc.OwnerDiedError: "owner has exited",
        exc.ObjectReconstructionFailedError: "cannot be reconstructed",
        exc.ObjectReconstructionFailedMaxAttemptsExceededError: "max_retries",
        exc.ObjectReconstructionFailedLineageEvictedError: "lineage",
    }
    for cls, reason in reasons.items():
        message = str(cls("deadbeef", None, "g.remote() at main.py:7"))
        assert message.startswith("Failed to retrieve object deadbeef.")
        assert "created at: g.remote() at main.py:7" in message
        assert reason in message
    assert "10.0.0.9:77" in str(exc.OwnerDiedError("deadbeef", "10.0.0.9:77"))


def test_store_errors_keep_the_callers_message_and_add_a_tip():
    message = str(exc.ObjectStoreFullError("Failed to put object ab of 2 GiB."))
    assert message.startswith("Failed to put object ab of 2 GiB.")
    assert "object_store_memory" in message
    assert "disk" in str(exc.OutOfDiskError("Failed to spill ab."))


def test_actor_errors():
    assert str(exc.ActorDiedError()) == exc.ActorDiedError.BASE_ERROR_MSG
    err = exc.ActorDiedError({"class_name": "Counter", "actor_id": "a1", "pid": 42,
                              "name": "c", "namespace": "ns", "ip": "10.0.0.1",
                              "error_message": "The actor process was killed.",
                              "never_started": True, "preempted": True})
    text = str(err)
    for fragment in ("class_name: Counter", "actor_id: a1", "pid: 42", "name: c",
                     "namespace: ns", "ip: 10.0.0.1", "was killed", "never ran"):
        assert fragment in text
    assert err.actor_id == "a1" and err.preempted and not err.actor_init_failed
    assert "node died" in str(exc.ActorDiedError("The node died."))
    unavailable = exc.ActorUnavailableError("connection reset", b"\xab\xcd")
    assert unavailable.actor_id == "abcd"
    assert "The actor abcd is unavailable: connection reset." in str(unavailable)
    assert isinstance(unavailable, exc.RayActorError)


def test_actor_died_in_init_includes_the_init_error():
    init_error = _task_error(ZeroDivisionError("division by zero"), "Counter.__init__",
                             actor_repr="Counter()", actor_id="a1")
    err = exc.ActorDiedError(init_error)
    assert err.actor_init_failed
    assert err.actor_id == "a1"
    assert "creation task" in str(err)
    assert "ZeroDivisionError: division by zero" in str(err)
    assert exc.ActorDiedError.from_task_error(init_error).actor_init_failed


def test_actor_died_rejects_an_unknown_cause_type():
    with pytest.raises(TypeError, match="ActorDiedError"):
        exc.ActorDiedError(42)


def test_other_messages():
    assert str(exc.RaySystemError("boom")) == "System error: boom"
    assert str(exc.RaySystemError("boom", "tb")) == "System error: boom\ntraceback: tb"
    assert str(exc.RuntimeEnvSetupError("pip failed")) == (
        "Failed to set up runtime environment.\npip failed"
    )
    assert str(exc.TaskUnschedulableError("no GPU")) == "The task is not schedulable: no GPU"
    assert str(exc.ActorUnschedulableError("no GPU")) == "The actor is not schedulable: no GPU"
    assert "Original exception:\nMyError: boom" in str(exc.UnserializableException("MyError: boom"))
    assert str(exc.OutOfMemoryError("oom")) == "oom"
    assert str(exc.NodeDiedError("gone")) == "gone"
    assert "An exception raised from" in str(exc.CrossLanguageError("java text"))


# --- RayTaskError ----------------------------------------------------------------------------


def test_task_error_shows_the_remote_traceback_with_a_header():
    err = _task_error(ValueError("bad value"), "compute", pid=123, ip="10.1.2.3")
    text = str(err)
    lines = text.splitlines()
    assert lines[0] == "purerun::compute() (pid=123, ip=10.1.2.3)"
    assert any("in _raise" in line for line in lines)
    assert lines[-1] == "ValueError: bad value"
    assert err.function_name == "compute"
    assert err.traceback_str.startswith("Traceback (most recent call last):")


def test_task_error_defaults_describe_this_process():
    err = RayTaskError("f", "Traceback (most recent call last):\nValueError: x", ValueError("x"))
    import os

    assert err.pid == os.getpid()
    assert err.proctitle == "purerun::f"
    assert isinstance(err.ip, str) and err.ip


def test_task_error_header_names_the_actor():
    err = _task_error(ValueError("x"), "Counter.incr", actor_repr="Counter(3)", actor_id="a1",
                      pid=1, ip="h")
    assert str(err).splitlines()[0] == (
        "purerun::Counter.incr() (pid=1, ip=h, actor_id=a1, repr=Counter(3))"
    )


def test_task_error_hides_purerun_internal_frames():
    traceback_str = "\n".join([
        "Traceback (most recent call last):",
        '  File "/site-packages/purerun/core/worker.py", line 120, in _execute',
        "    result = function(*args, **kwargs)",
        "             ^^^^^^^^^^^^^^^^^^^^^^^^^",
        '  File "/home/me/job.py", line 5, in f',
        "    return 1 / 0",
        "           ~~^~~",
        "ZeroDivisionError: division by zero",
    ])
    err = RayTaskError("f", traceback_str, ZeroDivisionError("division by zero"), pid=1, ip="h")
    assert str(err).splitlines() == [
        "purerun::f() (pid=1, ip=h)",
        '  File "/home/me/job.py", line 5, in f',
        "    return 1 / 0",
        "           ~~^~~",
        "ZeroDivisionError: division by zero",
    ]


def test_task_error_requires_a_traceback():
    with pytest.raises(ValueError, match="traceback"):
        RayTaskError("f", None, ValueError("x"))


def test_unserializable_cause_is_replaced_by_its_text(caplog):
    with caplog.at_level(logging.WARNING, logger="purerun.exceptions"):
        err = _task_error(NotUnpicklableError("a", "b"))
    assert isinstance(err.cause, exc.UnserializableException)
    assert "NotUnpicklableError: a-b" in str(err.cause)
    assert "NotUnpicklableError" in caplog.text
    # It travels, and callers still see the original traceback.
    restored = pickle.loads(pickle.dumps(err))
    assert "NotUnpicklableError: a-b" in str(restored)
    assert restored.as_instanceof_cause() is not None


def test_unpicklable_attribute_in_cause_is_replaced():
    import threading

    error = PlainUserError("holding a lock")
    error.lock = threading.Lock()
    err = _task_error(error)
    assert isinstance(err.cause, exc.UnserializableException)
    cloudpickle.loads(cloudpickle.dumps(err))


# --- the dual exception type -----------------------------------------------------------------


def test_dual_is_an_instance_of_both_classes():
    cause = ValueError("bad value")
    err = _task_error(cause)
    dual = err.as_instanceof_cause()
    assert type(dual).__name__ == "RayTaskError(ValueError)"
    assert type(dual).__qualname__ == "RayTaskError(ValueError)"
    assert isinstance(dual, RayTaskError) and isinstance(dual, ValueError)
    assert isinstance(dual, exc.RayError)
    assert dual.cause is cause
    assert dual.args == ("bad value",)
    assert str(dual) == str(err)
    assert dual.function_name == "f"
    assert dual.traceback_str == err.traceback_str


def test_dual_is_caught_by_either_except_clause():
    dual = _task_error(KeyError("missing"), "lookup").as_instanceof_cause()
    with pytest.raises(KeyError) as info:
        raise dual
    assert info.value.args == ("missing",)
    with pytest.raises(RayTaskError):
        raise dual
    try:
        raise dual
    except LookupError as caught:  # a base class of the cause works too
        assert caught is dual


def test_dual_printed_traceback_shows_the_remote_stack():
    dual = _task_error(ValueError("remote boom"), "remote_fn").as_instanceof_cause()
    try:
        raise dual
    except ValueError:
        printed = traceback.format_exc()
    assert "RayTaskError(ValueError): purerun::remote_fn()" in printed
    assert "in _raise" in printed  # the remote frame
    assert "ValueError: remote boom" in printed


def test_dual_type_is_cached_per_cause_class():
    first = _task_error(ValueError("1")).as_instanceof_cause()
    second = _task_error(ValueError("2")).as_instanceof_cause()
    other = _task_error(TypeError("3")).as_instanceof_cause()
    assert type(first) is type(second)
    assert type(first) is not type(other)
    assert type(other).__name__ == "RayTaskError(TypeError)"
    assert _task_error(ValueError("4")).make_dual_exception_type() is type(first)


def test_dual_carries_the_user_exceptions_attributes():
    cause = UserErrorWithState("bad", 7)
    dual = _task_error(cause).as_instanceof_cause()
    assert isinstance(dual, UserErrorWithState)
    assert dual.code == 7
    assert dual.args == ("bad", 7)
    # On a name clash the user's attribute wins: the dual stands for *their* exception.
    assert dual.pid == "user pid"
    assert dual.cause is cause
    assert "UserErrorWithState" in str(dual)


def test_dual_reads_slots_and_properties_of_the_cause():
    slotted = SlottedUserError("s")
    slotted.detail = "in a slot"
    assert _task_error(slotted).as_instanceof_cause().detail == "in a slot"
    assert _task_error(UserErrorWithProperty("ab")).as_instanceof_cause().doubled == "abab"


@pytest.mark.parametrize(
    "cause, attributes",
    [
        (FileNotFoundError(2, "No such file", "data.csv"),
         {"errno": 2, "strerror": "No such file", "filename": "data.csv"}),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
         {"encoding": "utf-8", "start": 0, "end": 1, "reason": "invalid start byte"}),
        (StopIteration(5), {"value": 5}),
        (ImportError("no module", name="missing_mod"), {"name": "missing_mod", "msg": "no module"}),
        (SystemExit(3), {"code": 3}),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_dual_of_builtin_exception_keeps_its_c_level_fields(cause, attributes):
    dual = _task_error(cause).as_instanceof_cause()
    assert isinstance(dual, type(cause))
    for name, value in attributes.items():
        assert getattr(dual, name) == value, name


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is new in Python 3.11")
def test_dual_of_exception_group():
    group = ExceptionGroup("several", [ValueError("a"), KeyError("b")])  # noqa: F821
    dual = _task_error(group).as_instanceof_cause()
    assert isinstance(dual, ExceptionGroup)  # noqa: F821
    assert dual.message == "several"
    assert [type(e) for e in dual.exceptions] == [ValueError, KeyError]
    for pickler in (pickle, cloudpickle):
        assert type(pickler.loads(pickler.dumps(dual))) is type(dual)


def test_dual_of_a_ray_error_cause_lets_its_type_be_caught():
    dual = _task_error(exc.GetTimeoutError("inner get timed out")).as_instanceof_cause()
    assert type(dual).__name__ == "RayTaskError(GetTimeoutError)"
    with pytest.raises(TimeoutError):
        raise dual


@pytest.mark.parametrize(
    "cause",
    [
        pytest.param(Exception("plain"), id="Exception-already-covered"),
        pytest.param(exc.RayError("base"), id="RayError-already-covered"),
        pytest.param(FinalError("final"), id="class-refusing-subclasses"),
    ],
)
def test_as_instanceof_cause_returns_self_when_no_dual_applies(cause):
    err = _task_error(cause)
    assert err.as_instanceof_cause() is err


@pytest.mark.parametrize("make_cause", [
    pytest.param(lambda: _task_error(ValueError("x")), id="plain"),
    pytest.param(lambda: _task_error(ValueError("x")).as_instanceof_cause(), id="dual"),
])
def test_as_instanceof_cause_returns_self_when_the_cause_is_a_task_error(make_cause):
    err = RayTaskError("g", "Traceback (most recent call last):\nValueError: x", make_cause())
    assert err.as_instanceof_cause() is err


def test_make_dual_raises_type_error_when_impossible():
    with pytest.raises(TypeError, match="FinalError"):
        _task_error(FinalError("final")).make_dual_exception_instance()


def test_dual_of_a_dual_is_itself():
    dual = _task_error(ValueError("x")).as_instanceof_cause()
    assert dual.as_instanceof_cause() is dual


@pytest.mark.parametrize("pickler", PICKLERS)
@pytest.mark.parametrize(
    "cause",
    [ValueError("v"), KeyError("k"), UserErrorWithState("bad", 7), PlainUserError("p"),
     FileNotFoundError(2, "No such file", "data.csv"), KeyboardInterrupt()],
    ids=lambda e: type(e).__name__,
)
def test_dual_round_trips_through_pickle(cause, pickler):
    dual = _task_error(cause, actor_repr="A()", actor_id="a1").as_instanceof_cause()
    restored = pickler.loads(pickler.dumps(dual))
    assert type(restored) is type(dual)
    assert str(restored) == str(dual)
    assert restored.args == dual.args
    assert type(restored.cause) is type(cause)
    assert restored.cause.args == cause.args
    assert vars(restored).keys() == vars(dual).keys()
    with pytest.raises(type(cause)):
        raise restored


def test_dual_of_a_locally_defined_class_round_trips_through_cloudpickle():
    class LocalError(Exception):
        def __init__(self, message, extra):
            super().__init__(message, extra)
            self.extra = extra

    dual = _task_error(LocalError("m", [1, 2])).as_instanceof_cause()
    restored = cloudpickle.loads(cloudpickle.dumps(dual))
    assert type(restored).__name__ == "RayTaskError(LocalError)"
    assert isinstance(restored, RayTaskError)
    assert isinstance(restored, type(restored.cause))
    assert restored.extra == [1, 2]
    assert str(restored) == str(dual)


def test_dual_survives_copy():
    dual = _task_error(UserErrorWithState("bad", 7)).as_instanceof_cause()
    for duplicate in (copy.copy(dual), copy.deepcopy(dual)):
        assert type(duplicate) is type(dual)
        assert duplicate.code == 7
        assert str(duplicate) == str(dual)


def test_reraised_task_error_keeps_the_original_cause():
    """A task that got a failed result and did not catch it fails with the same cause."""
    inner = _task_error(ValueError("root cause"), "inner").as_instanceof_cause()
    outer = _task_error(inner, "outer")
    assert type(outer) is RayTaskError
    assert type(outer.cause) is ValueError
    dual = outer.as_instanceof_cause()
    assert isinstance(dual, ValueError)
    text = str(dual)
    assert text.splitlines()[0].startswith("purerun::outer()")
    assert "purerun::inner()" in text  # the nested remote stack is still shown
    assert "ValueError: root cause" in text


def test_attribute_missing_everywhere_raises_attribute_error():
    dual = _task_error(ValueError("x")).as_instanceof_cause()
    with pytest.raises(AttributeError):
        dual.no_such_attribute  # noqa: B018
    assert not hasattr(dual, "__no_such_dunder__")
