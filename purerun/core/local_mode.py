"""LocalClient: ``purerun.init(local_mode=True)`` runs every task and actor call at once, in
the calling thread, for debugging (as Ray's local mode did).

::

    caller's thread (nothing else is started: no node, no worker, no thread)
    ───────────────
    f.remote(*args)   ─▶ submit_task: copy the arguments, run f now, store its results
    A.remote(*args)   ─▶ create_actor: copy the arguments, run A.__init__ now
    a.m.remote(*args) ─▶ submit_actor_method: run the method now; an ``async def`` one runs
                         to completion on the actor's private event loop
    put(value)        ─▶ store the value
    get(refs)         ─▶ rebuild the stored values; a stored error is raised

The object table (``_objects``) holds every value as the real object store would: pickled,
with protocol-5 buffers copied out. So a task cannot change its caller's objects, each
``get`` returns a fresh copy, large numpy arrays come back read-only, and a value that cannot
be pickled fails exactly where it fails on the real runtime. Errors are made by the same
code paths as in ``core.worker``: ``RayTaskError.from_exception`` in the process (here: the
thread) that ran the task, pickled and stored, raised by ``get`` as
``as_instanceof_cause()``. Dependency failures, ``num_returns`` checks, ``retry_exceptions``,
``ActorDiedError`` and named actors behave as on the real runtime.

References are counted as ``Client`` counts them: ``new_ref``/``borrow_ref`` count up,
``ObjectRef.__del__`` calls ``drop_ref``. A stored value holds the objects whose refs it
contains, a named actor holds its actor object. A value goes when nothing holds it; an
actor ends when its actor object goes (its last handle). ``drop_ref`` may run in any thread,
inside any lock, even inside this module (a garbage collection can start anywhere), so it
only appends to ``_dropped``; the drops are applied at the start of the next call into this
client (``_collect``).

What differs from the real runtime, on purpose:

* Calls run one after the other at submission. A task that waits for something only a
  later call would produce (a signal actor, a queue) waits for ever.
* Resources are counted (``available_resources``) but not enforced: a task that asks for
  more than the node has runs anyway. No GPU ids are assigned; ``max_calls``,
  ``max_concurrency`` and ``max_pending_calls`` have no effect.
* ``cancel`` does nothing: every task has finished before its ObjectRef is returned.
* ``get`` of an object this client never stored raises ObjectLostError (GetTimeoutError
  when a timeout was given) instead of waiting for ever.
* A KeyboardInterrupt raised while a task runs is the user's Ctrl-C: it propagates instead
  of becoming the task's TaskCancelledError.
* Actor exits (``exit_actor``, ``__ray_terminate__``) do not run ``atexit`` handlers: they
  belong to the driver here.
"""

import asyncio
import collections
import concurrent.futures
import inspect
import os
import socket
import sys
import threading
import time

from purerun import exceptions
from purerun.core import ids, serialization
from purerun.core.client import _as_raisable, merge_env_vars, split_ready
from purerun.core.object_ref import ObjectRef
from purerun.core.protocol import ERROR, INLINE
from purerun.core.scheduler import RESOURCE_UNIT
from purerun.core.task_spec import (ACTOR_CREATION, ACTOR_METHOD, Dep, TaskSpec,
                                    apply_env_vars, extract_deps, restore_env, retryable,
                                    split_returns)
from purerun.core.timeline import TIMELINE_MAX_EVENTS, chrome_trace
from purerun.core.worker import _dump_error
from purerun.exceptions import _ActorExit

# The job id of the one driver of a local session: the first job a node would number.
LOCAL_JOB_ID = (1).to_bytes(4, "little")
LOCAL_NODE_IP = "127.0.0.1"

# The same texts the node uses (core/node.py), so that errors read the same in both modes.
_ACTOR_DEAD_MESSAGE = ("The actor is dead: it was killed, exited, or its process died and it "
                       "has no restarts left.")
_ACTOR_EXITED_MESSAGE = "The actor exited via exit_actor()."

ALIVE = "ALIVE"
DEAD = "DEAD"


class _Stored:
    """One value in the object table: a payload kind (INLINE or ERROR) and its payload.

    ``contained``: ids of the objects whose refs the value holds (it keeps them alive).
    """

    __slots__ = ("kind", "payload", "contained", "freed")

    def __init__(self, kind, payload, contained=(), freed=False):
        self.kind = kind
        self.payload = payload
        self.contained = contained
        self.freed = freed


