"""Sockets for purerun: listeners, framed connections, the handshake in front of them, one loop.

::

    node process (one thread)                                   its peers
    ┌──────────────────────────────────────────────────┐
    │ Node ─── EventLoop ─┬─ Listener (unix) ──────────┼──◀── drivers: connect(path)
    │                     ├─ Connection per peer ──────┼──▶◀─ drivers, workers (socketpairs)
    │                     ├─ add_reader(pipe fd) ──────┼──◀── worker stdout / stderr
    │                     ├─ call_later (timers)       │
    │                     └─ Listener (tcp, HMAC) ─────┼──◀── other nodes (object transfer)
    └──────────────────────────────────────────────────┘
    head:   EventLoop + Listener (tcp, HMAC) + ControlStore
    Client: connect(address, token) -> Connection, driven by its own threads (no EventLoop)

What a connection does with the bytes it receives::

    recv ──▶ handshake session            raw bytes: fixed-size fields, lengths checked,
               │                          nothing unpickled, bounded by a deadline
               ├── failed: log a line naming the peer, close this connection
               ▼ succeeded (bytes after it are carried over)
             FrameReader ──▶ pickle.loads ──▶ on_messages(conn, [msg, ...])
               │                                    ▲ a raw frame's msg, in its place,
               │ a raw frame: msg decoded           │ once its bytes are all in
               ▼                                    │
             raw_sink(msg, nbytes) ──▶ view ◀── recv_into(view[pos:pos + k]), k ≤ 8 MiB
                                 └──▶ None: read into a small scratch buffer, forgotten

and with what it is given to send::

    send(msg) ───────────▶ framed ─────────────┐
    send_raw(msg, data) ─▶ msg framed ─────────┼─▶ one queue, ─▶ flush, once a loop turn:
                       └─▶ memoryview(data) ───┘   in order      one send (sendmsg of the
                           (no copy)                             frames and views, gathered)
                                                                  └─▶ on_sent() once a view's
                                                                      last byte is out
    the connection closes first ─────────────────────────────────▶ on_dropped() instead

A raw frame (``protocol.encode_raw``) is a message followed by bytes that are never pickled:
how a large object's bytes go from one node's shared-memory arena to another's. They are
written from the sender's buffer and read into the receiver's, never gathered into a bytes
object on the way, and the messages queued before and after travel between raw frames in
order; the wire format is in ``protocol``.

This module moves bytes and frames; it knows nothing of what the messages mean.

* ``Listener`` accepts connections on a unix socket or a TCP port (``127.0.0.1`` unless told
  otherwise). Given a handshake, every connection it accepts starts by running it.
* ``Connection`` wraps one connected socket. ``send`` queues a framed message, and
  ``send_raw`` a raw frame; ``flush`` writes what the socket takes without blocking and
  keeps the rest; ``read`` does one recv and returns the messages it completed, a raw
  frame's payload going into the buffer its ``raw_sink`` hands out. ``peer`` is a free slot
  for the owner's own state.
* ``HmacHandshake`` is a mutual challenge-response over a shared cluster token. It runs
  before the first frame is read, because unpickling bytes from an unauthenticated peer is
  running its code. Unix sockets between the processes of one host need none
  (``handshake=None``: framed from the first byte); the socket file's permissions guard them.
* ``EventLoop`` is a selector loop over listeners, connections, raw readers (worker output
  pipes) and timers on an injectable clock. Each turn: select, handle what was read, run
  due timers, then write every connection with queued output, one send each. A connection
  whose output the socket did not take waits for EVENT_WRITE; writes never block, so one
  peer that stops reading cannot stall the others.
* ``connect`` opens a connection from the client side and, with a token, runs the
  handshake synchronously.

Single-threaded by design. The node forks its workers from its own process, so no thread
may ever run there: a child would inherit whatever lock that thread held, half-held
forever. Nothing here starts a thread, and an EventLoop, with the connections it watches,
is used only from the thread that runs it. (A Client, which has threads, uses a
Connection's framing and buffer under its own lock, not an EventLoop.)
"""

import collections
import contextlib
import functools
import hashlib
import heapq
import hmac
import ipaddress
import itertools
import logging
import os
import secrets
import selectors
import socket
import time

from purerun.core import protocol
from purerun.core.protocol import (MAX_FRAME_SIZE, MAX_RAW_SIZE, FrameReader,
                                   ProtocolError)

__all__ = [
    "CLIENT", "SERVER", "LOOPBACK", "MAX_FRAME_SIZE", "MAX_RAW_SIZE", "Connection",
    "EventLoop", "FrameReader", "GuardedListener", "HandshakeError", "HmacHandshake", "Listener",
    "MAX_HANDSHAKING", "ProtocolError", "format_address", "is_loopback",
    "Timer", "connect",
]

logger = logging.getLogger("purerun.transport")

# Where listeners bind unless told otherwise: reachable from this host only.
LOOPBACK = "127.0.0.1"
# Connections the kernel queues before accept: a burst of workers and drivers starting at
# once must not be refused.
LISTEN_BACKLOG = 128
# At most this many accepts per loop turn, so that a storm of new connections cannot starve
# the ones already open.
ACCEPT_BATCH = LISTEN_BACKLOG
# A peer that has not completed the handshake by then is dropped: ample for a loaded host
# across a LAN, short enough that silent connections cannot pile up.
HANDSHAKE_TIMEOUT = 10.0
# How long connect() waits for the peer to accept and, with a token, to answer the handshake.
CONNECT_TIMEOUT = 10.0
# Connections a GuardedListener keeps in the handshake at once; a new one beyond it drops the
# oldest. Far more than nodes ever join at once, and well under the 1024 file descriptors of
# a default ulimit, so that a flood of connections that never authenticate cannot exhaust them.
MAX_HANDSHAKING = 512
# A shorter token could be guessed offline from one recorded handshake (the nonces and the
# HMAC travel in the clear). 32 random bytes (secrets.token_bytes) is the intended size.
MIN_TOKEN_BYTES = 16
# While a raw payload arrives, one read receives up to this much straight into the owner's
# buffer: more than a TCP receive buffer holds at once (Linux autotunes it to 6 MiB by
# default), so one read takes everything there, yet one connection's bulk cannot hold a
# loop turn for more than a few milliseconds of copying.
RAW_RECV_SIZE = 8 << 20
# A flush offers the socket at most this much of a queue holding raw frames, in one sendmsg:
# more than a TCP send buffer takes at once (Linux autotunes it to 4 MiB by default), so
# more would only be sliced and looked at in vain...
SEND_GATHER_SIZE = 8 << 20
# ... and at most this many buffers, far under IOV_MAX (1024 on Linux and macOS).
SEND_GATHER_BUFFERS = 64

