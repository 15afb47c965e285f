"""Exceptions raised by purerun, with the names, bases and constructors of Ray 2.x.

Programs written for Ray catch ``ray.exceptions.RayTaskError``, ``GetTimeoutError``,
``RayActorError`` and friends; with ``import purerun as ray`` the same ``except`` clauses
must keep working, so every class here matches its Ray namesake in name, base classes and
constructor signature.

How an error crosses processes::

    worker                              object store / wire      caller (ray.get)
    ------                              -------------------      ----------------
    user code raises ValueError("x")
    RayTaskError.from_exception(e, f) -> pickled RayTaskError --> err.as_instanceof_cause()
      traceback captured as *text*,     (cause travels with it)   raises an instance of
      cause checked to survive pickling                           "RayTaskError(ValueError)"

* The worker turns whatever the user's code raised into a :class:`RayTaskError`. The remote
  stack travels as text (``traceback_str``) because traceback objects cannot be pickled; the
  original exception travels as ``cause``.
* The caller re-raises ``err.as_instanceof_cause()``: an instance of a class created on the
  fly that subclasses both ``RayTaskError`` and the cause's class, so ``except ValueError``
  and ``except RayTaskError`` both catch it, and ``str()`` shows the remote stack.

Pickling rule: every class here pickles by *state*, not by calling ``__init__`` again (see
``RayError.__reduce__``). Constructors in this module take different arguments than they
store, so Python's default (``cls(*self.args)``) would fail or lose information.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import traceback
import types
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

import cloudpickle

logger = logging.getLogger(__name__)


def _restore_error(cls: type, args: tuple, state: Dict[str, Any]) -> BaseException:
    """Rebuild a pickled exception from its args and ``__dict__`` without calling __init__.

    Bypassing ``__init__`` is what lets a class whose constructor signature differs from
    its ``args`` (most classes here) round-trip through pickle unchanged.
    """
    try:
        obj = cls.__new__(cls, *args)
    except TypeError:
        # A subclass with a custom __new__ that rejects these args: fall back to no args.
        obj = cls.__new__(cls)
    obj.args = args
    obj.__dict__.update(state)
    return obj


def _with_detail(message: str, args: tuple) -> str:
    """Append the free-form detail a caller passed (if any) to a class's fixed message."""
    detail = " ".join(str(a) for a in args if a not in (None, ""))
    return f"{message} {detail}" if detail else message


class RayError(Exception):
    """Super class of all purerun exception types."""

    def __reduce__(self):
        # Pickle by state: see the module docstring.
        return (_restore_error, (type(self), self.args, dict(self.__dict__)))


class CrossLanguageError(RayError):
    """Raised from another language.

    purerun runs Python only, so it never raises this itself; the class exists so that
    programs catching it keep working.

    Args:
        ray_exception: An object with ``language`` and ``formatted_exception_string``
            attributes, or any object whose ``str()`` describes the error.
    """

    def __init__(self, ray_exception: Any):
        language = getattr(ray_exception, "language", "another language")
        text = getattr(ray_exception, "formatted_exception_string", str(ray_exception))
        super().__init__(f"An exception raised from {language}:\n{text}")


class TaskCancelledError(RayError):
    """Raised when this task is cancelled.

    Args:
        task_id: The TaskID of the function that was directly cancelled.
        error_message: Optional detail about the cancellation.
    """

    def __init__(self, task_id: Any = None, error_message: Optional[str] = None):
        super().__init__(task_id, error_message)
        self.task_id = task_id
        self.error_message = error_message

    def __str__(self) -> str:
        if self.task_id:
            msg = f"Task: {self.task_id} was cancelled."
        else:
            msg = "This task or one of its dependencies was cancelled."
        if self.error_message:
            msg += f" {self.error_message}"
        return msg


# Frames from purerun's own runtime are dropped from the remote traceback the user sees:
# they explain how purerun called the user's function, which is noise when debugging it.
# Both separators are listed because the traceback may come from a host of another OS.
_INTERNAL_FRAME_MARKERS = ("/purerun/core/", "\\purerun\\core\\")