class _Call:
    """A call's copied arguments: the pickled ``(args, kwargs)`` with ``Dep`` markers where
    top-level ObjectRefs were, and the ids those markers stand for."""

    __slots__ = ("payload", "deps")

    def __init__(self, payload, deps):
        self.payload = payload
        self.deps = deps


class _Running:
    """What get_runtime_context() sees in a thread while a task or actor call runs there."""

    __slots__ = ("spec", "actor")

    def __init__(self, spec, actor):
        self.spec = spec
        self.actor = actor


class _LocalActor:
    """An actor living in this process.

    States: ALIVE, DEAD. invariant: ``instance`` is None unless ALIVE; ``cause`` is the
    error later calls get once DEAD (None: the generic "actor is dead" error).

    ``lock`` is held while a call, a restart or a kill runs: calls from several user
    threads take turns, as they would in the actor's one process. It is re-entrant, so an
    actor may call (or kill) itself.
    """

    __slots__ = ("actor_id", "object_id", "meta", "cls", "creation", "call", "name",
                 "namespace", "hold", "restarts_left", "max_task_retries", "state", "cause",
                 "instance", "loop", "restarted", "node_hold", "lock")

    def __init__(self, actor_id, cls, creation, call, namespace):
        actor = creation.actor
        self.actor_id = actor_id
        self.object_id = ids.object_id(actor_id, 0)
        self.meta = actor.meta
        self.cls = cls
        self.creation = creation      # the TaskSpec of __init__, run again on a restart
        self.call = call              # its copied arguments
        self.name = actor.name
        self.namespace = namespace    # the one it is named in (the job's, if not given)
        self.hold = actor.hold or {}
        self.restarts_left = actor.max_restarts
        self.max_task_retries = actor.max_task_retries
        self.state = ALIVE
        self.cause = None
        self.instance = None
        self.loop = None              # async actors: the private event loop of its calls
        self.restarted = False
        self.node_hold = False        # named or detached: the client holds the actor object
        self.lock = threading.RLock()


