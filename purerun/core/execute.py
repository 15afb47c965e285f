"""Running one call: a task, an actor's creation or an actor method, from its TaskSpec and
its arguments' payloads to the results TASK_DONE carries. No sockets, no threads.

::

    caller (a worker, or local mode)         Executor.run / run_async
    ────────────────────────────────         ───────────────────────────────────────────────
    spec, dep_payloads  ───────────────────▶ arguments: an ERROR payload (a failed dependency)
                                               fails the call with that very error; each
                                               other payload is read (``read``), and the
                                               values replace the Dep markers in spec.args
                                             call: ``functions(spec)`` for a task or a
                                               creation (whose instance goes to ``created``),
                                               the instance's method for an actor call;
                                               env_vars applied around it
                                             results: split by num_returns, serialized, each
                                               made a payload (``store``)
                                             failure: the call's own error as a RayTaskError
                                               with the remote traceback; a cancellation as
                                               TaskCancelledError; exit_actor() as the end of
                                               the actor; whether to retry (retry_exceptions);
                                               sys.exit() or another BaseException that is no
                                               Exception raises WorkerExit: the process ends
    (results, retry, exiting)  ◀───────────  results: [(object_id, kind, payload, contained)]

What differs between the two callers is passed to ``Executor``; everything else is here,
once:

* ``functions(spec)``: the function of a task or the class of a creation. A worker
  unpickles it from its function table; local mode has it at hand.
* ``read(object_id, (kind, payload))``: a dependency's value. A worker reads INLINE
  payloads and zero-copy views of the arena (under a pin the node gave it); local mode
  unpickles from its object table.
* ``release(object_id, (kind, payload))``: give back a dependency payload that will not be
  read (the call failed first). A worker returns the arena pin; local mode has nothing to do.
* ``store(serialized_value) -> (kind, payload)``: a result as a payload. A worker keeps
  small ones inline and writes large ones into the arena; local mode keeps all inline.
* ``created(spec, instance)``: an actor's ``__init__`` returned this instance.
* ``node_ip``: written into RayTaskError.
* ``interrupt_cancels``: a KeyboardInterrupt during the call is a cancellation (a worker:
  the node sends SIGINT to cancel) or propagates (local mode: it is the user's Ctrl-C).
  In local mode a SystemExit, or another BaseException that is no Exception, propagates too:
  the call runs in the user's own process.

What a call raises, and what comes of it (Ray's rules)::

    an Exception                     its RayTaskError is the result (retried if
                                     retry_exceptions allows)
    a failed argument                a RayTaskError of this call: "At least one of the input
                                     arguments for this task could not be computed:", then
                                     the argument's error; its cause is that error's cause
    KeyboardInterrupt                TaskCancelledError, cancelled or not (as Ray)
    exit_actor() in a method         the actor ends (``exiting``), no restart
    SystemExit, any other            WorkerExit: the worker process ends. A task is then
    BaseException                    retried, and at the end is WorkerCrashedError; an actor
                                     dies (restarting if max_restarts allows), except after
                                     sys.exit(0), an intended exit (no restart, as Ray)

How local mode is meant to call it, one Executor per LocalClient::

    executor = Executor(
        functions=lambda spec: table[spec.function_key],   # tasks' functions, actor classes
        read=lambda object_id, entry: serialization.deserialize(*entry[1]),
        store=lambda sv: (INLINE, serialization.to_inline(sv)),
        created=lambda spec, instance: setattr(actors[spec.actor_id], "instance", instance),
        node_ip=LOCAL_NODE_IP, interrupt_cancels=False)
    # The copied call's payload goes in spec.args (``_Call.payload``); a dependency missing
    # from the table is (ERROR, dumps(ObjectLostError(...))).
    dep_payloads = [(stored.kind, stored.payload) for stored in entries]
    results, retry, exiting = executor.run(spec, dep_payloads, instance=actor.instance,
                                           env_vars=actor.creation.env_vars)
    # An async actor's method: run its coroutine to the end on the actor's loop.
    results, retry, exiting = loop.run_until_complete(executor.run_async(
        spec, dep_payloads, actor.instance, env_vars=actor.creation.env_vars))

One rule differs from local mode today: exit_actor() ends the actor only from a method
(``exiting``); raised in ``__init__`` it is the creation's error, as in a worker.
"""

