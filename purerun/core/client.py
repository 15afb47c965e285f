"""Client: the per-process core of the driver and of every worker.

::

    user thread(s)                      reader thread                 flusher thread
    ──────────────                      ─────────────                 ──────────────
    submit / put / get / wait  ─send─▶  node  ─▶ recv, frames ─▶      sends batched ref
    (block on a _Waiter)                OBJECT: store payload,        count changes a few ms
                                        wake waiters and futures      after they happen
                                        REPLY, LOG, WARN, EXECUTE

The user's threads send; the reader thread only receives (it never sends, so a node that is
busy writing to us can never wait on us while we wait on it). Task workers start without a
reader thread: the thread that runs tasks reads the socket itself, between tasks and while a
task waits (see ``inline`` below), until something needs background reading. Reference-count changes
(ADD_REFS, DROP_REFS, UNPIN) are queued in order and go out in front of the next message,
or from the flusher thread shortly after: an ObjectRef's ``__del__`` may run in any thread,
inside any lock, so it must only append to a list.

Values: the node pushes every task result to the task's owner, and values this process
subscribed to. A payload is kept here while this process holds a reference to the object;
``get`` deserializes it. Large values arrive as STORED: ``get`` asks the node where they are
("locate", which pins them for us) and rebuilds them as zero-copy views of the shared-memory
arena; the pin is returned when the last view dies. A value the node could not make room for
in the arena is given as its file instead, which ``get`` maps read-only (no copy either).
"""

import collections
import concurrent.futures
import ctypes
import hashlib
import itertools
import logging
import mmap
import operator
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
import time
import weakref

from purerun import exceptions
from purerun.core import direct, ids, progress, protocol, serialization
from purerun.core.object_ref import ObjectRef
from purerun.core.protocol import ARENA, ERROR, INLINE, ON_DISK, STORED
from purerun.core.generators import END_PAYLOAD
from purerun.core.task_spec import (ACTOR_METHOD, STREAMING, TaskSpec, creation_spec,
                                    extract_deps, item_id)

logger = logging.getLogger("purerun")

# Values whose serialized size is at most this travel inline in messages; larger ones are
# written once into the shared-memory arena. 100 KiB: above it a memcpy into shared memory is
# cheaper than pickling the bytes through two sockets.
INLINE_THRESHOLD = 100 * 1024

# Queued reference-count changes are flushed by the flusher thread after this long, or at
# once when this many are queued. A few milliseconds bound how long freed memory waits.
REF_FLUSH_DELAY = 0.005
REF_FLUSH_COUNT = 1024
# Submissions in a burst are batched, going out in one write: at this many, or when the
# caller blocks (get, wait), or when the flusher thread gets to run. The first submission
# after a blocking call goes out at once, so get(f.remote()) in a loop pays neither latency
# nor a thread wake-up.
SUBMIT_BATCH = 64
# ... or once the values the batched puts carry add up to this much. A batch bigger than
# the socket's send buffer (Linux's default: 208 KiB) blocks its write until the node has
# read and handled most of it, so the caller and the node would take turns instead of
# working at once: 64 puts of 80 KB arrays went 40% slower than one write per put.
SUBMIT_BATCH_BYTES = 128 * 1024
# Records of direct tasks go to the node at least this often (or with any other message).
HISTORY_FLUSH_DELAY = 0.05
# When the connection to a node this process started closes, how long to wait for the node
# to exit so that the error can say how it ended: a dying process is gone within
# milliseconds, and a node that lives on only closed the connection.
NODE_EXIT_WAIT_S = 1.0
# How long a leaving driver waits for the node to relay what workers printed: long enough
# for a busy node, short enough that a hung one does not hold the driver's exit.
FLUSH_OUTPUT_TIMEOUT_S = 5.0


# An ObjectRef's id, for map(): list(map(_ID, refs)) runs at C speed.
_ID = operator.attrgetter("_id")


class _Waiter:
    """One blocked get/wait: released when ``remaining`` of the objects in ``ids`` arrived,
    or on an error (``stop_on_error``).

    ``ids`` is only read (the caller may share a set it keeps): an arrival counts when its
    object was not here before (see ``_on_object``), so none is counted twice.
    """

    __slots__ = ("ids", "remaining", "stop_on_error", "lock", "released", "cut_off")

    def __init__(self, ids, remaining, stop_on_error):
        self.ids = ids
        self.remaining = remaining
        self.stop_on_error = stop_on_error
        self.lock = threading.Lock()
        self.lock.acquire()
        self.released = False
        self.cut_off = False    # released because the client lost its node

    def arrived(self, is_error):
        if self.released:
            return
        self.remaining -= 1
        if self.remaining <= 0 or (is_error and self.stop_on_error):
            self.released = True
            self.lock.release()


class _WaitRemainder:
    """The not-ready list the last wait() returned, with what wait() learnt of it.

    ``while refs: ready, refs = wait(refs)`` hands that list straight back. Recognizing it
    (the same list object, its items unchanged: a list comparison that stops at no
    per-item Python call) spares each call the per-ref checks and id lookups of a new list.
    """

    __slots__ = ("returned", "snapshot", "ids", "id_set")

    def __init__(self, returned, snapshot, ids, id_set):
        self.returned = returned          # the list handed to the caller
        self.snapshot = snapshot          # its items then (a copy: the caller may change it)
        self.ids = ids                    # their object ids, in order
        self.id_set = id_set              # the same as a set, once a wait blocked, or None


