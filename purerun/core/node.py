"""The node process: one per host. Owns the scheduler, the worker pool and the object store.

::

    drivers ──unix socket──┐                          ┌── worker 1 (forked, socketpair)
    (socketpair for the    │   selector loop (one     ├── worker 2
     driver that started   ├─▶ thread): read frames,  ├── ...
     the node; the         │   handle messages, feed  │
     listening socket for  │   the Scheduler, carry   │   worker stdout/stderr pipes
     others)               │   out its actions,       └── relayed to drivers as LOG
                           │   flush output buffers
                           └── ObjectStore (table + arena memfd)

Everything here runs on one thread, which is why workers can be forked from this process:
there is no other thread whose locks a child could inherit half-held. Nothing may start a
thread in the node.

Writes never block: each connection has an output buffer flushed when the socket is
writable, so one slow reader cannot stall the node (and through it everyone else).

The node lives as long as the driver that started it (``owner``): when that connection
closes — a normal shutdown or a killed driver — the node kills its workers and exits. Workers
die with it (their socket closes, and PR_SET_PDEATHSIG). The arena is a memfd, so no
shared-memory name can outlive the processes.
"""

import collections
import gc
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import time

from purerun import exceptions
from purerun.core import protocol, serialization
from purerun.core import scheduler as sched
from purerun.core.object_store import ObjectStore, error_payload
from purerun.core.object_store import STORED_ON_DISK
from purerun.core.protocol import ARENA, ERROR, STORED
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD
from purerun.core.timeline import TIMELINE_MAX_EVENTS, chrome_trace
# Imported here, before any fork, so that workers start with it loaded.
from purerun.core.worker import run_worker

logger = logging.getLogger("purerun.node")

# Upper bound on task workers: a safety cap against runaway pools (blocked workers lend their
# CPU, so deep recursion can need many), not a tuning knob.
MAX_WORKERS_PER_CPU = 8
MIN_MAX_WORKERS = 32
# Workers kept warm from the start, so the first tasks do not wait for a fork.
PRESTART_WORKERS_MAX = 4
# How long shutdown waits for killed workers to be reaped.
REAP_TIMEOUT = 5.0


class Conn:
    """One peer connection (a driver or a worker) and what it holds in the object store."""

    __slots__ = ("sock", "fd", "reader", "out", "kind", "refs", "pins", "reservations",
                 "worker", "job_id", "log_to_driver", "closed", "writing")

    def __init__(self, sock, kind):
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = protocol.FrameReader()
        self.out = []              # pending frames (bytes), flushed at the end of each loop turn
        self.kind = kind           # "driver" or "worker"
        self.refs = set()          # object ids this process holds ObjectRefs to
        self.pins = {}             # object id -> arena locations handed to this process, unread
        self.reservations = set()  # arena offsets allocated but not yet sealed
        self.worker = None
        self.job_id = None
        self.log_to_driver = True
        self.closed = False
        self.writing = False       # registered for EVENT_WRITE

    def send(self, msg):
        if not self.closed:
            self.out.append(protocol.encode(msg))


class WorkerProc:
    __slots__ = ("worker_id", "pid", "conn", "pipes", "functions", "task", "actor_id",
                 "retiring", "death_handled")

    def __init__(self, worker_id, pid, conn, pipes):
        self.worker_id = worker_id
        self.pid = pid
        self.conn = conn
        self.pipes = pipes          # {fd: stream number}
        self.functions = set()      # function keys this worker has received
        self.task = None            # the Task running here
        self.actor_id = None
        self.retiring = False
        self.death_handled = False  # its actor already reacted to this worker's end (kill)


class Task:
    __slots__ = ("spec", "owner", "worker", "retries_left", "cancelled", "force_cancelled",
                 "children")

    def __init__(self, spec, owner):
        self.spec = spec
        self.owner = owner
        self.worker = None
        self.retries_left = spec.max_retries
        self.cancelled = False
        self.force_cancelled = False
        self.children = None        # ids of tasks this one submitted (for recursive cancel)


class Actor:
    """An actor's life on this node: where it runs and the calls waiting for it.

    States: PENDING (creation queued or running), ALIVE, RESTARTING, DEAD.
    invariant: calls are sent to the worker in the order they were submitted; ``queue`` holds
    those not sent yet, ``inflight`` (insertion-ordered) those sent and not finished.
    """

    __slots__ = ("actor_id", "creation", "owner", "worker", "state", "queue", "inflight",
                 "restarts_left", "max_task_retries", "cause", "name", "namespace",
                 "detached", "terminating", "node_hold", "meta")

    def __init__(self, creation, owner):
        actor = creation.actor
        self.actor_id = creation.actor_id
        self.creation = creation
        self.owner = owner
        self.worker = None
        self.state = "PENDING"
        self.queue = collections.deque()
        self.inflight = {}
        self.restarts_left = actor.max_restarts
        self.max_task_retries = actor.max_task_retries
        self.cause = None
        self.name = actor.name
        self.namespace = None
        self.detached = actor.detached
        self.terminating = False
        self.node_hold = False       # the node itself holds the actor object (named/detached)
        self.meta = None


