"""The node process: one per host. Carries bytes and process events to NodeState and its
actions back out; every rule lives in core/node_state.py.

::

    drivers ──unix socket──┐                              ┌── worker 1 (forked, socketpair)
    (socketpair for the    │   selector loop (one         ├── worker 2
     driver that started   ├─▶ thread): read frames  ──▶  │   ...
     the node; the         │   NodeState.handle(conn, msg)│
     listening socket for  │   ◀── actions: Send,         │   worker stdout/stderr pipes
     others)               │   StartWorker (fork),        └── relayed to drivers as LOG
                           │   KillWorker, InterruptWorker, Stop
                           └── ObjectStore (arena memfd, spill files)

Everything here runs on one thread, which is why workers can be forked from this process:
there is no other thread whose locks a child could inherit half-held. Nothing may start a
thread in the node, but for one exception: the status page (``init(include_dashboard=True)``,
core/dashboard.py), whose threads share nothing with the loop — they ask the node over its
own socket, hold no lock a worker could need, and never write to stdout or stderr.

Writes never block: each connection has an output buffer flushed when the socket is
writable, so one slow reader cannot stall the node (and through it everyone else).

The node lives as long as the driver that started it (``owner``): when that connection
closes — a normal shutdown or a killed driver — the node kills its workers and exits. Workers
die with it (their socket closes, and PR_SET_PDEATHSIG). The arena is a memfd, so no
shared-memory name can outlive the processes.

**Processes a task starts** die with the session too. The node and every worker are child
subreapers (PR_SET_CHILD_SUBREAPER): a process a task started whose parent exits is
re-parented to the nearest living subreaper above it — its worker while that lives, else
the node — never to init, whatever it did to detach (double fork, setsid). So a child of the
node that is not one of its workers is what is left of a dead worker's processes: the node
kills it (and what it started) as soon as it sees it, after each worker's exit, and kills
every child it has when it stops. A process group would not do: setsid leaves it.

**A worker's exit is seen at once**, from the process itself: the node watches a pidfd
(pidfd_open) per worker in its selector loop. Its socket alone is not enough: a child the
task forked holds the worker's end of the socketpair open after the worker died. When the
pidfd says it exited, what the worker wrote before it died is read, then its connection is
closed. Where pidfd_open is missing, the workers' pids are polled (``EXIT_POLL_INTERVAL``).
"""

import gc
import json
import logging
import os
import select
import shutil
import signal
import socket
import sys
import time

from purerun.core import memory_monitor, protocol, state_rules, transport
from purerun.core.proctree import with_descendants as _with_descendants
from purerun.core.control_store import HEARTBEAT_INTERVAL_S, ControlStore
from purerun.core.node_state import (DISCONNECTED, DRIVER_CONNECTED, HEAD_LOST,
                                     HEARTBEAT_ANSWER, IDLE_CHECK, MEMORY_READING, NODE_ADDED,
                                     NODE_DIED, WORKER_IDLE_CHECK_S, WORKER_OUTPUT,
                                     WORKER_STARTED, DrainOutput, InterruptWorker, KillWorker,
                                     NodeState, PushObject, RemoteNode, Send, StartWorker, Stop)
from purerun.core.object_store import ObjectStore
from purerun.core.transport import Connection, EventLoop, HmacHandshake, Listener
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
# How often exited workers are waited for while some are left: they are gone already (their
# socket closed), so this only bounds how long a zombie entry lingers.
REAP_INTERVAL = 0.05
# How often the workers' pids are polled for their exit, where pidfd_open is missing (Linux
# before 5.3): the delay before a worker whose socket a forked child holds open is seen dead.
EXIT_POLL_INTERVAL = 0.1
# What a dead worker had written and the node had not read yet, at most: a worker writes
# little between two reads; this only bounds the work if something else holds its socket
# and keeps writing.
DRAIN_LIMIT = 64 * 1024 * 1024
# prctl(2) options.
_PR_SET_CHILD_SUBREAPER = 36
# A pulled object crosses in raw frames of this size: large enough that per-frame costs
# vanish next to the copy, small enough that other messages on the connection pass between
# two of them within milliseconds.
TRANSFER_CHUNK = 4 * 1024 * 1024

# A drain (a driver leaving) reads at most this many chunks from each worker's pipe: a task
# that prints without end must not keep the node in one drain.
DRAIN_MAX_READS = 64


