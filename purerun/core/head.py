"""The head: the one ControlStore of a multi-host cluster, served over authenticated TCP.

::

    node A ── RemoteControlStore ─┐
    node B ── RemoteControlStore ─┼─TCP─▶ Head ─ EventLoop ─┬─ Listener (tcp, HMAC, capped)
    driver, CLI (subscribe) ──────┘ HMAC  (one thread)      ├─ Connection per peer
                                                            ├─ timer: store.check_nodes()
                                                            └─ ControlStore (plain calls)

    peer ──▶ head   (CALL, request_id, method, args)     request_id None: no RESULT
    head ──▶ peer   (RESULT, request_id, ok, value)      value: the result, or the exception
    head ──▶ nodes  (EVENT, kind, data)                  node_added, node_dead (HEAD_EVENTS)
             and subscribers

**A peer** (a node's ``RemoteControlStore``, or a driver or the CLI) opens a TCP connection
and proves it knows the cluster token (``transport.HmacHandshake``) before the head unpickles
a single byte from it. It then sends CALLs naming a ``ControlStore`` method and its
positional arguments, and reads RESULTs matched by request id; a CALL without a request id
is a cast, answered by nothing (a failure is only logged). Only the names in
``control_store.REMOTE_METHODS`` and ``HEAD_METHODS`` are served, and a name is checked
against them before any attribute is looked up.

**The head** runs one EventLoop on one thread. It calls the store directly and in order, so
the store's rule (one caller at a time) holds without a lock. A connection that successfully
calls ``register_node`` becomes that node's connection; when it closes, the node is declared
dead at once (``store.node_dead``) instead of after the heartbeat timeout. Every
``HEARTBEAT_INTERVAL_S`` the head calls ``store.check_nodes()`` for the nodes that went
silent. Each node that joins or dies is announced with an EVENT to every node's connection
and every subscriber (a peer that called ``subscribe``).

**Robustness.** A peer that fails the handshake (wrong token, garbage, an HTTP request) or
stays silent past the handshake timeout is logged by the transport and dropped. At most
``MAX_HANDSHAKING`` connections may be in the handshake at once; beyond that the oldest is
dropped, so a flood of idle connections cannot use up the file descriptors. An authenticated
peer whose frame does not unpickle, or is not a message tuple of a known kind, is logged and
dropped; a CALL of the wrong shape that still carries a request id gets an error RESULT. In
no case does one peer stop the head from serving the others.

Failures travel as the exception itself, pickled, with the head's traceback as text attached
as its ``__cause__`` when it is unpickled (``RemoteTraceback``), as
``concurrent.futures.ProcessPoolExecutor`` does: the caller sees both stacks.
"""

import logging
import socket
import time
import traceback

from purerun.core import auth, protocol
from purerun.core.control_store import HEARTBEAT_INTERVAL_S, REMOTE_METHODS, ControlStore
from purerun.core.protocol import Message
from purerun.core import transport
from purerun.core.transport import (HANDSHAKE_TIMEOUT, LOOPBACK, MAX_HANDSHAKING, SERVER,
                                    EventLoop, HmacHandshake)

__all__ = [
    "Head", "HEAD_MESSAGES", "HEAD_EVENTS", "HEAD_METHODS", "CALL", "RESULT", "EVENT",
    "NODE_ADDED", "NODE_DEAD", "DEFAULT_PORT", "MAX_HANDSHAKING", "RemoteTraceback",
    "format_address", "parse_address",
]

logger = logging.getLogger("purerun.head")

# Next to the 6379 of Ray's GCS, so that a Ray cluster and a purerun head can share a host.
DEFAULT_PORT = 6380

TO_HEAD = "peer -> head"
FROM_HEAD = "head -> peer"

HEAD_MESSAGES = {}  #: code -> protocol.Message; codes from 100 stay clear of protocol.MESSAGES


def _message(code, name, direction, fields):
    assert code not in HEAD_MESSAGES and code not in protocol.MESSAGES, code
    HEAD_MESSAGES[code] = Message(code, name, direction, tuple(fields.split()))
    return code


# request_id: an int chosen by the peer, or None for no RESULT; args: a tuple of positional
# arguments of the ControlStore method named
CALL = _message(100, "CALL", TO_HEAD, "request_id method args")
# value is the result, or an exception if not ok
RESULT = _message(101, "RESULT", FROM_HEAD, "request_id ok value")
# to every node's connection and every subscriber; kind: HEAD_EVENTS
EVENT = _message(102, "EVENT", FROM_HEAD, "kind data")