class Client:
    """Talks to the node over one socket; see the module docstring.

    Args:
        sock: connected socket to the node.
        mode: "driver" or "worker".
        info: the node's WELCOME info, when already known (workers); drivers read it
            from the first message.
        arena_fd: the arena's file descriptor, when already known (workers).
        log_to_driver: print worker output relayed by the node.
        node: the ``launcher.NodeProcess`` of a node this driver started and owns: close()
            stops it.
    """

    def __init__(self, sock, mode, *, info=None, arena_fd=None, log_to_driver=True,
                 node=None, on_execute=None, inline=False):
        self.sock = sock
        self.is_worker = mode == "worker"
        self.log_to_driver = log_to_driver
        self.node = node
        self.info = info
        self._welcome = threading.Event()
        self._arena = None
        self._arena_view = None
        self._arena_pages = None   # serialization.ArenaPages: how large buffers are written
        if info is not None:
            self._set_info(info, arena_fd)
        else:  # ids made before the node's WELCOME wait for the node's number in it
            ids.set_node_number(ids.UNNUMBERED, self.wait_welcome)

        self._lock = threading.RLock()
        # Re-entrant: a ref pickled while a message is encoded flushes (ObjectRef.__reduce__).
        self._send_lock = threading.RLock()
        self._refs = {}            # object id -> number of ObjectRefs alive in this process
        self._values = {}          # object id -> (kind, payload) for objects known to be ready
        self._subscribed = set()   # ids the node will push to us (owned returns, SUBSCRIBEd)
        self._waiting = []         # _Waiters of the get/wait calls blocked now
        self._wait_remainder = None   # _WaitRemainder of the last wait(), if any
        self._futures = {}         # object id -> [concurrent.futures.Future]
        self._watchers = {}        # object id -> callback(), called once it arrives (watch)
        self._pending = []         # queued ref-count messages, in order
        # Records of direct tasks done, for the node's task history: they leave with the
        # next message, or after HISTORY_FLUSH_DELAY (a get does not flush them).
        self._history = []
        self._pending_count = 0
        self._pending_submits = 0
        self._pending_bytes = 0    # bytes of the values send_soon queued
        self._submits_since_block = 0   # submissions since this process last blocked
        self._exported = set()     # function keys the node already has from us
        self._actor_calls = set()  # return ids of actor calls made here (still referenced)
        # The direct call path (core/direct.py), drivers only: the DirectSubmitter once a
        # task took it (False: this driver cannot use it), the return ids of its tasks the
        # node has not heard of (they stay here), and those promised to the node, not sealed.
        self._direct = False if self.is_worker else None
        self._direct_local = {}
        self._promised = set()
        # Workers, while a leased task runs: ids of the tasks it submitted (recursive cancel).
        self.children = None
        # Streaming calls this process owns whose ObjectRefGenerator lives: task id -> None.
        # The node pushes each of their items here; values are kept until handed out.
        self._streams = {}
        self._stream_futures = {}  # item id -> [Future] of async generators awaiting it
        # Workers: task id -> how many of its items the owner took (backpressure).
        self._items_read = {}
        self._items_read_cond = threading.Condition(threading.Lock())
        self._requests = {}        # request id -> Future
        self._request_ids = itertools.count(1)
        self._closed = False
        self._dead_reason = None
        # Workers: called by the reader thread with each EXECUTE message.
        self.on_execute = on_execute
        # Workers: called with the task id of each INTERRUPT, by the thread that read it.
        self.on_interrupt = None
        self.on_actor_channel = None   # a worker's: a driver asks for a channel to its actor

        # Task context (workers): what get_runtime_context() reports inside a task.
        self.namespace = None
        self.job_env_vars = None   # drivers: init(runtime_env={"env_vars": ...})
        self.actor_env_vars = None
        self.actor_id = None       # set in a worker that hosts an actor
        self.actor_is_async = False
        # The task each thread runs (threaded actors run several at once), and the last one
        # started anywhere in this process, for threads a task started on its own.
        self._task_local = threading.local()
        self._last_task = None
        self.gpu_ids = ()
        self._blocked_depth = 0

        # Inline reading (task workers): the thread that runs tasks reads the socket itself,
        # between tasks and while a task waits in get/wait/request, instead of a reader
        # thread handing it each message: two thread switches less per task. Anything that
        # needs messages read while that thread is busy elsewhere (a future, another thread
        # waiting, a threaded or asyncio actor) switches the process to a reader thread for
        # good (start_reader).
        self.inline = inline
        self._inline_thread = threading.get_ident() if inline else None
        self._frames = protocol.FrameReader()
        self._read_lock = threading.Lock()   # held by whichever thread reads the socket
        self._deferred = collections.deque()  # EXECUTEs read while a task was waiting
        self.pumping = False                  # this thread is inside an inline read
        self.interrupt_pending = False        # a cancellation waits for that read to end

        self._flush_event = threading.Event()
        self._closing = threading.Event()   # set once this client is closed or cut off
        self._reader = None
        self._flusher = threading.Thread(target=self._flush_loop, name="purerun-flusher",
                                         daemon=True)
        self._flusher.start()
        if not inline:
            self.start_reader()

    # -- node info and the arena ------------------------------------------------------------------

    def _set_info(self, info, arena_fd):
        self.info = info
        ids.set_node_number(info["node_number"])
        if arena_fd is not None:
            self._arena = mmap.mmap(arena_fd, info["arena_size"])
            # The descriptor stays open for pwrite; it lives as long as the mapping does
            # (closing it under a put in flight could let pwrite hit a reused number).
            self._arena_pages = serialization.ArenaPages(arena_fd, info["arena_size"])
            self._arena_view = memoryview(self._arena)
        self._welcome.set()

    def wait_welcome(self, timeout=30.0):
        """Block until the node's WELCOME arrived (drivers); return the info dict."""
        if not self._welcome.wait(timeout):
            raise exceptions.RaySystemError("The purerun node did not answer within "
                                            f"{timeout:.0f} s; see its log in the session dir.")
        if self.info is None:
            raise self._gone()
        return self.info

    @property
    def arena_view(self):
        if self._arena_view is None:
            self.wait_welcome()
        return self._arena_view

    # -- sending -----------------------------------------------------------------------------------

    def send(self, msg):
        """Send one message, preceded by any queued ref-count changes (which happened first)."""
        if self._closed:
            raise self._gone()
        with self._send_lock:
            try:
                if self._pending or self._history:
                    with self._lock:
                        batch = self._take_batch()
                    batch.append(msg)
                    protocol.send_many(self.sock, batch)
                else:
                    self.sock.sendall(protocol.encode(msg))
            except OSError as exc:
                self._mark_dead(f"connection to the node lost ({exc})")
                raise exceptions.RaySystemError(
                    "Lost the connection to the purerun node") from exc

    def _take_batch(self):
        # Called with self._lock held.
        batch, self._pending = self._pending, []
        self._pending_count = self._pending_submits = self._pending_bytes = 0
        if self._history:
            batch.insert(0, (protocol.DIRECT_DONE, self._history))
            self._history = []
        return batch

    def flush(self, history=False):
        """Send what is queued (``history``: also when only task records are)."""
        if (self._pending or history and self._history) and not self._closed:
            with self._send_lock:
                with self._lock:
                    batch = self._take_batch()
                if batch:
                    try:
                        protocol.send_many(self.sock, batch)
                    except OSError as exc:
                        self._mark_dead(f"connection to the node lost ({exc})")

    def send_soon(self, msg, nbytes=0):
        """Queue a message that need not leave at once (a submission): batched writes.
        ``nbytes`` is the size of the value it carries (a put's), which counts towards
        ``SUBMIT_BATCH_BYTES``."""
        burst = self._submits_since_block
        self._submits_since_block = burst + 1
        if self._closed or not burst:
            self.send(msg)
            return
        with self._lock:
            self._pending.append(msg)
            self._pending_submits += 1
            self._pending_bytes += nbytes
            count = self._pending_submits
            full = count >= SUBMIT_BATCH or self._pending_bytes >= SUBMIT_BATCH_BYTES
        if full:
            self.flush()
        elif count == 1:
            self._flush_event.set()

    def _queue(self, kind, object_id):
        # Called with self._lock held. Consecutive changes of one kind share a message.
        pending = self._pending
        if pending and pending[-1][0] == kind:
            pending[-1][1].append(object_id)
        else:
            pending.append((kind, [object_id]))
        self._pending_count += 1
        if self._pending_count == 1 or self._pending_count >= REF_FLUSH_COUNT:
            self._flush_event.set()

    def _flush_loop(self):
        while not self._closed:
            self._flush_event.wait()
            self._flush_event.clear()
            if self._closed:
                return
            if not self._pending_submits and self._pending_count < REF_FLUSH_COUNT:
                # gather the burst this change belongs to
                # (an Event, not a sleep: a close does not wait out the delay)
                self._closing.wait(REF_FLUSH_DELAY if self._pending else HISTORY_FLUSH_DELAY)
            try:
                self.flush(history=True)
            except Exception:  # the connection went away; the reader reports it
                return

    def request(self, op, *args, timeout=None):
        """Ask the node for something (REQUEST/REPLY) and wait for the answer."""
        if self._direct:
            if op == "available_resources":
                self._direct.release_idle()   # what this driver's idle leases hold is free
            elif op == "task_summary" or op == "state" and args[0] == "tasks":
                self.send((protocol.DIRECT_LIVE, self._direct.live_records()))
        future = concurrent.futures.Future()
        self._submits_since_block = 0
        request_id = next(self._request_ids)
        self._requests[request_id] = future
        self.send((protocol.REQUEST, request_id, op, args))
        return self._wait_future(future, timeout)

    def _wait_future(self, future, timeout):
        if self._inline_here():
            self._wait_inline(future.done, timeout)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise exceptions.GetTimeoutError("The purerun node did not answer in time") from None

    # -- references --------------------------------------------------------------------------------

    def new_ref(self, object_id, subscribed=False):
        """A reference to an object this process just created (the node already counts it)."""
        with self._lock:
            self._refs[object_id] = self._refs.get(object_id, 0) + 1
            if subscribed:
                self._subscribed.add(object_id)
        return ObjectRef(object_id, self)

    def borrow_ref(self, object_id):
        """A reference that arrived from elsewhere (unpickled): tell the node we hold it."""
        with self._lock:
            count = self._refs.get(object_id, 0)
            self._refs[object_id] = count + 1
            if count == 0 and not self._closed:
                self._queue(protocol.ADD_REFS, object_id)
        return ObjectRef(object_id, self)

    def drop_ref(self, object_id):
        """An ObjectRef died (from ``__del__``, in any thread)."""
        if self._closed:
            return
        with self._lock:
            count = self._refs.get(object_id, 0) - 1
            if count > 0:
                self._refs[object_id] = count
                return
            self._refs.pop(object_id, None)
            self._values.pop(object_id, None)
            self._subscribed.discard(object_id)
            self._actor_calls.discard(object_id)
            if self._direct_local and object_id in self._direct_local:
                del self._direct_local[object_id]   # the node never knew it
                return
            self._queue(protocol.DROP_REFS, object_id)
        direct_ = self._direct
        if direct_ and direct_.channels:
            # The last handle of an actor here went: so does this driver's channel to it.
            # (Checked first: a ref dropped while the submitter's lock is held is never
            # an actor's.)
            actor_id = ids.task_id_of(object_id)
            if actor_id in direct_.channels:
                direct_.forget_actor(actor_id)

    def _unpin(self, object_id):
        # A finalizer: may run in any thread, inside any lock of this client (RLock).
        if not self._closed:
            with self._lock:
                self._queue(protocol.UNPIN, object_id)

    # -- storing values ----------------------------------------------------------------------------

    def store_payload(self, sv):
        """Make a payload of a serialized value: inline when small, else written to the arena
        (or, larger than the arena, to the file the node names)."""
        if sv.size <= INLINE_THRESHOLD:
            return INLINE, serialization.to_inline(sv)
        layout = serialization.arena_layout(sv)
        kind, where = self.request("alloc", layout[0])
        if kind == ON_DISK:
            serialization.write_to_file(where, sv, layout)
            return ON_DISK, (where,) + layout
        serialization.write_to_arena(self.arena_view, where, sv, layout, self._arena_pages)
        return ARENA, (where, layout[1], layout[2])

    def put(self, value):
        """Store ``value``; return an ObjectRef to it."""
        if isinstance(value, ObjectRef):
            raise TypeError("Calling put() on an ObjectRef is not allowed. Put the value itself, "
                            "or pass the ObjectRef around directly.")
        sv = serialization.serialize(value)
        if sv.contained and self._direct_local:
            self._publish(sv.contained)
        kind, payload = self.store_payload(sv)
        object_id = ids.new_put_id()
        ref = self.new_ref(object_id)
        with self._lock:
            # An arena location is only valid under a pin: keep the marker, not the location.
            self._values[object_id] = ((STORED, None) if kind == ARENA or kind == ON_DISK
                                       else (kind, payload))
        msg = (protocol.PUT, object_id, kind, payload, sv.contained)
        if kind == INLINE:
            # Batched like submissions: a loop of small puts pays one write (and one wake-up
            # of the node) per batch, not per put. The value is here already, and whatever
            # reaches the node from this process later (a task taking the ref, a request)
            # leaves after it.
            self.send_soon(msg, sv.size)
        else:
            self.send(msg)   # the node seals the block it lent for the value at once
        return ref

    # -- submitting tasks --------------------------------------------------------------------------

    def export_function(self, key, pickled):
        if key not in self._exported:
            self.send((protocol.EXPORT, key, pickled))
            self._exported.add(key)

    def prepare_args(self, args, kwargs):
        """Pickle a call's arguments; top-level ObjectRefs become dependencies.

        Returns (args_payload, args_in_store, deps, contained, keepalive).
        """
        if not args and not kwargs:
            return None, False, [], [], None
        args, kwargs, deps = extract_deps(args, kwargs)
        sv = serialization.serialize((args, kwargs))
        if self._direct_local and (deps or sv.contained):
            self._publish(deps + sv.contained)
        if sv.size <= INLINE_THRESHOLD:
            return serialization.to_inline(sv), False, deps, sv.contained, None
        # Too big for a message: store the arguments once, as an object the task depends on.
        kind, payload = self.store_payload(sv)
        object_id = ids.new_put_id()
        keepalive = self.new_ref(object_id)
        self.send((protocol.PUT, object_id, kind, payload, sv.contained))
        deps.append(object_id)
        return None, True, deps, [], keepalive

    def submit_task(self, remote_function, fields, args, kwargs):
        """Submit a task; return its return ObjectRefs.

        Args:
            remote_function: what ``@remote`` made of the function; ``_export()`` gives its
                key and pickled bytes.
            fields: TaskSpec fields fixed per (function, options): ``name`` and what
                ``options.task_fields`` gives.
        """
        fn_key, pickled_fn = remote_function._export()
        payload, in_store, deps, contained, keepalive = self.prepare_args(args, kwargs)
        spec = TaskSpec(task_id=ids.new_task_id(), function_key=fn_key, args=payload,
                        args_in_store=in_store, deps=deps, contained=contained,
                        job_id=self.job_id, **fields)
        inherited = self.inherited_env_vars()
        if inherited:
            spec.env_vars = merge_env_vars(inherited, spec.env_vars)
        refs = [self.new_ref(object_id, subscribed=True) for object_id in spec.return_ids()]
        if self.children is not None:
            self.children.append(spec.task_id)
        if (not deps and not contained and not in_store and self._direct is not False
                and direct.eligible(spec)
                and self._try_direct(spec.return_ids(),
                                     lambda submitter: submitter.submit(spec, pickled_fn))):
            return refs
        self.export_function(fn_key, pickled_fn)
        if spec.generator == STREAMING:
            self.open_stream(spec.task_id)   # before its first item can arrive
        self.send_soon((protocol.SUBMIT, spec))
        del keepalive  # queued ahead of any drop of it: the node holds the arguments first
        return refs

    # -- the direct call path (core/direct.py) -------------------------------------------------------

    def _try_direct(self, return_ids, send):
        """Offer a call to the direct path: ``send(submitter)`` says whether it took it.
        Its returns are marked as held here (unknown to the node) first, and unmarked if
        it did not."""
        if self._closed:
            raise self._gone()
        submitter = self._direct or self._start_direct()
        if not submitter:
            return False
        local = self._direct_local
        for object_id in return_ids:
            local[object_id] = None
        if send(submitter):
            return True
        for object_id in return_ids:
            local.pop(object_id, None)
        return False

    def _start_direct(self):
        """The DirectSubmitter, made at the first task that may use it; False if this
        process cannot (a worker, a node of a cluster, a node on another host)."""
        with self._lock:
            if self._direct is None:
                info = self.wait_welcome()
                cpus = int(info.get("resources", {}).get("CPU", 0))
                if (self.is_worker or info.get("clustered") or cpus < 1
                        or self.sock.family != socket.AF_UNIX
                        or os.environ.get("PURERUN_DIRECT", "1") == "0"):
                    self._direct = False
                else:
                    self._direct = direct.DirectSubmitter(self, cpus)
            return self._direct

    def _publish(self, object_ids):
        """Refs about to be handed on (to the node, another process): the node must know
        the direct tasks' returns among them. PUT what is back, PROMISE the rest (SEAL
        follows in direct_results). Queued: they leave ahead of what hands the refs on."""
        with self._lock:
            local = self._direct_local
            values = self._values
            for object_id in object_ids:
                if object_id not in local:
                    continue
                del local[object_id]
                entry = values.get(object_id)
                if entry is not None:
                    self._pending.append((protocol.PUT, object_id, entry[0], entry[1], ()))
                    self._pending_count += 1
                else:
                    self._promised.add(object_id)
                    self._queue(protocol.PROMISE, object_id)
            self._flush_event.set()

    def watch(self, object_id, callback):
        """Call ``callback()`` (on the reader thread; it must not block) once the object
        this process owns arrives, or at once if it is here, or if the node is gone."""
        with self._lock:
            here = object_id in self._values or self._closed
            if not here:
                self._watchers[object_id] = callback
        if here:
            callback()

    def publish_ref(self, object_id):
        """A ref pickled outside purerun's serializer (ObjectRef.__reduce__)."""
        if self._direct_local and object_id in self._direct_local:
            self._publish((object_id,))

    def direct_results(self, delivered, lease_id):
        """Results of direct tasks ``[(DirectTask, results, span)]``: their values here, the
        promised ones sealed at the node, and their records for its task history."""
        with self._lock:
            local = self._direct_local
            promised = self._promised
            refs = self._refs
            for task, results, span in delivered:
                error = None
                for object_id, kind, payload, _contained in results:
                    if kind == STORED:   # the node holds it for us (direct_put)
                        local.pop(object_id, None)
                        promised.discard(object_id)
                        if object_id not in refs:
                            self._queue(protocol.DROP_REFS, object_id)
                    else:
                        if kind == ERROR:
                            error = payload
                        if object_id in promised:
                            promised.discard(object_id)
                            self._pending.append((protocol.SEAL, object_id, kind, payload))
                            self._pending_count += 1
                            self._flush_event.set()
                spec = task.spec
                history = self._history
                # Recorded before a waiter can see the results: its next message (a state
                # request, say) then carries the record.
                history.append((spec.task_id, spec.attempt, spec.name, spec.job_id, lease_id,
                                span, error, spec.resources))
                if len(history) == 1 or len(history) >= REF_FLUSH_COUNT:
                    self._flush_event.set()
                for object_id, kind, payload, _contained in results:
                    self._on_object(object_id, kind, payload)

    def submit_through_node(self, spec):
        """A direct task the leases could not take: the node runs it after all."""
        self._hand_to_node([spec], (protocol.SUBMIT, spec))

    def hand_lost_calls(self, actor_id, incarnation, specs):
        """Actor calls in flight on a channel that closed: the node settles them."""
        self._hand_to_node(specs, (protocol.ACTOR_LOST, actor_id, incarnation, specs))

    def _hand_to_node(self, specs, msg):
        """Send ``msg``, which gives the node direct calls ``specs``: their returns are the
        node's to hold from then on (dropped right after, where no ref is left here)."""
        with self._lock:
            dropped = []
            for spec in specs:
                for object_id in spec.return_ids():
                    self._direct_local.pop(object_id, None)
                    self._promised.discard(object_id)
                    if object_id not in self._refs:
                        dropped.append(object_id)
        self.send(msg)
        with self._lock:
            for object_id in dropped:
                self._queue(protocol.DROP_REFS, object_id)

    # -- streaming generators (the owner's side) ---------------------------------------------------

    def open_stream(self, task_id):
        """Streaming call ``task_id`` is made here: keep its items' values until its
        ObjectRefGenerator hands them out or dies (close_stream)."""
        self._streams[task_id] = None

    def _stream_item(self, gen):
        """The id of ``gen``'s next item, marked as pushed to us (never SUBSCRIBEd: the
        node has no entry for an item before it is yielded)."""
        object_id = item_id(gen._task_id, gen._next)
        with self._lock:
            self._subscribed.add(object_id)
        return object_id

    def stream_next(self, gen, timeout):
        """The next ref of ``gen``; None on timeout.

        Raises:
            StopIteration: its end (or an error ref, handed out before) was reached.
        """
        if gen._done:
            raise StopIteration
        object_id = self._stream_item(gen)
        if not self._await_ids([object_id], 1, timeout, stop_on_error=False):
            return None
        with self._lock:
            entry = self._values.get(object_id)
            if entry is None or entry == (INLINE, END_PAYLOAD):
                gen._done = True
                raise StopIteration
            gen._next += 1
            if entry[0] == ERROR:
                gen._done = True   # an error ends the stream, as in Ray
            ref = self.new_ref(object_id)   # the node has held it for us since it came
        if gen._backpressure > 0:
            self.send((protocol.ITEM_READ, gen._task_id, gen._next))
        return ref

    def stream_future(self, gen):
        """A Future done when ``gen``'s next item is here; None if it is (or has ended)."""
        if gen._done:
            return None
        object_id = self._stream_item(gen)
        if self.inline:
            self.start_reader()  # the future must complete while this thread does other things
        with self._lock:
            if object_id in self._values:
                return None
            future = concurrent.futures.Future()
            self._stream_futures.setdefault(object_id, []).append(future)
        return future

    def stream_has_next(self, gen):
        return item_id(gen._task_id, gen._next) in self._values

    def stream_at_end(self, gen):
        return self._values.get(item_id(gen._task_id, gen._next)) == (INLINE, END_PAYLOAD)

    def stream_waitable(self, gen):
        """The object id wait() waits on for ``gen``: its next item, or its end."""
        if gen._done:
            return gen._ref._id
        return self._stream_item(gen)

    def close_stream(self, task_id, next_index):
        """An ObjectRefGenerator died having handed out ``next_index`` refs (any thread)."""
        if self._closed:
            return
        with self._lock:
            self._streams.pop(task_id, None)
            values = self._values
            index = next_index
            while True:   # items arrive in order: the ones here follow one another
                object_id = item_id(task_id, index)
                self._subscribed.discard(object_id)
                if values.pop(object_id, None) is None:
                    break
                index += 1
            self._pending.append((protocol.STREAM_DROPPED, task_id, next_index))
            self._pending_count += 1
            self._flush_event.set()

    # -- streaming generators (the worker's side) --------------------------------------------------

    def report_item(self, spec, index, kind, payload, contained):
        """Send value ``index`` a streaming call yielded; with backpressure, wait until the
        owner has taken enough of them."""
        self.send((protocol.GENERATOR_ITEM, spec.task_id, spec.attempt, index, kind, payload,
                   contained))
        limit = spec.backpressure
        # Not on an event loop (an asyncio actor's generator): waiting would stop every
        # other call of the actor, and Ray does not pace async generators either.
        if limit > 0 and not _on_event_loop():
            self._wait_items_read(spec.task_id, index + 1 - limit + 1)

    def _wait_items_read(self, task_id, count):
        """Block until the owner of ``task_id`` has taken ``count`` items."""
        read = self._items_read
        if read.get(task_id, 0) >= count:
            return
        if self._inline_here():
            if self._wait_inline(lambda: read.get(task_id, 0) >= count, None):
                return
        cond = self._items_read_cond
        with cond:
            while read.get(task_id, 0) < count:
                if self._closed:
                    raise self._gone()
                cond.wait(1.0)

    def _on_items_read(self, task_id, count):
        with self._items_read_cond:
            if count > self._items_read.get(task_id, 0):
                self._items_read[task_id] = count
            self._items_read_cond.notify_all()

    def forget_items_read(self, task_id):
        """The call ``task_id`` ended here."""
        self._items_read.pop(task_id, None)

    # -- actors ------------------------------------------------------------------------------------

    def create_actor(self, actor_class, actor, resources, env_vars, get_if_exists, args,
                     kwargs):
        """Submit an actor's creation; return at once.

        Args:
            actor_class: what ``@remote`` made of the class; ``_export()`` gives its key
                and pickled bytes.
            actor: its ActorSpec.
            resources: what a node must have free to place it.
            env_vars: its own runtime_env env_vars (it also inherits this process's).
            get_if_exists: a live actor of the same name is the answer, if there is one.

        Returns:
            ``(actor_id, meta, actor_ref)``: the actor's id, its class's ActorClassMeta,
            and a reference to its actor object, counted for the handle made of them.

        Raises:
            ValueError: the name is taken in the namespace (and not get_if_exists).
        """
        key, pickled = actor_class._export()
        self.export_function(key, pickled)
        actor_id = ids.new_task_id()
        if actor.name is not None:
            # Registered before the creation is submitted, so a taken name fails here, in
            # the caller; the node then also holds the actor object for us.
            existing = self.request("register_actor", actor.name, actor.namespace,
                                    self.job_id, actor_id, actor.meta, get_if_exists)
            if existing is not None:
                existing_id, existing_meta = existing
                return existing_id, existing_meta, self.new_ref(
                    ids.object_id(existing_id, 0), subscribed=True)
        payload, in_store, deps, contained, keepalive = self.prepare_args(args, kwargs)
        inherited = self.inherited_env_vars()
        if inherited:
            env_vars = merge_env_vars(inherited, env_vars)
        spec = creation_spec(actor_id, key, actor, resources, env_vars, self.job_id,
                             args=payload, args_in_store=in_store, deps=deps,
                             contained=contained)
        actor_ref = self.new_ref(ids.object_id(actor_id, 0), subscribed=True)
        self.send((protocol.SUBMIT, spec))
        del keepalive
        return actor_id, actor.meta, actor_ref

    def submit_actor_method(self, handle, method, fields, args, kwargs):
        """Submit a call of ``method`` on the handle's actor; return its return ObjectRefs.

        Args:
            handle: the ActorHandle (its actor id, class metadata and pending-calls cap).
            fields: TaskSpec fields of the call, as ``options.method_fields`` gives them.

        Raises:
            PendingCallsLimitExceeded: the handle's cap of calls in flight is reached.
        """
        if handle._max_pending_calls > 0:
            self._check_pending_calls(handle)
        payload, in_store, deps, contained, keepalive = self.prepare_args(args, kwargs)
        spec = TaskSpec(task_id=ids.new_task_id(), name=f"{handle._meta.class_name}.{method}",
                        function_key=None, args=payload, args_in_store=in_store, deps=deps,
                        contained=contained, kind=ACTOR_METHOD, actor_id=handle._actor_id,
                        method=method, job_id=self.job_id, **fields)
        return_ids = spec.return_ids()
        refs = [self.new_ref(object_id, subscribed=True) for object_id in return_ids]
        self._actor_calls.update(return_ids)  # cancel(force=True) refuses these
        if (not deps and not contained and not in_store and self._direct is not False
                and direct.actor_call_eligible(spec)
                and self._try_direct(return_ids, lambda submitter: submitter.call_actor(
                    spec, handle._actor_ref, return_ids[0]))):
            if handle._max_pending_calls > 0:
                handle._pending.append(refs[0])
            return refs
        if spec.generator == STREAMING:
            self.open_stream(spec.task_id)   # before its first item can arrive
        self.send_soon((protocol.SUBMIT, spec))
        del keepalive
        if handle._max_pending_calls > 0 and refs:
            handle._pending.append(refs[0])
        return refs

    def _check_pending_calls(self, handle):
        values = self._values
        handle._pending = [r for r in handle._pending if r._id not in values]
        if len(handle._pending) >= handle._max_pending_calls:
            raise exceptions.PendingCallsLimitExceeded(
                f"The actor {handle!r} has {len(handle._pending)} calls in flight from this "
                f"process, the max_pending_calls limit ({handle._max_pending_calls}). Wait for "
                "some results before submitting more.")

    def kill_actor(self, handle, no_restart):
        self.request("kill_actor", handle._actor_id, no_restart)

    def get_actor(self, name, namespace):
        """Look up the live actor named ``name`` in ``namespace`` (None: this job's).

        Returns:
            ``(actor_id, meta, actor_ref)``, as ``create_actor`` does.

        Raises:
            ValueError: there is no such actor.
        """
        found = self.request("get_actor", name, namespace, self.job_id)
        if found is None:
            raise actor_not_found(name, namespace)
        actor_id, meta = found
        # The node added our hold on the actor object before answering.
        return actor_id, meta, self.new_ref(ids.object_id(actor_id, 0), subscribed=True)

    def list_named_actors(self, all_namespaces):
        """Names of the live named actors in this job's namespace (``all_namespaces``: dicts
        with each one's name and namespace, across namespaces)."""
        return self.request("list_named_actors", bool(all_namespaces), self.namespace,
                            self.job_id)

    def inherited_env_vars(self):
        """runtime_env env_vars that tasks submitted from here inherit (job, task, actor)."""
        if not self.is_worker:
            return self.job_env_vars
        if self.actor_id is not None:
            return self.actor_env_vars
        task = self.current_task
        return task.env_vars if task is not None else None

    @property
    def current_task(self):
        """The TaskSpec this thread is running (workers), or None."""
        return getattr(self._task_local, "task", None)

    @current_task.setter
    def current_task(self, spec):
        self._task_local.task = spec
        if spec is not None:
            self._last_task = spec

    @property
    def job_id(self):
        task = self.current_task or self._last_task
        if self.is_worker and task is not None:
            return task.job_id
        info = self.info or self.wait_welcome()
        return info["job_id"]

    # -- getting values ----------------------------------------------------------------------------

    def _await_ids(self, object_ids, need, timeout, stop_on_error):
        """Block until ``need`` of ``object_ids`` are here (or an error, if stop_on_error).

        Returns False on timeout.
        """
        values = self._values
        with self._lock:
            missing = list(itertools.filterfalse(values.__contains__, object_ids))
            ready = len(object_ids) - len(missing)
            if ready >= need or not missing:
                return True
            if stop_on_error and ready and any(values[o][0] == ERROR
                                               for o in object_ids if o in values):
                return True
            missing_set = set(missing)
            # A get of one ref twice counts its arrival once.
            waiter = _Waiter(missing_set, min(need - ready, len(missing_set)), stop_on_error)
            self._waiting.append(waiter)
            subscribe = self._to_subscribe(missing)
        return self._block(waiter, subscribe, timeout)

    def _to_subscribe(self, missing):
        """Of ``missing`` ids, those the node does not push to us yet; marked as pushed.
        Called with self._lock held."""
        subscribed = self._subscribed
        subscribe = list(itertools.filterfalse(subscribed.__contains__, missing))
        if subscribe:
            subscribed.update(subscribe)
        return subscribe

    def _block(self, waiter, subscribe, timeout):
        """Wait for ``waiter`` (registered in ``_waiting``) to be released; False on timeout.

        Sends the SUBSCRIBE of ``subscribe`` (or flushes queued submissions, which the
        awaited objects may depend on) and, in a task, BLOCKED/UNBLOCKED around the wait.
        """
        try:
            if self._closed:
                raise self._gone()
            self._submits_since_block = 0
            if subscribe:
                self.send((protocol.SUBSCRIBE, subscribe))
            else:
                self.flush()
            blocked = self.is_worker and self.current_task is not None
            if blocked:
                self._blocked_depth += 1
                if self._blocked_depth == 1:
                    self.send((protocol.BLOCKED,))
            try:
                return self._wait_released(waiter, timeout)
            finally:
                if blocked:
                    self._blocked_depth -= 1
                    if self._blocked_depth == 0 and not self._closed:
                        self.send((protocol.UNBLOCKED,))
        finally:
            with self._lock:
                try:
                    self._waiting.remove(waiter)
                except ValueError:   # _mark_dead took it
                    pass

    def _wait_released(self, waiter, timeout):
        if self._inline_here():
            outcome = self._wait_inline(lambda: waiter.released, timeout)
            if outcome is not None:
                if outcome and waiter.cut_off:
                    raise self._gone()
                return outcome
        if self._direct:
            # Results of direct tasks in flight on one lease: read them here (core/direct.py).
            deadline = None if timeout is None else time.monotonic() + timeout
            outcome = self._direct.read_for(map(ids.task_id_of, waiter.ids),
                                            lambda: waiter.released, deadline)
            if outcome is not None:
                if outcome and waiter.cut_off:
                    raise self._gone()
                return outcome
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
        if timeout is None:
            # Wake now and then so a dead node (reported by the reader) cannot hang us.
            while not waiter.lock.acquire(timeout=1.0):
                if self._closed:
                    raise self._gone()
            if waiter.cut_off:
                raise self._gone()
            return True
        if waiter.lock.acquire(timeout=max(timeout, 0)):
            if waiter.cut_off:
                raise self._gone()
            return True
        return False

    def get_one(self, ref, timeout=None):
        """The value of one ref: an inline value already here is loaded at once (the
        common case, and the hot path of a get loop); anything else goes through get()."""
        entry = self._values.get(ref._id)
        if entry is not None and entry[0] == INLINE:
            return _load_value(*entry[1])
        return self.get((ref,), timeout)[0]

    def get(self, refs, timeout=None):
        """Values of ``refs`` (a list), in order; raises the first task error met."""
        object_ids = list(map(_ID, refs))
        if not self._await_ids(object_ids, len(object_ids), timeout, stop_on_error=True):
            raise exceptions.GetTimeoutError(
                f"Get timed out: some object(s) not ready after {timeout} s.")
        values = self._values
        entries = [values.get(object_id) for object_id in object_ids]
        # An error wakes us before everything arrived: raise it (the first in list order).
        for entry in entries:
            if entry is not None and entry[0] == ERROR:
                raise _as_raisable(serialization.deserialize(entry[1]))
        for object_id, entry in zip(object_ids, entries):
            if entry is None:  # dropped while we waited (purerun.internal.free)
                raise exceptions.ObjectFreedError(object_id.hex())
        stored = [o for o, e in zip(object_ids, entries) if e[0] == STORED]
        located = iter(self.request("locate", stored) if stored else ())
        result = []
        for object_id, entry in zip(object_ids, entries):
            if entry[0] == STORED:
                entry = next(located)
            result.append(self._value_of(object_id, entry))
        return result

    def _value_of(self, object_id, entry):
        """Deserialize a payload; an ARENA or ON_DISK one must come with a pin held for us."""
        kind, payload = entry
        if kind == INLINE:
            meta, buffers = payload
            return _load_value(meta, buffers)
        if kind == ERROR:
            raise _as_raisable(serialization.deserialize(payload))
        if kind == STORED:
            return self._value_of(object_id, self.request("locate", [object_id])[0])
        if kind == ON_DISK:
            return self._from_file(object_id, payload)
        return self._from_arena(object_id, payload)

    def _from_arena(self, object_id, payload):
        offset, meta_len, spans = payload
        view = self.arena_view
        if not spans:
            try:
                return _load_value(view[offset:offset + meta_len], ())
            finally:
                self._unpin(object_id)  # nothing refers to the arena any more
        end = spans[-1][0] + spans[-1][1]
        # The ctypes holder exports the block; every view below keeps it alive, and when the
        # last one dies its finalizer returns the pin the node gave us with the location.
        holder = (ctypes.c_char * end).from_buffer(self._arena, offset)
        weakref.finalize(holder, self._unpin, object_id)
        base = memoryview(holder).cast("B").toreadonly()
        buffers = [base[start:start + length] for start, length in spans]
        return _load_value(base[:meta_len], buffers)

    def _from_file(self, object_id, payload):
        path, total, meta_len, spans = payload
        # A read-only mapping of the file, not a copy: pages come from the page cache as they
        # are touched, and the mapping stays valid after the node removes the file, so the
        # pin (which only keeps the file until we have opened it) is returned at once.
        try:
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), total, access=mmap.ACCESS_READ)
        finally:
            self._unpin(object_id)
        base = memoryview(mapped)
        buffers = [base[start:start + length] for start, length in spans]
        return _load_value(base[:meta_len], buffers)

    def wait_remainder(self, refs):
        """The _WaitRemainder of ``refs`` if it is the not-ready list the last wait()
        returned, unchanged since (its refs are then known distinct ObjectRefs), else None.
        It is taken: another thread passing the same list meanwhile gets None."""
        with self._lock:
            remainder = self._wait_remainder
            if remainder is None or refs is not remainder.returned:
                return None
            self._wait_remainder = None
        return remainder if refs == remainder.snapshot else None

    def wait(self, refs, num_returns, timeout, remainder=None):
        """(ready, not_ready): the first ``num_returns`` ready refs in list order once that
        many are ready (or the timeout passed), and the others.

        Per call, the Python work is O(num_returns + arrivals while blocked); what grows
        with len(refs) runs at C speed (map, compress, slicing), and for the list the last
        call returned (``remainder``, from ``wait_remainder``) the ids and checks of a new
        list are skipped.
        """
        if remainder is not None:
            ids = remainder.ids
            id_set = remainder.id_set
            cacheable = True
        else:
            ids = list(map(_ID, refs))    # an ObjectRefGenerator's is its next item's
            id_set = None
            cacheable = all(type(r) is ObjectRef for r in refs) if refs else False
        values = self._values
        deadline = None if timeout is None else time.monotonic() + timeout
        subscribe_checked = remainder is not None
        while True:
            with self._lock:
                found = list(itertools.islice(
                    itertools.compress(itertools.count(), map(values.__contains__, ids)),
                    num_returns))
                if len(found) >= num_returns:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if id_set is None:
                    id_set = set(ids)
                waiter = _Waiter(id_set, num_returns - len(found), False)
                self._waiting.append(waiter)
                subscribe = []
                if not subscribe_checked:   # ids of a list met before are subscribed
                    subscribe = self._to_subscribe(
                        list(itertools.filterfalse(values.__contains__, ids)))
                    subscribe_checked = True
            if not self._block(waiter, subscribe, left):
                continue    # timed out: one last look, then the loop ends at the deadline
        ready = [refs[i] for i in found]
        not_ready = _drop(refs[:], found)
        if cacheable:
            # The remainder's lists and set, or this call's own, are nobody else's: cut
            # in place (a memmove), not copied.
            if id_set is not None:   # the waiter that shared it is gone
                id_set.difference_update([ids[i] for i in found])
            snapshot = _drop(remainder.snapshot, found) if remainder else not_ready[:]
            self._wait_remainder = _WaitRemainder(not_ready, snapshot, _drop(ids, found),
                                                  id_set)
        return ready, not_ready

    def future(self, ref):
        if self.inline:
            self.start_reader()  # the future must complete while this thread does other things
        future = concurrent.futures.Future()
        object_id = ref._id
        subscribe = False
        with self._lock:
            entry = self._values.get(object_id)
            if entry is None:
                self._futures.setdefault(object_id, []).append((future, ref))
                if object_id not in self._subscribed:
                    self._subscribed.add(object_id)
                    subscribe = True
        if entry is not None:
            self._complete_future(future, object_id, entry)
            return future
        if self._direct:
            self._direct.arm_for(ids.task_id_of(object_id))   # nobody waits in a get for it
        if subscribe:
            self.send((protocol.SUBSCRIBE, [object_id]))
        else:
            # Someone will wait on this future: a submission it depends on must not sit in
            # the batch until the flusher's next round (up to REF_FLUSH_DELAY later).
            self.flush()
        return future

    def _complete_future(self, future, object_id, entry):
        if not future.set_running_or_notify_cancel():
            return   # its caller cancelled it: nobody wants the value
        try:
            value = self._value_of(object_id, entry)
        except BaseException as exc:  # the task's error is the future's outcome
            future.set_exception(exc)
        else:
            future.set_result(value)

    def cancel(self, ref, force, recursive):
        if force and ref._id in self._actor_calls:
            raise ValueError("force=True is not supported for actor tasks; use "
                             "purerun.kill(actor) to stop the actor instead.")
        if self._direct and self._direct.cancel(ids.task_id_of(ref._id), force, recursive):
            return
        self.send((protocol.CANCEL, ref._id, force, recursive))

    def free(self, refs):
        object_ids = [r._id for r in refs]
        with self._lock:
            for object_id in object_ids:
                if object_id in self._values:
                    self._values[object_id] = (ERROR, serialization.dumps(
                        exceptions.ObjectFreedError(object_id.hex())))
        self.send((protocol.FREE, object_ids))

    # -- receiving ---------------------------------------------------------------------------------

    def start_reader(self):
        """Read the socket on a background thread from now on (and leave inline mode).

        Never waits: a thread pumping inline may be blocked in recv until the node next
        writes; the reader thread takes over when that read is done, and whatever that read
        brought is handled by the pumping thread meanwhile.
        """
        with self._lock:
            if self._reader is not None:
                return
            self.inline = False
            self._reader = threading.Thread(target=self._read_loop, name="purerun-reader",
                                            daemon=True)
        self._reader.start()

    def serve(self, execute):
        """Inline mode: read and run tasks on this thread.

        Returns True when ``execute`` asked the process to exit, False when the process
        switched to a reader thread (the caller then takes tasks from ``on_execute``).
        """
        deferred = self._deferred
        while True:
            while deferred:
                if execute(deferred.popleft()):
                    return True
            if not self.inline:
                return False
            self._pump(None)

    def _pump(self, timeout):
        """Inline mode: read what the node sent (waiting up to ``timeout``) and handle it.

        EXECUTE messages are kept for serve(): a task never starts inside another's wait.
        """
        with self._read_lock:
            if not self.inline:
                return
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
                if not ready:
                    return
            try:
                data = protocol.recv(self.sock)
                # From here until the data is handled, a cancellation (SIGINT) must not
                # unwind us: it is noted and raised below, between messages.
                self.pumping = True
            except OSError as exc:
                data = b""
                reason = f"connection to the node failed: {exc}"
            else:
                reason = "the node closed the connection"
            try:
                if not data:
                    self._mark_dead(reason)
                    os._exit(0)  # a worker whose node is gone has nothing left to do
                for msg in self._frames.feed(data):
                    if msg[0] == protocol.EXECUTE:
                        self._deferred.append(msg)
                    else:
                        self._handle_all((msg,))
            finally:
                self.pumping = False
        if self.interrupt_pending:
            self.interrupt_pending = False
            raise KeyboardInterrupt

    def _inline_here(self):
        """True if this thread must read the socket itself to make progress."""
        if not self.inline:
            return False
        if threading.get_ident() == self._inline_thread:
            return True
        self.start_reader()  # another thread waits: reading must go on in the background
        return False

    def _wait_inline(self, done, timeout):
        """Pump until ``done()`` or the timeout; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            if not self.inline:  # switched to a reader thread meanwhile
                return None
            if deadline is None:
                self._pump(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._pump(left)
        return True

    def _read_loop(self):
        # Held for good: from now on only this thread reads (see start_reader).
        self._read_lock.acquire()
        reader = self._frames
        sock = self.sock
        try:
            if self.info is None:
                data, fds = protocol.recv_with_fds(sock)
                if not data:
                    raise ConnectionError("the node closed the connection before welcoming us")
                messages = reader.feed(data)
                welcome = messages[0]
                assert welcome[0] == protocol.WELCOME, welcome[0]
                self._set_info(welcome[1], fds[0] if fds else None)
                for fd in fds[1:]:
                    os.close(fd)
                self._handle_all(messages[1:])
            recv = protocol.recv
            while True:
                data = recv(sock)
                if not data:
                    break
                self._handle_all(reader.feed(data))
            reason = self._why_the_node_left("the node closed the connection")
        except OSError as exc:
            reason = self._why_the_node_left(f"connection to the node failed: {exc}")
        except Exception as exc:  # a bug: say so rather than hang every caller
            logger.exception("purerun client reader failed")
            reason = f"internal error in the client: {exc!r}"
        self._mark_dead(reason)
        if self.is_worker:
            os._exit(0)  # the node is gone: nothing left to work for

    def _handle_all(self, messages):
        for msg in messages:
            kind = msg[0]
            if kind == protocol.OBJECT:
                self._on_object(msg[1], msg[2], msg[3])
            elif kind == protocol.EXECUTE:
                self.on_execute(msg)
            elif kind == protocol.REPLY:
                future = self._requests.pop(msg[1], None)
                if future is not None:
                    if msg[2]:
                        future.set_result(msg[3])
                    else:
                        future.set_exception(msg[3])
            elif kind == protocol.LOG:
                self._on_log(msg[1], msg[2], msg[3])
            elif kind == protocol.WARN:
                logger.warning(msg[1])
            elif kind == protocol.WELCOME:
                self._set_info(msg[1], None)
            elif kind == protocol.INTERRUPT:
                if self.on_interrupt is not None:
                    self.on_interrupt(msg[1])
            elif kind == protocol.ITEM_READ:
                self._on_items_read(msg[1], msg[2])
            elif kind == protocol.REVOKE:
                if self._direct:
                    self._direct.revoke(msg[1])
            elif kind == protocol.ACTOR_CHANNEL:
                if self.on_actor_channel is not None:
                    self.on_actor_channel(msg[1], msg[2])

    def _on_object(self, object_id, kind, payload):
        with self._lock:
            values = self._values
            waited = False
            if self._waiting:
                # Counted once: a value pushed again (already here) is no new arrival.
                fresh = object_id not in values
                is_error = kind == ERROR
                for waiter in self._waiting:
                    if object_id in waiter.ids:
                        waited = True
                        if fresh:
                            waiter.arrived(is_error)
            futures = self._futures.pop(object_id, ())
            watcher = self._watchers.pop(object_id, None) if self._watchers else None
            if object_id in self._refs or waited or futures or (
                    self._streams and object_id[:-4] in self._streams):
                values[object_id] = (kind, payload)
            if self._stream_futures:
                for future in self._stream_futures.pop(object_id, ()):
                    if not future.done():   # a timed-out wait cancelled it
                        future.set_result(True)
        if watcher is not None:
            watcher()
        if futures:
            if kind == STORED:
                # Locating asks the node, which the reader thread must never do.
                threading.Thread(target=self._complete_futures, daemon=True,
                                 args=(futures, object_id, (kind, payload))).start()
            else:
                self._complete_futures(futures, object_id, (kind, payload))

    def _complete_futures(self, futures, object_id, entry):
        for future, _ref in futures:
            self._complete_future(future, object_id, entry)

    def _on_log(self, pid, stream, text):
        if not self.log_to_driver:
            return
        out = sys.stderr if stream == 2 else sys.stdout
        prefix = f"(pid={pid}) "
        try:
            if progress.MAGIC in text or progress.showing():
                # Bar states from tqdm_ray, or output that must go around the bars.
                progress.manager().relay(out, pid, prefix, text)
                return
            progress.write_lines(out, prefix, text.split("\n"))
        except Exception:  # a closed or replaced stdout must not kill the reader
            pass

    def _mark_dead(self, reason):
        if self._closed:
            return
        self._dead_reason = reason
        self._closed = True
        self._closing.set()
        self._wait_remainder = None   # (its refs refer back to us)
        self._welcome.set()
        self._flush_event.set()
        if self._direct:
            self._direct.close()   # its leases' workers go with the node
            self._direct = False
        with self._lock:
            waiters, self._waiting = self._waiting, []
            futures = [f for fs in self._futures.values() for f, _ in fs]
            self._futures.clear()
            watchers, self._watchers = list(self._watchers.values()), {}
        for watcher in watchers:
            try:
                watcher()
            except Exception:   # a watcher must not keep the waiters below waiting
                logger.exception("purerun: a watcher failed at disconnection")
        for waiter in waiters:
            if not waiter.released:
                waiter.released = True
                waiter.cut_off = True
                waiter.lock.release()
        error = self._gone()
        for future in futures:
            future.set_exception(error)
        for future in list(self._requests.values()):
            if not future.done():
                future.set_exception(error)

    def _gone(self):
        """What every call raises once this process is cut off from its node."""
        return exceptions.RaySystemError(
            f"purerun is not running in this process any more: {self._dead_reason}. "
            "Call purerun.init() again.")

    def _why_the_node_left(self, what):
        """``what`` happened to the connection; say what became of the node process, when
        this process can tell: the exit code or signal of a node it started, or whether
        the process at the other end of the unix socket still exists."""
        if self._closed or self.is_worker:
            return what
        node = self.node
        if node is not None:
            try:
                code = node.process.wait(NODE_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                return what
            return f"the purerun node process (pid {node.pid}) {_exit_text(code)}"
        try:
            pid = struct.unpack("3i", self.sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
        except (AttributeError, OSError):
            return what
        if pid > 0 and not _process_exists(pid):
            return f"the purerun node process (pid {pid}) is gone ({what})"
        return what

    # -- shutdown ----------------------------------------------------------------------------------

    def close(self, timeout=5.0):
        """Disconnect; a driver that started the node stops it and waits for it to exit."""
        direct = self._direct
        if direct:
            direct.close()
            self._direct = False   # (it refers back to us: no cycle outlives the close)
        if not self._closed:
            if self.log_to_driver and not self.is_worker:
                try:  # what tasks printed for this driver is shown before it goes, as Ray
                    self.request("flush_output", timeout=FLUSH_OUTPUT_TIMEOUT_S)
                except Exception:
                    pass
            try:
                self.flush()
                if self.node is not None:
                    self.send((protocol.REQUEST, 0, "shutdown", ()))
            except Exception:
                pass
        self._mark_dead("purerun.shutdown() was called")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.node is not None:
            self.node.reap(timeout)
        self._flush_event.set()
        if direct:
            direct.join()   # none of its threads outlives shutdown()
        if self._flusher is not threading.current_thread():
            self._flusher.join(1.0)


def _on_event_loop():
    """Whether this thread runs an asyncio event loop (asyncio is not imported for it)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio._get_running_loop() is not None


