"""The client side of a head: a ControlStore whose every method is a call over TCP.

::

    caller (a node's loop, a driver, the CLI)          head (core/head.py)
    ─────────────────────────────────────────          ───────────────────
    remote.kv_put(k, v)  ─ call ─ CALL(id, ...) ──────▶ store.kv_put(k, v)
        blocks: polls the socket until RESULT(id) ◀──── RESULT(id, ok, value)
    remote.call_async(m, args, cb) ─ CALL(id, ...) ───▶
        cb(ok, value) when RESULT(id) is delivered ◀──
    remote.cast(m, ...)   ─ CALL(None, ...) ──────────▶ (no answer)
    on_event(kind, data)  ◀─ delivered ──────────────── EVENT(kind, data)

    delivered = handed to its callback by on_messages(), drain(), or (when attached to a
                loop) a zero-delay timer of that loop

``RemoteControlStore`` has the methods of ``ControlStore`` (every name in
``REMOTE_METHODS``), with the same arguments and results, raising the same ``ValueError`` and
``TypeError``: code holding one cannot tell it from an embedded store, except that any call
may also raise ``ConnectionError`` when the head is gone or does not answer in time. Those
methods block. A node's event loop, which must not block for long, uses ``call_async`` and
``cast`` instead, and may still make a blocking call now and then (at start-up, say).

**Blocking calls** send the CALL, write it out, then poll the socket directly and read frames
until the RESULT with their request id arrives, or the deadline passes. This works whether or
not the connection is also watched by an EventLoop: both read through the same
``Connection`` and its frame reader. Whatever else arrives meanwhile (EVENTs, RESULTs of
async calls) is queued, never dispatched from inside the call, never lost.

**Delivery** of queued and newly read messages happens, in the order they arrived, in
``on_messages`` (the loop's callback), ``drain()``, or, when the store was ``attach``-ed to a
loop, on that loop's next turn after the blocking call that queued them. A RESULT goes to its
``call_async`` callback, an EVENT to ``on_event`` (or, when that is None, to the list that
``pending_events()`` returns). When the connection is lost, every call still waiting for an
answer is delivered ``(False, ConnectionError)`` and ``on_disconnect(reason)`` is called.

One thread at a time: like a ``Connection``, this holds no lock.
"""

import collections
import functools
import inspect
import itertools
import logging
import select
import time

from purerun.core.control_store import REMOTE_METHODS, ControlStore
from purerun.core.head import (CALL, EVENT, HEAD_METHODS, RESULT, format_address,
                               parse_address)
from purerun.core.transport import CONNECT_TIMEOUT, HandshakeError, ProtocolError, connect

__all__ = ["RemoteControlStore", "DEFAULT_CALL_TIMEOUT_S", "MAX_QUEUED_EVENTS"]

logger = logging.getLogger("purerun.remote_control")

# How long a blocking call waits for its answer. The head answers in well under a millisecond;
# 30 s rides out a loaded host or a long pause on either side, and still turns a head that
# is wedged or cut off into a ConnectionError rather than a hang.
DEFAULT_CALL_TIMEOUT_S = 30.0
# EVENTs kept for pending_events() while no on_event takes them; beyond this the oldest go,
# so that a subscriber that never looks stays bounded in memory.
MAX_QUEUED_EVENTS = 10_000

_POLL_IN = select.POLLIN | select.POLLPRI
_POLL_DONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
_LOST = object()   # an inbox entry: (_LOST, reason), delivered as on_disconnect(reason)

#: method name -> its signature on ControlStore, to check a call's arguments in the caller
_SIGNATURES = {name: inspect.signature(getattr(ControlStore, name)) for name in REMOTE_METHODS}


def _positional(method, args, kwargs):
    """``args`` and ``kwargs`` as the positional arguments a CALL carries, checked against
    the method's signature here, in the caller's process.

    Raises:
        ValueError: ``method`` is not served by the head.
        TypeError: the arguments do not fit the method.
    """
    if method in HEAD_METHODS:
        if args or kwargs:
            raise TypeError(f"{method}() takes no arguments")
        return ()
    signature = _SIGNATURES.get(method)
    if signature is None:
        raise ValueError(f"{method!r} is not a ControlStore method served by the head; "
                         f"those are: {', '.join(sorted(REMOTE_METHODS))}")
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{method}(): {exc}") from None
    if not kwargs:
        return tuple(args)
    bound.apply_defaults()   # every parameter by position: a CALL has no keywords
    return bound.args[1:]