_encode = protocol.encode
_READ = selectors.EVENT_READ
_READ_WRITE = selectors.EVENT_READ | selectors.EVENT_WRITE


# -- the handshake --------------------------------------------------------------------------------

SERVER = "server"   # the side that accepted the connection
CLIENT = "client"   # the side that opened it

# Every handshake message has a fixed size; none is pickled.
#   both   ──▶ HELLO    magic (8) + nonce (32)
#   client ──▶ PROOF    HMAC-SHA256(token, server_nonce + client_nonce + b"purerun client")
#   server ──▶ VERDICT  1 byte (1 accepted, 0 refused)
#                       + HMAC-SHA256(token, client_nonce + server_nonce + b"purerun server")
#                         (32 zero bytes when refused)
# The client proves itself first, so a peer without the token learns nothing from the
# server; then the server proves itself, so the client knows it reached its own cluster.
# The labels make one side's proof useless as the other's (no reflection), and each proof
# covers both nonces, so a recorded proof never fits another connection.
_MAGIC = b"purerun\x01"          # the protocol and its version: anything else fails at byte one
_NONCE_SIZE = 32
_PROOF_SIZE = hashlib.sha256().digest_size
_HELLO_SIZE = len(_MAGIC) + _NONCE_SIZE
_VERDICT_SIZE = 1 + _PROOF_SIZE
_ACCEPTED = 1
_REFUSED = 0
_LABEL = {CLIENT: b"purerun client", SERVER: b"purerun server"}
_HELLO, _PROOF, _VERDICT, _DONE = range(4)   # the step a session is at: what it awaits
_MESSAGE_SIZE = {_HELLO: _HELLO_SIZE, _PROOF: _PROOF_SIZE, _VERDICT: _VERDICT_SIZE}


class HandshakeError(ProtocolError):
    """The handshake failed: the peer is not one of ours, or the tokens differ.

    A ``ConnectionError`` (through ``ProtocolError``). ``refused`` is True when the peer
    said it refused our token.
    """

    def __init__(self, message, refused=False):
        super().__init__(message)
        self.refused = refused


class HmacHandshake:
    """Mutual authentication with a shared cluster token, before any frame is unpickled.

    The object is a recipe, reusable for any number of connections: a ``Listener`` or a
    ``Connection`` given one calls ``begin()`` for a fresh session per connection.

    Args:
        token: The cluster's shared secret, at least ``MIN_TOKEN_BYTES`` long. It never
            crosses the wire.
        role: ``SERVER`` on the side that accepts connections, ``CLIENT`` on the side
            that opens them.
        timeout: Seconds a peer gets to complete the handshake.

    Raises:
        TypeError: ``token`` is not bytes.
        ValueError: ``token`` is too short, or ``role`` is neither ``SERVER`` nor ``CLIENT``.
    """

    __slots__ = ("token", "role", "timeout")

    def __init__(self, token: bytes, role: str, timeout: float = HANDSHAKE_TIMEOUT):
        if not isinstance(token, (bytes, bytearray)):
            raise TypeError(f"the cluster token must be bytes, not {type(token).__name__}")
        if len(token) < MIN_TOKEN_BYTES:
            raise ValueError(f"the cluster token must be at least {MIN_TOKEN_BYTES} bytes "
                             f"(got {len(token)}); make one with secrets.token_bytes(32)")
        if role not in _LABEL:
            raise ValueError(f"role must be {SERVER!r} or {CLIENT!r}, not {role!r}")
        self.token = bytes(token)
        self.role = role
        self.timeout = timeout

    def begin(self) -> "_HmacSession":
        """A new session for one connection."""
        return _HmacSession(self.token, self.role, self.timeout)

    def __repr__(self):
        return f"HmacHandshake(role={self.role!r})"   # never the token


