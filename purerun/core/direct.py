"""The direct call path: a driver's plain tasks go straight to workers it leased.

A tiny task through the node crosses four sockets (driver → node → worker → node → driver)
and costs the node tens of microseconds. Here the node only grants and revokes leases::

    driver: DirectSubmitter              node (core/lease_rules.py)         worker
    ───────────────────────              ──────────────────────────         ──────
    SUBMIT a lease task (1 CPU) ───────▶ schedules it as any task ───▶ serve_lease()
                  ◀──────────── connects to the driver, sends the lease's nonce ───
    LEASE_TASKS [spec, ...] ───────────────────────────────────────────▶ runs them in turn
                  ◀──────────────────────────────── LEASE_DONE [results, ...] ───
    DIRECT_DONE (records) ─────────────▶ task history, timeline
                  ◀── REVOKE ────────── other work waits for the CPU
    LEASE_END ─────────────────────────────────────────────────────────▶ the lease task ends

Which tasks: those a driver submits with the default options of a plain task (one CPU, no
strategy, no runtime_env, no max_calls, not a generator) and no ObjectRef in their
arguments, on a node that is not part of a cluster. Everything else goes through the node
as before; so do the tasks those tasks submit.

Several tasks travel per message: a lease takes up to ``depth`` tasks ahead, which doubles
while its tasks are short (``SHORT_TASK_S``) and falls back to one after a long one, so a
long task never holds short ones back behind it while another lease could run them.

Their return values stay in the driver while nobody else needs them. One handed on (as an
argument, inside a value, pickled) is made known to the node first: PUT if it is back,
else PROMISE, and SEAL when it comes (Client._publish). A worker's result the node must
hold (stored in the arena, or holding refs) it has the node seal for the driver
(``direct_put``) before it reports it.

The driver decides retries: a task that raised a retryable exception, or whose worker
died, runs again on a lease while its max_retries allow; the lease task's own outcome says
why its worker died (OutOfMemoryError from the memory monitor). Cancelling sends
LEASE_CANCEL, then SIGINT: the worker's signal handler reads the cancel before it stops the
running task, so a signal that arrives late never stops the next one. force=True has the
node kill the worker, as for any task.

An idle lease is kept ``LINGER_S`` for the next task (a loop of ``get(f.remote())`` keeps
its lease), then ended; a REVOKE ends it as soon as its tasks are done.

Actor calls: a driver's calls of an asyncio or threaded actor of this node, with no
ObjectRef among their arguments, go on a channel of their own to the actor's worker
(``ActorChannel``). Ray promises such actors no order among a caller's calls; still, the
first call on a channel waits for the result of the last one sent through the node. The
node passes the driver's ask to the worker once the actor is alive; the worker connects
as a leased worker does. Calls in flight when the channel closes (the actor died, was
killed or restarts) go to the node (``ACTOR_LOST``), which settles them as calls in flight
on that incarnation: retried on the next while max_task_retries allow, else failed with
why the actor died. The next call asks for a channel again. A plain actor keeps its
callers' calls in order, so its calls go through the node.

Reading a lease's socket: a thread that waits in get/wait for results all in flight on
one lease reads that lease itself (``read_for``), so that in a loop of ``get(f.remote())``
the result wakes the waiting thread and nothing else. Otherwise the lease's reader thread
reads it, once armed: several tasks in flight, tasks queued behind it (their batches leave
as results come back), a future on one of its results, its end, or results nobody took in
for ``UNREAD_AFTER_S``.
"""

import collections
import os
import select
import signal
import socket
import threading
import time

from purerun import exceptions
from purerun.core import ids, protocol, serialization
from purerun.core.object_table import error_payload
from purerun.core.protocol import ERROR
from purerun.core.task_spec import ACTOR_METHOD, LEASE_NAME, NORMAL, TaskSpec
from purerun.core.tasks import retries_left

__all__ = ["DirectSubmitter", "actor_call_eligible", "eligible", "serve_lease"]

LINGER_S = 0.5          # an idle lease waits this long for the next task
LINGER_CHECK_S = 0.1    # how often idle leases are looked at
UNREAD_AFTER_S = 0.05   # results not waited for are read by then (a lease's reader thread)
# A thread waiting for a result on its lease polls the socket this long before it blocks
# (PURERUN_SPIN_US; 0: never), while the lease's waits end within it: a reply that comes
# that soon then needs no wake-up of a sleeping thread, which on a virtual machine costs
# tens to hundreds of microseconds each way. One core: never (the worker needs it).
SPIN_S = (int(os.environ.get("PURERUN_SPIN_US", "300")) / 1e6
          if (os.cpu_count() or 1) > 1 else 0.0)
