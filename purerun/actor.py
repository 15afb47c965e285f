"""Actors: ActorClass (``@purerun.remote`` on a class), ActorHandle and ActorMethod, as in Ray.

An actor is a worker process dedicated to one instance of the class. Its handle names it by
actor id and holds an ObjectRef to the "actor object" (the creation task's return value):
the node counts that object's references like any other's, so when no handle is left in any
process — nor in any pending task or stored object — the actor is stopped, unless it is named
or detached.
"""

import inspect

from purerun import options as _options
from purerun.core import context, job_setup, serialization
from purerun.core.call_check import CallCheck
from purerun.core.client import function_key
from purerun.core.ids import ActorID
from purerun.core.object_ref import ObjectRefGenerator
from purerun.core.task_spec import STREAMING
from purerun.exceptions import AsyncioActorExit, _ActorExit


class ActorClassMeta:
    """What any process needs to call an actor's methods (travels inside handles).

    Fields:
        class_name, module: for repr and errors.
        methods: name -> dict of the method's validated ``@purerun.method`` options.
        is_async: the class has an ``async def`` method: it runs on an event loop.
        signatures: name -> inspect.Signature without ``self`` (None where unknown), so
            that every handle, wherever it travelled, checks call arguments in the caller.
    """

    __slots__ = ("class_name", "module", "methods", "is_async", "signatures", "_call_fields",
                 "_checks")

    def __init__(self, class_name, module, methods, is_async, signatures=None):
        self.class_name = class_name
        self.module = module
        self.methods = methods
        self.is_async = is_async
        self.signatures = signatures or {}
        self._call_fields = {}  # method name -> options.method_fields(...), made once
        self._checks = {}       # method name -> CallCheck of its signature, made once

    def check_call(self, name, args, kwargs):
        """Raise TypeError (in the caller) if method ``name`` cannot take these arguments."""
        check = self._checks.get(name)
        if check is None:
            check = self._checks[name] = CallCheck(self.signatures.get(name))
        check.check(args, kwargs)

    def call_fields(self, name):
        """The TaskSpec fields of a call of method ``name`` with its declared options."""
        fields = self._call_fields.get(name)
        if fields is None:
            fields = self._call_fields[name] = _options.method_fields(
                self.methods.get(name, {}))
        return fields

    def __reduce__(self):
        return ActorClassMeta, (self.class_name, self.module, self.methods, self.is_async,
                                self.signatures)

    @classmethod
    def of(cls, target):
        methods = {}
        signatures = {}
        # An async def __init__ makes an asyncio actor too; it is awaited on the actor's
        # loop before any call runs.
        is_async = inspect.iscoroutinefunction(inspect.getattr_static(target, "__init__", None))
        for name, member in inspect.getmembers(target):
            if not callable(member) or (name.startswith("__") and name != "__call__"):
                continue
            if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member):
                is_async = True
            opts = dict(getattr(member, "__purerun_method_options__", {}))
            if opts.get("num_returns") is None and (inspect.isgeneratorfunction(member) or
                                                    inspect.isasyncgenfunction(member)):
                opts["num_returns"] = STREAMING  # as in Ray: a generator method streams
            methods[name] = opts
            signatures[name] = _signature(member, drop_self=True)
        return cls(target.__name__, target.__module__, methods, is_async, signatures)