class _HmacSession:
    """One connection's side of an ``HmacHandshake``: a state machine over raw bytes.

    The interface a Connection relies on (any handshake must offer it):

    * ``output``: a bytearray of bytes to send; the connection drains it.
    * ``feed(data)``: takes received bytes; returns True once the handshake succeeded,
      False while it needs more; raises ``HandshakeError`` when it failed (``output`` may
      then still hold a last message for the peer, sent on a best-effort basis).
    * ``wanted``: how many more bytes finish the message expected now, so that a blocking
      reader never reads past the handshake.
    * ``leftover``: bytes received after the handshake, once it succeeded.
    * ``timeout``: seconds the peer gets.
    """

    __slots__ = ("_token", "_role", "_nonce", "_peer_nonce", "_buf", "_step", "output",
                 "leftover", "timeout")

    def __init__(self, token, role, timeout):
        self._token = token
        self._role = role
        self._nonce = secrets.token_bytes(_NONCE_SIZE)
        self._peer_nonce = None
        self._buf = bytearray()
        self._step = _HELLO
        self.output = bytearray(_MAGIC + self._nonce)
        self.leftover = b""
        self.timeout = timeout

    @property
    def done(self) -> bool:
        return self._step == _DONE

    @property
    def wanted(self) -> int:
        size = _MESSAGE_SIZE.get(self._step, 0)
        return max(size - len(self._buf), 0)

    def _proof(self, prover, verifier_nonce, prover_nonce):
        # HMAC-SHA256(token, nonce of the other side || own nonce || direction label)
        return hmac.new(self._token, verifier_nonce + prover_nonce + _LABEL[prover],
                        hashlib.sha256).digest()

    def feed(self, data) -> bool:
        try:
            return self._feed(data)
        except HandshakeError:
            if self._step != _PROOF:
                self.output.clear()   # only a refusal has something left to say
            raise

    def _feed(self, data):
        buf = self._buf
        buf += data
        while True:
            step = self._step
            if step == _HELLO:
                head = bytes(buf[:len(_MAGIC)])
                if not _MAGIC.startswith(head):
                    raise HandshakeError("the peer does not speak purerun's handshake (it "
                                         f"began with {bytes(buf[:24])!r})")
                if len(buf) < _HELLO_SIZE:
                    return False
                peer_nonce = bytes(buf[len(_MAGIC):_HELLO_SIZE])
                del buf[:_HELLO_SIZE]
                if peer_nonce == self._nonce:
                    raise HandshakeError("the peer sent our own challenge back")
                self._peer_nonce = peer_nonce
                if self._role == CLIENT:
                    self.output += self._proof(CLIENT, peer_nonce, self._nonce)
                    self._step = _VERDICT
                else:
                    self._step = _PROOF
            elif step == _PROOF:   # server: check the client's proof, then give ours
                if len(buf) < _PROOF_SIZE:
                    return False
                proof = bytes(buf[:_PROOF_SIZE])
                del buf[:_PROOF_SIZE]
                expected = self._proof(CLIENT, self._nonce, self._peer_nonce)
                if not hmac.compare_digest(proof, expected):
                    self.output += bytes((_REFUSED,)) + bytes(_PROOF_SIZE)
                    raise HandshakeError("the peer does not know the cluster token (its proof "
                                         "was wrong); refused it")
                self.output += bytes((_ACCEPTED,))
                self.output += self._proof(SERVER, self._peer_nonce, self._nonce)
                return self._finish()
            elif step == _VERDICT:   # client: the server's answer to our proof
                if len(buf) < _VERDICT_SIZE:
                    return False
                verdict = buf[0]
                proof = bytes(buf[1:_VERDICT_SIZE])
                del buf[:_VERDICT_SIZE]
                if verdict == _REFUSED:
                    raise HandshakeError(
                        "the peer refused our cluster token: this process and the cluster "
                        "must be given the same token", refused=True)
                if verdict != _ACCEPTED:
                    raise HandshakeError(f"the peer sent an invalid verdict byte {verdict!r}")
                expected = self._proof(SERVER, self._nonce, self._peer_nonce)
                if not hmac.compare_digest(proof, expected):
                    raise HandshakeError("the peer did not prove it knows the cluster token: "
                                         "it is not part of this cluster, or its token differs")
                return self._finish()
            else:
                raise HandshakeError("handshake bytes after the handshake ended")

    def _finish(self):
        self._step = _DONE
        self.leftover = bytes(self._buf)
        self._buf = bytearray()
        return True


# -- connections ----------------------------------------------------------------------------------

class _RawSend:
    """A raw frame's payload on its way out: the caller's buffer, how far it went, whom to tell.

    invariant: ``view`` is released, and exactly one of the callbacks called, when it
    leaves its connection's queue, sent or dropped.
    """

    __slots__ = ("view", "pos", "on_sent", "on_dropped")

    def __init__(self, view, on_sent, on_dropped):
        self.view = view
        self.pos = 0
        self.on_sent = on_sent
        self.on_dropped = on_dropped


def _tell(fn, what, address):
    if fn is not None:
        try:
            fn()
        except Exception:
            logger.exception("error in the %s callback of a raw frame to %s", what, address)


