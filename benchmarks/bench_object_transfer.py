"""Moving a large object between nodes: 100 MiB from one mmap into another over TCP loopback.

Run: python -m pytest benchmarks/bench_object_transfer.py --benchmark-only
 or: python benchmarks/bench_object_transfer.py [--rounds 7] [--mib 100]   (prints a table)

Two ways to move the same bytes, the receiver in a process of its own (so that the two sides
do not share a GIL), both ending in the receiver's mmap:

* ``blocking``: the ceiling. Plain blocking sockets: ``sendall`` of a memoryview of the
  source mmap, ``recv_into`` the destination mmap until it is full, a 1-byte answer.
* ``transport``: what nodes do. A ``Connection`` in an ``EventLoop`` on each side, after the
  HMAC handshake. The sender queues 4 MiB raw frames from its mmap, each followed by a small
  message, keeping ``WINDOW`` frames queued (the next one queued from ``on_sent``); the
  receiver's ``raw_sink`` hands out slices of its mmap, and it answers the last message.

A round is timed by the sender, from the first byte queued to the receiver's answer that
every byte is in. The script alternates the two ways round by round (the machine may be
noisy), prints the median MiB/s of each and their ratio, and checks, once done, that the
receiver's mmap holds the sender's bytes (SHA-256). No timings are asserted.
"""

import argparse
import hashlib
import mmap
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time

import pytest

from purerun.core import transport
from purerun.core.transport import (CLIENT, SERVER, Connection, EventLoop, HmacHandshake,
                                    Listener)

MIB = 1 << 20
SIZE = 100 * MIB
# The raw frame size nodes are meant to use: big enough that per-frame costs vanish, small
# enough that other messages wait at most a few ms behind one.
CHUNK = 4 * MIB
# Raw frames queued ahead of the socket: one being written, one ready behind it.
WINDOW = 2
ROUNDS = 7
TIMEOUT = 60.0


def _fill(view):
    block = random.Random(0).randbytes(MIB)
    for pos in range(0, len(view), MIB):
        n = min(MIB, len(view) - pos)
        view[pos:pos + n] = block[:n]
        view[pos:pos + 8] = pos.to_bytes(8, "little")   # a chunk in the wrong place shows


# -- the receivers (each runs as: python bench_object_transfer.py --receive MODE --size N) --

def _receive_blocking(size, host=transport.LOOPBACK):
    """The blocking copy's receiver: prints its port, acknowledges each copy with one byte,
    and prints the SHA-256 of what it holds once the sender closes."""
    dst = mmap.mmap(-1, size)
    view = memoryview(dst)
    server = socket.create_server((host, 0))
    print(server.getsockname()[1], flush=True)
    sock, _ = server.accept()
    while True:
        pos = 0
        while pos < size:
            n = sock.recv_into(view[pos:])
            if not n:
                print(hashlib.sha256(dst).hexdigest(), flush=True)
                return
            pos += n
        sock.sendall(b"k")


def _receive_transport(size, token):
    dst = mmap.mmap(-1, size)
    view = memoryview(dst)
    loop = EventLoop()
    listener = Listener.tcp(0, handshake=HmacHandshake(token, SERVER))
    got = [0]

    def on_accept(conn):
        conn.raw_sink = lambda msg, nbytes: view[msg[2]:msg[2] + nbytes]
        loop.add_connection(conn, on_messages, on_close)

    def on_messages(conn, messages):
        for msg in messages:
            if msg[0] == "chunk":
                got[0] += msg[3]
            elif msg[0] == "done":
                conn.send(("ack", msg[1], got[0]))
                got[0] = 0

    def on_close(conn, reason):
        loop.stop()

    loop.add_listener(listener, on_accept)
    print(listener.address[1], flush=True)
    loop.run()
    print(hashlib.sha256(dst).hexdigest(), flush=True)


class Receiver:
    """A receiver process; ``port`` to connect to, ``digest()`` of its mmap once closed."""

    def __init__(self, mode, size, token=None):
        env = dict(os.environ, PURERUN_BENCH_TOKEN=(token or b"").hex())
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--receive",
                                      mode, "--size", str(size)],
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.port = int(self.proc.stdout.readline())

    def digest(self):
        line = self.proc.stdout.readline().strip()
        self.proc.wait(TIMEOUT)
        return line

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- the senders --

class BlockingSender:
    def __init__(self, port, view):
        self.sock = socket.create_connection((transport.LOOPBACK, port))
        self.view = view

    def round(self):
        start = time.perf_counter()
        self.sock.sendall(self.view)
        if self.sock.recv(1) != b"k":
            raise RuntimeError("the blocking receiver did not answer")
        return time.perf_counter() - start

    def close(self):
        self.sock.close()


