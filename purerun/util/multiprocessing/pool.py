"""``multiprocessing.Pool``'s API on purerun actors (Ray's ``ray.util.multiprocessing``).

::

    caller threads                  dispatcher thread (one per pool)      pool workers (actors)
    ──────────────                  ────────────────────────────────      ─────────────────────
    map_async, starmap_async ─────── lock: PoolState (pure) ── SendBatch ──▶ run_batch(payload)
    apply_async, imap feeders ─┐            ▲       │                              │
    close ─────────────────────┴─▶ events ──┘       │ Deliver                      │
    terminate (lock, direct)          ▲             ▼                              │
                                      │     AsyncResult / IMapIterator:            │
                                      │     results set, callbacks run             │
                                      └─── ("done", batch, future) ◀───────────────┘

The pool's state (:class:`PoolState`) and its actors change only under one lock. A map
submits its chunks from the caller's thread, so they leave at once. ``apply_async`` calls
and imap feeders put their units on the event queue instead: the dispatcher thread takes
every submission waiting there at once, so a burst of a thousand calls goes out in a few
dozen batches and the caller never contends for the lock. ``close`` also travels on the
queue, behind the submissions made before it. A batch's completion arrives as a future
callback on purerun's reader thread, which only queues an event: no purerun call is ever
made from that thread. Results are handed to their jobs, and the user's callbacks run, on
the dispatcher thread with the lock released, so a callback may submit more work.

What is sent. A unit (one ``apply`` call or one ``map`` chunk) is ``(mode, func, items)``;
the units of one batch are pickled together with cloudpickle. A map's function is pickled
once for all its chunks, as bytes, and each worker keeps it unpickled for the map's next
chunks. The worker returns every unit's outcome pickled together: ``(True, [results])`` or ``(False, exception, traceback text)``. An exception
travels with the worker's traceback as text and is re-raised in the caller with that text
as its ``__cause__``, as the standard library does.

Differences from the standard library's pool (most shared with Ray's):

* Workers are actors (``num_cpus=0`` unless ``ray_remote_args`` says otherwise), so a pool
  may span a cluster, and its size is bounded by the cluster's CPUs.
* A worker that dies mid-task (killed, ``os._exit``) is replaced and its tasks are run
  again (up to ``MAX_ATTEMPTS`` times, then the task fails with ``ActorDiedError``); the
  standard library's pool hangs instead.
* ``terminate`` fails every unfinished result with ``ActorDiedError`` (as Ray's pool
  does) instead of leaving ``get`` to block forever; their callbacks are not run.
* ``imap`` and ``imap_unordered`` read the iterable on a feeder thread at most
  ``IMAP_LOOKAHEAD_PER_WORKER`` units per worker ahead of the consumer, so an endless
  iterable works without filling memory.
* A callback that raises is logged and the result still completes.
* After ``imap`` raises a task's error, iterating on yields the following results, whatever
  the chunksize (the standard library's ``imap`` ends there when ``chunksize > 1``).
"""

import itertools
import logging
import os
import queue
import threading
import time
import traceback
from collections import deque
import cloudpickle

import purerun
from purerun.exceptions import ActorDiedError, RayActorError

from .pool_state import MAX_BATCHES_IN_FLIGHT, MAX_UNITS_PER_BATCH, Deliver, PoolState, Unit

# The standard library's error types, so that `except multiprocessing.TimeoutError` works.
from multiprocessing import TimeoutError
from multiprocessing.pool import MaybeEncodingError

__all__ = ["AsyncResult", "IMapIterator", "IMapUnorderedIterator", "Pool", "TimeoutError"]

logger = logging.getLogger(__name__)