class LocalClient:
    """The runtime of ``purerun.init(local_mode=True)``; see the module docstring.

    Offers the public methods of ``core.client.Client`` that the API uses.

    Args:
        node_resources: the resources the (imaginary) node offers, e.g. {"CPU": 2.0}.
        namespace: the namespace for named actors of this job.
    """

    is_worker = False

    def __init__(self, node_resources, namespace=None):
        self.namespace = namespace
        self.job_env_vars = None  # init(runtime_env={"env_vars": ...})
        self.gpu_ids = ()
        self.info = {"node_id": ids.random_id(), "job_id": LOCAL_JOB_ID, "session_dir": None,
                     "arena_size": 0, "address": None, "node_ip": LOCAL_NODE_IP,
                     "resources": dict(node_resources)}
        self._total = {name: _units(amount) for name, amount in node_resources.items()}
        self._in_use = {}          # resource -> units held by running tasks and live actors
        self._lock = threading.RLock()
        self._objects = {}         # object id -> _Stored
        self._refs = {}            # object id -> ObjectRefs alive in this process
        self._holds = {}           # object id -> holds by stored values and named actors
        self._dropped = []         # ids of ObjectRefs that died, not yet applied (_collect)
        self._collecting = False
        self._actors = {}          # actor id -> _LocalActor, while its actor object lives
        self._named = {}           # (namespace, name) -> _LocalActor
        self._functions = set()    # keys of the functions run, for stats
        self._timeline = collections.deque(maxlen=TIMELINE_MAX_EVENTS)  # task spans for timeline()
        self._running_tasks = 0
        self._local = threading.local()
        self._closed = False

    # -- what the runtime context reads ------------------------------------------------------------

    def wait_welcome(self, timeout=30.0):
        """The node information (there is nothing to wait for in local mode)."""
        return self.info

    @property
    def job_id(self):
        return self.info["job_id"]

    def _running(self):
        return getattr(self._local, "running", None)

    @property
    def current_task(self):
        """The TaskSpec of the task or actor call running in this thread, or None."""
        running = self._running()
        return running.spec if running is not None else None

    @property
    def actor_id(self):
        running = self._running()
        if running is None or running.actor is None:
            return None
        return running.actor.actor_id

    @property
    def actor_is_async(self):
        running = self._running()
        return bool(running is not None and running.actor is not None
                    and running.actor.meta.is_async)

    @property
    def actor_resources(self):
        """What the running actor holds (get_runtime_context().get_assigned_resources())."""
        running = self._running()
        if running is None or running.actor is None:
            return {}
        return dict(running.actor.hold)

    @property
    def actor_name(self):
        running = self._running()
        return running.actor.name if running is not None and running.actor is not None else None

    @property
    def actor_restarted(self):
        running = self._running()
        return bool(running is not None and running.actor is not None
                    and running.actor.restarted)

    @property
    def actor_meta(self):
        """The running actor's class metadata (get_runtime_context().current_actor)."""
        running = self._running()
        if running is None or running.actor is None:
            return None
        return running.actor.meta

    # -- references --------------------------------------------------------------------------------

    def new_ref(self, object_id, subscribed=False):
        """A counted reference to an object of this client."""
        with self._lock:
            self._refs[object_id] = self._refs.get(object_id, 0) + 1
        return ObjectRef(object_id, self)

    def borrow_ref(self, object_id):
        """A reference that was unpickled: counted like any other."""
        return self.new_ref(object_id)

    def drop_ref(self, object_id):
        """An ObjectRef died (from ``__del__``, in any thread, possibly inside this module)."""
        if not self._closed:
            self._dropped.append(object_id)  # applied by _collect; list.append is atomic

    def flush(self):
        """Apply the reference drops not applied yet."""
        self._collect()

    def _collect(self):
        dropped = self._dropped
        if not dropped or self._collecting:
            return
        ended = []
        with self._lock:
            self._collecting = True
            try:
                while dropped:
                    object_id = dropped.pop()
                    count = self._refs.get(object_id, 0) - 1
                    if count > 0:
                        self._refs[object_id] = count
                        continue
                    self._refs.pop(object_id, None)
                    self._delete_if_unheld(object_id, ended)
            finally:
                self._collecting = False
        for actor in ended:
            self._end_actor(actor)

    def _hold(self, object_id):
        # Called with self._lock held.
        self._holds[object_id] = self._holds.get(object_id, 0) + 1

    def _release(self, object_id, ended):
        # Called with self._lock held.
        count = self._holds.get(object_id, 0) - 1
        if count > 0:
            self._holds[object_id] = count
            return
        self._holds.pop(object_id, None)
        self._delete_if_unheld(object_id, ended)

    def _delete_if_unheld(self, object_id, ended):
        """Drop the value of ``object_id`` (and what only it held) once nothing holds it.

        Called with self._lock held. Actors whose actor object went are appended to
        ``ended``: the caller ends them after releasing the lock, since that drops the
        user's instance and runs whatever its ``__del__`` does.
        """
        stack = [object_id]
        while stack:
            object_id = stack.pop()
            if self._refs.get(object_id, 0) > 0 or self._holds.get(object_id, 0) > 0:
                continue
            stored = self._objects.pop(object_id, None)
            actor = self._actors.get(object_id[:-4])
            if actor is not None and actor.object_id == object_id:
                del self._actors[actor.actor_id]
                ended.append(actor)
            if stored is None:
                continue
            for inner in stored.contained:
                count = self._holds.get(inner, 0) - 1
                if count > 0:
                    self._holds[inner] = count
                else:
                    self._holds.pop(inner, None)
                    stack.append(inner)

    # -- the object table --------------------------------------------------------------------------

    def _store(self, results):
        """Store (object id, kind, payload, contained ids) results; keep a value already
        there (as the node keeps the first of a task that finished twice)."""
        ended = []
        with self._lock:
            for object_id, kind, payload, contained in results:
                if object_id in self._objects:
                    continue
                for inner in contained:
                    self._hold(inner)
                self._objects[object_id] = _Stored(kind, payload, tuple(contained))
            for object_id, _kind, _payload, _contained in results:
                self._delete_if_unheld(object_id, ended)
        for actor in ended:
            self._end_actor(actor)

    def _check_open(self):
        if self._closed:
            raise exceptions.RaySystemError("purerun is not running in this process any more. "
                                            "Call purerun.init() again.")
        self._collect()

    def put(self, value):
        """Store ``value``; return an ObjectRef to it.

        Raises:
            TypeError: ``value`` is an ObjectRef, or cannot be pickled.
        """
        self._check_open()
        if isinstance(value, ObjectRef):
            raise TypeError("Calling put() on an ObjectRef is not allowed. Put the value itself, "
                            "or pass the ObjectRef around directly.")
        sv = serialization.serialize(value)
        object_id = ids.new_put_id()
        ref = self.new_ref(object_id)
        self._store([(object_id, INLINE, serialization.to_inline(sv), sv.contained)])
        return ref

    def get(self, refs, timeout=None):
        """Values of ``refs`` (a list), in order; raises the first stored error met.

        Raises:
            RayTaskError (as an instance of the task's exception type), ActorDiedError, ...:
                the stored error of the first failed object.
            ObjectLostError / GetTimeoutError: an object this client never stored (nothing
                could ever produce it: there is nothing running in the background).
        """
        self._check_open()
        with self._lock:
            entries = [self._objects.get(ref._id) for ref in refs]
        for ref, stored in zip(refs, entries):
            if stored is None:
                raise _missing(ref._id, timeout)
            if stored.kind == ERROR:
                raise _as_raisable(serialization.deserialize(stored.payload))
        return [serialization.deserialize(*stored.payload) for stored in entries]

    def wait(self, refs, num_returns, timeout):
        """(ready, not_ready): every stored object is ready, the first ``num_returns`` are
        returned as such, in the order given."""
        self._check_open()
        with self._lock:
            return split_ready(refs, self._objects, num_returns)

    def future(self, ref):
        """A completed ``concurrent.futures.Future`` with the value or the error of ``ref``."""
        future = concurrent.futures.Future()
        try:
            value = self.get([ref])[0]
        except Exception as exc:  # the task's error is the future's outcome
            future.set_exception(exc)
        else:
            future.set_result(value)
        return future

    def cancel(self, ref, force, recursive):
        """Nothing to cancel: every task finished before its ObjectRef was returned."""
        self._check_open()

    def free(self, refs):
        """Drop the values now; a later get raises ObjectFreedError."""
        self._check_open()
        ended = []
        with self._lock:
            for ref in refs:
                stored = self._objects.get(ref._id)
                if stored is None or stored.freed:
                    continue
                error = serialization.dumps(exceptions.ObjectFreedError(ref._id.hex()))
                self._objects[ref._id] = _Stored(ERROR, error, freed=True)
                for inner in stored.contained:
                    self._release(inner, ended)
        for actor in ended:
            self._end_actor(actor)

    def _inherited_env_vars(self):
        """runtime_env env_vars a call made now inherits: its caller's, else the job's."""
        running = self._running()
        if running is not None:
            source = running.actor.creation if running.actor is not None else running.spec
            if source.env_vars:
                return source.env_vars
        return self.job_env_vars

    def request(self, op, *args, timeout=None):
        """Answer what the node answers: cluster_resources, available_resources, nodes,
        stats, timeline.

        Raises:
            ValueError: an unknown request.
        """
        self._check_open()
        if op == "cluster_resources":
            return {name: units / RESOURCE_UNIT for name, units in self._total.items()}
        if op == "available_resources":
            with self._lock:
                free = {name: units - self._in_use.get(name, 0)
                        for name, units in self._total.items()}
            return {name: units / RESOURCE_UNIT for name, units in free.items() if units > 0}
        if op == "nodes":
            return [{
                "NodeID": self.info["node_id"].hex(), "Alive": True,
                "NodeManagerAddress": LOCAL_NODE_IP, "NodeManagerHostname": socket.gethostname(),
                "NodeName": LOCAL_NODE_IP, "Resources": self.request("cluster_resources"),
                "alive": True, "ObjectStoreSocketName": None, "RayletSocketName": None,
                "MetricsExportPort": 0, "Labels": {},
            }]
        if op == "stats":
            with self._lock:
                return {"workers": {}, "tasks": self._running_tasks,
                        "functions": len(self._functions), "num_objects": len(self._objects),
                        "arena_capacity": 0, "arena_used": 0, "arena_largest_free": 0,
                        "spilled_bytes": 0, "num_spilled": 0, "num_restored": 0}
        if op == "timeline":
            return chrome_trace(self._timeline, LOCAL_NODE_IP)
        raise ValueError(f"unknown request {op!r}")

    # -- tasks -------------------------------------------------------------------------------------

    def submit_task(self, remote_function, fields, args, kwargs):
        """Run a task now; return its return ObjectRefs (its values or its error are stored).

        Raises:
            TypeError: the function or an argument cannot be pickled (as on the real
                runtime, which must send them to a worker).
        """
        self._check_open()
        key, _pickled = remote_function._export()
        call = _copy_arguments(args, kwargs)
        spec = TaskSpec(task_id=ids.new_task_id(), function_key=key, args=None,
                        args_in_store=False, deps=call.deps, contained=[], job_id=self.job_id,
                        **fields)
        inherited = self._inherited_env_vars()
        if inherited:
            spec.env_vars = merge_env_vars(inherited, spec.env_vars)
        self._functions.add(key)
        refs = [self.new_ref(object_id) for object_id in spec.return_ids()]
        self._use(spec.resources, +1)
        try:
            results, _exiting = self._run(spec, remote_function._function, call, None)
        finally:
            self._use(spec.resources, -1)
        self._store(results)
        return refs

    def _run(self, spec, fn, call, actor):
        """Run one task or actor call, with its retries. Returns (results, exiting)."""
        retries_left = spec.max_retries
        while True:
            results, retry, exiting = self._attempt(spec, fn, call, actor)
            if not retry or retries_left == 0 or (actor is not None and actor.state != ALIVE):
                return results, exiting
            retries_left -= 1  # from -1 (retry for ever) it never reaches 0
            spec.attempt += 1

    def _attempt(self, spec, fn, call, actor):
        """Run the call once, as core.worker does; return (results, retry, exiting).

        ``fn`` is the function of a task, or the class of an actor creation; an actor
        method is looked up on the instance here (a missing one is the call's error).
        """
        started = time.time()
        source = actor.creation if actor is not None else spec
        env_vars = source.env_vars
        saved_env = apply_env_vars(env_vars) if env_vars else None
        try:
            return self._attempt_once(spec, fn, call, actor)
        finally:
            if saved_env is not None:
                restore_env(saved_env)
            self._timeline.append((spec.name, os.getpid(), (started, time.time()),
                                   spec.task_id))

    def _attempt_once(self, spec, fn, call, actor):
        # An exception the caller is handling would become the __context__ of the task's own
        # exceptions (it is the same thread); on the real runtime there is none.
        outer = sys.exc_info()[1]
        local = self._local
        previous = getattr(local, "running", None)
        local.running = _Running(spec, actor)
        with self._lock:
            self._running_tasks += 1
        try:
            try:
                args, kwargs, failed_dep = self._arguments(call)
                if failed_dep is not None:
                    # An argument's task failed: this one fails with that very error.
                    return [(oid, ERROR, failed_dep, ()) for oid in spec.return_ids()], \
                        False, False
                if spec.kind == ACTOR_METHOD:
                    fn = _no_op if spec.method == "__ray_terminate__" else \
                        getattr(actor.instance, spec.method)
            except BaseException as exc:  # unpickling the arguments failed
                return self._failure(spec, exc, actor, outer)
            ok, value = self._invoke(actor, spec, fn, args, kwargs)
            del args, kwargs
            if not ok:
                return self._failure(spec, value, actor, outer)
            if spec.kind == ACTOR_CREATION:
                actor.instance = value
                value = None  # the actor object's value; the instance stays here
            try:
                return self._results(spec, value), False, spec.method == "__ray_terminate__"
            except BaseException as exc:  # wrong number of returns, unpicklable value
                return self._failure(spec, exc, actor, outer)
        finally:
            local.running = previous
            with self._lock:
                self._running_tasks -= 1

    def _invoke(self, actor, spec, fn, args, kwargs):
        """Call ``fn``; return (True, result) or (False, the exception it raised).

        The exception is caught here, next to the call, so that its traceback holds the
        user's frames and nothing of asyncio: it is the remote traceback users see.
        """
        if spec.kind == ACTOR_METHOD and actor.loop is not None:
            if actor.loop.is_running():
                # The actor calls itself from one of its own coroutines: its loop is busy
                # (further up this thread's stack), so this call gets a loop of its own.
                loop = asyncio.new_event_loop()
                try:
                    return _run_coroutine(loop, _call_async(fn, args, kwargs))
                finally:
                    _close_loop(loop)
            return _run_coroutine(actor.loop, _call_async(fn, args, kwargs))
        try:
            return True, fn(*args, **kwargs)
        except BaseException as exc:  # the user's error is the task's result
            return False, exc

    def _arguments(self, call):
        """(args, kwargs, None), or (None, None, error payload) if an argument is an error."""
        values = []
        if call.deps:
            with self._lock:
                entries = [self._objects.get(object_id) for object_id in call.deps]
            for object_id, stored in zip(call.deps, entries):
                if stored is None:
                    return None, None, serialization.dumps(
                        exceptions.ObjectLostError(object_id.hex()))
                if stored.kind == ERROR:
                    return None, None, stored.payload
            values = [serialization.deserialize(*stored.payload) for stored in entries]
        if call.payload is None:
            return (), {}, None
        args, kwargs = serialization.deserialize(*call.payload)
        if values:
            args = [values[a.index] if type(a) is Dep else a for a in args]
            if kwargs:
                kwargs = {k: values[v.index] if type(v) is Dep else v
                          for k, v in kwargs.items()}
        return args, kwargs, None

    def _results(self, spec, result):
        """The results of a call that returned ``result``, checked as core.worker checks them.

        Raises:
            ValueError: the result does not match num_returns.
            TypeError: a value cannot be pickled.
        """
        values = split_returns(spec, result)
        results = []
        for object_id, value in zip(spec.return_ids(), values):
            sv = serialization.serialize(value)
            results.append((object_id, INLINE, serialization.to_inline(sv), sv.contained))
        return results

    def _failure(self, spec, exc, actor, outer):
        """(results, retry, exiting) for a call that raised ``exc``."""
        if isinstance(exc, KeyboardInterrupt):
            raise exc  # the user's Ctrl-C (see the module docstring)
        if actor is not None and isinstance(exc, (_ActorExit, exceptions.AsyncioActorExit)):
            return None, False, True
        _forget_context(exc, outer)
        retry = False
        if isinstance(exc, asyncio.CancelledError):
            error = exceptions.TaskCancelledError(spec.task_id.hex())
        else:
            error = exceptions.RayTaskError.from_exception(
                exc, spec.name, proctitle="purerun::" + spec.name, pid=os.getpid(),
                ip=self.info["node_ip"],
                actor_id=spec.actor_id.hex() if spec.actor_id is not None else None,
                actor_repr=repr(actor.instance) if actor is not None
                and actor.instance is not None else None)
            retry = retryable(spec, exc)
        payload = _dump_error(error, spec)
        return [(oid, ERROR, payload, ()) for oid in spec.return_ids()], retry, False

    def _use(self, resources, sign):
        if not resources:
            return
        with self._lock:
            for name, amount in resources.items():
                self._in_use[name] = self._in_use.get(name, 0) + sign * _units(amount)

    # -- actors ------------------------------------------------------------------------------------

    def create_actor(self, actor_class, actor, resources, env_vars, get_if_exists, args,
                     kwargs):
        """Create an actor: run its ``__init__`` now.

        Takes what ``Client.create_actor`` takes. An error in ``__init__`` does not raise
        here: every later call raises ActorDiedError with it as the cause, as on the real
        runtime.

        Returns:
            ``(actor_id, meta, actor_ref)``, as ``Client.create_actor`` does.

        Raises:
            ValueError: the name is taken in the namespace (and get_if_exists is False).
            TypeError: the class or an argument cannot be pickled.
        """
        self._check_open()
        key, _pickled = actor_class._export()
        name = actor.name
        namespace = self._namespace_of(actor.namespace)
        if name is not None:
            with self._lock:
                existing = self._named.get((namespace, name))
            if existing is not None and existing.state == ALIVE:
                if not get_if_exists:
                    raise ValueError(f"The name {name} (namespace={namespace}) is already "
                                     "taken. Please use a different name or get the existing "
                                     f"actor using purerun.get_actor('{name}', "
                                     f"namespace='{namespace}').")
                return existing.actor_id, existing.meta, self.new_ref(existing.object_id)
        call = _copy_arguments(args, kwargs)
        inherited = self._inherited_env_vars()
        if inherited:
            env_vars = merge_env_vars(inherited, env_vars)
        actor_id = ids.new_task_id()
        creation = TaskSpec(task_id=actor_id, name=actor.class_name + ".__init__",
                            function_key=key, args=None, args_in_store=False, deps=call.deps,
                            contained=[], resources=resources, kind=ACTOR_CREATION,
                            actor_id=actor_id, job_id=self.job_id, env_vars=env_vars,
                            actor=actor)
        local = _LocalActor(actor_id, actor_class._cls, creation, call, namespace)
        actor_ref = self.new_ref(local.object_id)
        with self._lock:
            self._actors[actor_id] = local
            if name is not None or actor.detached:
                # Named and detached actors do not end with their handles.
                self._hold(local.object_id)
                local.node_hold = True
            if name is not None:
                self._named[(namespace, name)] = local
        with local.lock:
            self._start_actor(local)
        return actor_id, actor.meta, actor_ref

    def _start_actor(self, actor):
        """Run ``__init__`` (again, on a restart); the actor is ALIVE or DEAD afterwards.

        As in Ray, ``__init__`` already runs as the actor: get_runtime_context() gives its
        actor id there, and exit_actor() there ends it. (core.worker sets the actor id only
        once ``__init__`` has returned: see its ``_become_actor``.)
        """
        spec = actor.creation
        results, _retry, exiting = self._attempt(spec, actor.cls, actor.call, actor)
        if exiting:  # exit_actor() in __init__
            self._store([(actor.object_id, INLINE, _inline_none(), ())])
            self._actor_dead(actor, None)
            return
        if results[0][1] == ERROR:
            self._store(results)
            cause = serialization.deserialize(results[0][2])
            self._actor_dead(actor, exceptions.ActorDiedError(
                cause if isinstance(cause, exceptions.RayTaskError) else None))
            return
        # The creation's return value (None) is the actor object, the handles' anchor.
        self._store(results)
        if actor.meta.is_async and actor.loop is None:
            actor.loop = asyncio.new_event_loop()
        self._use(actor.hold, +1)

    def submit_actor_method(self, handle, method, fields, args, kwargs):
        """Call an actor's method now; return its return ObjectRefs.

        Takes what ``Client.submit_actor_method`` takes.

        Raises:
            TypeError: an argument cannot be pickled.
        """
        self._check_open()
        call = _copy_arguments(args, kwargs)
        with self._lock:
            actor = self._actors.get(handle._actor_id)
        max_retries = fields["max_retries"]
        if max_retries is None:
            max_retries = actor.max_task_retries if actor is not None else 0
        if method == "__ray_terminate__":
            max_retries = 0
        spec = TaskSpec(task_id=ids.new_task_id(), name=f"{handle._meta.class_name}.{method}",
                        function_key=None, args=None, args_in_store=False, deps=call.deps,
                        contained=[], num_returns=fields["num_returns"],
                        resources=dict(actor.hold) if actor is not None else {},
                        max_retries=max_retries, retry_exceptions=fields["retry_exceptions"],
                        kind=ACTOR_METHOD, actor_id=handle._actor_id, method=method,
                        job_id=self.job_id, concurrency_group=fields["concurrency_group"])
        refs = [self.new_ref(object_id) for object_id in spec.return_ids()]
        if actor is None:
            self._store_error(spec, self._actor_died_error(actor, handle))
            return refs
        with actor.lock:
            self._call_actor(actor, spec, call, handle)
        return refs

    def _call_actor(self, actor, spec, call, handle):
        """Run one method call of ``actor`` and store its outcome (``actor.lock`` held)."""
        if actor.state != ALIVE:
            self._store_error(spec, self._actor_died_error(actor, handle))
            return
        results, exiting = self._run(spec, None, call, actor)
        if exiting:
            if spec.method == "__ray_terminate__":
                self._store(results)
            else:
                self._store_error(spec, exceptions.ActorDiedError(
                    {"actor_id": actor.actor_id.hex(), "class_name": actor.meta.class_name,
                     "error_message": _ACTOR_EXITED_MESSAGE}))
            self._actor_dead(actor, None)
        else:
            self._store(results)
            if actor.state == DEAD and actor.loop is not None and not actor.loop.is_running():
                _close_loop(actor.loop)  # killed from inside this call: closed once it ended
                actor.loop = None

    def kill_actor(self, handle, no_restart):
        """Kill the actor at once; with no_restart=False it is restarted if it has restarts
        left (its ``__init__`` runs again)."""
        self._check_open()
        with self._lock:
            actor = self._actors.get(handle._actor_id)
        if actor is None:
            return
        with actor.lock:
            if actor.state != ALIVE:
                return
            if not no_restart and actor.restarts_left != 0:
                if actor.restarts_left > 0:
                    actor.restarts_left -= 1
                self._use(actor.hold, -1)
                actor.instance = None
                actor.restarted = True
                self._start_actor(actor)
                return
            self._actor_dead(actor, None)

    def get_actor(self, name, namespace):
        """Look up the live actor named ``name`` in ``namespace`` (None: this job's).

        Returns:
            ``(actor_id, meta, actor_ref)``, as ``Client.get_actor`` does.

        Raises:
            ValueError: there is no such actor (or it is dead).
        """
        self._check_open()
        with self._lock:
            actor = self._named.get((self._namespace_of(namespace), name))
        if actor is None or actor.state != ALIVE:
            where = f" in namespace {namespace!r}" if namespace else ""
            raise ValueError(f"Failed to look up actor with name '{name}'{where}. This could "
                             "be because 1. You are trying to look up a named actor you didn't "
                             "create. 2. The named actor died. 3. You did not use a namespace "
                             "matching the namespace of the actor.")
        return actor.actor_id, actor.meta, self.new_ref(actor.object_id)

    def _namespace_of(self, namespace):
        if namespace is not None:
            return namespace
        return self.namespace or f"anonymous:{self.job_id.hex()}"

    def _actor_died_error(self, actor, handle):
        if actor is not None and actor.cause is not None:
            return actor.cause
        return exceptions.ActorDiedError({"actor_id": handle._actor_id.hex(),
                                          "class_name": handle._meta.class_name,
                                          "error_message": _ACTOR_DEAD_MESSAGE})

    def _store_error(self, spec, error):
        payload = serialization.dumps(error)
        self._store([(oid, ERROR, payload, ()) for oid in spec.return_ids()])

    def _actor_dead(self, actor, cause):
        """The actor is gone for good: later calls raise ``cause`` (or the generic error)."""
        if actor.state == DEAD:
            return
        was_running = actor.instance is not None
        actor.state = DEAD
        actor.cause = cause
        actor.instance = None
        if was_running:
            self._use(actor.hold, -1)
        if actor.loop is not None and not actor.loop.is_running():
            _close_loop(actor.loop)
            actor.loop = None
        ended = []
        with self._lock:
            key = (actor.namespace, actor.name)
            if self._named.get(key) is actor:
                del self._named[key]
            if actor.node_hold:
                actor.node_hold = False
                self._release(actor.object_id, ended)
        for other in ended:
            self._end_actor(other)

    def _end_actor(self, actor):
        """The actor's last handle went: it ends (its actor object is gone already)."""
        self._actor_dead(actor, actor.cause)

    # -- shutdown ----------------------------------------------------------------------------------

    def close(self):
        """Forget every object and actor; later calls on this client raise RaySystemError."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            actors = list(self._actors.values())
            self._actors.clear()
            self._named.clear()
            self._objects.clear()
            self._refs.clear()
            self._holds.clear()
            self._dropped.clear()
        for actor in actors:
            actor.state = DEAD
            actor.instance = None
            if actor.loop is not None and not actor.loop.is_running():
                _close_loop(actor.loop)
                actor.loop = None


def _units(amount):
    return int(round(float(amount) * RESOURCE_UNIT))


def _inline_none():
    return serialization.to_inline(serialization.serialize(None))


def _copy_arguments(args, kwargs):
    """Pickle a call's arguments as Client.prepare_args does; top-level ObjectRefs become
    ``Dep`` markers. Pickling here is what makes the call a copy, as a real task's is.

    Raises:
        TypeError: an argument cannot be pickled (the message names it).
    """
    if not args and not kwargs:
        return _Call(None, [])
    args, kwargs, deps = extract_deps(args, kwargs)
    sv = serialization.serialize((args, kwargs))
    return _Call(serialization.to_inline(sv), deps)


def _missing(object_id, timeout):
    if timeout is not None:
        return exceptions.GetTimeoutError(
            f"Get timed out: some object(s) not ready after {timeout} s.")
    return exceptions.ObjectLostError(object_id.hex())


def _no_op():
    return None



def _forget_context(exc, outer):
    """Cut ``outer`` (the caller's exception being handled) out of ``exc``'s chain."""
    if outer is None:
        return
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


async def _call_async(fn, args, kwargs):
    """Run one call of an async actor; return (True, result) or (False, exception)."""
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return True, result
    except BaseException as exc:  # the user's error is the task's result
        return False, exc


def _run_coroutine(loop, coro):
    """Run ``coro`` to completion on ``loop``, even if this thread is inside another running
    event loop (a driver using asyncio, or an async actor calling another one): that loop
    is set aside for the while, as it would be waiting for a reply on the real runtime."""
    outer = asyncio._get_running_loop()
    if outer is not None:
        asyncio._set_running_loop(None)
    try:
        return loop.run_until_complete(coro)
    finally:
        if outer is not None:
            asyncio._set_running_loop(outer)


def _close_loop(loop):
    """Cancel what is left on an actor's private loop, then close it."""
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            _run_coroutine(loop, asyncio.gather(*pending, return_exceptions=True))
        _run_coroutine(loop, loop.shutdown_asyncgens())
    finally:
        loop.close()
