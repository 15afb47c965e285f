"""The node's local scheduler: a pure state machine, events in, actions out.

::

    node process (sockets, processes)             Scheduler (this module, no I/O)
    ─────────────────────────────────             ────────────────────────────────
    SubmitTask, CancelTask          ──────▶       tasks:   waiting (for objects)
    ObjectReady                     ──────▶                → ready (a queue per demand)
    PrestartWorkers                 ──────▶                → running → gone
    WorkerStarted, TaskFinished     ──────▶       workers: (starting) → idle ⇄ busy → actor
    WorkerBlocked, WorkerUnblocked  ──────▶                retiring or released → exiting
    WorkerRetiring, WorkerReleased  ──────▶                any of them → gone
    WorkerDied                      ──────▶       bundles: pending → reserved → gone
    ReserveBundle, ReturnBundle     ──────▶
                                    ◀──────       StartWorker, Dispatch, TaskLost,
                                                  TaskCancelled, Infeasible,
                                                  BundleReserved

The node process is the only caller. It turns what happens on its sockets and to its child
processes into events, calls ``Scheduler.handle(event)``, and carries out the returned actions
in order. The scheduler never sees a socket, a thread, a clock or a process: tests drive it
event by event and a task goes from submit to dispatch to finish in a few microseconds.

The scheduler reads only its events and writes only its actions. It owns the node's resource
accounting (what is available right now, which GPU ids are taken) and the bookkeeping of which
task runs on which worker; the node owns everything else (task specs, processes, objects).

Policy. A submitted task waits until every object it needs exists, then joins the queue of its
*scheduling class*: all ready tasks with the same resource demand share one FIFO queue. Only the
head of each queue is ever examined, so an event costs time proportional to the number of
distinct demands (a handful), never to the number of pending tasks. A head whose demand does
not fit right now blocks only its own queue; when a worker becomes free the queues are served
round-robin so one busy class cannot starve another. Whenever an event frees a worker or a
resource, ready tasks are dispatched at once. A worker process is requested only for a ready
task that fits the free resources and finds no idle worker, within two caps: at most
``max_starting_workers`` processes starting at once, and at most ``max_workers`` processes in
the task pool (actor workers and workers blocked in ``get``/``wait`` do not count, since each
of them waits on work that cannot progress without another worker). A task whose demand can
never fit this node is reported once as ``Infeasible`` and set aside, out of every queue.

Amounts are kept as integers in units of 1/``RESOURCE_UNIT`` (as Ray does), so fractional
demands add and subtract exactly: ten tasks of 0.1 CPU free exactly one CPU.
"""

from __future__ import annotations

from collections import deque
from typing import Hashable, Mapping, Optional, Sequence

__all__ = [
    "RESOURCE_UNIT",
    "Scheduler",
    # events
    "Event",
    "SubmitTask",
    "CancelTask",
    "ObjectReady",
    "PrestartWorkers",
    "WorkerStarted",
    "TaskFinished",
    "WorkerBlocked",
    "WorkerUnblocked",
    "IdleTick",
    "WorkerRetiring",
    "WorkerReleased",
    "WorkerDied",
    "ReserveBundle",
    "ReturnBundle",
    # actions
    "Action",
    "StartWorker",
    "RetireWorker",
    "Dispatch",
    "TaskLost",
    "TaskCancelled",
    "Infeasible",
    "BundleReserved",
]

# Resource amounts are stored as integer multiples of 1/RESOURCE_UNIT: Ray's granularity
# (0.0001), fine enough for any fractional demand and exact under addition, unlike floats.
RESOURCE_UNIT = 10_000


# ─── messages ────────────────────────────────────────────────────────────────────────────────


class _Message:
    """Base of events and actions: plain records with slots, compared field by field."""

    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # some fields are dicts


class Event(_Message):
    """Something the node tells the scheduler."""

    __slots__ = ()


class Action(_Message):
    """Something the scheduler asks the node to do."""

    __slots__ = ()


class SubmitTask(Event):
    """A task (or, with ``dedicated=True``, an actor creation) asks to run on this node.

    Args:
        task_id: Any hashable id, unique among pending tasks. A task the scheduler reported as
            lost may be submitted again under the same id.
        resources: The demand used to place the task, e.g. ``{"CPU": 1, "GPU": 0.5}``.
            Zero entries may be present or absent.
        missing_deps: Ids of the objects the task needs that do not exist yet. The node computes
            this at submit time; each one must later be announced by ``ObjectReady``.
        dedicated: The worker stays reserved for this task after it returns (an actor lives
            there) until ``WorkerReleased`` or ``WorkerDied``.
        hold: For a dedicated task, what the actor keeps holding once its creation task has
            finished; ``None`` means the same as ``resources``. Every amount must be at most
            the one in ``resources``, and a GPU amount must be zero or equal to it (the actor
            keeps the GPU ids it was given).
    """

    __slots__ = ("task_id", "resources", "missing_deps", "dedicated", "hold")

    def __init__(
        self,
        task_id: Hashable,
        resources: Mapping[str, float],
        missing_deps: frozenset | set = frozenset(),
        dedicated: bool = False,
        hold: Optional[Mapping[str, float]] = None,
    ) -> None:
        self.task_id = task_id
        self.resources = resources
        self.missing_deps = missing_deps
        self.dedicated = dedicated
        self.hold = hold


class CancelTask(Event):
    """Drop a task that has not been dispatched yet (answered by ``TaskCancelled``).

    A task that is running, finished or unknown is left alone and nothing is returned: the
    node stops a running task by other means.
    """

    __slots__ = ("task_id",)

    def __init__(self, task_id: Hashable) -> None:
        self.task_id = task_id


