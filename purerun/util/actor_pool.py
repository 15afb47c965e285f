"""ActorPool: spread work over a fixed set of actors, as ``ray.util.ActorPool``.

The pool never calls an actor itself: the caller's ``fn(actor, value)`` does, and returns
the call's ObjectRef (or a list of them, for ``num_returns`` > 1). The pool only decides
which idle actor gets the next value and hands results back.

Bookkeeping, all in the caller's process (the pool is not thread-safe, as Ray's is not):

* ``_idle``: actors with no call in flight, handed out last-in first-out;
* ``_in_flight``: the key of each call in flight -> ``(submission index, actor, result)``;
* ``_by_index``: submission index -> key, for ``get_next``'s order;
* ``_waiting``: ``(fn, value)`` pairs submitted while every actor was busy, started in
  order as actors come back;
* ``_ready_refs``: refs in flight that a wait has already seen finished.

Submission indices count calls as they start; ``get_next`` returns index
``_next_return_index`` next (as in Ray, ``get_next_unordered`` moves it past what it took).

An actor comes back to ``_idle`` when its result is handed out, whether the call returned
or raised; an actor that died (``RayActorError``, ``ActorDiedError`` among them) is dropped
for good, so that later work is not sent to it.
"""

import time

from purerun import api
from purerun.exceptions import RayActorError

__all__ = ["ActorPool"]

_TIMEOUT_MESSAGE = "Timed out waiting for result"