class ActorClass:
    """What ``@purerun.remote`` makes of a class: create actors with ``Cls.remote(...)``."""

    def __init__(self, cls, actor_options, _shared=None):
        self._cls = cls
        self._options = actor_options
        self._shared = _shared if _shared is not None else _ClassExport(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of "
                        f"'{self.__name__}()', use '{self.__name__}.remote()'.")

    def options(self, **actor_options):
        """A copy of this actor class with some options changed (name, num_cpus, ...).

        Raises:
            ValueError / TypeError: an unknown option, or an invalid value for one.
        """
        checked = _options.validate_options("actor", actor_options, in_options_call=True)
        return ActorClass(self._cls, _options.merge(self._options, checked),
                          _shared=self._shared)

    def remote(self, *args, **kwargs):
        """Create an actor; its ``__init__`` runs in the background.

        Args:
            *args, **kwargs: the arguments of ``__init__``.

        Returns:
            The new actor's ActorHandle, at once. With ``get_if_exists=True`` and a live
            actor of that name, a handle to that actor instead.

        Raises:
            TypeError: the arguments do not match ``__init__``, or the class or an argument
                cannot be serialized.
            ValueError: ``name`` is taken in the namespace (and get_if_exists is False).
        """
        self._shared.check_init(args, kwargs)
        client = context.get_or_start()
        actor_options = self._options
        if actor_options.get("lifetime") is None and _job_default_lifetime(client):
            actor_options = {**actor_options, "lifetime": "detached"}
        fields = _options.actor_fields(actor_options, self._meta)
        actor_id, meta, actor_ref = client.create_actor(
            self, fields.spec, fields.resources, fields.env_vars, fields.get_if_exists,
            args, kwargs)
        return ActorHandle(actor_id, meta, actor_ref, fields.max_pending_calls)

    def bind(self, *args, **kwargs):
        """Bind ``__init__``'s arguments into a task graph node, run with ``.execute()``.

        Each ``execute`` of a graph holding the node creates one actor from it, which its
        method nodes (``node.method.bind(...)``) call.

        Args:
            *args, **kwargs: the arguments of ``__init__`` (values or DAGNodes).

        Returns:
            A ``purerun.dag.ClassNode``.

        Raises:
            TypeError: the arguments do not match ``__init__``.
        """
        from purerun.dag.class_node import ClassNode  # the dag package imports us
        self._shared.check_init(args, kwargs)
        return ClassNode(self, args, kwargs, self._options)

    def _export(self):
        return self._shared.export()

    @property
    def _meta(self):
        return self._shared.meta

    def __repr__(self):
        return f"ActorClass({self.__module__}.{self.__qualname__})"


def _job_default_lifetime(client):
    """Whether the job's JobConfig makes actors detached unless they say otherwise."""
    inherited = getattr(client, "inherited_env_vars", None) or \
        getattr(client, "_inherited_env_vars", None)
    env = inherited() if inherited is not None else None
    return bool(env) and env.get(job_setup.DEFAULT_ACTOR_LIFETIME_ENV) == "detached"


class _ClassExport:
    """The pickled class, its metadata and the __init__ signature, shared by option copies."""

    __slots__ = ("cls", "pickled", "key", "meta", "init_signature")

    def __init__(self, cls):
        self.cls = cls
        self.pickled = None
        self.key = None
        self.meta = ActorClassMeta.of(cls)
        self.init_signature = _signature(cls.__init__, drop_self=True) \
            if "__init__" in _all_dicts(cls) else None

    def check_init(self, args, kwargs):
        if self.init_signature is not None:
            self.init_signature.bind(*args, **kwargs)
        elif args or kwargs:
            raise TypeError(f"{self.cls.__name__}() takes no arguments")

    def export(self):
        if self.pickled is None:
            try:
                pickled = serialization.dumps(self.cls)
            except Exception as exc:
                raise TypeError(f"Could not serialize the actor class {self.cls.__qualname__}:"
                                f" {exc}") from exc
            self.key = function_key(pickled, self.cls.__qualname__)
            self.pickled = pickled
        return self.key, self.pickled


def _all_dicts(cls):
    names = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        names.update(vars(klass))
    return names


def _signature(fn, drop_self):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if drop_self and not isinstance(inspect.getattr_static(fn, "__self__", None), type):
        params = list(sig.parameters.values())
        if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                         inspect.Parameter.POSITIONAL_OR_KEYWORD):
            sig = sig.replace(parameters=params[1:])
    return sig


