"""Transport hot paths: queueing framed messages, one loop turn's flush, and reading them back.

Run: python -m pytest benchmarks/bench_transport.py --benchmark-only

One round is one loop turn's worth of traffic on one connection: ``BATCH`` small messages
encoded and queued, then written by one send (the peer drains its end between rounds, off
the clock). ``extra_info["ns_per_message"]`` is the mean cost per message. No timings are
asserted.
"""

import socket

import pytest

from purerun.core import protocol, transport

BATCH = 100
MESSAGES = {
    "tiny": (protocol.UNBLOCKED,),
    "object": (protocol.OBJECT, b"\x01" * 28, protocol.INLINE, (b"\x80\x05K\x01.", ())),
}


def _drain(sock):
    try:
        while sock.recv(1 << 20):
            pass
    except BlockingIOError:
        pass


@pytest.fixture
def connection():
    a, b = socket.socketpair()
    b.setblocking(False)
    loop = transport.EventLoop()
    conn = transport.Connection(a)
    loop.add_connection(conn, lambda conn, messages: None, lambda conn, reason: None)
    yield loop, conn, b
    loop.close()
    b.close()


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_send_and_flush(benchmark, connection, kind):
    loop, conn, peer = connection
    msg = MESSAGES[kind]
    send = conn.send

    def turn():
        for _ in range(BATCH):
            send(msg)
        loop.flush()

    benchmark.pedantic(turn, setup=lambda: _drain(peer), rounds=2000, warmup_rounds=50)
    benchmark.extra_info["ns_per_message"] = benchmark.stats.stats.mean / BATCH * 1e9


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_frame_reader_feed(benchmark, kind):
    data = protocol.encode_many([MESSAGES[kind]] * BATCH)
    reader = protocol.FrameReader()
    benchmark(reader.feed, data)
    benchmark.extra_info["ns_per_message"] = benchmark.stats.stats.mean / BATCH * 1e9
