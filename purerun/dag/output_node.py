"""MultiOutputNode: several results of one task graph."""

from purerun.dag.dag_node import DAGNode


class MultiOutputNode(DAGNode):
    """Ends a graph with several outputs; ``execute`` returns a list of their results.

    Args:
        args: a list or tuple of DAGNodes (their results come back in that order).

    Raises:
        ValueError: ``args`` is not a list or tuple.
    """

    def __init__(self, args, other_args_to_resolve=None):
        if not isinstance(args, (list, tuple)):
            raise ValueError(f"MultiOutputNode takes a list or tuple of nodes, got "
                             f"{type(args).__name__}.")
        super().__init__(tuple(args), {}, {}, other_args_to_resolve)

    def _execute_impl(self, args, kwargs, other, execution):
        return list(args)
