"""core.transport: framing, partial writes, bad peers, the HMAC handshake, the loop, timers,
raw frames (payloads written from one buffer and read into another, never pickled).

Socketpairs and loopback TCP in this one process. The loop runs on the test's thread and is
turned by hand (``turn_until``: run_once until a condition holds, or fail at a deadline);
only the blocking ``connect`` runs on a thread of its own. Timeouts use an injected clock,
so no test waits for one.
"""

import array
import hashlib
import logging
import mmap
import os
import pickle
import random
import secrets
import socket
import struct
import threading
import time
import tracemalloc

import pytest

from purerun.core import protocol, transport
from purerun.core.transport import (CLIENT, SERVER, Connection, EventLoop, HmacHandshake,
                                    Listener, ProtocolError, connect)

# Every wait in this file is for something that takes milliseconds; this only bounds a bug.
DEADLINE_S = 2.0


def turn_until(loop, condition, what="the condition", deadline=DEADLINE_S):
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline} s waiting for {what}")
        loop.run_once(0.005)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Peers:
    """Callbacks that record what each connection received and why it closed."""

    def __init__(self, loop, echo=False):
        self.loop = loop
        self.echo = echo
        self.received = {}
        self.closed = {}
        self.accepted = []

    def add(self, conn):
        self.received[conn] = []
        self.loop.add_connection(conn, self.on_messages, self.on_close)
        return conn

    def on_accept(self, conn):
        self.accepted.append(conn)
        self.add(conn)

    def on_messages(self, conn, messages):
        self.received[conn].extend(messages)
        if self.echo:
            for msg in messages:
                conn.send(("echo", msg))

    def on_close(self, conn, reason):
        assert conn not in self.closed, "on_close called twice"
        self.closed[conn] = reason


def raw_pair():
    """(Connection for the loop, raw non-blocking socket for the test to play the peer)."""
    a, b = socket.socketpair()
    b.setblocking(False)
    return Connection(a, address="test peer"), b


def read_frames(sock, reader, into):
    """Everything the socket holds now, decoded into ``into``; False once the peer closed."""
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        if not data:
            return False
        into.extend(reader.feed(data))


