"""core.head, core.remote_control and ``python -m purerun.head``: the cluster's ControlStore
over authenticated TCP.

A Head runs on a thread of this process (``running``), and the tests talk to it over real
loopback sockets: as RemoteControlStore clients, and as raw sockets sending the exact bytes
of intruders and broken peers. The CLI tests run ``python -m purerun.head`` as a subprocess.
Time-outs that would take seconds use an injected clock, moved by hand; every other wait is
for a condition, with a deadline.
"""

import contextlib
import inspect
import logging
import os
import pickle
import random
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import threading

import pytest

from helpers import wait_for
from purerun.core import head as head_module
from purerun.core import protocol, transport
from purerun.core.control_store import NODE_DEATH_TIMEOUT_S, REMOTE_METHODS, ControlStore
from purerun.core.head import (CALL, EVENT, HEAD_EVENTS, HEAD_MESSAGES, HEAD_METHODS, RESULT,
                               Head, RemoteTraceback, format_address, parse_address)
from purerun.core.remote_control import RemoteControlStore
from purerun.core.transport import EventLoop

# Everything waited for here takes milliseconds; this only bounds a bug.
DEADLINE_S = 10.0
N1, N2 = b"\x01" * 16, b"\x02" * 16
JOB1 = (1).to_bytes(4, "little")


class FakeClock:
    """Monotonic time that moves only when told to (read from the head's thread too)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def token():
    return secrets.token_bytes(32)


@contextlib.contextmanager
def running(head):
    """Serve ``head`` on a thread; stop, join and close it afterwards, whatever happens."""
    thread = threading.Thread(target=head.serve, name=f"head {head.address}", daemon=True)
    thread.start()
    try:
        yield head
    finally:
        head.stop()
        thread.join(DEADLINE_S)
        head.close()
        assert not thread.is_alive(), "the head did not stop"


@pytest.fixture
def make_head(token):
    """make_head(**kwargs) -> a Head on a free port, served on a thread until the test ends."""
    with contextlib.ExitStack() as stack:
        def make(**kwargs):
            kwargs.setdefault("token", token)
            return stack.enter_context(running(Head(port=0, **kwargs)))
        yield make


@pytest.fixture
def head(make_head):
    return make_head()


@pytest.fixture
def clients(token):
    """clients(head) -> a RemoteControlStore connected to it, closed when the test ends."""
    made = []

    def connect(head, **kwargs):
        remote = RemoteControlStore.connect(head.address, kwargs.pop("token", token),
                                            timeout=DEADLINE_S, **kwargs)
        made.append(remote)
        return remote

    yield connect
    for remote in made:
        remote.close()


@pytest.fixture
def raw():
    """raw(head) -> a plain TCP socket connected to it (non-blocking), closed at the end."""
    made = []

    def open_socket(head):
        host, port = parse_address(head.address)
        sock = socket.create_connection((host, port), timeout=DEADLINE_S)
        sock.setblocking(False)
        made.append(sock)
        return sock

    yield open_socket
    for sock in made:
        sock.close()


def peer_closed(sock):
    """True once the head closed ``sock`` (reading and discarding what it still sent)."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def hello_received(sock, got):
    """True once the head's handshake hello (it accepted the connection) has arrived."""
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        data = b""
    got[sock] = got.get(sock, b"") + data
    return len(got[sock]) >= transport._HELLO_SIZE


def authenticated(head, token):
    """A transport Connection to ``head`` with the handshake done, for raw frames."""
    return transport.connect(parse_address(head.address), token, timeout=DEADLINE_S)


def send_raw(conn, data):
    conn.sock.setblocking(True)
    conn.sock.sendall(data)
    conn.sock.setblocking(False)


def read_messages(conn, count):
    """The next ``count`` messages from a raw connection, waiting at most DEADLINE_S."""
    messages = []
    deadline = DEADLINE_S
    while len(messages) < count:
        ready, _, _ = select.select([conn.sock], [], [], deadline)
        assert ready, f"no message after {messages}"
        got = conn.read()
        assert got is not None, f"the head closed the connection after {messages}"
        messages += got
    return messages


def frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def new_job_works(remote):
    first, second = remote.new_job_id(), remote.new_job_id()
    return first != second


def events_of(remote):
    remote.drain()
    return remote.pending_events()


# ─── calls ───────────────────────────────────────────────────────────────────────────────────


def test_calls_behave_like_the_embedded_store(head, clients):
    remote = clients(head)
    first, second = remote.new_job_id(), remote.new_job_id()
    assert (first, second) == ((1).to_bytes(4, "little"), (2).to_bytes(4, "little"))
    assert remote.kv_put(b"k", b"v") is True
    assert remote.kv_put("k", "w", overwrite=False) is False
    assert remote.kv_get(b"k") == b"v"
    assert remote.kv_put(b"k", b"x", namespace="ns") is True        # keywords work too
    assert remote.kv_get(b"k", namespace="ns") == b"x"
    assert remote.call("kv_keys", b"") == [b"k"]
    assert remote.register_actor("a", None, first, b"a" * 16, {"meta": 1}) is None
    assert remote.get_named_actor("a", None, first) == (b"a" * 16, {"meta": 1})
    assert remote.locations(b"o" * 20) == set()
    # A second client sees the same store.
    assert clients(head).kv_get(b"k") == b"v"


def test_store_errors_come_back_with_the_heads_traceback(head, clients):
    remote = clients(head)
    remote.register_actor("a", None, JOB1, b"a" * 16, None)
    with pytest.raises(ValueError, match="already taken") as caught:
        remote.register_actor("a", None, JOB1, b"b" * 16, None)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert f"Traceback on the head at {head.address}" in str(cause)
    assert "register_actor" in str(cause)
    with pytest.raises(TypeError, match="must be bytes or str"):
        remote.kv_put(1, b"v")
    assert new_job_works(remote)   # the connection is fine after errors


def test_arguments_and_names_are_checked_in_the_caller(head, clients):
    remote = clients(head)
    with pytest.raises(TypeError, match=r"kv_put\(\): missing a required argument"):
        remote.kv_put(b"k")
    with pytest.raises(TypeError, match="unexpected keyword"):
        remote.kv_get(b"k", nonsense=1)
    with pytest.raises(ValueError, match="not a ControlStore method served by the head"):
        remote.call("_declare_dead", N1)
    with pytest.raises(AttributeError):
        remote.not_a_method
    assert remote.kv_get(b"k") is None


def test_a_store_bug_or_an_unpicklable_result_is_an_error_and_the_head_goes_on(
        make_head, clients, caplog):
    store = ControlStore()
    store.jobs = lambda: [lambda: "not picklable"]

    def broken(*args):
        raise RuntimeError("a bug in the store")

    store.nodes = broken
    head = make_head(store=store)
    remote = clients(head)
    with pytest.raises(TypeError, match="could not be pickled on the head"):
        remote.jobs()
    with pytest.raises(RuntimeError, match="a bug in the store"):
        remote.nodes()
    assert "a bug in the store" in caplog.text   # logged with its traceback on the head
    assert new_job_works(remote)


