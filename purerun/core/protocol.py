"""Messages between clients (driver and workers) and the node process, and their framing.

::

    driver / worker Client                      node process
    ─────────────────────                      ────────────
    SUBMIT, EXPORT, PUT, SUBSCRIBE,        ──▶  NodeState: scheduler, tasks, actors,
    ADD_REFS, DROP_REFS, UNPIN, BLOCKED,        object table, control store
    UNBLOCKED, REQUEST, CANCEL, FREE,
    ITEM_READ, STREAM_DROPPED,
    TASK_DONE, GENERATOR_ITEM (workers)
                                          ◀──  WELCOME (first message; carries the arena fd)
                                               OBJECT (a value is ready), REPLY, LOG, WARN,
                                               EXECUTE, INTERRUPT, ITEM_READ (workers only)

    node A (as a client of node B)              node B
    ──────────────────────────────              ──────
    NODE_HELLO, SUBMIT, ADD_REFS, DROP_REFS,  ──▶  (TCP, after the HMAC handshake)
    SUBSCRIBE, CANCEL, REQUEST, FETCH,
    ITEM_READ
                                          ◀──  RESULTS, OBJECT, REPLY, WARN, DATA (raw
                                               frames: an arena block's bytes), FETCH_FAILED,
                                               GENERATOR_ITEM

A message is a tuple whose first item is its kind. Every kind is declared once, below, with
``_message(code, name, direction, fields)``: the table ``MESSAGES`` is the one place its
fields are written down, and tests check every handler against it. REQUEST operations are
declared the same way in ``REQUESTS``, and payload kinds in ``PAYLOAD_KINDS``. Tuples rather
than small classes on the wire because pickling a tuple costs 0.4 us against 2.6 us for a
NamedTuple, and a tiny task crosses a socket four times.

A frame is a 4-byte little-endian length followed by the pickled message. Large values never
travel in one: they sit in the node's shared-memory arena and messages carry their location.
Between nodes a value's bytes travel in raw frames: a message followed by bytes that are never
pickled, written from one arena and read into another (the framing section below).
"""

import pickle
import socket
import struct
import threading

TO_NODE = "client -> node"
TO_CLIENT = "node -> client"
TO_WORKER = "node -> worker"
FROM_WORKER = "worker -> node"
BETWEEN_NODES = "node -> node"


class Message:
    """One message kind: its code (first item of the tuple), name, direction and fields."""

    __slots__ = ("code", "name", "direction", "fields")

    def __init__(self, code, name, direction, fields):
        self.code = code
        self.name = name
        self.direction = direction
        self.fields = fields

    def __repr__(self):
        return f"({self.name}, {', '.join(self.fields)})  {self.direction}"


MESSAGES = {}  #: code -> Message


def _message(code, name, direction, fields):
    assert code not in MESSAGES, code
    MESSAGES[code] = Message(code, name, direction, tuple(fields.split()))
    return code


# -- client -> node ------------------------------------------------------------------------------
SUBMIT = _message(1, "SUBMIT", TO_NODE, "spec")
EXPORT = _message(2, "EXPORT", TO_NODE, "function_key pickled_function")
PUT = _message(3, "PUT", TO_NODE, "object_id payload_kind payload contained_ids")
SUBSCRIBE = _message(5, "SUBSCRIBE", TO_NODE, "object_ids")   # -> OBJECT for each, when ready
ADD_REFS = _message(6, "ADD_REFS", TO_NODE, "object_ids")     # this process now holds these
DROP_REFS = _message(7, "DROP_REFS", TO_NODE, "object_ids")   # ... and no longer holds these
BLOCKED = _message(8, "BLOCKED", FROM_WORKER, "")             # the task waits in get/wait
UNBLOCKED = _message(9, "UNBLOCKED", FROM_WORKER, "")
# results: [(object_id, kind, payload, contained_ids)]; span: (start, end) time; exiting:
# the worker leaves after this call (True), or an actor's intended exit and why (a str)
TASK_DONE = _message(10, "TASK_DONE", FROM_WORKER, "task_id results retry exiting span")
REQUEST = _message(11, "REQUEST", TO_NODE, "request_id op args")  # -> REPLY; op: REQUESTS
CANCEL = _message(12, "CANCEL", TO_NODE, "object_id force recursive")
FREE = _message(13, "FREE", TO_NODE, "object_ids")            # purerun.internal.free
UNPIN = _message(15, "UNPIN", TO_NODE, "object_ids")  # a location handed to us is not read now
# Generator calls (see core/generators.py). A worker reports value ``index`` its streaming
# call yielded in run ``attempt``; between nodes the one running the call relays it to the
# one that placed it, ``contained`` then saying whether it keeps the value held for it.
GENERATOR_ITEM = _message(16, "GENERATOR_ITEM", FROM_WORKER,
                          "task_id attempt index kind payload contained")
