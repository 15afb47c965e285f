"""FunctionNode: ``f.bind(...)`` of a remote function."""

from purerun.dag.dag_node import DAGNode


class FunctionNode(DAGNode):
    """A remote function call in a task graph; executing it submits the task.

    Args:
        func_body: the RemoteFunction (with any ``.options(...)`` already applied).
        func_args, func_kwargs: the bound arguments (values, DAGNodes, or DAGNodes inside
            lists and dicts).
        func_options: the task options given before ``.bind``.
    """

    def __init__(self, func_body, func_args, func_kwargs, func_options,
                 other_args_to_resolve=None):
        self._body = func_body
        super().__init__(func_args, func_kwargs, func_options, other_args_to_resolve)

    def _execute_impl(self, args, kwargs, other, execution):
        return self._body.remote(*args, **kwargs)

    def _describe(self):
        return getattr(self._body, "__qualname__", "")