# How a unit's items are called: apply's items are (args, kwargs); map's are the argument;
# starmap's are the argument tuple.
_APPLY, _MAP, _STARMAP = 0, 1, 2
# A unit that could not be pickled in the caller carries its error in place of a function.
_FAILED = 3
# Units an imap feeder may keep ahead of the consumer, per worker: enough to fill every
# batch slot with full batches, so imap batches as well as map does.
IMAP_LOOKAHEAD_PER_WORKER = MAX_UNITS_PER_BATCH * MAX_BATCHES_IN_FLIGHT
# Functions a worker keeps unpickled (a map sends its function pickled once, as bytes, and
# every chunk of it reuses the worker's copy). A few: one pool rarely maps many functions.
FUNCTION_CACHE_SIZE = 16
# Environment variables that make purerun.init() connect to an existing cluster.
_ADDRESS_VARIABLES = ("PURERUN_ADDRESS", "RAY_ADDRESS")


# --- what runs in a pool worker --------------------------------------------------------------


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a pool worker, as text.

    It is the ``__cause__`` of the exception re-raised in the caller, so both stacks show.
    """

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def _call_unit(mode, func, items):
    if mode == _MAP:
        return [func(item) for item in items]
    if mode == _STARMAP:
        return [func(*args) for args in items]
    if mode == _APPLY:
        return [func(*args, **kwargs) for args, kwargs in items]
    raise func  # _FAILED: the caller could not pickle this unit; func is the error


def _error_outcome(exc):
    return (False, exc, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def _run_unit(mode, func, items):
    try:
        return (True, _call_unit(mode, func, items))
    except Exception as exc:  # the function's error is the unit's outcome (as the stdlib)
        return _error_outcome(exc)


def _portable(outcome):
    """The outcome itself if it pickles, else an error saying why it could not be sent."""
    try:
        cloudpickle.dumps(outcome)
        return outcome
    except Exception as exc:
        value = outcome[1]
        return (False, MaybeEncodingError(exc, value), "")


class PoolWorker:
    """One pool process: runs the initializer once, then batches of units."""

    def __init__(self, initializer=None, initargs=()):
        self._functions = {}  # pickled function -> the function, for map jobs
        if initializer is not None:
            initializer(*initargs)

    def _function(self, pickled: bytes):
        func = self._functions.get(pickled)
        if func is None:
            if len(self._functions) >= FUNCTION_CACHE_SIZE:
                self._functions.clear()
            func = self._functions[pickled] = cloudpickle.loads(pickled)
        return func

    def ready(self):
        """Answers once ``__init__`` (the initializer) has run."""
        return True

    def run_batch(self, payload: bytes) -> bytes:
        """Run the pickled units in ``payload``; their outcomes, pickled, in order."""
        outcomes = []
        for mode, func, items in cloudpickle.loads(payload):
            if type(func) is bytes:  # a map's function, pickled once for all its chunks
                try:
                    func = self._function(func)
                except Exception as exc:
                    outcomes.append(_error_outcome(exc))
                    continue
            outcomes.append(_run_unit(mode, func, items))
        try:
            return cloudpickle.dumps(outcomes)
        except Exception:
            return cloudpickle.dumps([_portable(outcome) for outcome in outcomes])


_RemotePoolWorker = purerun.remote(num_cpus=0)(PoolWorker)


# --- results -------------------------------------------------------------------------------


def _with_remote_traceback(exc, tb):
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    return exc


def _run_callback(callback, value):
    try:
        callback(value)
    except Exception:
        logger.exception("A pool callback raised; the result is set regardless.")


class AsyncResult:
    """The result of ``apply_async``, ``map_async`` or ``starmap_async``.

    Not made directly: the pool returns it.
    """

    def __init__(self, units, single, callback=None, error_callback=None):
        self._event = threading.Event()
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._parts = [None] * units
        self._left = units
        self._success = None
        self._value = None
        if units == 0:
            self._success, self._value = True, []
            self._event.set()

    def _set(self, index, success, value, run_callbacks=True):
        """Called on the dispatcher thread: unit ``index`` is finished."""
        if self._event.is_set():
            return  # a map that already failed: its first error is its outcome
        if success:
            self._parts[index] = value
            self._left -= 1
            if self._left:
                return
            self._value = (self._parts[0][0] if self._single
                           else list(itertools.chain.from_iterable(self._parts)))
            self._parts = None
            self._success = True
            if run_callbacks and self._callback is not None:
                _run_callback(self._callback, self._value)
        else:
            self._success, self._value, self._parts = False, value, None
            if run_callbacks and self._error_callback is not None:
                _run_callback(self._error_callback, value)
        self._event.set()

    def ready(self):
        """Whether the call has completed.

        Returns:
            True once the result (or the error) is in.
        """
        return self._event.is_set()

    def successful(self):
        """Whether the call completed without raising.

        Returns:
            True if it returned, False if it raised.

        Raises:
            ValueError: The result is not ready yet.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout=None):
        """Wait until the result is ready or ``timeout`` seconds have passed.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.
        """
        self._event.wait(timeout)

    def get(self, timeout=None):
        """The result, once it is in.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            The function's return value (a list of them for ``map_async``/``starmap_async``).

        Raises:
            multiprocessing.TimeoutError: The result is not in after ``timeout`` seconds.
            Exception: Whatever the function raised (the first error, for a map), with the
                worker's traceback as its ``__cause__``.
        """
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value