# The owner of a streaming call with backpressure has taken ``count`` of its items; the node
# passes it on to the worker running the call (through the node running it, in a cluster).
ITEM_READ = _message(17, "ITEM_READ", TO_NODE, "task_id count")
# The owner's ObjectRefGenerator is gone after handing out ``next_index`` items.
STREAM_DROPPED = _message(18, "STREAM_DROPPED", TO_NODE, "task_id next_index")
# The direct call path (core/direct.py). A driver's task ran on a worker it leased: records
# [(task_id, attempt, name, job_id, lease_task_id, span, error_payload or None, resources)]
# for the task history and the timeline.
DIRECT_DONE = _message(40, "DIRECT_DONE", TO_NODE, "records")
# Return values of direct tasks not back yet, which the driver handed on (as an argument or
# inside a value): pending entries it holds, sealed later by SEAL (or failed, if it leaves).
PROMISE = _message(41, "PROMISE", TO_NODE, "object_ids")
SEAL = _message(42, "SEAL", TO_NODE, "object_id payload_kind payload")
# Ahead of a state request about tasks: the driver's direct tasks queued or running now,
# [(task_id, attempt, name, job_id, lease_task_id or None (queued), resources)]; the answer
# to that request shows them.
DIRECT_LIVE = _message(43, "DIRECT_LIVE", TO_NODE, "records")
# Direct actor calls: the driver asks for a channel to an actor's worker, which the node
# passes on (ACTOR_CHANNEL) once the actor is alive here; the worker connects to
# ``address`` and proves ``nonce`` as a leased worker does.
ACTOR_DIRECT = _message(44, "ACTOR_DIRECT", TO_NODE, "actor_id address nonce")
# The channel to incarnation ``incarnation`` (its restarts so far) of an actor closed with
# these calls in flight: the node settles them as calls in flight on that incarnation.
ACTOR_LOST = _message(45, "ACTOR_LOST", TO_NODE, "actor_id incarnation specs")
# A call that came on a channel ended the actor (exit_actor, sys.exit(0)); reason: True,
# or why (a str). Sent ahead of the call's result, before the worker leaves.
ACTOR_EXITING = _message(46, "ACTOR_EXITING", FROM_WORKER, "reason")

# -- node -> client ------------------------------------------------------------------------------
# info: dict (node_id, job_id, session_dir, arena_size, ...)
WELCOME = _message(20, "WELCOME", TO_CLIENT, "info")
OBJECT = _message(21, "OBJECT", TO_CLIENT, "object_id payload_kind payload")
# value is the result, or an exception if not ok
REPLY = _message(22, "REPLY", TO_CLIENT, "request_id ok value")
LOG = _message(23, "LOG", TO_CLIENT, "pid stream text")       # stream: 1 stdout, 2 stderr
WARN = _message(24, "WARN", TO_CLIENT, "text")
EXECUTE = _message(25, "EXECUTE", TO_WORKER, "spec dep_payloads pickled_function gpu_ids")
INTERRUPT = _message(26, "INTERRUPT", TO_WORKER, "task_id")   # cancel this running actor call
# Other work waits for room that a lease of this driver holds: give the lease back once
# the tasks sent on it are done (core/direct.py).
REVOKE = _message(27, "REVOKE", TO_CLIENT, "lease_task_id")
# A driver asks for a channel to the actor this worker hosts (see ACTOR_DIRECT).
ACTOR_CHANNEL = _message(28, "ACTOR_CHANNEL", TO_WORKER, "address nonce")