class ObjectReady(Event):
    """An object some pending tasks wait for now exists.

    A failed object counts as ready: the node fails the task when it sees the error.
    Objects no pending task waits for are ignored (the scheduler does not remember them).
    """

    __slots__ = ("object_id",)

    def __init__(self, object_id: Hashable) -> None:
        self.object_id = object_id


class PrestartWorkers(Event):
    """Ask for ``min_idle_workers`` warm workers now, before any task arrives.

    Optional: every other event tops the idle pool up as well; this one exists so the node can
    start its first workers right after it starts, instead of at the first submit.
    """

    __slots__ = ()


class WorkerStarted(Event):
    """A worker process has connected and is idle. The node chooses the id (any hashable).

    Normally the answer to a ``StartWorker``; a worker the node started on its own (e.g. to
    have warm workers at start-up) is welcome too and simply joins the idle ones.
    """

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id


class TaskFinished(Event):
    """The task running on this worker returned or raised.

    Its resources are released and a non-dedicated worker becomes idle. A dedicated worker
    switches from the task's ``resources`` to its ``hold`` and stays reserved for the actor.
    """

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id


class WorkerBlocked(Event):
    """The task on this worker waits in ``get``/``wait``: its CPU is lent to other tasks.

    Blocks nest (a threaded actor may have several callers blocked); the CPU comes back at
    the matching last ``WorkerUnblocked``.
    """

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id


class WorkerUnblocked(Event):
    """The task on this worker resumed: it takes its CPU back, even if that oversubscribes."""

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id


class WorkerRetiring(Event):
    """This worker will exit (e.g. ``max_calls`` reached): never give it another task.

    The node still sends ``WorkerDied`` when the process is gone.
    """

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id


class WorkerReleased(Event):
    """The actor on this dedicated worker ended on purpose: its resources are released.

    The node stops the process and then sends ``WorkerDied``, which reports no lost task.
    """

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id


class WorkerDied(Event):
    """A worker process is gone (crash, kill or expected exit).

    Everything it held is released, and ``TaskLost`` reports the task that was running there;
    for a dedicated worker that is the actor's creation task, as long as the actor was not
    released, whether or not the creation had finished.

    The node sends exactly one ``WorkerDied`` per process it started. A process that dies
    before it connected (no ``WorkerStarted`` was sent for it) is reported with an id the
    scheduler has not seen: it is counted off the starting workers.
    """

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id


class IdleTick(Event):
    """One idle-check interval passed (the node sends one every so often).

    A pool worker idle through ``retire_idle_after`` ticks in a row is retired
    (``RetireWorker``), oldest idle first, while the pool holds more workers than it keeps:
    as many as the node has CPUs, and at least ``min_idle_workers``. A burst of blocked
    tasks can grow the pool far past the CPU count; this is how it shrinks back.
    """

    __slots__ = ()


class RetireWorker(Action):
    """Stop this idle worker's process: the pool does not need it. Send ``WorkerDied`` once
    it is gone (no task is lost)."""

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id
class ReserveBundle(Event):
    """Reserve a placement group's bundle here, as soon as its resources are free.

    Reserving takes ``resources`` off what is free (the totals stay: the node still has
    them) and adds ``provides`` (the group's own resource names) to the totals and to what
    is free, so that only tasks asking for those names run in it. Answered by
    ``BundleReserved`` once done, at once if the resources are free now. Pending
    reservations are served before any task, in the order they came.

    Args:
        key: Any hashable id of the bundle, unique among bundles here.
        resources: What the bundle holds, e.g. ``{"CPU": 2}``.
        provides: The resources it offers once reserved (see placement_groups).
    """

    __slots__ = ("key", "resources", "provides")

    def __init__(self, key: Hashable, resources: Mapping[str, float],
                 provides: Mapping[str, float]) -> None:
        self.key = key
        self.resources = resources
        self.provides = provides


class ReturnBundle(Event):
    """Give a bundle back: pending, it is dropped; reserved, what it offered goes and what
    it held is free again.

    Workers still holding some of what it offered (the node kills them) stop counting it
    at once, so nothing is counted twice when their death comes.
    """

    __slots__ = ("key",)

    def __init__(self, key: Hashable) -> None:
        self.key = key


class StartWorker(Action):
    """Start one worker process; send ``WorkerStarted`` when it connects, or ``WorkerDied``
    with a fresh id if it never does."""

    __slots__ = ()


class Dispatch(Action):
    """Run this task on this (idle) worker; its resources are now held.

    ``gpu_ids`` is the tuple of GPU ids assigned to it (empty when it asks for no GPU).
    """

    __slots__ = ("task_id", "worker_id", "gpu_ids")

    def __init__(self, task_id: Hashable, worker_id: Hashable, gpu_ids: tuple = ()) -> None:
        self.task_id = task_id
        self.worker_id = worker_id
        self.gpu_ids = gpu_ids


class TaskLost(Action):
    """The worker running this task died; the node retries or fails it."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: Hashable) -> None:
        self.task_id = task_id


class TaskCancelled(Action):
    """This pending task was removed before it was dispatched."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: Hashable) -> None:
        self.task_id = task_id


class Infeasible(Action):
    """This task's demand can never fit this node; reported once, at submit.

    The task stays pending (out of every queue) until the node cancels it, e.g. after
    forwarding it to a node that can run it.
    """

    __slots__ = ("task_id", "resources")

    def __init__(self, task_id: Hashable, resources: Mapping[str, float]) -> None:
        self.task_id = task_id
        self.resources = resources


class BundleReserved(Action):
    """This bundle is reserved now: tasks asking for what it provides may run."""

    __slots__ = ("key",)

    def __init__(self, key: Hashable) -> None:
        self.key = key


# StartWorker has no fields: one shared instance saves an allocation per request.
_START_WORKER = StartWorker()


# ─── internal state ──────────────────────────────────────────────────────────────────────────