NODE_ADDED = "node_added"
NODE_DEAD = "node_dead"
#: EVENT kind -> what its data is
HEAD_EVENTS = {
    NODE_ADDED: "the node's record, as ControlStore.node_table() lists it",
    NODE_DEAD: "what died with it, as ControlStore.node_dead() returns",
}
#: Methods of the head itself, called with CALL like the store's: name -> what it does
HEAD_METHODS = {
    "subscribe": "() -> node_table(); from now on this connection receives every EVENT",
}


format_address = transport.format_address


def parse_address(address) -> tuple:
    """A head's address as ``(host, port)``.

    Args:
        address: ``"host:port"`` (``"[::1]:6380"`` for IPv6), or a ``(host, port)`` pair.

    Raises:
        ValueError: not of that form, or the port is not a number from 1 to 65535.
    """
    if isinstance(address, (tuple, list)) and len(address) == 2:
        host, port = address
    elif isinstance(address, str):
        host, sep, port = address.rpartition(":")
        if not sep or not host:
            raise ValueError(f"a head's address is host:port, like 127.0.0.1:{DEFAULT_PORT}; "
                             f"got {address!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    else:
        raise ValueError(f"a head's address is 'host:port' or (host, port), got {address!r}")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"the port in the head's address {address!r} is not a number") \
            from None
    if not 0 < port < 65536:
        raise ValueError(f"the port in the head's address {address!r} is out of range")
    return str(host), port


# -- errors that carry the head's traceback -------------------------------------------------------

class RemoteTraceback(Exception):
    """The head's traceback of an error, as text: the ``__cause__`` of the error raised."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text

    def __str__(self):
        return self.text


def _rebuild_error(exc, text):
    exc.__cause__ = RemoteTraceback(text)
    return exc


class _ErrorWithTraceback:
    """Pickles as ``exc`` with the head's traceback text as its ``__cause__``."""

    __slots__ = ("exc", "text")

    def __init__(self, exc, where):
        self.exc = exc
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self.text = f'\n"""\nTraceback on the head at {where}:\n{"".join(lines)}"""'

    def __reduce__(self):
        return _rebuild_error, (self.exc, self.text)


# -- the head -------------------------------------------------------------------------------------

class _Peer:
    """What the head knows of one authenticated connection (its ``conn.peer``)."""

    __slots__ = ("node_ids", "subscribed")

    def __init__(self):
        self.node_ids = set()    # the nodes it registered, not yet declared dead
        self.subscribed = False  # it called subscribe


def _is_request_id(value) -> bool:
    return type(value) is int