# A poll that saw no reply in time skips polling for its lease's next 1, 2, 4, ... waits (at
# most this many), then polls again: a wait without polling includes the wake-up, so it
# cannot tell by itself whether replies would come in time again.
SPIN_BACKOFF_MAX = 64
MAX_DEPTH = 64          # tasks sent ahead on one lease
SHORT_TASK_S = 0.002    # tasks this short let their lease take more ahead
LEASE_FAILURES = 3      # leases that failed to start in a row before the node runs the tasks
NONCE_SIZE = 16
GREET_TIMEOUT_S = 5.0
_ONE_CPU = {"CPU": 1.0}
# How long a lost lease's driver waits for the node to say how its worker died.
LEASE_OUTCOME_TIMEOUT_S = 10.0
_NODE_GONE = object()
# How long close() waits for the submitter's threads to leave.
CLOSE_JOIN_S = 2.0


def eligible(spec) -> bool:
    """Whether a driver's task (with no ObjectRef in its arguments) may run on a lease."""
    return (spec.kind == NORMAL and spec.generator is None and not spec.max_calls
            and spec.strategy is None and spec.env_vars is None
            and spec.resources == _ONE_CPU and spec.name != LEASE_NAME)


def actor_call_eligible(spec) -> bool:
    """Whether a driver's actor call (with no ObjectRef in its arguments) may go on a
    channel: it returns values (no generator), retries no exception, and does not end the
    actor on purpose (``__ray_terminate__``)."""
    return (spec.kind == ACTOR_METHOD and spec.generator is None and spec.num_returns >= 1
            and not spec.retry_exceptions and spec.backpressure <= 0
            and spec.method != "__ray_terminate__")


class DirectTask:
    __slots__ = ("spec", "pickled", "lease", "cancelled", "force")

    def __init__(self, spec, pickled):
        self.spec = spec
        self.pickled = pickled    #: the pickled function, sent with a lease's first task of it
        self.lease = None         #: the Lease it was sent on, None while queued here
        self.cancelled = False
        self.force = False


class PollRule:
    """Whether a thread about to wait for bytes on a socket polls it first, for up to
    ``window`` seconds: yes while its waits end within the window; a poll that timed out
    skips polling for the next 1, 2, 4 ... waits (at most SPIN_BACKOFF_MAX), then tries
    again. A wait without a poll includes the sleeping thread's wake-up, so it cannot
    tell by itself whether replies would come in time again."""

    __slots__ = ("window", "skip", "backoff")

    def __init__(self, window):
        self.window = window
        self.skip = 0        #: waits to go before polling again
        self.backoff = 1     #: the skip after the next poll that times out

    def will_poll(self):
        """Whether the next wait polls first; counts the wait."""
        if not self.window:
            return False
        if self.skip:
            self.skip -= 1
            return False
        return True

    def waited(self, seconds, polled):
        """The wait ``will_poll`` allowed (``polled``) or not ended after ``seconds``."""
        if seconds < self.window:
            self.skip = 0
            self.backoff = 1
        elif polled:
            self.skip = self.backoff
            self.backoff = min(2 * self.backoff, SPIN_BACKOFF_MAX)

    def recv(self, sock, timeout=None):
        """``protocol.recv(sock)`` after a poll (if the rule says so) of up to the window;
        with a ``timeout``, None when nothing came within it."""
        start = time.perf_counter()
        polled = self.will_poll()
        data = None
        if polled:
            end = start + self.window
            recv = protocol.recv
            while True:
                try:
                    data = recv(sock, socket.MSG_DONTWAIT)
                    break
                except BlockingIOError:
                    if time.perf_counter() > end:
                        break
        if data is None:
            if timeout is not None and not select.select([sock], [], [], max(timeout, 0))[0]:
                return None
            data = protocol.recv(sock)
        self.waited(time.perf_counter() - start, polled)
        return data


_NO_POLL = PollRule(0.0)   # never polls, so never changes: shared by every reader thread