def test_the_head_serves_only_remote_methods_and_looks_up_nothing_else(make_head, token):
    looked_up = []

    class WatchedStore(ControlStore):
        def __getattribute__(self, name):
            looked_up.append(name)
            return super().__getattribute__(name)

    head = make_head(store=WatchedStore())
    conn = authenticated(head, token)
    calls = [
        (CALL, 1, "_declare_dead", (N1,)),
        (CALL, 2, "__class__", ()),
        (CALL, 3, "__init__", ()),
        (CALL, 4, "_kv", ()),
        (CALL, 5, 17, ()),
        (CALL, 6, "kv_get", "not a tuple"),
        (CALL, 7, "kv_get"),                      # 3 fields
        (CALL, 8, "subscribe", (1,)),
        (CALL, 9, "kv_get", (b"k",), "extra"),    # 5 fields
        (CALL, 10, "new_job_id", ()),
    ]
    for msg in calls:
        conn.send(msg)
    conn.sock.setblocking(True)
    conn.flush()
    conn.sock.setblocking(False)
    replies = {msg[1]: msg for msg in read_messages(conn, len(calls))}
    expected = {1: ValueError, 2: ValueError, 3: ValueError, 4: ValueError, 5: TypeError,
                6: TypeError, 7: ValueError, 8: TypeError, 9: ValueError}
    for request_id, error in expected.items():
        kind, _, ok, value = replies[request_id]
        assert kind == RESULT and ok is False and type(value) is error, replies[request_id]
    assert "serves no method '_declare_dead'" in str(replies[1][3])
    assert replies[10][2:] == (True, JOB1)
    # Only new_job_id was looked up on the store (the head reads .node_table etc. only for
    # successful registrations).
    assert "_declare_dead" not in looked_up and "_kv" not in looked_up
    assert "__init__" not in looked_up and "new_job_id" in looked_up
    conn.close()


def test_a_cast_gets_no_answer_and_a_failing_cast_is_logged(head, clients, caplog):
    remote = clients(head)
    remote.cast("kv_put", b"k", b"v")
    remote.cast("kv_put", b"@namespace_x", b"v")   # reserved: fails on the head
    remote.flush()
    assert remote.kv_get(b"k") == b"v"             # in order, after the casts
    wait_for(lambda: "a cast of 'kv_put'" in caplog.text, DEADLINE_S)
    assert remote.drain() == 0 and remote.pending_events() == []


def test_async_calls_and_events_read_during_a_blocking_call_wait_for_drain(head, clients):
    watcher = clients(head)
    assert watcher.subscribe() == []
    clients(head).register_node(N1, "n1:1", {"CPU": 1})   # -> an EVENT to the watcher
    answers = []
    watcher.call_async("new_job_id", (), lambda ok, value: answers.append((ok, value)))
    watcher.call_async("kv_get", (b"@namespace_x",), lambda ok, value: answers.append(
        (ok, type(value))))
    # The EVENT and both answers arrive before this call's answer, and are kept for later.
    assert watcher.kv_get(b"k") is None
    assert answers == [] and watcher.pending_events() == []
    assert watcher.drain() == 3
    assert answers == [(True, JOB1), (False, ValueError)]
    ((kind, record),) = watcher.pending_events()
    assert kind == "node_added" and record["node_id"] == N1 and record["number"] == 1


def test_in_an_event_loop_with_blocking_calls_now_and_then(token, clients):
    loop = EventLoop()
    events, answers, lost = [], [], []

    def turn_until(condition, what):
        wait_for(lambda: loop.run_once(0.01) or condition(), DEADLINE_S, message=what)

    with running(Head(port=0, token=token)) as head:
        remote = clients(head, on_event=lambda kind, data: events.append((kind, data)),
                         on_disconnect=lost.append)
        remote.attach(loop)
        assert remote.subscribe() == []       # a blocking call while the loop watches it
        remote.call_async("new_job_id", (), lambda ok, value: answers.append(value))
        turn_until(lambda: answers, "the async answer")
        assert answers == [JOB1]
        node = clients(head)
        node.register_node(N1, "n1:1", {"CPU": 1})
        turn_until(lambda: events, "node_added")
        assert [kind for kind, _ in events] == ["node_added"]
        # Read by a blocking call: delivered by the loop's next turn, not inside the call.
        remote.call_async("kv_get", (b"k",), lambda ok, value: answers.append(value))
        node.close()
        wait_for(lambda: remote.nodes()[0]["Alive"] is False, DEADLINE_S)
        assert answers == [JOB1] and len(events) == 1
        loop.run_once(0)
        assert answers == [JOB1, None] and events[1][0] == "node_dead"
        remote.call_async("new_job_id", (), lambda ok, value: answers.append((ok, value)))
    # The head is gone: what still waits fails, and on_disconnect says why.
    turn_until(lambda: lost, "the disconnect")
    assert lost == ["closed by the peer"]
    ok, error = answers[-1]
    assert ok is False and isinstance(error, ConnectionError) and head.address in str(error)
    assert remote.closed
    loop.close()