def peer_closed(sock):
    """True once the other end closed (reading and discarding what it still sent)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def send_all(loop, sock, data):
    """Write ``data`` from a non-blocking peer socket, turning the loop while it is full."""
    view = memoryview(data)

    def sent_some():
        nonlocal view
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            pass
        return not view

    turn_until(loop, sent_some, "the peer's bytes to go out")


def echo_works(loop, peers, good_conn, good_peer):
    """The loop still serves ``good_conn``: a message sent by its peer comes back."""
    token = secrets.token_hex(4)
    good_peer.sendall(protocol.encode(("ping", token)))
    got, reader = [], protocol.FrameReader()
    turn_until(loop, lambda: read_frames(good_peer, reader, got) and got,
               "the echo on the good connection")
    return got == [("echo", ("ping", token))]


MESSAGES = [
    (protocol.UNBLOCKED,),
    (protocol.OBJECT, b"\x01" * 28, protocol.INLINE, (b"meta", (b"x" * 300,))),
    (protocol.REQUEST, 7, "locate", ([b"a", b"b"], None, {"k": 1.5})),
    (),
    ("unicode é ✓", b"", b"\x00" * 1000),
]


# -- framing -------------------------------------------------------------------------------------

def test_frames_survive_a_split_at_every_byte_boundary():
    data = protocol.encode_many(MESSAGES)
    for cut in range(len(data) + 1):
        reader = protocol.FrameReader()
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == MESSAGES, cut


def test_frames_fed_one_byte_at_a_time():
    data = protocol.encode_many(MESSAGES)
    reader = protocol.FrameReader()
    got = []
    for i in range(len(data)):
        got += reader.feed(data[i:i + 1])
    assert got == MESSAGES


def _read_frames(sock, count):
    reader = protocol.FrameReader()
    got = []
    sock.settimeout(DEADLINE_S)
    while len(got) < count:
        data = sock.recv(65536)
        assert data, "the writer closed early"
        got += reader.feed(data)
    return got


@pytest.mark.parametrize("value_size", [100, 40_000, 300_000])
def test_send_many_writes_what_sendall_of_encode_many_would(value_size):
    # Small batches are joined, large ones gathered from their parts (sendmsg); a socket
    # with a timeout and a small buffer makes the gathered writes partial, many times over.
    msgs = [(protocol.PUT, i, os.urandom(value_size)) for i in range(12)] + [("end",)]
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.settimeout(DEADLINE_S)
    calls = []
    real_sendmsg = a.sendmsg

    class Counting:
        def __getattr__(self, name):
            return getattr(a, name)

        def sendmsg(self, parts):
            sent = real_sendmsg(parts)
            calls.append(sent)
            return sent
    writer = threading.Thread(target=protocol.send_many, args=(Counting(), msgs))
    writer.start()
    try:
        assert _read_frames(b, len(msgs)) == msgs
    finally:
        writer.join(DEADLINE_S)
        a.close()
        b.close()
    assert not writer.is_alive()
    if value_size * len(msgs) >= protocol.GATHER_SIZE:
        assert len(calls) > 1, "no partial write: the test proves nothing"
    else:
        assert not calls


def test_many_frames_in_one_chunk_and_a_frame_larger_than_a_read():
    loop = EventLoop()
    peers = Peers(loop)
    conn, peer = raw_pair()
    peers.add(conn)
    big = (protocol.EXPORT, b"k", os.urandom(3 * protocol.RECV_SIZE + 17))
    many = [(protocol.ADD_REFS, [i]) for i in range(10_000)]
    send_all(loop, peer, protocol.encode_many(many + [big] + many))
    turn_until(loop, lambda: len(peers.received[conn]) == 2 * len(many) + 1, "all frames")
    assert peers.received[conn] == many + [big] + many
    loop.close()
    peer.close()


def test_round_trip_over_loopback_tcp_both_ways():
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    listener = Listener.tcp(port=0)
    assert listener.address[0] == "127.0.0.1" and listener.address[1] > 0
    loop.add_listener(listener, peers.on_accept)
    client = connect(listener.address)
    client_peers = Peers(loop)
    client_peers.add(client)
    for msg in MESSAGES:
        client.send(msg)
    turn_until(loop, lambda: len(client_peers.received[client]) == len(MESSAGES), "echoes")
    assert client_peers.received[client] == [("echo", msg) for msg in MESSAGES]
    assert peers.accepted[0].address.startswith("127.0.0.1:")
    loop.close()
    listener.close()


def test_unix_listener_and_connect(tmp_path):
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    path = str(tmp_path / "node.sock")
    listener = Listener.unix(path)
    assert listener.address == path
    loop.add_listener(listener, peers.on_accept)
    client = connect(path)
    client_peers = Peers(loop)
    client_peers.add(client)
    client.send(("hello",))
    turn_until(loop, lambda: client_peers.received[client], "the echo")
    assert client_peers.received[client] == [("echo", ("hello",))]
    loop.close()
    listener.close()
    assert not os.path.exists(path)


def test_a_unix_listeners_path_appears_only_once_it_listens(tmp_path, monkeypatch):
    path = str(tmp_path / "node.sock")
    seen = []
    real_listen = socket.socket.listen

    def listen(sock, *args):
        seen.append(os.path.exists(path))   # what a peer polling for the path would see
        return real_listen(sock, *args)
    monkeypatch.setattr(socket.socket, "listen", listen)
    listener = Listener.unix(path)
    assert seen == [False]
    assert os.listdir(tmp_path) == ["node.sock"]   # no temporary name left behind
    with pytest.raises(FileExistsError):
        Listener.unix(path)
    listener.close()
    assert os.listdir(tmp_path) == []


def test_connect_to_nobody_raises_connection_error(tmp_path):
    with pytest.raises(ConnectionError, match="cannot connect to unix:"):
        connect(str(tmp_path / "nobody.sock"), timeout=0.5)


def test_messages_queued_in_one_turn_leave_in_one_send(monkeypatch):
    loop = EventLoop()
    conn, peer = raw_pair()
    Peers(loop).add(conn)
    sends = []
    real_send = socket.socket.send

    def counting_send(sock, data, *args):
        sends.append(len(data))
        return real_send(sock, data, *args)

    monkeypatch.setattr(socket.socket, "send", counting_send)
    for i in range(500):
        conn.send((protocol.DROP_REFS, [i]))
    loop.run_once(0)
    assert len(sends) == 1
    got = []
    read_frames(peer, protocol.FrameReader(), got)
    assert got == [(protocol.DROP_REFS, [i]) for i in range(500)]
    loop.close()


def test_file_descriptors_travel_with_the_first_message():
    loop = EventLoop()
    conn, peer = raw_pair()
    Peers(loop).add(conn)
    r, w = os.pipe()
    try:
        conn.send_fds((protocol.WELCOME, {"node": 1}), [r])
        conn.send((protocol.LOG, 1, 1, "after"))
        loop.run_once(0)
        data, fds = protocol.recv_with_fds(peer)   # as a Client reads its first chunk
        assert len(fds) == 1
        os.write(w, b"through the passed descriptor")
        assert os.read(fds[0], 100) == b"through the passed descriptor"
        os.close(fds[0])
        receiver = Connection(peer)
        assert receiver.feed(data) == [(protocol.WELCOME, {"node": 1}),
                                       (protocol.LOG, 1, 1, "after")]
    finally:
        os.close(r)
        os.close(w)
        loop.close()


# -- a peer that does not read -------------------------------------------------------------------

def test_a_peer_that_does_not_read_stalls_nobody_and_drains_later():
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    slow, slow_peer = raw_pair()
    good, good_peer = raw_pair()
    peers.add(slow)
    peers.add(good)
    block = b"y" * 4096
    sent = [(protocol.LOG, i, 1, block) for i in range(2000)]   # ~8 MB: far beyond the buffers
    for msg in sent:
        slow.send(msg)
    loop.run_once(0)
    assert slow.output_pending, "the socket took 8 MB at once: the test proves nothing"

    for _ in range(3):   # while the slow peer reads nothing, the other is served at once
        assert echo_works(loop, peers, good, good_peer)
    assert slow.output_pending

    got, reader = [], protocol.FrameReader()
    turn_until(loop, lambda: read_frames(slow_peer, reader, got) and len(got) == len(sent),
               "the slow peer's backlog")
    assert got == sent
    turn_until(loop, lambda: not slow.output_pending, "the output buffer to drain")
    assert not peers.closed
    loop.close()


# -- bad frames ------------------------------------------------------------------------------------

def _frame(body):
    return struct.pack("<I", len(body)) + body


def _raw_frame(body, payload, nbytes=None):
    nbytes = len(payload) if nbytes is None else nbytes
    return struct.pack("<IQ", protocol.RAW_FLAG | len(body), nbytes) + body + payload


BAD_FRAMES = {
    "length over the limit": struct.pack("<I", protocol.MAX_FRAME_SIZE + 1),
    "largest length": b"\xff\xff\xff\xff" + b"x" * 100,
    "not a pickle": _frame(b"this is not a pickle"),
    "truncated pickle": _frame(pickle.dumps(("a", 1, 2.0))[:-3]),
    "unimportable class": _frame(b"cno_such_module_here\nThing\n(tR."),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_a_bad_frame_closes_only_that_connection(case, caplog):
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    bad, bad_peer = raw_pair()
    good, good_peer = raw_pair()
    bad.address = "the bad peer"
    peers.add(bad)
    peers.add(good)
    bad_peer.sendall(protocol.encode(("before",)) + BAD_FRAMES[case]
                     + protocol.encode(("after",)))
    with caplog.at_level(logging.WARNING, logger="purerun.transport"):
        turn_until(loop, lambda: bad in peers.closed, "the bad connection to close")
    assert isinstance(peers.closed[bad], str) and peers.closed[bad]
    assert ("after",) not in peers.received[bad]
    assert any("the bad peer" in r.getMessage() for r in caplog.records), caplog.text
    turn_until(loop, lambda: peer_closed(bad_peer), "the bad peer to see the close")
    assert echo_works(loop, peers, good, good_peer)
    assert good not in peers.closed
    loop.close()


def test_frame_reader_raises_protocol_error_a_connection_error():
    with pytest.raises(ProtocolError, match="more than"):
        protocol.FrameReader().feed(BAD_FRAMES["length over the limit"])
    with pytest.raises(ConnectionError, match="does not unpickle"):
        protocol.FrameReader().feed(BAD_FRAMES["not a pickle"])


def test_a_raising_callback_is_logged_and_the_loop_goes_on(caplog):
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    good, good_peer = raw_pair()
    peers.add(good)
    buggy, buggy_peer = raw_pair()
    calls = []

    def on_messages(conn, messages):
        calls.append(messages)
        raise RuntimeError("a bug in the owner")

    loop.add_connection(buggy, on_messages, lambda conn, reason: None)
    buggy_peer.sendall(protocol.encode(("x",)))
    with caplog.at_level(logging.ERROR, logger="purerun.transport"):
        turn_until(loop, lambda: calls, "the buggy callback")
    assert "a bug in the owner" in caplog.text
    assert echo_works(loop, peers, good, good_peer)
    loop.close()


def test_on_close_once_whoever_closes():
    loop = EventLoop()
    peers = Peers(loop)
    by_peer, by_peer_other = raw_pair()
    by_us, _keep = raw_pair()
    by_loop, _keep2 = raw_pair()
    for conn in (by_peer, by_us, by_loop):
        peers.add(conn)
    by_peer_other.close()
    turn_until(loop, lambda: by_peer in peers.closed, "the peer's close")
    by_us.close()
    by_us.close()
    loop.close()
    assert peers.closed == {by_peer: "closed by the peer", by_us: "closed by this process",
                            by_loop: "the loop closed"}
    by_us.send(("ignored once closed",))
    _keep.close()
    _keep2.close()


# -- the handshake ---------------------------------------------------------------------------------

@pytest.fixture
def token():
    return secrets.token_bytes(32)


def tcp_server(loop, token, peers, timeout=transport.HANDSHAKE_TIMEOUT):
    listener = Listener.tcp(port=0, handshake=HmacHandshake(token, SERVER, timeout))
    loop.add_listener(listener, peers.on_accept)
    return listener


def connect_in_thread(*args, **kwargs):
    """Run the blocking connect on a thread; returns a dict filled with its outcome."""
    outcome = {}

    def run():
        try:
            outcome["conn"] = connect(*args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


def finished(outcome):
    return "conn" in outcome or "error" in outcome


def test_handshake_then_messages_both_ways_blocking_client(token):
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    listener = tcp_server(loop, token, peers)
    outcome = connect_in_thread(listener.address, token=token, timeout=DEADLINE_S)
    turn_until(loop, lambda: finished(outcome), "connect() to return")
    assert "error" not in outcome, outcome.get("error")
    client = outcome["conn"]
    turn_until(loop, lambda: peers.accepted, "the server to accept")   # after its own check
    server_side = peers.accepted[0]
    assert not server_side.handshaking and not client.handshaking
    server_side.send(("from the server",))
    client_peers = Peers(loop, echo=True)
    client_peers.add(client)
    client.send(("from the client",))
    turn_until(loop, lambda: (client_peers.received[client]
                              and len(peers.received[server_side]) >= 2), "messages both ways")
    assert client_peers.received[client][0] == ("from the server",)
    assert peers.received[server_side] == [("from the client",), ("echo", ("from the server",))]
    loop.close()
    listener.close()


def test_handshake_both_sides_in_one_loop(token):
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    listener = tcp_server(loop, token, peers)
    sock = socket.create_connection(listener.address)
    client = Connection(sock, handshake=HmacHandshake(token, CLIENT))
    client_peers = Peers(loop)
    client_peers.add(client)
    client.send(("queued during the handshake",))   # held back until it succeeded
    assert client.handshaking
    turn_until(loop, lambda: client_peers.received[client], "the echo")
    assert client_peers.received[client] == [("echo", ("queued during the handshake",))]
    assert not client.handshaking and not peers.closed and not client_peers.closed
    loop.close()
    listener.close()


def test_handshake_over_a_socketpair():
    token = secrets.token_bytes(16)
    loop = EventLoop()
    a, b = socket.socketpair()
    peers = Peers(loop, echo=True)
    server = peers.add(Connection(a, HmacHandshake(token, SERVER)))
    client = peers.add(Connection(b, HmacHandshake(token, CLIENT)))
    client.send(("hi",))
    turn_until(loop, lambda: peers.received[client], "the echo")
    assert peers.received[server] == [("hi",)]
    assert peers.received[client] == [("echo", ("hi",))]
    loop.close()


def test_wrong_token_blocking_client_is_refused_and_the_server_says_why(token, caplog):
    loop = EventLoop()
    peers = Peers(loop)
    listener = tcp_server(loop, token, peers)
    with caplog.at_level(logging.WARNING, logger="purerun.transport"):
        outcome = connect_in_thread(listener.address, token=secrets.token_bytes(32),
                                    timeout=DEADLINE_S)
        turn_until(loop, lambda: finished(outcome), "connect() to fail")
    error = outcome.get("error")
    assert isinstance(error, ConnectionError), outcome
    assert "cluster token was refused" in str(error)
    assert not peers.accepted
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cluster token" in w and "127.0.0.1:" in w for w in warnings), warnings
    loop.close()
    listener.close()


def test_wrong_token_in_loop_client_is_refused_both_sides(token, caplog):
    loop = EventLoop()
    peers = Peers(loop)
    listener = tcp_server(loop, token, peers)
    client = Connection(socket.create_connection(listener.address),
                        handshake=HmacHandshake(secrets.token_bytes(32), CLIENT))
    client_peers = Peers(loop)
    client_peers.add(client)
    client.send(("must never leave",))
    with caplog.at_level(logging.WARNING, logger="purerun.transport"):
        turn_until(loop, lambda: client in client_peers.closed, "the client to give up")
    assert "refused our cluster token" in client_peers.closed[client]
    assert not peers.accepted
    assert sum("cluster token" in r.getMessage() for r in caplog.records) >= 2, caplog.text
    loop.close()
    listener.close()


def _rogue_server(listening_sock, verdict):
    """Accepts one connection and answers the handshake with ``verdict`` (no token known)."""
    def run():
        sock, _ = listening_sock.accept()
        with sock:
            sock.settimeout(DEADLINE_S)
            sock.sendall(transport._MAGIC + os.urandom(32))
            got = b""
            while len(got) < transport._HELLO_SIZE + transport._PROOF_SIZE:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                got += chunk
            sock.sendall(verdict)
            sock.recv(1)   # until the client hangs up
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("verdict, complaint", [
    (b"\x01" + os.urandom(32), "did not prove it knows the cluster token"),
    (b"\x07" + bytes(32), "invalid verdict"),
])
def test_a_server_that_cannot_prove_the_token_is_refused_by_the_client(token, verdict,
                                                                         complaint):
    with socket.create_server(("127.0.0.1", 0)) as rogue:
        thread = _rogue_server(rogue, verdict)
        with pytest.raises(ConnectionError, match=complaint):
            connect(rogue.getsockname(), token=token, timeout=DEADLINE_S)
        thread.join(DEADLINE_S)


def test_connect_to_something_else_is_a_clear_connection_error(token):
    with socket.create_server(("127.0.0.1", 0)) as http:
        def serve():
            sock, _ = http.accept()
            with sock:
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with pytest.raises(ConnectionError, match="does not speak purerun"):
            connect(http.getsockname(), token=token, timeout=DEADLINE_S)
        thread.join(DEADLINE_S)


def _rng_bytes(n, seed):
    data = random.Random(seed).randbytes(n)
    assert not data.startswith(b"p")   # the seed is chosen so it is not a magic prefix
    return data


GARBAGE = {
    "http request": b"GET / HTTP/1.1\r\n\r\n",
    "random bytes": _rng_bytes(1000, 1),
    "a frame header with a huge length": b"\xff\xff\xff\x7f" + b"\x00" * 60,
    "a pickle": _frame(pickle.dumps(("hello",))),
    "hello then a wrong proof": transport._MAGIC + os.urandom(32) + os.urandom(32),
    "hello then a frame instead of a proof":
        transport._MAGIC + os.urandom(32) + _frame(pickle.dumps(tuple(range(20)))),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_before_the_handshake_is_dropped_and_others_are_served(case, token, caplog):
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    listener = tcp_server(loop, token, peers)
    good, good_peer = raw_pair()
    peers.add(good)
    intruder = socket.create_connection(listener.address)
    intruder.setblocking(False)
    intruder.sendall(GARBAGE[case])
    with caplog.at_level(logging.WARNING, logger="purerun.transport"):
        turn_until(loop, lambda: peer_closed(intruder), "the intruder to be dropped")
    port = intruder.getsockname()[1]
    assert f"127.0.0.1:{port}" in caplog.text and "handshake" in caplog.text, caplog.text
    assert not peers.accepted
    assert echo_works(loop, peers, good, good_peer)
    intruder.close()
    loop.close()
    listener.close()


@pytest.mark.parametrize("sent", [b"", transport._MAGIC + b"\x00" * 10])
def test_a_silent_peer_is_dropped_at_the_deadline(sent, token, caplog):
    clock = FakeClock()
    loop = EventLoop(clock=clock)
    peers = Peers(loop)
    listener = tcp_server(loop, token, peers, timeout=5.0)
    quiet = socket.create_connection(listener.address)
    quiet.setblocking(False)
    quiet.sendall(sent)
    hello = bytearray()

    def got_hello():
        try:
            hello.extend(quiet.recv(100))
        except BlockingIOError:
            pass
        return len(hello) >= transport._HELLO_SIZE

    turn_until(loop, got_hello, "the server's hello")   # accepted; its deadline is running
    clock.now += 4.9
    loop.run_once(0)
    assert not peer_closed(quiet)
    with caplog.at_level(logging.WARNING, logger="purerun.transport"):
        clock.now += 0.2
        loop.run_once(0)
    assert "no handshake within 5.0 s" in caplog.text
    turn_until(loop, lambda: peer_closed(quiet), "the silent peer to be dropped")
    assert not peers.accepted
    quiet.close()
    loop.close()
    listener.close()


def test_two_hundred_idle_connections_do_not_stop_a_good_one(token):
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    listener = tcp_server(loop, token, peers)
    idle = []
    for i in range(200):
        idle.append(socket.create_connection(listener.address))
        if i % 50 == 49:   # let the loop accept before the kernel's backlog fills
            loop.run_once(0)
    pairs = [raw_pair() for _ in range(200)]
    for conn, _ in pairs:
        peers.add(conn)
    outcome = connect_in_thread(listener.address, token=token, timeout=DEADLINE_S)
    turn_until(loop, lambda: finished(outcome), "the good client's handshake")
    assert "conn" in outcome, outcome.get("error")
    client = outcome["conn"]
    client_peers = Peers(loop)
    client_peers.add(client)
    client.send(("through the crowd",))
    turn_until(loop, lambda: client_peers.received[client], "the echo")
    assert client_peers.received[client] == [("echo", ("through the crowd",))]
    assert len(peers.accepted) == 1 and not peers.closed
    for sock in idle:
        sock.close()
    for _, sock in pairs:
        sock.close()
    loop.close()
    listener.close()


def test_the_token_never_crosses_the_wire(token, monkeypatch):
    wire = []
    real_send, real_sendall = socket.socket.send, socket.socket.sendall

    def send(sock, data, *args):
        sent = real_send(sock, data, *args)
        wire.append(bytes(data[:sent]))
        return sent

    def sendall(sock, data, *args):
        wire.append(bytes(data))
        return real_sendall(sock, data, *args)

    monkeypatch.setattr(socket.socket, "send", send)
    monkeypatch.setattr(socket.socket, "sendall", sendall)
    other = secrets.token_bytes(32)
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    listener = tcp_server(loop, token, peers)
    for client_token in (token, other):   # accepted, then refused
        outcome = connect_in_thread(listener.address, token=client_token, timeout=DEADLINE_S)
        turn_until(loop, lambda: finished(outcome), "connect()")
    client = Connection(socket.create_connection(listener.address),
                        handshake=HmacHandshake(token, CLIENT))
    Peers(loop).add(client)
    client.send(("x",))
    turn_until(loop, lambda: len(peers.accepted) == 2 and peers.received[peers.accepted[1]],
               "the in-loop client's message")
    blob = b"".join(wire)
    assert len(blob) > 4 * transport._HELLO_SIZE   # the capture saw the handshakes
    for secret in (token, other):
        assert secret not in blob and secret.hex().encode() not in blob
        assert secret[:8] not in blob
    loop.close()
    listener.close()


# Set by unpickling Trap: if it is ever set, a frame was unpickled.
UNPICKLED = []


def _sprung():
    UNPICKLED.append(True)
    return "sprung"


class Trap:
    def __reduce__(self):
        return (_sprung, ())


def test_nothing_is_unpickled_before_the_handshake_succeeds(token):
    trap = _frame(pickle.dumps(("payload", Trap())))
    raw_trap = _raw_frame(pickle.dumps(("payload", Trap())), b"x" * 100)
    assert protocol.FrameReader().feed(trap) == [("payload", "sprung")] and UNPICKLED
    assert protocol.FrameReader(lambda msg, n: None).feed(raw_trap) == [("payload", "sprung")]
    UNPICKLED.clear()   # the traps work; from here on they must stay unsprung

    loop = EventLoop()
    peers = Peers(loop)
    listener = tcp_server(loop, token, peers)
    attempts = [
        trap,                                                     # instead of the hello
        transport._MAGIC + os.urandom(32) + trap,                 # instead of the proof
        transport._MAGIC + os.urandom(32) + os.urandom(32) + trap,  # after a wrong proof
        raw_trap,                                                 # a raw frame instead
        transport._MAGIC + os.urandom(32) + raw_trap,
    ]
    for data in attempts:
        sock = socket.create_connection(listener.address)
        sock.setblocking(False)
        sock.sendall(data)
        turn_until(loop, lambda: peer_closed(sock), "the attempt to be dropped")
        sock.close()
    assert not UNPICKLED and not peers.accepted
    loop.close()
    listener.close()


def test_a_handshake_needs_a_real_token_and_role():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        HmacHandshake(b"short", SERVER)
    with pytest.raises(TypeError, match="bytes"):
        HmacHandshake("a string token of enough length", SERVER)
    with pytest.raises(ValueError, match="role"):
        HmacHandshake(secrets.token_bytes(32), "head")
    with pytest.raises(ValueError, match="SERVER"):
        Listener.tcp(handshake=HmacHandshake(secrets.token_bytes(32), CLIENT))
    secret = secrets.token_bytes(32)
    assert repr(secret) not in repr(HmacHandshake(secret, SERVER))


def test_a_network_listener_without_a_handshake_is_refused():
    with pytest.raises(ValueError, match="needs a handshake"):
        Listener.tcp(port=0, host="0.0.0.0")


# -- the loop's own parts --------------------------------------------------------------------------

def test_timers_run_in_order_on_the_injected_clock_and_can_be_cancelled():
    clock = FakeClock()
    loop = EventLoop(clock=clock)
    ran = []
    loop.call_later(2.0, lambda: ran.append("b"))
    loop.call_later(1.0, lambda: ran.append("a"))
    loop.call_later(1.0, lambda: ran.append("a2"))   # same time: in the order scheduled
    dropped = loop.call_later(1.5, lambda: ran.append("never"))
    dropped.cancel()
    started = time.monotonic()
    loop.run_once(0)
    assert ran == []
    clock.now += 1.5
    loop.run_once(60)   # due timers: no waiting, whatever the timeout
    assert ran == ["a", "a2"]
    clock.now += 0.5
    loop.run_once(None)
    assert ran == ["a", "a2", "b"]
    assert time.monotonic() - started < 1.0


def test_a_timer_that_schedules_another_for_now_does_not_spin():
    clock = FakeClock()
    loop = EventLoop(clock=clock)
    ran = []

    def again():
        ran.append(clock.now)
        loop.call_later(0, again)

    loop.call_later(0, again)
    loop.run_once(0)
    loop.run_once(0)
    assert len(ran) == 2


def test_run_until_stop_and_raw_readers():
    loop = EventLoop()
    r, w = os.pipe()
    got = []

    def on_readable(fd):
        got.append(os.read(fd, 100))
        loop.stop()

    loop.add_reader(r, on_readable)
    os.write(w, b"worker output\n")
    loop.run()
    assert got == [b"worker output\n"]
    loop.remove(r)
    os.write(w, b"not watched")
    loop.run_once(0)
    assert len(got) == 1
    os.close(r)
    os.close(w)
    loop.close()


def test_removed_connection_is_neither_closed_nor_served():
    loop = EventLoop()
    peers = Peers(loop)
    conn, peer = raw_pair()
    peers.add(conn)
    loop.remove(conn)
    peer.sendall(protocol.encode(("x",)))
    loop.run_once(0)
    assert not conn.closed and not peers.received[conn] and not peers.closed
    assert conn.read() == [("x",)]
    conn.close()
    peer.close()
    loop.close()


# -- raw frames ------------------------------------------------------------------------------------

def pattern(n, seed=0):
    """n bytes that show a misplaced or missing chunk (no repeat at any short period)."""
    return random.Random(seed).randbytes(n)


class Sink:
    """A raw sink writing every payload into one buffer, at the offset its message names:
    ("chunk", offset, ...) -> buffer[offset:offset + nbytes]; anything else is discarded."""

    def __init__(self, size):
        self.buffer = bytearray(size)
        self.asked = []

    def __call__(self, msg, nbytes):
        self.asked.append((msg, nbytes))
        if msg[0] != "chunk":
            return None
        return memoryview(self.buffer)[msg[1]:msg[1] + nbytes]


class SendLog:
    """Counts the bytes the kernel took from one socket, to check when on_sent ran."""

    def __init__(self, monkeypatch, sock):
        self.sent = 0
        self.calls = 0
        log = self
        real_send, real_sendmsg = socket.socket.send, socket.socket.sendmsg

        def send(s, data, *args):
            n = real_send(s, data, *args)
            if s is sock:
                log.sent += n
                log.calls += 1
            return n

        def sendmsg(s, buffers, *args):
            n = real_sendmsg(s, buffers, *args)
            if s is sock:
                log.sent += n
                log.calls += 1
            return n

        monkeypatch.setattr(socket.socket, "send", send)
        monkeypatch.setattr(socket.socket, "sendmsg", sendmsg)


def small_buffer_pair():
    """A socketpair whose buffers hold only a few KiB: every write and read is partial."""
    a, b = socket.socketpair()
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return Connection(a, address="sender"), Connection(b, address="receiver")


def test_raw_frames_between_frames_through_partial_writes_and_reads(monkeypatch):
    loop = EventLoop()
    peers = Peers(loop)
    sender, receiver = small_buffer_pair()
    peers.add(sender)
    peers.add(receiver)
    sink = Sink(300_000)
    receiver.raw_sink = sink
    log = SendLog(monkeypatch, sender.sock)
    payload = pattern(300_000)
    sent_at = []
    sender.send(("first",))
    sender.send(("second", b"x" * 50))
    sender.send_raw(("chunk", 0, "a"), payload[:200_000],
                    on_sent=lambda: sent_at.append(("a", log.sent)),
                    on_dropped=lambda: sent_at.append(("a dropped",)))
    sender.send(("between",))
    sender.send_raw(("chunk", 200_000, "b"), memoryview(payload)[200_000:],
                    on_sent=lambda: sent_at.append(("b", log.sent)))
    sender.send_raw(("empty",), b"", on_sent=lambda: sent_at.append(("empty", log.sent)))
    sender.send(("last",))
    turn_until(loop, lambda: len(peers.received[receiver]) == 7, "every message")
    assert peers.received[receiver] == [
        ("first",), ("second", b"x" * 50), ("chunk", 0, "a"), ("between",),
        ("chunk", 200_000, "b"), ("empty",), ("last",)]
    assert sink.buffer == payload
    assert sink.asked == [(("chunk", 0, "a"), 200_000), (("chunk", 200_000, "b"), 100_000),
                          (("empty",), 0)]
    assert log.calls > 20, "the socket took it all in a few writes: the test proves nothing"
    # each on_sent ran once, after its payload's last byte was handed to the kernel
    end_a = (len(protocol.encode(("first",))) + len(protocol.encode(("second", b"x" * 50)))
             + len(protocol.encode_raw(("chunk", 0, "a"), 200_000)) + 200_000)
    end_b = (end_a + len(protocol.encode(("between",)))
             + len(protocol.encode_raw(("chunk", 200_000, "b"), 100_000)) + 100_000)
    end_empty = end_b + len(protocol.encode_raw(("empty",), 0))
    assert [what for what, *_ in sent_at] == ["a", "b", "empty"]
    assert sent_at[0][1] >= end_a and sent_at[1][1] >= end_b and sent_at[2][1] >= end_empty
    assert sent_at[0][1] < end_b, "on_sent of the first payload ran only after the second"
    turn_until(loop, lambda: not sender.output_pending, "the sender to drain")
    assert not peers.closed
    loop.close()
    assert len(sent_at) == 3   # closing later drops nothing


def test_raw_frames_fed_in_tiny_chunks_and_split_at_every_boundary():
    msgs = [("a",), ("chunk", 0), ("b", 1), ("chunk", 40), ("c",)]
    payload = pattern(70, seed=3)
    data = (protocol.encode_many(msgs[:1]) + protocol.encode_raw(msgs[1], 40) + payload[:40]
            + protocol.encode(msgs[2]) + protocol.encode_raw(msgs[3], 30) + payload[40:]
            + protocol.encode(msgs[4]))
    for cut in range(len(data) + 1):
        sink = Sink(70)
        reader = protocol.FrameReader(sink)
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == msgs, cut
        assert sink.buffer == payload, cut
    rng = random.Random(5)
    sink = Sink(70)
    reader = protocol.FrameReader(sink)
    got, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 7)
        got += reader.feed(memoryview(data)[pos:pos + step])
        pos += step
    assert got == msgs and sink.buffer == payload


def test_a_large_payload_is_read_straight_into_the_sink(monkeypatch):
    # Past the bytes that came with its header, a payload never lands in a bytes object:
    # every read of it is a recv_into a slice of the sink's buffer, up to RAW_RECV_SIZE.
    loop = EventLoop()
    peers = Peers(loop)
    a, b = socket.socketpair()
    sender, receiver = Connection(a), Connection(b)
    peers.add(sender)
    peers.add(receiver)
    size = 3 * protocol.RECV_SIZE
    sink = Sink(size)
    receiver.raw_sink = sink
    reads = []
    real_recv_into = socket.socket.recv_into

    def recv_into(sock, buffer, *args):
        n = real_recv_into(sock, buffer, *args)
        if sock is b:
            into_sink = isinstance(buffer, memoryview) and buffer.obj is sink.buffer
            reads.append((into_sink, len(buffer), n))
        return n

    monkeypatch.setattr(socket.socket, "recv_into", recv_into)
    monkeypatch.setattr(transport, "RAW_RECV_SIZE", 100_000)
    payload = pattern(size)
    sender.send_raw(("chunk", 0), payload)
    turn_until(loop, lambda: peers.received[receiver], "the raw frame")
    assert sink.buffer == payload
    # The first read (into the connection's receive buffer) brings the header; every
    # later one goes straight into the sink.
    header_read, *payload_reads = reads
    assert not header_read[0] and payload_reads
    assert all(into_sink for into_sink, _, _ in payload_reads)
    assert max(asked for _, asked, _ in payload_reads) <= 100_000
    assert sum(n for *_, n in payload_reads) >= size - protocol.RECV_SIZE
    loop.close()


@pytest.mark.parametrize("closer", ["the sender", "the receiver", "the loop"])
def test_closing_mid_transfer_tells_each_owner_once(closer):
    loop = EventLoop()
    peers = Peers(loop)
    sender, receiver = small_buffer_pair()
    peers.add(sender)
    peers.add(receiver)
    src = mmap.mmap(-1, 3 * 200_000)
    dst = mmap.mmap(-1, 200_000)
    dst_view = memoryview(dst)
    receiver.raw_sink = lambda msg, nbytes: dst_view[:nbytes]
    told = []
    src_view = memoryview(src)
    for i in range(3):
        sender.send_raw(("chunk", i), src_view[i * 200_000:(i + 1) * 200_000],
                        on_sent=lambda i=i: told.append(("sent", i)),
                        on_dropped=lambda i=i: told.append(("dropped", i)))
    del src_view
    turn_until(loop, lambda: receiver.raw_receiving is not None and receiver._reader._raw_pos,
               "the first payload to be partly received")
    assert not peers.received[receiver]
    if closer == "the sender":
        sender.close()
        turn_until(loop, lambda: receiver in peers.closed, "the receiver to see the close")
    elif closer == "the receiver":
        receiver.close()
        turn_until(loop, lambda: sender in peers.closed, "the sender to fail writing")
    else:
        loop.close()
    assert told == [("dropped", 0), ("dropped", 1), ("dropped", 2)]
    assert not peers.received[receiver]
    assert receiver.raw_receiving == ("chunk", 0)   # what the receiver's on_close can look at
    if closer != "the loop":
        loop.close()
    assert set(peers.closed) == {sender, receiver}   # each once (Peers checks)
    assert len(told) == 3
    dst_view.release()
    src.close()    # neither side holds a view of these any more: they close
    dst.close()


@pytest.mark.parametrize("fate", ["sent", "dropped"])
def test_the_owner_may_close_its_mmap_as_soon_as_it_is_told(fate):
    loop = EventLoop()
    peers = Peers(loop)
    sender, receiver = small_buffer_pair()
    peers.add(sender)
    peers.add(receiver)
    sink = receiver.raw_sink = Sink(100_000)
    src = mmap.mmap(-1, 100_000)
    told = []

    def release():
        told.append(fate)
        src.close()   # BufferError if a view of it were left anywhere

    sender.send_raw(("chunk", 0), src, on_sent=release, on_dropped=release)
    if fate == "sent":
        turn_until(loop, lambda: told, "on_sent")
        turn_until(loop, lambda: peers.received[receiver], "the raw frame")
        sink.buffer.extend(b"!")   # BufferError while the transport still had a view of it
    else:
        turn_until(loop, lambda: receiver.raw_receiving, "the transfer to start")
        receiver.close()
        turn_until(loop, lambda: told, "on_dropped")
    assert told == [fate] and src.closed
    loop.close()


def test_send_raw_on_a_closed_connection_drops_it_at_once():
    conn, peer = raw_pair()
    conn.close()
    told = []
    conn.send_raw(("chunk", 0), b"abc", on_sent=lambda: told.append("sent"),
                  on_dropped=lambda: told.append("dropped"))
    assert told == ["dropped"]
    peer.close()


def test_a_raw_payload_nobody_wants_is_read_and_discarded():
    loop = EventLoop()
    peers = Peers(loop)
    conn, peer = raw_pair()
    peers.add(conn)
    sink = Sink(0)
    conn.raw_sink = sink
    payload = os.urandom(3 * protocol.DISCARD_SIZE + 5)
    send_all(loop, peer, protocol.encode(("before",))
             + _raw_frame(pickle.dumps(("unwanted", 7)), payload)
             + protocol.encode(("after",)))
    turn_until(loop, lambda: len(peers.received[conn]) == 3, "every message")
    assert peers.received[conn] == [("before",), ("unwanted", 7), ("after",)]
    assert sink.asked == [(("unwanted", 7), len(payload))]
    assert len(conn._reader._scratch) == protocol.DISCARD_SIZE   # small, reused
    assert not peers.closed
    loop.close()
    peer.close()


def _raising_sink(msg, nbytes):
    raise RuntimeError("a bug in the sink")


BAD_RAW_FRAMES = {
    # case: (sink, bytes, what the log says)
    "no sink": (None, _raw_frame(pickle.dumps(("chunk", 0)), b"x" * 10), "no raw sink"),
    "raw length over the limit": (
        Sink(10), _raw_frame(pickle.dumps(("chunk", 0)), b"x" * 10, protocol.MAX_RAW_SIZE + 1),
        "raw bytes, more than"),
    "largest raw length": (Sink(10), _raw_frame(b"", b"", 2 ** 64 - 1), "more than"),
    "message length over the limit": (
        Sink(10), struct.pack("<IQ", protocol.RAW_FLAG | (protocol.MAX_FRAME_SIZE + 1), 10),
        "more than"),
    "message not a pickle": (Sink(10), _raw_frame(b"not a pickle", b"x" * 10),
                             "does not unpickle"),
    "sink raises": (_raising_sink, _raw_frame(pickle.dumps(("chunk", 0)), b"x" * 10),
                    "a bug in the sink"),
    "sink gives the wrong size": (lambda msg, n: bytearray(n + 1),
                                  _raw_frame(pickle.dumps(("chunk", 0)), b"x" * 10),
                                  "buffer of 11 bytes for a raw frame of 10"),
    "sink gives a read-only buffer": (lambda msg, n: bytes(n),
                                      _raw_frame(pickle.dumps(("chunk", 0)), b"x" * 10),
                                      "read-only"),
    "sink gives no buffer": (lambda msg, n: 17,
                             _raw_frame(pickle.dumps(("chunk", 0)), b"x" * 10),
                             "not a contiguous buffer"),
}


@pytest.mark.parametrize("case", sorted(BAD_RAW_FRAMES))
def test_a_bad_raw_frame_closes_only_that_connection(case, caplog):
    sink, frame, complaint = BAD_RAW_FRAMES[case]
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    bad, bad_peer = raw_pair()
    good, good_peer = raw_pair()
    bad.address = "the bad peer"
    bad.raw_sink = sink
    good.raw_sink = Sink(10)
    peers.add(bad)
    peers.add(good)
    bad_peer.sendall(protocol.encode(("before",)) + frame + protocol.encode(("after",)))
    with caplog.at_level(logging.WARNING, logger="purerun.transport"):
        turn_until(loop, lambda: bad in peers.closed, "the bad connection to close")
    assert ("after",) not in peers.received[bad]
    assert complaint in peers.closed[bad], peers.closed[bad]
    assert any("the bad peer" in r.getMessage() for r in caplog.records), caplog.text
    turn_until(loop, lambda: peer_closed(bad_peer), "the bad peer to see the close")
    assert echo_works(loop, peers, good, good_peer)
    loop.close()
    bad_peer.close()


def test_a_reader_without_a_sink_refuses_a_raw_frame_before_unpickling_it():
    UNPICKLED.clear()
    with pytest.raises(ProtocolError, match="no raw sink"):
        protocol.FrameReader().feed(_raw_frame(pickle.dumps(Trap()), b"x"))
    assert not UNPICKLED


def test_send_raw_checks_its_arguments():
    conn, peer = raw_pair()
    with pytest.raises(TypeError):
        conn.send_raw(("chunk",), memoryview(bytearray(100))[::2])   # not contiguous
    with pytest.raises(TypeError):
        conn.send_raw(("chunk",), 12)
    with pytest.raises(ValueError, match="raw frame carries"):
        protocol.encode_raw(("chunk",), protocol.MAX_RAW_SIZE + 1)
    assert not conn.output_pending
    conn.close()
    peer.close()


def test_a_typed_buffer_travels_as_its_bytes():
    loop = EventLoop()
    peers = Peers(loop)
    sender, receiver = (Connection(s) for s in socket.socketpair())
    peers.add(sender)
    peers.add(receiver)
    values = array.array("d", [1.5, -2.0, 3.25])
    sink = Sink(values.itemsize * len(values))
    receiver.raw_sink = sink
    sender.send_raw(("chunk", 0), values)
    turn_until(loop, lambda: peers.received[receiver], "the raw frame")
    assert sink.buffer == values.tobytes()
    loop.close()


def test_callbacks_that_raise_or_close_do_not_break_the_loop(caplog):
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    sender, receiver = (Connection(s) for s in socket.socketpair())
    peers.add(sender)
    peers.add(receiver)
    receiver.raw_sink = Sink(10)
    good, good_peer = raw_pair()
    peers.add(good)

    def on_sent():
        raise RuntimeError("a bug in on_sent")

    with caplog.at_level(logging.ERROR, logger="purerun.transport"):
        sender.send_raw(("chunk", 0), b"x" * 10, on_sent=on_sent)
        turn_until(loop, lambda: "a bug in on_sent" in caplog.text, "the logged error")
    sender.send_raw(("chunk", 0), b"y" * 10, on_sent=lambda: sender.close())
    turn_until(loop, lambda: sender in peers.closed, "on_sent to close its connection")
    assert peers.closed[sender] == "closed by this process"
    assert echo_works(loop, peers, good, good_peer)
    loop.close()


def _filled_mmap(size):
    mm = mmap.mmap(-1, size)
    block = pattern(1 << 20, seed=9)
    for pos in range(0, size, 1 << 20):
        n = min(1 << 20, size - pos)
        mm[pos:pos + n] = block[:n]
        mm[pos:pos + 8] = pos.to_bytes(8, "little")   # a chunk out of place shows
    return mm


BIG = 50 * (1 << 20)
CHUNK = 4 << 20


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _transfer_big(loop, sender, receiver, receiver_peers, chunked):
    """BIG bytes from one mmap into another, as one raw frame or as CHUNK-sized ones with a
    small message after each (the next queued from on_sent); returns the peak of memory
    allocated meanwhile."""
    src, dst = _filled_mmap(BIG), mmap.mmap(-1, BIG)
    src_view, dst_view = memoryview(src), memoryview(dst)
    receiver.raw_sink = lambda msg, nbytes: dst_view[msg[1]:msg[1] + nbytes]
    told = []
    size = CHUNK if chunked else BIG
    offsets = iter(range(0, BIG, size))

    def next_chunk():
        pos = next(offsets, None)
        if pos is not None:
            sender.send_raw(("chunk", pos), src_view[pos:pos + size],
                            on_sent=lambda: (told.append(pos), next_chunk()))
            sender.send(("progress", pos))

    tracemalloc.reset_peak()
    next_chunk()
    if chunked:
        next_chunk()   # one queued behind the one being written
    received = receiver_peers.received[receiver]
    turn_until(loop, lambda: len(received) == 2 * len(range(0, BIG, size)), "every chunk")
    peak = tracemalloc.get_traced_memory()[1]
    assert received == [m for pos in range(0, BIG, size) for m in (("chunk", pos),
                                                                    ("progress", pos))]
    assert told == list(range(0, BIG, size))
    assert hashlib.sha256(dst).digest() == hashlib.sha256(src).digest()
    src_view.release()
    dst_view.release()
    src.close()
    dst.close()
    return peak


def test_fifty_mb_through_a_socketpair_never_whole_in_memory(traced):
    loop = EventLoop()
    peers = Peers(loop)
    sender, receiver = (Connection(s) for s in socket.socketpair())
    peers.add(sender)
    peers.add(receiver)
    peak = _transfer_big(loop, sender, receiver, peers, chunked=False)
    # What a read takes with a raw frame's header (up to RECV_SIZE) is all that is copied.
    assert peak < 4 * protocol.RECV_SIZE + (1 << 20), peak
    loop.close()


def test_fifty_mb_over_tcp_after_the_handshake_in_chunks(traced, token):
    loop = EventLoop()
    server_peers = Peers(loop)
    listener = tcp_server(loop, token, server_peers)
    client = Connection(socket.create_connection(listener.address),
                        handshake=HmacHandshake(token, CLIENT))
    Peers(loop).add(client)
    client.send(("hello",))   # queued before the handshake: the server may not be ready
    turn_until(loop, lambda: server_peers.accepted and server_peers.received[
        server_peers.accepted[0]], "the handshake")
    server = server_peers.accepted[0]
    server_peers.received[server].clear()
    peak = _transfer_big(loop, client, server, server_peers, chunked=True)
    assert peak < 4 * protocol.RECV_SIZE + (1 << 20), peak
    assert not server_peers.closed
    loop.close()
    listener.close()


def test_a_unix_socket_deeper_than_sun_path_allows_still_listens_and_connects(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / "node.sock")
    assert len(path) > 108
    loop = EventLoop()
    peers = Peers(loop, echo=True)
    listener = Listener.unix(path)
    assert listener.address == path and os.path.exists(path)
    loop.add_listener(listener, peers.on_accept)
    client = connect(path)
    client_peers = Peers(loop)
    client_peers.add(client)
    client.send(("deep",))
    turn_until(loop, lambda: client_peers.received[client], "the echo")
    assert client_peers.received[client] == [("echo", ("deep",))]
    loop.close()
    listener.close()
    assert not os.path.exists(path)