import asyncio
import inspect
import os
import sys
import traceback

from purerun import exceptions
from purerun.exceptions import _ActorExit
from purerun.core import serialization
from purerun.core.protocol import ERROR, INLINE
from purerun.core.object_ref import DynamicObjectRefGenerator, ObjectRef
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD, DYNAMIC, Dep, item_id

# The method an actor's handle calls to end it after the calls queued before it.
TERMINATE = "__ray_terminate__"
# The method every actor answers True to once its __init__ has run (Ray's name).
READY = "__ray_ready__"

# The line that says a call failed because one of its arguments is an error (Ray's words).
ARGUMENT_FAILED = "At least one of the input arguments for this task could not be computed:"

# What exit_actor() raises in a method: the end of the actor, not an error.
_ACTOR_EXITS = (_ActorExit, exceptions.AsyncioActorExit)


class Executor:
    """Runs calls for one process; see the module docstring for the arguments.

    Args:
        functions: ``functions(spec)`` returns the function of a task or the class of an
            actor creation. Called inside the call: what it raises is the call's error.
        read: ``read(object_id, (kind, payload))`` returns a dependency's value.
        store: ``store(serialized_value)`` returns ``(kind, payload)`` for a result.
        release: ``release(object_id, (kind, payload))`` gives back a dependency payload
            that will not be read; None if there is nothing to give back.
        created: ``created(spec, instance)`` takes an actor's new instance; None to drop it.
        await_init: ``await_init(spec, coroutine)`` runs an ``async def __init__`` to its
            end on the new actor's event loop (``created`` made it), raising what it raises.
        node_ip: the IP written into RayTaskError.
        interrupt_cancels: a KeyboardInterrupt during a call makes it TaskCancelledError
            and a SystemExit (or other BaseException) raises WorkerExit (True, a worker), or
            either propagates as it is (False, local mode).
        yielded: ``yielded(spec, index, kind, payload, contained_ids)`` reports value
            ``index`` a streaming call yielded, as a payload; it may block (backpressure).
    """

    def __init__(self, functions, read, store, *, release=None, created=None, node_ip=None,
                 interrupt_cancels=True, await_init=None, yielded=None):
        self.functions = functions
        self.await_init = await_init
        self.yielded = yielded
        self.read = read
        self.store = store
        self.release = release
        self.created = created
        self.node_ip = node_ip
        self.interrupt_cancels = interrupt_cancels

    def run(self, spec, dep_payloads, *, instance=None, env_vars=None, keep=None):
        """Run one call to its end.

        Args:
            spec: the TaskSpec.
            dep_payloads: ``(kind, payload)`` of each of ``spec.deps``, in order.
            instance: the actor's instance, for an actor method.
            env_vars: runtime_env env_vars applied to os.environ for the call, then restored.
            keep: a list the call's return value is appended to. Refs inside the value must
                not be dropped before the node has the results that hold them: the caller
                keeps the list until it has sent them.

        Returns:
            ``(results, retry, exiting)``: results is ``[(object_id, kind, payload,
            contained_ids)]``, one per return id; retry says the call should run again (its
            retry_exceptions policy); exiting says the actor ends with this call.
        """
        # An exception the caller is handling must not become the context of the call's own.
        outer = sys.exc_info()[1]
        saved_env = apply_env_vars(env_vars) if env_vars else None
        try:
            try:
                fn = self._callable(spec, instance)
            except BaseException as exc:
                self.release_arguments(spec, dep_payloads)
                return self.failure(spec, exc, instance, outer)
            try:
                args, kwargs = self.arguments(spec, dep_payloads)
                init = None
                if spec.kind == ACTOR_CREATION and _has_async_init(fn):
                    # As Ray: the instance is made now, its __init__ awaited on its loop.
                    value = fn.__new__(fn)
                    init = fn.__init__(value, *args, **kwargs)
                else:
                    value = fn(*args, **kwargs)
                # Drop the arguments now, so zero-copy views of them die and their pins go
                # back ahead of the results.
                del args, kwargs
                if spec.generator is not None and spec.kind != ACTOR_CREATION:
                    if spec.generator == DYNAMIC:
                        return self._dynamic(spec, value, instance, outer), False, False
                    self._stream(spec, value)
                    value = None
                if spec.kind == ACTOR_CREATION:
                    if self.created is not None:
                        self.created(spec, value)
                    if init is not None:
                        if self.await_init is None:
                            init.close()
                            raise TypeError("async def __init__ needs an asyncio actor")
                        self.await_init(spec, init)
                    value = None  # the actor object's value; the instance lives on
                elif keep is not None:
                    keep.append(value)
                return self.results(spec, value), False, spec.method == TERMINATE
            except BaseException as exc:  # the user's error is the call's result
                return self.failure(spec, exc, instance, outer)
        finally:
            if saved_env is not None:
                restore_env(saved_env)

    async def run_async(self, spec, dep_payloads, instance, *, env_vars=None, keep=None):
        """Run one call of an asyncio actor on the running loop; as ``run``.

        A coroutine method is awaited, a plain one called. Cancelling the asyncio task
        running this makes the call's result TaskCancelledError. ``env_vars`` change the
        whole process: only for a caller that runs one coroutine at a time.
        """
        saved_env = apply_env_vars(env_vars) if env_vars else None
        try:
            try:
                fn = self._callable(spec, instance)
            except BaseException as exc:
                self.release_arguments(spec, dep_payloads)
                return self.failure(spec, exc, instance)
            try:
                args, kwargs = self.arguments(spec, dep_payloads)
                value = fn(*args, **kwargs)
                del args, kwargs
                if spec.generator is not None and inspect.isasyncgen(value):
                    if spec.generator == DYNAMIC:
                        return await self._dynamic_async(spec, value, instance), False, False
                    await self._stream_async(spec, value)
                    value = None
                elif spec.generator is not None:
                    if spec.generator == DYNAMIC:
                        return self._dynamic(spec, value, instance, None), False, False
                    self._stream(spec, value)
                    value = None
                elif inspect.isawaitable(value):
                    value = await value
                if keep is not None:
                    keep.append(value)
                return self.results(spec, value), False, spec.method == TERMINATE
            except BaseException as exc:  # caught next to the call: the user's frames
                return self.failure(spec, exc, instance)
        finally:
            if saved_env is not None:
                restore_env(saved_env)

    def _stream(self, spec, generator):
        """Report each value a streaming call yields, as it is made (``yielded``)."""
        if not inspect.isgenerator(generator):
            raise _not_a_generator(spec, generator)
        store = self.store
        yielded = self.yielded
        index = 0
        for item in generator:
            sv = serialization.serialize(item)
            del item
            kind, payload = store(sv)
            yielded(spec, index, kind, payload, sv.contained)
            index += 1

    async def _stream_async(self, spec, generator):
        """As _stream, for an async generator (an asyncio actor's method)."""
        store = self.store
        yielded = self.yielded
        index = 0
        async for item in generator:
            sv = serialization.serialize(item)
            del item
            kind, payload = store(sv)
            yielded(spec, index, kind, payload, sv.contained)
            index += 1

    def _dynamic(self, spec, generator, instance, outer):
        """The results of a dynamic call: every item it yields, then return 0, a
        DynamicObjectRefGenerator over them. An error raised by the generator is stored as
        one more item, after those it yielded (as in Ray)."""
        if not inspect.isgenerator(generator):
            raise _not_a_generator(spec, generator)
        items = []
        try:
            for item in generator:
                items.append(self._item(spec, len(items), item))
                del item
        except Exception as exc:
            items.append(self._error_item(spec, len(items), exc, instance, outer))
        return self._dynamic_results(spec, items)

    async def _dynamic_async(self, spec, generator, instance):
        items = []
        try:
            async for item in generator:
                items.append(self._item(spec, len(items), item))
                del item
        except Exception as exc:
            items.append(self._error_item(spec, len(items), exc, instance, None))
        return self._dynamic_results(spec, items)

    def _item(self, spec, index, value):
        sv = serialization.serialize(value)
        kind, payload = self.store(sv)
        return item_id(spec.task_id, index), kind, payload, sv.contained

    def _error_item(self, spec, index, exc, instance, outer):
        payload = self.failure(spec, exc, instance, outer)[0][0][2]
        return item_id(spec.task_id, index), ERROR, payload, ()

    def _dynamic_results(self, spec, items):
        refs = [ObjectRef(object_id) for object_id, _kind, _payload, _contained in items]
        return items + self.results(spec, DynamicObjectRefGenerator(refs))

    def _callable(self, spec, instance):
        if spec.kind == ACTOR_METHOD:
            if spec.method == TERMINATE:
                return _no_op
            if spec.method == READY:
                return _ready
            return getattr(instance, spec.method)
        return self.functions(spec)

    def arguments(self, spec, dep_payloads):
        """The call's ``(args, kwargs)``, Dep markers replaced by the dependencies' values.

        Raises:
            DependencyFailed: a dependency is an error, or an argument cannot be unpickled
                here (every payload is released).
        """
        deps = spec.deps
        values = []
        if dep_payloads:
            for kind, payload in dep_payloads:
                if kind == ERROR:
                    self.release_arguments(spec, dep_payloads)
                    raise DependencyFailed(payload)
            read = self.read
            try:
                for object_id, entry in zip(deps, dep_payloads):
                    values.append(read(object_id, entry))
            except Exception as exc:
                # The values read so far release themselves; the rest were never touched.
                self._release(deps[len(values) + 1:], dep_payloads[len(values) + 1:])
                raise _unreadable(exc) from exc
            except BaseException:
                self._release(deps[len(values) + 1:], dep_payloads[len(values) + 1:])
                raise
        if spec.args_in_store:
            args, kwargs = values.pop()
        elif spec.args is None:
            return (), {}
        else:
            meta, buffers = spec.args
            try:
                args, kwargs = serialization.deserialize(meta, buffers)
            except Exception as exc:
                raise _unreadable(exc) from exc
        if values:
            args = [values[a.index] if type(a) is Dep else a for a in args]
            if kwargs:
                kwargs = {k: values[v.index] if type(v) is Dep else v
                          for k, v in kwargs.items()}
        return args, kwargs

    def release_arguments(self, spec, dep_payloads):
        """Give back every dependency payload of a call that will not read them."""
        if dep_payloads:
            self._release(spec.deps, dep_payloads)

    def _release(self, object_ids, dep_payloads):
        release = self.release
        if release is not None:
            for object_id, entry in zip(object_ids, dep_payloads):
                release(object_id, entry)

    def results(self, spec, value):
        """The results of a call that returned ``value``.

        Raises:
            ValueError: the value does not match num_returns.
            TypeError: a value cannot be pickled.
        """
        values = split_returns(spec, value)
        store = self.store
        results = []
        for object_id, item in zip(spec.return_ids(), values):
            sv = serialization.serialize(item)
            kind, payload = store(sv)
            results.append((object_id, kind, payload, sv.contained))
        return results

    def failure(self, spec, exc, instance=None, outer=None):
        """``(results, retry, exiting)`` of a call that raised ``exc``.

        Args:
            instance: the actor's instance, for the error's actor_repr.
            outer: an exception the caller was handling when the call started, cut out of
                ``exc``'s chain.
        """
        if type(exc) is DependencyFailed:  # never retried: the argument stays failed
            return error_results(spec, self.argument_failed(spec, exc, instance)), False, False
        if spec.kind == ACTOR_METHOD and isinstance(exc, _ACTOR_EXITS):
            return none_results(spec), False, True
        if isinstance(exc, KeyboardInterrupt) and not self.interrupt_cancels:
            raise exc
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            return self.cancelled(spec), False, False
        if not isinstance(exc, (Exception, _ActorExit)):
            if not self.interrupt_cancels:
                raise exc  # local mode: the user's own process exits
            raise WorkerExit(exc) from exc
        if outer is not None:
            _forget_context(exc, outer)
        error = exceptions.RayTaskError.from_exception(
            exc, spec.name, proctitle="purerun::" + spec.name, pid=os.getpid(),
            ip=self.node_ip, actor_id=spec.actor_id.hex() if spec.actor_id is not None else None,
            actor_repr=repr(instance) if instance is not None else None)
        return error_results(spec, dump_error(error, spec)), retryable(spec, exc), False

    def argument_failed(self, spec, failed, instance=None):
        """The pickled error of a call whose argument is an error (``failed``, a
        DependencyFailed), as Ray's: a RayTaskError of this call saying so, with the
        argument's error under it, and that error's cause as its own (so the caller still
        catches the original type)."""
        error = failed.error
        if error is None:
            try:
                error = serialization.deserialize(failed.payload)
            except Exception:
                return failed.payload  # cannot be read here: passed on as it is
        if isinstance(error, exceptions.RayTaskError):
            cause, kind = error.cause, "purerun.exceptions.RayTaskError"
        else:
            cause, kind = error, f"{type(error).__module__}.{type(error).__qualname__}"
        text = f"Traceback (most recent call last):\n  {ARGUMENT_FAILED}\n{kind}: {error}"
        wrapped = exceptions.RayTaskError(
            spec.name, text, cause, proctitle="purerun::" + spec.name, pid=os.getpid(),
            ip=self.node_ip, actor_id=spec.actor_id.hex() if spec.actor_id is not None else None,
            actor_repr=repr(instance) if instance is not None else None)
        return dump_error(wrapped, spec)

    def cancelled(self, spec):
        """The results of a cancelled call: TaskCancelledError for each return id."""
        return error_results(spec, serialization.dumps(
            exceptions.TaskCancelledError(spec.task_id.hex())))


