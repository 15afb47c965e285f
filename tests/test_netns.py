"""A cluster across network namespaces: every node on an address of its own, as on hosts.

The head and node A (which this process attaches to) are in the root namespace, nodes B and
C each in a namespace of their own, all on a private bridge (see tests/netns_cluster.py for
the layout). Unlike a loopback ``Cluster``, a node here can only be reached at the address
it advertises, and its workers run in its namespace: a task that reports which addresses it
can bind shows where it really ran. Needs root and ``ip``; skipped otherwise.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import netns_cluster
import purerun
from helpers import wait_for
from purerun.util.scheduling_strategies import NodeAffinitySchedulingStrategy

_REASON = netns_cluster.unavailable_reason()
pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(_REASON is not None,
                                                          reason=_REASON or "")]

MB = 1_000_000
# Each node's arena: room for a 50 MB value or two, and nothing like the default 30% of RAM.
ARENA_BYTES = 256 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster():
    """Node A (1 CPU) here, B in namespace 1 (resource "ns1"), C in namespace 2 ("ns2")."""
    try:
        c = netns_cluster.NetnsCluster(
            {"num_cpus": 1, "object_store_memory": ARENA_BYTES},
            [{"num_cpus": 1, "resources": {"ns1": 4}, "object_store_memory": ARENA_BYTES},
             {"num_cpus": 1, "resources": {"ns2": 4}, "object_store_memory": ARENA_BYTES}])
    except netns_cluster.NetnsUnavailable as exc:
        pytest.skip(str(exc))
    network = c.network
    try:
        c.connect()
        c.wait_for_nodes()
        c.a, (c.b, c.c) = c.root_node, c.nodes
        yield c
    finally:
        c.shutdown()
    # Everything this run made is gone (a namespace's veth goes a moment after it).
    wait_for(lambda: not network.leftovers(), timeout=10,
             message=f"the namespaces and links of this run removed: {network.names()}")


@purerun.remote
def where(ips):
    """This worker's node id, and which of ``ips`` it can bind: the namespace it is in."""
    bindable = []
    for ip in ips:
        with socket.socket() as sock:
            try:
                sock.bind((ip, 0))
            except OSError:
                continue
            bindable.append(ip)
    return purerun.get_runtime_context().get_node_id(), bindable


def _ips(cluster):
    return [cluster.host_ip, cluster.b.ip, cluster.c.ip]


def on(node_id):
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def test_nodes_lists_every_node_alive_at_its_namespace_address(cluster):
    alive = {n["NodeID"]: n for n in purerun.nodes() if n["Alive"]}
    assert set(alive) == {cluster.a.node_id, cluster.b.node_id, cluster.c.node_id}
    for node_id, ip in ((cluster.a.node_id, cluster.host_ip), (cluster.b.node_id, cluster.b.ip),
                        (cluster.c.node_id, cluster.c.ip)):
        assert alive[node_id]["NodeManagerAddress"] == ip
        assert alive[node_id]["ObjectStoreSocketName"].rpartition(":")[0] == ip
    assert purerun.cluster_resources()["ns1"] == 4
    assert purerun.get_runtime_context().get_node_id() == cluster.a.node_id


def test_a_pinned_task_runs_on_that_node_inside_its_namespace(cluster):
    ips = _ips(cluster)
    assert purerun.get(where.options(scheduling_strategy=on(cluster.b.node_id)).remote(ips),
                       timeout=30) == (cluster.b.node_id, [cluster.b.ip])
    assert purerun.get(where.options(resources={"ns2": 1}).remote(ips), timeout=30) \
        == (cluster.c.node_id, [cluster.c.ip])
    assert purerun.get(where.options(scheduling_strategy=on(cluster.a.node_id)).remote(ips),
                       timeout=30) == (cluster.a.node_id, [cluster.host_ip])


@purerun.remote
def digest(array):
    return hashlib.sha256(array).hexdigest(), purerun.get_runtime_context().get_node_id()


@purerun.remote
def make(seed, nbytes):
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


