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
import shutil
import signal
import socket
import sys
import time

from purerun.core import protocol
from purerun.core.control_store import ControlStore
from purerun.core.node_state import (DISCONNECTED, DRIVER_CONNECTED, WORKER_OUTPUT,
                                     WORKER_STARTED, InterruptWorker, KillWorker, NodeState,
                                     Send, StartWorker, Stop)
from purerun.core.object_store import ObjectStore
from purerun.core.transport import Connection, EventLoop, Listener
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
        self.running = True

        self.address = os.path.join(self.session_dir, "node.sock")
        self.store = ObjectStore(config["object_store_memory"],
                                 spill_dir=os.path.join(self.session_dir, "spill"))
        resources = config["resources"]
        cpus = resources.get("CPU", 1)
        state_config = dict(config, address=self.address, arena_size=self.store.arena.size,
                            hostname=socket.gethostname())
        self.state = NodeState(
            state_config, self.store, ControlStore(),
            max_workers=max(MIN_MAX_WORKERS, int(MAX_WORKERS_PER_CPU * max(cpus, 1))),
            max_starting_workers=max(1, int(cpus)))
        self.prestart = min(PRESTART_WORKERS_MAX, max(1, int(cpus)))

        self.listener = Listener.unix(self.address)
        self.loop.add_listener(self.listener, self.add_driver)
        self.actions = {
            Send: self._do_send,
            StartWorker: self._do_start_worker,
            KillWorker: self._do_kill_worker,
            InterruptWorker: self._do_interrupt_worker,
            Stop: self._do_stop,
        }

    # -- NodeState's actions -----------------------------------------------------------------------

    def run(self, actions):
        do = self.actions
        for action in actions:
            do[type(action)](action)

    def _do_send(self, action):
        action.token.send(action.msg)

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
        for fd, stream in ((out_r, 1), (err_r, 2)):
            os.set_blocking(fd, False)
            self.pipes[fd] = [pid, stream, b""]
            self.loop.add_reader(fd, self.read_pipe)
        self.run(self.state.handle(conn, (WORKER_STARTED, worker_id, pid)))

    # -- connections -------------------------------------------------------------------------------

    def add_driver(self, conn, owner=False):
        self.loop.add_connection(conn, self.on_messages, self.on_close)
        self.run(self.state.handle(conn, (DRIVER_CONNECTED, owner)))
        # The WELCOME carries the arena descriptor; it is the first thing the driver reads.
        conn.send_fds((protocol.WELCOME, self.state.welcome_info(conn)), [self.store.arena.fd])
        return conn

    def on_messages(self, conn, messages):
        handle = self.state.handle
        for msg in messages:
            try:
                self.run(handle(conn, msg))
            except Exception:
                logger.exception("error handling message %r from %s", msg[0], conn.address)
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
        if self.running:
            self.loop.run()

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
            self.loop.remove(fd)
            os.close(fd)
            del self.pipes[fd]
            if state[2]:
                self.relay_log(state[0], state[1], state[2])
            return
        data = state[2] + data
        cut = data.rfind(b"\n")
        if cut < 0:
            state[2] = data
            return
        state[2] = data[cut + 1:]
        self.relay_log(state[0], state[1], data[:cut])

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
        self.reaping = bool(still)
        if still:
            self.loop.call_later(REAP_INTERVAL, self.reap)

    def stop(self):
        """Kill every worker, wait for them, release everything."""
        self.running = False
        pids = list(self.pids.values()) + self.to_reap
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
        loop, self.loop = self.loop, None   # on_close does nothing from here on
        loop.close()
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