# A shape is a resource demand in scheduler form: a tuple of (name, units) pairs, sorted by
# name, zero amounts left out. It is hashable (the key of a scheduling class) and iterates
# faster than a dict.

# Task states. A task leaves the scheduler when it is dispatched (the worker then refers to
# it), cancelled or lost.
_WAITING = "waiting"  # some objects it needs do not exist yet
_READY = "ready"  # in its class's queue
_INFEASIBLE = "infeasible"  # can never fit this node; in no queue
_RUNNING = "running"  # dispatched to a worker
_GONE = "gone"  # finished, lost or cancelled (a cancelled task may linger in a queue: _head)

# Worker states. A starting worker has no record: it is only counted (``_starting``).
_IDLE = "idle"  # connected, no task, in ``_idle``
_BUSY = "busy"  # running a task
_ACTOR = "actor"  # dedicated: its creation task returned, the actor lives there
_EXITING = "exiting"  # retiring or released: waiting for the process to be gone


class _SchedulingClass:
    """Every ready task with one resource demand: a FIFO queue of which only the head is read."""

    __slots__ = ("shape", "gpu", "feasible", "queue", "group_gpu")

    def __init__(self, shape: tuple, gpu: int, feasible: bool) -> None:
        self.shape = shape
        self.gpu = gpu  # GPU units in the demand (0: none), checked against per-id capacity
        self.feasible = feasible
        self.queue: deque[_Task] = deque()
        # The placement-group GPU resource its GPU ids come from (see ReserveBundle), or None.
        self.group_gpu = _group_gpu_of(shape)


class _Task:
    __slots__ = ("task_id", "cls", "dedicated", "hold", "missing", "state")

    def __init__(self, task_id: Hashable, cls: _SchedulingClass, dedicated: bool, hold: tuple):
        self.task_id = task_id
        self.cls = cls
        self.dedicated = dedicated
        self.hold = hold  # shape kept after the task returns (dedicated tasks only)
        self.missing: Optional[set] = None  # objects still awaited (while _WAITING)
        self.state = _READY


class _Worker:
    __slots__ = (
        "worker_id",
        "state",
        "task",
        "dedicated",
        "held",
        "gpu_ids",
        "gpu_share",
        "blocked",
        "retiring",
        "pooled",
        "idle_ticks",
    )

    def __init__(self, worker_id: Hashable) -> None:
        self.worker_id = worker_id
        self.state = _IDLE
        self.task: Optional[_Task] = None  # for an actor: its creation task, until released
        self.dedicated = False
        self.held: tuple = ()  # shape this worker holds
        self.gpu_ids: tuple = ()
        self.gpu_share = 0  # units taken from each of gpu_ids
        # > 0 while the task waits in get/wait. invariant: while blocked, the CPU in ``held``
        # (and a bundle's CPU, see _lends) is counted as available (lent), and is not given
        # back again on release.
        self.blocked = 0
        self.retiring = False
        # Counted in Scheduler._num_pool_workers (see _update_pool_count).
        self.pooled = False
        self.idle_ticks = 0  # IdleTicks seen since it last became idle


# ─── the state machine ───────────────────────────────────────────────────────────────────────