def test_a_call_that_gets_no_answer_times_out_and_its_late_answer_is_dropped(
        make_head, clients, caplog):
    release = threading.Event()
    store = ControlStore()
    real_new_job_id = store.new_job_id

    def stuck_new_job_id(*args):
        release.wait(DEADLINE_S)   # the head's loop is stuck here: it answers nothing
        return real_new_job_id(*args)

    store.new_job_id = stuck_new_job_id
    head = make_head(store=store)
    remote = clients(head)
    try:
        with pytest.raises(ConnectionError) as caught:
            remote.new_job_id(timeout=0.2)
        assert str(caught.value) == (f"the head at {head.address} is unreachable: no answer "
                                     "to new_job_id within 0.2 s")
    finally:
        release.set()
    assert remote.kv_put(b"k", b"v") is True   # the late answer is read and dropped
    assert remote.drain() == 1 and remote.pending_events() == []
    assert "nobody asked" not in caplog.text


def test_a_lost_head_fails_calls_with_a_message_naming_it(token, clients):
    lost = []
    with running(Head(port=0, token=token)) as head:
        remote = clients(head, on_disconnect=lost.append)
        assert new_job_works(remote)
        answers = []
        remote.call_async("new_job_id", (), lambda ok, value: answers.append((ok, value)))
    # The head is closed (the with block): the next call finds the connection gone.
    with pytest.raises(ConnectionError, match=f"the head at {head.address} is unreachable: "
                                              "the head closed the connection"):
        remote.kv_get(b"k")
    with pytest.raises(ConnectionError, match="unreachable"):
        remote.kv_get(b"k")
    with pytest.raises(ConnectionError, match="unreachable"):
        remote.cast("kv_get", b"k")
    assert answers == [] and remote.drain() == 2
    assert answers[0][0] is False and isinstance(answers[0][1], ConnectionError)
    assert lost == ["the head closed the connection"] and remote.closed


def test_connecting_to_nobody_names_the_address(token):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()   # nobody listens there now
    with pytest.raises(ConnectionError, match=f"the head at 127.0.0.1:{port} is unreachable"):
        RemoteControlStore.connect(f"127.0.0.1:{port}", token, timeout=DEADLINE_S)


def test_a_wrong_token_is_refused_and_says_so(head, clients, caplog):
    with pytest.raises(ConnectionError, match="refused this process's cluster token"):
        RemoteControlStore.connect(head.address, secrets.token_bytes(32), timeout=DEADLINE_S)
    wait_for(lambda: "refused it" in caplog.text, DEADLINE_S)
    assert new_job_works(clients(head))


@pytest.mark.parametrize("address, message", [
    ("localhost", "host:port"), (":6380", "host:port"), ("h:x", "not a number"),
    ("h:0", "out of range"), ("h:70000", "out of range"), (6380, "host:port"),
])
def test_a_bad_address_is_a_clear_error(address, message, token):
    with pytest.raises(ValueError, match=message):
        RemoteControlStore.connect(address, token)


def test_addresses_parse_and_format_both_ways():
    assert parse_address("10.0.0.1:6380") == ("10.0.0.1", 6380)
    assert parse_address(("h", 1)) == ("h", 1)
    assert parse_address("[::1]:6380") == ("::1", 6380)
    assert format_address("::1", 6380) == "[::1]:6380"
    assert format_address("h", 1) == "h:1"


# ─── intruders and broken peers ──────────────────────────────────────────────────────────────


def _random_bytes(n):
    data = random.Random(7).randbytes(n)
    assert not transport._MAGIC.startswith(data[:1])
    return data


