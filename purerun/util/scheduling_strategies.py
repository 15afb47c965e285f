"""Scheduling strategies: where a task or actor may run, as ``ray.util.scheduling_strategies``.

Pass one as the ``scheduling_strategy`` option::

    f.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()

The strings ``"DEFAULT"`` (run where it fits, preferring the submitter's node) and ``"SPREAD"``
(spread over the nodes that can run it) are accepted there too.
"""

__all__ = ["NodeAffinitySchedulingStrategy"]


class NodeAffinitySchedulingStrategy:
    """Run on one node, given by its id.

    While that node is alive and has the resources in total, the task runs only there, waiting
    if it is busy. If the node is dead (or unknown, or could never fit the task), ``soft=True``
    runs it where the default strategy would, and ``soft=False`` fails it with
    ``TaskUnschedulableError`` (``ActorUnschedulableError`` for an actor).

    Args:
        node_id: the node's id in hex, as ``get_runtime_context().get_node_id()`` or
            ``nodes()[i]["NodeID"]`` give it.
        soft: fall back to other nodes when that one cannot run it.

    Raises:
        TypeError: ``node_id`` is not a str, or ``soft`` is not a bool.
        ValueError: ``node_id`` is not a hex node id.
    """

    __slots__ = ("node_id", "soft", "_spill_on_unavailable", "_fail_on_unavailable")

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        if not isinstance(node_id, str):
            raise TypeError(f"node_id must be the node's id as a hex str, got "
                            f"{type(node_id).__name__}")
        try:
            bytes.fromhex(node_id)
        except ValueError:
            raise ValueError(f"node_id must be a node id in hex, got {node_id!r}") from None
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be a bool, got {type(soft).__name__}")
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"