@functools.lru_cache(maxsize=1)
def _node_ip_address() -> str:
    """Best-effort IP of this host, computed once per process.

    Connecting a UDP socket sends no packet; it only asks the kernel which local address
    would route outward. Hosts without a route fall back to the loopback address.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class RayTaskError(RayError):
    """Indicates that a task threw an exception during execution.

    If a task throws an exception during execution, a RayTaskError is stored for each of
    the task's outputs. Getting one of those outputs raises ``as_instanceof_cause()``, so
    the caller can catch either ``RayTaskError`` or the original exception's type.

    Args:
        function_name: Name of the function (or actor method) that failed.
        traceback_str: The remote traceback, as text.
        cause: The exception the task raised. If it cannot survive pickling it is replaced
            by an :class:`UnserializableException` carrying its text, because this error
            has to travel to other processes.
        proctitle: Title of the process that ran the task (default ``purerun::<name>``).
        pid: Id of that process (default: this process).
        ip: IP address of that process's host (default: this host).
        actor_repr: ``repr()`` of the actor, for actor tasks.
        actor_id: Hex id of the actor, for actor tasks.
    """

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: Optional[BaseException],
        proctitle: Optional[str] = None,
        pid: Optional[int] = None,
        ip: Optional[str] = None,
        actor_repr: Optional[str] = None,
        actor_id: Optional[str] = None,
    ):
        if traceback_str is None:
            raise ValueError("RayTaskError needs the remote traceback text, got None.")
        cause = _travelling_cause(cause)
        super().__init__(function_name, traceback_str, cause, proctitle, pid, ip)
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or f"purerun::{function_name}"
        self.pid = pid or os.getpid()
        self.ip = ip or _node_ip_address()
        self.actor_repr = actor_repr
        self._actor_id = actor_id

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        function_name: str,
        *,
        proctitle: Optional[str] = None,
        pid: Optional[int] = None,
        ip: Optional[str] = None,
        actor_repr: Optional[str] = None,
        actor_id: Optional[str] = None,
    ) -> "RayTaskError":
        """Wrap an exception caught while running a task.

        Call this inside the ``except`` block (or with an exception that still carries its
        ``__traceback__``) so that the remote stack is captured.

        Args:
            exc: The exception the task raised.
            function_name: Name of the function or actor method that raised it.
            proctitle: See the class docstring.
            pid: See the class docstring.
            ip: See the class docstring.
            actor_repr: See the class docstring.
            actor_id: See the class docstring.

        Returns:
            A RayTaskError whose ``traceback_str`` is the formatted traceback of ``exc``.
            If ``exc`` is itself a RayTaskError (the task got a failed result and did not
            catch it), its ``cause`` is reused instead of nesting one RayTaskError in
            another, so the caller can still catch the original exception type; the
            nested remote stack stays visible in the traceback text.
        """
        traceback_str = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)
        )
        cause = exc.cause if isinstance(exc, RayTaskError) else exc
        return cls(
            function_name,
            traceback_str,
            cause,
            proctitle=proctitle,
            pid=pid,
            ip=ip,
            actor_repr=actor_repr,
            actor_id=actor_id,
        )

    def make_dual_exception_type(self) -> type:
        """Return the class that subclasses both RayTaskError and the cause's class.

        The class is named ``RayTaskError(<CauseName>)`` and created once per cause class.

        Returns:
            The dual exception class.

        Raises:
            TypeError: If the cause's class cannot be subclassed together with
                RayTaskError (final classes, layout or metaclass conflicts), or if the
                cause is itself a RayTaskError.
        """
        cause_cls = type(self.cause)
        if self.cause is None or issubclass(cause_cls, RayTaskError):
            raise TypeError(f"Cannot make a dual exception type for a {cause_cls.__name__} cause.")
        return _dual_type_for(cause_cls)

    def make_dual_exception_instance(self) -> "RayTaskError":
        """Return an instance of :meth:`make_dual_exception_type` carrying this error.

        Returns:
            The dual exception instance (see :meth:`as_instanceof_cause`).

        Raises:
            TypeError: If no dual type can be made or instantiated for the cause.
        """
        dual_cls = self.make_dual_exception_type()
        state = {
            "function_name": self.function_name,
            "traceback_str": self.traceback_str,
            "proctitle": self.proctitle,
            "pid": self.pid,
            "ip": self.ip,
            "actor_repr": self.actor_repr,
            "_actor_id": self._actor_id,
        }
        # The user's own attributes win over RayTaskError's on a name clash: the dual is
        # presented to the user as *their* exception type (as in Ray, where the dual
        # forwards attribute lookups to the cause). RayTaskError's details stay reachable
        # through ``.cause`` and the rendered message.
        state.update(getattr(self.cause, "__dict__", {}))
        state["cause"] = self.cause
        state["_purerun_message"] = str(self)
        return _new_dual_instance(dual_cls, self.cause, state)

    def as_instanceof_cause(self) -> "RayTaskError":
        """Return an exception that is an instance of the cause's class.

        The returned exception inherits from both RayTaskError and the cause's class, is
        named ``RayTaskError(<CauseName>)``, has the cause's ``args`` and attributes,
        ``.cause`` set to the original exception, and a ``str()`` showing the remote
        traceback.

        Returns:
            The dual instance, or ``self`` when the cause's class cannot be subclassed,
            when the cause is itself a RayTaskError, or when ``except RayTaskError``
            already catches everything the cause's class would (e.g. a plain Exception).
        """
        if isinstance(self, _DualRayTaskError) or self.cause is None:
            return self
        cause_cls = type(self.cause)
        if issubclass(RayTaskError, cause_cls) or issubclass(cause_cls, RayTaskError):
            return self
        try:
            return self.make_dual_exception_instance()
        except TypeError:
            return self

    def __str__(self) -> str:
        """Format the remote traceback, with a header naming the process that ran it."""
        header = f"{self.proctitle}() (pid={self.pid}, ip={self.ip}"
        if self.actor_repr:
            header += f", actor_id={self._actor_id}, repr={self.actor_repr})"
        else:
            header += ")"
        out = []
        skipping_internal_frame = False
        for line in self.traceback_str.strip().split("\n"):
            if line.startswith("Traceback "):
                out.append(header)
                skipping_internal_frame = False
            elif line.startswith("  File "):
                skipping_internal_frame = any(m in line for m in _INTERNAL_FRAME_MARKERS)
                if not skipping_internal_frame:
                    out.append(line)
            elif skipping_internal_frame and line.startswith("    "):
                # Source and caret lines of an internal frame are indented by four spaces.
                continue
            else:
                skipping_internal_frame = False
                out.append(line)
        return "\n".join(out)


def _travelling_cause(cause: Optional[BaseException]) -> Optional[BaseException]:
    """Return ``cause`` if it survives a pickle round trip, else a stand-in carrying its text.

    A RayTaskError must reach other processes; an exception whose class has, say, a
    custom ``__init__`` with required arguments pickles fine but fails to unpickle, and
    the caller would then get a confusing error about unpickling instead of the task's
    failure. Checking here, in the process where the exception happened, keeps its text.
    This only runs when a task fails, so the extra round trip costs nothing otherwise.
    """
    if cause is None:
        return None
    try:
        cloudpickle.loads(cloudpickle.dumps(cause))
        return cause
    except Exception as e:  # noqa: BLE001 - any failure means "cannot travel"
        text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
        logger.warning(
            "The exception %s raised by a task cannot be pickled and unpickled (%r); it is "
            "replaced by an UnserializableException carrying its text.",
            type(cause).__qualname__,
            e,
        )
        return UnserializableException(f"{text}\n(pickling round trip failed: {e!r})")


class _DualRayTaskError(RayTaskError):
    """Base of every ``RayTaskError(<CauseName>)`` class.

    Instances are never built through ``__init__``: :func:`_new_dual_instance` creates
    them from the cause, so the cause's class may have any constructor signature.
    """

    def __str__(self) -> str:
        message = self.__dict__.get("_purerun_message")
        return message if message is not None else RayTaskError.__str__(self)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails, e.g. a property of the cause's class that
        # reads C-level state the dual does not have. Dunder names are not forwarded so
        # protocols (pickle, copy, traceback printing) see the dual's own answer.
        cause = self.__dict__.get("cause")
        if cause is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(cause, name)

    def __reduce__(self):
        # The dual class is created at run time and cannot be found by name, so it is
        # rebuilt on the receiving side from the cause's class, which pickles normally.
        return (_restore_dual, (dict(self.__dict__), self.args))


# Dual classes, one per cause class; None marks a cause class that cannot be subclassed.
# A plain dict (not weak): the dual class references the cause class through __bases__,
# so a weak-key entry could never be dropped anyway; there is one entry per exception
# class ever wrapped, which is small.
_DUAL_TYPES: Dict[type, Optional[type]] = {}

# Attributes every exception has; everything else a C-level or __slots__ descriptor
# holds is copied from the cause to the dual (errno, filename, start, end, value, ...).
_BASE_EXCEPTION_FIELDS = frozenset(vars(BaseException)) | {"__dict__", "__weakref__"}


def _dual_type_for(cause_cls: type) -> type:
    """Return (creating once) the class subclassing RayTaskError and ``cause_cls``."""
    try:
        dual = _DUAL_TYPES[cause_cls]
    except KeyError:
        name = f"RayTaskError({cause_cls.__name__})"
        try:
            dual = type(
                name,
                (_DualRayTaskError, cause_cls),
                {"__module__": __name__, "__qualname__": name, "__doc__": None},
            )
            dual._purerun_cause_fields = _descriptor_fields(cause_cls)
        except Exception as e:  # noqa: BLE001 - any failure means "cannot subclass"
            logger.warning(
                "User exception type %s in RayTaskError can't be subclassed, so it is raised "
                "as RayTaskError only; use `.cause` to access the original exception. "
                "Failure in subclassing: %s",
                cause_cls,
                e,
            )
            dual = None
        # setdefault is atomic, so racing threads agree on one class per cause class.
        dual = _DUAL_TYPES.setdefault(cause_cls, dual)
    if dual is None:
        raise TypeError(
            f"{cause_cls.__qualname__} cannot be subclassed together with RayTaskError."
        )
    return dual


def _descriptor_fields(cause_cls: type) -> Tuple[str, ...]:
    """Names of C-level and __slots__ attributes the cause's class defines."""
    names = []
    for klass in cause_cls.__mro__:
        if klass in (BaseException, object):
            continue
        for name, attr in vars(klass).items():
            if (
                isinstance(attr, (types.MemberDescriptorType, types.GetSetDescriptorType))
                and name not in _BASE_EXCEPTION_FIELDS
                and name not in names
            ):
                names.append(name)
    return tuple(names)


