"""A worker process: runs the tasks and actor calls the node sends it.

The node forks workers from its own single-threaded process (a fork server: a worker is
ready in a few milliseconds instead of the ~100 ms a fresh interpreter takes here), so a
worker starts with the node's modules imported, in the driver's working directory with the
driver's ``sys.path``. ``run_worker`` is the whole life of the child after the fork.

::

    node ── EXECUTE ──▶ Client ──▶ Worker.execute ──▶ execute.Executor ──▶ TASK_DONE ──▶ node
         ── INTERRUPT ▶        ──▶ Worker.interrupt
         ── SIGINT ───────────────▶ _on_sigint (KeyboardInterrupt in the running task)

Reading: the main thread reads the socket itself (the Client's inline mode), between tasks
and while a task waits in get/wait; it takes each EXECUTE in turn (``Client.serve``), runs
it, stores its results (large ones straight into the arena) and sends TASK_DONE. Once
something needs reading in the background (a threaded or asyncio actor, a future, another
thread waiting) the Client's reader thread reads instead, for good, and hands each EXECUTE
to the main thread through the ``tasks`` queue (``Worker._received``).

Where calls run: a task, an actor's creation and a plain actor's calls on the main thread;
a threaded actor's calls on a thread pool per concurrency group; an asyncio actor's calls as
coroutines on one event-loop thread, a semaphore per concurrency group bounding them.

Cancelling: the node sends SIGINT for a running task, INTERRUPT for an actor call it has
sent here. An asyncio actor's call is cancelled (its coroutine, or its wait for a turn);
any other actor call is only marked, as in Ray: it does not start if it has not yet, and a
running one can see it in ``RuntimeContext.is_canceled()``. Either way its task id is in
``Worker.cancelled`` until the call ends.

Channels: a driver calls an asyncio or threaded actor on a socket of their own (see
core/direct.py). The node passes its ask on (ACTOR_CHANNEL); a thread here connects, proves
the ask's nonce and hands each call that comes to the loop or the pools as an EXECUTE from
the node would be; its result goes back on the channel (``_report``). A plain actor turns
the ask down by ignoring it: its callers' calls keep their order through the node.

Exits: a call that raises SystemExit, or another BaseException that is no Exception, ends
this process (``_worker_exit``), from whichever thread ran it, after its traceback and why
went to stderr (and so to the driver). The node sees a worker death, as after a crash. The
one exception is an actor's sys.exit(0), an intended exit: reported as the actor's end
(TASK_DONE's ``exiting`` says why), which the node does not restart.
"""

import asyncio
import atexit
import collections
import concurrent.futures
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
import traceback

from purerun import exceptions
from purerun.core import context, direct, ids, job_setup, protocol, serialization
from purerun.core.actors import actor_died_error
from purerun.core.client import Client
from purerun.core.execute import Executor, WorkerExit, none_results
from purerun.core.object_table import error_payload
from purerun.core.protocol import ARENA, ERROR, INLINE, ON_DISK
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

# A plain actor's call that ran longer than this makes the next call, read before it ended,
# look for messages first (an INTERRUPT for it). Below it the read would cost more than the
# call, and a cancellation that close to the call's start races with it anyway.
BACKLOG_READ_AFTER_S = 0.001
# A lease's results go back at least this often while more of its tasks wait here.
LEASE_DONE_BATCH = 32
LEASE_DONE_DELAY_S = 0.002


