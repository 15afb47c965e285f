"""DAGNode: one step of a task graph built with ``.bind(...)``, run with ``.execute(...)``.

A graph is built without running anything: ``f.bind(x)`` records the call. ``execute``
walks the graph bottom-up, in topological order, and submits every step on the ordinary
task path, each node once per ``execute``. A node given as an argument to another becomes
the ObjectRef of its result, so steps chain in the cluster without the driver fetching
anything: a ref passed as a top-level argument arrives as its value, one nested in a list
or dict arrives as the ref, exactly as with ``.remote``.

Nodes are found in the bound arguments at the top level and inside lists, tuples, dicts,
sets and frozensets, at any depth.
"""

import uuid


class DAGNode:
    """A node of a task graph: a bound call whose arguments may themselves be nodes.

    Subclasses say what running the node means (``_execute_impl``) given its arguments
    with every child node already replaced by its result.
    """

    def __init__(self, args, kwargs, options, other_args_to_resolve):
        self._bound_args = tuple(args or ())
        self._bound_kwargs = dict(kwargs or {})
        self._bound_options = dict(options or {})
        self._bound_other_args_to_resolve = dict(other_args_to_resolve or {})
        # The same for every copy of this node: what ``execute`` keys its results by.
        self._stable_uuid = uuid.uuid4().hex

    def get_args(self):
        """The positional arguments bound to this node."""
        return self._bound_args

    def get_kwargs(self):
        """A copy of the keyword arguments bound to this node."""
        return dict(self._bound_kwargs)

    def get_options(self):
        """A copy of the ``.options(...)`` given before ``.bind``."""
        return dict(self._bound_options)

    def get_other_args_to_resolve(self):
        """A copy of the node-specific values resolved with the arguments."""
        return dict(self._bound_other_args_to_resolve)

    def get_stable_uuid(self):
        """An id of this node, the same across copies of it."""
        return self._stable_uuid

    def execute(self, *args, **kwargs):
        """Run the graph that ends at this node.

        Every node of the graph runs once, children before parents: a function node
        submits its task, a class node creates its actor (a new one on each ``execute``),
        a class method node calls that actor. ``args`` and ``kwargs`` are what the graph's
        InputNode stands for.

        Args:
            *args, **kwargs: the graph's input, read by ``InputNode`` and its
                ``inp[0]``, ``inp.key``, ``inp["key"]`` selections.

        Returns:
            An ObjectRef for a function or method node (a list of them with
            ``num_returns`` > 1), an ActorHandle for a class node, a list of the outputs'
            results for a MultiOutputNode.

        Raises:
            AssertionError: the graph has more than one InputNode, or its InputNode was
                not made in a ``with InputNode() as inp:`` block.
        """
        return _Execution(args, kwargs).run(self)

    def experimental_compile(self, *args, **kwargs):
        """Ray's Compiled Graphs, which purerun does not have.

        Raises:
            NotImplementedError: always; ``execute`` runs the same graph.
        """
        raise NotImplementedError(
            "purerun does not implement Compiled Graphs (experimental_compile); run the "
            "graph with dag.execute(...) instead.")

    def _children(self):
        """Every DAGNode among this node's arguments, once each, in argument order."""
        found = {}
        _scan((self._bound_args, self._bound_kwargs, self._bound_other_args_to_resolve),
              found)
        return list(found.values())

    def _execute_impl(self, args, kwargs, other, execution):
        """Run this node, given its arguments with child nodes replaced by results."""
        raise NotImplementedError(f"{type(self).__name__} cannot be executed")

    def __getattr__(self, name):
        # Only reached for names the node does not have.
        if name == "bind":
            raise AttributeError(f".bind() cannot be used again on {type(self)} ")
        if name == "remote":
            raise AttributeError(f".remote() cannot be used on {type(self)}. To execute the "
                                 "task graph for this node, use .execute().")
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"{type(self).__name__}({self._describe()})"

    def _describe(self):
        return ""


class _Execution:
    """One ``execute``: the input, and the result of every node run so far."""

    def __init__(self, args, kwargs):
        self.args = args
        self.kwargs = kwargs
        self.results = {}        # node stable uuid -> its result
        self.input_uuid = None   # the InputNode met, at most one per graph

    def run(self, root):
        for node in _topological(root):
            key = node._stable_uuid
            if key in self.results:
                continue  # a copy of a node already run
            resolve = self._resolve
            args = tuple(resolve(a) for a in node._bound_args)
            kwargs = {k: resolve(v) for k, v in node._bound_kwargs.items()}
            other = {k: resolve(v) for k, v in node._bound_other_args_to_resolve.items()}
            self.results[key] = node._execute_impl(args, kwargs, other, self)
        return self.results[root._stable_uuid]

    def enter_input(self, node):
        if self.input_uuid is None:
            self.input_uuid = node._stable_uuid
        elif self.input_uuid != node._stable_uuid:
            raise AssertionError("Each DAG should only have one unique InputNode.")

    def _resolve(self, value):
        if isinstance(value, DAGNode):
            return self.results[value._stable_uuid]
        kind = type(value)
        if kind in (list, tuple, set, frozenset):
            items = [self._resolve(v) for v in value]
            return items if kind is list else kind(items)
        if kind is dict:
            return {k: self._resolve(v) for k, v in value.items()}
        return value


def _scan(value, found):
    if isinstance(value, DAGNode):
        found.setdefault(id(value), value)
    elif type(value) in (list, tuple, set, frozenset):
        for item in value:
            _scan(item, found)
    elif type(value) is dict:
        for item in value.values():
            _scan(item, found)


def _topological(root):
    """The nodes of the graph ending at ``root``, every node after all its children.

    Iterative, so a long chain of nodes does not hit Python's recursion limit.
    """
    order = []
    done = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in done:
            continue
        if children_done:
            done.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        for child in reversed(node._children()):
            if id(child) not in done:
                stack.append((child, False))
    return order