def _arities(*directions, also=()):
    """{code: tuple length} of the messages with these directions, and of ``also``."""
    return {code: 1 + len(m.fields) for code, m in protocol.MESSAGES.items()
            if m.direction in directions or code in also}


# What a connection may send the node, and the length of each message. Anything else (an
# unknown or internal event code, a message meant for the other direction, a wrong number of
# fields) comes from a broken or hostile peer: its connection is closed, and no rule ever
# sees the message.
# Drivers and workers, over the unix socket or a socketpair:
_FROM_LOCAL = _arities(protocol.TO_NODE, protocol.FROM_WORKER)
# Other nodes: they act as this node's clients, answer it as its server, move objects, and
# relay what the workers of calls placed there yield.
_FROM_NODES = _arities(protocol.TO_NODE, protocol.BETWEEN_NODES,
                       also=(protocol.OBJECT, protocol.REPLY, protocol.WARN,
                             protocol.GENERATOR_ITEM))


def malformed(msg, accepted) -> str:
    """Why ``msg`` is not a message a peer may send (``accepted``: {code: length}), or ""."""
    if type(msg) is not tuple or not msg:
        return f"a frame holding a {type(msg).__name__!r}, not a message tuple"
    length = accepted.get(msg[0]) if type(msg[0]) is int else None
    if length is None:
        return f"a message of kind {msg[0]!r}, which this connection may not send"
    if len(msg) != length:
        name = protocol.MESSAGES[msg[0]].name
        return f"{name} with {len(msg) - 1} fields instead of {length - 1}"
    return ""


