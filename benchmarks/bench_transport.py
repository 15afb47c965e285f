"""Transport hot paths: queueing framed messages, one loop turn's flush, and reading them back.

Run: python -m pytest benchmarks/bench_transport.py --benchmark-only

One round is one loop turn's worth of traffic on one connection: ``BATCH`` small messages
encoded and queued, then written by one send (the peer drains its end between rounds, off
the clock); or, read back, ``BATCH`` messages the peer wrote (off the clock) taken by one
``read``. ``extra_info["ns_per_message"]`` is the mean cost per message. The raw frame row
is the fixed cost of one raw frame through a socketpair (queue, flush, read into a sink),
with a payload small enough to fit the socket buffer: ``bench_object_transfer.py`` measures
the bulk. No timings are asserted.
"""

import mmap
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


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_read(benchmark, kind):
    a, b = socket.socketpair()
    conn = transport.Connection(a)
    data = protocol.encode_many([MESSAGES[kind]] * BATCH)
    got = []

    def turn():
        got.append(len(conn.read()))

    benchmark.pedantic(turn, setup=lambda: b.sendall(data), rounds=2000, warmup_rounds=50)
    assert set(got) == {BATCH}
    benchmark.extra_info["ns_per_message"] = benchmark.stats.stats.mean / BATCH * 1e9
    conn.close()
    b.close()


RAW_SIZE = 64 * 1024


def test_raw_frame_round_trip(benchmark):
    a, b = socket.socketpair()
    sender, receiver = transport.Connection(a), transport.Connection(b)
    src, dst = mmap.mmap(-1, RAW_SIZE), mmap.mmap(-1, RAW_SIZE)
    src_view, dst_view = memoryview(src), memoryview(dst)
    receiver.raw_sink = lambda msg, nbytes: dst_view
    msg = ("chunk", b"\x01" * 28, 0, RAW_SIZE)

    def round_trip():
        sender.send_raw(msg, src_view)
        sender.flush()
        while not receiver.read():
            pass

    benchmark.pedantic(round_trip, rounds=2000, warmup_rounds=50)
    sender.close()
    receiver.close()
    src_view.release()
    dst_view.release()
    src.close()
    dst.close()
