"""Multi-node clusters on one host: a head and node processes joined over loopback TCP.

Everything here runs real processes through ``purerun.cluster_utils.Cluster``: the head
serves the control store, each node has its own arena and workers, and objects cross
between arenas over authenticated TCP connections, as between hosts.
"""

import os
import socket
import time

import numpy as np
import pytest

import purerun
from cluster_common import Counter, node_of, on
from purerun import exceptions
from purerun.core import protocol
from purerun.cluster_utils import Cluster
from purerun.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster():
    """A head node (1 CPU) and a second node (2 CPUs and the custom resource "b")."""
    c = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    c.second = c.add_node(num_cpus=2, resources={"b": 8})
    c.wait_for_nodes()
    yield c
    c.shutdown()


# -- the cluster as a driver sees it ---------------------------------------------------------------

def test_nodes_and_resources_describe_the_whole_cluster(cluster):
    alive = {n["NodeID"] for n in purerun.nodes() if n["Alive"]}
    assert alive == {cluster.head_node.node_id, cluster.second.node_id}
    total = purerun.cluster_resources()
    assert total["CPU"] == 3 and total["b"] == 8
    assert purerun.get_runtime_context().get_node_id() == cluster.head_node.node_id


def test_a_custom_resource_pins_a_task_to_the_node_that_has_it(cluster):
    assert purerun.get(node_of.options(resources={"b": 1}).remote()) == cluster.second.node_id


def test_node_affinity_runs_there_and_a_hard_one_to_an_unknown_node_fails(cluster):
    assert purerun.get(node_of.options(scheduling_strategy=on(cluster.second)).remote()) \
        == cluster.second.node_id
    assert purerun.get(node_of.options(scheduling_strategy=on(cluster.head_node)).remote()) \
        == cluster.head_node.node_id
    nowhere = NodeAffinitySchedulingStrategy("ab" * 16, soft=False)
    with pytest.raises(exceptions.TaskUnschedulableError, match="not in the cluster"):
        purerun.get(node_of.options(scheduling_strategy=nowhere).remote())
    soft = NodeAffinitySchedulingStrategy("ab" * 16, soft=True)
    assert purerun.get(node_of.options(scheduling_strategy=soft).remote()) in (
        cluster.head_node.node_id, cluster.second.node_id)


def test_spread_uses_every_node(cluster):
    where = purerun.get([node_of.options(scheduling_strategy="SPREAD").remote()
                         for _ in range(6)])
    assert set(where) == {cluster.head_node.node_id, cluster.second.node_id}


def test_work_that_does_not_fit_here_now_moves_to_a_node_with_room(cluster):
    @purerun.remote
    def hold(seconds):
        time.sleep(seconds)
        return purerun.get_runtime_context().get_node_id()
    # The head node's one CPU is taken for a while: what queues behind it moves to the
    # second node (at submit, or at the next heartbeat when the node's view was stale).
    busy = hold.options(scheduling_strategy=on(cluster.head_node)).remote(5.0)
    where = purerun.get([hold.remote(0) for _ in range(2)], timeout=4)
    assert cluster.second.node_id in where
    purerun.get(busy)


# -- actors ----------------------------------------------------------------------------------------

def test_an_actor_on_another_node_runs_calls_in_order(cluster):
    counter = Counter.options(resources={"b": 1}).remote()
    assert purerun.get(counter.node.remote()) == cluster.second.node_id
    assert purerun.get([counter.add.remote() for _ in range(200)]) == list(range(1, 201))
    purerun.kill(counter)


def test_a_handle_passed_to_a_task_on_another_node_reaches_the_actor(cluster):
    counter = Counter.options(resources={"b": 1}).remote()

    @purerun.remote
    def bump(handle):
        return purerun.get(handle.add.remote(10)), purerun.get_runtime_context().get_node_id()

    value, where = purerun.get(bump.options(scheduling_strategy=on(cluster.head_node))
                               .remote(counter))
    assert (value, where) == (10, cluster.head_node.node_id)
    assert purerun.get(counter.add.remote()) == 11
    purerun.kill(counter)