class Scheduler:
    """The local scheduler of one node: decides which worker runs which task.

    Args:
        resources: Totals of this node, e.g. ``{"CPU": 2, "GPU": 1, "memory": 8e9}``.
        gpu_ids: Ids of the node's GPUs. The GPU total is ``len(gpu_ids)``; if ``gpu_ids`` is
            empty and ``resources`` has ``GPU: n``, the ids are ``0 .. n-1``.
        max_workers: Cap on task-pool processes (starting ones included; actor workers and
            blocked workers excluded). A safety limit, not a tuning knob.
        max_starting_workers: Cap on processes starting at once.
        min_idle_workers: Keep this many workers idle or starting, for a fast first task.
        retire_idle_after: Retire pool workers beyond the ones kept once idle this many
            ``IdleTick`` s in a row; 0 (the default) never retires them.

    Raises:
        ValueError: A negative amount, a GPU total that disagrees with ``gpu_ids``, or caps
            that are not positive.
    """

    def __init__(
        self,
        resources: Mapping[str, float],
        gpu_ids: Sequence[Hashable] = (),
        *,
        max_workers: int,
        max_starting_workers: int,
        min_idle_workers: int = 0,
        retire_idle_after: int = 0,
    ) -> None:
        if max_workers < 1 or max_starting_workers < 1:
            raise ValueError(
                f"max_workers ({max_workers}) and max_starting_workers "
                f"({max_starting_workers}) must be at least 1"
            )
        if min_idle_workers < 0:
            raise ValueError(f"min_idle_workers must be >= 0, got {min_idle_workers}")
        totals = dict(resources)
        gpu_ids = tuple(gpu_ids)
        if gpu_ids:
            if totals.get("GPU", len(gpu_ids)) != len(gpu_ids):
                raise ValueError(
                    f"resources say GPU={totals['GPU']} but {len(gpu_ids)} gpu_ids were given"
                )
            totals["GPU"] = len(gpu_ids)
        elif totals.get("GPU", 0):
            count = totals["GPU"]
            if count != int(count):
                raise ValueError(f"the GPU total must be a whole number, got {count}")
            gpu_ids = tuple(range(int(count)))

        self._max_workers = max_workers
        self._max_starting_workers = max_starting_workers
        self._min_idle_workers = min_idle_workers
        self._retire_idle_after = retire_idle_after

        self._total: dict[str, int] = {}
        for name, units in _to_shape(totals, "resources"):
            self._total[name] = units
        # invariant: available[r] == total[r] - sum of held[r] over workers, where a blocked
        # worker's CPU is not counted as held. Only WorkerUnblocked can make it negative
        # (CPU only); a dispatch needs available >= demand, so it never goes below zero.
        self._available: dict[str, int] = dict(self._total)
        # Free units per GPU id, in the order given. invariant: 0 <= free <= RESOURCE_UNIT and
        # sum(free) == available["GPU"].
        self._gpu_free: dict[Hashable, int] = {gpu_id: RESOURCE_UNIT for gpu_id in gpu_ids}

        # Scheduling classes, looked up by the request as given (tuple of its items, the
        # cheap key) and by its normalized shape (so {"CPU": 1, "GPU": 0} and {"CPU": 1.0}
        # share a queue). One per distinct demand ever seen: a program uses a handful.
        self._class_by_request: dict[tuple, _SchedulingClass] = {}
        self._class_by_shape: dict[tuple, _SchedulingClass] = {}
        # invariant: a class is a key of _ready exactly when its queue is non-empty.
        # Insertion order is the round-robin order of service.
        self._ready: dict[_SchedulingClass, None] = {}

        self._pending: dict[Hashable, _Task] = {}  # waiting, ready and infeasible tasks
        self._waiting_on: dict[Hashable, dict[Hashable, _Task]] = {}  # object -> its waiters

        self._workers: dict[Hashable, _Worker] = {}  # every connected worker not yet dead
        # invariant: holds exactly the workers in state _IDLE; popped from the end (the most
        # recently idle worker is the warmest).
        self._idle: dict[Hashable, _Worker] = {}
        self._starting = 0  # StartWorker actions not yet answered by WorkerStarted/WorkerDied
        self._num_pool_workers = 0  # workers with .pooled set

        self._handlers = {
            SubmitTask: self._handle_submit_task,
            CancelTask: self._handle_cancel_task,
            ObjectReady: self._handle_object_ready,
            PrestartWorkers: self._handle_prestart_workers,
            WorkerStarted: self._handle_worker_started,
            TaskFinished: self._handle_task_finished,
            WorkerBlocked: self._handle_worker_blocked,
            WorkerUnblocked: self._handle_worker_unblocked,
            WorkerRetiring: self._handle_worker_retiring,
            WorkerReleased: self._handle_worker_released,
            WorkerDied: self._handle_worker_died,
            IdleTick: self._handle_idle_tick,
            ReserveBundle: self._handle_reserve_bundle,
            ReturnBundle: self._handle_return_bundle,
        }
        # Bundles not reserved yet, in arrival order: key -> (shape held, shape provided).
        self._bundles_pending: dict[Hashable, tuple] = {}
        # Reserved bundles: key -> (shape held, shape provided).
        self._bundles: dict[Hashable, tuple] = {}
        # The GPU ids a reserved bundle took: key -> (ids, units taken from each); and, per
        # group GPU resource a bundle provides, the ids of the bundles providing it.
        self._bundle_gpus: dict[Hashable, tuple] = {}
        self._gpus_by_name: dict[str, list] = {}

    # ── entry point and views ────────────────────────────────────────────────────────────────

    def handle(self, event: Event) -> list:
        """Apply one event and return the actions the node must carry out, in order.

        Events about a worker the scheduler does not know, or in a state where they make no
        sense (e.g. ``TaskFinished`` for an idle worker), are ignored: a process's last
        messages may race the notice of its death.

        Raises:
            TypeError: ``event`` is not one of this module's events.
            ValueError: The event contradicts the scheduler's state in a way only a bug in the
                caller can cause (a task id already pending, a worker id already connected,
                a malformed demand).
        """
        try:
            handler = self._handlers[type(event)]
        except KeyError:
            raise TypeError(f"the scheduler does not handle {event!r}") from None
        return handler(event)

    def available_resources(self) -> dict[str, float]:
        """What is free right now, like ``ray.available_resources()``.

        Returns:
            Resource name to amount; resources with nothing free are left out, as Ray does.
        """
        available = self._available
        return {name: units / RESOURCE_UNIT for name, units in available.items() if units > 0}

    def total_resources(self) -> dict[str, float]:
        """This node's totals, like ``ray.cluster_resources()`` on a one-node cluster."""
        return {name: units / RESOURCE_UNIT for name, units in self._total.items()}

    @property
    def num_pending(self) -> int:
        """Tasks not dispatched yet: waiting for objects, queued, or infeasible."""
        return len(self._pending)

    def queued(self, limit: int) -> list:
        """Up to ``limit`` ids of tasks whose objects are all there but which wait for room
        (a worker or resources), oldest first; dedicated ones (actors) left out.

        The node moves such tasks to other nodes that have room (``CancelTask`` takes one
        back from here).
        """
        found = []
        for cls in self._ready:
            for task in cls.queue:
                if task.state is _READY and not task.dedicated:
                    found.append(task.task_id)
                    if len(found) >= limit:
                        return found
        return found

    def num_waiting_for(self, name: str) -> int:
        """How many queued tasks (their objects all there) and pending bundles ask for some
        of resource ``name`` and would fit if only more of it were free: the work that
        giving back ``name`` held elsewhere (a lease, core/lease_rules.py) would let run."""
        available = self._available
        count = 0
        for cls in self._ready:
            if _blocked_only_by(cls.shape, name, available):
                count += len(cls.queue)
        for held, _provided in self._bundles_pending.values():
            if _blocked_only_by(held, name, available):
                count += 1
        return count

    @property
    def num_starting(self) -> int:
        """Worker processes requested but not yet connected."""
        return self._starting

    @property
    def num_workers(self) -> int:
        """Connected worker processes not yet reported dead (idle, busy, actors, exiting)."""
        return len(self._workers)

    @property
    def num_idle(self) -> int:
        """Workers ready to take a task now."""
        return len(self._idle)

    # ── event handlers ──────────────────────────────────────────────────────────────────────

    def _handle_submit_task(self, event: SubmitTask) -> list:
        task_id = event.task_id
        if task_id in self._pending:
            raise ValueError(f"task {task_id!r} is already pending")
        request = event.resources
        cls = self._class_by_request.get(tuple(request.items()))
        if cls is None:
            cls = self._new_class(request)
        hold = cls.shape
        if event.dedicated and event.hold is not None:
            hold = self._hold_shape(event.hold, cls)
        task = _Task(task_id, cls, event.dedicated, hold)
        self._pending[task_id] = task

        if not cls.feasible:
            # Reported once, here; the task is in no queue, so it never blocks anything.
            task.state = _INFEASIBLE
            return [Infeasible(task_id, dict(request))]

        missing = event.missing_deps
        if missing:
            task.missing = set(missing)
            task.state = _WAITING
            waiting_on = self._waiting_on
            for object_id in task.missing:
                waiters = waiting_on.get(object_id)
                if waiters is None:
                    waiting_on[object_id] = {task_id: task}
                else:
                    waiters[task_id] = task
            return []

        self._enqueue(task)
        actions: list = []
        self._schedule(actions)
        return actions

    def _handle_cancel_task(self, event: CancelTask) -> list:
        task = self._pending.pop(event.task_id, None)
        if task is None:
            return []  # running, done or unknown: not ours to cancel
        if task.state is _WAITING:
            waiting_on = self._waiting_on
            for object_id in task.missing:
                waiters = waiting_on[object_id]
                del waiters[task.task_id]
                if not waiters:
                    del waiting_on[object_id]
            task.missing = None
        # A ready task stays in its queue and is dropped when it reaches the head (_head):
        # removing it from the middle of a deque would cost O(queue length). Its class's next
        # task has the same demand, so removing it cannot let anything new run.
        task.state = _GONE
        return [TaskCancelled(event.task_id)]

    def _handle_object_ready(self, event: ObjectReady) -> list:
        waiters = self._waiting_on.pop(event.object_id, None)
        if waiters is None:
            return []
        became_ready = False
        for task in waiters.values():  # in submit order, so readiness order is deterministic
            task.missing.discard(event.object_id)
            if not task.missing:
                self._transition_waiting_ready(task)
                became_ready = True
        actions: list = []
        if became_ready:
            self._schedule(actions)
        return actions

    def _handle_prestart_workers(self, event: PrestartWorkers) -> list:
        actions: list = []
        self._schedule(actions)
        return actions

    def _handle_worker_started(self, event: WorkerStarted) -> list:
        worker_id = event.worker_id
        if worker_id in self._workers:
            raise ValueError(f"worker {worker_id!r} is already connected")
        if self._starting:
            self._starting -= 1
        # else: a worker the node started on its own; welcome it all the same.
        worker = self._workers[worker_id] = _Worker(worker_id)
        self._transition_starting_idle(worker)
        actions: list = []
        self._schedule(actions)
        return actions

    def _handle_task_finished(self, event: TaskFinished) -> list:
        worker = self._workers.get(event.worker_id)
        if worker is None or worker.state is not _BUSY:
            return []
        if worker.dedicated:
            self._transition_busy_actor(worker)
        else:
            self._transition_busy_idle(worker)
        actions: list = []
        self._schedule(actions)
        return actions

    def _handle_worker_blocked(self, event: WorkerBlocked) -> list:
        worker = self._workers.get(event.worker_id)
        if worker is None or (worker.state is not _BUSY and worker.state is not _ACTOR):
            return []
        worker.blocked += 1
        if worker.blocked > 1:
            return []  # its CPU is already lent
        available = self._available
        for name, units in worker.held:
            if _lends(name):
                available[name] += units
        self._update_pool_count(worker)
        actions: list = []
        self._schedule(actions)
        return actions

    def _handle_worker_unblocked(self, event: WorkerUnblocked) -> list:
        worker = self._workers.get(event.worker_id)
        if worker is None or not worker.blocked:
            return []
        worker.blocked -= 1
        if not worker.blocked:
            # Taken back unconditionally: the task is running again and must have its CPU.
            # Available CPU may go negative; nothing needing CPU is dispatched until enough
            # has been freed again.
            available = self._available
            for name, units in worker.held:
                if _lends(name):
                    available[name] -= units
            self._update_pool_count(worker)
        return []  # nothing was freed, so nothing new can run

    def _handle_worker_retiring(self, event: WorkerRetiring) -> list:
        worker = self._workers.get(event.worker_id)
        if worker is None or worker.state is _EXITING:
            return []
        worker.retiring = True
        if worker.state is _IDLE:
            self._transition_idle_exiting(worker)
        # A busy worker goes to _EXITING instead of _IDLE when its task finishes.
        self._update_pool_count(worker)
        actions: list = []
        self._schedule(actions)  # a replacement may be needed
        return actions

    def _handle_idle_tick(self, event: IdleTick) -> list:
        if not self._retire_idle_after:
            return []
        keep = max(self._min_idle_workers, self._total.get("CPU", 0) // RESOURCE_UNIT, 1)
        excess = self._num_pool_workers - keep
        actions: list = []
        for worker in list(self._idle.values()):  # insertion order: the longest idle first
            worker.idle_ticks += 1
            if excess > 0 and worker.idle_ticks >= self._retire_idle_after:
                worker.retiring = True
                self._transition_idle_exiting(worker)
                self._update_pool_count(worker)
                actions.append(RetireWorker(worker.worker_id))
                excess -= 1
        return actions

    def _handle_worker_released(self, event: WorkerReleased) -> list:
        worker = self._workers.get(event.worker_id)
        if worker is None or not worker.dedicated or worker.state is _EXITING:
            return []
        self._transition_actor_exiting(worker)
        actions: list = []
        self._schedule(actions)
        return actions

    def _handle_reserve_bundle(self, event: ReserveBundle) -> list:
        key = event.key
        if key in self._bundles or key in self._bundles_pending:
            raise ValueError(f"bundle {key!r} is already here")
        self._bundles_pending[key] = (_to_shape(event.resources, "bundle"),
                                      _to_shape(event.provides, "bundle provides"))
        actions: list = []
        self._schedule(actions)
        return actions

    def _handle_return_bundle(self, event: ReturnBundle) -> list:
        key = event.key
        if self._bundles_pending.pop(key, None) is not None:
            return []
        bundle = self._bundles.pop(key, None)
        if bundle is None:
            return []
        held, provided = bundle
        total = self._total
        available = self._available
        gpus = self._bundle_gpus.pop(key, None)
        if gpus is not None:
            ids, share = gpus
            for gpu_id in ids:
                self._gpu_free[gpu_id] += share
            for name, _units in provided:
                holders = self._gpus_by_name.get(name)
                if holders is not None and ids in holders:
                    holders.remove(ids)
                    if not holders:
                        del self._gpus_by_name[name]
        names = set()
        for name, units in provided:
            names.add(name)
            total[name] -= units
            available[name] -= units
        # Workers running in the bundle stop counting what it offered (the node kills them).
        for worker in self._workers.values():
            if worker.held and any(name in names for name, _ in worker.held):
                kept = []
                for name, units in worker.held:
                    if name in names:
                        if not (worker.blocked and _lends(name)):   # else lent already
                            available[name] += units
                    else:
                        kept.append((name, units))
                worker.held = tuple(kept)
        for name in names:
            if total[name] <= 0:
                del total[name]
                del available[name]
        # Demands naming what is gone can never fit again; tasks still queued with one (the
        # node fails them) leave their queues, so no pass reads a resource that is gone.
        for cls in self._class_by_shape.values():
            if cls.feasible and any(name not in total for name, _ in cls.shape):
                cls.feasible = False
                if cls.queue:
                    for task in cls.queue:
                        if task.state is _READY:
                            task.state = _INFEASIBLE
                    cls.queue.clear()
                    self._ready.pop(cls, None)
        for name, units in held:
            available[name] += units
        actions: list = []
        self._schedule(actions)
        return actions

    def _reserve_bundles(self, actions: list) -> None:
        """Reserve the pending bundles whose resources are free, in order."""
        available = self._available
        total = self._total
        for key, (held, provided) in list(self._bundles_pending.items()):
            if any(available.get(name, 0) < units for name, units in held):
                continue
            gpu = _gpu_of(held)
            # A bundle takes GPU ids as a task would (whole GPUs, or a share of one), and the
            # tasks in it are given those ids.
            by_id = gpu and (gpu <= RESOURCE_UNIT or not gpu % RESOURCE_UNIT)
            if by_id and not self._gpus_fit(gpu):
                continue
            del self._bundles_pending[key]
            if by_id:
                ids, share = self._assign_gpus(gpu)
                self._bundle_gpus[key] = (ids, share)
                for name, _units in provided:
                    if name.startswith(_GROUP_GPU):
                        self._gpus_by_name.setdefault(name, []).append(ids)
            for name, units in held:
                available[name] -= units
            for name, units in provided:
                total[name] = total.get(name, 0) + units
                available[name] = available.get(name, 0) + units
            self._bundles[key] = (held, provided)
            actions.append(BundleReserved(key))
        if actions:
            self._refresh_feasibility(actions)

    def _refresh_feasibility(self, actions: list) -> None:
        """Totals grew: classes that could not fit before may fit now; their tasks queue."""
        total = self._total
        for cls in self._class_by_shape.values():
            if not cls.feasible and all(total.get(n, 0) >= u for n, u in cls.shape):
                cls.feasible = True
        # Tasks already set aside stay so (their dependencies were not tracked): the node
        # submits a bundle's tasks only once the bundle is reserved.

    def _handle_worker_died(self, event: WorkerDied) -> list:
        actions: list = []
        worker = self._workers.pop(event.worker_id, None)
        if worker is None:
            # A process that never connected: count it off the starting ones. The next
            # _schedule asks for a replacement if a task still needs it.
            if self._starting:
                self._starting -= 1
                self._schedule(actions)
            return actions
        self._transition_any_dead(worker, actions)
        self._schedule(actions)
        return actions

    # ── task transitions ────────────────────────────────────────────────────────────────────

    def _transition_waiting_ready(self, task: _Task) -> None:
        task.missing = None
        self._enqueue(task)

    def _enqueue(self, task: _Task) -> None:
        cls = task.cls
        if not cls.feasible:  # its bundle was returned while it waited for objects
            task.state = _INFEASIBLE
            return
        task.state = _READY
        if not cls.queue:
            self._ready[cls] = None
        cls.queue.append(task)

    def _transition_ready_running(self, task: _Task, worker: _Worker, actions: list) -> None:
        # invariant: task is the head of its class's queue, the class fits (_fits), and the
        # worker is idle and already removed from _idle.
        cls = task.cls
        available = self._available
        for name, units in cls.shape:
            available[name] -= units
        if cls.gpu:
            worker.gpu_ids, worker.gpu_share = self._assign_gpus(cls.gpu)
        elif cls.group_gpu is not None:
            # In a bundle: the bundle's GPU ids, already taken by it (so no share here).
            holders = self._gpus_by_name.get(cls.group_gpu)
            if holders:
                worker.gpu_ids, worker.gpu_share = holders[0], 0
        worker.held = cls.shape
        worker.task = task
        worker.dedicated = task.dedicated
        worker.state = _BUSY
        if task.dedicated:
            self._update_pool_count(worker)  # an actor's worker leaves the task pool
        task.state = _RUNNING
        del self._pending[task.task_id]
        actions.append(Dispatch(task.task_id, worker.worker_id, worker.gpu_ids))

    # ── worker transitions ──────────────────────────────────────────────────────────────────

    def _transition_starting_idle(self, worker: _Worker) -> None:
        worker.state = _IDLE
        worker.idle_ticks = 0
        self._idle[worker.worker_id] = worker
        self._update_pool_count(worker)

    def _transition_busy_idle(self, worker: _Worker) -> None:
        self._release(worker)
        worker.task.state = _GONE
        worker.task = None
        worker.blocked = 0  # a finished task waits on nothing; its lent CPU was not re-held
        if worker.retiring:
            worker.state = _EXITING
        else:
            worker.state = _IDLE
            worker.idle_ticks = 0
            self._idle[worker.worker_id] = worker
        self._update_pool_count(worker)

    def _transition_busy_actor(self, worker: _Worker) -> None:
        # The actor now lives on this worker: trade the creation demand for what the actor
        # holds while alive. invariant: hold <= demand (checked at submit), so this only
        # frees resources and cannot push anything negative.
        hold = worker.task.hold
        gpu_ids, gpu_share = worker.gpu_ids, worker.gpu_share
        self._release(worker)
        available = self._available
        for name, units in hold:
            if worker.blocked and _lends(name):
                continue  # lent while blocked, see _Worker.blocked
            available[name] -= units
        worker.held = hold
        if gpu_ids and _gpu_of(hold):
            # The hold's GPU amount equals the demand's: the actor keeps the same ids.
            gpu_free = self._gpu_free
            for gpu_id in gpu_ids:
                gpu_free[gpu_id] -= gpu_share
            worker.gpu_ids, worker.gpu_share = gpu_ids, gpu_share
        worker.state = _ACTOR

    def _transition_idle_exiting(self, worker: _Worker) -> None:
        del self._idle[worker.worker_id]
        worker.state = _EXITING

    def _transition_actor_exiting(self, worker: _Worker) -> None:
        # Also taken from _BUSY: an actor may be released while its creation still runs.
        self._release(worker)
        worker.task.state = _GONE
        worker.task = None
        worker.blocked = 0
        worker.state = _EXITING
        self._update_pool_count(worker)

    def _transition_any_dead(self, worker: _Worker, actions: list) -> None:
        # invariant: the worker is already removed from _workers.
        state = worker.state
        if state is _IDLE:
            del self._idle[worker.worker_id]
        elif state is _BUSY or state is _ACTOR:
            self._release(worker)
            worker.task.state = _GONE
            actions.append(TaskLost(worker.task.task_id))
            worker.task = None
        if worker.pooled:
            self._num_pool_workers -= 1
            worker.pooled = False
        worker.state = _GONE

    # ── resources ───────────────────────────────────────────────────────────────────────────

    def _release(self, worker: _Worker) -> None:
        """Give back everything the worker holds, except CPU already lent while blocked."""
        available = self._available
        blocked = worker.blocked
        for name, units in worker.held:
            if blocked and _lends(name):
                continue
            available[name] += units  # invariant: held names are in _total (ReturnBundle)
        worker.held = ()
        if worker.gpu_ids:
            gpu_free = self._gpu_free
            share = worker.gpu_share
            for gpu_id in worker.gpu_ids:
                gpu_free[gpu_id] += share
            worker.gpu_ids = ()
            worker.gpu_share = 0

    def _fits(self, cls: _SchedulingClass) -> bool:
        available = self._available
        for name, units in cls.shape:
            if available[name] < units:  # feasible classes only name resources we have
                return False
        return not cls.gpu or self._gpus_fit(cls.gpu)

    def _gpus_fit(self, units: int) -> bool:
        # The GPU total may suffice while no single id can take the demand (e.g. two GPUs
        # half used each, and a whole GPU asked for): the ids decide.
        if units >= RESOURCE_UNIT:
            wanted = units // RESOURCE_UNIT
            whole = 0
            for free in self._gpu_free.values():
                if free == RESOURCE_UNIT:
                    whole += 1
                    if whole == wanted:
                        return True
            return False
        return any(free >= units for free in self._gpu_free.values())

    def _assign_gpus(self, units: int) -> tuple[tuple, int]:
        """Take GPU ids for a demand that _gpus_fit; return (ids, units taken from each)."""
        gpu_free = self._gpu_free
        if units >= RESOURCE_UNIT:
            wanted = units // RESOURCE_UNIT
            ids = []
            for gpu_id, free in gpu_free.items():
                if free == RESOURCE_UNIT:
                    ids.append(gpu_id)
                    if len(ids) == wanted:
                        break
            for gpu_id in ids:
                gpu_free[gpu_id] = 0
            return tuple(ids), RESOURCE_UNIT
        # A fraction goes to the fullest GPU that still has room (best fit), which packs
        # fractional tasks together and keeps whole GPUs free for whole-GPU demands.
        best = None
        best_free = RESOURCE_UNIT + 1
        for gpu_id, free in gpu_free.items():
            if units <= free < best_free:
                best, best_free = gpu_id, free
        gpu_free[best] -= units
        return (best,), units

    # ── scheduling classes ──────────────────────────────────────────────────────────────────

    def _new_class(self, request: Mapping[str, float]) -> _SchedulingClass:
        shape = _to_shape(request, "task resources")
        cls = self._class_by_shape.get(shape)
        if cls is None:
            gpu = _gpu_of(shape)
            if gpu > RESOURCE_UNIT and gpu % RESOURCE_UNIT:
                raise ValueError(
                    f"a GPU demand above 1 must be a whole number of GPUs, got "
                    f"{gpu / RESOURCE_UNIT}"
                )
            total = self._total
            feasible = all(total.get(name, 0) >= units for name, units in shape)
            cls = self._class_by_shape[shape] = _SchedulingClass(shape, gpu, feasible)
        self._class_by_request[tuple(request.items())] = cls
        return cls

    def _hold_shape(self, hold: Mapping[str, float], cls: _SchedulingClass) -> tuple:
        shape = _to_shape(hold, "hold")
        demand = dict(cls.shape)
        for name, units in shape:
            if units > demand.get(name, 0):
                raise ValueError(
                    f"an actor cannot hold more {name!r} ({units / RESOURCE_UNIT}) than it "
                    f"was placed with ({demand.get(name, 0) / RESOURCE_UNIT})"
                )
        gpu = _gpu_of(shape)
        if gpu and gpu != cls.gpu:
            raise ValueError("an actor holds either all the GPU it was placed with, or none")
        return shape

    def _head(self, cls: _SchedulingClass) -> Optional[_Task]:
        """The first live task of a ready class, dropping cancelled ones on the way."""
        queue = cls.queue
        while queue:
            task = queue[0]
            if task.state is _READY:
                return task
            queue.popleft()
        del self._ready[cls]
        return None

    # ── the scheduling pass ─────────────────────────────────────────────────────────────────

    def _schedule(self, actions: list) -> None:
        """Dispatch what can run now, then ask for the workers that are missing.

        Called after every event that frees a worker or a resource, or adds a ready task.
        invariant on return: either no worker is idle, or no class's head fits.
        """
        if self._bundles_pending:
            self._reserve_bundles(actions)
        ready = self._ready
        idle = self._idle
        # Round-robin over the classes: each pass gives at most one worker to each class whose
        # head fits, and a served class moves to the back, so the next worker to come free
        # goes to another class first. Open question: a large demand can still wait forever
        # behind a stream of small ones that keep taking what it needs; Ray has the same gap.
        progress = True
        while progress and idle and ready:
            progress = False
            for cls in list(ready):
                task = self._head(cls)
                if task is None or not self._fits(cls):
                    continue
                cls.queue.popleft()
                worker = idle.popitem()[1]
                self._transition_ready_running(task, worker, actions)
                progress = True
                del ready[cls]
                if cls.queue:
                    ready[cls] = None
                if not idle:
                    break

        room = min(
            self._max_starting_workers - self._starting,
            self._max_workers - self._num_pool_workers - self._starting,
        )
        if room <= 0:
            return
        wanted = 0
        if not idle and ready:
            # Ready tasks that fit now will each need a worker; the starting ones will take
            # the first of them.
            wanted = self._count_fitting(self._starting + room) - self._starting
        if self._min_idle_workers:
            wanted = max(wanted, self._min_idle_workers - len(idle) - self._starting)
        for _ in range(min(wanted, room)):
            self._starting += 1
            actions.append(_START_WORKER)

    def _count_fitting(self, limit: int) -> int:
        """How many ready tasks, taken in queue order, fit the free resources together.

        Stops at ``limit``, so it reads at most ``limit`` tasks per class (plus cancelled
        ones not yet dropped) and never scans a long queue. GPU ids are not simulated: the
        GPU total stands for them, which at worst starts one worker too many.
        """
        left = self._available.copy()
        count = 0
        for cls in self._ready:
            shape = cls.shape
            for task in cls.queue:
                if task.state is not _READY:
                    continue
                for name, units in shape:
                    if left[name] < units:
                        break
                else:
                    for name, units in shape:
                        left[name] -= units
                    count += 1
                    if count >= limit:
                        return count
                    continue
                break  # the rest of this class has the same demand: none of it fits either
        return count

    def _update_pool_count(self, worker: _Worker) -> None:
        """Keep _num_pool_workers equal to the workers counted against max_workers.

        Counted: connected workers that can take or are running an ordinary task. Not
        counted: actor workers (one process per actor, as in Ray), blocked workers (their
        task waits for others that need a worker of their own) and exiting workers (their
        replacement should start now).
        """
        pooled = (
            (worker.state is _IDLE or worker.state is _BUSY)
            and not worker.dedicated
            and not worker.blocked
            and not worker.retiring
        )
        if pooled is not worker.pooled:
            self._num_pool_workers += 1 if pooled else -1
            worker.pooled = pooled


# ─── helpers ─────────────────────────────────────────────────────────────────────────────────


def units(amount: float) -> int:
    """An amount in the scheduler's integer units (1/RESOURCE_UNIT)."""
    return int(round(float(amount) * RESOURCE_UNIT))


def _to_shape(amounts: Mapping[str, float], what: str) -> tuple:
    """Turn {name: amount} into a sorted tuple of (name, units), zero amounts dropped."""
    shape = []
    for name, amount in amounts.items():
        units = round(amount * RESOURCE_UNIT)
        if units < 0:
            raise ValueError(f"{what}: {name!r} must not be negative, got {amount}")
        if units:
            shape.append((name, units))
    shape.sort()
    return tuple(shape)


_GROUP_GPU = "GPU_group_"


def _group_gpu_of(shape: tuple):
    """The placement-group GPU resource a demand names, preferring one bundle's (``GPU_group_
    <index>_<id>``) to the group's (``GPU_group_<id>``); None if it names none."""
    found = None
    for name, _units in shape:
        if name.startswith(_GROUP_GPU):
            if "_" in name[len(_GROUP_GPU):]:
                return name
            found = name
    return found


def _lends(name: str) -> bool:
    """Whether a worker blocked in get/wait lends this resource: its CPU, or the CPU of the
    placement-group bundle it runs in (so a task waiting on its captured children does not
    starve them of the bundle's CPU)."""
    return name == "CPU" or name.startswith("CPU_group_")


def _blocked_only_by(shape: tuple, name: str, available: Mapping[str, int]) -> bool:
    """Whether a demand ``shape`` asks for ``name`` and everything else it asks is free."""
    wants = False
    for resource, units in shape:
        if resource == name:
            wants = units > 0
        elif available.get(resource, 0) < units:
            return False
    return wants


def _gpu_of(shape: tuple) -> int:
    for name, units in shape:
        if name == "GPU":
            return units
    return 0