ApplyResult = AsyncResult
MapResult = AsyncResult


class IMapIterator:
    """The results of ``imap``, in the order of the iterable.

    Not made directly: the pool returns it. Iterate over it, or call ``next(timeout)``.
    """

    _ordered = True

    def __init__(self, lookahead):
        self._cond = threading.Condition()
        self._lookahead = lookahead
        self._done_units = {}  # ordered: unit index -> (success, value)
        self._arrived = deque()  # unordered: (success, value) as they come
        self._items = deque()  # results of the current unit not yet returned
        self._consumed = 0  # units handed to the consumer (or raised)
        self._submitted = 0  # units the feeder has submitted
        self._total = None  # units in all, once the feeder reached the iterable's end
        self._feed_error = None  # what iterating the caller's iterable raised
        self._stopped = False  # the pool was terminated: the feeder gives up

    # -- the feeder's side -------------------------------------------------------------------

    def _wait_for_room(self):
        """Block the feeder while it is ``lookahead`` units ahead; False once stopped."""
        with self._cond:
            while not self._stopped and self._submitted - self._consumed >= self._lookahead:
                self._cond.wait()
            return not self._stopped

    def _fed(self, count):
        with self._cond:
            self._submitted += count

    def _feed_ended(self, error=None):
        with self._cond:
            self._total = self._submitted
            self._feed_error = error
            self._cond.notify_all()

    def _stop_feeding(self):
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _set(self, index, success, value, run_callbacks=True):
        """Called on the dispatcher thread: unit ``index`` is finished."""
        with self._cond:
            if self._ordered:
                self._done_units[index] = (success, value)
            else:
                self._arrived.append((success, value))
            self._cond.notify_all()

    # -- the consumer's side -----------------------------------------------------------------

    def _next_unit(self):
        """(success, value) of the next unit to hand out, if it is in; else None."""
        if self._ordered:
            return self._done_units.pop(self._consumed, None)
        return self._arrived.popleft() if self._arrived else None

    def __iter__(self):
        return self

    def next(self, timeout=None):
        """The next result.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            The function's return value for the next item.

        Raises:
            multiprocessing.TimeoutError: No result came within ``timeout`` seconds.
            StopIteration: Every result has been returned.
            Exception: Whatever the function raised for this item (or what iterating the
                input raised, once the items before it are returned).
        """
        with self._cond:
            deadline = None
            while True:
                if self._items:
                    return self._items.popleft()
                done = self._next_unit()
                if done is not None:
                    self._consumed += 1
                    self._cond.notify_all()  # the feeder may have room now
                    success, value = done
                    if not success:
                        raise value
                    self._items.extend(value)
                    continue
                if self._total is not None and self._consumed >= self._total:
                    if self._feed_error is not None:
                        error, self._feed_error = self._feed_error, None
                        raise error
                    raise StopIteration
                if timeout is None:
                    self._cond.wait()
                    continue
                if deadline is None:
                    deadline = time.monotonic() + timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    if self._items or self._next_unit_ready():
                        continue
                    raise TimeoutError

    __next__ = next

    def _next_unit_ready(self):
        if self._ordered:
            return self._consumed in self._done_units
        return bool(self._arrived)