class Node:
    def __init__(self, config):
        self.config = config
        self.session_dir = config["session_dir"]
        self.loop = EventLoop()
        self.pids = {}              # worker id -> pid, while its process may be alive
        self.worker_conns = {}      # worker id -> its Connection, while open
        self.to_reap = []           # pids of exited or killed workers not yet waited for
        self.reaping = False        # a reap timer is set
        self.pipes = {}             # fd -> [pid, stream, partial line]
        self.pidfds = {}            # pidfd -> worker id, while its process has not exited
        self.polled = {}            # worker id -> pid, watched by polling (no pidfd_open)
        self.running = True
        self.pull_files = {}        # object id -> (path, writable map) of a pull into a file
        # Orphans of workers' processes come to the node, which kills them (see the top).
        self.subreaper = become_subreaper()

        self.address = os.path.join(self.session_dir, "node.sock")
        self.store = ObjectStore(config["object_store_memory"],
                                 spill_dir=os.path.join(self.session_dir, "spill"))
        self.arena_view = memoryview(self.store.arena.map)
        resources = config["resources"]
        cpus = resources.get("CPU", 1)
        threshold, refresh_ms, min_free = memory_monitor.settings_from_env(os.environ)
        self.memory_refresh_s = refresh_ms / 1000 if threshold > 0 else 0
        state_config = dict(config, address=self.address, arena_size=self.store.arena.size,
                            hostname=socket.gethostname(),
                            memory_usage_threshold=threshold if refresh_ms > 0 else 0,
                            min_memory_free_bytes=min_free,
                            task_history_max=state_rules.history_cap_from_env(os.environ))
        self.dashboard = None       # the status page's server, if asked for
        if config.get("dashboard") is not None:
            self.dashboard = self._dashboard_server(config["dashboard"])
            state_config["dashboard_url"] = self.dashboard.url
        self.node_conns = {}        # node id -> Connection this node opened to it
        self.tcp_listener = None
        self.head = None
        if config.get("head"):
            control = self._join(config["head"], config.get("node_host"), state_config)
        else:
            control = ControlStore()
        self.state = NodeState(
            state_config, self.store, control,
            max_workers=max(MIN_MAX_WORKERS, int(MAX_WORKERS_PER_CPU * max(cpus, 1))),
            max_starting_workers=max(1, int(cpus)))
        self.prestart = min(PRESTART_WORKERS_MAX, max(1, int(cpus)))

        self.listener = Listener.unix(self.address)
        self.loop.add_listener(self.listener, self.add_driver)
        if self.head is not None:
            self.loop.add_listener(self.tcp_listener, self.add_node_peer)
            self.loop.add_connection(self.head.conn, self.head.on_messages, self._head_closed)
            self.head.on_event = self._head_event
            self.loop.call_later(HEARTBEAT_INTERVAL_S, self._tick)
        self.loop.call_later(WORKER_IDLE_CHECK_S, self._idle_check)
        self.memory_source = MemorySource() if self.memory_refresh_s else None
        if self.memory_source is not None:
            self.loop.call_later(self.memory_refresh_s, self._check_memory)
        self.actions = {
            Send: self._do_send,
            StartWorker: self._do_start_worker,
            KillWorker: self._do_kill_worker,
            InterruptWorker: self._do_interrupt_worker,
            PushObject: self._do_push,
            Stop: self._do_stop,
            DrainOutput: self._do_drain_output,
        }

    def _dashboard_server(self, settings):
        """The status page's server, bound to ``settings["host"]``/``["port"]``; it serves
        from ``serve()`` on. Its token is the cluster's, made if this host has none."""
        from purerun.core import auth, dashboard
        token = auth.load_token() or auth.ensure_token()[0]
        return dashboard.DashboardServer(dashboard.NodeSource(self.address), token,
                                         settings["host"], settings["port"])

    # -- the cluster -------------------------------------------------------------------------------

    def _join(self, head_address, node_host, state_config):
        """Connect to the head and listen for other nodes; returns the head's store."""
        from purerun.core import auth
        from purerun.core.remote_control import RemoteControlStore
        self.token = auth.load_token()
        if self.token is None:
            raise RuntimeError(
                "This node cannot join the head at " + head_address + ": no cluster token "
                "was found. Give it the head's token in $PURERUN_AUTH_TOKEN, or name the "
                f"file with $PURERUN_AUTH_TOKEN_PATH, or copy it to {auth.default_token_path()}.")
        self.head = RemoteControlStore.connect(head_address, self.token)
        # Other nodes reach this one on the address its head connection leaves from, unless
        # told otherwise: the interface that routes to the head routes to the cluster.
        host = node_host or self.head.conn.sock.getsockname()[0]
        self.tcp_listener = transport.GuardedListener.tcp(
            0, host=host, handshake=HmacHandshake(self.token, transport.SERVER))
        port = self.tcp_listener.address[1]
        state_config["tcp_address"] = transport.format_address(host, port)
        if not state_config.get("dashboard_url"):   # the cluster's status page, if any
            from purerun.core.launcher import DASHBOARD_NAMESPACE, DASHBOARD_URL_KEY
            url = self.head.kv_get(DASHBOARD_URL_KEY, DASHBOARD_NAMESPACE)
            state_config["dashboard_url"] = url.decode() if url else None
        state_config["node_ip"] = host
        return self.head

    def _tick(self):
        """Heartbeat and fetch the node table without waiting for the head: a slow head must
        not stall this node's loop."""
        if not self.running or self.head is None or self.head.closed:
            return
        answer = {}

        def beat(ok, value):
            answer["alive"] = bool(value) if ok else True   # an error: try again next tick

        def table(ok, value):
            if ok and self.loop is not None and self.running:
                self.run(self.state.handle(None, (HEARTBEAT_ANSWER, answer.get("alive", True),
                                                  value)))
        try:
            self.head.call_async("heartbeat", self.state.heartbeat_report(), beat)
            self.head.call_async("node_table", (), table)
        except ConnectionError:
            return   # the head is gone: _head_closed tells the state
        self.loop.call_later(HEARTBEAT_INTERVAL_S, self._tick)

    def _idle_check(self):
        """Let the rules retire workers idle too long (see WORKER_IDLE_CHECKS)."""
        if not self.running or self.loop is None:
            return
        self.run(self.state.handle(None, (IDLE_CHECK,)))
        self.loop.call_later(WORKER_IDLE_CHECK_S, self._idle_check)

    def _head_event(self, kind, data):
        if kind == "node_dead":
            self.run(self.state.handle(None, (NODE_DIED, data["node_id"])))
        elif kind == "node_added" and data["node_id"] != self.state.node_id:
            self.run(self.state.handle(None, (NODE_ADDED,)))

    def _head_closed(self, conn, reason):
        if self.loop is not None:
            logger.warning("lost the head: %s", reason)
            self.run(self.state.handle(None, (HEAD_LOST, reason)))

    def add_node_peer(self, conn):
        """Another node connected (authenticated); its NODE_HELLO comes first."""
        self.tcp_listener.authenticated(conn)
        self.loop.add_connection(conn, self._on_peer_messages, self.on_close)

    def _on_peer_messages(self, conn, messages):
        self.on_messages(conn, messages, None, _FROM_NODES)

    def _node_conn(self, remote):
        """The connection to ``remote``, opened on first use (None if it cannot be)."""
        conn = self.node_conns.get(remote.node_id)
        if conn is not None:
            return None if conn.closed else conn
        host, _, port = remote.address.rpartition(":")
        try:
            conn = transport.connect((host.strip("[]"), int(port)), self.token)
        except (ConnectionError, OSError, ValueError) as exc:
            logger.warning("cannot reach node %s at %s: %s", remote.node_id.hex(),
                           remote.address, exc)
            self.node_conns[remote.node_id] = _CLOSED
            self.loop.call_later(0, lambda: self.run(self.state.handle(remote,
                                                                       (DISCONNECTED,))))
            return None
        conn.peer = remote
        conn.raw_sink = self._sink
        self.node_conns[remote.node_id] = conn
        self.loop.add_connection(conn, self._on_remote_messages, self._on_remote_close)
        conn.send((protocol.NODE_HELLO, self.state.node_id))
        return conn

    def _on_remote_messages(self, conn, messages):
        self.on_messages(conn, messages, conn.peer, _FROM_NODES)
        if self.pull_files:
            self._close_pull_files()

    def _close_pull_files(self):
        """Unmap the files of pulls that are over (done or failed)."""
        for object_id, (path, mapped) in list(self.pull_files.items()):
            if self.state.pull_destination(object_id) != path:
                del self.pull_files[object_id]
                try:
                    mapped.close()
                except BufferError:  # the transport still holds a slice: unmapped with it
                    pass

    def _on_remote_close(self, conn, reason):
        if self.loop is not None:
            self.run(self.state.handle(conn.peer, (DISCONNECTED,)))
            if self.pull_files:
                self._close_pull_files()

    def _sink(self, msg, nbytes):
        """Where the raw bytes of a DATA frame go: straight into this node's arena, or into
        the file of a pull the arena has no room for."""
        if msg[0] != protocol.DATA:
            return None
        start = self.state.pull_destination(msg[1])
        if start is None or msg[2] + nbytes > msg[4]:
            return None
        if isinstance(start, str):   # no room in the arena: into a file
            path, mapped = self.pull_files.get(msg[1], (None, None))
            if path != start:
                mapped = self.store.map_for_writing(start, msg[4])
                self.pull_files[msg[1]] = (start, mapped)
            return memoryview(mapped)[msg[2]:msg[2] + nbytes]
        start += msg[2]
        return self.arena_view[start:start + nbytes]

    def _do_push(self, action):
        conn = action.token
        if action.path is not None:
            view = memoryview(self.store.map_for_reading(action.path, action.length))
        else:
            view = self.arena_view[action.offset:action.offset + action.length]
        object_id, total = action.object_id, action.length

        def send_chunk(start):
            if conn.closed:
                return
            end = min(start + TRANSFER_CHUNK, total)
            last = end >= total
            conn.send_raw((protocol.DATA, object_id, start, end - start, total), view[start:end],
                          on_sent=done if last else (lambda: send_chunk(end)))

        def done():
            self.run(self.state.handle(conn, (protocol.UNPIN, [object_id])))
        send_chunk(0)

    # -- NodeState's actions -----------------------------------------------------------------------

    def run(self, actions):
        do = self.actions
        for action in actions:
            do[type(action)](action)

    def _do_send(self, action):
        token = action.token
        if type(token) is RemoteNode:
            token = self._node_conn(token)
            if token is None:
                return
        token.send(action.msg)

    def _do_kill_worker(self, action):
        self._signal(action.worker_id, signal.SIGKILL)

    def _do_interrupt_worker(self, action):
        conn = self.worker_conns.get(action.worker_id)
        if conn is not None and not conn.closed:
            try:  # what was sent to it before (an INTERRUPT) is in its socket before the signal
                conn.flush()
            except OSError:
                pass
        self._signal(action.worker_id, signal.SIGINT)

    def _signal(self, worker_id, signum):
        pid = self.pids.get(worker_id)
        if pid is not None:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _do_stop(self, action):
        self.running = False
        self.loop.stop()

    def _do_start_worker(self, action):
        worker_id = action.worker_id
        parent, child = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        info = self.state.worker_info(worker_id)
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
        conn = Connection(parent, address=f"worker {worker_id} (pid {pid})")
        conn.peer = worker_id
        conn.flush_first = True
        self.pids[worker_id] = pid
        self.worker_conns[worker_id] = conn
        self.loop.add_connection(conn, self.on_messages, self.on_close)
        self._watch_exit(worker_id, pid)
        for fd, stream in ((out_r, 1), (err_r, 2)):
            os.set_blocking(fd, False)
            self.pipes[fd] = [pid, stream, b""]
            self.loop.add_reader(fd, self.read_pipe)
        self.run(self.state.handle(conn, (WORKER_STARTED, worker_id, pid)))

    # -- worker exits ------------------------------------------------------------------------------

    def _watch_exit(self, worker_id, pid):
        """Learn of the worker's exit from its process, not only from its socket."""
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is not None:
            self.pidfds[pidfd] = worker_id
            self.loop.add_reader(pidfd, self._pidfd_ready)
            return
        if not self.polled:
            self.loop.call_later(EXIT_POLL_INTERVAL, self._poll_exits)
        self.polled[worker_id] = pid

    def _pidfd_ready(self, pidfd):
        worker_id = self.pidfds.pop(pidfd)
        self.loop.remove(pidfd)
        os.close(pidfd)
        self._worker_exited(worker_id)

    def _poll_exits(self):
        if self.loop is None:
            return
        for worker_id, pid in list(self.polled.items()):
            if not _exited(pid):
                continue
            del self.polled[worker_id]
            self._worker_exited(worker_id)
        if self.polled:
            self.loop.call_later(EXIT_POLL_INTERVAL, self._poll_exits)

    def _worker_exited(self, worker_id):
        """The worker's process exited: read what it sent before, then close its connection
        (a child it forked may hold the other end open); kill what it left running."""
        conn = self.worker_conns.get(worker_id)
        if conn is not None and not conn.closed:
            self._drain(conn)
            if not conn.closed:
                conn.close("the worker's process exited")
        self.kill_orphans()

    def _drain(self, conn):
        """Hand the rules every message ``conn`` has buffered, without waiting for more."""
        poller = select.poll()
        poller.register(conn.sock, select.POLLIN)
        left = DRAIN_LIMIT
        while left > 0 and not conn.closed and poller.poll(0):
            try:
                messages = conn.read()
            except OSError as exc:   # ProtocolError too
                conn.close(f"reading it failed: {exc}")
                return
            if messages is None:
                conn.close("closed by the peer")
                return
            left -= protocol.RECV_SIZE
            if messages:
                self.on_messages(conn, messages)

    def _children(self):
        """Pids of this process's children (the node has one thread: its children are
        those of its main thread)."""
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            import psutil
            return [child.pid for child in psutil.Process().children()]

    def kill_orphans(self):
        """Kill every child of the node that is not a live worker (and what it started):
        the processes that dead workers' tasks left behind."""
        workers = set(self.pids.values())
        orphans = [pid for pid in self._children() if pid not in workers]
        if not orphans:
            return
        for pid in _with_descendants(orphans):
            _kill(pid)
        # Reaped by the timer, which also catches what they started, re-parented here as
        # each of them dies.
        self.to_reap.extend(pid for pid in orphans if pid not in self.to_reap)
        if not self.reaping and self.loop is not None:
            self.reaping = True
            self.loop.call_later(REAP_INTERVAL, self.reap)

    # -- memory ------------------------------------------------------------------------------------

    def _check_memory(self):
        """Read memory in use; over the threshold, let the rules pick a worker to kill."""
        if not self.running or self.loop is None:
            return
        try:
            used, total = self.memory_source.read()
        except OSError as exc:
            logger.warning("cannot read the memory in use; the memory monitor stops: %s", exc)
            return
        if self.state.memory.over_threshold(used, total):
            own = {worker_id: _own_memory(pid) for worker_id, pid in self.pids.items()}
            self.run(self.state.handle(None, (MEMORY_READING, used, total, own)))
        self.loop.call_later(self.memory_refresh_s, self._check_memory)

    # -- connections -------------------------------------------------------------------------------

    def add_driver(self, conn, owner=False):
        self.loop.add_connection(conn, self.on_messages, self.on_close)
        self.run(self.state.handle(conn, (DRIVER_CONNECTED, owner)))
        # The WELCOME carries the arena descriptor; it is the first thing the driver reads.
        conn.send_fds((protocol.WELCOME, self.state.welcome_info(conn)), [self.store.arena.fd])
        return conn

    def on_messages(self, conn, messages, token=None, accepted=_FROM_LOCAL):
        """Hand each message from ``conn`` to the rules (as from ``token``, by default the
        connection itself); a message not in ``accepted`` or not well formed, or one that a
        rule fails on (other than for want of the head), closes ``conn`` and only it."""
        handle = self.state.handle
        token = conn if token is None else token
        for msg in messages:
            problem = malformed(msg, accepted)
            if problem:
                logger.warning("closing the connection with %s: it sent %s", conn.address,
                               problem)
                conn.close("malformed message: " + problem)
                return
            try:
                self.run(handle(token, msg))
            except ConnectionError as exc:
                # The head is out of reach: the message was fine, and the rules that need
                # the head tell its sender so (see NodeState.head_lost).
                logger.warning("could not handle a %s message from %s: %s",
                               protocol.MESSAGES[msg[0]].name, conn.address, exc)
            except Exception as exc:
                logger.exception("closing the connection with %s: handling its %s message "
                                 "failed", conn.address, protocol.MESSAGES[msg[0]].name)
                conn.close(f"handling its message failed: {exc!r}")
                return
            if conn.closed:
                return

    def on_close(self, conn, reason):
        if not self.running and self.loop is None:
            return
        worker_id = conn.peer
        if worker_id is not None:
            self.worker_conns.pop(worker_id, None)
            pid = self.pids.pop(worker_id, None)
            if pid is not None:
                self.to_reap.append(pid)
                if not self.reaping:
                    self.reaping = True
                    self.loop.call_later(REAP_INTERVAL, self.reap)
        self.run(self.state.handle(conn, (DISCONNECTED,)))

    # -- the loop ----------------------------------------------------------------------------------

    def serve(self):
        if not self.running:
            return
        self.run(self.state.prestart(self.prestart))  # warm workers for the first tasks
        if self.dashboard is not None:
            self.dashboard.start()
        if self.running:
            self.loop.run()

    # -- worker output -----------------------------------------------------------------------------

    def _do_drain_output(self, action):
        # Everything a worker printed before the request that asked for this is in its pipe
        # (a worker flushes before it reports a call done): read until each pipe is empty.
        for fd in list(self.pipes):
            for _ in range(DRAIN_MAX_READS):
                if fd not in self.pipes or not self.read_pipe(fd):
                    break
            state = self.pipes.get(fd)
            if state is not None and state[2]:  # an unfinished line: it may never end
                line, state[2] = state[2], b""
                self.relay_log(state[0], state[1], line)

    def read_pipe(self, fd):
        """Relay the complete lines a worker's pipe has now; True if it may have more."""
        state = self.pipes[fd]
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self.loop.remove(fd)
            os.close(fd)
            del self.pipes[fd]
            if state[2]:
                self.relay_log(state[0], state[1], state[2])
            return False
        data = state[2] + data
        cut = data.rfind(b"\n")
        if cut < 0:
            state[2] = data
            return True
        state[2] = data[cut + 1:]
        self.relay_log(state[0], state[1], data[:cut])
        return True

    def relay_log(self, pid, stream, data):
        self.run(self.state.handle(None, (WORKER_OUTPUT, pid, stream,
                                          data.decode("utf-8", "replace"))))

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
        self.reaping = False
        self.kill_orphans()   # what the orphans killed since started, re-parented here
        if self.to_reap and not self.reaping:
            self.reaping = True
            self.loop.call_later(REAP_INTERVAL, self.reap)

    def stop(self):
        """Kill every worker and every process the tasks started, wait for them, release
        everything."""
        self.running = False
        self.kill_all_children()
        loop, self.loop = self.loop, None   # on_close does nothing from here on
        loop.close()
        if self.dashboard is not None:   # a snapshot asked now meets a closed connection
            self.dashboard.stop()
        for pidfd in list(self.pidfds):
            os.close(pidfd)
        self.pidfds.clear()
        for fd in list(self.pipes):
            try:
                os.close(fd)
            except OSError:
                pass
        self.listener.close()
        if self.tcp_listener is not None:
            self.tcp_listener.close()
        if self.head is not None:
            self.head.close()
        self.arena_view.release()
        self.store.close()
        shutil.rmtree(self.session_dir, ignore_errors=True)


    def kill_all_children(self):
        """SIGKILL every descendant (workers, what their tasks started) and reap the
        children until none is left, within ``REAP_TIMEOUT``."""
        pids = list(self.pids.values()) + self.to_reap
        # Without the subreaper, a task's processes are found now, while still attached to
        # their worker; with it, they come to the node as their parents die, below.
        for pid in _with_descendants(pids + self._children()):
            _kill(pid)
        deadline = time.monotonic() + REAP_TIMEOUT
        while True:
            if not self.subreaper:
                _reap_all_of(pids, deadline)
                return
            if _reap_any():
                return   # no child left
            if time.monotonic() > deadline:
                return
            for pid in self._children():
                _kill(pid)
            time.sleep(0.001)


