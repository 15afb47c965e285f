"""TaskSpec: everything the node and a worker need to run one task or actor call."""

from purerun.core.object_ref import ObjectRef

# Kinds of task.
NORMAL = 0
ACTOR_CREATION = 1
ACTOR_METHOD = 2
# The name of a lease's task: a worker serving one driver's plain tasks (core/direct.py).
LEASE_NAME = "purerun.lease"

# TaskSpec.strategy for NodeAffinitySchedulingStrategy: (NODE_AFFINITY, node_id, soft).
NODE_AFFINITY = "NODE_AFFINITY"

# TaskSpec.generator: how a generator call hands out what it yields (Ray's num_returns names).
STREAMING = "streaming"
DYNAMIC = "dynamic"
# Yielded value k of a generator call is object ``item_id(task_id, k)``: return 0 is the
# call's own result (the end of a stream, or the DynamicObjectRefGenerator), items follow.
FIRST_ITEM_INDEX = 1


def item_id(task_id, k):
    """The object id of value ``k`` (0-based) that generator call ``task_id`` yields."""
    return task_id + (k + FIRST_ITEM_INDEX).to_bytes(4, "little")


class Dep:
    """Stands in the pickled arguments for a top-level ObjectRef argument ``index``.

    The worker swaps it for the object's value; refs nested in containers stay refs.
    """

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __reduce__(self):
        return Dep, (self.index,)


class ActorSpec:
    """What an actor's creation carries beyond a task's fields (``TaskSpec.actor``).

    Fields:
        class_name: the class's name, for errors.
        meta: the class's method table (``actor.ActorClassMeta``), handed to handles.
        name, namespace: the name it was registered under (None: anonymous), and the
            namespace asked for (None: the job's).
        detached: ``lifetime="detached"``: it outlives its creator and its handles.
        max_restarts: restarts left to give it (-1: without end).
        max_task_retries: the default retry budget of its calls (-1: without end).
        max_concurrency: calls it runs at once (threads, or coroutines if ``is_async``).
        concurrency_groups: group name -> its own limit.
        is_async: it has ``async def`` methods and runs them on one event loop.
        hold: the resources it keeps while alive, once ``__init__`` has returned.
        strategy: where it may be placed (``TaskSpec.strategy`` of its creation).
    """

    __slots__ = ("class_name", "meta", "name", "namespace", "detached", "max_restarts",
                 "max_task_retries", "max_concurrency", "concurrency_groups", "is_async",
                 "hold", "strategy")

    def __init__(self, *, class_name, meta=None, name=None, namespace=None, detached=False,
                 max_restarts=0, max_task_retries=0, max_concurrency=1,
                 concurrency_groups=None, is_async=False, hold=None, strategy=None):
        self.class_name = class_name
        self.meta = meta
        self.name = name
        self.namespace = namespace
        self.detached = detached
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.max_concurrency = max_concurrency
        self.concurrency_groups = concurrency_groups or {}
        self.is_async = is_async
        self.hold = hold
        self.strategy = strategy

    def __reduce__(self):
        return _actor_spec, (self.class_name, self.meta, self.name, self.namespace,
                             self.detached, self.max_restarts, self.max_task_retries,
                             self.max_concurrency, self.concurrency_groups, self.is_async,
                             self.hold, self.strategy)


def _actor_spec(class_name, meta, name, namespace, detached, max_restarts, max_task_retries,
                max_concurrency, concurrency_groups, is_async, hold, strategy):
    return ActorSpec(class_name=class_name, meta=meta, name=name, namespace=namespace,
                     detached=detached, max_restarts=max_restarts,
                     max_task_retries=max_task_retries, max_concurrency=max_concurrency,
                     concurrency_groups=concurrency_groups, is_async=is_async, hold=hold,
                     strategy=strategy)


