"""LocalClient: ``purerun.init(local_mode=True)`` runs every task and actor call at once, in
the calling thread, for debugging (as Ray's local mode did).

::

    caller's thread (nothing else is started: no node, no worker, no thread)
    ───────────────
    f.remote(*args) ─▶ SUBMIT ─▶ NodeState ─▶ StartWorker / EXECUTE ─▶ Executor.run, here
    a.m.remote()    ─▶ SUBMIT ─▶ NodeState ─▶ EXECUTE to the actor's (virtual) worker ─┘
    put / get / wait / free / kill / get_actor ─▶ the same messages, answered by NodeState
                                        TASK_DONE ◀── results ◀────────────────────────┘

Local mode runs the node's rules themselves: it drives a ``NodeState`` inline, as the node
process does over sockets, and runs each call with the ``Executor`` a worker uses. Reference
counting, retries, actor lifecycles and restarts, named actors and namespaces, dependency
failures and error types have one home, shared with the real runtime; what is left here is
the translation. A "worker" is a token: when NodeState asks for one it exists at once, and an
EXECUTE sent to it runs in the calling thread before ``.remote()`` returns.

Every value is pickled into the object table (always inline: there is no arena), so a task
cannot change its caller's objects, each ``get`` returns a fresh copy, and a value that
cannot be pickled fails exactly where it fails on the real runtime.

References are counted as ``Client`` counts them: ``new_ref``/``borrow_ref`` count up,
``ObjectRef.__del__`` calls ``drop_ref``. ``drop_ref`` may run in any thread, inside any lock,
even inside this module (a garbage collection can start anywhere), so it only appends to
``_dropped``; the drops go to NodeState at the start of the next call into this client.

What differs from the real runtime, on purpose:

* Calls run one after the other at submission. A task that waits for something only a
  later call would produce (a signal actor, a queue) waits for ever.
* Resources are counted (``available_resources``) but not enforced: a task that asks for
  more than the node has runs anyway. No GPU ids are assigned; ``max_calls``,
  ``max_concurrency`` and ``max_pending_calls`` have no effect.
* ``cancel`` does nothing: every task has finished before its ObjectRef is returned.
* ``get`` of an object that is not ready raises ObjectLostError (GetTimeoutError when a
  timeout was given) instead of waiting for ever: nothing runs in the background.
* A KeyboardInterrupt raised while a task runs is the user's Ctrl-C: it propagates instead
  of becoming the task's TaskCancelledError.
* Actor exits (``exit_actor``, ``__ray_terminate__``) do not run ``atexit`` handlers: they
  belong to the driver here.
"""

import asyncio
import concurrent.futures
import os
import socket
import threading
import time

from purerun import exceptions
from purerun.core import ids, protocol, serialization
from purerun.core.client import (_as_raisable, actor_not_found, merge_env_vars, split_ready)
from purerun.core.control_store import ControlStore
from purerun.core.execute import Executor
from purerun.core.node_state import (DISCONNECTED, DRIVER_CONNECTED, WORKER_STARTED,
                                     KillWorker, NodeState, Send, StartWorker)
from purerun.core.generators import END_PAYLOAD
from purerun.core.object_ref import ObjectRef
from purerun.core.protocol import ERROR, INLINE
from purerun.core.task_spec import (ACTOR_CREATION, ACTOR_METHOD, TaskSpec, creation_spec,
                                    extract_deps, item_id)

LOCAL_NODE_IP = "127.0.0.1"

# The token of this process's own connection to its NodeState.
DRIVER = "driver"

# Caps the scheduler applies to worker processes; here a worker costs nothing.
_UNBOUNDED_WORKERS = 1 << 30


class _NoArena:
    """The byte store of local mode: there is no arena, every value is inline."""

    capacity = used = largest_free = 0

    def allocate(self, size):
        return None