BEFORE_THE_HANDSHAKE = {
    "an HTTP request": b"GET / HTTP/1.1\r\nHost: head\r\n\r\n",
    "random bytes": _random_bytes(2000),
    "a huge length prefix": b"\xff\xff\xff\x7f" + b"\x00" * 64,
    "a pickled CALL": frame(pickle.dumps((CALL, 1, "new_job_id", ()))),
}


@pytest.mark.parametrize("case", sorted(BEFORE_THE_HANDSHAKE))
def test_garbage_before_the_handshake_is_dropped_with_a_log_line(case, head, clients, raw,
                                                                  caplog):
    good = clients(head)
    intruder = raw(head)
    intruder.sendall(BEFORE_THE_HANDSHAKE[case])
    wait_for(lambda: peer_closed(intruder), DEADLINE_S, message="the intruder dropped")
    port = intruder.getsockname()[1]
    wait_for(lambda: f"127.0.0.1:{port}" in caplog.text, DEADLINE_S)
    assert "handshake" in caplog.text
    assert new_job_works(good)
    assert good.stats()["jobs"] == 2   # the pickled CALL never ran


AFTER_THE_HANDSHAKE = {
    "a frame that does not unpickle": (frame(b"\x80\x05not a pickle"), "does not unpickle"),
    "a huge length prefix": (b"\xff\xff\xff\x7f", "more than"),
    "a message that is not a tuple": (protocol.encode("hello"), "not a message tuple"),
    "an empty tuple": (protocol.encode(()), "not a message tuple"),
    "a message of unknown kind": (protocol.encode((999, 1)), "unknown kind 999"),
    "a RESULT sent to the head": (protocol.encode((RESULT, 1, True, None)), "unknown kind"),
    "a request id that is not an int": (protocol.encode((CALL, [1], "new_job_id", ())),
                                        "is not an int"),
}


@pytest.mark.parametrize("case", sorted(AFTER_THE_HANDSHAKE))
def test_an_authenticated_peer_sending_garbage_is_dropped_and_others_are_served(
        case, head, clients, token, caplog):
    good = clients(head)
    data, logged = AFTER_THE_HANDSHAKE[case]
    bad = authenticated(head, token)
    send_raw(bad, data)
    wait_for(lambda: peer_closed(bad.sock), DEADLINE_S, message="the bad peer dropped")
    wait_for(lambda: logged in caplog.text, DEADLINE_S, message=logged)
    assert new_job_works(good)
    bad.close()


def test_a_malformed_cast_is_logged_and_the_connection_kept(head, clients, token, caplog):
    conn = authenticated(head, token)
    conn.send((CALL,))
    conn.send((CALL, None, "kv_get"))
    conn.send((CALL, 5, "new_job_id", ()))
    send_raw(conn, b"")
    conn.sock.setblocking(True)
    conn.flush()
    conn.sock.setblocking(False)
    assert read_messages(conn, 1) == [(RESULT, 5, True, JOB1)]
    assert caplog.text.count("ignoring a cast") == 2
    conn.close()


def test_three_hundred_idle_connections_do_not_stop_a_good_client(make_head, clients, raw,
                                                                   caplog):
    clock = FakeClock()
    head = make_head(clock=clock, handshake_timeout=5.0)
    idle = [raw(head) for _ in range(300)]
    got = {}
    wait_for(lambda: all(hello_received(sock, got) for sock in idle if len(got.get(sock, b""))
                         < transport._HELLO_SIZE), DEADLINE_S, message="every idle one accepted")
    # All 300 are open and in the handshake now, and a real client is served promptly.
    remote = clients(head)
    assert remote.new_job_id(timeout=DEADLINE_S) == JOB1
    assert not any(peer_closed(sock) for sock in idle)
    # Past the handshake timeout (the head's clock), each is dropped with a log line.
    with caplog.at_level(logging.WARNING, logger="purerun.transport"):
        clock.advance(5.1)
        wait_for(lambda: all(peer_closed(sock) for sock in idle), DEADLINE_S,
                 message="the idle ones dropped")
        wait_for(lambda: caplog.text.count("no handshake within 5.0 s") == 300, DEADLINE_S)
    assert remote.new_job_id(timeout=DEADLINE_S) != JOB1


