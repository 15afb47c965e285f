"""InputNode: the input of a task graph, and the parts of it that nodes select."""

from purerun.dag.dag_node import DAGNode

_IN_CONTEXT_MANAGER = "__in_context_manager__"


class InputNode(DAGNode):
    """Stands for the arguments of ``dag.execute(...)``; make it in a ``with`` block.

    ``inp`` itself is the whole input: the single argument when ``execute`` got one
    positional argument and no keyword, else a DAGInputData of all of them. ``inp[0]``,
    ``inp["key"]`` and ``inp.key`` select a part: of the single argument (by index, key or
    attribute), or of the arguments (an int selects a positional one, a str a keyword one).

    Example:
        .. code-block:: python

            with InputNode() as inp:
                dag = add.bind(inp[0], inp.y)
            purerun.get(dag.execute(1, y=2))  # 3

    A graph has one InputNode at most.

    Raises:
        ValueError: arguments given to ``InputNode(...)`` (the input comes with execute).
    """

    def __init__(self, *args, input_type=None, _other_args_to_resolve=None, **kwargs):
        if args or kwargs:
            raise ValueError("InputNode should not take any args or kwargs.")
        self.input_attribute_nodes = {}
        self.input_type = input_type
        super().__init__((), {}, {}, _other_args_to_resolve)

    def __enter__(self):
        self._bound_other_args_to_resolve[_IN_CONTEXT_MANAGER] = True
        return self

    def __exit__(self, *exc):
        return None

    def _in_context_manager(self):
        return bool(self._bound_other_args_to_resolve.get(_IN_CONTEXT_MANAGER))

    def _execute_impl(self, args, kwargs, other, execution):
        if not self._in_context_manager():
            raise AssertionError(
                "InputNode is a singleton instance that should be only used in context "
                "manager for dag building and execution. See the docstring of class "
                "InputNode for examples.")
        execution.enter_input(self)
        if len(execution.args) == 1 and not execution.kwargs:
            return execution.args[0]
        return DAGInputData(*execution.args, **execution.kwargs)

    def __getattr__(self, key):
        if key.startswith("__") or key in ("bind", "remote", "input_attribute_nodes"):
            return super().__getattr__(key)
        return self._select(key, "__getattr__")

    def __getitem__(self, key):
        if not isinstance(key, (str, int)):
            raise TypeError("Please only use int index or str as first-level key to access "
                            f"fields of dag input, not {type(key).__name__}.")
        return self._select(key, "__getitem__")

    def _select(self, key, accessor):
        nodes = self.__dict__["input_attribute_nodes"]
        node = nodes.get((key, accessor))
        if node is None:
            node = nodes[(key, accessor)] = InputAttributeNode(self, key, accessor)
        return node


class InputAttributeNode(DAGNode):
    """One part of a graph's input: ``inp[0]``, ``inp["key"]`` or ``inp.key``.

    Args:
        dag_input_node: the InputNode it selects from.
        key: an int (an index) or a str (a key or an attribute name).
        accessor_method: "__getitem__" or "__getattr__".
    """

    def __init__(self, dag_input_node, key, accessor_method, input_type=None):
        self._key = key
        self._accessor_method = accessor_method
        super().__init__((), {}, {}, {"dag_input_node": dag_input_node, "key": key,
                                      "accessor_method": accessor_method})

    def _execute_impl(self, args, kwargs, other, execution):
        value = other["dag_input_node"]
        key = self._key
        if isinstance(value, DAGInputData):
            return value[key]
        if self._accessor_method == "__getattr__":
            return getattr(value, key)
        return value[key]

    def _describe(self):
        return repr(self._key)


class DAGInputData:
    """The input of an ``execute`` given several arguments: ``[i]`` for the i-th
    positional one, ``["name"]`` (or ``.name`` on the InputNode) for a keyword one."""

    def __init__(self, *args, **kwargs):
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._args[key]
        if isinstance(key, str):
            return self._kwargs[key]
        raise ValueError("Please only use int index or str as first-level key to access "
                         "fields of dag input.")

    def __repr__(self):
        return f"DAGInputData(args={self._args!r}, kwargs={self._kwargs!r})"
