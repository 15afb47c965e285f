"""purerun.util across two nodes (``purerun.cluster_utils.Cluster``): one Queue whose actor
lives on the head node, used by a task and an actor pinned to the other node."""

import pytest

import purerun
from cluster_common import node_of, on
from purerun.util.queue import Queue

pytestmark = pytest.mark.timeout(60)

CALL_TIMEOUT_S = 30


@purerun.remote
def produce(q, items):
    for item in items:
        q.put(item)
    return purerun.get_runtime_context().get_node_id()


@purerun.remote
class Relay:
    """Takes from one queue and puts into another, on whatever node it was placed."""

    def relay(self, source, sink, n):
        for _ in range(n):
            sink.put(source.get(timeout=CALL_TIMEOUT_S) * 10)
        return purerun.get_runtime_context().get_node_id()


@pytest.fixture(scope="module")
def cluster(two_nodes):
    return two_nodes


def test_a_queue_is_shared_across_nodes(cluster):
    head, second = cluster.head_node, cluster.second
    source = Queue(actor_options={"scheduling_strategy": on(head)})
    sink = Queue(maxsize=2, actor_options={"scheduling_strategy": on(head)})
    relay = Relay.options(scheduling_strategy=on(second)).remote()
    try:
        relaying = relay.relay.remote(source, sink, 4)
        produced = produce.options(scheduling_strategy=on(second)).remote(source, [1, 2, 3, 4])
        # The sink holds 2 at most: the relay blocks on it until the driver takes some.
        got = [sink.get(timeout=CALL_TIMEOUT_S) for _ in range(4)]
        assert got == [10, 20, 30, 40]
        assert purerun.get(produced, timeout=CALL_TIMEOUT_S) == second.node_id
        assert purerun.get(relaying, timeout=CALL_TIMEOUT_S) == second.node_id
        assert purerun.get(node_of.options(scheduling_strategy=on(second)).remote(),
                           timeout=CALL_TIMEOUT_S) == second.node_id
    finally:
        purerun.kill(relay)
        source.shutdown()
        sink.shutdown()
