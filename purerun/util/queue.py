"""A first-in, first-out queue shared by tasks and actors, as ``ray.util.queue``.

::

    producer ── put(item) ──▶ ┌──────────────────────────┐ ◀── get() ── consumer
    (driver, task, actor,     │ _QueueActor (asyncio)     │    (any process, any node)
     any node)                │  one asyncio.Queue        │
                              └──────────────────────────┘

The items live in one asyncio actor (0 CPU unless ``actor_options`` say otherwise). Every
``Queue`` method is one call of that actor; ``Queue`` itself holds only the actor's handle,
so it pickles, and every copy (in a task, in another actor, on another node) is the same
queue. A blocking ``put`` / ``get`` is a coroutine waiting in the actor, so any number of
them wait at once without holding a thread there; the caller waits for the call's result.

The actor answers "full" and "empty" as plain values rather than raising: an exception
would cross processes as a RayTaskError with its traceback, and the caller raises ``Full``
or ``Empty`` itself, with no remote frames in it.
"""

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable

from purerun import api

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdlib_queue.Empty):
    """Raised when getting from an empty Queue: at once without blocking, or on timeout.

    A subclass of the standard library's ``queue.Empty``, so code written for
    ``queue.Queue`` catches it.
    """


class Full(_stdlib_queue.Full):
    """Raised when putting into a full Queue: at once without blocking, or on timeout.

    A subclass of the standard library's ``queue.Full``.
    """


