"""The task lifecycle: one record per submitted task, and the rules for retry and cancel.

::

    submitted ──(arguments ready, resources fit)──▶ running ──returned──▶ done
        │                                            │  raised, retry_exceptions allow ──▶ submitted
        │                                            │  worker died, retries left ─────▶ submitted
        │                                            │  worker died, none left ────────▶ failed
        └── cancel ──▶ cancelled                     └── cancel ──▶ interrupted (SIGINT, or
                                                                      the worker killed: force)

Pure: no socket, process or clock. NodeState owns a ``TaskTable`` and asks it what each
event means for a task; the table answers with plain values and keeps the records.

Retries. ``spec.attempt`` counts the runs so far beyond the first; it is the one retry
counter (the budget left is derived from it, never kept beside it). ``max_retries == -1``
retries without end.
"""

from purerun import exceptions
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD

__all__ = ["Task", "TaskTable", "retries_left"]


def retries_left(spec):
    """How many more runs ``spec`` may have after this one (-1: without end)."""
    if spec.max_retries is None or spec.max_retries < 0:
        return -1
    return max(0, spec.max_retries - spec.attempt)


class Task:
    """One submitted task or actor call, from submit until its results are sealed."""

    __slots__ = ("spec", "owner", "worker_id", "cancelled", "force_cancelled", "children",
                 "node", "parent", "span")

    def __init__(self, spec, owner):
        self.spec = spec                #: its TaskSpec
        self.owner = owner              #: the token of the process that submitted it
        self.worker_id = None           #: the worker running it, None while not running
        self.cancelled = False          #: cancel() reached it
        self.force_cancelled = False    #: ... with force=True (its worker is killed)
        self.children = None            #: ids of tasks it submitted (for recursive cancel)
        self.node = None                #: the RemoteNode it was placed on, None: this node
        self.parent = None              #: id of the task that submitted it, if any
        self.span = None                #: (start, end) epoch seconds of its last run

    def can_retry(self):
        return retries_left(self.spec) != 0

    def retry(self):
        """Count one more attempt; the task goes back to waiting for a worker."""
        self.spec.attempt += 1
        self.worker_id = None

    def __repr__(self):
        return f"Task({self.spec.name}, {self.spec.task_id.hex()[:12]})"


class TaskTable:
    """Every task this node knows and has not finished: task id -> Task."""

    def __init__(self):
        self.tasks = {}

    def __len__(self):
        return len(self.tasks)

    def get(self, task_id):
        return self.tasks.get(task_id)

    def add(self, spec, owner, parent=None):
        """Record a submitted task; ``parent`` is the submitter's running task, if any."""
        task = self.tasks[spec.task_id] = Task(spec, owner)
        if parent is not None:
            task.parent = parent.spec.task_id
        if parent is not None and parent.spec.kind != ACTOR_CREATION:
            if parent.children is None:
                parent.children = []
            parent.children.append(spec.task_id)
        return task

    def remove(self, task_id):
        return self.tasks.pop(task_id, None)

    def of_job(self, job_id):
        """The tasks and actor calls of a job (not its actor creations), oldest first."""
        return [task for task in self.tasks.values()
                if task.spec.job_id == job_id and task.spec.kind != ACTOR_CREATION]

    def cancel(self, task_id, force, recursive):
        """Mark a task (and, with ``recursive``, its live descendants) cancelled.

        Returns:
            The tasks newly marked, the named one first. A task that is finished, unknown or
            already cancelled is left out (cancel is idempotent).
        """
        marked = []
        stack = [task_id]
        while stack:
            task = self.tasks.get(stack.pop())
            if task is None or task.cancelled:
                continue
            task.cancelled = True
            task.force_cancelled = bool(force) and task.spec.kind != ACTOR_METHOD
            marked.append(task)
            if recursive and task.children:
                stack.extend(reversed(task.children))
        return marked

    @staticmethod
    def lost_error(task):
        """What a task whose worker died fails with, when it is not retried."""
        if task.cancelled:
            if task.force_cancelled:
                return exceptions.WorkerCrashedError(
                    "The task was cancelled with force=True; its worker was killed.")
            return exceptions.TaskCancelledError(task.spec.task_id.hex())
        spec = task.spec
        return exceptions.WorkerCrashedError(
            f"The worker running task {spec.name} died unexpectedly (killed, crashed, or "
            f"out of memory); it was tried {spec.attempt + 1} time(s) "
            f"(max_retries={spec.max_retries}).")

    @staticmethod
    def retried_after_loss(task):
        """Whether a task whose worker died runs again."""
        return not task.cancelled and task.can_retry()

    @staticmethod
    def retried_after_error(task, retry):
        """Whether a task that raised runs again (``retry``: its retry_exceptions allow)."""
        return retry and not task.cancelled and task.can_retry()
