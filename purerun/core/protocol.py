"""Messages between clients (driver and workers) and the node process, and their framing.

::

    driver / worker Client                      node process
    ─────────────────────                      ────────────
    SUBMIT, EXPORT, PUT, ALLOC, SUBSCRIBE  ──▶  scheduler, object table, function table
    ADD_REFS, DROP_REFS, UNPIN, BLOCKED,        worker pool
    UNBLOCKED
    TASK_DONE (workers), REQUEST, CANCEL
                                          ◀──  WELCOME (first message; carries the arena fd)
                                               OBJECT (a value is ready), REPLY, LOG, WARN,
                                               EXECUTE (workers only)

A message is a tuple whose first item is its kind, one of the constants below; the comment
beside each constant is the one place its fields are written down. Tuples rather than small
classes because pickling a tuple costs 0.4 us against 2.6 us for a NamedTuple, and a tiny task
crosses a socket four times.

A frame is a 4-byte little-endian length followed by the pickled message. Large values never
travel here: they sit in the node's shared-memory arena and messages carry their location.
"""

import pickle
import socket
import struct

# -- client -> node ------------------------------------------------------------------------------
SUBMIT = 1        # (SUBMIT, TaskSpec)
EXPORT = 2        # (EXPORT, function_key, pickled_function)
PUT = 3           # (PUT, object_id, payload_kind, payload, contained_ids)
ALLOC = 4         # (ALLOC, request_id, size)        -> REPLY(offset)
SUBSCRIBE = 5     # (SUBSCRIBE, object_ids)          -> OBJECT for each, when ready
ADD_REFS = 6      # (ADD_REFS, object_ids)           this process now holds these objects
DROP_REFS = 7     # (DROP_REFS, object_ids)          ... and no longer holds these
BLOCKED = 8       # (BLOCKED,)                       the running task waits in get/wait
UNBLOCKED = 9     # (UNBLOCKED,)
TASK_DONE = 10    # (TASK_DONE, task_id, results, retry, exiting, span)
                  #   results: [(object_id, kind, payload, contained_ids)]; span: (start, end) time
REQUEST = 11      # (REQUEST, request_id, op, args)  -> REPLY; op names a Node.request_<op> method
CANCEL = 12       # (CANCEL, object_id, force, recursive)
FREE = 13         # (FREE, object_ids)               purerun.internal.free
UNPIN = 15        # (UNPIN, object_ids)              one location handed out to us is no longer read

# -- node -> client ------------------------------------------------------------------------------
WELCOME = 20      # (WELCOME, info)                  info: dict (node_id, job_id, session_dir, arena_size...)
OBJECT = 21       # (OBJECT, object_id, payload_kind, payload)
REPLY = 22        # (REPLY, request_id, ok, value)   value is the result, or an exception if not ok
LOG = 23          # (LOG, pid, stream, text)         stream: 1 stdout, 2 stderr
WARN = 24         # (WARN, text)
EXECUTE = 25      # (EXECUTE, TaskSpec, dep_payloads, pickled_function_or_None, gpu_ids)
INTERRUPT = 26    # (INTERRUPT, task_id)             workers only: cancel this running actor call

# -- payload kinds: how an object's value travels ---------------------------------------------------
INLINE = 0        # payload: (meta: bytes, buffers: tuple of bytes)
ARENA = 1         # payload: (offset, meta_len, buffer_spans)  spans: ((offset, length), ...)
ERROR = 2         # payload: pickled exception (raised by get)
STORED = 3        # payload: None. The value is in the node's store (arena or spilled to disk);
                  # ask REQUEST "locate" for an ARENA location, which the node keeps pinned
                  # for the asker until it sends UNPIN.

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