class MemorySource:
    """Where the memory in use is read: the cgroup this node runs in when it has a limit
    below the host's memory (a container), else the host (``MemAvailable``).

    Page cache that can be dropped (inactive files) does not count as in use.
    """

    CGROUP_V2 = "/sys/fs/cgroup"
    CGROUP_V1 = "/sys/fs/cgroup/memory"

    def __init__(self):
        import psutil
        self.psutil = psutil
        self.host_total = psutil.virtual_memory().total
        self.cgroup = None   # (usage file, limit, stat file, inactive-file key)
        v2_max = os.path.join(self.CGROUP_V2, "memory.max")
        v1_max = os.path.join(self.CGROUP_V1, "memory.limit_in_bytes")
        try:
            if os.path.exists(v2_max):
                limit = _read_number(v2_max)
                if limit is not None and limit < self.host_total:
                    self.cgroup = (os.path.join(self.CGROUP_V2, "memory.current"), limit,
                                   os.path.join(self.CGROUP_V2, "memory.stat"),
                                   "inactive_file")
            elif os.path.exists(v1_max):
                limit = _read_number(v1_max)
                if limit is not None and limit < self.host_total:
                    self.cgroup = (os.path.join(self.CGROUP_V1, "memory.usage_in_bytes"),
                                   limit, os.path.join(self.CGROUP_V1, "memory.stat"),
                                   "total_inactive_file")
        except OSError:
            self.cgroup = None

    def read(self):
        """(bytes in use, bytes in all)."""
        if self.cgroup is None:
            memory = self.psutil.virtual_memory()
            return memory.total - memory.available, memory.total
        usage_file, limit, stat_file, inactive_key = self.cgroup
        used = _read_number(usage_file) or 0
        with open(stat_file) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == inactive_key:
                    used -= int(value)
                    break
        return max(used, 0), limit


