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
