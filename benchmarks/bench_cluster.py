"""What a second node costs: tiny tasks across nodes, a 100 MB get over a namespace link,
and how long a dead or a silent node takes to be noticed.

Run: python -m pytest benchmarks/bench_cluster.py --benchmark-only
 or: python benchmarks/bench_cluster.py [--rounds 5] [--only tasks,transfer,failure]
     (prints a table per part, and the command that made it)

a. ``tasks``: a loopback ``cluster_utils.Cluster``, the driver on node A, node B beside it
   (2 CPUs each). ``TASKS`` tiny tasks submitted at once and then got, pinned by hard node
   affinity to A (same node) or to B (cross-node: spec, result and completion cross a TCP
   connection between the nodes). Rounds alternate between the two; tasks/s of each and
   their ratio.
b. ``transfer`` (root only, skipped otherwise): node A in the root namespace, node B in a
   network namespace of its own (tests/netns_cluster.py), over a veth pair and a bridge.
   ``purerun``: the driver's ``get`` on A of a 100 MB array a task made on B (made and
   known ready off the clock), the bytes pulled through the link into A's arena.
   ``blocking``: the ceiling; a plain TCP copy of 100 MB between the same two addresses in
   the same direction, blocking ``sendall`` of a buffer in B's namespace, ``recv_into`` a
   preallocated buffer in the root namespace, a 1-byte answer. Rounds alternate; MB/s and
   the ratio; every value is checked.
c. ``failure``: the loopback cluster again; a victim node is added, a retriable task starts
   on it (soft affinity), then the victim gets SIGKILL (its connections close: the head
   notices at once) or SIGSTOP (silent: only missed heartbeats tell, after
   ``NODE_DEATH_TIMEOUT_S``). Timed from the signal to ``nodes()`` showing it dead, and to
   the task's result, computed again on another node.

No timings are asserted.
"""

import argparse
import hashlib
import mmap
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import purerun
from purerun.cluster_utils import Cluster
from purerun.core.control_store import NODE_DEATH_TIMEOUT_S
from purerun.util.scheduling_strategies import NodeAffinitySchedulingStrategy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
import netns_cluster  # noqa: E402  (tests/: shared with test_netns.py)
from helpers import wait_for  # noqa: E402
from cluster_common import alive, mark_then_hang  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_object_transfer import _receive_blocking  # noqa: E402  (the same blocking receiver)

MB = 1_000_000
TASKS = 5000
SIZE = 100 * MB
# The pattern a 100 MB value is made of: cheap to build and check, different each round.
BLOCK = MB
ROUNDS = 5
FAILURE_ROUNDS = 3
# Arenas of the transfer cluster: a 100 MB value on its way out while the next comes in.
ARENA_BYTES = 512 * 1024 * 1024
# nodes() is polled this often while a node dies: the error on "shown dead" is below this.
DEATH_POLL_S = 0.002
TIMEOUT_S = 60.0


@purerun.remote
def small_value():
    return b"ok"


def on(node_id, soft=False):
    return NodeAffinitySchedulingStrategy(node_id, soft=soft)


# -- a. tiny tasks, same node and cross-node ------------------------------------------------------

class TwoNodes:
    """A loopback cluster: node A (driver here), node B; 2 CPUs each."""

    def __init__(self):
        self.cluster = Cluster(initialize_head=True, connect=True,
                               head_node_args={"num_cpus": 2})
        self.a = self.cluster.head_node
        self.b = self.cluster.add_node(num_cpus=2)
        self.cluster.wait_for_nodes()
        self.pinned = {"same node": small_value.options(scheduling_strategy=on(self.a.node_id)),
                       "cross-node": small_value.options(scheduling_strategy=on(self.b.node_id))}
        for task in self.pinned.values():   # workers started on both nodes
            purerun.get([task.remote() for _ in range(200)], timeout=TIMEOUT_S)

    def tasks(self, where, n=TASKS):
        """Submit ``n`` tiny tasks pinned to ``where``, get them all; returns seconds."""
        task = self.pinned[where]
        start = time.perf_counter()
        purerun.get([task.remote() for _ in range(n)], timeout=TIMEOUT_S)
        return time.perf_counter() - start

    def shutdown(self):
        self.cluster.shutdown()