def _read_number(path):
    """The integer in a cgroup file; None for "max" (no limit)."""
    with open(path) as f:
        text = f.read().strip()
    return None if text == "max" else int(text)


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _own_memory(pid):
    """The bytes a process uses by itself: resident, less the pages it shares (the arena,
    the node's pages it was forked with and has not written); None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            fields = f.read().split()
        return max(int(fields[1]) - int(fields[2]), 0) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def become_subreaper():
    """Make this process a child subreaper (Linux ≥ 3.4); returns whether it is one."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(pid):
    """Whether our child ``pid`` has exited (reaping it if so)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return bool(done)


def _reap_any():
    """Reap every child that has exited; True when no child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False


def _reap_all_of(pids, deadline):
    for pid in pids:
        while not _exited(pid) and time.monotonic() <= deadline:
            time.sleep(0.001)


class _Closed:
    closed = True


_CLOSED = _Closed()   # a node that could not be reached: no second attempt


def main(config_json, owner_fd):
    """Entry point: ``python -c ... main(config, fd)`` started by purerun.init()."""
    config = json.loads(config_json)
    config["node_id"] = bytes.fromhex(config["node_id"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver

    def on_term(signum, frame):
        raise SystemExit(0)
    # Before start-up, which may wait on a head for a while: a SIGTERM then still cleans up.
    signal.signal(signal.SIGTERM, on_term)
    try:
        node = Node(config)
    except SystemExit:
        shutil.rmtree(config["session_dir"], ignore_errors=True)
        raise
    except Exception as exc:
        # One line for whoever started it (purerun start shows it), not a traceback; it
        # removes the session directory once it has read this.
        print(f"purerun node: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    if owner_fd == "none":  # a standalone node (purerun start): runs until SIGTERM
        owner_fd = None
    if owner_fd is not None:
        try:
            node.add_driver(Connection(socket.socket(fileno=int(owner_fd))), owner=True)
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
