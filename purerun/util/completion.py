"""Results as they finish: ``as_completed`` and ``map_unordered``, as in ``ray.util``.

Both are generators over ``wait``: each step waits until ``chunk_size`` of the refs still
pending are ready (or all that are left), yields those, and goes on with the rest. Within a
chunk, results come in the order the refs were given (``wait`` keeps it), not strictly in
completion order. Neither has a length; progress bars such as ``tqdm`` take ``total=``.
"""

from purerun import api

__all__ = ["as_completed", "map_unordered"]

# wait()'s own default is num_returns=1; a few more per call costs nothing and saves calls.
DEFAULT_CHUNK_SIZE = 10
# Tasks map_unordered keeps in flight before it waits for some: enough to keep a cluster
# busy, few enough that a long input does not flood the scheduler.
DEFAULT_BACKPRESSURE_SIZE = 100
# wait()'s keyword arguments besides num_returns, which chunk_size sets.
_WAIT_KWARGS = frozenset({"timeout", "fetch_local"})


def as_completed(refs, *, chunk_size=DEFAULT_CHUNK_SIZE, yield_obj_refs=False, **kwargs):
    """Yield the values of ``refs`` as they become ready, a chunk at a time.

    Use it instead of ``get`` on each ref in a loop, which waits for them one by one in
    the order given.

    Args:
        refs: the ObjectRefs to wait for (a list, or any sequence).
        chunk_size: how many ready refs each ``wait`` waits for (its ``num_returns``);
            fewer when fewer are left.
        yield_obj_refs: yield the ready ObjectRefs themselves instead of their values.
        **kwargs: passed on to every ``wait`` (``timeout``, ``fetch_local``); with a
            ``timeout``, a step that finds nothing ready yields nothing and waits again.

    Yields:
        Each ref's value (or the ref itself), every ref exactly once.

    Raises:
        ValueError: ``chunk_size`` is below 1, or ``num_returns`` is among ``kwargs``
            (``chunk_size`` is that).
        TypeError: ``chunk_size`` is not an int, or ``kwargs`` has a name ``wait`` does
            not take.
        Whatever getting a value raises (RayTaskError of a failed task, ...), when it
        comes up.
    """
    _check_chunk_size(chunk_size)
    _check_wait_kwargs(kwargs)
    return _as_completed(list(refs), chunk_size, yield_obj_refs, kwargs)


def _as_completed(pending, chunk_size, yield_obj_refs, wait_kwargs):
    while pending:
        ready, pending = _next_chunk(pending, chunk_size, yield_obj_refs, wait_kwargs)
        yield from ready


def map_unordered(fn, items, *, backpressure_size=DEFAULT_BACKPRESSURE_SIZE,
                  chunk_size=DEFAULT_CHUNK_SIZE, yield_obj_refs=False, **kwargs):
    """Run a remote function over ``items`` and yield the results as they finish.

    Submits ``fn.remote(item)`` for each item in turn; once ``backpressure_size`` tasks are
    in flight it waits for ``chunk_size`` of them and yields those before submitting more.
    When the items run out, the rest are yielded as they finish (``as_completed``). Items
    are read lazily, so an endless iterable works if the caller stops consuming.

    Args:
        fn: a remote function (``@purerun.remote``) taking one argument; use
            ``fn.options(...)`` to set its options.
        items: the arguments, one per task (any iterable).
        backpressure_size: tasks in flight before waiting for some; None never waits
            while there are items left.
        chunk_size: how many finished tasks each ``wait`` waits for.
        yield_obj_refs: yield the ObjectRefs instead of the values.
        **kwargs: passed on to every ``wait`` (``timeout``, ``fetch_local``).

    Yields:
        The result of each task (or its ObjectRef), in no particular order.

    Raises:
        ValueError: ``backpressure_size`` is not positive, ``chunk_size`` is below 1, or
            ``num_returns`` is among ``kwargs``.
        TypeError: ``fn`` has no ``.remote``, or a size is not an int.
        Whatever a task raised, when its result comes up.
    """
    if backpressure_size is None:
        limit = None
    elif isinstance(backpressure_size, bool) or not isinstance(backpressure_size, int):
        raise TypeError(f"backpressure_size must be None or a positive int, got "
                        f"{type(backpressure_size).__name__}")
    elif backpressure_size <= 0:
        raise ValueError(f"backpressure_size must be positive, got {backpressure_size}")
    else:
        limit = backpressure_size
    _check_chunk_size(chunk_size)
    _check_wait_kwargs(kwargs)
    if not callable(getattr(fn, "remote", None)):
        raise TypeError(f"fn must be a remote function (decorated with @purerun.remote), "
                        f"got {type(fn).__name__}")
    return _map_unordered(fn, items, limit, chunk_size, yield_obj_refs, kwargs)


def _map_unordered(fn, items, limit, chunk_size, yield_obj_refs, wait_kwargs):
    pending = []
    for item in items:
        pending.append(fn.remote(item))
        if limit is not None and len(pending) >= limit:
            ready, pending = _next_chunk(pending, chunk_size, yield_obj_refs, wait_kwargs)
            yield from ready
    yield from _as_completed(pending, chunk_size, yield_obj_refs, wait_kwargs)


def _next_chunk(pending, chunk_size, yield_obj_refs, wait_kwargs):
    """One wait: (the ready values or refs, the refs still pending)."""
    ready, pending = api.wait(pending, num_returns=min(chunk_size, len(pending)),
                              **wait_kwargs)
    if yield_obj_refs or not ready:
        return ready, pending
    return api.get(ready), pending


def _check_chunk_size(chunk_size):
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int >= 1, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _check_wait_kwargs(kwargs):
    if "num_returns" in kwargs:
        raise ValueError("as_completed and map_unordered wait for chunk_size results at a "
                         "time: pass chunk_size instead of num_returns.")
    unknown = sorted(set(kwargs) - _WAIT_KWARGS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}: the extra "
                        f"keyword arguments go to wait(), which takes "
                        f"{', '.join(sorted(_WAIT_KWARGS))}")