def _new_dual_instance(dual_cls: type, cause: BaseException, state: Dict[str, Any]) -> RayTaskError:
    """Create a ``dual_cls`` instance holding ``state`` with the cause's args and fields."""
    try:
        # The cause's own __new__ (found through the MRO) may need its args, e.g.
        # ExceptionGroup(message, exceptions).
        obj = dual_cls.__new__(dual_cls, *cause.args)
    except Exception:  # noqa: BLE001 - retry without args, as BaseException allows
        obj = dual_cls.__new__(dual_cls)
    obj.args = cause.args
    for name in dual_cls._purerun_cause_fields:
        try:
            setattr(obj, name, getattr(cause, name))
        except (AttributeError, TypeError):
            pass  # read-only (already set by __new__) or unset on the cause
    obj.__dict__.update(state)
    return obj


def _restore_dual(state: Dict[str, Any], args: tuple) -> RayTaskError:
    """Unpickle a dual instance (see ``_DualRayTaskError.__reduce__``)."""
    cause = state["cause"]
    try:
        obj = _new_dual_instance(_dual_type_for(type(cause)), cause, state)
    except TypeError:
        # Cannot happen for a class that was subclassable where the error was made, but an
        # error report must never fail: fall back to a plain RayTaskError.
        return _restore_error(RayTaskError, args, state)
    obj.args = args
    return obj