class ActorPool:
    """Run work over a fixed pool of actors.

    Each piece of work is ``fn(actor, value)``: a function that calls a method of the actor
    it is given and returns that call's ObjectRef. The actor counts as busy until its result
    has been taken with ``get_next`` / ``get_next_unordered`` (or through ``map``).

    Args:
        actors: the actor handles to use (a list or any iterable).

    Example:
        >>> pool = ActorPool([Doubler.remote(), Doubler.remote()])
        >>> list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
        [2, 4, 6, 8]
    """

    def __init__(self, actors):
        self._idle = list(actors)
        self._in_flight = {}
        self._by_index = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._waiting = []
        # Refs of calls in flight already seen finished by get_next_unordered's waits.
        self._ready_refs = set()

    # -- submitting -----------------------------------------------------------------------------

    def map(self, fn, values):
        """Apply ``fn`` to every value on the pool's actors; results in the values' order.

        Results still pending from earlier submissions are dropped first. Every value is
        submitted at once (those that find no idle actor wait in the pool); the returned
        generator then yields the results in order, blocking for each.

        Args:
            fn: ``fn(actor, value)`` calls a method of ``actor`` and returns its ObjectRef.
            values: the values to apply it to.

        Returns:
            A generator of the results. An error a call raised is raised when its result
            comes up, which ends the generator; the results after it stay in the pool
            for ``get_next``.
        """
        self._drop_pending()
        for value in values:
            self.submit(fn, value)

        def results():
            while self.has_next():
                yield self.get_next()
        return results()

    def map_unordered(self, fn, values):
        """Like ``map``, but yields each result as soon as it is ready, in any order.

        Args:
            fn: ``fn(actor, value)`` calls a method of ``actor`` and returns its ObjectRef.
            values: the values to apply it to.

        Returns:
            A generator of the results, in completion order.
        """
        self._drop_pending()
        for value in values:
            self.submit(fn, value)

        def results():
            while self.has_next():
                yield self.get_next_unordered()
        return results()

    def submit(self, fn, value):
        """Schedule ``fn(actor, value)`` on an idle actor, or when one becomes idle.

        Take the result with ``get_next`` (in submission order) or ``get_next_unordered``.

        Args:
            fn: ``fn(actor, value)`` calls a method of ``actor`` and returns its ObjectRef
                (or a list of ObjectRefs, for a method with several returns).
            value: the value to compute a result for.

        Raises:
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"fn must be a callable taking (actor, value), got "
                            f"{type(fn).__name__}")
        if self._idle:
            self._start(self._idle.pop(), fn, value)
        else:
            self._waiting.append((fn, value))

    def _start(self, actor, fn, value):
        result = fn(actor, value)
        key = tuple(result) if isinstance(result, list) else result
        index = self._next_task_index
        self._in_flight[key] = (index, actor, result)
        self._by_index[index] = key
        self._next_task_index += 1

    def _drop_pending(self):
        """Drop every result not yet taken and all waiting work; give the actors back
        (``map``'s fresh start)."""
        self._waiting.clear()
        actors = [actor for _, actor, _ in self._in_flight.values()]
        self._in_flight.clear()
        self._by_index.clear()
        self._ready_refs.clear()
        self._idle.extend(actors)
        self._next_return_index = self._next_task_index

    # -- taking results -------------------------------------------------------------------------

    def has_next(self):
        """Whether some submitted work has a result not yet taken.

        Returns:
            True if ``get_next`` / ``get_next_unordered`` has something to return.
        """
        return bool(self._in_flight) or bool(self._waiting)

    def get_next(self, timeout=None, ignore_if_timedout=False):
        """The result of the next piece of work, in submission order.

        Args:
            timeout: seconds to wait for it; None waits as long as it takes.
            ignore_if_timedout: on a timeout, give up on that piece of work (its result
                is never returned; its actor is given back) before raising TimeoutError.

        Returns:
            The result (a list of values, if ``fn`` returned a list of ObjectRefs).

        Raises:
            StopIteration: there is nothing left to return.
            ValueError: ``get_next_unordered`` already returned the latest submission's
                result (call ``get_next_unordered`` until the pool is empty).
            TimeoutError: the result was not ready within ``timeout``.
            Whatever the call raised (RayTaskError, RayActorError, ...).
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        self._check_runnable()
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after "
                             "get_next_unordered().")
        _check_timeout(timeout)
        key = self._by_index[self._next_return_index]
        _, actor, result = self._in_flight[key]
        if timeout is not None and not _ready(key, timeout):
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MESSAGE)
            self._forget(key)
            self._give_back(actor)
            raise TimeoutError(f"{_TIMEOUT_MESSAGE}. The task {result} has been ignored.")
        self._forget(key)
        return self._take(result, actor)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        """The result of any piece of work that is ready (the first one to finish).

        ``get_next`` afterwards goes on after the latest submission taken here, and
        raises ValueError if that was the latest one submitted.

        Args:
            timeout: seconds to wait for one; None waits as long as it takes.
            ignore_if_timedout: on a timeout, give up on the oldest piece of work in flight
                (its actor is given back) before raising TimeoutError.

        Returns:
            The result (a list of values, if ``fn`` returned a list of ObjectRefs).

        Raises:
            StopIteration: there is nothing left to return.
            TimeoutError: no result was ready within ``timeout``.
            Whatever the call raised (RayTaskError, RayActorError, ...).
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        _check_timeout(timeout)
        self._check_runnable()
        ready_key = self._first_ready(timeout)
        if ready_key is None:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MESSAGE)
            oldest = self._by_index[min(self._by_index)]
            _, actor, result = self._in_flight[oldest]
            self._forget(oldest, unordered=True)
            self._give_back(actor)
            raise TimeoutError(f"{_TIMEOUT_MESSAGE}. The task {result} has been ignored.")
        _, actor, result = self._in_flight[ready_key]
        self._forget(ready_key, unordered=True)
        return self._take(result, actor)

    def _check_runnable(self):
        if not self._in_flight:  # work waits, but every actor died or was popped
            raise RuntimeError(f"{len(self._waiting)} submitted value(s) wait for an actor, "
                               "but the pool has none left (they died or were popped); "
                               "push() an actor to run them.")

    def _first_ready(self, timeout):
        """The key of a finished call in flight, the first submitted among those ready;
        None if none finished within ``timeout``."""
        refs_of = {key: (key if isinstance(key, tuple) else (key,)) for key in self._in_flight}
        ready = self._ready_refs
        pending = [ref for refs in refs_of.values() for ref in refs if ref not in ready]
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        while True:
            # A call with several returns is ready when all of them are.
            complete = [key for key, refs in refs_of.items() if all(r in ready for r in refs)]
            if complete:
                return min(complete, key=lambda key: self._in_flight[key][0])
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not pending or (waited and left == 0.0):
                return None
            got, pending = api.wait(pending, num_returns=1, timeout=left)
            waited = True
            if not got:
                return None
            ready.update(got)
            if pending:  # whatever else finished meanwhile, so later calls need not wait
                more, pending = api.wait(pending, num_returns=len(pending), timeout=0)
                ready.update(more)

    def _forget(self, key, unordered=False):
        index, _, _ = self._in_flight.pop(key)
        del self._by_index[index]
        for ref in (key if isinstance(key, tuple) else (key,)):
            self._ready_refs.discard(ref)
        if unordered:
            # As in Ray: get_next goes on after the latest result taken, and refuses once
            # nothing was submitted after it.
            self._next_return_index = max(self._next_return_index, index + 1)
        else:
            self._next_return_index += 1
        if not self._in_flight and not self._waiting:
            # Empty again: the next submission is the next in order.
            self._next_return_index = self._next_task_index

    def _take(self, result, actor):
        alive = True
        try:
            return api.get(result)
        except RayActorError:
            alive = False
            raise
        finally:
            self._give_back(actor, alive)

    def _give_back(self, actor, alive=True):
        if alive:
            self._idle.append(actor)
        while self._waiting and self._idle:
            fn, value = self._waiting.pop(0)
            self._start(self._idle.pop(), fn, value)

    # -- the pool's actors ----------------------------------------------------------------------

    def has_free(self):
        """Whether an actor is idle and no submitted work is waiting for one.

        Returns:
            True if ``submit`` would start work at once (and ``pop_idle`` return an actor).
        """
        return bool(self._idle) and not self._waiting

    def pop_idle(self):
        """Take an idle actor out of the pool.

        Returns:
            The actor, or None if none is free (see ``has_free``).
        """
        if self.has_free():
            return self._idle.pop()
        return None

    def push(self, actor):
        """Add an actor to the pool; waiting work, if any, starts on it.

        Args:
            actor: an actor handle not already in this pool.

        Raises:
            ValueError: the actor already belongs to this pool.
        """
        busy = [entry[1] for entry in self._in_flight.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._give_back(actor)


def _check_timeout(timeout):
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be None or a number of seconds, got "
                        f"{type(timeout).__name__}")
    if timeout < 0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout}")


def _ready(key, timeout):
    refs = list(key) if isinstance(key, tuple) else [key]
    ready, _ = api.wait(refs, num_returns=len(refs), timeout=timeout)
    return len(ready) == len(refs)