class TaskSpec:
    """One task, as submitted. Built with keywords only.

    Fields:
        task_id: 16 bytes; return value i has object id ``task_id + i`` (see ids.object_id).
        name: the function's qualified name, for errors and logs.
        function_key: key of the pickled function in the node's function table.
        args: INLINE payload of the pickled ``(args, kwargs)`` with ``Dep`` markers, or None
            when there are no arguments or they were too large and sit in the store as the
            last entry of ``deps`` (``args_in_store``).
        deps: object ids whose values the task needs before it can run (top-level refs).
        contained: object ids of refs nested inside the arguments, kept alive while it runs.
        num_returns, resources (scheduling demand), max_retries, retry_exceptions (False,
        True, or pickled tuple of exception classes), max_calls.
        kind: NORMAL, ACTOR_CREATION or ACTOR_METHOD; actor_id and method for actors.
        job_id: 4 bytes, the submitting job.
        attempt: how many times it has been retried (for a creation: restarted).
        env_vars: runtime_env env_vars applied while it runs (for a creation: for the
            actor's whole life), or None.
        concurrency_group: an actor call's group chosen at the call (None: the method's).
        actor: the ActorSpec of an ACTOR_CREATION, else None.
        strategy: where it may run: None (the default: here if it fits, else a node that
            has room), ``"SPREAD"``, or ``(NODE_AFFINITY, node_id, soft)``.
        generator: None for a plain call; STREAMING (each yielded value is reported as it
            is made, as object ``item_id(task_id, k)``; return 0 is ready when the
            generator ends) or DYNAMIC (return 0 holds a DynamicObjectRefGenerator).
        backpressure: STREAMING only: the generator pauses while this many of its items
            are made and not yet read by the caller; -1: never.
    """

    __slots__ = ("task_id", "name", "function_key", "args", "args_in_store", "deps", "contained",
                 "num_returns", "resources", "max_retries", "retry_exceptions", "max_calls",
                 "kind", "actor_id", "method", "job_id", "attempt", "env_vars",
                 "concurrency_group", "actor", "strategy", "generator", "backpressure")

    def __init__(self, *, task_id, name, function_key, args, args_in_store, deps, contained,
                 num_returns=1, resources=None, max_retries=0, retry_exceptions=False,
                 max_calls=0, kind=NORMAL, actor_id=None, method=None, job_id=None, attempt=0,
                 env_vars=None, concurrency_group=None, actor=None, strategy=None,
                 generator=None, backpressure=-1):
        self.task_id = task_id
        self.name = name
        self.function_key = function_key
        self.args = args
        self.args_in_store = args_in_store
        self.deps = deps
        self.contained = contained
        self.num_returns = num_returns
        self.resources = resources
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.max_calls = max_calls
        self.kind = kind
        self.actor_id = actor_id
        self.method = method
        self.job_id = job_id
        self.attempt = attempt
        self.env_vars = env_vars
        self.concurrency_group = concurrency_group
        self.actor = actor
        self.strategy = strategy
        self.generator = generator
        self.backpressure = backpressure

    def __reduce__(self):
        # Positional on the wire: this is pickled for every task, and keywords cost.
        return _task_spec, (self.task_id, self.name, self.function_key, self.args,
                            self.args_in_store, self.deps, self.contained, self.num_returns,
                            self.resources, self.max_retries, self.retry_exceptions,
                            self.max_calls, self.kind, self.actor_id, self.method, self.job_id,
                            self.attempt, self.env_vars, self.concurrency_group, self.actor,
                            self.strategy, self.generator, self.backpressure)

    def return_ids(self):
        tid = self.task_id
        return [tid + i.to_bytes(4, "little") for i in range(self.num_returns)]

    def __repr__(self):
        return f"TaskSpec({self.name}, {self.task_id.hex()[:12]})"


def creation_spec(actor_id, function_key, actor, resources, env_vars, job_id, *, args,
                  args_in_store, deps, contained):
    """The TaskSpec of an actor's creation: its ``__init__`` as a task, id ``actor_id``."""
    return TaskSpec(task_id=actor_id, name=actor.class_name + ".__init__",
                    function_key=function_key, args=args, args_in_store=args_in_store,
                    deps=deps, contained=contained, resources=resources, kind=ACTOR_CREATION,
                    actor_id=actor_id, job_id=job_id, env_vars=env_vars, actor=actor,
                    strategy=actor.strategy)


def _task_spec(task_id, name, function_key, args, args_in_store, deps, contained, num_returns,
               resources, max_retries, retry_exceptions, max_calls, kind, actor_id, method,
               job_id, attempt, env_vars, concurrency_group, actor, strategy, generator=None,
               backpressure=-1):
    return TaskSpec(task_id=task_id, name=name, function_key=function_key, args=args,
                    args_in_store=args_in_store, deps=deps, contained=contained,
                    num_returns=num_returns, resources=resources, max_retries=max_retries,
                    retry_exceptions=retry_exceptions, max_calls=max_calls, kind=kind,
                    actor_id=actor_id, method=method, job_id=job_id, attempt=attempt,
                    env_vars=env_vars, concurrency_group=concurrency_group, actor=actor,
                    strategy=strategy, generator=generator, backpressure=backpressure)


# -- what every submitter does the same way (Client and local mode) ------------------------------

def extract_deps(args, kwargs):
    """Replace top-level ObjectRefs by ``Dep`` markers; nested refs stay refs.

    Returns:
        (args, kwargs, deps): new containers only where something was replaced, and the
        object ids in marker order.
    """
    deps = []
    if any(type(a) is ObjectRef for a in args):
        args = list(args)
        for i, a in enumerate(args):
            if type(a) is ObjectRef:
                args[i] = Dep(len(deps))
                deps.append(a._id)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        kwargs = dict(kwargs)
        for k, v in kwargs.items():
            if type(v) is ObjectRef:
                kwargs[k] = Dep(len(deps))
                deps.append(v._id)
    return args, kwargs, deps