class TransportSender:
    def __init__(self, port, view, token):
        self.loop = EventLoop()
        self.view = view
        self.conn = Connection(socket.create_connection((transport.LOOPBACK, port)),
                               handshake=HmacHandshake(token, CLIENT))
        self.loop.add_connection(self.conn, self._on_messages, self._on_close)
        self.rounds = 0
        self.acked = None
        self.closed = None

    def round(self):
        self.rounds += 1
        self.acked = None
        self.next = 0
        self.queued = 0
        start = time.perf_counter()
        self._queue_chunks()
        deadline = start + TIMEOUT
        while self.acked is None:
            if self.closed is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"no answer from the receiver ({self.closed})")
            self.loop.run_once(1.0)
        elapsed = time.perf_counter() - start
        if self.acked != len(self.view):
            raise RuntimeError(f"the receiver got {self.acked} of {len(self.view)} bytes")
        return elapsed

    def _queue_chunks(self):
        size = len(self.view)
        while self.queued < WINDOW and self.next < size:
            pos = self.next
            n = min(CHUNK, size - pos)
            self.next = pos + n
            self.queued += 1
            self.conn.send_raw(("chunk", self.rounds, pos, n), self.view[pos:pos + n],
                               on_sent=self._sent)
            self.conn.send(("progress", self.rounds, pos))   # small, between raw frames
            if self.next == size:
                self.conn.send(("done", self.rounds))

    def _sent(self):
        self.queued -= 1
        self._queue_chunks()

    def _on_messages(self, conn, messages):
        for msg in messages:
            if msg[0] == "ack" and msg[1] == self.rounds:
                self.acked = msg[2]

    def _on_close(self, conn, reason):
        self.closed = reason

    def close(self):
        self.conn.close()
        self.loop.close()


class Setup:
    """Both receivers, both senders, over one source mmap of ``size`` bytes."""

    def __init__(self, size):
        self.src = mmap.mmap(-1, size)
        self.view = memoryview(self.src)
        _fill(self.view)
        self.expected = hashlib.sha256(self.src).hexdigest()
        token = secrets.token_bytes(32)
        self.receivers = {"blocking": Receiver("blocking", size),
                          "transport": Receiver("transport", size, token)}
        self.senders = {
            "blocking": BlockingSender(self.receivers["blocking"].port, self.view),
            "transport": TransportSender(self.receivers["transport"].port, self.view, token),
        }

    def close(self):
        """Close the senders; returns {mode: True if its receiver got the right bytes}."""
        ok = {}
        for mode, sender in self.senders.items():
            sender.close()
            ok[mode] = self.receivers[mode].digest() == self.expected
        for receiver in self.receivers.values():
            receiver.kill()
        self.view.release()
        self.src.close()
        return ok


# -- pytest-benchmark rows --

@pytest.fixture(scope="module")
def setup():
    setup = Setup(SIZE)
    yield setup
    ok = setup.close()
    assert all(ok.values()), ok


@pytest.mark.parametrize("mode", ["blocking", "transport"])
def test_copy_100mib_over_tcp(benchmark, setup, mode):
    sender = setup.senders[mode]
    times = []

    def one_round():
        times.append(sender.round())

    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["MiB_per_s"] = SIZE / MIB / statistics.median(times[1:])


# -- the script --

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--mib", type=int, default=SIZE // MIB)
    parser.add_argument("--receive", choices=["blocking", "transport"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive == "blocking":
        return _receive_blocking(args.size)
    if args.receive == "transport":
        return _receive_transport(args.size, bytes.fromhex(os.environ["PURERUN_BENCH_TOKEN"]))

    size = args.mib * MIB
    setup = Setup(size)
    times = {mode: [] for mode in setup.senders}
    try:
        for mode, sender in setup.senders.items():
            sender.round()   # warm-up: the receiver's pages are faulted in
        for _ in range(args.rounds):
            for mode, sender in setup.senders.items():
                times[mode].append(sender.round())
    finally:
        ok = setup.close()
    rates = {mode: [size / MIB / t for t in ts] for mode, ts in times.items()}
    print(f"{args.mib} MiB over TCP loopback, {args.rounds} rounds each, alternating; "
          f"raw frames of {CHUNK // MIB} MiB, {WINDOW} queued")
    print("| way | median MiB/s | min | max | bytes intact |")
    print("|---|---:|---:|---:|---|")
    for mode, rate in rates.items():
        print(f"| {mode} | {statistics.median(rate):,.0f} | {min(rate):,.0f} | "
              f"{max(rate):,.0f} | {ok[mode]} |")
    ratio = statistics.median(rates["transport"]) / statistics.median(rates["blocking"])
    print(f"transport / blocking: {ratio:.2f}")


if __name__ == "__main__":
    main()