def actor_not_found(name, namespace):
    """get_actor's error for a name no live actor holds."""
    where = f" in namespace {namespace!r}" if namespace else ""
    return ValueError(f"Failed to look up actor with name '{name}'{where}. This could be "
                      "because 1. You are trying to look up a named actor you didn't create. "
                      "2. The named actor died. 3. You did not use a namespace matching the "
                      "namespace of the actor.")



def _exit_text(code):
    """How a process ended, from its ``Popen.returncode``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return "exited" if code == 0 else f"exited with code {code}"


def _process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load_value(meta, buffers):
    """A stored value, made again here; failing to, it is a RaySystemError (as in Ray),
    whatever the value's own unpickling raised: the task that made it did not fail."""
    try:
        return serialization.deserialize(meta, buffers)
    except Exception as exc:
        raise exceptions.RaySystemError(
            f"the value could not be unpickled in this process: {exc!r}",
            traceback.format_exc()) from exc


# At most this many items are cut from a list one by one (a memmove each); more are cut by
# rebuilding the list once.
_CUT_IN_PLACE = 16


def _drop(items, positions):
    """Remove the items at ``positions`` (ascending) from the list ``items``; returns it,
    or a new list when many go. O(len(positions)) Python steps, the rest memmove."""
    if len(positions) <= _CUT_IN_PLACE:
        for i in reversed(positions):
            del items[i]
        return items
    out = []
    previous = 0
    for i in positions:
        out += items[previous:i]
        previous = i + 1
    out += items[previous:]
    return out


def split_ready(refs, present, num_returns):
    """wait()'s answer: (at most num_returns refs found in ``present``, the rest), in order."""
    ready, not_ready = [], []
    for ref in refs:
        if ref._id in present and len(ready) < num_returns:
            ready.append(ref)
        else:
            not_ready.append(ref)
    return ready, not_ready


def merge_env_vars(inherited, own):
    """A task's env_vars with those inherited from its submitter under its own."""
    return {**inherited, **(own or {})}


def _as_raisable(error):
    """A stored task error as it should be raised by get."""
    if isinstance(error, exceptions.RayTaskError):
        return error.as_instanceof_cause()
    return error


def function_key(pickled: bytes, qualname: str) -> bytes:
    return hashlib.blake2b(pickled, digest_size=16, person=qualname.encode()[:16]).digest()