class Head:
    """Serves one ``ControlStore`` over TCP to the nodes, drivers and tools of a cluster.

    The listener is bound by the constructor, so ``address`` is known at once; ``serve()``
    then runs the event loop, on the calling thread, until ``stop()``.

    Args:
        host: The interface to listen on; loopback unless the cluster spans hosts
            (``"0.0.0.0"`` for every interface).
        port: The TCP port; 0 for any free one (read it from ``address``).
        token: The cluster token (bytes, at least ``transport.MIN_TOKEN_BYTES``); None to
            read it with ``auth.load_token()``.
        clock: Monotonic seconds for the loop's timers and handshake deadlines, and for the
            store's heartbeats when the head makes the store.
        store: The ``ControlStore`` to serve; None for a new one on ``clock``.
        handshake_timeout: Seconds a new connection gets to authenticate.
        max_handshaking: Connections allowed in the handshake at once (see
            ``MAX_HANDSHAKING``).
        check_interval: Seconds between two ``store.check_nodes()``.

    Raises:
        ValueError: No token given and none found; a token too short.
        TypeError: A token that is not bytes.
        OSError: The port is in use or the host cannot be bound.

    Attributes:
        address: ``"host:port"`` where peers connect, with the real port when ``port`` was 0.
        store: The store served.

    Threads: ``serve()`` runs on one thread, and only that thread may touch the store while
    it runs. ``stop()`` may be called from any thread or a signal handler. ``close()`` after
    ``serve()`` returned (or if it never ran).
    """

    def __init__(self, host: str = LOOPBACK, port: int = DEFAULT_PORT, token: bytes = None,
                 clock=time.monotonic, store: ControlStore = None, *,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 max_handshaking: int = MAX_HANDSHAKING,
                 check_interval: float = HEARTBEAT_INTERVAL_S):
        if token is None:
            token = auth.load_token()
            if token is None:
                raise ValueError(
                    "a head needs the cluster token: set $PURERUN_AUTH_TOKEN, or make one "
                    "with purerun.core.auth.ensure_token() (python -m purerun.head does)")
        if max_handshaking < 1:
            raise ValueError(f"max_handshaking must be at least 1, got {max_handshaking}")
        handshake = HmacHandshake(token, SERVER, timeout=handshake_timeout)
        self.store = store if store is not None else ControlStore(clock=clock)
        self._check_interval = check_interval
        self._loop = EventLoop(clock=clock)
        self._listener = transport.GuardedListener.tcp(port, host, handshake=handshake)
        self._listener.limit = max_handshaking
        self.address = format_address(*self._listener.address)
        #: every authenticated connection open, in the order they authenticated
        self._conns = {}
        #: node id -> the connection that registered it, for the nodes announced with
        #: node_added and not yet with node_dead;
        #: invariant: node_id in self._live[node_id].peer.node_ids
        self._live = {}
        self._closing = False
        self._closed = False
        # stop() from another thread or a signal handler writes a byte here, waking the loop.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._loop.add_listener(self._listener, self._on_accept)
        self._loop.add_reader(self._wake_r.fileno(), self._woken)
        self._check_timer = self._loop.call_later(check_interval, self._check_nodes)

    def __repr__(self):
        return f"<Head {self.address} {len(self._conns)} peers, {len(self._live)} nodes>"

    # -- running --

    def serve(self) -> None:
        """Run the event loop on this thread until ``stop()`` is called.

        Raises:
            RuntimeError: The head is closed.
        """
        if self._closed:
            raise RuntimeError(f"the head at {self.address} is closed")
        logger.info("the head serves at %s", self.address)
        self._loop.run()

    def stop(self) -> None:
        """Make ``serve()`` return soon; safe from any thread and from a signal handler."""
        self._stopping = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass   # the pipe is full (a wake-up is pending anyway) or the head is closed

    def close(self) -> None:
        """Close every connection and the listener (the port is free again); idempotent.

        Nodes still connected are not declared dead: the store goes with the head.
        """
        if self._closed:
            return
        self._closed = self._closing = True
        self._check_timer.cancel()
        self._loop.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def handshaking(self) -> int:
        """How many connections are in the handshake now (read it on the head's thread, or
        once ``serve()`` returned)."""
        return self._listener.handshaking

    @property
    def peers(self) -> int:
        """How many authenticated connections are open."""
        return len(self._conns)

    def _woken(self, fd):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        if self._stopping:
            self._loop.stop()

    # -- connections --

    def _on_accept(self, conn):
        self._listener.authenticated(conn)
        conn.peer = _Peer()
        self._loop.add_connection(conn, self._on_messages, self._on_close)
        self._conns[conn] = None
        logger.info("%s authenticated", conn.address)

    def _on_close(self, conn, reason):
        self._conns.pop(conn, None)
        if self._closing:
            return
        logger.info("the connection with %s closed: %s", conn.address, reason)
        for node_id in sorted(conn.peer.node_ids):
            self._node_gone(node_id, f"its connection closed ({reason})")

    def _on_messages(self, conn, messages):
        for msg in messages:
            if conn.closed:
                return
            try:
                self._handle(conn, msg)
            except Exception:   # a bug here must not lose the rest of the batch
                logger.exception("error handling %r from %s", _short(msg), conn.address)

    def _drop(self, conn, why):
        logger.warning("closing the connection with %s: it %s", conn.address, why)
        conn.close(f"it {why}")

    def _handle(self, conn, msg):
        if type(msg) is not tuple or not msg:
            self._drop(conn, f"sent {_short(msg)}, which is not a message tuple")
            return
        kind = msg[0]
        if kind != CALL:
            self._drop(conn, f"sent a message of unknown kind {_short(kind)}")
            return
        request_id = msg[1] if len(msg) > 1 else None
        if request_id is not None and not _is_request_id(request_id):
            self._drop(conn, f"sent a CALL whose request id {_short(request_id)} is not an int")
            return
        if len(msg) != 4:
            error = ValueError(f"a CALL has 4 fields (CALL, request_id, method, args), "
                               f"this one has {len(msg)}")
            if request_id is None:
                logger.warning("ignoring a cast from %s: %s", conn.address, error)
            else:
                self._reply(conn, request_id, "?", False, error)
            return
        _, request_id, method, args = msg
        ok, value = self._call(conn, method, args)
        if request_id is not None:
            self._reply(conn, request_id, method, ok, value)
        elif not ok:
            logger.warning("a cast of %s from %s failed: %r", _short(method), conn.address,
                           value)
        if ok:
            self._after(conn, method, args, value)

    def _call(self, conn, method, args):
        try:
            if type(method) is not str:
                raise TypeError(f"a CALL names its method with a str, not {_short(method)}")
            if type(args) not in (tuple, list):
                raise TypeError(f"a CALL's args are a tuple, not {type(args).__name__}")
            if method in HEAD_METHODS:
                if args:
                    raise TypeError(f"{method}() takes no arguments, got {len(args)}")
                return True, self._subscribe(conn)
            # Checked before any attribute is looked up: nothing but these is reachable.
            if method not in REMOTE_METHODS:
                raise ValueError(f"the head serves no method {method!r}: only ControlStore's "
                                 f"public methods and {', '.join(HEAD_METHODS)}")
            return True, getattr(self.store, method)(*args)
        except (ValueError, TypeError) as exc:
            return False, exc
        except Exception as exc:
            logger.exception("%s from %s failed", _short(method), conn.address)
            return False, exc

    def _reply(self, conn, request_id, method, ok, value):
        if not ok:
            value = _ErrorWithTraceback(value, self.address)
        try:
            frame = protocol.encode((RESULT, request_id, ok, value))
        except Exception as exc:   # the result (or the error) does not pickle
            error = TypeError(f"the {'result' if ok else 'error'} of {method} could not be "
                              f"pickled on the head: {exc!r}")
            frame = protocol.encode((RESULT, request_id, False,
                                     _ErrorWithTraceback(error, self.address)))
        conn.send_encoded(frame)

    # -- what the head does besides calling the store --

    def _subscribe(self, conn):
        conn.peer.subscribed = True
        return self.store.node_table()

    def _after(self, conn, method, args, value):
        if method == "register_node":
            self._node_registered(conn, args[0])
        elif method == "check_nodes":
            for node_id in value:
                self._node_gone(node_id, "a peer's check_nodes found it silent")
        elif method == "node_dead" and value is not None and args[0] in self._live:
            self._node_gone(args[0], f"{conn.address} declared it dead")

    def _node_registered(self, conn, node_id):
        owner = self._live.get(node_id)
        if owner is conn:
            return   # a refresh of its entry
        self._live[node_id] = conn
        conn.peer.node_ids.add(node_id)
        if owner is not None:   # the node now talks to the head over a new connection
            owner.peer.node_ids.discard(node_id)
            return
        record = next(row for row in self.store.node_table() if row["node_id"] == node_id)
        logger.info("node %s (number %d, at %s) joined from %s", node_id.hex(),
                    record["number"], record["address"], conn.address)
        self._broadcast(NODE_ADDED, record)

    def _node_gone(self, node_id, why):
        """Declare ``node_id`` dead in the store (if it is not yet) and announce it."""
        fallout = self.store.node_dead(node_id)
        owner = self._live.pop(node_id, None)
        if owner is not None:
            owner.peer.node_ids.discard(node_id)
        if fallout is None:
            return
        logger.warning("node %s is dead: %s", node_id.hex(), why)
        self._broadcast(NODE_DEAD, fallout)

    def _check_nodes(self):
        try:
            for node_id in self.store.check_nodes():
                self._node_gone(node_id, "no heartbeat within the timeout")
        except Exception:
            logger.exception("checking the nodes' heartbeats failed")
        finally:
            if not self._closing:
                self._check_timer = self._loop.call_later(self._check_interval,
                                                          self._check_nodes)

    def _broadcast(self, kind, data):
        frame = protocol.encode((EVENT, kind, data))   # once, for every recipient
        for conn in self._conns:
            peer = conn.peer
            if peer.node_ids or peer.subscribed:
                conn.send_encoded(frame)


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