class Queue:
    """A first-in, first-out queue that tasks and actors share, backed by an actor.

    It behaves like ``asyncio.Queue`` / ``queue.Queue``: ``put`` blocks while the queue is
    full, ``get`` while it is empty, each until a timeout if one is given; the ``_nowait``
    forms raise ``Full`` / ``Empty`` at once. The batch forms move many items in one call,
    which is much faster than one call per item. Pass the Queue to tasks and actors like
    any other argument.

    Args:
        maxsize: the most items the queue holds; 0 (the default) means no limit.
        actor_options: options for the queue's actor, as ``.options(...)`` takes them,
            e.g. ``{"num_cpus": 1}`` or ``{"name": "jobs", "lifetime": "detached"}``.
            The actor reserves no CPU unless they say so.

    Raises:
        TypeError: ``maxsize`` is not an int, or ``actor_options`` not a dict.
        ValueError: ``maxsize`` is negative, or an actor option is invalid.

    Example:
        >>> q = Queue(maxsize=100)
        >>> for i in range(10):
        ...     q.put(i)
        >>> [q.get() for _ in range(10)] == list(range(10))
        True
    """

    def __init__(self, maxsize: int = 0, actor_options=None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, got {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0: no limit), got {maxsize}")
        if actor_options is None:
            actor_options = {}
        elif not isinstance(actor_options, dict):
            raise TypeError(f"actor_options must be a dict of actor options, got "
                            f"{type(actor_options).__name__}")
        options = {"num_cpus": 0, **actor_options}
        self.maxsize = maxsize
        self.actor = _actor_class().options(**options).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def __reduce__(self):
        return _rebuild_queue, (self.maxsize, self.actor)

    def _handle(self):
        actor = self.actor
        if actor is None:
            raise RuntimeError("This Queue has been shut down; make a new Queue.")
        return actor

    def size(self) -> int:
        """The number of items in the queue."""
        return api.get(self._handle().qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue (as ``size``)."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item."""
        return api.get(self._handle().empty.remote())

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (never, when maxsize is 0)."""
        return api.get(self._handle().full.remote())

    def put(self, item, block: bool = True, timeout=None) -> None:
        """Add an item at the end of the queue.

        When the queue is full and ``block`` is true, wait until there is room, at most
        ``timeout`` seconds (None: as long as it takes). Producers blocked on a full queue
        get their turn in no particular order.

        Args:
            item: the item (any serializable value).
            block: wait for room; if false, fail at once when the queue is full.
            timeout: the most seconds to wait, when blocking.

        Raises:
            Full: the queue is full and ``block`` is false, or it stayed full for
                ``timeout`` seconds.
            ValueError: ``timeout`` is negative.
        """
        if not block:
            if not api.get(self._handle().put_nowait.remote(item)):
                raise Full(f"The queue is full (maxsize {self.maxsize}).")
            return
        timeout = _check_timeout(timeout)
        if not api.get(self._handle().put.remote(item, timeout)):
            raise Full(f"The queue stayed full (maxsize {self.maxsize}) for {timeout} s.")

    async def put_async(self, item, block: bool = True, timeout=None) -> None:
        """``put`` for asyncio code: awaiting it does not block the event loop.

        Args and Raises: as ``put``.
        """
        if not block:
            if not await self._handle().put_nowait.remote(item):
                raise Full(f"The queue is full (maxsize {self.maxsize}).")
            return
        timeout = _check_timeout(timeout)
        if not await self._handle().put.remote(item, timeout):
            raise Full(f"The queue stayed full (maxsize {self.maxsize}) for {timeout} s.")

    def get(self, block: bool = True, timeout=None):
        """Remove and return the item at the front of the queue.

        When the queue is empty and ``block`` is true, wait for an item, at most
        ``timeout`` seconds (None: as long as it takes). Consumers blocked on an empty
        queue are served in no particular order.

        Args:
            block: wait for an item; if false, fail at once when the queue is empty.
            timeout: the most seconds to wait, when blocking.

        Returns:
            The item.

        Raises:
            Empty: the queue is empty and ``block`` is false, or it stayed empty for
                ``timeout`` seconds.
            ValueError: ``timeout`` is negative.
        """
        if not block:
            found, item = api.get(self._handle().get_nowait.remote())
            if not found:
                raise Empty("The queue is empty.")
            return item
        timeout = _check_timeout(timeout)
        found, item = api.get(self._handle().get.remote(timeout))
        if not found:
            raise Empty(f"The queue stayed empty for {timeout} s.")
        return item

    async def get_async(self, block: bool = True, timeout=None):
        """``get`` for asyncio code: awaiting it does not block the event loop.

        Args, Returns and Raises: as ``get``.
        """
        if not block:
            found, item = await self._handle().get_nowait.remote()
            if not found:
                raise Empty("The queue is empty.")
            return item
        timeout = _check_timeout(timeout)
        found, item = await self._handle().get.remote(timeout)
        if not found:
            raise Empty(f"The queue stayed empty for {timeout} s.")
        return item

    def put_nowait(self, item) -> None:
        """``put(item, block=False)``.

        Raises:
            Full: the queue is full.
        """
        self.put(item, block=False)

    def put_nowait_batch(self, items) -> None:
        """Add several items at the end of the queue, in order, in one call.

        All of them or none: if they do not all fit, none is added.

        Args:
            items: the items (any iterable; it is read to the end first).

        Raises:
            TypeError: ``items`` is not iterable.
            Full: the items do not all fit (``maxsize`` minus the items already in).
        """
        if not isinstance(items, Iterable):
            raise TypeError(f"Argument 'items' must be an Iterable, got "
                            f"{type(items).__name__}")
        items = list(items)
        size = api.get(self._handle().put_nowait_batch.remote(items))
        if size is not None:
            raise Full(f"Cannot add {len(items)} items to queue of size {size} and maxsize "
                       f"{self.maxsize}.")

    def get_nowait(self):
        """``get(block=False)``.

        Raises:
            Empty: the queue is empty.
        """
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list:
        """Remove and return ``num_items`` items from the front of the queue, in one call.

        All of them or none: if the queue holds fewer, none is removed.

        Args:
            num_items: how many items to take (0 gives an empty list).

        Returns:
            The items, in queue order.

        Raises:
            TypeError: ``num_items`` is not an int.
            ValueError: ``num_items`` is negative.
            Empty: the queue holds fewer than ``num_items`` items.
        """
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError(f"Argument 'num_items' must be an int, got "
                            f"{type(num_items).__name__}")
        if num_items < 0:
            raise ValueError(f"'num_items' must be nonnegative, got {num_items}")
        found, items = api.get(self._handle().get_nowait_batch.remote(num_items))
        if not found:
            raise Empty(f"Cannot get {num_items} items from queue of size {items}.")
        return items

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stop the queue's actor and release what it holds; items still in it are lost.

        Every copy of this Queue is then unusable: calls through other copies raise
        RayActorError, calls through this one RuntimeError. Calling it again does nothing.

        Args:
            force: kill the actor at once. Otherwise it is asked to exit after the calls
                already sent to it, and killed if it has not within ``grace_period_s``.
            grace_period_s: seconds to wait for that orderly exit.

        Raises:
            ValueError: ``grace_period_s`` is negative.
        """
        if grace_period_s is not None and grace_period_s < 0:
            raise ValueError(f"grace_period_s must be >= 0, got {grace_period_s}")
        actor = self.actor
        if actor is None:
            return
        self.actor = None
        if force:
            api.kill(actor, no_restart=True)
            return
        done = actor.__ray_terminate__.remote()
        ready, _ = api.wait([done], timeout=grace_period_s)
        if not ready:
            api.kill(actor, no_restart=True)


def _rebuild_queue(maxsize, actor):
    queue = Queue.__new__(Queue)
    queue.maxsize = maxsize
    queue.actor = actor
    return queue


def _check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"'timeout' must be None or a number of seconds, got "
                        f"{type(timeout).__name__}")
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return timeout


class _QueueActor:
    """The queue's items, in the actor's event loop. Every answer is a plain value."""

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self._queue = None

    @property
    def queue(self):
        # Made on first use, in the event loop's thread: __init__ runs on another thread,
        # and before Python 3.10 an asyncio.Queue binds to the loop current where it is made.
        if self._queue is None:
            self._queue = asyncio.Queue(self.maxsize)
        return self._queue

    def qsize(self):
        return self.queue.qsize()

    def empty(self):
        return self.queue.empty()

    def full(self):
        return self.queue.full()

    async def put(self, item, timeout=None):
        """True once the item is in; False if there was no room within ``timeout``."""
        if not self.queue.full():  # the common case: no coroutine, no timer
            self.queue.put_nowait(item)
            return True
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def get(self, timeout=None):
        """(True, item); (False, None) if nothing came within ``timeout``."""
        if not self.queue.empty():
            return True, self.queue.get_nowait()
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return False, None

    def put_nowait(self, item):
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def put_nowait_batch(self, items):
        """None once all are in; the current size if they do not all fit."""
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            return self.queue.qsize()
        for item in items:
            self.queue.put_nowait(item)
        return None

    def get_nowait(self):
        if self.queue.empty():
            return False, None
        return True, self.queue.get_nowait()

    def get_nowait_batch(self, num_items):
        """(True, items); (False, current size) if there are fewer than ``num_items``."""
        if num_items > self.queue.qsize():
            return False, self.queue.qsize()
        return True, [self.queue.get_nowait() for _ in range(num_items)]


_remote_actor_class = None


def _actor_class():
    """The remote class of the queue's actor, made once per process."""
    global _remote_actor_class
    if _remote_actor_class is None:
        _remote_actor_class = api.remote(_QueueActor)
    return _remote_actor_class