def test_beyond_the_cap_the_oldest_handshaking_connection_is_dropped(make_head, clients, raw,
                                                                     caplog):
    head = make_head(clock=FakeClock(), max_handshaking=8)
    idle, got = [], {}
    for _ in range(20):
        sock = raw(head)
        wait_for(lambda: hello_received(sock, got), DEADLINE_S, message="accepted")
        idle.append(sock)
    wait_for(lambda: all(peer_closed(sock) for sock in idle[:12]), DEADLINE_S,
             message="the 12 oldest dropped")
    assert not any(peer_closed(sock) for sock in idle[12:])
    assert caplog.text.count("8 connections are in the handshake at once") == 12
    # A real client still gets in (pushing out one more idle one) and is served.
    assert new_job_works(clients(head))


# ─── nodes and events ────────────────────────────────────────────────────────────────────────


_seen = {}


def _events_so_far(remote, count):
    """The events delivered to ``remote`` so far, once there are ``count`` of them."""
    remote.drain()
    _seen.setdefault(id(remote), []).extend(remote.pending_events())
    got = _seen[id(remote)]
    if len(got) >= count:
        del _seen[id(remote)]
        return got
    return None


def test_a_node_whose_connection_closes_is_declared_dead_at_once(head, clients):
    watcher = clients(head)
    watcher.subscribe()
    node = clients(head)
    assert node.register_node(N1, "10.0.0.1:7000", {"CPU": 2}, node_ip="10.0.0.1") == 1
    job = node.new_job_id("10.0.0.1", 1, N1)
    node.add_location(b"o" * 20, N1)
    (added,) = wait_for(lambda: events_of(watcher), DEADLINE_S)
    assert added[0] == "node_added" and added[1]["address"] == "10.0.0.1:7000"
    node.close()
    (dead,) = wait_for(lambda: events_of(watcher), DEADLINE_S)
    assert dead == ("node_dead", {"node_id": N1, "objects_lost": [b"o" * 20], "actors": [],
                                  "jobs_finished": [job], "job_actors": []})
    assert watcher.nodes()[0]["Alive"] is False
    assert watcher.job_info(job)["IsDead"] is True


def test_a_silent_node_is_declared_dead_by_the_heartbeat_check(make_head, clients):
    clock = FakeClock()
    head = make_head(clock=clock)
    watcher = clients(head)
    watcher.subscribe()
    node = clients(head)
    node.register_node(N1, "n1:1", {"CPU": 1})
    for _ in range(5):   # beating: alive however long it runs
        clock.advance(1.0)
        assert node.heartbeat(N1, {"CPU": 1}, {"tasks": 2}) is True
    assert watcher.stats()["tasks"] == 2
    assert [kind for kind, _ in events_of(watcher)] == ["node_added"]
    clock.advance(NODE_DEATH_TIMEOUT_S + 1)   # silent: the head's next check declares it
    ((kind, fallout),) = wait_for(lambda: events_of(watcher), DEADLINE_S)
    assert kind == "node_dead" and fallout["node_id"] == N1
    assert node.heartbeat(N1) is False        # it learns it was declared dead
    node.close()                              # and its connection closing adds nothing
    assert watcher.kv_get(b"k") is None and events_of(watcher) == []


def test_events_go_to_every_node_and_subscriber_and_nobody_else(head, clients):
    node1, node2, bystander, watcher = (clients(head) for _ in range(4))
    node1.register_node(N1, "n1:1", {"CPU": 1})
    watcher.subscribe()
    node2.register_node(N2, "n2:1", {"CPU": 1})
    node2.register_node(N2, "n2:1", {"CPU": 1})   # a refresh announces nothing
    node2.close()
    expected = [("node_added", N2), ("node_dead", N2)]
    # A node hears of itself too: its own node_added, after its register_node's answer.
    for remote, heard in ((node1, [("node_added", N1)] + expected), (watcher, expected)):
        got = wait_for(lambda: _events_so_far(remote, len(heard)), DEADLINE_S)
        assert [(kind, data["node_id"]) for kind, data in got] == heard
    assert bystander.kv_get(b"k") is None and events_of(bystander) == []