class IMapUnorderedIterator(IMapIterator):
    """The results of ``imap_unordered``, in the order they complete."""

    _ordered = False


# --- the dispatcher --------------------------------------------------------------------------


class _Dispatcher:
    """Owns the pool's state and its actors (see the module doc).

    invariant: ``state``, ``handles`` and ``in_flight`` change only with ``lock`` held.
    Actions run under the lock too, except :class:`Deliver`: results (and the user's
    callbacks) are handed over on the dispatcher thread with the lock released, so a
    callback may submit more work.
    """

    def __init__(self, processes, maxtasksperchild, worker_class, initializer, initargs):
        self.state = PoolState(maxtasksperchild)
        self.lock = threading.Lock()
        self.events = queue.SimpleQueue()
        self.worker_class = worker_class
        self.initializer = initializer
        self.initargs = initargs
        self.handles = {}  # worker id -> actor handle
        self.in_flight = {}  # batch id -> ObjectRef (kept alive until the batch is back)
        self.stopping = []  # refs of __ray_terminate__ calls, for join
        self._stop_sent = False
        with self.lock:
            self._execute(self.state.start(processes))
        self.thread = threading.Thread(target=self._run, name="purerun-pool", daemon=True)

    def ping_workers(self):
        """Wait until every worker has run the initializer; raise if one failed."""
        with self.lock:
            handles = list(self.handles.values())
        purerun.get([handle.ready.remote() for handle in handles])

    # -- called from the caller's threads ------------------------------------------------------

    def submit(self, units):
        """Queue ``units`` and send what fits now, from the caller's own thread: a map's
        chunks leave without waiting for the dispatcher thread to wake up."""
        self._locked(self.state.submit, units)

    def submit_soon(self, units):
        """Queue ``units`` through the dispatcher thread, which takes every submission
        waiting at once: a burst of ``apply_async`` calls then goes out in few batches
        (and the caller does not contend for the lock with each one)."""
        self.events.put(("submit", units))

    def close(self):
        """Close behind every submission already queued (they still run)."""
        self.events.put(("close",))

    def terminate(self):
        self._locked(self.state.terminate)

    def _locked(self, event, *args):
        with self.lock:
            delivers = self._execute(event(*args))
        if delivers:
            self.events.put(("deliver", delivers))

    # -- the dispatcher thread -----------------------------------------------------------------

    def _run(self):
        try:
            while True:
                event = self.events.get()
                if event[0] == "stop":
                    return
                for action in self._handle(event):
                    self._deliver(action)
        except BaseException as exc:  # purerun went away under the pool, or a bug here
            logger.exception("The pool's dispatcher stopped")
            self._fail_everything(exc)

    def _handle(self, event):
        """Carry out one event from the queue; return the Deliver actions it led to."""
        kind = event[0]
        if kind == "submit":
            return self._submit_waiting(event[1])
        if kind == "stop":
            self.events.put(event)  # seen while draining submissions: handled next
            return []
        if kind == "deliver":
            return list(event[1])
        with self.lock:
            if kind == "done":
                return self._batch_back(event[1], event[2])
            return self._execute(self.state.close())  # "close"

    def _submit_waiting(self, units):
        """Submit ``units`` and every other submission already queued behind them."""
        units = list(units)
        later = None
        while later is None:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "submit":
                units.extend(event[1])
            else:
                later = event  # handled after these, keeping the queue's order
        with self.lock:
            if self.state.closed:  # terminated meanwhile (a closed pool takes no more)
                error = None if self.state.terminated else ValueError("Pool not running")
                delivers = [Deliver(unit, error, True) for unit in units]
            else:
                delivers = self._execute(self.state.submit(units))
        if later is not None:
            delivers += self._handle(later)
        return delivers

    def _batch_back(self, batch_id, future):
        self.in_flight.pop(batch_id, None)
        error = future.exception()
        if error is None:
            try:
                outcomes = cloudpickle.loads(future.result())
            except Exception as exc:
                return self._execute(self.state.batch_failed(batch_id, exc, lost=False))
            return self._execute(self.state.batch_done(batch_id, outcomes))
        lost = isinstance(error, RayActorError) and not error.actor_init_failed
        return self._execute(self.state.batch_failed(batch_id, error, lost=lost))

    def _execute(self, actions):
        """Carry out ``actions`` (lock held); return the Deliver actions, not yet run."""
        delivers = []
        sent = []
        for action in actions:
            kind = type(action).__name__
            if kind == "Deliver":
                delivers.append(action)
            elif kind == "SendBatch":
                sent.append(self._send(action))
            elif kind == "StartWorker":
                self.handles[action.worker_id] = self.worker_class.remote(
                    self.initializer, self.initargs)
            elif kind == "StopWorker":
                handle = self.handles.pop(action.worker_id, None)
                if handle is None:
                    continue
                if action.kill:
                    purerun.kill(handle)
                else:
                    self.stopping.append(handle.__ray_terminate__.remote())
        # Futures last: the first one flushes every submission above in one write.
        for batch_id, ref in sent:
            ref.future().add_done_callback(
                lambda future, batch_id=batch_id: self.events.put(("done", batch_id, future)))
        if self.state.finished() and not self._stop_sent:
            self._stop_sent = True
            self.events.put(("deliver", delivers))
            self.events.put(("stop",))
            return []
        return delivers

    def _send(self, action):
        units = [unit.payload for unit in action.units]
        try:
            payload = cloudpickle.dumps(units)
        except Exception:
            payload = cloudpickle.dumps([_picklable_unit(unit) for unit in units])
        ref = self.handles[action.worker_id].run_batch.remote(payload)
        self.in_flight[action.batch_id] = ref
        return action.batch_id, ref

    def _deliver(self, action):
        unit = action.unit
        if action.is_error:
            error = action.outcome
            if error is None:  # terminate
                unit.job._set(unit.index, False, ActorDiedError(
                    "The pool was terminated before this task finished."), run_callbacks=False)
            else:
                unit.job._set(unit.index, False, error)
            return
        success, value = action.outcome[0], action.outcome[1]
        if success:
            unit.job._set(unit.index, True, value)
        else:
            unit.job._set(unit.index, False, _with_remote_traceback(value, action.outcome[2]))

    def _fail_everything(self, exc):
        try:
            with self.lock:
                actions = self.state.terminate()
            for action in actions:
                if type(action).__name__ == "Deliver":
                    action.unit.job._set(action.unit.index, False, exc, run_callbacks=False)
        except BaseException:
            pass