class LocalRayletDiedError(RayError):
    """Indicates that the task's local node process (Ray's "raylet") died."""

    def __str__(self) -> str:
        return _with_detail("The task's local node process died.", self.args)


class WorkerCrashedError(RayError):
    """Indicates that the worker died unexpectedly while executing a task."""

    def __str__(self) -> str:
        return _with_detail(
            "The worker died unexpectedly while executing this task.", self.args
        )


class RayActorError(RayError):
    """Indicates that the actor had an outage before finishing a task.

    This exception could happen because the actor process is dead, or is unavailable for
    the moment; the subclasses :class:`ActorDiedError` and :class:`ActorUnavailableError`
    say which.

    Args:
        actor_id: The actor's id as a hex string.
        error_msg: The full error message.
        actor_init_failed: Whether the actor failed in the middle of ``__init__``.
        preempted: Whether the actor died because its node was preempted.
    """

    BASE_ERROR_MSG = "The actor experienced an error before finishing this task."

    def __init__(
        self,
        actor_id: Optional[str] = None,
        error_msg: str = BASE_ERROR_MSG,
        actor_init_failed: bool = False,
        preempted: bool = False,
    ):
        super().__init__(error_msg)
        self.actor_id = actor_id
        self.error_msg = error_msg
        self._actor_init_failed = actor_init_failed
        self._preempted = preempted

    @property
    def actor_init_failed(self) -> bool:
        """Whether the actor failed in the middle of ``__init__``."""
        return self._actor_init_failed

    @property
    def preempted(self) -> bool:
        """Whether the actor died because its node was preempted."""
        return self._preempted

    def __str__(self) -> str:
        return self.error_msg