class WorkerExit(BaseException):
    """A call raised SystemExit, or another BaseException that is no error of the call: the
    worker process ends, as in Ray, rather than store it as the call's result (a
    RayTaskError(SystemExit) would end the caller's process in turn).

    Attributes:
        exc: what the call raised.
        intended: sys.exit(0): an actor ending so is an intended exit, not restarted.
        code: the process's exit status.
        reason: one line saying why, for the worker's stderr and the actor's ActorDiedError.
    """

    def __init__(self, exc):
        super().__init__(exc)
        self.exc = exc
        code = exc.code if isinstance(exc, SystemExit) else None
        # As Ray: only an exit code equal to 0 is intended; sys.exit() (code None) is not.
        self.intended = isinstance(exc, SystemExit) and code is not None and code == 0
        if isinstance(exc, SystemExit):
            self.reason = f"Worker exits with an exit code {code}."
            self.code = code if type(code) is int and 0 <= code < 256 else (0 if self.intended
                                                                           else 1)
        else:
            self.reason = (f"Worker exits: the call raised {type(exc).__name__}, a "
                           "BaseException that is not an Exception.")
            self.code = 1


class DependencyFailed(Exception):
    """An argument is an error: its task failed (``payload``, the pickled error), or it could
    not be unpickled here (``error``). The call fails with Executor.argument_failed."""

    def __init__(self, payload=None, error=None):
        super().__init__()
        self.payload = payload
        self.error = error