def test_a_named_actor_is_found_from_every_node(cluster):
    counter = Counter.options(name="shared", resources={"b": 1}).remote()
    purerun.get(counter.add.remote())

    @purerun.remote
    def use():
        return purerun.get(purerun.get_actor("shared").add.remote(5))

    assert purerun.get(use.options(scheduling_strategy=on(cluster.head_node)).remote()) == 6
    assert purerun.get(use.options(scheduling_strategy=on(cluster.second)).remote()) == 11
    purerun.kill(counter)


def test_killing_an_actor_on_another_node_fails_its_next_calls(cluster):
    counter = Counter.options(resources={"b": 1}).remote()
    purerun.get(counter.add.remote())
    purerun.kill(counter)
    with pytest.raises(exceptions.RayActorError):
        purerun.get(counter.add.remote(), timeout=20)


# -- objects ---------------------------------------------------------------------------------------

def test_small_and_large_values_put_here_are_read_on_the_other_node(cluster):
    @purerun.remote
    def total(values):
        return int(np.asarray(values).sum())

    small = purerun.put(list(range(100)))
    large = np.arange(3_000_000, dtype=np.int64)        # 24 MB: through the arenas
    ref = purerun.put(large)
    pinned = total.options(scheduling_strategy=on(cluster.second))
    assert purerun.get([pinned.remote(small), pinned.remote(ref)]) == [4950, int(large.sum())]


def test_a_large_result_made_there_is_read_here_zero_copy(cluster):
    @purerun.remote
    def make(n):
        return np.full(n, 7, dtype=np.uint8)

    value = purerun.get(make.options(scheduling_strategy=on(cluster.second)).remote(20_000_000))
    assert value.shape == (20_000_000,) and int(value[::4096].sum()) == 7 * len(value[::4096])
    assert not value.flags.writeable   # a view of this node's arena


def test_a_value_flows_from_one_node_through_another_and_back(cluster):
    @purerun.remote
    def make():
        return np.ones(2_000_000, dtype=np.float64)

    @purerun.remote
    def double(x):
        return x * 2

    made = make.options(scheduling_strategy=on(cluster.second)).remote()
    doubled = double.options(scheduling_strategy=on(cluster.head_node)).remote(made)
    again = double.options(scheduling_strategy=on(cluster.second)).remote(doubled)
    assert float(purerun.get(again).sum()) == 4 * 2_000_000


def test_refs_nested_in_a_result_from_another_node_can_be_read(cluster):
    @purerun.remote
    def make():
        return [purerun.put("inner"), purerun.put(np.zeros(1_000_000))]

    inner = purerun.get(make.options(scheduling_strategy=on(cluster.second)).remote())
    assert purerun.get(inner[0]) == "inner"
    assert purerun.get(inner[1]).shape == (1_000_000,)


def test_wait_sees_results_made_on_another_node(cluster):
    refs = [node_of.options(scheduling_strategy=on(cluster.second)).remote()
            for _ in range(4)]
    ready, pending = purerun.wait(refs, num_returns=4, timeout=30)
    assert len(ready) == 4 and not pending


def test_a_stranger_on_a_node_port_is_dropped_and_the_node_keeps_serving(cluster):
    record = next(n for n in purerun.nodes() if n["NodeID"] == cluster.second.node_id)
    host, port = record["ObjectStoreSocketName"].rsplit(":", 1)
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff" * 64,
                    b"purerun\x01" + b"\x00" * 32 + b"\x01" * 32):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(5)
            try:
                while sock.recv(4096):
                    pass   # whatever it answers, it then closes
            except (ConnectionResetError, socket.timeout):
                pass
    assert purerun.get(node_of.options(scheduling_strategy=on(cluster.second)).remote()) \
        == cluster.second.node_id