class Connection:
    """One connected socket: framed messages out through a buffer, framed messages in.

    Args:
        sock: A connected stream socket; it is made non-blocking.
        handshake: None to exchange frames from the first byte, or a handshake recipe
            (``HmacHandshake``) to run first. While it runs, ``send`` queues frames that
            leave only once it succeeded, and nothing received is unpickled.
        address: The peer, as text for log lines; by default worked out from the socket.

    Attributes:
        peer: Free for the owner (its own per-connection state); never touched here.
        closed: True once closed, whoever closed it.
        address: The peer, as text ("127.0.0.1:5100", "unix:/path/node.sock").
        flush_first: Written before the connections without it in each loop turn.
        raw_sink: Where the payloads of raw frames received go (see ``send_raw``):
            ``fn(msg, nbytes)`` returns a writable buffer of exactly ``nbytes`` bytes (a
            memoryview of the arena, say), or None to have them read and discarded; either
            way ``msg`` is delivered once the payload is in. None (the default): a raw
            frame received is a ``ProtocolError`` and closes the connection. Called from
            ``read``, as soon as the raw frame's message is decoded; a sink that raises, or
            returns a buffer of another size, closes the connection too (it is logged).

    Inside an EventLoop, output leaves at the end of the loop turn. Outside one (a Client's
    threads) call ``flush`` yourself; a Connection has no lock of its own, so send and flush
    from one thread at a time.
    """

    __slots__ = ("sock", "fd", "address", "peer", "closed", "_out", "_queue", "_fds",
                 "_reader", "_hs", "flush_first", "_dirty", "_writing", "_loop",
                 "_on_messages", "_on_close", "_on_accept", "_hs_timer", "_raw_sink")

    def __init__(self, sock: socket.socket, handshake=None, address=None):
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small messages are the whole traffic: do not let Nagle hold them back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address if address is not None else _peer_text(sock)
        self.peer = None
        self.closed = False
        # Written before the other connections each loop turn. The node sets it on its
        # workers: a worker's next task goes out ahead of results to drivers, which are
        # waiting anyway (measured: 15 vs 9 batches of 1000 tiny tasks per second).
        self.flush_first = False
        self._out = []             # framed bytes queued, joined into one send per flush
        # Output queued up to the last raw frame, in order: framed bytes and _RawSend
        # payloads. invariant: all of it goes before _out; empty when no raw frame is queued,
        # and then flush takes the plain path over _out alone.
        self._queue = collections.deque()
        self._fds = None           # descriptors to attach to the next send (send_fds)
        self._raw_sink = None
        self._reader = FrameReader()
        self._hs = handshake.begin() if handshake is not None else None
        self._dirty = {}          # the loop's connections with output (keys), once added
        self._writing = False      # registered for EVENT_WRITE
        self._loop = None
        self._on_messages = None
        self._on_close = None
        self._on_accept = None     # accepted with a handshake: the listener's callback, pending
        self._hs_timer = None

    def __repr__(self):
        state = "closed" if self.closed else "handshaking" if self._hs is not None else "open"
        return f"<Connection {self.address} {state}>"

    def fileno(self) -> int:
        return self.fd

    @property
    def handshaking(self) -> bool:
        """True until the handshake (if any) succeeded."""
        return self._hs is not None

    @property
    def output_pending(self) -> bool:
        """True while queued output has not all been written."""
        return (bool(self._out) or bool(self._queue)
                or (self._hs is not None and bool(self._hs.output)))

    @property
    def raw_sink(self):
        """Where the payloads of raw frames received go; see the class docstring."""
        return self._raw_sink

    @raw_sink.setter
    def raw_sink(self, sink):
        self._raw_sink = sink
        # Unset, the reader refuses a raw frame before unpickling its message.
        self._reader.raw_sink = None if sink is None else self._raw_target

    @property
    def raw_receiving(self):
        """The message of the raw frame whose payload is arriving now, or None.

        Once the connection closed, the one it cut off, if any: ``on_close`` learns from it
        which buffer handed out by ``raw_sink`` will never be filled.
        """
        return self._reader.raw_msg

    # -- out --

    def send(self, msg) -> None:
        """Queue one message; it leaves with the next flush (in a loop: this turn's end).

        Args:
            msg: A picklable message (a tuple, see ``protocol``).
        """
        if not self.closed:
            self._out.append(_encode(msg))
            self._dirty[self] = None

    def send_encoded(self, frames) -> None:
        """Queue bytes already framed by ``protocol.encode`` or ``encode_many``.

        For one message sent to many peers (encode it once), or a batch encoded elsewhere.
        """
        if not self.closed:
            self._out.append(frames)
            self._dirty[self] = None

    def send_raw(self, msg, data, on_sent=None, on_dropped=None) -> None:
        """Queue one message followed by the bytes of ``data``, sent as they are (a raw frame).

        The bytes are written from ``data`` itself, never copied nor pickled: keep the buffer
        valid and unchanged until one of the callbacks is called. The receiver's
        ``raw_sink`` says where they go, and its ``on_messages`` gets ``msg`` once they are
        all in. Frames queued before and after leave in the order queued, so a message sent
        after this one waits for the whole payload: send a large value as several raw frames
        (a few MiB each, the next queued from ``on_sent``), and other messages go out between.

        Args:
            msg: A picklable message (a tuple, see ``protocol``) saying what the bytes are.
            data: A contiguous buffer (a memoryview of an mmap, bytes, a bytearray) of at
                most ``MAX_RAW_SIZE`` bytes.
            on_sent: Called with no argument once the last byte of ``data`` was handed to
                the kernel (from the ``flush`` that wrote it: in a loop, the loop's
                thread): the buffer may be released or reused from then on.
            on_dropped: Called with no argument instead if the connection closes first
                (from whatever closed it, before its ``on_close``; at once if it is closed
                already). Exactly one of the two is called, once. Pass the same function to
                both when all the owner does is release the buffer.

        Raises:
            TypeError: ``data`` is not a contiguous buffer.
            ValueError: ``data`` holds more than ``MAX_RAW_SIZE`` bytes, or ``msg`` pickles
                to more than ``MAX_FRAME_SIZE``.
        """
        view = protocol.raw_view(data)
        try:
            head = protocol.encode_raw(msg, view.nbytes)
        except BaseException:
            view.release()
            raise
        if self.closed:
            view.release()
            _tell(on_dropped, "on_dropped", self.address)
            return
        queue = self._queue
        out = self._out
        if out:
            queue.append(b"".join(out) if len(out) > 1 else out[0])
            out.clear()
        queue.append(head)
        queue.append(_RawSend(view, on_sent, on_dropped))
        self._dirty[self] = None

    def send_fds(self, msg, fds) -> None:
        """Queue one message with file descriptors attached (SCM_RIGHTS; unix sockets only).

        The descriptors travel with the next write, which starts with the oldest unsent
        byte: send this message first (as WELCOME is) when the receiver picks them up from
        the chunk that holds it. Keep them open until flushed; the kernel duplicates them.
        """
        if not self.closed:
            self._fds = (self._fds or []) + list(fds)
            self.send(msg)

    def flush(self) -> bool:
        """Write what the socket takes now, without blocking; keep the rest.

        Raw payloads are written from their callers' buffers, gathered with the frames
        around them into one ``sendmsg``; ``on_sent`` is called for each one finished.

        Returns:
            True when nothing writable is left (a handshaking connection holds its frames
            back until the handshake succeeded, and still returns True).

        Raises:
            OSError: The socket failed (the peer is gone); close the connection.
        """
        hs = self._hs
        if hs is not None:
            out = hs.output
            if out:
                try:
                    sent = self.sock.send(out)
                except (BlockingIOError, InterruptedError):
                    return False
                del out[:sent]
            return not out
        if self._queue:
            return self._flush_queue()
        out = self._out
        if not out:
            return True
        data = b"".join(out) if len(out) > 1 else out[0]
        try:
            if self._fds is None:
                sent = self.sock.send(data)
            else:
                sent = socket.send_fds(self.sock, [data], self._fds)
                self._fds = None
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            out.clear()
            return True
        # A view, not a slice: a large remainder is not copied again on every partial write.
        out[:] = [memoryview(data)[sent:]]
        return False

    def _flush_queue(self):
        queue = self._queue
        out = self._out
        if out:
            queue.append(b"".join(out) if len(out) > 1 else out[0])
            out.clear()
        # invariant: the slices of the callers' buffers live only in this list, cleared
        # before any callback runs (whatever happens), so that the owner can close what
        # they view (an mmap refuses to close while a view of it exists).
        buffers = []
        size = 0
        for item in queue:
            buffers.append(item.view[item.pos:] if type(item) is _RawSend else item)
            size += len(buffers[-1])
            if size >= SEND_GATHER_SIZE or len(buffers) == SEND_GATHER_BUFFERS:
                break
        try:
            if self._fds is None:
                sent = self.sock.sendmsg(buffers)
            else:
                sent = socket.send_fds(self.sock, buffers, self._fds)
                self._fds = None
        except (BlockingIOError, InterruptedError):
            sent = 0
        finally:
            buffers.clear()
        finished = []
        while queue:
            item = queue[0]
            if type(item) is _RawSend:
                left = item.view.nbytes - item.pos
                if sent < left:
                    item.pos += sent
                    break
                queue.popleft()
                item.view.release()
                finished.append(item.on_sent)
            else:
                left = len(item)
                if sent < left:
                    if sent:
                        queue[0] = memoryview(item)[sent:]
                    break
                queue.popleft()
            sent -= left
        for on_sent in finished:   # last: they may queue more, or close this connection
            _tell(on_sent, "on_sent", self.address)
        return not queue and not self._out

    def _drop_output(self):
        # The connection closed: every raw payload still queued learns it, in order.
        queue = self._queue
        dropped = [item for item in queue if type(item) is _RawSend]
        queue.clear()
        self._reader.release()
        for item in dropped:
            item.view.release()
            _tell(item.on_dropped, "on_dropped", self.address)

    # -- in --

    def read(self):
        """One recv, through the handshake or the framing.

        Up to ``protocol.RECV_SIZE`` bytes; while a raw payload arrives, up to
        ``RAW_RECV_SIZE`` of it straight into the buffer ``raw_sink`` gave for it.

        Returns:
            The messages this read completed (maybe none), or None when the peer closed.

        Raises:
            HandshakeError: The handshake failed.
            ProtocolError: A frame was too long or did not unpickle, or a raw frame was not
                wanted (no ``raw_sink``, or the sink failed).
            OSError: The socket failed.
        """
        if self.closed:
            return None
        reader = self._reader
        if reader.raw_left:
            try:
                n = self.sock.recv_into(reader.raw_buffer(RAW_RECV_SIZE))
            except (BlockingIOError, InterruptedError):
                return []
            if not n:
                return None
            return reader.raw_filled(n)
        try:
            data = protocol.recv_view(self.sock)   # fed at once, before the next receive
        except (BlockingIOError, InterruptedError):
            return []
        if not data:
            return None
        if self._hs is None:
            return reader.feed(data)
        return self._feed_handshake(data.tobytes())

    def feed(self, data) -> list:
        """Bytes the owner received itself (say with ``protocol.recv_with_fds``), through the
        handshake or the framing, as ``read`` would; returns the messages they completed.

        Raises:
            HandshakeError: The handshake failed.
            ProtocolError: A frame was too long or did not unpickle, or a raw frame was not
                wanted.
        """
        if self._hs is None:
            return self._reader.feed(data)
        return self._feed_handshake(data)

    def _raw_target(self, msg, nbytes):
        try:
            return self._raw_sink(msg, nbytes)
        except Exception:
            logger.exception("the raw sink of the connection with %s failed on %.200r",
                             self.address, msg)
            raise

    def _feed_handshake(self, data):
        hs = self._hs
        if not hs.feed(data):
            if hs.output:
                self._dirty[self] = None
            return []
        self._hs = None
        if hs.output:   # our last handshake message goes out before any frame
            if self._queue:
                self._queue.appendleft(bytes(hs.output))
            else:
                self._out.insert(0, bytes(hs.output))
        if self._out or self._queue:
            self._dirty[self] = None
        return self._reader.feed(hs.leftover) if hs.leftover else []

    def _flush_failed_handshake(self):
        # The peer may still learn why (the REFUSED verdict); never wait for it.
        hs = self._hs
        if hs is not None and hs.output:
            try:
                self.sock.send(hs.output)
            except OSError:
                pass

    def close(self, reason: str = "closed by this process") -> None:
        """Close the socket (unsent output is dropped; flush first to try to send it).

        Raw frames still queued get their ``on_dropped``. In an EventLoop, it stops watching
        the connection and calls its ``on_close``.
        """
        if self._loop is not None:
            self._loop._close(self, reason)
        elif not self.closed:
            self.closed = True
            self.sock.close()
            self._drop_output()