class _Running:
    """What get_runtime_context() sees in a thread while a task or actor call runs there."""

    __slots__ = ("spec", "actor")

    def __init__(self, spec, actor):
        self.spec = spec
        self.actor = actor     # NodeState's Actor record, for an actor's call or creation


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
        node_id = ids.random_id()
        self.state = NodeState(
            {"node_id": node_id, "resources": dict(node_resources), "node_ip": LOCAL_NODE_IP,
             "hostname": socket.gethostname()},
            _NoArena(), ControlStore(), max_workers=_UNBOUNDED_WORKERS,
            max_starting_workers=_UNBOUNDED_WORKERS, enforce_resources=False)
        self._lock = threading.RLock()
        self._functions = {}       # function key -> the function or class itself
        self._instances = {}       # actor id -> its instance, while it lives
        self._loops = {}           # actor id -> the private event loop of an async actor
        self._hosts = {}           # worker token -> the actor id it hosts
        self._tokens = {}          # worker id -> its token
        self._refs = {}            # object id -> ObjectRefs alive in this process
        self._dropped = []         # ids of ObjectRefs that died, not yet sent (_collect)
        self._replies = {}         # request id -> (ok, value)
        self._next_request = 0
        self._local = threading.local()
        self._closed = False
        self.executor = Executor(
            functions=lambda spec: self._functions[spec.function_key],
            read=lambda object_id, entry: serialization.deserialize(*entry[1]),
            store=lambda sv: (INLINE, serialization.to_inline(sv)),
            created=self._created, node_ip=LOCAL_NODE_IP, interrupt_cancels=False,
            await_init=lambda spec, init: self._loops[spec.actor_id].run_until_complete(init),
            yielded=self._yielded)
        self._feed(DRIVER, (DRIVER_CONNECTED, True))
        self.info = dict(self.state.welcome_info(DRIVER), resources=dict(node_resources))
        ids.set_node_number(self.state.node_number)
        if namespace is not None:
            self.request("set_namespace", namespace)

    # -- what the runtime context reads ------------------------------------------------------------

    def wait_welcome(self, timeout=30.0):
        """The node information (there is nothing to wait for in local mode)."""
        return self.info

    @property
    def job_id(self):
        return self.info["job_id"]

    def _running(self):
        return getattr(self._local, "running", None)

    def _running_actor(self):
        running = self._running()
        return running.actor if running is not None else None

    @property
    def current_task(self):
        """The TaskSpec of the task or actor call running in this thread, or None."""
        running = self._running()
        return running.spec if running is not None else None

    @property
    def actor_id(self):
        actor = self._running_actor()
        return actor.actor_id if actor is not None else None

    @property
    def actor_is_async(self):
        actor = self._running_actor()
        return bool(actor is not None and actor.creation.actor.is_async)

    @property
    def actor_resources(self):
        """What the running actor holds (get_runtime_context().get_assigned_resources())."""
        actor = self._running_actor()
        return dict(actor.creation.actor.hold or {}) if actor is not None else {}

    @property
    def actor_name(self):
        actor = self._running_actor()
        return actor.name if actor is not None else None

    @property
    def actor_restarted(self):
        actor = self._running_actor()
        return bool(actor is not None and actor.creation.attempt > 0)

    @property
    def actor_meta(self):
        """The running actor's class metadata (get_runtime_context().current_actor)."""
        actor = self._running_actor()
        return actor.meta if actor is not None else None

    # -- driving NodeState -------------------------------------------------------------------------

    def _feed(self, token, msg):
        with self._lock:
            self._carry_out(self.state.handle(token, msg))

    def _carry_out(self, actions):
        """Do what NodeState asks: workers exist at once, EXECUTE runs here and now."""
        for action in actions:
            kind = type(action)
            if kind is Send:
                msg = action.msg
                if msg[0] == protocol.EXECUTE:
                    self._execute(action.token, msg)
                elif msg[0] == protocol.REPLY:
                    self._replies[msg[1]] = (msg[2], msg[3])
                elif msg[0] == protocol.WARN:
                    import logging
                    logging.getLogger("purerun").warning(msg[1])
                # OBJECT: values are read from the object table; INTERRUPT, LOG: none here.
            elif kind is StartWorker:
                token = self._tokens[action.worker_id] = f"worker-{action.worker_id}"
                self._carry_out(self.state.handle(
                    token, (WORKER_STARTED, action.worker_id, os.getpid())))
            elif kind is KillWorker:
                token = self._tokens.pop(action.worker_id, None)
                if token is not None:
                    self._end_instance(self._hosts.pop(token, None))
                    self._carry_out(self.state.handle(token, (DISCONNECTED,)))
            # InterruptWorker: cancel does nothing here. Stop: the client's close() ends it.

    def _execute(self, token, msg):
        """Run one EXECUTE in this thread and report it, as a worker does."""
        _, spec, dep_payloads, _pickled, _gpu_ids = msg
        actor = None
        if spec.kind == ACTOR_CREATION:
            self._hosts[token] = spec.actor_id
        if spec.actor_id is not None:
            actor = self.state.actors.get(spec.actor_id)
        local = self._local
        previous = getattr(local, "running", None)
        local.running = _Running(spec, actor)
        previous_token, local.token = getattr(local, "token", None), token
        started = time.time()
        try:
            if spec.kind == ACTOR_METHOD:
                env_vars = actor.creation.env_vars if actor is not None else None
                instance = self._instances.get(spec.actor_id)
                loop = self._loops.get(spec.actor_id)
                if loop is not None:
                    results, retry, exiting = _run_on(loop, self.executor.run_async(
                        spec, dep_payloads, instance, env_vars=env_vars))
                else:
                    results, retry, exiting = self.executor.run(
                        spec, dep_payloads, instance=instance, env_vars=env_vars)
            else:
                results, retry, exiting = self.executor.run(spec, dep_payloads,
                                                            env_vars=spec.env_vars)
        finally:
            local.running = previous
            local.token = previous_token
        if token in self.state.peers:  # not if the actor was killed from inside this call
            self._carry_out(self.state.handle(token, (
                protocol.TASK_DONE, spec.task_id, results, retry, exiting,
                (started, time.time()))))

    # -- streaming generators: the call has run to its end before its generator exists ------

    def _yielded(self, spec, index, kind, payload, contained):
        """Report an item as a worker does (backpressure has nothing to pace here)."""
        self._carry_out(self.state.handle(self._local.token, (
            protocol.GENERATOR_ITEM, spec.task_id, spec.attempt, index, kind, payload,
            contained)))

    def open_stream(self, task_id):
        pass

    def _item_entry(self, gen):
        with self._lock:
            return self.state.objects.get(item_id(gen._task_id, gen._next))

    def stream_next(self, gen, timeout):
        """As ``Client.stream_next``; every item is stored already."""
        self._check_open()
        entry = None if gen._done else self._item_entry(gen)
        if entry is None or (entry.kind == INLINE and entry.payload == END_PAYLOAD):
            gen._done = True
            raise StopIteration
        object_id = item_id(gen._task_id, gen._next)
        gen._next += 1
        gen._done = entry.kind == ERROR
        return self.new_ref(object_id)

    def stream_future(self, gen):
        return None

    def stream_has_next(self, gen):
        return True

    def stream_at_end(self, gen):
        entry = self._item_entry(gen)
        return entry is None or (entry.kind == INLINE and entry.payload == END_PAYLOAD)

    def stream_waitable(self, gen):
        return gen._ref._id

    def close_stream(self, task_id, next_index):
        # From __del__, perhaps inside this module: applied by _collect, as drop_ref's are.
        if not self._closed:
            self._dropped.append((task_id, next_index))

    def _created(self, spec, instance):
        self._instances[spec.actor_id] = instance
        if spec.actor.is_async:
            self._loops[spec.actor_id] = asyncio.new_event_loop()

    def _end_instance(self, actor_id):
        """The actor's (virtual) process is gone: drop its instance and close its loop."""
        if actor_id is None:
            return
        self._instances.pop(actor_id, None)
        loop = self._loops.get(actor_id)
        if loop is not None and not loop.is_running():
            del self._loops[actor_id]
            _close_loop(loop)
        # A loop still running (the actor ended from inside its own call) closes with the
        # client.

    def request(self, op, *args, timeout=None):
        """Ask NodeState what the node answers (REQUEST/REPLY)."""
        self._check_open()
        with self._lock:
            self._next_request += 1
            request_id = self._next_request
            self._carry_out(self.state.handle(DRIVER, (protocol.REQUEST, request_id, op, args)))
            ok, value = self._replies.pop(request_id)
        if not ok:
            raise value
        return value

    # -- references --------------------------------------------------------------------------------

    def new_ref(self, object_id, subscribed=False):
        """A counted reference to an object NodeState already counts this process for."""
        with self._lock:
            self._refs[object_id] = self._refs.get(object_id, 0) + 1
        return ObjectRef(object_id, self)

    def borrow_ref(self, object_id):
        """A reference that was unpickled: this process holds the object from now on."""
        with self._lock:
            count = self._refs.get(object_id, 0)
            self._refs[object_id] = count + 1
            if count == 0 and not self._closed:
                self._carry_out(self.state.handle(DRIVER, (protocol.ADD_REFS, [object_id])))
        return ObjectRef(object_id, self)

    def drop_ref(self, object_id):
        """An ObjectRef died (from ``__del__``, in any thread, possibly inside this module)."""
        if not self._closed:
            self._dropped.append(object_id)  # applied by _collect; list.append is atomic

    def flush(self):
        """Apply the reference drops not applied yet."""
        self._collect()

    def _collect(self):
        dropped = self._dropped
        if not dropped:
            return
        with self._lock:
            gone = []
            while dropped:
                object_id = dropped.pop()
                if type(object_id) is tuple:   # a generator died: (task id, refs taken)
                    self._carry_out(self.state.handle(DRIVER, (protocol.STREAM_DROPPED,)
                                                      + object_id))
                    continue
                count = self._refs.get(object_id, 0) - 1
                if count > 0:
                    self._refs[object_id] = count
                else:
                    self._refs.pop(object_id, None)
                    gone.append(object_id)
            if gone:
                self._carry_out(self.state.handle(DRIVER, (protocol.DROP_REFS, gone)))

    def _check_open(self):
        if self._closed:
            raise exceptions.RaySystemError("purerun is not running in this process any more. "
                                            "Call purerun.init() again.")
        self._collect()

    # -- objects -----------------------------------------------------------------------------------

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
        self._feed(DRIVER, (protocol.PUT, object_id, INLINE, serialization.to_inline(sv),
                            sv.contained))
        return self.new_ref(object_id)

    def _entries(self, refs):
        objects = self.state.objects
        with self._lock:
            return [objects.get(ref._id) for ref in refs]

    def get_one(self, ref, timeout=None):
        return self.get((ref,), timeout)[0]

    def get(self, refs, timeout=None):
        """Values of ``refs`` (a list), in order; raises the first stored error met.

        Raises:
            RayTaskError (as an instance of the task's exception type), ActorDiedError, ...:
                the stored error of the first failed object.
            ObjectLostError / GetTimeoutError: an object that is not ready (nothing could
                ever produce it: there is nothing running in the background).
        """
        self._check_open()
        entries = self._entries(refs)
        values = []
        for ref, entry in zip(refs, entries):
            if entry is None or entry.kind is None:
                raise _missing(ref._id, timeout)
            if entry.kind == ERROR:
                raise _as_raisable(serialization.deserialize(entry.payload))
            values.append((entry.kind, entry.payload))
        return [serialization.deserialize(*payload) for _kind, payload in values]

    def wait_remainder(self, refs):
        """None: every list is checked anew (local mode has no hot wait loop to spare)."""
        return None

    def wait(self, refs, num_returns, timeout, remainder=None):
        """(ready, not_ready): the first ``num_returns`` ready ones, in the order given."""
        self._check_open()
        ready = {ref._id for ref, entry in zip(refs, self._entries(refs))
                 if entry is not None and entry.kind is not None}
        return split_ready(refs, ready, num_returns)

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
        self._feed(DRIVER, (protocol.FREE, [ref._id for ref in refs]))

    # -- tasks -------------------------------------------------------------------------------------

    def _inherited_env_vars(self):
        """runtime_env env_vars a call made now inherits: its caller's, else the job's."""
        running = self._running()
        if running is not None:
            source = running.actor.creation if running.actor is not None else running.spec
            if source.env_vars:
                return source.env_vars
        return self.job_env_vars

    def _submit(self, spec):
        refs = [self.new_ref(object_id) for object_id in spec.return_ids()]
        self._feed(DRIVER, (protocol.SUBMIT, spec))
        return refs

    def submit_task(self, remote_function, fields, args, kwargs):
        """Run a task now; return its return ObjectRefs (its values or its error are stored).

        Raises:
            TypeError: the function or an argument cannot be pickled (as on the real
                runtime, which must send them to a worker).
        """
        self._check_open()
        key, _pickled = remote_function._export()
        self._functions[key] = remote_function._function
        payload, deps, contained = _copy_arguments(args, kwargs)
        spec = TaskSpec(task_id=ids.new_task_id(), function_key=key, args=payload,
                        args_in_store=False, deps=deps, contained=contained,
                        job_id=self.job_id, **fields)
        inherited = self._inherited_env_vars()
        if inherited:
            spec.env_vars = merge_env_vars(inherited, spec.env_vars)
        return self._submit(spec)

    # -- actors ------------------------------------------------------------------------------------

    def create_actor(self, actor_class, actor, resources, env_vars, get_if_exists, args,
                     kwargs):
        """Create an actor: run its ``__init__`` now. Takes and returns what
        ``Client.create_actor`` does; an error in ``__init__`` is raised by its calls.

        Raises:
            ValueError: the name is taken in the namespace (and get_if_exists is False).
            TypeError: the class or an argument cannot be pickled.
        """
        self._check_open()
        key, _pickled = actor_class._export()
        self._functions[key] = actor_class._cls
        actor_id = ids.new_task_id()
        if actor.name is not None:
            existing = self.request("register_actor", actor.name, actor.namespace,
                                    self.job_id, actor_id, actor.meta, get_if_exists)
            if existing is not None:
                existing_id, existing_meta = existing
                return existing_id, existing_meta, self.new_ref(ids.object_id(existing_id, 0))
        payload, deps, contained = _copy_arguments(args, kwargs)
        inherited = self._inherited_env_vars()
        if inherited:
            env_vars = merge_env_vars(inherited, env_vars)
        spec = creation_spec(actor_id, key, actor, resources, env_vars, self.job_id,
                             args=payload, args_in_store=False, deps=deps,
                             contained=contained)
        [actor_ref] = self._submit(spec)
        return actor_id, actor.meta, actor_ref

    def submit_actor_method(self, handle, method, fields, args, kwargs):
        """Call an actor's method now; return its return ObjectRefs. Takes what
        ``Client.submit_actor_method`` takes.

        Raises:
            TypeError: an argument cannot be pickled.
        """
        self._check_open()
        payload, deps, contained = _copy_arguments(args, kwargs)
        spec = TaskSpec(task_id=ids.new_task_id(), name=f"{handle._meta.class_name}.{method}",
                        function_key=None, args=payload, args_in_store=False, deps=deps,
                        contained=contained, kind=ACTOR_METHOD, actor_id=handle._actor_id,
                        method=method, job_id=self.job_id, **fields)
        return self._submit(spec)

    def kill_actor(self, handle, no_restart):
        """Kill the actor at once; with no_restart=False it is restarted if it has restarts
        left (its ``__init__`` runs again)."""
        self.request("kill_actor", handle._actor_id, no_restart)

    def get_actor(self, name, namespace):
        """Look up the live actor named ``name`` in ``namespace`` (None: this job's).

        Returns:
            ``(actor_id, meta, actor_ref)``, as ``Client.get_actor`` does.

        Raises:
            ValueError: there is no such actor (or it is dead).
        """
        found = self.request("get_actor", name, namespace, self.job_id)
        if found is None:
            raise actor_not_found(name, namespace)
        actor_id, meta = found
        return actor_id, meta, self.new_ref(ids.object_id(actor_id, 0))

    def list_named_actors(self, all_namespaces):
        """As ``Client.list_named_actors``."""
        return self.request("list_named_actors", bool(all_namespaces), self.namespace,
                            self.job_id)

    # -- shutdown ----------------------------------------------------------------------------------

    def close(self):
        """Forget every object and actor; later calls on this client raise RaySystemError."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._instances.clear()
            self._refs.clear()
            self._dropped.clear()
            loops, self._loops = list(self._loops.values()), {}
        for loop in loops:
            if not loop.is_running():
                _close_loop(loop)


def _copy_arguments(args, kwargs):
    """Pickle a call's arguments as Client.prepare_args does; top-level ObjectRefs become
    dependencies. Pickling here is what makes the call a copy, as a real task's is.

    Returns:
        (INLINE payload or None, dependency ids, ids of refs nested in the arguments)

    Raises:
        TypeError: an argument cannot be pickled (the message names it).
    """
    if not args and not kwargs:
        return None, [], []
    args, kwargs, deps = extract_deps(args, kwargs)
    sv = serialization.serialize((args, kwargs))
    return serialization.to_inline(sv), deps, sv.contained


def _missing(object_id, timeout):
    if timeout is not None:
        return exceptions.GetTimeoutError(
            f"Get timed out: some object(s) not ready after {timeout} s.")
    return exceptions.ObjectLostError(object_id.hex())


def _run_on(loop, coro):
    """Run ``coro`` to completion on an actor's ``loop``, even if this thread is inside a
    running event loop (a driver using asyncio, or an async actor calling another one, or
    itself: then the call gets a loop of its own, its actor's being busy further up)."""
    if loop.is_running():
        own = asyncio.new_event_loop()
        try:
            return _run_coroutine(own, coro)
        finally:
            _close_loop(own)
    return _run_coroutine(loop, coro)


def _run_coroutine(loop, coro):
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