class Lease:
    __slots__ = ("task_id", "ref", "nonce", "sock", "pid", "inflight", "depth", "functions",
                 "revoked", "ended", "send_lock", "idle_since", "frames", "read_lock", "armed",
                 "wake", "gone", "sent_at", "actor_id", "polling")

    def __init__(self):
        self.actor_id = None               #: an ActorChannel's actor
        self.polling = PollRule(SPIN_S)    #: whether a wait for its results polls first
        self.task_id = ids.new_task_id()   #: the lease task's id
        self.ref = None                    #: ObjectRef to its return value
        self.nonce = os.urandom(NONCE_SIZE)
        self.sock = None                   #: the worker's connection, once it connected
        self.pid = None
        self.inflight = {}                 #: task id -> DirectTask sent and not done
        self.depth = 1
        self.functions = set()             #: function keys the worker has from us
        self.revoked = False
        self.ended = False                 #: LEASE_END sent, or the connection is gone
        self.send_lock = threading.Lock()
        self.idle_since = None             #: time.monotonic() when its last task was done
        self.frames = None                 #: its protocol.FrameReader, once connected
        # Reading: whoever holds read_lock reads the socket (and handles what came): the
        # thread that waits for a result of it (read_for), else its reader thread, once
        # ``armed`` (several tasks in flight, tasks queued behind it, a future, its end).
        self.read_lock = threading.Lock()
        self.armed = False
        self.wake = threading.Event()
        self.gone = False                  #: its connection closed, and _lost settled it
        self.sent_at = 0.0                 #: time.monotonic() of the last tasks sent


class ActorChannel(Lease):
    """A channel to the worker of one actor: its calls are sent and answered as a lease's
    tasks are (``inflight`` holds them), and it is read the same ways."""

    __slots__ = ("incarnation", "keep", "after")

    def __init__(self, actor_id):
        super().__init__()
        self.actor_id = actor_id
        self.incarnation = None   #: the actor's restarts when its worker connected
        self.keep = None          #: the actor's ref while calls are in flight (keeps it alive)
        self.after = None         #: the id whose result the next call waits for (see call)