def run_worker(sock: socket.socket, arena_fd: int, info: dict, stdout_fd: int,
               stderr_fd: int, keep_fds) -> None:
    """Entry point of a freshly forked worker; never returns."""
    global _worker
    code = 1
    try:
        _become_worker(stdout_fd, stderr_fd, keep_fds)
        client = Client(sock, "worker", info=info, arena_fd=arena_fd, inline=True)
        context.client = client
        worker = _worker = Worker(client, queue.SimpleQueue())
        profile_dir = os.environ.get("PURERUN_WORKER_PROFILE")
        if profile_dir:  # for tuning: one cProfile dump per worker, in this directory
            import cProfile
            tasks_done = cProfile.Profile()
            tasks_done.runcall(worker.run)
            tasks_done.dump_stats(os.path.join(profile_dir, f"worker-{os.getpid()}.prof"))
        else:
            worker.run()
        code = 0
    except BaseException:  # last words before the process goes
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except Exception:
            pass
    finally:
        os._exit(code)


def _become_worker(stdout_fd, stderr_fd, keep_fds):
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    keep = set(keep_fds) | {0, 1, 2}
    # Close every descriptor inherited from the node (other workers' sockets, the listening
    # socket, pipes) except ours. The node's objects that wrap them stay referenced by the
    # frames below us and are never collected, so no stale close can hit a reused number.
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, _on_sigint)
    ids.reseed()
    random.seed()
    try:  # die with the node even if a task never returns to read the closed socket
        import ctypes
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The processes a task starts stay below this worker while it lives, even those
        # that detach (double fork, setsid): at its exit they go to the node, which kills
        # them (see core/node.py).
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:
        pass


# True while a task runs on the main thread: only then does SIGINT cancel anything.
_running = False
# A SIGINT came while no task ran on the main thread: the task it was meant for may not have
# started yet. The node sends an INTERRUPT naming that task before the signal; the next task
# to start reads it first (see _run_and_report), so a cancel that races the start still wins.
_sigint_missed = False
# This process's Worker, for the signal handler.
_worker = None
# The lease this worker serves (core/direct.py), while it serves one.
_lease = None


def _on_sigint(signum, frame):
    # The node sends SIGINT to cancel the running task (purerun.cancel without force).
    global _sigint_missed
    if not _running:
        _sigint_missed = True
        return
    client = context.client
    task = client.current_task
    if _lease is not None and not _lease.targets(task):
        return   # a late signal for a task of the lease that has ended: not this one's
    if task is not None:
        _worker.cancelled.add(task.task_id)
    if client.pumping:
        client.interrupt_pending = True  # raised once the message in hand is handled
    else:
        raise KeyboardInterrupt


