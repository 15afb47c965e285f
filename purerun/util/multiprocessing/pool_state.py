"""The bookkeeping of a :class:`~purerun.util.multiprocessing.Pool`: a pure state machine.

::

    Pool's dispatcher thread (actors, refs)        PoolState (this module, no I/O)
    ───────────────────────────────────────        ───────────────────────────────
    start(n)                          ──────▶      units:   pending → in flight → delivered
    submit(units)                     ──────▶                  ▲          │ worker lost
    batch_done(batch, outcomes)       ──────▶                  └──────────┘ (retried)
    batch_failed(batch, error, lost)  ──────▶      workers: running → retiring → stopped
    close(), terminate()              ──────▶               running → lost → (replaced)
                                      ◀──────      StartWorker, SendBatch, StopWorker,
                                                   Deliver

A *unit* is what the standard library's pool calls a task: one ``apply`` call, or one chunk
of a ``map``. A *batch* is what travels in one actor call: one or more units, so that a
thousand tiny ``apply_async`` calls cost a few dozen actor calls instead of a thousand.
Batches are formed only when a worker has room (at most ``MAX_BATCHES_IN_FLIGHT`` per
worker), from whatever is pending at that moment: the busier the pool, the bigger the batch.

Worker loss. When a worker dies, every batch it held comes back as ``batch_failed(...,
lost=True)``: its units go back to the front of the queue and a replacement worker starts.
A unit that has already been through a lost worker is retried alone, so a function that
kills its process cannot take innocent units down with it more than once; after
``MAX_ATTEMPTS`` tries it is delivered the error instead of looping forever.

``maxtasksperchild``: a worker is given at most that many units in total. Once it has
them all, it retires: it gets nothing more, and when its last batch is back it is stopped
and a fresh worker takes its place.

The dispatcher thread is the only caller; nothing here knows of threads, actors or clocks,
so tests drive it call by call.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Optional

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_BATCHES_IN_FLIGHT",
    "MAX_UNITS_PER_BATCH",
    "Deliver",
    "PoolState",
    "SendBatch",
    "StartWorker",
    "StopWorker",
    "Unit",
]

# Batches one worker may hold at once: one running and one waiting behind it, so a worker
# never sits idle for a round trip between two batches.
MAX_BATCHES_IN_FLIGHT = 2
# Units one batch may carry: enough to amortize an actor call's cost over many tiny items,
# few enough that work still spreads over the workers when the items are slow.
MAX_UNITS_PER_BATCH = 64
# Tries a unit gets when its worker dies under it (the first run included).
MAX_ATTEMPTS = 3


class Unit:
    """One stdlib-pool task: an ``apply`` call or one ``map`` chunk.

    Args:
        job: Whoever collects the result (opaque here), told through :class:`Deliver`.
        index: The unit's position within its job.
        size: How many items the unit holds (1 for ``apply``): batches are sized by it.
        payload: What the worker runs (opaque here).
    """

    __slots__ = ("job", "index", "size", "payload", "attempts", "order")

    def __init__(self, job: Any, index: int, size: int, payload: Any):
        self.job = job
        self.index = index
        self.size = size
        self.payload = payload
        self.attempts = 0  # runs cut short by a lost worker
        self.order = 0  # submission order, set by PoolState.submit

    def __repr__(self):
        return f"Unit({self.job!r}, {self.index}, size={self.size}, attempts={self.attempts})"


# --- actions ---------------------------------------------------------------------------------


class StartWorker:
    """Start a worker process (running the pool's initializer) known as ``worker_id``."""

    __slots__ = ("worker_id",)

    def __init__(self, worker_id: int):
        self.worker_id = worker_id

    def __eq__(self, other):
        return isinstance(other, StartWorker) and other.worker_id == self.worker_id

    def __repr__(self):
        return f"StartWorker({self.worker_id})"


class SendBatch:
    """Send ``units`` to worker ``worker_id`` as batch ``batch_id``; report its end back."""

    __slots__ = ("worker_id", "batch_id", "units")

    def __init__(self, worker_id: int, batch_id: int, units: List[Unit]):
        self.worker_id = worker_id
        self.batch_id = batch_id
        self.units = units

    def __repr__(self):
        return f"SendBatch(worker={self.worker_id}, batch={self.batch_id}, units={self.units})"


class StopWorker:
    """Stop worker ``worker_id``: gracefully once idle, or at once when ``kill`` is set
    (terminate, or a worker already lost)."""

    __slots__ = ("worker_id", "kill")

    def __init__(self, worker_id: int, kill: bool):
        self.worker_id = worker_id
        self.kill = kill

    def __eq__(self, other):
        return (isinstance(other, StopWorker) and other.worker_id == self.worker_id
                and other.kill == self.kill)

    def __repr__(self):
        return f"StopWorker({self.worker_id}, kill={self.kill})"


class Deliver:
    """``unit`` is finished: ``outcome`` is what the worker returned for it, or the error
    (``is_error``) that ended it."""

    __slots__ = ("unit", "outcome", "is_error")

    def __init__(self, unit: Unit, outcome: Any, is_error: bool):
        self.unit = unit
        self.outcome = outcome
        self.is_error = is_error

    def __repr__(self):
        return f"Deliver({self.unit!r}, {self.outcome!r}, is_error={self.is_error})"


# --- the state machine -----------------------------------------------------------------------


class _Worker:
    __slots__ = ("worker_id", "assigned", "batches")

    def __init__(self, worker_id: int):
        self.worker_id = worker_id
        self.assigned = 0  # units ever given to this worker
        self.batches: Dict[int, List[Unit]] = {}  # batch id -> its units, while in flight


class PoolState:
    """Which unit waits, which runs on which worker, and when workers come and go.

    Args:
        maxtasksperchild: Units a worker runs before it is replaced; None for no limit.
    """

    def __init__(self, maxtasksperchild: Optional[int] = None):
        self.maxtasksperchild = maxtasksperchild
        self.pending: Deque[Unit] = deque()
        self.pending_items = 0  # sum of the pending units' sizes
        # invariant: a worker is in exactly one of these two maps until it is stopped
        self.running: Dict[int, _Worker] = {}  # may be given work
        self.retiring: Dict[int, _Worker] = {}  # finishing what it has, then stopped
        self.batch_owner: Dict[int, int] = {}  # batch id -> worker id, while in flight
        self.closed = False
        self.terminated = False
        self._next_worker_id = 0
        self._next_batch_id = 0
        self._next_order = 0
        self._round_robin = 0

    # -- queries ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Workers that may be given work."""
        return len(self.running)

    def has_work(self) -> bool:
        """Whether any unit is pending or in flight."""
        return bool(self.pending or self.batch_owner)

    def finished(self) -> bool:
        """Closed or terminated, nothing left to run, and every worker told to stop."""
        return ((self.closed or self.terminated) and not self.has_work()
                and not self.running and not self.retiring)

    # -- events ----------------------------------------------------------------------------

    def start(self, processes: int) -> list:
        """The pool starts with ``processes`` workers."""
        return [self._new_worker() for _ in range(processes)]

    def submit(self, units: List[Unit]) -> list:
        """New units to run, in order, behind those already pending."""
        if self.closed or self.terminated:
            raise ValueError("Pool not running")
        for unit in units:
            unit.order = self._next_order
            self._next_order += 1
            self.pending.append(unit)
            self.pending_items += unit.size
        return self._settle()

    def batch_done(self, batch_id: int, outcomes: List[Any]) -> list:
        """The worker returned batch ``batch_id``: one outcome per unit, in order."""
        units, worker = self._take_batch(batch_id)
        if units is None:
            return []
        actions: list = [Deliver(unit, outcome, False) for unit, outcome in zip(units, outcomes)]
        actions += self._retire_if_done(worker)
        return actions + self._settle()

    def batch_failed(self, batch_id: int, error: BaseException, lost: bool) -> list:
        """Batch ``batch_id`` did not come back. ``lost``: its worker died, so the units
        are retried; otherwise ``error`` is their outcome."""
        units, worker = self._take_batch(batch_id)
        if units is None:
            return []
        if not lost:
            actions: list = [Deliver(unit, error, True) for unit in units]
            actions += self._retire_if_done(worker)
            return actions + self._settle()
        # Whatever else the dead worker held is lost with it: retried now, and its own
        # failure report, when it comes, finds the batch already settled.
        for other_id in sorted(worker.batches):
            units = units + worker.batches.pop(other_id)
            del self.batch_owner[other_id]
        units.sort(key=lambda unit: unit.order)
        actions = []
        retry = []
        for unit in units:
            unit.attempts += 1
            if unit.attempts >= MAX_ATTEMPTS:
                actions.append(Deliver(unit, error, True))
            else:
                retry.append(unit)
        for unit in reversed(retry):
            self.pending.appendleft(unit)
            self.pending_items += unit.size
        self.running.pop(worker.worker_id, None)
        self.retiring.pop(worker.worker_id, None)
        actions.append(StopWorker(worker.worker_id, kill=True))
        if not self.closed or self.has_work():
            actions.append(self._new_worker())
        return actions + self._settle()

    def close(self) -> list:
        """No more submissions; workers stop once everything pending has run."""
        self.closed = True
        return self._settle()

    def terminate(self) -> list:
        """Stop every worker now; every unit not yet finished gets ``None`` as its error
        (the caller supplies the error it reports)."""
        self.terminated = True
        self.closed = True
        actions: list = []
        for worker_id in list(self.running) + list(self.retiring):
            actions.append(StopWorker(worker_id, kill=True))
        unfinished = []
        for batch_id in sorted(self.batch_owner):
            worker_id = self.batch_owner[batch_id]
            worker = self.running.get(worker_id) or self.retiring.get(worker_id)
            if worker is not None:
                unfinished += worker.batches.pop(batch_id, [])
        unfinished += self.pending
        self.pending.clear()
        self.pending_items = 0
        self.batch_owner.clear()
        self.running.clear()
        self.retiring.clear()
        actions += [Deliver(unit, None, True) for unit in unfinished]
        return actions

    # -- internals -------------------------------------------------------------------------

    def _new_worker(self) -> StartWorker:
        worker = _Worker(self._next_worker_id)
        self._next_worker_id += 1
        self.running[worker.worker_id] = worker
        return StartWorker(worker.worker_id)

    def _take_batch(self, batch_id: int):
        """Forget batch ``batch_id``: (its units, its worker if still known), or (None,
        None) for a batch already settled (e.g. by terminate)."""
        worker_id = self.batch_owner.pop(batch_id, None)
        if worker_id is None:
            return None, None
        worker = self.running.get(worker_id) or self.retiring.get(worker_id)
        if worker is None:
            return None, None
        return worker.batches.pop(batch_id), worker

    def _retire_if_done(self, worker: Optional[_Worker]) -> list:
        """Stop a retiring worker whose last batch is back, and replace it if there may
        be work for the replacement."""
        if worker.batches or worker.worker_id not in self.retiring:
            return []
        del self.retiring[worker.worker_id]
        actions: list = [StopWorker(worker.worker_id, kill=False)]
        if not self.closed or self.has_work():
            actions.append(self._new_worker())
        return actions

    def _settle(self) -> list:
        """Hand out what is pending; once closed with nothing left, stop every worker."""
        actions = self._dispatch()
        if self.closed and not self.has_work():
            actions += self._stop_all_idle()
        return actions

    def _stop_all_idle(self) -> list:
        """After close with nothing left: stop every worker (none holds a batch)."""
        actions = [StopWorker(worker_id, kill=False)
                   for worker_id in list(self.running) + list(self.retiring)]
        self.running.clear()
        self.retiring.clear()
        return actions

    def _room(self, worker: _Worker) -> int:
        """Units this worker may still be given in one batch."""
        if len(worker.batches) >= MAX_BATCHES_IN_FLIGHT:
            return 0
        room = MAX_UNITS_PER_BATCH
        if self.maxtasksperchild is not None:
            room = min(room, self.maxtasksperchild - worker.assigned)
        return room

    def _send_to(self, worker: _Worker, share: int) -> SendBatch:
        """A batch for ``worker`` from the head of the queue: about ``share`` items."""
        room = self._room(worker)
        units: List[Unit] = []
        items = 0
        while self.pending and len(units) < room and items < share:
            if units and self.pending[0].attempts:
                break  # a unit that has lost a worker before runs alone
            unit = self.pending.popleft()
            units.append(unit)
            items += unit.size
            self.pending_items -= unit.size
            if unit.attempts:
                break
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        worker.batches[batch_id] = units
        worker.assigned += len(units)
        self.batch_owner[batch_id] = worker.worker_id
        if self.maxtasksperchild is not None and worker.assigned >= self.maxtasksperchild:
            del self.running[worker.worker_id]
            self.retiring[worker.worker_id] = worker
        return SendBatch(worker.worker_id, batch_id, units)

    def _dispatch(self) -> list:
        """Give pending units to workers with room, least loaded first.

        Each worker with room gets an even share of the pending items (within
        ``MAX_UNITS_PER_BATCH``), so a map is spread over every worker in as few batches
        as possible, and a burst of small submissions in a few.
        """
        actions: list = []
        while self.pending and self.running:
            workers = list(self.running.values())
            start = self._round_robin % len(workers)
            self._round_robin += 1
            candidates = [w for w in workers[start:] + workers[:start] if self._room(w) > 0]
            if not candidates:
                break
            candidates.sort(key=lambda w: len(w.batches))  # least loaded first (stable)
            share = -(-self.pending_items // len(candidates))
            for worker in candidates:
                if not self.pending:
                    break
                actions.append(self._send_to(worker, share))
        return actions
