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
from purerun.core.protocol import ARENA, ERROR
from purerun.core.task_spec import ACTOR_CREATION
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
        self.pins = set()          # object ids this process has zero-copy views of
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
                 "retiring")

    def __init__(self, worker_id, pid, conn, pipes):
        self.worker_id = worker_id
        self.pid = pid
        self.conn = conn
        self.pipes = pipes          # {fd: stream number}
        self.functions = set()      # function keys this worker has received
        self.task = None            # the Task running here
        self.actor_id = None
        self.retiring = False


class Task:
    __slots__ = ("spec", "owner", "worker", "retries_left", "cancelled", "force_cancelled")

    def __init__(self, spec, owner):
        self.spec = spec
        self.owner = owner
        self.worker = None
        self.retries_left = spec.max_retries
        self.cancelled = False
        self.force_cancelled = False


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
        self.next_worker_id = 1
        self.next_job_id = 1
        self.to_reap = []           # pids of exited or killed workers not yet waited for
        self.dirty = set()          # conns with output to flush
        self.running = True
        self.owner = None
        self.started_at = time.time()

        self.store = ObjectStore(config["object_store_memory"])
        cpus = self.resources.get("CPU", 1)
        gpu_ids = tuple(config.get("gpu_ids") or range(int(self.resources.get("GPU", 0))))
        self.scheduler = sched.Scheduler(
            self.resources, gpu_ids,
            max_workers=max(MIN_MAX_WORKERS, int(MAX_WORKERS_PER_CPU * max(cpus, 1))),
            max_starting_workers=max(1, int(cpus)),
            min_idle_workers=min(PRESTART_WORKERS_MAX, max(1, int(cpus))))

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
            protocol.PIN: self.on_pin,
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
        for object_id in conn.pins:
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

    # -- the loop ----------------------------------------------------------------------------------

    def serve(self):
        self.run_actions(self.scheduler.handle(sched.PrestartWorkers()))
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
        spec = task.spec
        entries = self.store.entries
        dep_payloads = []
        for object_id in spec.deps:
            entry = entries.get(object_id)
            if entry is None or entry.kind is None:
                payload = error_payload(exceptions.ObjectLostError(object_id.hex()))
                dep_payloads.append((ERROR, payload))
            else:
                dep_payloads.append((entry.kind, entry.payload))
        key = spec.function_key
        pickled = None
        if key not in worker.functions:
            pickled = self.functions.get(key)
            worker.functions.add(key)
        task.worker = worker
        worker.task = task
        if spec.kind == ACTOR_CREATION:
            worker.actor_id = spec.actor_id
        self.send(worker.conn, (protocol.EXECUTE, spec, dep_payloads, pickled,
                                action.gpu_ids))
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
        actions = self.scheduler.handle(sched.WorkerDied(worker.worker_id))
        self.run_actions(actions)

    def task_lost(self, task_id):
        """The worker running ``task_id`` died: retry it, or fail it."""
        task = self.tasks.get(task_id)
        if task is None:
            return ()
        task.worker = None
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
            msg = (protocol.OBJECT, object_id, entry.kind, entry.payload)
            for conn in subscribers:
                self.send(conn, msg)
        self.run_actions(self.scheduler.handle(sched.ObjectReady(object_id)))
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
        self.run_actions(self.scheduler.handle(
            sched.SubmitTask(spec.task_id, spec.resources, missing)))

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
                self.send(conn, (protocol.OBJECT, object_id, entry.kind, entry.payload))
            else:
                if entry.subscribers is None:
                    entry.subscribers = set()
                entry.subscribers.add(conn)

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

    def on_pin(self, conn, msg):
        for object_id in msg[1]:
            if object_id not in conn.pins:
                conn.pins.add(object_id)
                self.store.pin(object_id)

    def on_unpin(self, conn, msg):
        for object_id in msg[1]:
            if object_id in conn.pins:
                conn.pins.discard(object_id)
                self.store.unpin(object_id)

    def on_blocked(self, conn, msg):
        self.run_actions(self.scheduler.handle(sched.WorkerBlocked(conn.worker.worker_id)))

    def on_unblocked(self, conn, msg):
        self.run_actions(self.scheduler.handle(sched.WorkerUnblocked(conn.worker.worker_id)))

    def on_task_done(self, conn, msg):
        _, task_id, results, retry, exiting = msg
        worker = conn.worker
        task = self.tasks.get(task_id)
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

    def on_cancel(self, conn, msg):
        _, object_id, force, _recursive = msg
        task = self.tasks.get(object_id[:-4])
        if task is None:
            return
        task.cancelled = True
        if task.worker is None:
            self.run_actions(self.scheduler.handle(sched.CancelTask(task.spec.task_id)))
            return
        pid = task.worker.pid
        try:
            if force:
                task.force_cancelled = True
                os.kill(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGINT)
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
    if owner_fd is not None:
        node.add_driver(socket.socket(fileno=int(owner_fd)), owner=True)
    try:
        node.serve()
    finally:
        node.stop()
    # Everything is released; skip the interpreter's teardown, which only costs time.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
