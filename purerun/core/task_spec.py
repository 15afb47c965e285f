"""TaskSpec: everything the node and a worker need to run one task or actor call."""

# Kinds of task.
NORMAL = 0
ACTOR_CREATION = 1
ACTOR_METHOD = 2


class Dep:
    """Stands in the pickled arguments for a top-level ObjectRef argument ``index``.

    The worker swaps it for the object's value; refs nested in containers stay refs.
    """

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __reduce__(self):
        return Dep, (self.index,)


class TaskSpec:
    """One task, as submitted.

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
        attempt: how many times it has been retried.
    """

    __slots__ = ("task_id", "name", "function_key", "args", "args_in_store", "deps", "contained",
                 "num_returns", "resources", "max_retries", "retry_exceptions", "max_calls",
                 "kind", "actor_id", "method", "job_id", "attempt", "extra")

    def __init__(self, task_id, name, function_key, args, args_in_store, deps, contained,
                 num_returns, resources, max_retries, retry_exceptions, max_calls,
                 kind=NORMAL, actor_id=None, method=None, job_id=None, attempt=0, extra=None):
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
        self.extra = extra

    def __reduce__(self):
        return TaskSpec, (self.task_id, self.name, self.function_key, self.args,
                          self.args_in_store, self.deps, self.contained, self.num_returns,
                          self.resources, self.max_retries, self.retry_exceptions,
                          self.max_calls, self.kind, self.actor_id, self.method, self.job_id,
                          self.attempt, self.extra)

    def return_ids(self):
        tid = self.task_id
        return [tid + i.to_bytes(4, "little") for i in range(self.num_returns)]

    def __repr__(self):
        return f"TaskSpec({self.name}, {self.task_id.hex()[:12]})"


# -- what every executor of tasks does the same way (workers and local mode) --------------------

def extract_deps(args, kwargs, ref_type):
    """Replace top-level ObjectRefs by ``Dep`` markers; nested refs stay refs.

    Returns:
        (args, kwargs, deps): new containers only where something was replaced, and the
        object ids in marker order.
    """
    deps = []
    if any(type(a) is ref_type for a in args):
        args = list(args)
        for i, a in enumerate(args):
            if type(a) is ref_type:
                args[i] = Dep(len(deps))
                deps.append(a._id)
    if kwargs and any(type(v) is ref_type for v in kwargs.values()):
        kwargs = dict(kwargs)
        for k, v in kwargs.items():
            if type(v) is ref_type:
                kwargs[k] = Dep(len(deps))
                deps.append(v._id)
    return args, kwargs, deps


def split_returns(spec, result):
    """The task's return values as a tuple of ``spec.num_returns`` items.

    Raises:
        ValueError: the result does not match num_returns.
    """
    n = spec.num_returns
    if n == 1:
        return (result,)
    if n == 0:
        if result is not None:
            raise ValueError(f"Task {spec.name} has num_returns=0 but returned "
                             f"{type(result).__name__}, not None.")
        return ()
    try:
        values = tuple(result)
    except TypeError:
        raise ValueError(f"Task {spec.name} has num_returns={n} but returned a "
                         f"non-iterable {type(result).__name__}.") from None
    if len(values) != n:
        raise ValueError(f"Task {spec.name} has num_returns={n} but returned "
                         f"{len(values)} values.")
    return values


def retryable(spec, exc):
    """Whether the task is re-run after raising ``exc`` (its retry_exceptions policy)."""
    policy = spec.retry_exceptions
    if not policy or spec.max_retries == 0 or not isinstance(exc, Exception):
        return False
    if policy is True:
        return True
    from purerun.core import serialization
    try:
        classes = serialization.deserialize(policy)
    except Exception:
        return False
    return isinstance(exc, tuple(classes))


def apply_env_vars(env_vars):
    """Apply a task's runtime_env env_vars to os.environ; return what restore_env needs."""
    import os
    saved = {name: os.environ.get(name) for name in env_vars}
    os.environ.update(env_vars)
    return saved


def restore_env(saved):
    import os
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