def test_a_node_declared_dead_by_a_peer_is_announced_once(head, clients):
    watcher = clients(head)
    watcher.subscribe()
    node = clients(head)
    node.register_node(N1, "n1:1", {"CPU": 1})
    fallout = watcher.node_dead(N1)
    assert fallout["node_id"] == N1
    got = wait_for(lambda: _events_so_far(watcher, 2), DEADLINE_S)
    assert got == [("node_added", got[0][1]), ("node_dead", fallout)]
    node.close()
    assert watcher.kv_get(b"k") is None and events_of(watcher) == []


def test_subscribe_returns_the_node_table_the_events_continue(head, clients):
    node = clients(head)
    node.register_node(N1, "n1:1", {"CPU": 1}, {"zone": "a"})
    (row,) = clients(head).subscribe()
    assert row["node_id"] == N1 and row["labels"] == {"zone": "a"} and row["alive"]


# ─── the head itself ─────────────────────────────────────────────────────────────────────────


def test_the_head_binds_loopback_by_default_and_close_frees_its_port(token):
    with running(Head(port=0, token=token)) as head:
        assert head.address.startswith("127.0.0.1:")
        port = parse_address(head.address)[1]
    with running(Head(port=port, token=token)) as again:   # the port is free again
        assert again.address == f"127.0.0.1:{port}"


def test_stop_before_serve_makes_serve_return_and_close_is_idempotent(token):
    head = Head(port=0, token=token)
    head.stop()
    head.serve()
    head.close()
    head.close()
    with pytest.raises(RuntimeError, match="closed"):
        head.serve()


def test_the_head_reads_the_token_from_the_environment_or_asks_for_one(monkeypatch,
                                                                        tmp_path, clients):
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("PURERUN_AUTH_TOKEN", "PURERUN_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN",
                     "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ValueError, match="needs the cluster token"):
        Head(port=0)
    monkeypatch.setenv("PURERUN_AUTH_TOKEN", "t" * 32)
    with running(Head(port=0)) as head:
        assert new_job_works(clients(head, token=b"t" * 32))


def test_the_message_table():
    assert {code: m.name for code, m in HEAD_MESSAGES.items()} == {
        CALL: "CALL", RESULT: "RESULT", EVENT: "EVENT"}
    assert min(HEAD_MESSAGES) >= 100 and not set(HEAD_MESSAGES) & set(protocol.MESSAGES)
    assert HEAD_MESSAGES[CALL].fields == ("request_id", "method", "args")
    assert HEAD_MESSAGES[RESULT].fields == ("request_id", "ok", "value")
    assert HEAD_MESSAGES[EVENT].fields == ("kind", "data")
    assert set(HEAD_EVENTS) == {head_module.NODE_ADDED, head_module.NODE_DEAD}
    assert not set(HEAD_METHODS) & REMOTE_METHODS


def test_the_client_shadows_no_store_method_and_no_store_parameter_clashes():
    own = {name for name in vars(RemoteControlStore) if not name.startswith("_")}
    assert not own & REMOTE_METHODS
    for name in REMOTE_METHODS:   # call(method, *args, timeout=None, **kwargs) passes them on
        assert not {"timeout", "method"} & set(
            inspect.signature(getattr(ControlStore, name)).parameters)


# ─── python -m purerun.head ──────────────────────────────────────────────────────────────────


@pytest.fixture
def cli_env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for variable in ("PURERUN_AUTH_TOKEN", "PURERUN_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN",
                     "RAY_AUTH_TOKEN_PATH"):
        env.pop(variable, None)
    return env


@pytest.fixture
def start_head(tmp_path):
    """start_head(env, *args) -> (process, address): python -m purerun.head, listening."""
    started = []

    def start(env, *args):
        address_file = tmp_path / f"address{len(started)}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "purerun.head", "--port", "0", "--address-file",
             str(address_file), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)

        def listening():
            if proc.poll() is not None:
                raise AssertionError(f"the head exited with {proc.returncode}: "
                                     f"{proc.communicate()}")
            return address_file.exists()

        wait_for(listening, 60, message="the head's address file")
        return proc, address_file.read_text().strip(), address_file

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=DEADLINE_S)