# -- driver <-> leased worker (core/direct.py), over their own unix socket --------------------
# The worker first writes the lease's nonce (raw bytes), then these frames.
DIRECT = "driver <-> leased worker"
LEASE_HELLO = _message(50, "LEASE_HELLO", DIRECT, "pid")
# An actor's worker on a channel: ``incarnation`` is the actor's restarts so far. Calls
# then come as LEASE_TASKS (pickled function None), cancels as LEASE_CANCEL, results as
# LEASE_DONE; the channel has no LEASE_END (it closes with the actor, or the driver).
ACTOR_HELLO = _message(55, "ACTOR_HELLO", DIRECT, "pid incarnation")
# [(spec, pickled function or None: the first task of its function on this lease)]
LEASE_TASKS = _message(51, "LEASE_TASKS", DIRECT, "tasks")
LEASE_CANCEL = _message(52, "LEASE_CANCEL", DIRECT, "task_id recursive")
LEASE_END = _message(53, "LEASE_END", DIRECT, "")
# [(task_id, results, retry, span)]: results as TASK_DONE's, kind STORED for those the
# worker had the node seal for the driver ("direct_put")
LEASE_DONE = _message(54, "LEASE_DONE", DIRECT, "done")

# -- node -> node (TCP, after the HMAC handshake) -----------------------------------------------
# A node that connects to another acts as one of its clients: it SUBMITs tasks placed there,
# SUBSCRIBEs to objects it borrows, sends ADD_REFS / DROP_REFS / CANCEL / REQUEST, and hears
# OBJECT / REPLY / WARN back, as a driver would. These kinds are the rest of that talk.
NODE_HELLO = _message(30, "NODE_HELLO", BETWEEN_NODES, "node_id")  # first frame, connector
# The holder of a task the asker placed there: its results, [(object_id, kind, payload)];
# the asker keeps a hold on every REMOTE one until it sends DROP_REFS.
RESULTS = _message(31, "RESULTS", BETWEEN_NODES, "task_id results")
FETCH = _message(32, "FETCH", BETWEEN_NODES, "object_id")     # -> DATA chunks, or FETCH_FAILED
# A raw frame: ``length`` bytes of the object's block, from ``offset``, follow the header.
DATA = _message(33, "DATA", BETWEEN_NODES, "object_id offset length total")
FETCH_FAILED = _message(34, "FETCH_FAILED", BETWEEN_NODES, "object_id error_payload")