class ActorDiedError(RayActorError):
    """Indicates that the actor died unexpectedly before finishing a task.

    This happens either because the actor process died while executing a task, or because
    a task was submitted to a dead actor.

    Args:
        cause: Why the actor died.

            * ``None``: unknown.
            * A :class:`RayTaskError`: the actor's ``__init__`` raised it; the message
              includes that error and ``actor_init_failed`` is True.
            * A mapping describing a system-level death, with any of the keys
              ``class_name``, ``actor_id``, ``pid``, ``name``, ``namespace``, ``ip``,
              ``error_message``, ``never_started`` (bool) and ``preempted`` (bool).
            * A string: a free-form description of why the actor died.

    Raises:
        TypeError: If ``cause`` is of none of these types.
    """

    BASE_ERROR_MSG = "The actor died unexpectedly before finishing this task."

    def __init__(self, cause: Union[None, RayTaskError, Mapping[str, Any], str] = None):
        actor_id = None
        error_msg = ActorDiedError.BASE_ERROR_MSG
        actor_init_failed = False
        preempted = False
        if cause is None:
            pass
        elif isinstance(cause, RayTaskError):
            actor_init_failed = True
            actor_id = cause._actor_id
            error_msg = f"The actor died because of an error raised in its creation task, {cause}"
        elif isinstance(cause, str):
            error_msg = f"{ActorDiedError.BASE_ERROR_MSG}\n{cause}"
        elif isinstance(cause, Mapping):
            actor_id = cause.get("actor_id")
            preempted = bool(cause.get("preempted", False))
            lines = [ActorDiedError.BASE_ERROR_MSG]
            for key in ("class_name", "actor_id", "pid", "name", "namespace", "ip"):
                if cause.get(key) not in (None, "", 0):
                    lines.append(f"\t{key}: {cause[key]}")
            if cause.get("error_message"):
                lines.append(str(cause["error_message"]))
            if cause.get("never_started"):
                lines.append("The actor never ran - it was cancelled before it started running.")
            error_msg = "\n".join(lines)
        else:
            raise TypeError(
                "ActorDiedError(cause=...) takes None, a RayTaskError, a mapping describing "
                f"the death, or a string; got {type(cause).__name__}."
            )
        super().__init__(actor_id, error_msg, actor_init_failed, preempted)

    @staticmethod
    def from_task_error(task_error: RayTaskError) -> "ActorDiedError":
        """Build the error for an actor whose ``__init__`` raised ``task_error``."""
        return ActorDiedError(task_error)


class ActorUnavailableError(RayActorError):
    """Raised when the actor is temporarily unavailable but may be available later.

    Args:
        error_message: Why the actor is unavailable.
        actor_id: The actor's id, as bytes or a hex string.
    """

    def __init__(self, error_message: str, actor_id: Union[bytes, str, None]):
        if isinstance(actor_id, (bytes, bytearray)):
            actor_id = bytes(actor_id).hex()
        error_msg = (
            f"The actor {actor_id} is unavailable: {error_message}. The task may or may "
            "not have been executed on the actor."
        )
        super().__init__(actor_id, error_msg, False, False)


class RaySystemError(RayError):
    """Indicates that purerun encountered a system error.

    Args:
        client_exc: The underlying error (an exception or a message).
        traceback_str: Optional traceback text of the underlying error.
    """

    def __init__(self, client_exc: Any, traceback_str: Optional[str] = None):
        super().__init__(client_exc, traceback_str)
        self.client_exc = client_exc
        self.traceback_str = traceback_str

    def __str__(self) -> str:
        error_msg = f"System error: {self.client_exc}"
        if self.traceback_str:
            error_msg += f"\ntraceback: {self.traceback_str}"
        return error_msg


