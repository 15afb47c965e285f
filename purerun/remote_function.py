"""RemoteFunction: what ``@purerun.remote`` makes of a function."""

import inspect

from purerun import options as _options
from purerun.core import context, serialization
from purerun.core.call_check import CallCheck
from purerun.core.client import function_key
from purerun.core.object_ref import ObjectRefGenerator
from purerun.core.task_spec import STREAMING


class RemoteFunction:
    """A function that runs as a task: call ``f.remote(*args, **kwargs)``.

    Arguments are checked against the function's signature in the caller, as a local call
    would check them. ``f.options(**task_options)`` returns a copy with other options.
    """

    def __init__(self, function, task_options, _shared=None):
        if inspect.iscoroutinefunction(function):
            # As in Ray: a task returns its value, and a coroutine is no value.
            raise ValueError(
                f"'async def' cannot be a remote function ({function.__qualname__}): a task "
                "must return its result, not a coroutine. Run the coroutine inside a plain "
                "function with asyncio.run(...), or make it a method of an actor (an actor "
                "with async methods runs them on an event loop).")
        if task_options.get("num_returns") == STREAMING and \
                not inspect.isgeneratorfunction(function):
            # As in Ray: a stream of values needs a function that yields them.
            raise ValueError(f"num_returns='streaming' is set for "
                             f"{getattr(function, '__qualname__', function)!s}, which is not "
                             "a generator function; use yield in it, or an integer num_returns.")
        self._function = function
        self._options = task_options
        # Pickled function and its key, shared by every .options() copy.
        self._shared = _shared if _shared is not None else _FunctionExport(function)
        self._fields = None
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__doc__ = function.__doc__
        self.__module__ = getattr(function, "__module__", None)
        self.__wrapped__ = function

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running "
            f"'{self.__name__}()', try '{self.__name__}.remote()'.")

    def options(self, **task_options):
        """A copy of this remote function with some options changed.

        Args:
            **task_options: any option ``@purerun.remote`` takes on a function, except
                ``max_calls``.

        Returns:
            An object with ``.remote(...)`` (and ``.options(...)``).

        Raises:
            ValueError / TypeError: an unknown option, or an invalid value for one.
        """
        checked = _options.validate_options("task", task_options, in_options_call=True)
        return RemoteFunction(self._function, _options.merge(self._options, checked),
                              _shared=self._shared)

    def remote(self, *args, **kwargs):
        """Run the function as a task.

        Args:
            *args, **kwargs: the function's arguments. An ObjectRef passed as an argument
                itself is replaced by its value when the task runs; ObjectRefs inside other
                arguments stay references.

        Returns:
            An ObjectRef to the result; a list of ``num_returns`` ObjectRefs when
            ``num_returns`` > 1, and None when it is 0. An ``ObjectRefGenerator`` for a
            generator function (``num_returns="streaming"``, the default for one), and for
            ``num_returns="dynamic"`` one ObjectRef whose value is a
            ``DynamicObjectRefGenerator``.

        Raises:
            TypeError: the arguments do not match the function's signature, or the
                function or an argument cannot be serialized.
        """
        self._shared.check_call(args, kwargs)
        client = context.client or context.get_or_start()
        fields = self._fields
        if fields is None:
            fields = self._fields = self._spec_fields()
        refs = client.submit_task(self, fields, args, kwargs)
        if fields["generator"] == STREAMING:
            return ObjectRefGenerator(refs[0], fields["backpressure"])
        n = fields["num_returns"]
        if n == 1:
            return refs[0]
        if n == 0:
            return None
        return refs

    def bind(self, *args, **kwargs):
        """Bind arguments into a task graph node, run later with ``.execute()``.

        Args:
            *args, **kwargs: the function's arguments; DAGNodes among them (also inside
                lists and dicts) become the ObjectRefs of their results when the graph runs.

        Returns:
            A ``purerun.dag.FunctionNode``.

        Raises:
            TypeError: the arguments do not match the function's signature.
        """
        from purerun.dag.function_node import FunctionNode  # the dag package imports us
        self._shared.check_call(args, kwargs)
        return FunctionNode(self, args, kwargs, self._options)

    def _spec_fields(self):
        fields = _options.task_fields(self._options, inspect.isgeneratorfunction(self._function))
        # Ray's name option renames the task everywhere it is shown: the runtime context's
        # get_task_name(), the state API, errors and the worker's process title.
        return {"name": self._options.get("name") or self.__qualname__, **fields}

    def _export(self):
        """(function key, pickled function), pickled once per function."""
        return self._shared.export()


class _FunctionExport:
    """The pickled function and a fast signature check, shared by every options copy."""

    __slots__ = ("function", "pickled", "key", "signature", "calls")

    def __init__(self, function):
        self.function = function
        self.pickled = None
        self.key = None
        try:
            self.signature = inspect.signature(function)
        except (TypeError, ValueError):
            self.signature = None
        self.calls = CallCheck(self.signature)

    def check_call(self, args, kwargs):
        # Raises TypeError here, in the caller, exactly as a local call would.
        self.calls.check(args, kwargs)

    def export(self):
        if self.pickled is None:
            try:
                pickled = serialization.dumps(self.function)
            except Exception as exc:
                raise TypeError(
                    f"Could not serialize the function {self.function.__qualname__}: {exc}. "
                    "A remote function must be picklable by cloudpickle, including the "
                    "globals and closure variables it uses.") from exc
            self.key = function_key(pickled, self.function.__qualname__)
            self.pickled = pickled
        return self.key, self.pickled