def _unreadable(exc):
    """An argument's unpickling raised ``exc``: as in Ray, a RaySystemError stands for it
    (an error the reading itself raised, such as ObjectLostError, stays as it is)."""
    if not isinstance(exc, exceptions.RayError):
        # The original goes along if it can travel, else its text does.
        exc = exceptions.RaySystemError(exceptions._travelling_cause(exc),
                                        traceback.format_exc())
    return DependencyFailed(error=exc)


def error_results(spec, payload):
    """Results that are all the same pickled error."""
    return [(object_id, ERROR, payload, ()) for object_id in spec.return_ids()]


def none_results(spec):
    """Results that are all None (a call that ended its actor)."""
    payload = serialization.to_inline(serialization.serialize(None))
    return [(object_id, INLINE, payload, ()) for object_id in spec.return_ids()]


def split_returns(spec, result):
    """The call's return values as a tuple of ``spec.num_returns`` items.

    A generator's values are its return values, one per yield (as in Ray): it must yield
    exactly num_returns of them.

    Raises:
        ValueError: the result does not match num_returns.
    """
    n = spec.num_returns
    if n and inspect.isgenerator(result):
        values = []
        for value in result:
            if len(values) == n:
                raise ValueError(f"Task returned more than num_returns={n} objects.")
            values.append(value)
        if len(values) < n:
            raise ValueError(f"Task returned {len(values)} objects, but num_returns={n}.")
        return values
    if n == 1:
        return (result,)
    if n == 0:
        if result is not None:
            raise ValueError(f"Task {spec.name} has num_returns=0 but returned "
                             f"{type(result).__name__}, not None.")
        return ()
    try:
        values = tuple(result)
    except TypeError:
        raise ValueError(f"Task {spec.name} has num_returns={n} but returned a "
                         f"non-iterable {type(result).__name__}.") from None
    if len(values) != n:
        raise ValueError(f"Task {spec.name} has num_returns={n} but returned "
                         f"{len(values)} values.")
    return values