class RayChannelError(RaySystemError):
    """A system error of a compiled-graph channel (kept for ``except`` compatibility)."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A compiled-graph channel operation timed out (kept for ``except`` compatibility)."""


class UserCodeException(RayError):
    """Indicates that an exception occurred while executing user code.

    It can wrap an exception from a remote task or actor; ``retry_exceptions`` still
    looks at the underlying cause.
    """


class ObjectStoreFullError(RayError):
    """Indicates that the object store is full.

    Raised when storing an object fails because the object store is full even after
    multiple retries.
    """

    def __str__(self) -> str:
        return super().__str__() + (
            "\nThe local object store is full of objects that are still in scope and "
            "cannot be evicted. Tip: drop the ObjectRefs of objects you no longer need so "
            "they can be freed, or start with a larger `object_store_memory`."
        )


class OutOfDiskError(RayError):
    """Indicates that the local disk is full.

    Raised when storing an object fails because both the object store and the disk
    used for spilling are full.
    """

    def __str__(self) -> str:
        return super().__str__() + (
            "\nThe object cannot be created because the local object store is full and "
            "the local disk is too full to spill objects to. Tip: check the free space "
            "of the disk holding the session directory (e.g. with `df`)."
        )


class OutOfMemoryError(RayError):
    """Indicates that the node is running out of memory and is close to full.

    Args:
        message: What ran out of memory and what was done about it.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NodeDiedError(RayError):
    """Indicates that the node is either dead or unreachable.

    Args:
        message: Which node died and how it was noticed.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ObjectLostError(RayError):
    """Indicates that the object is lost from distributed memory, due to node failure or
    a system error.

    Args:
        object_ref_hex: Hex id of the object.
        owner_address: Address of the object's owner, if known.
        call_site: Where the ObjectRef was created, if recorded.
    """

    def __init__(
        self,
        object_ref_hex: str,
        owner_address: Optional[Any] = None,
        call_site: Optional[str] = None,
    ):
        super().__init__(object_ref_hex, owner_address, call_site)
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site

    def _base_str(self) -> str:
        msg = f"Failed to retrieve object {self.object_ref_hex}."
        if self.call_site:
            msg += f" The ObjectRef was created at: {self.call_site}"
        return msg

    def _reason(self) -> str:
        return (
            f"All copies of {self.object_ref_hex} have been lost due to node failure or "
            "a system error."
        )

    def __str__(self) -> str:
        return f"{self._base_str()}\n\n{self._reason()}"


class ObjectFetchTimedOutError(ObjectLostError):
    """Indicates that an object fetch timed out."""

    def _reason(self) -> str:
        return (
            f"Fetch for object {self.object_ref_hex} timed out because no locations were "
            "found for the object. This may indicate a system-level bug."
        )


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """Indicates that an object has been deleted while there was still a reference to it."""

    def _reason(self) -> str:
        return (
            "The object has already been deleted by the reference counting protocol. "
            "This should not happen."
        )


class ObjectFreedError(ObjectLostError):
    """Indicates that an object was manually freed by the application."""

    def _reason(self) -> str:
        return (
            "The object was manually freed using the internal `free` call. Make sure "
            "`free` is only called once the object is no longer needed."
        )


class OwnerDiedError(ObjectLostError):
    """Indicates that the owner of the object has died while there is still a reference
    to the object."""

    def _reason(self) -> str:
        msg = (
            "The object's owner has exited. This is the Python worker that first created "
            "the ObjectRef via `.remote()` or `put()`."
        )
        if self.owner_address:
            msg += f" The owner's address was {self.owner_address}."
        return msg


class ObjectReconstructionFailedError(ObjectLostError):
    """Indicates that the object cannot be reconstructed."""

    def _reason(self) -> str:
        return (
            "The object cannot be reconstructed because it was created by an actor, a "
            "`put()` call, or its ObjectRef was created by a different worker."
        )


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    """Indicates that the object cannot be reconstructed because the maximum number of
    task retries has been exceeded."""

    def _reason(self) -> str:
        return (
            "The object cannot be reconstructed because the maximum number of task "
            "retries has been exceeded. To prevent this error, set "
            "`@remote(max_retries=<num retries>)` (default 3)."
        )


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    """Indicates that the object cannot be reconstructed because its lineage was evicted
    due to memory pressure."""

    def _reason(self) -> str:
        return (
            "The object cannot be reconstructed because its lineage has been evicted to "
            "reduce memory pressure."
        )