def test_a_peer_with_the_token_that_sends_a_broken_message_is_dropped(cluster):
    from purerun.core import transport
    record = next(n for n in purerun.nodes() if n["NodeID"] == cluster.second.node_id)
    host, port = record["ObjectStoreSocketName"].rsplit(":", 1)
    for msg in ((protocol.EXECUTE, None, None, None, None), (protocol.FETCH,), "no tuple"):
        conn = transport.connect((host, int(port)), cluster._token.encode())
        try:
            conn.sock.settimeout(10)
            conn.send(msg)
            conn.flush()
            assert conn.sock.recv(4096) == b"", f"the node kept a peer that sent {msg!r}"
        finally:
            conn.close()
    assert purerun.get(node_of.options(scheduling_strategy=on(cluster.second)).remote()) \
        == cluster.second.node_id


def test_hundreds_of_idle_connections_to_a_node_do_not_stop_it_serving(cluster):
    record = next(n for n in purerun.nodes() if n["NodeID"] == cluster.second.node_id)
    host, port = record["ObjectStoreSocketName"].rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(200)]
    try:
        # Work crossing to that node (a pull of a large value, tasks) still goes through.
        big = purerun.put(np.ones(2_000_000))

        @purerun.remote
        def total(x):
            return float(x.sum())
        pinned = total.options(scheduling_strategy=on(cluster.second))
        assert purerun.get([pinned.remote(big) for _ in range(3)], timeout=30) == [2e6] * 3
    finally:
        for sock in idle:
            sock.close()


def test_drivers_on_different_nodes_get_their_own_jobs_and_share_named_actors_by_namespace(
        cluster):
    import subprocess
    import sys
    counter = Counter.options(name="by_ns", namespace="team", resources={"b": 1}).remote()
    purerun.get(counter.add.remote())
    script = (
        "import sys, purerun\n"
        "purerun.init(address=sys.argv[1])\n"
        "print(purerun.get_runtime_context().get_job_id())\n"
        "try:\n"
        "    purerun.get_actor('by_ns')\n"
        "    print('seen outside its namespace')\n"
        "except ValueError:\n"
        "    print('hidden')\n"
        "print(purerun.get(purerun.get_actor('by_ns', namespace='team').add.remote()))\n")
    out = subprocess.run([sys.executable, "-c", script, cluster.second.address],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job, visibility, value = out.stdout.split()
    assert job != purerun.get_runtime_context().get_job_id()
    assert (visibility, value) == ("hidden", "2")
    purerun.kill(counter)


def test_cancel_reaches_a_task_running_on_another_node(cluster):
    @purerun.remote
    def forever():
        time.sleep(600)

    ref = forever.options(scheduling_strategy=on(cluster.second)).remote()
    purerun.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(ref, timeout=30)
    assert purerun.get(node_of.options(scheduling_strategy=on(cluster.second)).remote(),
                       timeout=30) == cluster.second.node_id


def test_the_cluster_example_runs():
    import subprocess
    import sys
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", "cluster.py")
    out = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "nodes: 3 CPUs: 3.0" in out.stdout and "summed on" in out.stdout


def test_the_state_api_lists_every_nodes_tasks_once_and_the_clusters_actors(cluster):
    from purerun.util.state import get_actor, list_nodes, list_tasks
    ref = node_of.options(resources={"b": 1}).remote()
    assert purerun.get(ref) == cluster.second.node_id
    task_id = ref.task_id().hex()
    [probe] = list_tasks(filters=[("task_id", "=", task_id)])   # once, though two nodes saw it
    assert (probe.state, probe.node_id) == ("FINISHED", cluster.second.node_id)
    assert probe.worker_pid is not None
    nodes = list_nodes()
    assert {n.node_id for n in nodes} >= {cluster.head_node.node_id, cluster.second.node_id}
    assert [n.node_id for n in nodes if n.is_head_node] == [cluster.head_node.node_id]
    counter = Counter.options(scheduling_strategy=on(cluster.second)).remote()
    purerun.get(counter.add.remote())
    record = get_actor(counter._actor_id.hex())
    assert (record.state, record.node_id) == ("ALIVE", cluster.second.node_id)
    purerun.kill(counter)