class Node:
    def __init__(self, config):
        self.config = config
        self.session_dir = config["session_dir"]
        self.node_id = config["node_id"]
        self.node_ip = config.get("node_ip", "127.0.0.1")
        self.resources = config["resources"]
        self.selector = selectors.DefaultSelector()
        self.conns = {}             # fd -> Conn
        self.pipes = {}             # fd -> (WorkerProc, stream, partial line)
        self.workers = {}           # worker id -> WorkerProc
        self.tasks = {}             # task id -> Task (submitted, not finished)
        self.functions = {}         # function key -> pickled function
        self.kv = {}
        self.actors = {}            # actor id -> Actor
        self.named_actors = {}      # (namespace, name) -> actor id
        self.pending_names = {}     # actor id -> (namespace, name, meta) registered, not submitted
        self.job_namespaces = {}    # job id -> namespace
        self.actor_waits = {}       # object id -> actors whose next call waits for it
        self.timeline = collections.deque(maxlen=TIMELINE_MAX_EVENTS)  # finished task spans
        self.next_worker_id = 1
        self.next_job_id = 1
        self.to_reap = []           # pids of exited or killed workers not yet waited for
        self.dirty = set()          # conns with output to flush
        self.running = True
        self.owner = None
        self.started_at = time.time()

        self.store = ObjectStore(config["object_store_memory"],
                                 spill_dir=os.path.join(self.session_dir, "spill"))
        self.store.on_delete = self.actor_object_deleted
        cpus = self.resources.get("CPU", 1)
        gpu_ids = tuple(config.get("gpu_ids") or range(int(self.resources.get("GPU", 0))))
        self.scheduler = sched.Scheduler(
            self.resources, gpu_ids,
            max_workers=max(MIN_MAX_WORKERS, int(MAX_WORKERS_PER_CPU * max(cpus, 1))),
            max_starting_workers=max(1, int(cpus)))
        self.prestart = min(PRESTART_WORKERS_MAX, max(1, int(cpus)))

        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.address = os.path.join(self.session_dir, "node.sock")
        self.listener.bind(self.address)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))

        self.handlers = {
            protocol.SUBMIT: self.on_submit,
            protocol.EXPORT: self.on_export,
            protocol.PUT: self.on_put,
            protocol.SUBSCRIBE: self.on_subscribe,
            protocol.ADD_REFS: self.on_add_refs,
            protocol.DROP_REFS: self.on_drop_refs,
            protocol.UNPIN: self.on_unpin,
            protocol.BLOCKED: self.on_blocked,
            protocol.UNBLOCKED: self.on_unblocked,
            protocol.TASK_DONE: self.on_task_done,
            protocol.REQUEST: self.on_request,
            protocol.CANCEL: self.on_cancel,
            protocol.FREE: self.on_free,
        }

    # -- connections -------------------------------------------------------------------------------

    def add_driver(self, sock, owner=False):
        sock.setblocking(False)
        conn = Conn(sock, "driver")
        conn.job_id = self.next_job_id
        self.next_job_id += 1
        self.conns[conn.fd] = conn
        self.selector.register(sock, selectors.EVENT_READ, ("conn", conn))
        if owner:
            self.owner = conn
        info = self.welcome_info(conn)
        # The WELCOME carries the arena descriptor; it is sent before anything else.
        sock.setblocking(True)
        protocol.send_with_fds(sock, (protocol.WELCOME, info), [self.store.arena.fd])
        sock.setblocking(False)
        return conn

    def welcome_info(self, conn):
        return {"node_id": self.node_id, "job_id": (conn.job_id if conn else 0).to_bytes(4, "little"),
                "session_dir": self.session_dir, "arena_size": self.store.arena.size,
                "address": self.address, "node_ip": self.node_ip,
                "resources": dict(self.resources)}

    def accept(self):
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        self.add_driver(sock)

    def close_conn(self, conn):
        if conn.closed:
            return
        conn.closed = True
        self.dirty.discard(conn)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        del self.conns[conn.fd]
        conn.sock.close()
        store = self.store
        for object_id, count in conn.pins.items():
            for _ in range(count):
                store.unpin(object_id)
        for offset in conn.reservations:
            store.release_block(offset)
        for object_id in conn.refs:
            store.release(object_id)
        conn.refs = conn.pins = conn.reservations = ()
        if conn.worker is not None:
            self.worker_exited(conn.worker)
        elif conn is self.owner:
            self.running = False
        # Named (not detached) actors live as long as the process that made them.
        for actor in list(self.actors.values()):
            if actor.owner is conn and actor.node_hold and not actor.detached:
                actor.node_hold = False
                self.store.release(actor.creation.return_ids()[0])

    # -- the loop ----------------------------------------------------------------------------------

    def serve(self):
        for _ in range(self.prestart if self.running else 0):
            self.run_actions(self.start_worker())  # warm workers: the first tasks need no fork
        select = self.selector.select
        while self.running:
            timeout = 0.05 if self.to_reap else None
            for key, events in select(timeout):
                what, obj = key.data
                if what == "conn":
                    if events & selectors.EVENT_READ:
                        self.read(obj)
                    if events & selectors.EVENT_WRITE and not obj.closed:
                        self.write(obj)
                elif what == "pipe":
                    self.read_pipe(key.fd)
                elif what == "accept":
                    self.accept()
            if self.dirty:
                for conn in list(self.dirty):
                    self.write(conn)
            if self.to_reap:
                self.reap()

    def read(self, conn):
        try:
            data = conn.sock.recv(protocol.RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close_conn(conn)
            return
        handlers = self.handlers
        for msg in conn.reader.feed(data):
            try:
                handlers[msg[0]](conn, msg)
            except Exception:
                logger.exception("error handling message %r from a %s", msg[0], conn.kind)
            if conn.closed:
                return

    def write(self, conn):
        if conn.closed:
            return
        if conn.out:
            data = b"".join(conn.out) if len(conn.out) > 1 else conn.out[0]
            conn.out = []
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close_conn(conn)
                return
            if sent < len(data):
                conn.out.append(data[sent:])
        if conn.out:
            if not conn.writing:
                conn.writing = True
                self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                     ("conn", conn))
            self.dirty.discard(conn)
        else:
            self.dirty.discard(conn)
            if conn.writing:
                conn.writing = False
                self.selector.modify(conn.sock, selectors.EVENT_READ, ("conn", conn))

    def send(self, conn, msg):
        if not conn.closed:
            conn.out.append(protocol.encode(msg))
            self.dirty.add(conn)

    # -- scheduler actions -------------------------------------------------------------------------

    def run_actions(self, actions):
        # Actions can produce events (a started worker) that produce more actions.
        while actions:
            more = []
            for action in actions:
                kind = type(action)
                if kind is sched.Dispatch:
                    more += self.dispatch(action)
                elif kind is sched.StartWorker:
                    more += self.start_worker()
                elif kind is sched.TaskLost:
                    more += self.task_lost(action.task_id)
                elif kind is sched.TaskCancelled:
                    task = self.tasks.get(action.task_id)
                    if task is not None:
                        self.fail_task(task, exceptions.TaskCancelledError(
                            action.task_id.hex()))
                elif kind is sched.Infeasible:
                    self.report_infeasible(action.task_id, action.resources)
            actions = more

    def dispatch(self, action):
        task = self.tasks.get(action.task_id)
        worker = self.workers[action.worker_id]
        if task is None:  # finished elsewhere (cancelled): give the worker back
            return self.scheduler.handle(sched.TaskFinished(worker.worker_id))
        return self.execute(task, worker, action.gpu_ids)

    def execute(self, task, worker, gpu_ids):
        """Send ``task`` to ``worker`` with its arguments' values (and the function, once)."""
        spec = task.spec
        entries = self.store.entries
        dep_payloads = []
        conn = worker.conn
        for object_id in spec.deps:
            entry = entries.get(object_id)
            if entry is None or entry.kind is None:
                payload = error_payload(exceptions.ObjectLostError(object_id.hex()))
                dep_payloads.append((ERROR, payload))
            else:
                try:
                    dep_payloads.append(self.hand_out(conn, object_id, entry))
                except exceptions.ObjectStoreFullError as exc:  # could not restore it
                    dep_payloads.append((ERROR, error_payload(exc)))
        key = spec.function_key
        pickled = None
        if key is not None and key not in worker.functions:
            pickled = self.functions.get(key)
            worker.functions.add(key)
        task.worker = worker
        if spec.kind == ACTOR_CREATION:
            worker.actor_id = spec.actor_id
            worker.task = task
            gpu_ids = tuple(gpu_ids)
            self.actors[spec.actor_id].worker = worker
        elif spec.kind != ACTOR_METHOD:
            worker.task = task
        self.send(worker.conn, (protocol.EXECUTE, spec, dep_payloads, pickled, gpu_ids))
        return ()

    def start_worker(self):
        worker_id = self.next_worker_id
        self.next_worker_id += 1
        parent, child = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        info = dict(self.welcome_info(None), worker_id=worker_id)
        sys.stdout.flush()
        sys.stderr.flush()
        # Objects that exist now never change in the child: keep the collector off their pages.
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the child: becomes a worker and never returns
            arena_fd = os.dup(self.store.arena.fd)
            run_worker(child, arena_fd, info, out_w, err_w,
                       keep_fds=(child.fileno(), arena_fd, out_w, err_w))
        gc.unfreeze()
        child.close()
        os.close(out_w)
        os.close(err_w)
        parent.setblocking(False)
        conn = Conn(parent, "worker")
        worker = WorkerProc(worker_id, pid, conn, {out_r: 1, err_r: 2})
        conn.worker = worker
        self.workers[worker_id] = worker
        self.conns[conn.fd] = conn
        self.selector.register(parent, selectors.EVENT_READ, ("conn", conn))
        for fd, stream in ((out_r, 1), (err_r, 2)):
            os.set_blocking(fd, False)
            self.pipes[fd] = [worker, stream, b""]
            self.selector.register(fd, selectors.EVENT_READ, ("pipe", None))
        return self.scheduler.handle(sched.WorkerStarted(worker_id))

    def worker_exited(self, worker):
        """The worker's connection closed: it exited, crashed or was killed."""
        self.workers.pop(worker.worker_id, None)
        self.to_reap.append(worker.pid)
        actor = self.actors.get(worker.actor_id) if worker.actor_id is not None else None
        actions = self.scheduler.handle(sched.WorkerDied(worker.worker_id))
        if worker.death_handled:
            actions = [a for a in actions if type(a) is not sched.TaskLost]
        elif actor is not None and actor.state in ("ALIVE", "DEAD"):
            # A creation still running shows up as TaskLost below instead.
            actions = [a for a in actions if type(a) is not sched.TaskLost]
            self.actor_worker_lost(actor)
        self.run_actions(actions)

    def task_lost(self, task_id):
        """The worker running ``task_id`` died: retry it, or fail it."""
        task = self.tasks.get(task_id)
        if task is None:
            return ()
        task.worker = None
        if task.spec.kind == ACTOR_CREATION:
            del self.tasks[task_id]
            actor = self.actors.get(task.spec.actor_id)
            if actor is not None:
                self.actor_worker_lost(actor)
            return ()
        if task.cancelled:
            error = (exceptions.WorkerCrashedError("The task was cancelled with force=True; "
                                                   "its worker was killed.")
                     if task.force_cancelled else
                     exceptions.TaskCancelledError(task_id.hex()))
            self.fail_task(task, error)
            return ()
        if task.retries_left != 0:
            task.retries_left -= 1
            task.spec.attempt += 1
            return self.resubmit(task)
        self.fail_task(task, exceptions.WorkerCrashedError(
            f"The worker running task {task.spec.name} died unexpectedly (killed, crashed, or "
            f"out of memory); it was tried {task.spec.attempt + 1} time(s) "
            f"(max_retries={task.spec.max_retries})."))
        return ()

    def resubmit(self, task):
        spec = task.spec
        entries = self.store.entries
        missing = {d for d in spec.deps if entries.get(d) is None or entries[d].kind is None}
        return self.scheduler.handle(sched.SubmitTask(spec.task_id, spec.resources, missing))

    def report_infeasible(self, task_id, resources):
        task = self.tasks.get(task_id)
        if task is None:
            return
        demand = ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items()))
        have = ", ".join(f"{k}: {v:g}" for k, v in sorted(self.resources.items()))
        self.send(task.owner, (protocol.WARN,
                               f"Task {task.spec.name} cannot be scheduled: it asks for "
                               f"{{{demand}}} but no node has that much (this node: {{{have}}}). "
                               "It stays pending until such a node joins the cluster."))

    # -- results -----------------------------------------------------------------------------------

    def seal(self, object_id, kind, payload, contained, holder=None):
        """Store a value and tell whoever waits for it."""
        store = self.store
        entry = store.seal(object_id, kind, payload, contained)
        subscribers = entry.subscribers
        if subscribers:
            entry.subscribers = None
            msg = (protocol.OBJECT, object_id) + self.announced(entry)
            for conn in subscribers:
                self.send(conn, msg)
        self.run_actions(self.scheduler.handle(sched.ObjectReady(object_id)))
        waiting = self.actor_waits.pop(object_id, None)
        if waiting:
            for actor_id in waiting:
                actor = self.actors.get(actor_id)
                if actor is not None:
                    self.pump(actor)
        store.after_seal(object_id, entry)

    def fail_task(self, task, error):
        payload = error_payload(error)
        self.finish_task(task, [(oid, ERROR, payload, ()) for oid in task.spec.return_ids()])

    def finish_task(self, task, results):
        spec = task.spec
        del self.tasks[spec.task_id]
        owner = task.owner
        for object_id, kind, payload, contained in results:
            if kind == ARENA and task.worker is not None:
                task.worker.conn.reservations.discard(payload[0])
            entry = self.store.get(object_id)
            if entry is not None and object_id in owner.refs and not owner.closed:
                # The owner always hears about its results; no SUBSCRIBE needed.
                if entry.subscribers is None:
                    entry.subscribers = set()
                entry.subscribers.add(owner)
            self.seal(object_id, kind, payload, contained)
        if spec.kind == ACTOR_CREATION:
            return  # an actor keeps its creation arguments: a restart needs them again
        store = self.store
        for object_id in spec.deps:
            store.release(object_id)
        for object_id in spec.contained:
            store.release(object_id)

    # -- message handlers --------------------------------------------------------------------------

    def on_submit(self, conn, msg):
        spec = msg[1]
        task = Task(spec, conn)
        self.tasks[spec.task_id] = task
        parent = conn.worker.task if conn.worker is not None else None
        if parent is not None and parent.spec.kind != ACTOR_CREATION:
            if parent.children is None:
                parent.children = []
            parent.children.append(spec.task_id)
        store = self.store
        refs = conn.refs
        for object_id in spec.return_ids():
            store.expect(object_id).holds += 1
            refs.add(object_id)
        missing = set()
        for object_id in spec.deps:
            if not store.hold(object_id):
                # Unknown: freed, or never existed here. The task fails with ObjectLostError.
                self.seal(object_id, ERROR, error_payload(exceptions.ObjectLostError(
                    object_id.hex())), ())
                store.hold(object_id)
            elif store.entries[object_id].kind is None:
                missing.add(object_id)
        for object_id in spec.contained:
            store.hold(object_id)
        if spec.kind == ACTOR_METHOD:
            self.submit_actor_call(task)
        elif spec.kind == ACTOR_CREATION:
            self.create_actor(task, missing)
        else:
            self.run_actions(self.scheduler.handle(
                sched.SubmitTask(spec.task_id, spec.resources, missing)))

    # -- actors ------------------------------------------------------------------------------------

    def create_actor(self, task, missing):
        spec = task.spec
        actor = Actor(spec, task.owner)
        self.actors[actor.actor_id] = actor
        actor_object = spec.return_ids()[0]
        self.store.watched.add(actor_object)
        registered = self.pending_names.pop(actor.actor_id, None)
        if registered is not None:
            actor.namespace, _, actor.meta = registered
        if actor.name is not None or actor.detached:
            # Named and detached actors do not end with their handles.
            self.store.hold(actor_object)
            actor.node_hold = True
        self.run_actions(self.scheduler.handle(sched.SubmitTask(
            spec.task_id, spec.resources, missing, dedicated=True, hold=spec.actor.hold)))

    def submit_actor_call(self, task):
        spec = task.spec
        actor = self.actors.get(spec.actor_id)
        if actor is None or actor.state == "DEAD":
            self.fail_task(task, self.actor_died_error(actor, spec.actor_id))
            return
        if spec.method == "__ray_terminate__":
            spec.max_retries = 0
        elif spec.max_retries is None:
            spec.max_retries = actor.max_task_retries
        task.retries_left = spec.max_retries
        actor.queue.append(task)
        self.pump(actor)

    def pump(self, actor):
        """Send the actor its next calls, in order, as far as their arguments are ready."""
        if actor.state != "ALIVE":
            return
        queue = actor.queue
        entries = self.store.entries
        while queue:
            task = queue[0]
            for object_id in task.spec.deps:
                entry = entries.get(object_id)
                if entry is not None and entry.kind is None:
                    self.actor_waits.setdefault(object_id, set()).add(actor.actor_id)
                    return
            queue.popleft()
            actor.inflight[task.spec.task_id] = task
            self.execute(task, actor.worker, ())

    def actor_died_error(self, actor, actor_id):
        if actor is not None and actor.cause is not None:
            return actor.cause
        return exceptions.ActorDiedError(
            {"actor_id": actor_id.hex(),
             "class_name": actor.creation.actor.class_name if actor else None,
             "error_message": "The actor is dead: it was killed, exited, or its process "
                              "died and it has no restarts left."})

    def actor_started(self, actor, worker, results):
        """The creation task returned: the actor is alive, or failed in __init__."""
        kind = results[0][1] if results else None
        if kind == ERROR:
            cause = serialization.deserialize(results[0][2])
            actor.cause = exceptions.ActorDiedError(cause if isinstance(
                cause, exceptions.RayTaskError) else None)
            self.actor_dead(actor)
            return
        actor.state = "ALIVE"
        actor.worker = worker
        if actor.terminating and not actor.queue:
            self.actor_dead(actor)  # every handle went before it even started
            return
        self.pump(actor)  # calls queued meanwhile still run; the last one ends the actor

    def actor_worker_lost(self, actor):
        """The actor's process died (crash, kill -9, or kill(no_restart=False))."""
        inflight = list(actor.inflight.values())
        actor.inflight.clear()
        actor.worker = None
        if actor.state == "DEAD":
            return
        if actor.terminating or actor.restarts_left == 0:
            for task in inflight:
                self.fail_task(task, self.actor_died_error(actor, actor.actor_id))
            self.actor_dead(actor)
            return
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
        actor.state = "RESTARTING"
        retry = []
        for task in inflight:
            if task.retries_left != 0:
                task.retries_left -= 1
                task.spec.attempt += 1
                task.worker = None
                retry.append(task)
            else:
                self.fail_task(task, self.actor_died_error(actor, actor.actor_id))
        actor.queue.extendleft(reversed(retry))
        creation = actor.creation
        self.tasks[creation.task_id] = Task(creation, actor.owner)
        entries = self.store.entries
        missing = {d for d in creation.deps if entries.get(d) is None or entries[d].kind is None}
        self.run_actions(self.scheduler.handle(sched.SubmitTask(
            creation.task_id, creation.resources, missing, dedicated=True,
            hold=creation.actor.hold)))

    def actor_dead(self, actor):
        """The actor is gone for good: fail what waits for it, free what it held."""
        if actor.state == "DEAD":
            return
        actor.state = "DEAD"
        error = self.actor_died_error(actor, actor.actor_id)
        while actor.queue:
            self.fail_task(actor.queue.popleft(), error)
        for task in list(actor.inflight.values()):
            self.fail_task(task, error)
        actor.inflight.clear()
        if actor.name is not None and actor.namespace is not None:
            key = (actor.namespace, actor.name)
            if self.named_actors.get(key) == actor.actor_id:
                del self.named_actors[key]
        worker = actor.worker
        actor.worker = None
        if worker is not None and worker.worker_id in self.workers:
            self.run_actions(self.scheduler.handle(sched.WorkerReleased(worker.worker_id)))
            worker.actor_id = None
            self.kill_worker(worker)
        store = self.store
        for object_id in actor.creation.deps:
            store.release(object_id)
        for object_id in actor.creation.contained:
            store.release(object_id)
        if actor.node_hold:
            actor.node_hold = False
            store.release(actor.creation.return_ids()[0])
        # The entry stays (state DEAD) so later calls fail with the right error; it goes
        # when the actor object does.

    def actor_object_deleted(self, object_id):
        """No handle to the actor is left anywhere: stop it once its queued calls are done."""
        actor = self.actors.get(object_id[:-4])
        if actor is None:
            return
        if actor.state == "DEAD":
            del self.actors[actor.actor_id]
            return
        actor.terminating = True
        if actor.state == "ALIVE" and not actor.queue and not actor.inflight:
            self.actor_dead(actor)
            del self.actors[actor.actor_id]

    def kill_worker(self, worker):
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def on_export(self, conn, msg):
        self.functions[msg[1]] = msg[2]

    def on_put(self, conn, msg):
        _, object_id, kind, payload, contained = msg
        if kind == ARENA:
            conn.reservations.discard(payload[0])
        self.store.expect(object_id).holds += 1
        conn.refs.add(object_id)
        self.seal(object_id, kind, payload, contained)

    def on_subscribe(self, conn, msg):
        entries = self.store.entries
        for object_id in msg[1]:
            entry = entries.get(object_id)
            if entry is None:
                self.send(conn, (protocol.OBJECT, object_id, ERROR, error_payload(
                    exceptions.ObjectLostError(object_id.hex()))))
            elif entry.kind is not None:
                self.send(conn, (protocol.OBJECT, object_id) + self.announced(entry))
            else:
                if entry.subscribers is None:
                    entry.subscribers = set()
                entry.subscribers.add(conn)

    @staticmethod
    def announced(entry):
        """How a ready value is announced: small ones whole, stored ones as STORED."""
        if entry.kind in (ARENA, STORED_ON_DISK):
            return (STORED, None)
        return (entry.kind, entry.payload)

    def on_add_refs(self, conn, msg):
        refs = conn.refs
        hold = self.store.hold
        for object_id in msg[1]:
            if object_id not in refs and hold(object_id):
                refs.add(object_id)

    def on_drop_refs(self, conn, msg):
        refs = conn.refs
        release = self.store.release
        for object_id in msg[1]:
            if object_id in refs:
                refs.discard(object_id)
                release(object_id)

    def on_unpin(self, conn, msg):
        pins = conn.pins
        for object_id in msg[1]:
            count = pins.get(object_id, 0)
            if count:
                if count == 1:
                    del pins[object_id]
                else:
                    pins[object_id] = count - 1
                self.store.unpin(object_id)

    def hand_out(self, conn, object_id, entry):
        """The payload to give ``conn`` for reading: an arena location comes with a pin."""
        kind = entry.kind
        if kind == STORED_ON_DISK:
            self.store.restore(object_id, entry)
            kind = entry.kind
        if kind == ARENA:
            conn.pins[object_id] = conn.pins.get(object_id, 0) + 1
            self.store.pin(object_id)
        return kind, entry.payload

    def request_locate(self, conn, object_ids):
        entries = self.store.entries
        located = []
        for object_id in object_ids:
            entry = entries.get(object_id)
            if entry is None or entry.kind is None:
                located.append((ERROR, error_payload(exceptions.ObjectLostError(
                    object_id.hex()))))
            else:
                try:
                    located.append(self.hand_out(conn, object_id, entry))
                except exceptions.ObjectStoreFullError as exc:
                    located.append((ERROR, error_payload(exc)))
        return located

    def on_blocked(self, conn, msg):
        self.run_actions(self.scheduler.handle(sched.WorkerBlocked(conn.worker.worker_id)))

    def on_unblocked(self, conn, msg):
        self.run_actions(self.scheduler.handle(sched.WorkerUnblocked(conn.worker.worker_id)))

    def on_task_done(self, conn, msg):
        _, task_id, results, retry, exiting, span = msg
        worker = conn.worker
        task = self.tasks.get(task_id)
        if task is not None:
            self.timeline.append((task.spec.name, worker.pid, span, task_id))
        if worker.actor_id is not None:
            self.actor_task_done(worker, task_id, task, results, retry, exiting)
            return
        worker.task = None
        if exiting:
            worker.retiring = True
            self.run_actions(self.scheduler.handle(sched.WorkerRetiring(worker.worker_id)))
        if task is not None:
            if retry and task.retries_left != 0 and not task.cancelled:
                for _oid, kind, payload, _c in results:
                    if kind == ARENA:
                        conn.reservations.discard(payload[0])
                        self.store.release_block(payload[0])
                task.retries_left -= 1
                task.spec.attempt += 1
                task.worker = None
                self.run_actions(self.scheduler.handle(sched.TaskFinished(worker.worker_id)))
                self.run_actions(self.resubmit(task))
                return
            self.finish_task(task, results)
        self.run_actions(self.scheduler.handle(sched.TaskFinished(worker.worker_id)))

    def actor_task_done(self, worker, task_id, task, results, retry, exiting):
        actor = self.actors.get(worker.actor_id)
        if task is not None and task.spec.kind == ACTOR_CREATION:
            worker.task = None
            self.finish_task(task, results)
            self.run_actions(self.scheduler.handle(sched.TaskFinished(worker.worker_id)))
            if actor is not None:
                self.actor_started(actor, worker, results)
            return
        if actor is None:
            if task is not None:
                self.finish_task(task, results)
            return
        actor.inflight.pop(task_id, None)
        if task is not None:
            if exiting:
                # exit_actor() or __ray_terminate__: this call ends the actor.
                actor.terminating = True
                if task.spec.method == "__ray_terminate__":
                    self.finish_task(task, results)
                else:
                    self.fail_task(task, exceptions.ActorDiedError(
                        {"actor_id": actor.actor_id.hex(),
                         "class_name": actor.creation.actor.class_name,
                         "error_message": "The actor exited via exit_actor()."}))
            elif retry and task.retries_left != 0:
                for _oid, kind, payload, _c in results:
                    if kind == ARENA:
                        worker.conn.reservations.discard(payload[0])
                        self.store.release_block(payload[0])
                task.retries_left -= 1
                task.spec.attempt += 1
                actor.queue.appendleft(task)
            else:
                self.finish_task(task, results)
        if exiting:
            actor.restarts_left = 0
            self.actor_dead(actor)
        elif actor.terminating and not actor.queue and not actor.inflight:
            self.actor_dead(actor)
        else:
            self.pump(actor)

    def on_cancel(self, conn, msg):
        _, object_id, force, recursive = msg
        self.cancel(object_id[:-4], force, recursive)

    def cancel(self, task_id, force, recursive):
        """Cancel a task: drop it if pending, interrupt (or kill) it if running."""
        task = self.tasks.get(task_id)
        if task is None or task.cancelled:
            return
        task.cancelled = True
        if recursive and task.children:
            for child_id in task.children:
                self.cancel(child_id, force, recursive)
        spec = task.spec
        if spec.kind == ACTOR_METHOD:
            # A queued call is dropped; a running one finishes (only asyncio actors could be
            # interrupted, as in Ray, and purerun does not do that yet).
            actor = self.actors.get(spec.actor_id)
            if actor is not None and task in actor.queue:
                actor.queue.remove(task)
                self.fail_task(task, exceptions.TaskCancelledError(task_id.hex()))
            return
        if task.worker is None:
            self.run_actions(self.scheduler.handle(sched.CancelTask(task_id)))
            return
        try:
            if force:
                task.force_cancelled = True
                os.kill(task.worker.pid, signal.SIGKILL)
            else:
                os.kill(task.worker.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def on_free(self, conn, msg):
        for object_id in msg[1]:
            self.store.free_early(object_id)

    def on_request(self, conn, msg):
        _, request_id, op, args = msg
        method = getattr(self, "request_" + op, None)
        try:
            if method is None:
                raise ValueError(f"unknown request {op!r}")
            result = method(conn, *args)
        except Exception as exc:
            self.send(conn, (protocol.REPLY, request_id, False, exc))
        else:
            self.send(conn, (protocol.REPLY, request_id, True, result))

    # -- requests ----------------------------------------------------------------------------------

    def request_alloc(self, conn, size):
        offset = self.store.alloc(size)
        conn.reservations.add(offset)
        return offset

    def request_shutdown(self, conn):
        self.running = False

    def request_cluster_resources(self, conn):
        return self.scheduler.total_resources()

    def request_available_resources(self, conn):
        return self.scheduler.available_resources()

    def request_nodes(self, conn):
        return [{
            "NodeID": self.node_id.hex(), "Alive": True, "NodeManagerAddress": self.node_ip,
            "NodeManagerHostname": socket.gethostname(), "NodeName": self.node_ip,
            "Resources": self.scheduler.total_resources(), "alive": True,
            "ObjectStoreSocketName": self.address, "RayletSocketName": self.address,
            "MetricsExportPort": 0, "Labels": {},
        }]

    def request_stats(self, conn):
        return {"workers": {w.worker_id: w.pid for w in self.workers.values()},
                "tasks": len(self.tasks), "functions": len(self.functions),
                **self.store.stats()}

    def request_set_namespace(self, conn, namespace):
        self.job_namespaces[conn.job_id.to_bytes(4, "little")] = namespace

    def namespace_of(self, namespace, job_id):
        if namespace is not None:
            return namespace
        return self.job_namespaces.get(job_id) or f"anonymous:{job_id.hex()}"

    def request_register_actor(self, conn, name, namespace, job_id, actor_id, meta,
                               get_if_exists):
        namespace = self.namespace_of(namespace, job_id)
        key = (namespace, name)
        existing = self.named_actors.get(key)
        if existing is not None:
            actor = self.actors.get(existing)
            if actor is not None and actor.state != "DEAD":
                if not get_if_exists:
                    raise ValueError(f"The name {name} (namespace={namespace}) is already "
                                     "taken. Please use a different name or get the existing "
                                     f"actor using purerun.get_actor('{name}', "
                                     f"namespace='{namespace}').")
                self.add_hold(conn, actor.creation.return_ids()[0])
                return existing, actor.meta
        self.named_actors[key] = actor_id
        self.pending_names[actor_id] = (namespace, name, meta)
        return None

    def request_get_actor(self, conn, name, namespace, job_id):
        actor_id = self.named_actors.get((self.namespace_of(namespace, job_id), name))
        actor = self.actors.get(actor_id) if actor_id is not None else None
        if actor is None or actor.state == "DEAD":
            return None
        self.add_hold(conn, actor.creation.return_ids()[0])
        return actor_id, actor.meta

    def add_hold(self, conn, object_id):
        if object_id not in conn.refs and self.store.hold(object_id):
            conn.refs.add(object_id)

    def request_kill_actor(self, conn, actor_id, no_restart):
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == "DEAD":
            return
        if no_restart:
            actor.restarts_left = 0
            actor.terminating = True
        worker = actor.worker
        if worker is not None and actor.state == "ALIVE":
            self.kill_worker(worker)
            # Act on the death now rather than when the socket closes, so that calls made
            # after kill() returns already see a dead (or restarting) actor.
            worker.actor_id = None
            worker.death_handled = True
            self.actor_worker_lost(actor)
        elif worker is not None:  # still constructing: its death is handled as TaskLost
            self.kill_worker(worker)
        elif no_restart:
            task = self.tasks.get(actor.creation.task_id)
            if task is not None and task.worker is None:
                self.run_actions(self.scheduler.handle(sched.CancelTask(task.spec.task_id)))
                self.tasks.pop(task.spec.task_id, None)
            elif task is not None:
                self.kill_worker(task.worker)
                return
            self.actor_dead(actor)

    def request_timeline(self, conn):
        return chrome_trace(self.timeline, self.node_ip)

    def request_kv_put(self, conn, key, value, overwrite):
        if not overwrite and key in self.kv:
            return False
        self.kv[key] = value
        return True

    def request_kv_get(self, conn, key):
        return self.kv.get(key)

    # -- worker output -----------------------------------------------------------------------------

    def read_pipe(self, fd):
        state = self.pipes[fd]
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(fd)
            os.close(fd)
            del self.pipes[fd]
            if state[2]:
                self.relay_log(state[0].pid, state[1], state[2])
            return
        data = state[2] + data
        cut = data.rfind(b"\n")
        if cut < 0:
            state[2] = data
            return
        state[2] = data[cut + 1:]
        self.relay_log(state[0].pid, state[1], data[:cut])

    def relay_log(self, pid, stream, data):
        text = data.decode("utf-8", "replace")
        for conn in self.conns.values():
            if conn.kind == "driver" and conn.log_to_driver:
                self.send(conn, (protocol.LOG, pid, stream, text))

    # -- shutdown ----------------------------------------------------------------------------------

    def reap(self):
        still = []
        for pid in self.to_reap:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if not done:
                still.append(pid)
        self.to_reap = still

    def stop(self):
        """Kill every worker, wait for them, release everything."""
        pids = [w.pid for w in self.workers.values()] + self.to_reap
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + REAP_TIMEOUT
        for pid in pids:
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.001)
        for conn in list(self.conns.values()):
            try:
                conn.sock.close()
            except OSError:
                pass
        for fd in list(self.pipes):
            try:
                os.close(fd)
            except OSError:
                pass
        self.listener.close()
        self.store.close()
        shutil.rmtree(self.session_dir, ignore_errors=True)


def main(config_json, owner_fd):
    """Entry point: ``python -c ... main(config, fd)`` started by purerun.init()."""
    config = json.loads(config_json)
    config["node_id"] = bytes.fromhex(config["node_id"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver
    node = Node(config)

    def on_term(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)
    if owner_fd == "none":  # a standalone node (purerun start): runs until SIGTERM
        owner_fd = None
    if owner_fd is not None:
        try:
            node.add_driver(socket.socket(fileno=int(owner_fd)), owner=True)
        except OSError:  # the driver is already gone: nothing to serve
            node.running = False
    profile_path = os.environ.get("PURERUN_NODE_PROFILE")
    profiler = None
    if profile_path:  # for tuning: cProfile the node, dumped at exit
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    try:
        node.serve()
    finally:
        node.stop()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_path)
    # Everything is released; skip the interpreter's teardown, which only costs time.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