class Worker:
    def __init__(self, client: Client, tasks: queue.SimpleQueue):
        self.client = client
        self.functions = {}          # function key -> callable
        self.pickled = {}            # function key -> pickled function, until first used
        self.calls = {}              # function key -> number of calls run (for max_calls)
        self.tasks = tasks
        self.actor = None            # the instance, in a worker that hosts an actor
        self.loop = None             # asyncio actors: the event loop (on its own thread)
        self.semaphores = None       # ... bounding coroutines in flight, per concurrency group
        self.pools = None            # threaded actors: a thread pool per concurrency group
        self.method_groups = {}      # method name -> its concurrency group
        self.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpu_ids_set = None      # what CUDA_VISIBLE_DEVICES was last set for
        # Actor calls received and not finished: task id -> the asyncio task running it
        # (asyncio actors, once it started), else None. Calls still in the Client's
        # deferred queue (read inline, not handed over yet) are not in it.
        self.actor_calls = {}
        # Inline reading: calls wait in the Client's deferred queue, read before a long
        # call that ran last had ended (see _run_inline_actor_call).
        self.backlog = False
        # Task ids of calls here that were cancelled (SIGINT, INTERRUPT), until they end.
        self.cancelled = set()
        # Calls that came on a driver's channel, not from the node: task id -> _Channel.
        self.direct_calls = {}
        self.actor_class_name = None
        self.ended = False   # a call ended the actor on purpose (True, or why: a str)
        self.executor = Executor(self._function_of, client._value_of, client.store_payload,
                                 release=self._release_dep, created=self._become_actor,
                                 node_ip=client.info.get("node_ip"),
                                 await_init=self._await_init,
                                 yielded=client.report_item)
        client.on_execute = self._received
        client.on_interrupt = self.interrupt
        client.task_cancelled = self.task_cancelled  # read by RuntimeContext.is_canceled
        client.on_actor_channel = self.open_channel

    def run(self):
        if self.client.inline and self.client.serve(self.execute):
            return
        # A reader thread now receives the tasks (threaded or asyncio actor, or a task that
        # needed background reading): take them from the queue it fills.
        get = self.tasks.get
        while True:
            msg = get()
            if msg is None:
                return
            if msg[0] == protocol.INTERRUPT:
                self.interrupt(msg[1], queued=True)
            elif self.execute(msg):
                return

    def _received(self, msg):
        """An EXECUTE the reader thread read: an asyncio or threaded actor's call goes straight
        to its event loop or thread pool (a hop through the main thread would only cost a
        thread wake-up per call); anything else is queued for the main thread."""
        spec = msg[1]
        if spec.kind == ACTOR_METHOD:
            self.actor_calls[spec.task_id] = None
            if self.loop is not None or self.pools is not None:
                self.execute(msg)
                return
        self.tasks.put(msg)

    def execute(self, msg) -> bool:
        """Run one task, or hand an actor call to the actor's threads or event loop.

        Returns True if this worker must exit afterwards (max_calls, or the actor ended).
        """
        _, spec, dep_payloads, pickled_fn, gpu_ids = msg
        if pickled_fn is not None and spec.function_key not in self.functions:
            self.pickled[spec.function_key] = pickled_fn
        if spec.kind == ACTOR_METHOD:
            self.actor_calls.setdefault(spec.task_id, None)
            if self.loop is not None:
                asyncio.run_coroutine_threadsafe(self._run_async(spec, dep_payloads), self.loop)
                return False
            if self.pools is not None:
                pool = self.pools.get(self._group_of(spec)) or self.pools[None]
                pool.submit(self._run_in_thread, spec, dep_payloads)
                return False
            if self.client.inline:
                return self._run_inline_actor_call(spec, dep_payloads)
        elif spec.env_vars and not job_setup.RESERVED.isdisjoint(spec.env_vars):
            try:
                job_setup.prepare(spec.env_vars)
            except job_setup.SetupHookError as exc:
                return self._fail_setup(spec, dep_payloads, str(exc))
        return self._run_and_report(spec, dep_payloads, gpu_ids)

    def _fail_setup(self, spec, dep_payloads, message):
        """The job's setup hook failed here: the task (or actor creation) fails with it."""
        self.executor.release_arguments(spec, dep_payloads)
        results, _, _ = self.executor.failure(spec, exceptions.RuntimeEnvSetupError(message))
        return self._report(spec, results, False, False, time.time())

    def _run_inline_actor_call(self, spec, dep_payloads):
        """A plain actor's call, with the main thread reading the socket between calls.

        Calls read while an earlier one ran wait in the Client's deferred queue and would
        start without another read: after a long call, the next one first reads what the
        node sent meanwhile, such as an INTERRUPT for it.
        """
        client = self.client
        if self.backlog:
            client._pump(0)
        started = time.monotonic()
        exiting = self._run_and_report(spec, dep_payloads, ())
        self.backlog = bool(client._deferred) and \
            time.monotonic() - started > BACKLOG_READ_AFTER_S
        return exiting

    def interrupt(self, task_id, queued=False):
        """INTERRUPT: the node cancelled an actor call it sent here.

        Runs on whichever thread reads the socket, so it never sends. ``queued``: called
        again from the main thread's queue, behind the EXECUTEs read before it.
        """
        if self.actor is None and self.loop is None and self.pools is None:
            # A task worker: the task named is running, about to start, or done. The next
            # start checks ``cancelled``; a finished task's id just stays (ids are unique).
            self.cancelled.add(task_id)
            return
        calls = self.actor_calls
        if task_id in calls or any(msg[1].task_id == task_id
                                   for msg in list(self.client._deferred)):
            self.cancelled.add(task_id)
            task = calls.get(task_id)
            if task is not None:
                self.loop.call_soon_threadsafe(task.cancel)
        elif not queued and not self.client.inline:
            # Its EXECUTE may be between the deferred queue and ``actor_calls`` (the main
            # thread hands it over right now): look again from the main thread, in order.
            self.tasks.put((protocol.INTERRUPT, task_id))
        # Otherwise the call has finished, and its result stands. A call that finishes
        # between the check and the add above leaves its id in ``cancelled``: task ids are
        # never reused, so that costs a few bytes, never a wrong answer.

    def task_cancelled(self, task_id) -> bool:
        """Whether the call ``task_id`` was cancelled (RuntimeContext.is_canceled)."""
        client = self.client
        if client.inline and not client.pumping and \
                threading.get_ident() == client._inline_thread:
            client._pump(0)  # nothing else reads the socket while this call runs
        return task_id in self.cancelled

    def _group_of(self, spec):
        """The concurrency group of an actor call: the call's option, else the method's."""
        if spec.concurrency_group:
            return spec.concurrency_group
        return self.method_groups.get(spec.method)

    def _run_in_thread(self, spec, dep_payloads):
        if self._run_and_report(spec, dep_payloads, ()):
            self.tasks.put(None)  # wake the main thread so the process can exit

    def _run_and_report(self, spec, dep_payloads, gpu_ids):
        global _running, _sigint_missed
        client = self.client
        client.current_task = spec
        kind = spec.kind
        env_vars = None
        if kind != ACTOR_METHOD:
            client.gpu_ids = gpu_ids
            self._set_gpus(gpu_ids)
            if kind == ACTOR_CREATION:
                self._set_actor_identity(spec)
                if spec.env_vars:
                    os.environ.update(spec.env_vars)  # for the actor's whole life
            else:
                env_vars = spec.env_vars
        task_id = spec.task_id
        started = time.time()
        # The return value stays alive until TASK_DONE is sent: refs inside it must not be
        # dropped before the node has recorded that the stored result holds them.
        keep = []
        try:
            if kind == ACTOR_METHOD and task_id in self.cancelled:
                # Cancelled before it started: it does not start.
                self.executor.release_arguments(spec, dep_payloads)
                outcome = self.executor.cancelled(spec), False, False
            else:
                _running = threading.current_thread() is threading.main_thread()
                try:
                    if _running and _sigint_missed and kind != ACTOR_METHOD:
                        # A cancel signal came before this task started: read the INTERRUPT
                        # that came with it, to see whether it named this task.
                        _sigint_missed = False
                        try:
                            client._pump(0)
                        except KeyboardInterrupt:  # a new signal, now that it runs
                            self.cancelled.add(task_id)
                    if kind != ACTOR_METHOD and task_id in self.cancelled:
                        self.executor.release_arguments(spec, dep_payloads)
                        outcome = self.executor.cancelled(spec), False, False
                    else:
                        try:
                            outcome = self.executor.run(spec, dep_payloads,
                                                        instance=self.actor,
                                                        env_vars=env_vars, keep=keep)
                        except WorkerExit as end:
                            outcome = _worker_exit(spec, end)
                finally:
                    _running = False
        finally:
            client.current_task = None
            if spec.backpressure > 0:
                client.forget_items_read(task_id)
            if kind == ACTOR_METHOD:
                self.actor_calls.pop(task_id, None)
            if self.cancelled:
                self.cancelled.discard(task_id)
            _flush_output()
        return self._report(spec, *outcome, started)

    async def _run_async(self, spec, dep_payloads):
        task_id = spec.task_id
        self.actor_calls[task_id] = asyncio.current_task()
        started = time.time()
        keep = []  # as in _run_and_report
        try:
            # Registered above before this check, and interrupt() adds before it looks the
            # task up: a cancellation is seen here or cancels the asyncio task, or both.
            if task_id in self.cancelled:
                raise asyncio.CancelledError
            semaphore = self.semaphores.get(self._group_of(spec)) or self.semaphores[None]
            async with semaphore:
                started = time.time()
                self.client.current_task = spec
                # run_async catches whatever the call raises, cancellation included, and
                # nothing here awaits once it has returned.
                try:
                    outcome = await self.executor.run_async(spec, dep_payloads, self.actor,
                                                            keep=keep)
                except WorkerExit as end:
                    outcome = _worker_exit(spec, end)
        except asyncio.CancelledError:  # before its turn came: it never started
            self.executor.release_arguments(spec, dep_payloads)
            outcome = self.executor.cancelled(spec), False, False
        finally:
            self.actor_calls.pop(task_id, None)
            self.cancelled.discard(task_id)
            if spec.backpressure > 0:
                self.client.forget_items_read(task_id)
            _flush_output()
        if self._report(spec, *outcome, started):
            self.tasks.put(None)

    def _report(self, spec, results, retry, exiting, started):
        if spec.max_calls and not exiting:
            count = self.calls.get(spec.function_key, 0) + 1
            self.calls[spec.function_key] = count
            exiting = count >= spec.max_calls
        if exiting and self.actor is not None:
            self.ended = exiting
            _graceful_exit_hooks()
        channel = self.direct_calls.pop(spec.task_id, None) if self.direct_calls else None
        if channel is not None:
            self._report_on_channel(channel, spec, results, exiting, started)
            return exiting
        self.client.send((protocol.TASK_DONE, spec.task_id, results, retry, exiting,
                          (started, time.time())))
        return exiting

    # ── channels (see core/direct.py) ─────────────────────────────────────────────────────

    def open_channel(self, address, nonce):
        """ACTOR_CHANNEL: a driver asks for a channel to the actor here (on the reader
        thread: this only starts the channel's own)."""
        if self.loop is not None:
            # The event loop reads the channel itself: a call starts with no thread hop.
            self.loop.call_soon_threadsafe(self._open_loop_channel, address, nonce)
        elif self.pools is not None:
            threading.Thread(target=self._serve_channel, args=(address, nonce), daemon=True,
                             name="purerun-actor-channel").start()
        # A plain actor turns it down: its calls keep their order through the node.

    def _connect_channel(self, address, nonce):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
            sock.sendall(nonce + protocol.encode(
                (protocol.ACTOR_HELLO, os.getpid(), self.client.actor_incarnation)))
        except OSError:
            sock.close()
            return None
        return _Channel(sock, nonce)

    def _open_loop_channel(self, address, nonce):
        channel = self._connect_channel(address, nonce)
        if channel is not None:
            self.loop.add_reader(channel.sock.fileno(), self._read_loop_channel, channel)

    def _read_loop_channel(self, channel):
        """The channel is readable (on the event loop): start the calls that came."""
        try:
            data = channel.buffer.recv(channel.sock)
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(channel.sock.fileno())
            channel.closed = True
            channel.sock.close()
            return
        self._channel_messages(channel, data, self._start_on_loop)

    def _start_on_loop(self, spec):
        self.actor_calls[spec.task_id] = None
        self.loop.create_task(self._run_async(spec, ()))

    def _channel_messages(self, channel, data, start):
        """Handle what a channel brought: calls, started by ``start(spec)``; cancels."""
        for msg in channel.frames.feed(data):
            kind = msg[0]
            if kind == protocol.LEASE_TASKS:
                for spec, _pickled in msg[1]:
                    self.direct_calls[spec.task_id] = channel
                    start(spec)
            elif kind == protocol.LEASE_CANCEL:
                self.interrupt(msg[1])

    def _serve_channel(self, address, nonce):
        """A threaded actor's channel, read by a thread of its own."""
        channel = self._connect_channel(address, nonce)
        if channel is None:
            return
        sock = channel.sock
        received = self._received

        def start(spec):
            received((protocol.EXECUTE, spec, (), None, ()))
        try:
            while True:
                data = channel.buffer.recv(sock)
                if not data:
                    return
                self._channel_messages(channel, data, start)
        except OSError:
            pass   # the driver is gone
        finally:
            channel.closed = True
            sock.close()

    def _report_on_channel(self, channel, spec, results, exiting, started):
        client = self.client
        ended = self.ended
        if ended:
            # A call ended the actor on purpose (this one, or one before it, which the
            # calls that end after it follow): it fails as it would through the node.
            error = error_payload(actor_died_error(
                client.actor_id, self.actor_class_name,
                ended if type(ended) is str else "The actor exited via exit_actor()."))
            results = [(object_id, ERROR, error, ()) for object_id in spec.return_ids()]
        elif any(kind != INLINE and kind != ERROR or contained
                 for _oid, kind, _payload, contained in results):
            results = _hand_over(client, results, channel.nonce)
        channel.send((protocol.LEASE_DONE,
                      ((spec.task_id, results, False, (started, time.time())),)))
        if exiting:
            client.send((protocol.ACTOR_EXITING, exiting))   # after the result: it ends us

    def _function_of(self, spec):
        """The function of a task or the class of an actor creation, by function key."""
        key = spec.function_key
        fn = self.functions.get(key)
        if fn is None:
            pickled = self.pickled.get(key)
            if pickled is None:
                raise exceptions.RaySystemError("the node sent a task for a function this "
                                                "worker has never received")
            fn = self.functions[key] = serialization.deserialize(pickled)
            del self.pickled[key]
        return fn

    def _release_dep(self, object_id, entry):
        # Return the pin the node gave us with a location we will not read.
        if entry[0] == ARENA or entry[0] == ON_DISK:
            self.client._unpin(object_id)

    def _set_actor_identity(self, spec):
        # Set before __init__ runs, so it can use get_runtime_context() and exit_actor().
        client = self.client
        client.actor_id = spec.actor_id
        actor = spec.actor
        client.actor_name = actor.name
        client.actor_is_async = actor.is_async
        client.actor_resources = dict(actor.hold or {})
        client.actor_meta = actor.meta
        client.actor_env_vars = spec.env_vars
        # The node counts the actor's restarts in its creation's attempt.
        client.actor_restarted = spec.attempt > 0
        client.actor_incarnation = spec.attempt
        self.actor_class_name = actor.class_name

    def _become_actor(self, spec, instance):
        actor = spec.actor
        self.actor = instance
        # Concurrency groups: each has its own limit; calls outside any group share the
        # default one (key None), max_concurrency.
        limits = dict(actor.concurrency_groups)
        limits[None] = actor.max_concurrency
        meta = actor.meta
        if meta is not None:
            self.method_groups = {name: opts["concurrency_group"]
                                  for name, opts in meta.methods.items()
                                  if opts.get("concurrency_group")}
        if actor.is_async:
            self.loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run_loop():
                asyncio.set_event_loop(self.loop)
                self.semaphores = {group: asyncio.Semaphore(limit)
                                   for group, limit in limits.items()}
                ready.set()
                self.loop.run_forever()
            threading.Thread(target=run_loop, name="purerun-actor-loop", daemon=True).start()
            ready.wait()
        elif len(limits) > 1 or limits[None] > 1:
            self.pools = {group: concurrent.futures.ThreadPoolExecutor(
                limit, thread_name_prefix=f"purerun-actor-{group or 'default'}")
                for group, limit in limits.items()}
        if self.loop is not None or self.pools is not None:
            # Calls now run on other threads while this one reads: a reader thread it is.
            self.client.start_reader()

    def _await_init(self, spec, coroutine):
        """An asyncio actor's ``async def __init__``, run on its loop before any call."""
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _set_gpus(self, gpu_ids):
        if gpu_ids == self.gpu_ids_set:
            return  # the environment already says so: skip the os.environ writes
        self.gpu_ids_set = gpu_ids
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
        elif self.cuda_visible_devices is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices


class _Channel:
    """The worker's end of a driver's channel to its actor."""

    __slots__ = ("sock", "nonce", "lock", "closed", "frames", "buffer")

    def __init__(self, sock, nonce):
        self.sock = sock
        self.nonce = nonce
        self.lock = threading.Lock()   # the sending
        self.closed = False
        self.frames = protocol.FrameReader()
        self.buffer = protocol.RecvBuffer()

    def send(self, msg):
        data = protocol.encode(msg)
        try:
            with self.lock:
                self.sock.sendall(data)
        except OSError:
            pass   # the driver is gone: nobody waits for the result


class _LeaseState:
    """What a lease's socket brought: tasks to run, cancellations, the end."""

    def __init__(self, sock, functions, pickled):
        self.sock = sock
        self.frames = protocol.FrameReader()
        self.queue = collections.deque()   # specs, in the order sent
        self.cancelled = {}                # task id -> recursive
        self.ending = False
        self.gone = False
        self.functions = functions
        self.pickled = pickled
        self.handler_buffer = protocol.RecvBuffer()   # drain() may run in a signal handler

    def take(self, messages):
        for msg in messages:
            kind = msg[0]
            if kind == protocol.LEASE_TASKS:
                for spec, pickled in msg[1]:
                    if pickled is not None and spec.function_key not in self.functions:
                        self.pickled[spec.function_key] = pickled
                    self.queue.append(spec)
            elif kind == protocol.LEASE_CANCEL:
                self.cancelled[msg[1]] = msg[2]
            elif kind == protocol.LEASE_END:
                self.ending = True

    def drain(self):
        """Take what has arrived, without waiting (also from the SIGINT handler)."""
        while not self.gone:
            try:
                data = self.handler_buffer.recv(self.sock, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.gone = True
                return
            self.take(self.frames.feed(data))

    def targets(self, task):
        """SIGINT: whether a cancel for the running ``task`` came with it."""
        self.drain()
        return task is not None and task.task_id in self.cancelled


class _LeaseResults:
    """A lease's results on their way back: sent at once when nothing else waits here, else
    gathered (``LEASE_DONE_BATCH`` per message) while the tasks run briefly. A task running
    longer than ``LEASE_DONE_DELAY_S`` has what it was gathered behind sent by a thread of
    its own meanwhile: no result waits for a long task that came after it."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()   # the sending, and ``out``
        self.out = []
        self.running_since = None      # when the task running now started (monotonic)
        self.held = threading.Event()  # results are held while a task runs
        self.over = False
        self.thread = None

    def add(self, done, more_waiting):
        with self.lock:
            out = self.out
            out.append(done)
            if not more_waiting or len(out) >= LEASE_DONE_BATCH:
                self._send()
            elif len(out) == 1:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._watch, daemon=True,
                                                   name="purerun-lease-results")
                    self.thread.start()
                self.held.set()

    def flush(self):
        with self.lock:
            if self.out:
                self._send()

    def _send(self):
        # Called with the lock held.
        out, self.out = self.out, []
        self.sock.sendall(protocol.encode((protocol.LEASE_DONE, out)))

    def _watch(self):
        while not self.over:
            self.held.wait()
            time.sleep(LEASE_DONE_DELAY_S)
            with self.lock:
                since = self.running_since
                if self.out and since is not None and \
                        time.monotonic() - since >= LEASE_DONE_DELAY_S:
                    try:
                        self._send()
                    except OSError:
                        return
                if not self.out:
                    self.held.clear()

    def close(self):
        self.over = True
        self.held.set()


def serve_lease(sock):
    """Run the tasks a driver sends on its lease until it ends the lease or leaves."""
    global _lease, _running, _sigint_missed
    worker = _worker
    client = worker.client
    executor = worker.executor
    lease_spec = client.current_task
    state = _LeaseState(sock, worker.functions, worker.pickled)
    queue = state.queue
    results = _LeaseResults(sock)
    # Out of tasks, this worker polls for the next one before it sleeps, as the driver
    # polls for results (direct.SPIN_S): a get(f.remote()) loop then wakes neither side.
    polling = direct.PollRule(direct.SPIN_S)
    _lease = state
    _running = False   # between its tasks a signal stops nothing
    try:
        while True:
            if not queue:
                results.flush()
                if state.ending or state.gone:
                    return
                data = polling.recv(sock)
                if not data:
                    return
                state.take(state.frames.feed(data))
                continue
            spec = queue.popleft()
            task_id = spec.task_id
            started = time.time()
            keep = []
            client.current_task = spec
            client.children = []
            results.running_since = time.monotonic()
            try:
                _running = True
                try:
                    while _sigint_missed:
                        # A cancel's signal came while no task ran (up to the line above):
                        # read the cancel it came with, not running, so that a signal
                        # meanwhile is only noted (the handler reads the socket too).
                        _running = _sigint_missed = False
                        state.drain()
                        _running = True
                    if task_id in state.cancelled:
                        outcome = executor.cancelled(spec), False, False
                    else:
                        outcome = executor.run(spec, (), keep=keep)
                except KeyboardInterrupt:
                    # A cancel's signal for this task, before executor.run took it.
                    outcome = executor.cancelled(spec), False, False
                except WorkerExit as end:
                    outcome = _worker_exit(spec, end)
                finally:
                    _running = False
            finally:
                results.running_since = None
                client.current_task = lease_spec
                children, client.children = client.children, None
            if state.cancelled:
                recursive = state.cancelled.pop(task_id, None)
                if recursive and children:
                    for child in children:
                        client.send((protocol.CANCEL, ids.object_id(child, 0), False, True))
            worker.cancelled.discard(task_id)
            _flush_output()
            returned = outcome[0]
            if any(kind != protocol.INLINE and kind != protocol.ERROR or contained
                   for _oid, kind, _payload, contained in returned):
                returned = _hand_over(client, returned)
            keep = None
            results.add((task_id, returned, outcome[1], (started, time.time())), bool(queue))
    finally:
        results.close()
        _lease = None
        client.current_task = lease_spec


def _hand_over(client, results, channel=None):
    """Have the node seal the results it must hold for the driver (the lease's, or the one
    that asked for actor channel ``channel``); report them STORED."""
    held = [result for result in results
            if result[1] != protocol.INLINE and result[1] != protocol.ERROR or result[3]]
    client.request("direct_put", held, channel)
    held_ids = {result[0] for result in held}
    return [(oid, protocol.STORED, None, ()) if oid in held_ids else (oid, kind, payload, ())
            for oid, kind, payload, contained in results]


def _worker_exit(spec, end):
    """A call raised SystemExit (or another BaseException that is no Exception): as in Ray,
    this worker ends. An actor's sys.exit(0) is an intended exit: the call is reported as
    the actor's end (``exiting`` says why), then the worker leaves. Otherwise the process
    ends here, and the node treats it as any worker death: a task is retried, an actor
    restarted if it may be."""
    if end.intended and spec.kind in (ACTOR_METHOD, ACTOR_CREATION):
        return none_results(spec), False, end.reason
    try:
        exc = end.exc
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        print(end.reason, file=sys.stderr)
    except Exception:
        pass
    _flush_output()
    os._exit(end.code)


def _graceful_exit_hooks():
    """An actor ending on purpose (exit_actor, __ray_terminate__) runs its atexit handlers."""
    try:
        atexit._run_exitfuncs()
    except Exception:
        pass


def _flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