# -- REQUEST operations: op -> (argument names, what the REPLY carries) -------------------------
REQUESTS = {
    "alloc": (("size",), "(ARENA, offset), or (ON_DISK, path) for a value larger than the "
                         "arena: reserved for the asker until it PUTs or leaves"),
    "locate": (("object_ids",), "[(payload_kind, payload)], ARENA and ON_DISK locations pinned"),
    "shutdown": ((), "None; the node stops"),
    # A driver about to leave: what workers printed so far reaches it (LOG) before the REPLY.
    "flush_output": ((), "None, after every line workers printed so far"),
    "cluster_resources": ((), "{resource: total}"),
    "available_resources": ((), "{resource: free now}"),
    "nodes": ((), "[node dict], as ray.nodes()"),
    "stats": ((), "{counters of workers, tasks, functions and the object store}"),
    "set_namespace": (("namespace",), "None; the asker's job's namespace"),
    "register_actor": (("name", "namespace", "job_id", "actor_id", "meta", "get_if_exists"),
                       "None, or (actor_id, meta) of the live actor holding the name"),
    "get_actor": (("name", "namespace", "job_id"), "None, or (actor_id, meta)"),
    "list_named_actors": (("all_namespaces", "namespace", "job_id"),
                          "[name] in the namespace, or [{name, namespace}] of every one"),
    "set_job_metadata": (("metadata",), "None; the asker's job's metadata (str to str)"),
    "kill_actor": (("actor_id", "no_restart"), "None"),
    "timeline": ((), "[Chrome trace event]"),
    # a leased worker's results that the node must hold (stored in the arena, or holding
    # refs): sealed for the driver that leased it (channel None) or that asked for actor
    # channel ``channel`` (its nonce), which then counts as holding them
    "direct_put": (("results", "channel"), "None, once sealed"),
    # the state API (core/state_rules.py): resource is tasks, actors, objects, nodes or jobs;
    # everywhere: also ask the other nodes (tasks and objects are each node's own)
    "state": (("resource", "filters", "limit", "everywhere"),
              "([record dict], how many passed the filters); limit None: all"),
    # the status page (core/dashboard.py): the node table (this node's row live), this node's
    # store, latest task spans and workers' last output lines (core/state_rules.py)
    "dashboard": ((), "{node_id, nodes, store, timeline, logs}"),
    "task_summary": (("everywhere",), "({counts: {name: {state: n}}, latest: [task record]}, "
                                      "how many tasks); everywhere: of the whole cluster"),
    "log_to_driver": (("on",), "None; whether worker output is relayed to the asker (LOG)"),
    # placement groups (core/group_rules.py)
    "pg_create": (("group_id", "bundles", "strategy", "name", "job_id", "detached",
                   "bundle_labels"),
                  "its state: PENDING or CREATED"),
    "pg_remove": (("group_id",), "None; its bundles are returned, its work ends"),
    "pg_info": (("group_id",), "None, or {state, nodes, bundles, strategy}"),
    "pg_table": (("group_id",), "placement_group_table() of one group, or of all (None)"),
    "pg_get": (("name", "job_id"), "None, or (group_id, bundles, strategy)"),
    "pg_sync": ((), "None; the node reads its bundles again (sent by other nodes)"),
    "pg_current": ((), "the id of the group the asking worker's task runs in, or None"),
}

# -- payload kinds: how an object's value travels ---------------------------------------------------
PAYLOAD_KINDS = {}  #: code -> (name, payload fields)


def _payload(code, name, fields):
    PAYLOAD_KINDS[code] = (name, fields)
    return code


INLINE = _payload(0, "INLINE", "(meta: bytes, buffers: tuple of bytes)")
ARENA = _payload(1, "ARENA", "(offset, meta_len, buffer_spans); spans: ((offset, length), ...)")
ERROR = _payload(2, "ERROR", "pickled exception (raised by get)")
# The value is in the node's store (arena or spilled to disk); ask REQUEST "locate" for an
# ARENA location, which the node keeps pinned for the asker until it sends UNPIN.
STORED = _payload(3, "STORED", "None")
# The value is in a file (spilled, or larger than the arena); spans relative to its start.
# Handed to a reader, with a pin, when it cannot be read back into the arena; written by a
# maker given a path by "alloc".
ON_DISK = _payload(4, "ON_DISK", "(path, total_size, meta_len, spans)")
# Between nodes: the value's block is in another node's store; FETCH it from there.
# Spans are relative to the block's start, as ON_DISK's.
REMOTE = _payload(5, "REMOTE", "(node_id, total_size, meta_len, spans)")

# Where a value sits can change (spilled to disk, restored elsewhere in the arena), so an ARENA
# location is only ever handed to a process together with a pin that keeps it valid: in the
# answer to "locate", and in EXECUTE for a task's arguments. Each one handed out is returned
# by one UNPIN, sent when the last zero-copy view made from it dies. An ON_DISK location comes
# with a pin too, returned as soon as the reader has mapped the file (a mapping outlives the
# file's removal).

