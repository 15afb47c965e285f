"""Messages between clients (driver and workers) and the node process, and their framing.

::

    driver / worker Client                      node process
    ─────────────────────                      ────────────
    SUBMIT, EXPORT, PUT, SUBSCRIBE,        ──▶  NodeState: scheduler, tasks, actors,
    ADD_REFS, DROP_REFS, UNPIN, BLOCKED,        object table, control store
    UNBLOCKED, REQUEST, CANCEL, FREE,
    TASK_DONE (workers)
                                          ◀──  WELCOME (first message; carries the arena fd)
                                               OBJECT (a value is ready), REPLY, LOG, WARN,
                                               EXECUTE, INTERRUPT (workers only)

A message is a tuple whose first item is its kind. Every kind is declared once, below, with
``_message(code, name, direction, fields)``: the table ``MESSAGES`` is the one place its
fields are written down, and tests check every handler against it. REQUEST operations are
declared the same way in ``REQUESTS``, and payload kinds in ``PAYLOAD_KINDS``. Tuples rather
than small classes on the wire because pickling a tuple costs 0.4 us against 2.6 us for a
NamedTuple, and a tiny task crosses a socket four times.

A frame is a 4-byte little-endian length followed by the pickled message. Large values never
travel here: they sit in the node's shared-memory arena and messages carry their location.
"""

import pickle
import socket
import struct

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
# results: [(object_id, kind, payload, contained_ids)]; span: (start, end) time
TASK_DONE = _message(10, "TASK_DONE", FROM_WORKER, "task_id results retry exiting span")
REQUEST = _message(11, "REQUEST", TO_NODE, "request_id op args")  # -> REPLY; op: REQUESTS
CANCEL = _message(12, "CANCEL", TO_NODE, "object_id force recursive")
FREE = _message(13, "FREE", TO_NODE, "object_ids")            # purerun.internal.free
UNPIN = _message(15, "UNPIN", TO_NODE, "object_ids")  # a location handed to us is not read now

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
    "alloc": (("size",), "an arena offset, reserved for the asker until it PUTs or leaves"),
    "locate": (("object_ids",), "[(payload_kind, payload)], ARENA locations pinned"),
    "shutdown": ((), "None; the node stops"),
    "cluster_resources": ((), "{resource: total}"),
    "available_resources": ((), "{resource: free now}"),
    "nodes": ((), "[node dict], as ray.nodes()"),
    "stats": ((), "{counters of workers, tasks, functions and the object store}"),
    "set_namespace": (("namespace",), "None; the asker's job's namespace"),
    "register_actor": (("name", "namespace", "job_id", "actor_id", "meta", "get_if_exists"),
                       "None, or (actor_id, meta) of the live actor holding the name"),
    "get_actor": (("name", "namespace", "job_id"), "None, or (actor_id, meta)"),
    "kill_actor": (("actor_id", "no_restart"), "None"),
    "timeline": ((), "[Chrome trace event]"),
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
# Node-internal, never sent: the value was spilled to a file; spans relative to its start.
ON_DISK = _payload(4, "ON_DISK", "(path, total_size, meta_len, spans)")
# Between nodes: the value's block is in another node's store; FETCH it from there.
# Spans are relative to the block's start, as ON_DISK's.
REMOTE = _payload(5, "REMOTE", "(node_id, total_size, meta_len, spans)")

# Where a value sits can change (spilled to disk, restored elsewhere in the arena), so an ARENA
# location is only ever handed to a process together with a pin that keeps it valid: in the
# answer to "locate", and in EXECUTE for a task's arguments. Each one handed out is returned
# by one UNPIN, sent when the last zero-copy view made from it dies.

_HEADER = struct.Struct("<I")
HEADER_SIZE = _HEADER.size
_dumps = pickle.dumps
_loads = pickle.loads
PROTOCOL = 5

# Reads ask for this much at a time: big enough to take a burst of small messages in one
# syscall, small enough not to matter per connection.
RECV_SIZE = 256 * 1024
# A frame announcing more than this is garbage or hostile, never a real message: large values
# travel through the shared-memory arena (or in chunks between nodes), so a frame holds
# metadata and small inline values. The bound stops one bad length from growing a buffer
# without end; it is generous because a pickled function may close over a big constant.
MAX_FRAME_SIZE = 1 << 30


class ProtocolError(ConnectionError):
    """A peer broke the framing or the handshake; the connection must be closed.

    Raised for a frame longer than ``MAX_FRAME_SIZE``, a frame whose body does not unpickle,
    or bytes that are not a valid handshake. A ``ConnectionError``, like ``ssl.SSLError`` is
    an ``OSError``: code that already handles a lost connection handles this one too.
    """


def encode(msg) -> bytes:
    """One framed message."""
    body = _dumps(msg, PROTOCOL)
    return _HEADER.pack(len(body)) + body


def encode_many(msgs) -> bytes:
    """Several framed messages in one buffer, for one write."""
    parts = []
    for msg in msgs:
        body = _dumps(msg, PROTOCOL)
        parts.append(_HEADER.pack(len(body)))
        parts.append(body)
    return b"".join(parts)


class FrameReader:
    """Turns a byte stream into messages; feed it whatever recv returned.

    ``feed`` raises ``ProtocolError`` for a frame longer than ``MAX_FRAME_SIZE`` (as soon as
    its header arrives) or one that does not unpickle; the reader is unusable after that, as
    is the connection it reads.
    """

    __slots__ = ("_buf",)

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data) -> list:
        buf = self._buf
        buf += data
        msgs = []
        pos = 0
        end = len(buf)
        unpack = _HEADER.unpack_from
        limit = MAX_FRAME_SIZE
        with memoryview(buf) as view:
            while end - pos >= HEADER_SIZE:
                (size,) = unpack(buf, pos)
                if size > limit:
                    raise ProtocolError(f"a frame announced {size} bytes, more than the "
                                        f"{MAX_FRAME_SIZE} a message may have")
                stop = pos + HEADER_SIZE + size
                if stop > end:
                    break
                try:
                    msgs.append(_loads(view[pos + HEADER_SIZE:stop]))
                except Exception as exc:
                    raise ProtocolError(f"a frame of {size} bytes does not unpickle: "
                                        f"{exc!r}") from exc
                pos = stop
        # The view is released above: a bytearray cannot shrink while a view of it exists.
        if pos:
            del buf[:pos]
        return msgs


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