def test_50mb_put_here_is_read_in_a_namespace(cluster):
    array = np.random.default_rng(1).integers(0, 256, 50 * MB, dtype=np.uint8)
    ref = purerun.put(array)
    assert purerun.get(digest.options(scheduling_strategy=on(cluster.b.node_id)).remote(ref),
                       timeout=30) == (hashlib.sha256(array).hexdigest(), cluster.b.node_id)


def test_50mb_made_in_a_namespace_is_got_here(cluster):
    ref = make.options(scheduling_strategy=on(cluster.b.node_id)).remote(2, 50 * MB)
    value = purerun.get(ref, timeout=30)
    assert np.array_equal(value, np.random.default_rng(2).integers(0, 256, 50 * MB,
                                                                   dtype=np.uint8))


def test_50mb_made_in_one_namespace_is_read_in_the_other(cluster):
    made = make.options(scheduling_strategy=on(cluster.b.node_id)).remote(3, 50 * MB)
    expected = np.random.default_rng(3).integers(0, 256, 50 * MB, dtype=np.uint8)
    assert purerun.get(digest.options(scheduling_strategy=on(cluster.c.node_id)).remote(made),
                       timeout=30) == (hashlib.sha256(expected).hexdigest(), cluster.c.node_id)


@purerun.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        self.n += k
        return self.n

    def where(self, ips):
        return purerun.get(where.options(scheduling_strategy=on(
            purerun.get_runtime_context().get_node_id())).remote(ips))


def test_an_actor_in_a_namespace_keeps_state_and_calls_back_into_the_cluster(cluster):
    counter = Counter.options(resources={"ns1": 1}).remote()
    try:
        # The actor's own call goes through node B, to B's worker pool.
        assert purerun.get(counter.where.remote(_ips(cluster)), timeout=30) \
            == (cluster.b.node_id, [cluster.b.ip])
        assert purerun.get([counter.add.remote() for _ in range(100)], timeout=30) \
            == list(range(1, 101))
    finally:
        purerun.kill(counter)


@pytest.mark.timeout(240)
def test_a_test_run_spread_over_the_namespaced_cluster_runs_on_every_node(cluster, tmp_path):
    """``pytest -p purerun.testing --purerun ADDRESS``: one test process per CPU of the
    cluster, and the tests that land on B and C run in their namespaces."""
    from purerun import testing
    ips = _ips(cluster)
    record = tmp_path / "ran"
    record.mkdir()
    (tmp_path / "test_where.py").write_text(textwrap.dedent(f"""
        import json, os, socket
        import pytest

        def bindable(ip):
            with socket.socket() as sock:
                try:
                    sock.bind((ip, 0))
                except OSError:
                    return False
            return True

        @pytest.mark.parametrize("n", range(18))
        def test_records_where_it_ran(n):
            with open(os.path.join({str(record)!r}, str(n)), "w") as f:
                json.dump([os.environ[{testing.NODE_ENV!r}],
                           [ip for ip in {ips!r} if bindable(ip)]], f)
        """))
    env = dict(cluster.env, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "purerun.testing", "-p", "no:cacheprovider",
         "-q", "--purerun", cluster.root_node.address, str(tmp_path / "test_where.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "18 passed" in run.stdout, run.stdout
    ran = [json.loads(p.read_text()) for p in record.iterdir()]
    assert len(ran) == 18
    nodes = {node for node, _ in ran}
    assert nodes == {cluster.a.node_id, cluster.b.node_id, cluster.c.node_id}, ran
    # Each node's tests could bind only that node's address: they ran in its namespace.
    where = {cluster.a.node_id: cluster.host_ip, cluster.b.node_id: cluster.b.ip,
             cluster.c.node_id: cluster.c.ip}
    for node, bound in ran:
        assert where[node] in bound, (node, bound)
    assert all(bound == [cluster.b.ip] for node, bound in ran if node == cluster.b.node_id)
    assert all(bound == [cluster.c.ip] for node, bound in ran if node == cluster.c.node_id)