class ActorHandle:
    """A handle to an actor: call methods with ``handle.method.remote(...)``.

    Handles can be passed to tasks and other actors, and stored in objects.
    """

    def __init__(self, actor_id, meta, actor_ref, max_pending_calls=-1):
        self._actor_id = actor_id
        self._meta = meta
        self._actor_ref = actor_ref          # keeps the actor alive while the handle lives
        self._max_pending_calls = max_pending_calls
        self._pending = []                   # first return refs of calls in flight (if capped)

    def __getattr__(self, name):
        meta = self.__dict__.get("_meta")
        if meta is not None and name in meta.methods:
            return ActorMethod(self, name, meta.methods[name], meta.call_fields(name))
        if name == "__ray_terminate__":
            return ActorMethod(self, name, {}, _TERMINATE_FIELDS)
        if name == "__ray_ready__":
            # True once __init__ has run; the actor's creation error otherwise.
            return ActorMethod(self, name, {}, _TERMINATE_FIELDS)
        cls = meta.class_name if meta is not None else "actor"
        raise AttributeError(f"'ActorHandle' object for {cls} has no method '{name}'")

    def __reduce__(self):
        return _rebuild_handle, (self._actor_id, self._meta, self._actor_ref,
                                 self._max_pending_calls)

    def __hash__(self):
        return hash(self._actor_id)

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __repr__(self):
        return f"Actor({self._meta.class_name}, {self._actor_id.hex()})"

    @property
    def _ray_actor_id(self):
        return ActorID(self._actor_id)


def _rebuild_handle(actor_id, meta, actor_ref, max_pending_calls=-1):
    return ActorHandle(actor_id, meta, actor_ref, max_pending_calls=max_pending_calls)


class ActorMethod:
    """``handle.method``: call it with ``.remote(...)``; ``.options(num_returns=...)``."""

    def __init__(self, handle, name, method_options, fields):
        self._handle = handle
        self._name = name
        self._method_options = method_options  # validated method options
        self._fields = fields                  # options.method_fields(method_options)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'object.{self._name}()', try 'object.{self._name}.remote()'.")

    def options(self, **method_options):
        """A copy of this method with some call options changed.

        Args:
            **method_options: any option ``@purerun.method`` takes (``num_returns``,
                ``max_task_retries``, ``retry_exceptions``, ``concurrency_group``,
                ``name``, ...); they override the method's declared ones.

        Returns:
            An object with ``.remote(...)`` (and ``.options(...)``).

        Raises:
            ValueError / TypeError: an unknown option, or an invalid value for one.
        """
        checked = _options.validate_options("method", method_options, in_options_call=True)
        merged = _options.merge(self._method_options, checked)
        return ActorMethod(self._handle, self._name, merged, _options.method_fields(merged))

    def remote(self, *args, **kwargs):
        """Call the method on the actor.

        Args:
            *args, **kwargs: the method's arguments (without ``self``).

        Returns:
            An ObjectRef to the result; a list of ``num_returns`` ObjectRefs when
            ``num_returns`` > 1, and None when it is 0. An ``ObjectRefGenerator`` for a
            generator method (``num_returns="streaming"``, the default for one).

        Raises:
            TypeError: the arguments do not match the method's signature, or an argument
                cannot be serialized.
            PendingCallsLimitExceeded: the handle's ``max_pending_calls`` calls are in
                flight.
        """
        handle = self._handle
        handle._meta.check_call(self._name, args, kwargs)
        fields = self._fields
        refs = context.get_or_start().submit_actor_method(handle, self._name, fields, args,
                                                          kwargs)
        if fields["generator"] == STREAMING:
            return ObjectRefGenerator(refs[0], fields["backpressure"])
        num_returns = fields["num_returns"]
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs

    def bind(self, *args, **kwargs):
        """Bind arguments into a task graph node calling this method of this actor.

        Returns:
            A ``purerun.dag.ClassMethodNode``; run its graph with ``.execute()``.

        Raises:
            TypeError: the arguments do not match the method's signature.
        """
        from purerun.dag.class_node import ClassMethodNode  # the dag package imports us
        self._handle._meta.check_call(self._name, args, kwargs)
        declared = self._handle._meta.methods.get(self._name, {})
        given = {k: v for k, v in self._method_options.items() if declared.get(k) != v}
        return ClassMethodNode(self._name, args, kwargs, given,
                               {"parent_class_node": self._handle})


# __ray_terminate__ (Ray's name): ends the actor after the calls before it, as exit_actor().
_TERMINATE_FIELDS = _options.method_fields({})


def exit_actor():
    """Exit the current actor from inside one of its methods (no restart).

    Raises:
        TypeError: not called from inside an actor.
    """
    client = context.client
    if client is None or getattr(client, "actor_id", None) is None:
        raise TypeError("exit_actor API is called on a non-actor worker.")
    raise _ActorExit() if not client.actor_is_async else AsyncioActorExit()


def make_actor_class(cls, actor_options):
    return ActorClass(cls, actor_options)