class RemoteControlStore:
    """A ``ControlStore`` served by a head, reached over one authenticated TCP connection.

    Make one with ``RemoteControlStore.connect(address, token)``.

    Args:
        conn: A transport ``Connection`` to the head, its handshake done.
        address: The head's address, for messages.
        on_event: ``on_event(kind, data)`` for each EVENT the head pushes (see
            ``head.HEAD_EVENTS``); None to keep them for ``pending_events()``. May also be
            set as an attribute.
        on_disconnect: ``on_disconnect(reason)``, called once when the connection is lost.
        call_timeout: Default seconds a blocking call waits for its answer.

    Attributes:
        conn: The ``Connection``. To watch it in an EventLoop, ``attach(loop)``, or add it
            yourself with ``on_messages`` and ``on_close`` as its callbacks.
        address: ``"host:port"`` of the head.
        on_event, on_disconnect: As above.
    """

    def __init__(self, conn, address: str, on_event=None, on_disconnect=None,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT_S):
        self.conn = conn
        self.address = address
        self.on_event = on_event
        self.on_disconnect = on_disconnect
        self.call_timeout = call_timeout
        self._ids = itertools.count(1)
        #: request id -> callback(ok, value), for calls sent with call_async not answered yet
        self._callbacks = {}
        #: ids of blocking calls that timed out: their late RESULT is dropped
        self._abandoned = set()
        #: messages read but not delivered yet, oldest first
        self._inbox = collections.deque()
        self._events = collections.deque(maxlen=MAX_QUEUED_EVENTS)
        self._delivering = False
        self._lost_reason = None      # set once the connection is lost
        self._loop = None
        self._delivery_timer = None
        # poll, not select.select: a node's descriptors can number past select's 1024.
        self._poller = select.poll()
        self._poller.register(conn.fd, _POLL_IN)

    @classmethod
    def connect(cls, address, token: bytes, timeout: float = CONNECT_TIMEOUT, *,
                on_event=None, on_disconnect=None,
                call_timeout: float = DEFAULT_CALL_TIMEOUT_S) -> "RemoteControlStore":
        """Connect to the head at ``address`` and authenticate with the cluster token.

        Args:
            address: ``"host:port"`` or ``(host, port)``.
            token: The cluster token (``auth.load_token()``).
            timeout: Seconds for connecting and the handshake together.
            on_event, on_disconnect, call_timeout: As for the constructor.

        Returns:
            A connected ``RemoteControlStore``.

        Raises:
            ConnectionError: Nobody answers at ``address``, or not within ``timeout``; the
                head refused the token (the message says so, and how to give the right one);
                what answers is not a purerun head.
            ValueError: ``address`` is not of the form ``host:port``.
        """
        host, port = parse_address(address)
        text = format_address(host, port)
        try:
            conn = connect((host, port), token, timeout)
        except HandshakeError as exc:
            if exc.refused:
                raise HandshakeError(
                    f"the head at {text} refused this process's cluster token: give this "
                    "process the head's token ($PURERUN_AUTH_TOKEN, or "
                    "$PURERUN_AUTH_TOKEN_PATH naming the file the head printed)",
                    refused=True) from None
            raise ConnectionError(f"the head at {text} is unreachable: {exc}") from None
        except ConnectionError as exc:
            raise ConnectionError(f"the head at {text} is unreachable: {exc}") from None
        return cls(conn, text, on_event=on_event, on_disconnect=on_disconnect,
                   call_timeout=call_timeout)

    def __repr__(self):
        state = f"lost: {self._lost_reason}" if self._lost_reason else "connected"
        return f"<RemoteControlStore head={self.address} {state}>"

    def __getattr__(self, name):
        if name not in REMOTE_METHODS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

        def method(*args, timeout=None, **kwargs):
            return self.call(name, *args, timeout=timeout, **kwargs)

        functools.update_wrapper(method, getattr(ControlStore, name))
        signature = _SIGNATURES[name]
        method.__signature__ = signature.replace(parameters=[
            *list(signature.parameters.values())[1:],
            inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY, default=None)])
        self.__dict__[name] = method   # found directly from now on
        return method

    # -- calls --

    @property
    def closed(self) -> bool:
        """True once the connection is lost or closed."""
        return self._lost_reason is not None or self.conn.closed

    def call(self, method: str, *args, timeout: float = None, **kwargs):
        """Call ``method`` on the head's store and wait for its answer.

        Args:
            method: A ``ControlStore`` method name (or a head method, ``subscribe``).
            *args, **kwargs: Its arguments, as the store's method takes them.
            timeout: Seconds to wait for the answer; None for ``call_timeout``.

        Returns:
            What the store's method returned.

        Raises:
            ValueError, TypeError: What the store raised (with the head's traceback as the
                ``__cause__``); or, raised here before anything is sent, ``method`` is not
                served or the arguments do not fit it.
            ConnectionError: The connection is lost, or no answer came within ``timeout``
                (the answer, if it comes later, is dropped).
        """
        args = _positional(method, args, kwargs)
        self._check_connected()
        request_id = next(self._ids)
        self.conn.send((CALL, request_id, method, args))
        wait = self.call_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            messages = self._exchange(deadline, f"no answer to {method} within {wait:g} s",
                                      request_id)
            for i, msg in enumerate(messages):
                if type(msg) is tuple and len(msg) == 4 and msg[0] == RESULT \
                        and msg[1] == request_id:
                    self._queue(messages[i + 1:])
                    return self._outcome(msg)
                self._queue((msg,))

    def cast(self, method: str, *args, **kwargs) -> None:
        """Send a call that gets no answer (a heartbeat, say); it is queued on the connection.

        It leaves with the loop's next flush when the connection is watched by one, else
        with the next blocking call or ``flush()``. A failure on the head is only logged there.

        Raises:
            ValueError, TypeError: ``method`` is not served, or the arguments do not fit it.
            ConnectionError: The connection is lost.
        """
        args = _positional(method, args, kwargs)
        self._check_connected()
        self.conn.send((CALL, None, method, args))

    def call_async(self, method: str, args, callback) -> None:
        """Send a call; its answer goes to ``callback(ok, value)`` when it is delivered.

        ``value`` is the result when ``ok``, else the exception (``ConnectionError`` if the
        connection is lost first). The CALL is queued as for ``cast``.

        Args:
            method: A ``ControlStore`` method name (or ``subscribe``).
            args: Its positional arguments, a tuple.
            callback: Called once, on delivery (see the module docstring).

        Raises:
            ValueError, TypeError: ``method`` is not served, or ``args`` do not fit it.
            ConnectionError: The connection is lost.
        """
        args = _positional(method, tuple(args), {})
        self._check_connected()
        request_id = next(self._ids)
        self._callbacks[request_id] = callback
        self.conn.send((CALL, request_id, method, args))

    def subscribe(self, on_event=None) -> list:
        """Receive every EVENT from now on, without being a node (a node gets them anyway).

        Args:
            on_event: Set as ``on_event`` first, if given.

        Returns:
            The node table (``ControlStore.node_table()``) as of the moment the events start.
        """
        if on_event is not None:
            self.on_event = on_event
        return self.call("subscribe")

    def flush(self, timeout: float = None) -> None:
        """Write out every queued CALL (casts, async calls), waiting while the socket is full.

        Raises:
            ConnectionError: The connection is lost, or it did not all go within ``timeout``
                (default ``call_timeout``).
        """
        self._check_connected()
        wait = self.call_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while self._write():
            self._wait(deadline, select.POLLOUT, f"could not send within {wait:g} s")

    # -- delivery --

    def attach(self, loop) -> None:
        """Watch the connection in ``loop`` (an EventLoop, on this thread): it reads and
        writes it, delivers what arrives, and delivers what a blocking call queued on its
        next turn."""
        loop.add_connection(self.conn, self.on_messages, self.on_close)
        self._loop = loop

    def on_messages(self, conn, messages) -> None:
        """The EventLoop callback: deliver what was queued, then ``messages``, in order."""
        self._inbox.extend(messages)
        self._deliver()

    def on_close(self, conn, reason) -> None:
        """The EventLoop callback: the connection is gone; fail what waits, and tell."""
        self._lose(reason)
        self._deliver()

    def drain(self) -> int:
        """Deliver everything received so far: what blocking calls queued, then whatever the
        socket holds now (read without waiting).

        Returns:
            How many messages were delivered.
        """
        if self._lost_reason is None and not self.conn.closed:
            try:
                while True:
                    ready = self._poller.poll(0)
                    if not ready:
                        break
                    self._queue(self._read())
            except ConnectionError:
                pass   # queued as lost; delivered below
        return self._deliver()

    def pending_events(self) -> list:
        """The EVENTs delivered while ``on_event`` was None, as ``[(kind, data)]``, oldest
        first; they are removed. Call ``drain()`` first to include what just arrived."""
        events = list(self._events)
        self._events.clear()
        return events

    def close(self) -> None:
        """Close the connection. Calls still waiting are failed with ``ConnectionError``
        (delivered by ``drain()``, or at once when attached to a loop)."""
        if self._lost_reason is None:
            self._lose("closed by this process")
        if not self.conn.closed:
            self.conn.close("closed by this process")
        self._poller = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- inside --

    def _check_connected(self):
        if self._lost_reason is None and self.conn.closed:
            self._lose("the connection was closed")
        if self._lost_reason is not None:
            raise ConnectionError(f"the head at {self.address} is unreachable: "
                                  f"{self._lost_reason}")

    def _unreachable(self, reason):
        return ConnectionError(f"the head at {self.address} is unreachable: {reason}")

    def _write(self) -> bool:
        """Flush what the socket takes; True while output is left. Raises ConnectionError."""
        try:
            return not self.conn.flush()
        except OSError as exc:
            raise self._fail(f"sending failed: {exc}") from None

    def _read(self) -> list:
        """One read of the socket; its messages. Raises ConnectionError when lost."""
        try:
            messages = self.conn.read()
        except ProtocolError as exc:
            raise self._fail(f"it sent what is not a valid frame: {exc}") from None
        except OSError as exc:
            raise self._fail(f"reading failed: {exc}") from None
        if messages is None:
            raise self._fail("the head closed the connection")
        return messages

    def _wait(self, deadline, events, timeout_reason):
        """Poll until the socket is ready for ``events`` (or has news); ConnectionError at
        the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._unreachable(timeout_reason)
        self._poller.modify(self.conn.fd, events | _POLL_IN)
        try:
            # Rounded up: a poll that returns early only loops once more.
            return self._poller.poll(int(left * 1000) + 1)
        finally:
            self._poller.modify(self.conn.fd, _POLL_IN)

    def _exchange(self, deadline, timeout_reason, request_id):
        """Write what is queued and wait for the next messages read; [] if the poll only
        said the socket takes more output."""
        try:
            pending = self._write()
            ready = self._wait(deadline, select.POLLOUT if pending else 0, timeout_reason)
            if any(mask & (_POLL_IN | _POLL_DONE) for _fd, mask in ready):
                return self._read()
            return []
        except ConnectionError:
            if self._lost_reason is None:   # a timeout: drop its answer when it comes
                self._abandoned.add(request_id)
            raise

    def _fail(self, reason) -> ConnectionError:
        """The connection is lost: record why, close it, and give the error to raise."""
        self._lose(reason)
        if self._loop is not None:
            # Closed from the loop's own turn, so that its on_close (and the delivery of the
            # failures) does not run inside the blocking call being made now.
            conn = self.conn
            self._loop.call_later(0, lambda: conn.close(reason))
        else:
            self.conn.close(reason)
        return self._unreachable(reason)

    def _lose(self, reason):
        if self._lost_reason is not None:
            return
        self._lost_reason = reason
        error = self._unreachable(reason)
        answered = {msg[1] for msg in self._inbox if msg[0] == RESULT}
        self._inbox.extend((RESULT, request_id, False, error) for request_id in self._callbacks
                           if request_id not in answered)
        self._inbox.append((_LOST, reason))

    def _queue(self, messages):
        if not messages:
            return
        self._inbox.extend(messages)
        loop = self._loop
        if loop is not None and self._delivery_timer is None:
            self._delivery_timer = loop.call_later(0, self._timed_delivery)

    def _timed_delivery(self):
        self._delivery_timer = None
        self._deliver()

    def _deliver(self) -> int:
        # invariant: messages are delivered in the order they arrived; a callback that makes
        # a blocking call (or drains) only queues behind the ones still to deliver here.
        if self._delivering:
            return 0
        self._delivering = True
        delivered = 0
        try:
            inbox = self._inbox
            while inbox:
                self._dispatch(inbox.popleft())
                delivered += 1
        finally:
            self._delivering = False
        return delivered

    def _dispatch(self, msg):
        try:
            kind = msg[0]
            if kind == RESULT:
                _, request_id, ok, value = msg
                callback = self._callbacks.pop(request_id, None)
                if callback is not None:
                    callback(ok, value)
                elif request_id in self._abandoned:
                    self._abandoned.discard(request_id)
                else:
                    logger.warning("the head at %s answered request %r, which nobody asked",
                                   self.address, request_id)
            elif kind == EVENT:
                _, event, data = msg
                if self.on_event is not None:
                    self.on_event(event, data)
                else:
                    self._events.append((event, data))
            elif kind is _LOST:
                if self.on_disconnect is not None:
                    self.on_disconnect(msg[1])
            else:
                logger.warning("the head at %s sent a message of unknown kind %r",
                               self.address, kind)
        except Exception:   # one failing callback must not lose the other messages
            logger.exception("error delivering a message from the head at %s", self.address)

    def _outcome(self, msg):
        _, _, ok, value = msg
        if ok:
            return value
        if isinstance(value, BaseException):
            raise value
        raise RuntimeError(f"the head at {self.address} failed with {value!r}")
