"""What the multi-node tests (and benchmarks/bench_cluster.py) share: a task and an actor
that say where they run, a task that hangs on its first run only, and whether a node lives."""

import os
import time

import purerun
from purerun.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@purerun.remote
def node_of(*_args):
    return purerun.get_runtime_context().get_node_id()


def on(node, soft=False):
    """The strategy that pins work to a ``cluster_utils`` node."""
    return NodeAffinitySchedulingStrategy(node.node_id, soft=soft)


@purerun.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        self.n += k
        return self.n

    def node(self):
        return purerun.get_runtime_context().get_node_id()


@purerun.remote(max_retries=2)
def mark_then_hang(path):
    """First run: leaves a mark (this node's id) at ``path`` and hangs. A retry returns at once."""
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(purerun.get_runtime_context().get_node_id())
        time.sleep(600)
    return purerun.get_runtime_context().get_node_id()


def alive(node_id):
    """Whether ``nodes()`` lists the node (hex id) as alive."""
    return any(n["Alive"] for n in purerun.nodes() if n["NodeID"] == node_id)