# -- b. 100 MB over a namespace link: purerun's get, and a blocking socket copy -------------------

@purerun.remote
def make_value(seed, nbytes):
    block = np.random.default_rng(seed).integers(0, 256, BLOCK, dtype=np.uint8)
    return np.tile(block, nbytes // BLOCK)


def _intact(value, seed):
    block = np.random.default_rng(seed).integers(0, 256, BLOCK, dtype=np.uint8)
    return value.shape == (SIZE,) and bool((value.reshape(-1, BLOCK) == block).all())


def _send(host, port, size):
    """The blocking copy's sender (in node B's namespace): ``--send``. Sends one round per
    line read, printing how long it took; at EOF prints its buffer's SHA-256."""
    src = mmap.mmap(-1, size)
    block = np.random.default_rng(0).integers(0, 256, BLOCK, dtype=np.uint8).tobytes()
    for pos in range(0, size, BLOCK):
        src[pos:pos + BLOCK] = block
    view = memoryview(src)
    sock = socket.create_connection((host, port))
    print("ready", flush=True)
    for _line in sys.stdin:
        start = time.perf_counter()
        sock.sendall(view)
        if sock.recv(1) != b"k":
            raise RuntimeError("the receiver did not answer")
        print(time.perf_counter() - start, flush=True)
    sock.close()
    print(hashlib.sha256(src).hexdigest(), flush=True)


class NamespaceLink:
    """Node A here, node B in a namespace; and a blocking TCP pair between their addresses.

    Raises:
        NetnsUnavailable: namespaces cannot be made here.
    """

    def __init__(self):
        self.cluster = netns_cluster.NetnsCluster(
            {"num_cpus": 1, "object_store_memory": ARENA_BYTES},
            [{"num_cpus": 1, "object_store_memory": ARENA_BYTES}])
        self.receiver = self.sender = None
        try:
            self.cluster.connect()
            self.cluster.wait_for_nodes()
            self.b = self.cluster.nodes[0]
            self.make = make_value.options(scheduling_strategy=on(self.b.node_id))
            self.seed = 0
            me = os.path.abspath(__file__)
            self.receiver = subprocess.Popen(
                [sys.executable, me, "--receive", self.cluster.host_ip, "--size", str(SIZE)],
                stdout=subprocess.PIPE, text=True)
            port = self.receiver.stdout.readline().strip()
            self.sender = subprocess.Popen(
                self.b.namespace.command([sys.executable, me, "--send", self.cluster.host_ip,
                                          "--port", port, "--size", str(SIZE)]),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if self.sender.stdout.readline().strip() != "ready":
                raise RuntimeError("the blocking sender in the namespace did not connect")
        except BaseException:
            self.close()
            raise
        self.intact = {"purerun": True, "blocking": None}

    def made_on_b(self):
        """A fresh 100 MB value made on B, ready there (off the clock)."""
        self.seed += 1
        ref = self.make.remote(self.seed, SIZE)
        ready, _ = purerun.wait([ref], timeout=TIMEOUT_S)
        if not ready:
            raise RuntimeError("the value was not made on node B in time")
        return ref, self.seed

    def purerun_round(self):
        """Seconds for the driver's get of a value held by B."""
        ref, seed = self.made_on_b()
        start = time.perf_counter()
        value = purerun.get(ref, timeout=TIMEOUT_S)
        elapsed = time.perf_counter() - start
        self.intact["purerun"] &= _intact(value, seed)
        return elapsed

    def blocking_round(self):
        """Seconds for one blocking copy, as timed by the sender."""
        self.sender.stdin.write("go\n")
        self.sender.stdin.flush()
        return float(self.sender.stdout.readline())

    def close(self):
        if self.sender is not None:
            self.sender.stdin.close()
            sent = self.sender.stdout.readline().strip()
            got = self.receiver.stdout.readline().strip()
            self.intact["blocking"] = bool(sent) and sent == got
            for process in (self.sender, self.receiver):
                try:
                    process.wait(TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                process.stdout.close()
        elif self.receiver is not None:
            self.receiver.kill()
            self.receiver.wait()
        self.cluster.shutdown()


# -- c. a node dies, or goes silent ---------------------------------------------------------------

class Victim:
    """A node added to ``cluster`` with a retriable task running on it."""

    def __init__(self, cluster, directory):
        self.cluster = cluster
        self.node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        marker = os.path.join(directory, f"started-{self.node.node_id}")
        self.task = mark_then_hang.options(
            scheduling_strategy=on(self.node.node_id, soft=True)).remote(marker)
        wait_for(lambda: os.path.exists(marker), timeout=TIMEOUT_S,
                 message="the task started on the victim")

    def fail(self, signum):
        """Send ``signum``; returns (seconds to shown dead, seconds to the task's result)."""
        start = time.perf_counter()
        os.kill(self.node.process.pid, signum)
        wait_for(lambda: not alive(self.node.node_id), timeout=TIMEOUT_S,
                 interval=DEATH_POLL_S, message="the victim shown dead")
        dead = time.perf_counter() - start
        where = purerun.get(self.task, timeout=TIMEOUT_S)
        done = time.perf_counter() - start
        if where == self.node.node_id:
            raise RuntimeError("the retried task ran on the dead node")
        return dead, done

    def remove(self):
        """Wake it if stopped (declared dead, it then exits by itself) and remove it."""
        os.kill(self.node.process.pid, signal.SIGCONT)
        try:
            self.node.process.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass   # remove_node kills it
        self.cluster.remove_node(self.node, allow_graceful=False)


def failure_rounds(two_nodes, signum, rounds, directory):
    times = []
    for _ in range(rounds):
        victim = Victim(two_nodes.cluster, directory)
        try:
            times.append(victim.fail(signum))
        finally:
            victim.remove()
    return times


# -- pytest-benchmark rows ------------------------------------------------------------------------
# One class per cluster: a class-scoped fixture is gone before the next class's is made, and
# this process can attach to only one cluster at a time.

@pytest.fixture(scope="class")
def two_nodes():
    setup = TwoNodes()
    yield setup
    setup.shutdown()


@pytest.fixture(scope="class")
def link():
    reason = netns_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        setup = NamespaceLink()
    except netns_cluster.NetnsUnavailable as exc:
        pytest.skip(str(exc))
    yield setup
    setup.close()
    assert setup.intact == {"purerun": True, "blocking": True}, setup.intact


class TestLoopbackCluster:
    @pytest.mark.parametrize("where", ["same node", "cross-node"])
    def test_tiny_tasks(self, benchmark, two_nodes, where):
        times = []
        benchmark.pedantic(lambda: times.append(two_nodes.tasks(where)), rounds=ROUNDS,
                           warmup_rounds=1)
        benchmark.extra_info["tasks_per_s"] = TASKS / statistics.median(times[1:])

    @pytest.mark.parametrize("signame", ["SIGKILL", "SIGSTOP"])
    def test_node_failure(self, benchmark, two_nodes, tmp_path, signame):
        signum = getattr(signal, signame)
        victims, times = [], []

        def setup():
            victims.append(Victim(two_nodes.cluster, str(tmp_path)))
            return (), {}

        def fail():
            times.append(victims[-1].fail(signum))
            victims[-1].remove()

        benchmark.pedantic(fail, setup=setup, rounds=FAILURE_ROUNDS)
        benchmark.extra_info["shown_dead_s"] = statistics.median(t[0] for t in times)
        benchmark.extra_info["task_done_elsewhere_s"] = statistics.median(t[1] for t in times)


class TestNamespaceLink:
    @pytest.mark.parametrize("mode", ["purerun", "blocking"])
    def test_get_100mb(self, benchmark, link, mode):
        one_round = link.purerun_round if mode == "purerun" else link.blocking_round
        times = []
        benchmark.pedantic(lambda: times.append(one_round()), rounds=ROUNDS, warmup_rounds=1)
        benchmark.extra_info["MB_per_s"] = SIZE / MB / statistics.median(times[1:])


# -- the script -----------------------------------------------------------------------------------

def _table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _spread(values, fmt):
    return [fmt.format(statistics.median(values)), fmt.format(min(values)),
            fmt.format(max(values))]


def _alternating(ways, rounds):
    """Each way ``rounds`` times, as A B B A A B ...: neither always runs right after the
    other (whose after-effects, e.g. memory being given back, would then fall on it)."""
    for i in range(rounds):
        yield from (ways if i % 2 == 0 else ways[::-1])


def run_tasks(rounds, n):
    setup = TwoNodes()
    times = {where: [] for where in setup.pinned}
    try:
        for where in setup.pinned:
            setup.tasks(where, n)   # warm-up
        for where in _alternating(list(setup.pinned), rounds):
            times[where].append(setup.tasks(where, n))
    finally:
        setup.shutdown()
    rates = {where: [n / t for t in ts] for where, ts in times.items()}
    print(f"\na. {n} tiny tasks submitted at once, then got; driver on node A; loopback "
          f"cluster (A, B: 2 CPUs each); {rounds} rounds each, in turn (each first every "
          "other round)")
    _table(["tasks pinned to", "median tasks/s", "min", "max"],
           [[f"node {'A (same node)' if where == 'same node' else 'B (cross-node)'}",
             *_spread(rate, "{:,.0f}")] for where, rate in rates.items()])
    ratio = statistics.median(rates["cross-node"]) / statistics.median(rates["same node"])
    print(f"cross-node / same node: {ratio:.2f}")


def run_transfer(rounds):
    reason = netns_cluster.unavailable_reason()
    if reason:
        print(f"\nb. skipped: {reason}")
        return
    setup = NamespaceLink()
    times = {"purerun": [], "blocking": []}
    ways = {"purerun": setup.purerun_round, "blocking": setup.blocking_round}
    try:
        for one_round in ways.values():
            one_round()   # warm-up: pages of both arenas and buffers faulted in
        for way in _alternating(list(ways), rounds):
            times[way].append(ways[way]())
        host, b_ip = setup.cluster.host_ip, setup.b.ip
    finally:
        setup.close()
    rates = {way: [SIZE / MB / t for t in ts] for way, ts in times.items()}
    print(f"\nb. {SIZE // MB} MB from node B ({b_ip}, its own network namespace) to node A "
          f"({host}, root namespace) over veth + bridge; {rounds} rounds each, in turn (each "
          "first every other round)")
    _table(["way", "median MB/s", "min", "max", "bytes intact"],
           [["purerun get (B's arena to A's)", *_spread(rates["purerun"], "{:,.0f}"),
             str(setup.intact["purerun"])],
            ["blocking sendall / recv_into", *_spread(rates["blocking"], "{:,.0f}"),
             str(setup.intact["blocking"])]])
    ratio = statistics.median(rates["purerun"]) / statistics.median(rates["blocking"])
    print(f"purerun / blocking: {ratio:.2f}")


def run_failure(rounds):
    setup = TwoNodes()
    results = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            for signame in ("SIGKILL", "SIGSTOP"):
                results[signame] = failure_rounds(setup, getattr(signal, signame), rounds,
                                                  directory)
    finally:
        setup.shutdown()
    print(f"\nc. a node with a retriable task running on it fails; loopback cluster; "
          f"{rounds} rounds each (heartbeat death timeout {NODE_DEATH_TIMEOUT_S:g} s)")
    _table(["the node gets", "to nodes() dead, median s", "min", "max",
            "to the task done elsewhere, median s", "min", "max"],
           [[f"{name} ({'killed' if name == 'SIGKILL' else 'silent'})",
             *_spread([t[0] for t in ts], "{:.3f}"), *_spread([t[1] for t in ts], "{:.3f}")]
            for name, ts in results.items()])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--failure-rounds", type=int, default=FAILURE_ROUNDS)
    parser.add_argument("--tasks", type=int, default=TASKS)
    parser.add_argument("--only", default="tasks,transfer,failure",
                        help="comma-separated parts: tasks, transfer, failure")
    parser.add_argument("--receive", help=argparse.SUPPRESS)
    parser.add_argument("--send", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        return _receive_blocking(args.size, args.receive)
    if args.send:
        return _send(args.send, args.port, args.size)

    parts = set(args.only.split(","))
    unknown = parts - {"tasks", "transfer", "failure"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    print("$ " + shlex.join(["python", *sys.argv]))
    if "tasks" in parts:
        run_tasks(args.rounds, args.tasks)
    if "transfer" in parts:
        run_transfer(args.rounds)
    if "failure" in parts:
        run_failure(args.failure_rounds)


if __name__ == "__main__":
    main()
