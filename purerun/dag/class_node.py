"""ClassNode (``Actor.bind(...)``) and ClassMethodNode (``node.method.bind(...)``)."""

from purerun import options as _options
from purerun.dag.dag_node import DAGNode


class ClassNode(DAGNode):
    """An actor's creation in a task graph.

    Executing the graph creates the actor, once per ``execute`` however many method nodes
    use it; a new ``execute`` creates a new actor. ``node.method.bind(...)`` makes a
    ClassMethodNode calling that actor.

    Args:
        cls: the ActorClass (with any ``.options(...)`` already applied).
        cls_args, cls_kwargs: the arguments of ``__init__``.
        cls_options: the actor options given before ``.bind``.
    """

    def __init__(self, cls, cls_args, cls_kwargs, cls_options, other_args_to_resolve=None):
        self._body = cls
        super().__init__(cls_args, cls_kwargs, cls_options, other_args_to_resolve)

    def _execute_impl(self, args, kwargs, other, execution):
        return self._body.remote(*args, **kwargs)

    def __getattr__(self, name):
        if name in ("bind", "remote") or (name.startswith("__") and name != "__ray_ready__"):
            return super().__getattr__(name)
        body = self.__dict__.get("_body")
        methods = body._meta.methods if body is not None else {}
        if name not in methods and name != "__ray_ready__":
            raise AttributeError(f"'{body.__name__ if body else 'actor'}' has no method "
                                 f"'{name}' to bind")
        return _UnboundClassMethodNode(self, name, {})

    def _describe(self):
        return getattr(self._body, "__qualname__", "")


class _UnboundClassMethodNode:
    """``class_node.method``: waits for ``.bind(...)`` (or ``.options(...)`` first)."""

    def __init__(self, actor, method_name, options):
        self._actor = actor
        self._method_name = method_name
        self._options = options

    def options(self, **options):
        """A copy with call options (num_returns, name, ...) for the bound call.

        Raises:
            ValueError / TypeError: an unknown option, or an invalid value for one.
        """
        _options.validate_options("method", options, in_options_call=True)
        return _UnboundClassMethodNode(self._actor, self._method_name,
                                       {**self._options, **options})

    def bind(self, *args, **kwargs):
        """Bind the method's arguments.

        Returns:
            A ClassMethodNode calling the method on the actor this graph creates.
        """
        return ClassMethodNode(self._method_name, args, kwargs, self._options,
                               {"parent_class_node": self._actor})

    def remote(self, *args, **kwargs):
        raise AttributeError(f".remote() cannot be used on a method of {type(self._actor)}."
                             " Bind it with .bind(...), then run the graph with .execute().")


class ClassMethodNode(DAGNode):
    """An actor method call in a task graph.

    The actor is the one its parent ClassNode creates during the same ``execute`` (or a
    live actor, for ``handle.method.bind(...)``).

    Args:
        method_name: the method to call.
        method_args, method_kwargs: its bound arguments.
        method_options: call options (``num_returns``, ...).
        other_args_to_resolve: ``{"parent_class_node": ClassNode or ActorHandle}``.
    """

    def __init__(self, method_name, method_args, method_kwargs, method_options,
                 other_args_to_resolve):
        self._method_name = method_name
        super().__init__(method_args, method_kwargs, method_options, other_args_to_resolve)

    def _execute_impl(self, args, kwargs, other, execution):
        handle = other["parent_class_node"]
        method = getattr(handle, self._method_name)
        if self._bound_options:
            method = method.options(**self._bound_options)
        return method.remote(*args, **kwargs)

    def _describe(self):
        return self._method_name