def _picklable_unit(unit):
    """The unit, or, if it cannot be pickled, a unit that raises why in the worker."""
    try:
        cloudpickle.dumps(unit)
        return unit
    except Exception as exc:
        return (_FAILED, exc, ())


# --- the pool --------------------------------------------------------------------------------


def _pickled_function(func):
    """``func`` pickled once for every chunk of a map (the worker caches it unpickled)."""
    if not callable(func):
        raise TypeError(f"The function to map must be callable, got {type(func).__name__}.")
    return cloudpickle.dumps(func)


def _check_positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}.")


def _default_chunksize(length, processes):
    chunksize, extra = divmod(length, processes * 4)
    return chunksize + 1 if extra else max(chunksize, 1)


class Pool:
    """A pool of worker processes (purerun actors) with ``multiprocessing.Pool``'s API.

    Starts purerun if it is not running yet: connected to ``ray_address`` if given, else
    to the cluster named by ``PURERUN_ADDRESS``/``RAY_ADDRESS``, else a new local node
    with ``processes`` CPUs.

    Args:
        processes: Number of worker processes. Defaults to the cluster's CPU count.
        initializer: Called as ``initializer(*initargs)`` once in each worker when it
            starts (again in a worker that replaces another).
        initargs: Arguments for ``initializer``.
        maxtasksperchild: Tasks (``apply`` calls or ``map`` chunks) a worker runs before it
            is replaced by a fresh one. None: workers live as long as the pool.
        context: Ignored (purerun decides how processes start); a warning says so.
        ray_address: Address of the cluster to connect to when purerun is not running.
        ray_remote_args: Actor options for the workers, e.g. ``{"num_cpus": 1}``.

    Raises:
        ValueError: ``processes`` is below 1 or more than the cluster's CPUs, or
            ``maxtasksperchild`` is below 1.
        TypeError: ``initializer`` is not callable, or an argument has the wrong type.
        ActorDiedError: The initializer raised in a worker.
    """

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None, ray_address=None, ray_remote_args=None):
        if processes is not None:
            if isinstance(processes, bool) or not isinstance(processes, int):
                raise TypeError(f"processes must be an int or None, got "
                                f"{type(processes).__name__} {processes!r}.")
            if processes <= 0:
                raise ValueError("Processes in the pool must be >0.")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        initargs = tuple(initargs) if initargs is not None else ()
        if maxtasksperchild is not None:
            if (isinstance(maxtasksperchild, bool) or not isinstance(maxtasksperchild, int)
                    or maxtasksperchild <= 0):
                raise ValueError("maxtasksperchild must be a positive int or None")
        if ray_remote_args is not None and not isinstance(ray_remote_args, dict):
            raise TypeError(f"ray_remote_args must be a dict of actor options, got "
                            f"{type(ray_remote_args).__name__}.")
        if context is not None:
            logger.warning("Pool ignores the 'context' argument: purerun starts the worker "
                           "processes itself.")

        processes = self._init_purerun(processes, ray_address)
        worker_class = _RemotePoolWorker
        if ray_remote_args:
            worker_class = _RemotePoolWorker.options(**ray_remote_args)

        self._processes = processes
        self._lock = threading.Lock()
        self._state = "RUN"  # RUN -> CLOSE or TERMINATE
        self._feeders = 0  # imap feeder threads still reading their iterable
        self._iterators = []  # live imap iterators, stopped by terminate
        self._dispatcher = _Dispatcher(processes, maxtasksperchild, worker_class,
                                       initializer, initargs)
        try:
            self._dispatcher.ping_workers()
        except BaseException:
            self._state = "TERMINATE"
            self._dispatcher.terminate()
            raise
        self._dispatcher.thread.start()

    @staticmethod
    def _init_purerun(processes, ray_address):
        if not purerun.is_initialized():
            if ray_address is not None:
                purerun.init(address=ray_address)
            elif any(os.environ.get(name) for name in _ADDRESS_VARIABLES):
                purerun.init()
            else:
                purerun.init(num_cpus=processes)
        cpus = int(purerun.cluster_resources().get("CPU", 0))
        if processes is None:
            processes = cpus
            if processes <= 0:
                raise ValueError("The cluster has no CPUs: pass processes= explicitly.")
        elif processes > cpus:
            raise ValueError(f"Tried to start a pool with {processes} processes on an "
                             f"existing cluster, but there are only {cpus} CPUs in it.")
        return processes

    def __reduce__(self):
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled")

    def __repr__(self):
        return f"<purerun.util.multiprocessing.Pool state={self._state} pool_size={self._processes}>"

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.terminate()

    def __del__(self):
        dispatcher = getattr(self, "_dispatcher", None)
        if dispatcher is not None and getattr(self, "_state", None) == "RUN":
            self._state = "TERMINATE"
            try:
                dispatcher.terminate()
            except Exception:  # at interpreter exit purerun may be gone already
                pass

    # -- submitting --------------------------------------------------------------------------

    def _check_running(self):
        if self._state != "RUN":
            raise ValueError("Pool not running")

    def _submit(self, units, soon=False):
        with self._lock:
            self._check_running()
            if soon:
                self._dispatcher.submit_soon(units)
                return
        self._dispatcher.submit(units)

    def apply(self, func, args=None, kwargs=None, *, kwds=None):
        """Call ``func(*args, **kwargs)`` in a worker and wait for its result.

        Args:
            func: The function to call.
            args: Its positional arguments.
            kwargs: Its keyword arguments (Ray's name for the stdlib's ``kwds``).
            kwds: The same, under the standard library's name.

        Returns:
            What ``func`` returned.

        Raises:
            ValueError: The pool is closed or terminated ("Pool not running").
            TypeError: Both ``kwargs`` and ``kwds`` were given.
            Exception: Whatever ``func`` raised.
        """
        return self.apply_async(func, args, kwargs, kwds=kwds).get()

    def apply_async(self, func, args=None, kwargs=None, callback=None, error_callback=None, *,
                    kwds=None):
        """Call ``func(*args, **kwargs)`` in a worker; return at once.

        Args:
            func: The function to call.
            args: Its positional arguments.
            kwargs: Its keyword arguments (Ray's name for the stdlib's ``kwds``).
            callback: Called with the result when it succeeds (on the pool's thread).
            error_callback: Called with the exception when it fails (on the pool's thread).
            kwds: The keyword arguments, under the standard library's name.

        Returns:
            An :class:`AsyncResult`.

        Raises:
            ValueError: The pool is closed or terminated ("Pool not running").
            TypeError: Both ``kwargs`` and ``kwds`` were given.
        """
        self._check_running()
        if kwargs is not None and kwds is not None:
            raise TypeError("Pass the keyword arguments as kwargs= or as kwds=, not both.")
        args = () if args is None else tuple(args)
        kwargs = dict(kwds if kwargs is None and kwds is not None else kwargs or {})
        result = AsyncResult(1, True, callback, error_callback)
        self._submit([Unit(result, 0, 1, (_APPLY, func, [(args, kwargs)]))], soon=True)
        return result

    def _chunk(self, func, iterable, chunksize, mode):
        """The units of a map over ``iterable``, and their count."""
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:
            chunksize = _default_chunksize(len(iterable), self._processes)
        else:
            _check_positive_int(chunksize, "chunksize")
        func = _pickled_function(func)
        iterator = iter(iterable)
        payloads = []
        while True:
            items = list(itertools.islice(iterator, chunksize))
            if not items:
                return payloads
            payloads.append((mode, func, items))

    def _map_async(self, func, iterable, chunksize, mode, callback, error_callback):
        self._check_running()
        payloads = self._chunk(func, iterable, chunksize, mode)
        result = AsyncResult(len(payloads), False, callback, error_callback)
        if payloads:
            self._submit([Unit(result, index, len(payload[2]), payload)
                          for index, payload in enumerate(payloads)])
        return result

    def map(self, func, iterable, chunksize=None):
        """``[func(x) for x in iterable]``, run in the workers; waits for every result.

        Args:
            func: The function to call on each item.
            iterable: The items (an iterator is read to its end first).
            chunksize: Items per task sent to a worker. Default: the items split into
                about four tasks per worker.

        Returns:
            The results, in the order of the items.

        Raises:
            ValueError: The pool is closed or terminated, or ``chunksize`` is below 1.
            Exception: The first error ``func`` raised.
        """
        return self._map_async(func, iterable, chunksize, _MAP, None, None).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        """Like :meth:`map`, but returns at once.

        Args:
            func: The function to call on each item.
            iterable: The items.
            chunksize: Items per task sent to a worker (see :meth:`map`).
            callback: Called with the list of results when all succeed.
            error_callback: Called with the first exception when one fails.

        Returns:
            An :class:`AsyncResult` whose ``get()`` is the list of results.

        Raises:
            ValueError: The pool is closed or terminated, or ``chunksize`` is below 1.
        """
        return self._map_async(func, iterable, chunksize, _MAP, callback, error_callback)

    def starmap(self, func, iterable, chunksize=None):
        """``[func(*args) for args in iterable]``, run in the workers.

        Args:
            func: The function to call on each argument tuple.
            iterable: The argument tuples.
            chunksize: Items per task sent to a worker (see :meth:`map`).

        Returns:
            The results, in the order of the items.

        Raises:
            ValueError: The pool is closed or terminated, or ``chunksize`` is below 1.
            Exception: The first error ``func`` raised.
        """
        return self._map_async(func, iterable, chunksize, _STARMAP, None, None).get()

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None):
        """Like :meth:`starmap`, but returns at once.

        Args:
            func: The function to call on each argument tuple.
            iterable: The argument tuples.
            chunksize: Items per task sent to a worker (see :meth:`map`).
            callback: Called with the list of results when all succeed.
            error_callback: Called with the first exception when one fails.

        Returns:
            An :class:`AsyncResult`.

        Raises:
            ValueError: The pool is closed or terminated, or ``chunksize`` is below 1.
        """
        return self._map_async(func, iterable, chunksize, _STARMAP, callback,
                               error_callback)

    def imap(self, func, iterable, chunksize=1):
        """Like :meth:`map`, but returns an iterator and reads ``iterable`` lazily.

        Args:
            func: The function to call on each item.
            iterable: The items; may be endless.
            chunksize: Items per task sent to a worker.

        Returns:
            An :class:`IMapIterator` over the results, in the order of the items.

        Raises:
            ValueError: The pool is closed or terminated, or ``chunksize`` is below 1.
        """
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        """Like :meth:`imap`, but results come in the order they complete.

        Args:
            func: The function to call on each item.
            iterable: The items; may be endless.
            chunksize: Items per task sent to a worker.

        Returns:
            An :class:`IMapUnorderedIterator` over the results.

        Raises:
            ValueError: The pool is closed or terminated, or ``chunksize`` is below 1.
        """
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(self, iterator_class, func, iterable, chunksize):
        self._check_running()
        if isinstance(chunksize, int) and not isinstance(chunksize, bool) and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        _check_positive_int(chunksize, "chunksize")
        iterator = iterator_class(IMAP_LOOKAHEAD_PER_WORKER * self._processes)
        source = iter(iterable)
        func = _pickled_function(func)
        with self._lock:
            self._check_running()
            self._feeders += 1
            self._iterators = [it for it in self._iterators if it._total is None]
            self._iterators.append(iterator)
        threading.Thread(target=self._feed, args=(iterator, func, source, chunksize),
                         name="purerun-pool-feeder", daemon=True).start()
        return iterator

    def _feed(self, iterator, func, source, chunksize):
        """Read ``source`` in chunks and submit them, staying within the lookahead."""
        error = None
        index = 0
        try:
            while iterator._wait_for_room():
                try:
                    items = list(itertools.islice(source, chunksize))
                except Exception as exc:
                    error = exc
                    break
                if not items:
                    break
                unit = Unit(iterator, index, len(items), (_MAP, func, items))
                with self._lock:
                    if self._state == "TERMINATE":
                        break
                    iterator._fed(1)
                    self._dispatcher.submit_soon([unit])
                index += 1
        finally:
            iterator._feed_ended(error)
            with self._lock:
                self._feeders -= 1
                close = self._state == "CLOSE" and self._feeders == 0
            if close:
                self._dispatcher.close()

    # -- ending ------------------------------------------------------------------------------

    def close(self):
        """Accept no more work; the workers exit once everything submitted has run."""
        with self._lock:
            if self._state != "RUN":
                return
            self._state = "CLOSE"
            close = self._feeders == 0  # else the last feeder to finish closes
        if close:
            self._dispatcher.close()

    def terminate(self):
        """Stop the workers at once; unfinished results fail with ``ActorDiedError``."""
        with self._lock:
            if self._state == "TERMINATE":
                return
            self._state = "TERMINATE"
            iterators, self._iterators = self._iterators, []
        self._dispatcher.terminate()
        for iterator in iterators:
            iterator._stop_feeding()
        thread = self._dispatcher.thread
        if thread.ident is not None and threading.current_thread() is not thread:
            thread.join()

    def join(self):
        """Wait for the workers to exit, after :meth:`close` or :meth:`terminate`.

        Raises:
            ValueError: The pool is still running (neither closed nor terminated).
        """
        if self._state == "RUN":
            raise ValueError("Pool is still running")
        if threading.current_thread() is self._dispatcher.thread:
            raise RuntimeError("Pool.join() cannot be called from a pool callback")
        if self._dispatcher.thread.ident is not None:
            self._dispatcher.thread.join()
        stopping = self._dispatcher.stopping
        if stopping:
            purerun.wait(stopping, num_returns=len(stopping))
            self._dispatcher.stopping = []