# -- framing --------------------------------------------------------------------------------------
#
# Every frame starts with a 4-byte little-endian word: the length of the pickled message that
# follows. A raw frame sets RAW_FLAG in that word and carries bytes after its message that
# are never pickled (a chunk of an object, straight from one arena into another):
#
#   frame      <I len(body)              body (pickled message)
#   raw frame  <I RAW_FLAG | len(body)   <Q nbytes   body (pickled message)   nbytes raw bytes
#
# A normal frame is unchanged by raw frames and costs nothing more: the flag only shows in a
# length no message may have (MAX_FRAME_SIZE < RAW_FLAG), so a reader that knows nothing of
# raw frames refuses one as an oversized frame and closes the connection, and a reader that
# does meets the flag only on the branch that already rejects oversized lengths. The raw
# length comes before the message so that it is checked before anything is unpickled, and
# the message before the bytes so that the reader knows where they go before they arrive.

_HEADER = struct.Struct("<I")
HEADER_SIZE = _HEADER.size
_RAW_HEADER = struct.Struct("<IQ")
RAW_HEADER_SIZE = _RAW_HEADER.size
RAW_FLAG = 1 << 31
_dumps = pickle.dumps
_loads = pickle.loads
PROTOCOL = 5

# Reads ask for this much at a time: big enough to take a burst of small messages in one
# syscall, small enough not to matter per connection.
RECV_SIZE = 256 * 1024
# A frame announcing more than this is garbage or hostile, never a real message: large values
# travel through the shared-memory arena (or in raw frames between nodes), so a frame holds
# metadata and small inline values. The bound stops one bad length from growing a buffer
# without end; it is generous because a pickled function may close over a big constant.
MAX_FRAME_SIZE = 1 << 30
# A raw frame announcing more bytes than this (1 TiB) is corrupt: no host has that much
# memory to send from. Without a bound, a corrupt length would make a reader that discards
# the frame swallow the rest of the stream as its payload, and never say why.
MAX_RAW_SIZE = 1 << 40
# A raw payload nobody wants is read into a scratch buffer of this size and forgotten: as
# big as a plain read, so discarding takes no more syscalls than reading messages, and
# small enough to keep for good in any reader that ever discarded one.
DISCARD_SIZE = RECV_SIZE


class ProtocolError(ConnectionError):
    """A peer broke the framing or the handshake; the connection must be closed.

    Raised for a frame longer than ``MAX_FRAME_SIZE``, a raw frame longer than
    ``MAX_RAW_SIZE`` or where none is expected, a frame whose body does not unpickle, or
    bytes that are not a valid handshake. A ``ConnectionError``, like ``ssl.SSLError`` is an
    ``OSError``: code that already handles a lost connection handles this one too.
    """


def encode(msg) -> bytes:
    """One framed message."""
    body = _dumps(msg, PROTOCOL)
    return _HEADER.pack(len(body)) + body


def _framed(msgs):
    """The parts (header, body, header, ...) of ``msgs`` framed, and their total length."""
    parts = []
    total = 0
    for msg in msgs:
        body = _dumps(msg, PROTOCOL)
        total += len(body) + HEADER_SIZE
        parts.append(_HEADER.pack(len(body)))
        parts.append(body)
    return parts, total


def encode_many(msgs) -> bytes:
    """Several framed messages in one buffer, for one write."""
    return b"".join(_framed(msgs)[0])


# A batch this large is written from its parts (sendmsg) rather than joined first: joining
# copies it all, into a fresh allocation of that size. sendmsg takes at most IOV_MAX (1024
# on Linux) parts.
GATHER_SIZE = 64 * 1024
_MAX_PARTS = 1024


def send_many(sock, msgs):
    """Frame ``msgs`` and write them all to the blocking ``sock``, as
    ``sock.sendall(encode_many(msgs))`` would; a large batch (a put's value, say) goes out
    from its pickled parts, with no copy of the whole."""
    parts, total = _framed(msgs)
    if total < GATHER_SIZE or len(parts) > _MAX_PARTS:
        sock.sendall(b"".join(parts))
        return
    sent = sock.sendmsg(parts)
    while sent < total:
        # A partial write (a socket timeout, a signal): skip what went, go on from there.
        total -= sent
        while sent >= len(parts[0]):
            sent -= len(parts.pop(0))
        if sent:
            parts[0] = memoryview(parts[0])[sent:]
        sent = sock.sendmsg(parts)