class DirectSubmitter:
    """A driver's leases and the tasks it runs on them. See the module docstring.

    Args:
        client: the driver's Client.
        max_leases: leases held at most at once (the node's CPUs).
    """

    def __init__(self, client, max_leases):
        self.client = client
        self.max_leases = max_leases
        self.lock = threading.Lock()
        self.queue = collections.deque()   # DirectTasks waiting for room on a lease
        self.tasks = {}                    # task id -> DirectTask, queued or in flight
        self.requested = {}                # nonce -> Lease asked of the node, not connected
        self.leases = {}                   # lease task id -> connected Lease
        self.returning = set()             # Leases gone whose task's end is not back yet
        self.channels = {}                 # actor id -> ActorChannel asked for or connected
        self.channel_asks = {}             # nonce -> ActorChannel asked for, not connected
        self.forgotten = collections.deque()   # actor ids with no handle here anymore
        self.failures = 0
        self.closed = False
        self._closing = threading.Event()
        self._janitor = None               # the thread ending leases idle for LINGER_S
        self._threads = []                 # the leases' reader threads, started so far
        pickled = serialization.dumps(serve_lease)
        from purerun.core.client import function_key
        self._lease_function = (function_key(pickled, "purerun.core.direct.serve_lease"),
                                pickled)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # An abstract name: nothing to remove, gone with this process.
        self.address = b"\0purerun-direct-" + os.urandom(8).hex().encode()
        self.listener.bind(self.address)
        self.listener.listen(64)
        self._acceptor = threading.Thread(target=self._accept_loop, name="purerun-leases",
                                          daemon=True)
        self._acceptor.start()

    # ── submitting ─────────────────────────────────────────────────────────────────────────

    def submit(self, spec, pickled) -> bool:
        """Run ``spec`` on a lease; False if this submitter is closed (use the node)."""
        task = DirectTask(spec, pickled)
        request = batch = None
        with self.lock:
            if self.closed:
                return False
            self.tasks[spec.task_id] = task
            lease = self._room()
            if lease is not None and not lease.inflight:
                batch = self._load(lease, task)   # an idle worker: at once
            else:
                # Behind tasks in flight: sent with the others that queue meanwhile, when
                # results come back (one write per batch, not per task).
                self.queue.append(task)
                request = self._want_lease()
                for busy in self.leases.values():
                    if busy.inflight and not busy.armed:
                        self._arm(busy)
        if batch:
            self._send(lease, (protocol.LEASE_TASKS, batch))
        elif request is not None:
            self._request(request)
        return True

    def _room(self):
        """The connected lease with the fewest tasks in flight and room for one more."""
        best = None
        for lease in self.leases.values():
            if lease.ended or lease.revoked:
                continue
            count = len(lease.inflight)
            if count < lease.depth and (best is None or count < len(best.inflight)):
                best = lease
        return best

    def _want_lease(self):
        """A new Lease to ask the node for, if tasks wait and there may be room for it."""
        if self.queue and not self.closed and \
                len(self.leases) + len(self.requested) < self.max_leases:
            lease = Lease()
            self.requested[lease.nonce] = lease
            return lease
        return None

    def _load(self, lease, first=None):
        """Take tasks for ``lease`` (``first``, then the queue's) up to its depth; called
        with the lock held. Returns the LEASE_TASKS entries to send."""
        batch = []
        inflight = lease.inflight
        functions = lease.functions
        queue = self.queue
        while True:
            if first is not None:
                task, first = first, None
            elif queue and len(inflight) < lease.depth:
                task = queue.popleft()
            else:
                return batch
            spec = task.spec
            task.lease = lease
            lease.idle_since = None
            inflight[spec.task_id] = task
            key = spec.function_key
            if key in functions:
                batch.append((spec, None))
            else:
                functions.add(key)
                batch.append((spec, task.pickled))

    def _arm(self, lease):
        """Have the lease's reader thread read it (called with the lock held)."""
        lease.armed = True
        lease.wake.set()

    def _send(self, lease, msg):
        lease.sent_at = time.monotonic()
        data = protocol.encode(msg)
        try:
            with lease.send_lock:
                lease.sock.sendall(data)
        except OSError:
            pass   # the worker is gone: its reader thread settles what was in flight

    def _request(self, lease):
        """Ask the node for ``lease``: a task of ours that serves us from a worker."""
        client = self.client
        key, pickled = self._lease_function
        client.export_function(key, pickled)
        args = serialization.to_inline(serialization.serialize(
            ((self.address, lease.nonce), {})))
        spec = TaskSpec(task_id=lease.task_id, name=LEASE_NAME, function_key=key, args=args,
                        args_in_store=False, deps=[], contained=[], num_returns=1,
                        resources=dict(_ONE_CPU), max_retries=0, job_id=client.job_id)
        lease.ref = client.new_ref(spec.return_ids()[0], subscribed=True)
        try:
            client.send((protocol.SUBMIT, spec))
        except exceptions.RaySystemError:
            with self.lock:
                self.requested.pop(lease.nonce, None)
            return
        client.watch(lease.ref._id, lambda: self._lease_returned(lease))

    # ── actor calls ────────────────────────────────────────────────────────────────────────

    def call_actor(self, spec, actor_ref, first_id) -> bool:
        """Send actor call ``spec`` on its actor's channel. False: it goes through the node
        (no channel yet, asked for here if need be; or the last call sent through the node
        is not back, which the first call on the channel waits for)."""
        actor_id = spec.actor_id
        ask = keep = None
        sent = False
        forgotten = None
        with self.lock:
            if self.closed:
                return False
            if self.forgotten:
                forgotten = self._drop_forgotten()
            channel = self.channels.get(actor_id)
            if channel is None:
                channel = ask = ActorChannel(actor_id)
                self.channels[actor_id] = channel
                self.channel_asks[channel.nonce] = channel
                channel.after = first_id
            elif channel.frames is not None and not channel.ended:
                after = channel.after
                client = self.client
                if after is None or after in client._values or after not in client._refs:
                    channel.after = None
                    task = DirectTask(spec, None)
                    task.lease = channel
                    inflight = channel.inflight
                    inflight[spec.task_id] = task
                    self.tasks[spec.task_id] = task
                    keep, channel.keep = channel.keep, actor_ref
                    if len(inflight) > 1 and not channel.armed:
                        self._arm(channel)   # results come back while the caller goes on
                    channel.sent_at = time.monotonic()
                    sent = True
                else:
                    channel.after = first_id
            else:
                channel.after = first_id
        if forgotten:
            _shut(forgotten)
        if sent:
            # Sent outside the lock: a full socket waits for the worker, which waits for
            # its results to be read, which takes the lock.
            del keep   # (it may be an actor ref's last)
            self._send(channel, (protocol.LEASE_TASKS, ((spec, None),)))
            return True
        if ask is not None:
            self.client.send((protocol.ACTOR_DIRECT, actor_id, self.address, ask.nonce))
        return False

    def forget_actor(self, actor_id):
        """This process holds no handle of ``actor_id`` anymore: its channel (connected or
        only asked for) goes. Nothing is in flight on it (``keep`` held the handle's ref).

        This runs in ObjectRef.__del__, which a garbage collection pass may run in any
        thread, under any lock, this submitter's too: it takes none, and only shuts the
        socket of a connected channel. The next call, or the janitor within
        ``LINGER_CHECK_S``, drops it (``_drop_forgotten``)."""
        channel = self.channels.get(actor_id)
        if channel is None:
            return
        if channel.sock is not None:
            _shut((channel.sock,))
        self.forgotten.append(actor_id)

    def _drop_forgotten(self):
        """Drop the channels of actors forgotten (lock held); returns their sockets, to
        shut (their reader threads, armed here, then read the end and settle them)."""
        socks = []
        forgotten = self.forgotten
        while forgotten:
            channel = self.channels.pop(forgotten.popleft(), None)
            if channel is not None:
                self.channel_asks.pop(channel.nonce, None)
                if channel.sock is not None:
                    socks.append(channel.sock)
                    self._arm(channel)
        return socks

    def _channel_done(self, channel, done):
        delivered = []
        keep = None
        with self.lock:
            inflight = channel.inflight
            tasks = self.tasks
            for task_id, results, _retry, span in done:
                task = inflight.pop(task_id, None)
                if task is not None:
                    tasks.pop(task_id, None)
                    delivered.append((task, results, span))
            if not inflight:
                keep, channel.keep = channel.keep, None
        if delivered:
            self.client.direct_results(delivered, channel.actor_id)
        del keep   # (outside the lock: dropping the last ref of the actor sends DROP_REFS)

    def _channel_lost(self, channel):
        """The channel closed: the actor's worker is gone (or is going). Its calls in
        flight go to the node, which settles them; the next call asks for a new channel."""
        with self.lock:
            if channel.gone:
                return
            channel.gone = True
            channel.ended = True
            channel.wake.set()
            if self.channels.get(channel.actor_id) is channel:
                del self.channels[channel.actor_id]
            lost = list(channel.inflight.values())
            channel.inflight.clear()
            for task in lost:
                self.tasks.pop(task.spec.task_id, None)
            keep, channel.keep = channel.keep, None
            closed = self.closed
        try:
            channel.sock.close()
        except OSError:
            pass
        if lost and not closed:
            try:
                self.client.hand_lost_calls(channel.actor_id, channel.incarnation,
                                            [task.spec for task in lost])
            except exceptions.RaySystemError:
                pass   # the node is gone: every call says so now (Client._mark_dead)
        del keep

    # ── leases coming and going ────────────────────────────────────────────────────────────

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return   # closed
            try:
                self._greet(conn)
            except Exception:   # a connection that did not prove it knows a lease's nonce
                conn.close()

    def _greet(self, conn):
        conn.settimeout(GREET_TIMEOUT_S)
        nonce = _recv_exactly(conn, NONCE_SIZE)
        with self.lock:
            lease = self.requested.get(nonce)   # (a REVOKE meanwhile still finds it there)
            channel = self.channel_asks.get(nonce) if lease is None else None
        if lease is None and channel is None:
            conn.close()
            return
        # Known now: what follows may be unpickled.
        frames = protocol.FrameReader()
        messages = []
        while not messages:
            data = protocol.recv(conn)
            if not data:
                raise ConnectionError("the leased worker left before it said hello")
            messages = frames.feed(data)
        hello = messages[0]
        if channel is not None:
            if hello[0] != protocol.ACTOR_HELLO:
                raise ConnectionError("the actor's worker did not say hello")
            conn.settimeout(None)
            self._channel_open(channel, conn, frames, hello)
            return
        if hello[0] != protocol.LEASE_HELLO:
            raise ConnectionError("the leased worker did not say hello")
        conn.settimeout(None)
        lease.sock = conn
        lease.pid = hello[1]
        with self.lock:
            if self.closed or self.requested.pop(nonce, None) is None:
                conn.close()
                return
            self.failures = 0
            self.leases[lease.task_id] = lease
            lease.idle_since = time.monotonic()
            if lease.revoked:
                lease.ended = True
                batch = None
            else:
                batch = self._load(lease)
            self._start_janitor()
            lease.frames = frames
            if lease.ended or batch:
                self._arm(lease)
        self._start_reader(lease)
        if lease.ended:
            self._send(lease, (protocol.LEASE_END,))
        elif batch:
            self._send(lease, (protocol.LEASE_TASKS, batch))

    def _channel_open(self, channel, conn, frames, hello):
        with self.lock:
            if self.closed or self.channel_asks.pop(channel.nonce, None) is None or \
                    self.channels.get(channel.actor_id) is not channel:
                conn.close()
                return
            channel.pid, channel.incarnation = hello[1], hello[2]
            channel.sock = conn
            channel.frames = frames   # (set last: call_actor now sends on it)
            self._start_janitor()
        self._start_reader(channel)

    def _start_janitor(self):
        """The thread ending idle leases and taking in unread results (lock held)."""
        if self._janitor is None:
            self._janitor = threading.Thread(target=self._end_idle_leases, daemon=True,
                                             name="purerun-lease-linger")
            self._janitor.start()

    def _start_reader(self, lease):
        reader = threading.Thread(target=self._read_lease, args=(lease,), daemon=True,
                                  name="purerun-lease")
        with self.lock:
            self._threads.append(reader)
        reader.start()

    def _read_lease(self, lease):
        """The lease's reader thread: reads it while it is armed."""
        while True:
            lease.wake.wait()
            if lease.gone or self.closed:
                return
            with lease.read_lock:
                with self.lock:
                    if not lease.armed:
                        lease.wake.clear()
                        continue
                open_ = self._read_once(lease, None)
                if open_:
                    with self.lock:
                        if not lease.inflight and not lease.ended and not self.queue:
                            lease.armed = False   # nothing to read for: see read_for
                            lease.wake.clear()
            if not open_:
                self._lost(lease)
                return

    def _read_once(self, lease, timeout, spin=False):
        """Read what the lease sent (waiting up to ``timeout``, None: as long as it takes)
        and handle it; called with its read_lock held. False once the connection is gone.
        ``spin``: poll first, as the lease's PollRule says (see SPIN_S)."""
        try:
            data = (lease.polling if spin else _NO_POLL).recv(lease.sock, timeout)
            if data is None:
                return True
            if not data:
                return False
            for msg in lease.frames.feed(data):
                if msg[0] == protocol.LEASE_DONE:
                    if lease.actor_id is None:
                        self._done(lease, msg[1])
                    else:
                        self._channel_done(lease, msg[1])
        except (OSError, ValueError):
            return False
        return True

    def read_for(self, task_ids, released, deadline):
        """A thread waits for ``task_ids`` of ours: if they are all in flight on one lease
        that nobody reads, read it here until ``released()`` (or ``deadline``, a
        time.monotonic(), passes: then False) — the result reaches the waiting thread
        without another thread's wake-up. None: not so; wait as usual."""
        with self.lock:
            leases = set()
            others = False     # queued here, or not ours: what the lease will not bring
            tasks = self.tasks
            for task_id in task_ids:
                task = tasks.get(task_id)
                if task is None or task.lease is None:
                    others = True
                else:
                    leases.add(task.lease)
            if len(leases) != 1 or others:
                for lease in leases:   # nobody reads them here: their reader threads do
                    if not lease.armed:
                        self._arm(lease)
                return None
            lease = leases.pop()
            if lease.armed or lease.gone:
                return None
        if not lease.read_lock.acquire(blocking=False):
            return None
        open_ = True
        try:
            while not released():
                if lease.armed:
                    return None    # its reader thread takes over (once we let go)
                if deadline is None:
                    timeout = None
                else:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        return False
                open_ = self._read_once(lease, timeout, SPIN_S > 0)
                if not open_:
                    break
        finally:
            lease.read_lock.release()
            if open_:
                with self.lock:
                    if lease.inflight and not lease.armed:
                        self._arm(lease)   # others may wait for the rest
        if not open_:
            self._lost(lease)
        return True if released() else None

    def _end_idle_leases(self):
        """End the leases idle for LINGER_S, while there are leases."""
        while not self._closing.wait(LINGER_CHECK_S):
            ending = []
            with self.lock:
                forgotten = self._drop_forgotten() if self.forgotten else None
                channels = [c for c in self.channels.values() if c.frames is not None]
                if not self.leases and not channels:
                    self._janitor = None
                    if forgotten:
                        _shut(forgotten)
                    return
                now = time.monotonic()
                for channel in channels:
                    if (channel.inflight and not channel.armed
                            and not channel.read_lock.locked()
                            and now - channel.sent_at >= UNREAD_AFTER_S):
                        self._arm(channel)   # results nobody waits for: take them in
                for lease in self.leases.values():
                    since = lease.idle_since
                    if (since is not None and not lease.ended and not lease.inflight
                            and now - since >= LINGER_S):
                        lease.ended = True
                        ending.append(lease)
                        self._arm(lease)    # to read its end
                    elif (lease.inflight and not lease.armed and not lease.read_lock.locked()
                          and now - lease.sent_at >= UNREAD_AFTER_S):
                        self._arm(lease)    # results nobody waits for: take them in
            for lease in ending:
                self._send(lease, (protocol.LEASE_END,))
            if forgotten:
                _shut(forgotten)

    def _done(self, lease, done):
        delivered = []
        short = True
        with self.lock:
            inflight = lease.inflight
            for task_id, results, retry, span in done:
                task = inflight.pop(task_id, None)
                if task is None:
                    continue
                if span[1] - span[0] > SHORT_TASK_S:
                    short = False
                if retry and not task.cancelled and retries_left(task.spec) != 0:
                    task.spec.attempt += 1
                    task.lease = None
                    self.queue.appendleft(task)
                    continue
                del self.tasks[task_id]
                delivered.append((task, results, span))
            lease.depth = min(MAX_DEPTH, lease.depth * 2) if short else 1
            if not inflight:
                lease.idle_since = time.monotonic()
            batch = None
            end = False
            if lease.revoked or lease.ended or self.closed:
                end = not inflight and not lease.ended
                if end:
                    lease.ended = True
                    self._arm(lease)
            else:
                batch = self._load(lease)
        if batch:
            self._send(lease, (protocol.LEASE_TASKS, batch))
        elif end:
            self._send(lease, (protocol.LEASE_END,))
        if delivered:
            self.client.direct_results(delivered, lease.task_id)

    def _lost(self, lease):
        """The lease's connection closed: it ended, or its worker died."""
        if lease.actor_id is not None:
            self._channel_lost(lease)
            return
        with self.lock:
            if lease.gone:
                return
            lease.gone = True
            lease.wake.set()      # its reader thread leaves
            self.leases.pop(lease.task_id, None)
            lease.ended = True
            lost = list(lease.inflight.values())
            lease.inflight.clear()
            closed = self.closed
        try:
            lease.sock.close()
        except OSError:
            pass
        if closed:
            return
        if lost:
            why = self._why_lost(lease)
            if why is _NODE_GONE:
                return   # every call says so now (Client._mark_dead)
            failed = []
            with self.lock:
                for task in lost:
                    spec = task.spec
                    if task.force:
                        error = exceptions.WorkerCrashedError(
                            "The task was cancelled with force=True; its worker was killed.")
                    elif task.cancelled:
                        error = exceptions.TaskCancelledError(spec.task_id.hex())
                    elif retries_left(spec) != 0:
                        spec.attempt += 1
                        task.lease = None
                        self.queue.appendleft(task)
                        continue
                    elif why is not None:
                        # The monitor named the lease's task; the task it stopped was this.
                        error = exceptions.OutOfMemoryError(str(why).replace(
                            f"ID: {lease.task_id.hex()}, name={LEASE_NAME}",
                            f"ID: {spec.task_id.hex()}, name={spec.name}"))
                    else:
                        error = exceptions.WorkerCrashedError(
                            f"The worker running task {spec.name} died unexpectedly (killed, "
                            f"crashed, or out of memory); it was tried {spec.attempt + 1} "
                            f"time(s) (max_retries={spec.max_retries}).")
                    self.tasks.pop(spec.task_id, None)
                    failed.append((task, error))
            for task, error in failed:
                self._fail(task, error, lease.task_id)
        with self.lock:
            if lease.ref is not None and lease.ref._id not in self.client._values:
                self.returning.add(lease)   # its task's end is on its way (release_idle)
            else:
                lease.ref = None
        self._more_leases()

    def _why_lost(self, lease):
        """What the lease task ended with, if its worker ran out of memory."""
        try:
            self.client.get([lease.ref], timeout=LEASE_OUTCOME_TIMEOUT_S)
        except exceptions.OutOfMemoryError as exc:
            return exc
        except exceptions.GetTimeoutError:
            pass
        except exceptions.RaySystemError:
            return _NODE_GONE    # the worker died with its node
        except Exception:
            pass
        return None

    def _lease_returned(self, lease):
        """The lease task ended. One that never connected failed to start: ask again, and
        after ``LEASE_FAILURES`` in a row let the node run the waiting tasks."""
        with self.lock:
            if lease in self.returning:
                self.returning.discard(lease)
                lease.ref = None
            if self.requested.pop(lease.nonce, None) is None or self.closed:
                return
            self.failures += 1
            give_up = self.failures >= LEASE_FAILURES and not self.leases
            handed = []
            if give_up:
                handed = list(self.queue)
                self.queue.clear()
                for task in handed:
                    del self.tasks[task.spec.task_id]
        for task in handed:
            self.client.submit_through_node(task.spec)
        if not give_up:
            self._more_leases()

    def _more_leases(self):
        with self.lock:
            request = self._want_lease()
            batch = None
            lease = self._room() if self.queue else None
            if lease is not None:
                batch = self._load(lease)
                if batch:
                    self._arm(lease)
        if batch:
            self._send(lease, (protocol.LEASE_TASKS, batch))
        if request is not None:
            self._request(request)

    def _fail(self, task, error, lease_id):
        payload = error_payload(error)
        results = [(object_id, ERROR, payload, ()) for object_id in task.spec.return_ids()]
        self.client.direct_results([(task, results, None)], lease_id)

    # ── the node, the caller ───────────────────────────────────────────────────────────────

    def revoke(self, lease_id):
        """REVOKE: other work waits for what ``lease_id`` holds."""
        end = None
        with self.lock:
            lease = self.leases.get(lease_id)
            if lease is None:
                for waiting in self.requested.values():
                    if waiting.task_id == lease_id:
                        waiting.revoked = True   # ended as soon as it connects
                return
            lease.revoked = True
            if not lease.inflight and not lease.ended:
                lease.ended = end = True
                self._arm(lease)
        if end:
            self._send(lease, (protocol.LEASE_END,))

    def cancel(self, task_id, force, recursive) -> bool:
        """Cancel a task of ours; False if it is not one (anymore)."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return False
            if task.cancelled and not force:
                return True
            task.cancelled = True
            lease = task.lease
            if lease is None:
                self.queue.remove(task)
                del self.tasks[task_id]
            else:
                task.force = force
        if lease is None:
            self._fail(task, exceptions.TaskCancelledError(task_id.hex()), None)
        elif lease.actor_id is not None:   # an actor call: its worker cancels it
            self._send(lease, (protocol.LEASE_CANCEL, task_id, recursive))
        elif force:
            # The node kills the worker, as it would for any task (its other tasks retry).
            self.client.send((protocol.CANCEL, lease.ref._id, True, False))
        else:
            self._send(lease, (protocol.LEASE_CANCEL, task_id, recursive))
            try:
                os.kill(lease.pid, signal.SIGINT)
            except OSError:
                pass
        return True

    def arm_for(self, task_id):
        """Something other than a waiting thread wants ``task_id``'s result (a future): its
        lease's reader thread reads it."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is not None and task.lease is not None and not task.lease.armed:
                self._arm(task.lease)

    def live_records(self):
        """Our tasks queued or running now, for a state request (DIRECT_LIVE)."""
        with self.lock:
            return [(spec.task_id, spec.attempt, spec.name, spec.job_id,
                     None if lease is None else lease.actor_id or lease.task_id,
                     spec.resources)
                    for task in self.tasks.values() for spec, lease in ((task.spec, task.lease),)]

    def release_idle(self, timeout=5.0):
        """End the leases with nothing in flight and wait until the node has them back
        (before a caller reads what is free)."""
        ending = []
        refs = []
        with self.lock:
            for lease in self.leases.values():
                if not lease.inflight:
                    if not lease.ended:
                        lease.ended = True
                        ending.append(lease)
                        self._arm(lease)
                    if lease.ref is not None:
                        refs.append(lease.ref)
            refs += [lease.ref for lease in self.returning if lease.ref is not None]
        for lease in ending:
            self._send(lease, (protocol.LEASE_END,))
        if refs:
            try:
                self.client.wait(refs, len(refs), timeout)
            except Exception:
                pass

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
            leases = list(self.leases.values())
            channels = [c for c in self.channels.values() if c.sock is not None]
            keep = [c.keep for c in channels]
            for channel in channels:
                channel.keep = None
            self.channels.clear()
            self.channel_asks.clear()
            # Nothing of ours keeps the client alive past its close (a lease's ref does).
            for lease in leases + list(self.requested.values()) + list(self.returning):
                lease.ref = None
            self.queue.clear()
            self.tasks.clear()
            self.requested.clear()
            self.returning.clear()
        del keep
        self._closing.set()
        for lease in leases + channels:
            lease.wake.set()
        for sock in [self.listener] + [lease.sock for lease in leases + channels]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def join(self, timeout=CLOSE_JOIN_S):
        """After close(): wait for its threads (each has been woken to leave) to be gone."""
        with self.lock:
            threads = [self._acceptor, self._janitor] + self._threads
        me = threading.current_thread()
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not None and thread is not me:
                thread.join(max(0.0, deadline - time.monotonic()))


def _shut(socks):
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)   # its reader thread sees the end and leaves
        except OSError:
            pass


def _recv_exactly(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed before the nonce")
        data += chunk
    return data


# ── the worker's side ─────────────────────────────────────────────────────────────────────────

def serve_lease(address, nonce):
    """The lease task's body, in the leased worker: serve the driver at ``address``."""
    from purerun.core import worker
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        sock.sendall(nonce + protocol.encode((protocol.LEASE_HELLO, os.getpid())))
        worker.serve_lease(sock)
    except OSError:
        pass   # the driver is gone: so is the lease
    finally:
        sock.close()
