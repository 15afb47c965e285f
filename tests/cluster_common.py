"""What the multi-node tests share: a task and an actor that say where they run."""

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