# The longest path bind() and connect() take for a unix socket: sun_path holds 108 bytes on
# Linux (104 on BSDs), with the terminating NUL.
UNIX_PATH_MAX = 100


@contextlib.contextmanager
def unix_path(path):
    """``path``, ready for a unix socket's bind or connect inside the block.

    A path too long for ``sun_path`` (a deep temp directory) is reached through a
    descriptor of its directory instead, ``/proc/self/fd/<n>/<name>``: the same file, a
    short name. Where there is no /proc the path is given as it is (and the call fails, as
    it would have).
    """
    path = os.fspath(path)
    if len(os.fsencode(path)) <= UNIX_PATH_MAX or not os.path.isdir("/proc/self/fd"):
        yield path
        return
    directory = os.open(os.path.dirname(path) or ".",
                        os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_PATH", 0))
    try:
        yield f"/proc/self/fd/{directory}/{os.path.basename(path)}"
    finally:
        os.close(directory)


def _peer_text(sock):
    if sock.family == socket.AF_UNIX:
        for name in (_safe(sock.getpeername), _safe(sock.getsockname)):
            if name:
                return f"unix:{name}"
        return f"unix socket (fd {sock.fileno()})"
    name = _safe(sock.getpeername)
    return _address_text(name[:2]) if name else f"socket (fd {sock.fileno()})"


def _safe(fn):
    try:
        return fn()
    except OSError:
        return None


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:6380``)."""
    return _address_text((host, port))


def _address_text(address):
    if isinstance(address, tuple):
        host, port = address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"unix:{os.fspath(address)}"


# -- listeners ------------------------------------------------------------------------------------

class Listener:
    """A listening socket whose accepted connections come out as ``Connection`` objects.

    Make one with ``Listener.unix(path)`` or ``Listener.tcp(port)``, or wrap a socket that
    is already bound and listening.

    Args:
        sock: A bound, listening stream socket; it is made non-blocking.
        handshake: Run on every accepted connection before its first frame
            (``HmacHandshake(token, SERVER)``), or None.

    Attributes:
        address: Where peers connect: the path of a unix socket, or ``(host, port)``.
    """

    __slots__ = ("sock", "address", "handshake", "_path")

    def __init__(self, sock: socket.socket, handshake=None):
        if handshake is not None and getattr(handshake, "role", SERVER) != SERVER:
            raise ValueError("a listener accepts connections: its handshake role is SERVER")
        sock.setblocking(False)
        self.sock = sock
        self.handshake = handshake
        name = sock.getsockname()
        self._path = None
        if sock.family == socket.AF_UNIX:
            self.address = self._path = name
        else:
            self.address = tuple(name[:2])

    @classmethod
    def unix(cls, path, handshake=None, backlog: int = LISTEN_BACKLOG) -> "Listener":
        """Listen on a unix socket at ``path`` (which must not exist yet).

        Raises:
            OSError: The path exists, is too long for a unix socket, or is not writable.
        """
        path = os.fspath(path)
        if os.path.lexists(path):
            raise FileExistsError(f"[Errno 17] File exists: {path!r}")
        # Bound and listening under a temporary name first, then renamed: whoever sees the
        # path can connect (a bound socket refuses connections until it listens).
        # (A short name, so that it fits wherever the path itself does.)
        temporary = os.path.join(os.path.dirname(path), f".{os.getpid():x}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_path(temporary) as short:
                sock.bind(short)
            try:
                sock.listen(backlog)
                os.rename(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except BaseException:
            sock.close()
            raise
        listener = cls(sock, handshake)
        listener.address = listener._path = path
        return listener

    @classmethod
    def tcp(cls, port: int = 0, host: str = LOOPBACK, handshake=None,
            backlog: int = LISTEN_BACKLOG) -> "Listener":
        """Listen on a TCP port; 0 lets the system pick one (read it from ``address``).

        Args:
            port: The port, or 0 for any free one.
            host: The interface to bind; loopback unless the cluster spans hosts.
            handshake: Required unless ``host`` is a loopback address: frames from an
                unauthenticated network peer would be unpickled, which is running its code.

        Raises:
            ValueError: A non-loopback ``host`` without a handshake.
            OSError: The address is in use or cannot be bound.
        """
        if handshake is None and not is_loopback(host):
            raise ValueError(f"listening on {host} (not a loopback address) needs a handshake: "
                             "give HmacHandshake(token, SERVER) with the cluster token")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=backlog)
        return cls(sock, handshake)

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self):
        """Accept one pending connection, without blocking.

        Returns:
            A ``Connection`` (handshaking if this listener has a handshake), or None when
            no connection is waiting.

        Raises:
            OSError: accept failed (for instance, out of file descriptors).
        """
        try:
            sock, addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        if addr:
            text = _address_text(addr)
        else:
            text = f"a client of unix:{self._path}" if self._path else None
        return Connection(sock, self.handshake, address=text)

    def close(self) -> None:
        """Stop listening; a unix socket's file is removed."""
        self.sock.close()
        if self._path:
            try:
                os.unlink(self._path)
            except OSError:
                pass
            self._path = None

    def __repr__(self):
        where = self.address if isinstance(self.address, str) else _address_text(self.address)
        return f"<Listener {where}{' (handshake)' if self.handshake else ''}>"