class GetTimeoutError(RayError, TimeoutError):
    """Indicates that a call to ``get`` or ``wait`` timed out.

    It is also a builtin ``TimeoutError``, so ``except TimeoutError`` catches it.
    """


class PlasmaObjectNotAvailable(RayError):
    """Called when an object was not available within the given timeout."""


class AsyncioActorExit(RayError):
    """Raised when an asyncio actor intentionally exits via ``exit_actor()``."""


class _ActorExit(SystemExit):
    """Raised by ``exit_actor()`` in a threaded actor: unwinds the method, then the worker
    exits for good. A SystemExit, so that user code's ``except Exception`` lets it pass."""


class RuntimeEnvSetupError(RayError):
    """Raised when a runtime environment fails to be set up.

    Args:
        error_message: Why setting up the runtime environment failed.
    """

    def __init__(self, error_message: Optional[str] = None):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        msgs = ["Failed to set up runtime environment."]
        if self.error_message:
            msgs.append(self.error_message)
        return "\n".join(msgs)


class TaskPlacementGroupRemoved(RayError):
    """Raised when the placement group of a task was removed."""

    def __str__(self) -> str:
        return "The placement group corresponding to this task has been removed."


class ActorPlacementGroupRemoved(RayError):
    """Raised when the placement group of an actor was removed."""

    def __str__(self) -> str:
        return "The placement group corresponding to this Actor has been removed."


class PendingCallsLimitExceeded(RayError):
    """Raised when the pending calls to an actor exceed its ``max_pending_calls`` option.

    This usually means the caller calls the actor faster than it can serve.
    """


class TaskUnschedulableError(RayError):
    """Raised when the task cannot be scheduled.

    Args:
        error_message: Why no node can run the task (e.g. the node required by a node
            affinity strategy is dead).
    """

    def __init__(self, error_message: str):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        return f"The task is not schedulable: {self.error_message}"


class ActorUnschedulableError(RayError):
    """Raised when the actor cannot be scheduled.

    Args:
        error_message: Why no node can host the actor.
    """

    def __init__(self, error_message: str):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        return f"The actor is not schedulable: {self.error_message}"


class ObjectRefStreamEndOfStreamError(RayError):
    """Raised by streaming generator tasks when there are no more ObjectRefs to read."""


class UnserializableException(RayError):
    """Raised in place of an exception that could not be pickled or unpickled.

    The original exception's text, captured where it was raised, is kept instead.

    Args:
        original_stack_trace: The string representation (and stack trace, if captured)
            of the original exception.
    """

    def __init__(self, original_stack_trace: str):
        super().__init__(original_stack_trace)
        self._original_stack_trace = original_stack_trace

    def __str__(self) -> str:
        return (
            "Failed to serialize or deserialize an exception, so only its text is kept. "
            "Make the exception class picklable (e.g. give it a `__reduce__`) to get the "
            f"exception itself.\nOriginal exception:\n{self._original_stack_trace}"
        )


# Every exception type defined here, for code that must recognise purerun's own errors.
RAY_EXCEPTION_TYPES: Tuple[Type[RayError], ...] = (
    PlasmaObjectNotAvailable,
    RayError,
    RayTaskError,
    WorkerCrashedError,
    RayActorError,
    ObjectStoreFullError,
    ObjectLostError,
    ObjectFetchTimedOutError,
    ReferenceCountingAssertionError,
    ObjectFreedError,
    ObjectReconstructionFailedError,
    ObjectReconstructionFailedMaxAttemptsExceededError,
    ObjectReconstructionFailedLineageEvictedError,
    OwnerDiedError,
    GetTimeoutError,
    AsyncioActorExit,
    RuntimeEnvSetupError,
    TaskPlacementGroupRemoved,
    ActorPlacementGroupRemoved,
    PendingCallsLimitExceeded,
    LocalRayletDiedError,
    TaskUnschedulableError,
    ActorDiedError,
    ActorUnschedulableError,
    ActorUnavailableError,
    RaySystemError,
    RayChannelError,
    RayChannelTimeoutError,
    CrossLanguageError,
    TaskCancelledError,
    UserCodeException,
    OutOfDiskError,
    OutOfMemoryError,
    NodeDiedError,
    ObjectRefStreamEndOfStreamError,
    UnserializableException,
)