def stopped(proc, signum=signal.SIGTERM):
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=DEADLINE_S)
    return proc.returncode, out, err


def test_the_cli_serves_calls_and_stops_cleanly_on_sigterm(cli_env, start_head, clients):
    token = "cli-token-" + secrets.token_hex(16)
    proc, address, address_file = start_head(dict(cli_env, PURERUN_AUTH_TOKEN=token))
    host, port = parse_address(address)
    assert host == "127.0.0.1" and port > 0
    remote = RemoteControlStore.connect(address, token.encode(), timeout=DEADLINE_S)
    try:
        first, second = remote.new_job_id(), remote.new_job_id()
        assert first != second
        assert remote.kv_put(b"key", b"value") is True
        assert remote.kv_get(b"key") == b"value"
    finally:
        remote.close()
    with pytest.raises(ConnectionError, match="refused this process's cluster token"):
        RemoteControlStore.connect(address, b"w" * 32, timeout=DEADLINE_S)
    code, out, err = stopped(proc)
    assert code == 0, err
    assert f"listening on {address}" in out
    assert f"purerun start --address {address}" in out
    assert f'purerun.init(address="{address}")' in out
    assert "from $PURERUN_AUTH_TOKEN" in out
    assert token not in out and token not in err
    assert "refused it" in err             # the wrong token, logged by the head
    assert not address_file.exists()       # removed on the way out
    with pytest.raises(ConnectionError):   # and the socket is closed
        RemoteControlStore.connect(address, token.encode(), timeout=DEADLINE_S)


def test_the_cli_makes_a_token_file_says_where_and_stops_on_sigint(cli_env, start_head):
    proc, address, _ = start_head(cli_env)
    path = os.path.join(cli_env["HOME"], ".purerun", "auth_token")
    with open(path) as f:
        token = f.read().strip()
    assert os.stat(path).st_mode & 0o777 == 0o600
    remote = RemoteControlStore.connect(address, token.encode(), timeout=DEADLINE_S)
    assert remote.new_job_id() == JOB1
    remote.close()
    code, out, err = stopped(proc, signal.SIGINT)
    assert code == 0, err
    assert f"in {path}" in out and token not in out and token not in err


def test_the_cli_token_path_option(cli_env, start_head, tmp_path):
    path = tmp_path / "given_token"
    path.write_text("g" * 32)
    proc, address, _ = start_head(dict(cli_env, PURERUN_AUTH_TOKEN="e" * 32),
                                  "--token-path", str(path))
    remote = RemoteControlStore.connect(address, b"g" * 32, timeout=DEADLINE_S)
    assert remote.kv_get(b"k") is None
    remote.close()
    code, out, _ = stopped(proc)
    assert code == 0 and f"in {path}" in out


def test_the_cli_reports_a_bad_token_and_a_port_in_use(cli_env, tmp_path):
    def run(*args, **env):
        return subprocess.run([sys.executable, "-m", "purerun.head", *args],
                              env=dict(cli_env, **env), capture_output=True, text=True,
                              timeout=60)

    done = run("--port", "0", PURERUN_AUTH_TOKEN="short")
    assert done.returncode == 1 and "at least 16" in done.stderr
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        done = run("--port", str(port), PURERUN_AUTH_TOKEN="p" * 32)
        assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    finally:
        busy.close()