def is_loopback(host: str) -> bool:
    """True for an address (or "localhost") that only this host can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GuardedListener(Listener):
    """A Listener that keeps at most ``limit`` of its accepted connections in the handshake.

    Beyond that the oldest one still handshaking is closed (with a log line), so that
    strangers opening connections and never finishing the handshake cannot exhaust this
    process's file descriptors. The owner calls ``authenticated(conn)`` once a connection's
    handshake succeeded.
    """

    __slots__ = ("limit", "_handshaking")

    def __init__(self, sock, handshake=None):
        super().__init__(sock, handshake)
        self.limit = MAX_HANDSHAKING
        # invariant: every connection accepted and not yet known to be done with its
        # handshake (authenticated or closed) is a key here, oldest first
        self._handshaking = {}

    def accept(self):
        conn = super().accept()
        if conn is None:
            return None
        waiting = self._handshaking
        if len(waiting) >= self.limit:
            for old in [old for old in waiting if old.closed or not old.handshaking]:
                del waiting[old]
            while len(waiting) >= self.limit:
                oldest = next(iter(waiting))
                del waiting[oldest]
                logger.warning("%d connections are in the handshake at once; dropping the "
                               "oldest, from %s", self.limit, oldest.address)
                oldest.close(f"more than {self.limit} connections in the handshake")
        waiting[conn] = None
        return conn

    def authenticated(self, conn):
        self._handshaking.pop(conn, None)

    @property
    def handshaking(self) -> int:
        """How many accepted connections may still be in the handshake."""
        return sum(not c.closed and c.handshaking for c in self._handshaking)



# -- the client side ------------------------------------------------------------------------------

def connect(address, token: bytes = None, timeout: float = CONNECT_TIMEOUT) -> Connection:
    """Open a connection, blocking, and run the handshake if a token is given.

    Args:
        address: A unix socket path (str or path-like), or ``(host, port)`` for TCP.
        token: The cluster token; None for a unix socket on this host (no handshake).
        timeout: Seconds for connecting plus the handshake together.

    Returns:
        A ``Connection`` ready for frames, its socket non-blocking (call
        ``conn.sock.setblocking(True)`` for blocking use). No received byte is left unread
        in the handshake: the first frame is the peer's first byte after it.

    Raises:
        ConnectionError: Nobody accepts at ``address``; the peer refused the cluster token
            (the message says so); the peer did not prove it knows the token, does not
            speak purerun, closed, or did not answer within ``timeout``.
    """
    text = _address_text(address)
    deadline = time.monotonic() + timeout
    try:
        if isinstance(address, tuple):
            sock = socket.create_connection(tuple(address[:2]), timeout=timeout)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                with unix_path(address) as path:
                    sock.connect(path)
            except BaseException:
                sock.close()
                raise
    except OSError as exc:
        raise ConnectionError(f"cannot connect to {text}: {exc}") from exc
    try:
        if token is not None:
            _handshake_blocking(sock, HmacHandshake(token, CLIENT, timeout).begin(),
                                deadline, text, timeout)
        return Connection(sock, address=text)
    except BaseException:
        sock.close()
        raise


def _handshake_blocking(sock, session, deadline, text, timeout):
    try:
        while True:
            if session.output:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(session.output)
                session.output.clear()
            if session.done:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout
            sock.settimeout(left)
            data = sock.recv(session.wanted)   # never past the handshake's last byte
            if not data:
                raise HandshakeError("the peer closed the connection before the handshake "
                                     "ended (it may not speak purerun's handshake)")
            session.feed(data)
    except HandshakeError as exc:
        if exc.refused:
            raise HandshakeError(f"the cluster token was refused by {text}: this process "
                                 "and the cluster must be given the same token",
                                 refused=True) from None
        raise HandshakeError(f"handshake with {text} failed: {exc}") from None
    except socket.timeout:
        raise ConnectionError(f"{text} did not complete the handshake within {timeout} s") \
            from None
    except OSError as exc:
        raise ConnectionError(f"handshake with {text} failed: {exc}") from exc


# -- the loop -------------------------------------------------------------------------------------

def _flushed_later(conn):
    return not conn.flush_first


class Timer:
    """A callback scheduled with ``EventLoop.call_later``; ``cancel()`` it to drop it."""

    __slots__ = ("when", "fn")

    def __init__(self, when, fn):
        self.when = when
        self.fn = fn         # None once cancelled or run

    def cancel(self) -> None:
        """Drop the call if it has not run yet; harmless afterwards."""
        self.fn = None


class EventLoop:
    """A selector loop over listeners, connections, raw readers and timers; one thread only.

    Args:
        clock: Returns the current time in seconds (monotonic). Timers and handshake
            deadlines use it, so tests can move time by hand.

    Callbacks:
        on_accept(conn): a listener accepted ``conn`` (after its handshake succeeded, if
            it has one). Call ``add_connection`` on it there, or it is closed.
        on_messages(conn, messages): a read completed these messages (a list, in order).
        on_close(conn, reason): called exactly once for every added connection, whatever
            closed it (the peer, an error, a failed handshake, ``conn.close()``, ``close()``).
            Raw frames still queued on it get their ``on_dropped`` just before.
        A raw frame's ``on_sent`` (see ``Connection.send_raw``) runs in the flush at the end
        of the turn that wrote its last byte; one queued from there leaves the next turn.
        A callback that raises is logged and the loop carries on; the rest of that batch of
        messages is lost with it, so an owner that must not lose messages catches its own
        errors per message.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._selector = selectors.DefaultSelector()
        self._select = self._selector.select
        # Connections with output queued since their last flush, as keys in the order their
        # output was queued; each turn writes those marked flush_first, then the rest, in that
        # order. (A set's order followed memory addresses, and with it how soon a worker got
        # its next task: a 9 vs 15 batches/s swing between two builds of the same code.)
        self._dirty = {}
        self._timers = []          # heap of (when, sequence, Timer)
        self._sequence = itertools.count()
        self._running = False

    # -- what it watches --

    def add_listener(self, listener: Listener, on_accept) -> None:
        """Accept connections from ``listener``, handing each to ``on_accept(conn)``."""
        self._selector.register(listener.sock, _READ,
                                functools.partial(self._accept, listener, on_accept))

    def add_connection(self, conn: Connection, on_messages, on_close) -> None:
        """Watch ``conn``: its messages go to ``on_messages``, its end to ``on_close``.

        Raises:
            ValueError: ``conn`` is closed, or watched by another loop.
        """
        if conn.closed:
            raise ValueError(f"{conn!r} is closed")
        conn._on_messages = on_messages
        conn._on_close = on_close
        if conn._loop is None:
            self._watch(conn)
        elif conn._loop is not self:
            raise ValueError(f"{conn!r} is watched by another loop")

    def add_reader(self, fd: int, callback) -> None:
        """Call ``callback(fd)`` whenever ``fd`` is readable (a worker's output pipe)."""
        self._selector.register(fd, _READ, functools.partial(callback, fd))

    def remove(self, what) -> None:
        """Stop watching a listener, a connection or a reader's fd, without closing it.

        A removed connection keeps its unsent output, and its ``on_close`` is not called.
        """
        if isinstance(what, Connection):
            if what._loop is not self:
                return
            self._dirty.pop(what, None)
            what._dirty = {}
            if what._out or what._queue:
                what._dirty[what] = None
            what._loop = None
            what._writing = False
            if what._hs_timer is not None:
                what._hs_timer.cancel()
                what._hs_timer = None
            fileobj = what.sock
        else:
            fileobj = what.sock if isinstance(what, Listener) else what
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def call_later(self, delay: float, fn) -> Timer:
        """Call ``fn()`` once, ``delay`` seconds from now on the loop's clock.

        Returns:
            The ``Timer``; ``cancel()`` it to drop the call.
        """
        timer = Timer(self.clock() + delay, fn)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    # -- running --

    def run_once(self, timeout: float = None) -> None:
        """One turn: wait up to ``timeout`` (None: until something happens), handle reads,
        accepts and due timers, then write every connection with queued output."""
        if self._dirty:
            timeout = 0
        elif self._timers:
            wait = max(self._timers[0][0] - self.clock(), 0)
            timeout = wait if timeout is None else min(timeout, wait)
        for key, events in self._select(timeout):
            target = key.data
            if isinstance(target, Connection):
                if target.closed:
                    continue   # closed earlier in this turn
                if events & _READ:
                    self._read(target)
                if events & selectors.EVENT_WRITE:
                    # Written below with everything else: one send per connection per turn.
                    self._dirty[target] = None
            else:
                target()
        if self._timers and self._timers[0][0] <= self.clock():
            self._run_timers()
        if self._dirty:
            self.flush()

    def run(self) -> None:
        """Run turns until ``stop()`` is called (from a callback)."""
        self._running = True
        while self._running:
            self.run_once()

    def stop(self) -> None:
        """Make ``run()`` return after the current turn."""
        self._running = False

    def flush(self) -> None:
        """Write every connection with queued output now (run_once does this each turn)."""
        dirty = self._dirty
        # invariant: a connection is in _dirty iff it may have output this flush could write;
        # a callback run from here (on_close) may add others, flushed next turn.
        for conn in sorted(dirty, key=_flushed_later):
            del dirty[conn]
            if conn.closed:
                continue
            try:
                drained = conn.flush()
            except OSError as exc:
                self._close(conn, f"write failed: {exc}")
                continue
            if conn.closed:
                continue   # by a raw frame's on_sent
            if drained:
                if conn._writing:
                    conn._writing = False
                    self._selector.modify(conn.sock, _READ, conn)
            elif not conn._writing:
                conn._writing = True
                self._selector.modify(conn.sock, _READ_WRITE, conn)

    def close(self) -> None:
        """Close every connection watched (each gets its ``on_close``), stop watching the
        rest (listeners and readers stay open: they are their owners'), free the selector."""
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, Connection):
                self._close(key.data, "the loop closed")
        self._selector.close()
        self._timers.clear()

    # -- inside --

    def _watch(self, conn):
        conn._loop = self
        pending = conn.output_pending
        conn._dirty = self._dirty
        self._selector.register(conn.sock, _READ, conn)
        if pending:
            self._dirty[conn] = None
        hs = conn._hs
        if hs is not None:
            conn._hs_timer = self.call_later(
                hs.timeout, functools.partial(self._handshake_expired, conn))

    def _accept(self, listener, on_accept):
        for _ in range(ACCEPT_BATCH):
            try:
                conn = listener.accept()
            except OSError as exc:
                logger.warning("accepting on %r failed: %s", listener, exc)
                return
            if conn is None:
                return
            conn._on_accept = on_accept
            if conn._hs is not None:
                self._watch(conn)   # on_accept once the handshake succeeded
            else:
                self._accepted(conn)

    def _accepted(self, conn):
        on_accept = conn._on_accept
        conn._on_accept = None
        try:
            on_accept(conn)
        except Exception:
            logger.exception("error accepting a connection from %s", conn.address)
        if conn._on_messages is None and not conn.closed:
            conn.close("not taken by its listener's owner")

    def _read(self, conn):
        handshaking = conn._hs is not None
        try:
            messages = conn.read()
        except ProtocolError as exc:
            self._drop(conn, exc)
            return
        except OSError as exc:
            self._close(conn, f"read failed: {exc}")
            return
        if messages is None:
            self._close(conn, "closed by the peer")
            return
        if handshaking and conn._hs is None:
            if conn._hs_timer is not None:
                conn._hs_timer.cancel()
                conn._hs_timer = None
            if conn._on_accept is not None:
                self._accepted(conn)
            if conn.closed:
                return
        if messages:
            try:
                conn._on_messages(conn, messages)
            except Exception:
                logger.exception("error handling messages from %s", conn.address)

    def _drop(self, conn, exc):
        if isinstance(exc, HandshakeError):
            conn._flush_failed_handshake()
            logger.warning("handshake with %s failed, closing the connection: %s",
                           conn.address, exc)
        else:
            logger.warning("closing the connection with %s: %s", conn.address, exc)
        self._close(conn, str(exc))

    def _handshake_expired(self, conn):
        conn._hs_timer = None
        if not conn.closed and conn._hs is not None:
            self._drop(conn, HandshakeError(
                f"no handshake within {conn._hs.timeout} s"))

    def _close(self, conn, reason):
        if conn.closed:
            return
        conn.closed = True
        self._dirty.pop(conn, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if conn._hs_timer is not None:
            conn._hs_timer.cancel()
            conn._hs_timer = None
        conn.sock.close()
        conn._drop_output()
        on_close = conn._on_close
        conn._on_messages = conn._on_close = conn._on_accept = None
        if on_close is not None:
            try:
                on_close(conn, reason)
            except Exception:
                logger.exception("error closing the connection with %s", conn.address)

    def _run_timers(self):
        timers = self._timers
        now = self.clock()
        due = []
        # Only those due now: a timer that schedules another for "now" runs next turn.
        while timers and timers[0][0] <= now:
            due.append(heapq.heappop(timers)[2])
        for timer in due:
            fn = timer.fn
            if fn is None:
                continue
            timer.fn = None
            try:
                fn()
            except Exception:
                logger.exception("error in a timer callback")