def retryable(spec, exc):
    """Whether the call is run again after raising ``exc`` (its retry_exceptions policy)."""
    policy = spec.retry_exceptions
    if not policy or spec.max_retries == 0 or not isinstance(exc, Exception):
        return False
    if policy is True:
        return True
    try:
        classes = serialization.deserialize(policy)
    except Exception:
        return False
    return isinstance(exc, tuple(classes))


def apply_env_vars(env_vars):
    """Apply runtime_env env_vars to os.environ; return what restore_env needs."""
    saved = {name: os.environ.get(name) for name in env_vars}
    os.environ.update(env_vars)
    return saved


def restore_env(saved):
    """Undo apply_env_vars."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def dump_error(error, spec):
    """Pickle a call's error; one that cannot be pickled keeps its type name and text."""
    try:
        return serialization.dumps(error)
    except Exception:
        cause = getattr(error, "cause", None)
        text = f"{type(cause or error).__name__}: {cause or error}"
        plain = exceptions.RayTaskError(spec.name, getattr(error, "traceback_str", text),
                                        exceptions.UnserializableException(text),
                                        pid=os.getpid())
        return serialization.dumps(plain)


def _forget_context(exc, outer):
    """Cut ``outer`` (the caller's exception being handled) out of ``exc``'s chain."""
    seen = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if current.__context__ is outer:
            current.__context__ = None
        pending.append(current.__cause__)
        pending.append(current.__context__)


def _has_async_init(cls):
    return isinstance(cls, type) and inspect.iscoroutinefunction(
        inspect.getattr_static(cls, "__init__", None))


def _not_a_generator(spec, value):
    return TypeError(f"{spec.name} has num_returns={spec.generator!r} but returned "
                     f"{type(value).__name__}, not a generator: use yield in it, or an "
                     "integer num_returns.")


def _no_op():
    return None


def _ready():
    return True