def encode_raw(msg, nbytes: int) -> bytes:
    """The head of one raw frame: all of it but the ``nbytes`` raw bytes that follow it.

    Args:
        msg: A picklable message; the receiver gets it once all the raw bytes are in.
        nbytes: How many raw bytes the sender writes right after this head.

    Returns:
        The framed head, to be written immediately before the raw bytes.

    Raises:
        ValueError: ``nbytes`` is negative or more than ``MAX_RAW_SIZE``, or the pickled
            message is longer than ``MAX_FRAME_SIZE``.
    """
    if not 0 <= nbytes <= MAX_RAW_SIZE:
        raise ValueError(f"a raw frame carries 0 to {MAX_RAW_SIZE} bytes, not {nbytes}; "
                         "send a larger payload as several raw frames")
    body = _dumps(msg, PROTOCOL)
    if len(body) > MAX_FRAME_SIZE:
        raise ValueError(f"a raw frame's message pickles to {len(body)} bytes, more than the "
                         f"{MAX_FRAME_SIZE} a message may have; put the bulk in the raw bytes")
    return _RAW_HEADER.pack(RAW_FLAG | len(body), nbytes) + body


def raw_view(data) -> memoryview:
    """A flat view of the bytes of ``data``, a raw payload's buffer, whatever its item type.

    Raises:
        TypeError: ``data`` is not a buffer, or not a contiguous one.
    """
    view = memoryview(data)
    if not view.c_contiguous:
        view.release()
        raise TypeError("a raw payload's buffer must be contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class FrameReader:
    """Turns a byte stream into messages; feed it whatever recv returned.

    A raw frame's message is not returned when it is decoded but once its raw bytes are all
    in, in its place among the other messages. As soon as the message is decoded,
    ``raw_sink(msg, nbytes)`` says where the bytes go: it returns a writable buffer of
    exactly ``nbytes`` bytes (a memoryview of the receiving arena, say), or None to have them
    read and discarded (the message is still returned, so its owner can tell and log it).
    Whatever of the payload ``feed`` was given is copied there; while more is awaited
    (``raw_left``) nothing else is buffered, so a reader may receive the rest straight into
    the sink's buffer: ``sock.recv_into(reader.raw_buffer(limit))``, then
    ``reader.raw_filled(n)``.

    Args:
        raw_sink: ``fn(msg, nbytes) -> writable buffer of nbytes, or None``; None (the
            default) refuses raw frames.

    Attributes:
        raw_sink: As above; may be set at any time before a raw frame arrives.
        raw_left: Raw bytes the frame being received still awaits; 0 between frames.
        raw_msg: The message of the raw frame being received, or None.

    ``feed`` raises ``ProtocolError`` for a frame longer than ``MAX_FRAME_SIZE`` (as soon as
    its header arrives), a raw frame longer than ``MAX_RAW_SIZE`` or with no ``raw_sink``
    (before its message is unpickled), one that does not unpickle, or a sink that raised or
    returned an unfit buffer; the reader is unusable after that, as is the connection it
    reads.
    """

    __slots__ = ("_buf", "raw_sink", "raw_left", "raw_msg", "_raw_view", "_raw_pos",
                 "_scratch")

    def __init__(self, raw_sink=None):
        self._buf = bytearray()
        self.raw_sink = raw_sink
        self.raw_left = 0
        self.raw_msg = None
        self._raw_view = None     # the sink's buffer (a flat byte view); None: discarding
        self._raw_pos = 0         # how much of it is filled
        self._scratch = None      # for discarded payloads, made on first use

    def feed(self, data) -> list:
        buf = self._buf
        if self.raw_left:
            # invariant: buf is empty while a raw payload is awaited
            msgs, data = self._feed_raw(data)
            if not data:
                return msgs
        else:
            msgs = []
        # With nothing held over (the usual case) the frames are read from ``data`` itself
        # and only an incomplete tail is kept: no copy of a large message into the buffer.
        if buf:
            buf += data
            src = buf
        else:
            src = data
        pos = 0
        end = len(src)
        unpack = _HEADER.unpack_from
        limit = MAX_FRAME_SIZE
        with memoryview(src) as view:
            while end - pos >= HEADER_SIZE:
                (size,) = unpack(src, pos)
                if size > limit:
                    if not size & RAW_FLAG:
                        raise ProtocolError(f"a frame announced {size} bytes, more than the "
                                            f"{MAX_FRAME_SIZE} a message may have")
                    if end - pos < RAW_HEADER_SIZE:
                        break
                    after = self._start_raw(src, view, pos, end)
                    if after is None:
                        break          # the raw frame's message is not all in yet
                    pos = after
                    if self.raw_left:
                        break          # pos == end: the rest goes straight to the sink
                    msgs.append(self._finish_raw())
                    continue
                stop = pos + HEADER_SIZE + size
                if stop > end:
                    break
                try:
                    msgs.append(_loads(view[pos + HEADER_SIZE:stop]))
                except Exception as exc:
                    raise ProtocolError(f"a frame of {size} bytes does not unpickle: "
                                        f"{exc!r}") from exc
                pos = stop
            if src is not buf and pos < end:
                buf += view[pos:end]
        # The view is released above: a bytearray cannot shrink while a view of it exists.
        if src is buf and pos:
            del buf[:pos]
        return msgs

    # -- raw frames --

    def _start_raw(self, buf, view, pos, end):
        # A raw frame's header is at buf[pos:]. Returns where the bytes after what it took
        # of them begin, or None while its message is incomplete.
        word, nbytes = _RAW_HEADER.unpack_from(buf, pos)
        size = word ^ RAW_FLAG
        if self.raw_sink is None:
            raise ProtocolError(f"a raw frame of {nbytes} bytes arrived where none is "
                                "expected (this connection has no raw sink)")
        if size > MAX_FRAME_SIZE:
            raise ProtocolError(f"a raw frame's message announced {size} bytes, more than "
                                f"the {MAX_FRAME_SIZE} a message may have")
        if nbytes > MAX_RAW_SIZE:
            raise ProtocolError(f"a raw frame announced {nbytes} raw bytes, more than the "
                                f"{MAX_RAW_SIZE} one may carry")
        start = pos + RAW_HEADER_SIZE
        stop = start + size
        if stop > end:
            return None
        try:
            msg = _loads(view[start:stop])
        except Exception as exc:
            raise ProtocolError(f"a raw frame's message of {size} bytes does not unpickle: "
                                f"{exc!r}") from exc
        self._open_raw(msg, nbytes)
        taken = min(nbytes, end - stop)
        if taken:
            self._write_raw(view[stop:stop + taken])
        return stop + taken

    def _open_raw(self, msg, nbytes):
        try:
            target = self.raw_sink(msg, nbytes)
        except Exception as exc:
            raise ProtocolError(f"the raw sink failed on a raw frame of {nbytes} bytes "
                                f"({msg!r:.200}): {exc!r}") from exc
        if target is not None:
            try:
                target = raw_view(target)
            except TypeError as exc:
                raise ProtocolError(f"the raw sink returned {type(target).__name__}, not a "
                                    f"contiguous buffer: {exc}") from None
            if target.nbytes != nbytes or (target.readonly and nbytes):
                problem = (f"the raw sink returned a {'read-only ' if target.readonly else ''}"
                           f"buffer of {target.nbytes} bytes for a raw frame of {nbytes}")
                target.release()
                raise ProtocolError(problem)
        self.raw_msg = msg
        self._raw_view = target
        self._raw_pos = 0
        self.raw_left = nbytes

    def _write_raw(self, chunk):
        n = len(chunk)
        target = self._raw_view
        if target is not None:
            pos = self._raw_pos
            target[pos:pos + n] = chunk
            self._raw_pos = pos + n
        self.raw_left -= n

    def _feed_raw(self, data):
        # (messages completed, the rest of data) for bytes fed while a payload is awaited.
        left = self.raw_left
        if len(data) <= left:
            self._write_raw(data)
            return ([] if self.raw_left else [self._finish_raw()]), b""
        with memoryview(data) as chunk:
            self._write_raw(chunk[:left])
        return [self._finish_raw()], memoryview(data)[left:]

    def _finish_raw(self):
        msg = self.raw_msg
        self.raw_msg = None
        if self._raw_view is not None:
            self._raw_view.release()
            self._raw_view = None
        return msg

    def raw_buffer(self, limit: int) -> memoryview:
        """Where the next bytes of the raw payload being received go, at most ``limit``.

        Only while ``raw_left`` is not 0: a slice of the sink's buffer, or of a scratch
        buffer when the payload is discarded. Receive into it, then call ``raw_filled``.
        """
        n = min(self.raw_left, limit)
        target = self._raw_view
        if target is None:
            scratch = self._scratch
            if scratch is None:
                scratch = self._scratch = memoryview(bytearray(DISCARD_SIZE))
            return scratch[:n]
        pos = self._raw_pos
        return target[pos:pos + n]

    def raw_filled(self, n: int) -> list:
        """``n`` bytes were received into the last ``raw_buffer``.

        Returns:
            ``[msg]``, the raw frame's message, once its payload is all in; else ``[]``.
        """
        self._raw_pos += n
        self.raw_left -= n
        if self.raw_left:
            return []
        return [self._finish_raw()]

    def release(self) -> None:
        """Let go of the sink's buffer of a raw frame cut off (its connection closed).

        ``raw_msg`` still names the frame; the reader is unusable after this.
        """
        if self._raw_view is not None:
            self._raw_view.release()
            self._raw_view = None
        self._scratch = None
        self.raw_left = 0


def send_with_fds(sock: socket.socket, msg, fds) -> None:
    """Send one framed message with file descriptors attached (SCM_RIGHTS), blocking."""
    data = encode(msg)
    sent = socket.send_fds(sock, [data], list(fds))
    if sent < len(data):
        sock.sendall(data[sent:])


def recv_with_fds(sock: socket.socket, max_fds: int = 4):
    """Receive the first chunk of a stream together with any attached file descriptors.

    Returns (data, fds). The data may hold less or more than one frame; feed it to a
    FrameReader like any other chunk.
    """
    data, fds, _flags, _addr = socket.recv_fds(sock, RECV_SIZE, max_fds)
    return data, fds


# -- receiving ---------------------------------------------------------------------------------

_recv_local = threading.local()


class RecvBuffer:
    """A reused buffer to receive into. ``sock.recv(RECV_SIZE)`` makes a fresh RECV_SIZE
    bytes object per call: an allocation that large bypasses the heap and costs an mmap,
    an mremap and a munmap per message. Here only what arrived is copied out."""

    __slots__ = ("_buf", "_view")

    def __init__(self, size=RECV_SIZE):
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)

    def recv(self, sock, flags=0) -> bytes:
        """Up to RECV_SIZE bytes from ``sock`` (b"" once the peer closed), as sock.recv."""
        n = sock.recv_into(self._buf, len(self._buf), flags)
        return self._view[:n].tobytes()

    def recv_view(self, sock, flags=0) -> memoryview:
        """As ``recv``, but a view of the buffer itself, no copy: valid only until this
        buffer's next receive, so for bytes handed straight to a FrameReader (which keeps
        a copy of an incomplete tail only)."""
        n = sock.recv_into(self._buf, len(self._buf), flags)
        return self._view[:n]


def _thread_buffer():
    buffer = getattr(_recv_local, "buffer", None)
    if buffer is None:
        buffer = _recv_local.buffer = RecvBuffer()
    return buffer


def recv_view(sock, flags=0) -> memoryview:
    """``recv`` without the copy out: a view of this thread's RecvBuffer, valid until the
    thread's next receive (see RecvBuffer.recv_view)."""
    return _thread_buffer().recv_view(sock, flags)


def recv(sock, flags=0) -> bytes:
    """``sock.recv(RECV_SIZE, flags)``, into this thread's RecvBuffer. Not for signal
    handlers (they run between the receive and the copy out): they keep a RecvBuffer of
    their own."""
    return _thread_buffer().recv(sock, flags)
