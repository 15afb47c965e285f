"""ObjectRef: a reference to a value in the object store, as in Ray.

A runtime object, not a mere name: each one is counted by the client that made it
(``Client.new_ref``/``borrow_ref``), its ``__del__`` tells that client it is gone, and its
``__reduce__`` records it while a value that contains it is serialized, so that the node
keeps the object alive for as long as the containing value lives. ``purerun.ObjectRef`` is
this class.
"""

from purerun.core import context, serialization
from purerun.core.ids import TaskID


class ObjectRef:
    """A reference to an object that a task returns or ``put`` stores.

    Hashable and comparable by id; passing it to a task as a top-level argument passes its
    value, passing it inside a container passes the reference. ``await ref`` works in asyncio
    code and ``ref.future()`` gives a ``concurrent.futures.Future``.

    In asyncio code a ref also behaves as an asyncio future of its value (``done``,
    ``result``, ``add_done_callback``, ...), so that ``asyncio.wait``, ``asyncio.gather``,
    ``asyncio.wait_for`` and ``asyncio.as_completed`` take refs directly, on every Python
    version (Python 3.11 made ``asyncio.wait`` refuse plain awaitables). The asyncio
    future behind it is made on first use, bound to the loop running then.

    While any ObjectRef to an object exists in any process, the object is kept.
    """

    __slots__ = ("_id", "_client", "_loop_future", "__weakref__")

    @property
    def _asyncio_future_blocking(self):
        # What asyncio.isfuture looks at. Inside a running loop a ref passes for a future
        # (False, as on a future no task waits on); outside one it is None, so that
        # loop.run_until_complete(ref) and ensure_future(ref, loop=...) wrap it in a task
        # bound to the loop they are given, as any awaitable.
        import asyncio
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None
        return False

    @_asyncio_future_blocking.setter
    def _asyncio_future_blocking(self, value):
        pass  # set by asyncio only on futures a task awaits, which a ref never is itself

    def __init__(self, object_id: bytes, _client=None):
        # The client counted this reference when it made it; see Client.new_ref/borrow_ref.
        self._id = object_id
        self._client = _client
        self._loop_future = None  # (loop, asyncio future of the value), once asyncio asks

    def __del__(self):
        client = self._client
        if client is not None:
            client.drop_ref(self._id)

    def binary(self) -> bytes:
        """The object's id.

        Returns:
            The id as bytes (20 of them: the task id of the task that makes the object,
            then the index of the return value).
        """
        return self._id

    def hex(self) -> str:
        """The object's id as a hexadecimal string.

        Returns:
            ``self.binary().hex()``.
        """
        return self._id.hex()

    def task_id(self) -> TaskID:
        """The id of the task that makes this object (for ``put``: of the put itself).

        Returns:
            A TaskID.
        """
        return TaskID(self._id[:-4])

    def is_nil(self) -> bool:
        """Whether this is the nil reference (an id of all 0xff bytes)."""
        return self._id == b"\xff" * len(self._id)

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and self._id == other._id

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        recording = serialization.recording_refs()
        if recording is not None:
            recording.append(self._id)
        elif self._client is not None:
            # Pickled by someone else (a multiprocessing queue, a file): the ref may reach
            # another process by a way that does not pass through our node connection, so
            # whatever this process still has queued for the node (a batched put of this
            # very object) leaves first; a direct task's return is made known to it.
            self._client.publish_ref(self._id)
            self._client.flush()
        return _rebuild_ref, (self._id,)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def future(self):
        """A ``concurrent.futures.Future`` that completes with this object's value.

        Returns:
            The future; its result is the value, or it raises the task's error.
        """
        client = self._client or context.get_or_start()
        return client.future(self)

    def as_future(self):
        """An asyncio future for the value, bound to the running event loop.

        Returns:
            The asyncio future; its result is the value, or it raises the task's error.
        """
        import asyncio  # not at the top: most programs never need it, and it is slow to import
        return _asyncio_future_of(self.future(), asyncio.get_running_loop())

    def __await__(self):
        future = self._asyncio_future()
        if future.cancelled():
            # An earlier wait was cancelled (wait_for's timeout): this is a new wait.
            self._loop_future = None
            future = self._asyncio_future()
        return future.__await__()

    # -- asyncio: the Future interface, delegated to one asyncio future of the value -------

    def _asyncio_future(self):
        import asyncio
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        cached = self._loop_future
        if cached is not None and (loop is None or cached[0] is loop):
            return cached[1]
        if loop is None:
            raise RuntimeError("An ObjectRef is used as an asyncio future outside a running "
                               "event loop; use purerun.get(ref) or ref.future() there.")
        future = _asyncio_future_of(self.future(), loop)
        self._loop_future = (loop, future)
        return future

    def get_loop(self):
        """The event loop the ref's asyncio future is bound to."""
        return self._asyncio_future().get_loop()

    def done(self):
        """Whether the value (or the task's error) is here (asyncio future interface)."""
        return self._asyncio_future().done()

    def result(self):
        """The value, once ``done()`` (asyncio future interface; raises the task's error)."""
        return self._asyncio_future().result()

    def exception(self):
        """The task's error, or None, once ``done()`` (asyncio future interface)."""
        return self._asyncio_future().exception()

    def cancelled(self):
        """Whether the ref's asyncio future was cancelled (asyncio future interface)."""
        return self._asyncio_future().cancelled()

    def cancel(self, msg=None):
        """Stop waiting: cancel the ref's asyncio future, not the task behind it.

        Returns:
            False if the value had already arrived, else True. Use ``purerun.cancel(ref)``
            to cancel the task.
        """
        return self._asyncio_future().cancel(msg)

    def add_done_callback(self, fn, *, context=None):
        """Call ``fn(ref)`` once the value is here (asyncio future interface)."""
        future = self._asyncio_future()
        # The callback gets this ref, as a future's gets that future: asyncio's functions
        # (as_completed, wait) look the argument up among what they were given.
        future.add_done_callback(_CallWithRef(fn, self), context=context)

    def remove_done_callback(self, fn):
        """Undo ``add_done_callback(fn)``; returns how many were removed."""
        return self._asyncio_future().remove_done_callback(_CallWithRef(fn, self))


def _asyncio_future_of(source, loop):
    """An asyncio future on ``loop`` that gets the outcome of the concurrent ``source``.

    Unlike ``asyncio.wrap_future``, cancelling it does not cancel ``source``: the client
    completes that one when the value comes, and a cancelled wait (wait_for's timeout)
    must only stop this waiter.
    """
    future = loop.create_future()

    def copy(done):
        if future.cancelled():
            return
        if done.cancelled():
            future.cancel()
            return
        exc = done.exception()
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(done.result())

    def arrived(done):
        try:
            loop.call_soon_threadsafe(copy, done)
        except RuntimeError:  # the loop was closed: nobody waits any more
            pass

    source.add_done_callback(arrived)
    return future


class _CallWithRef:
    """A done-callback of a ref's asyncio future that passes the ref on instead; equal to
    another for the same function and ref, so that remove_done_callback finds it."""

    __slots__ = ("fn", "ref")

    def __init__(self, fn, ref):
        self.fn = fn
        self.ref = ref

    def __call__(self, _future):
        self.fn(self.ref)

    def __eq__(self, other):
        return isinstance(other, _CallWithRef) and other.fn == self.fn and \
            other.ref is self.ref

    def __hash__(self):
        return hash((self.fn, id(self.ref)))


def _rebuild_ref(object_id):
    client = context.client
    if client is None:
        # Unpickled outside a runtime (e.g. plain pickle.loads in user code): a dead reference.
        return ObjectRef(object_id, None)
    return client.borrow_ref(object_id)


# The id of the nil reference, which ObjectRefGenerator._next_sync returns on a timeout.
NIL_ID = b"\xff" * 20


class ObjectRefGenerator:
    """The refs a streaming generator call yields, one per ``yield``, as in Ray.

    ``.remote()`` of a generator function or method (``num_returns="streaming"``) returns
    one. ``next(gen)`` and ``for ref in gen`` block until the next value exists and give
    its ObjectRef; ``async for`` does the same in asyncio code. Values arrive as the call
    makes them, not when it ends. An error raised inside the generator is the value of the
    ref after the last good one (``get`` raises it), and iteration stops there. It can be
    passed to ``purerun.wait`` (ready when its next ref is), and ``purerun.cancel``.

    Not serializable: only the process that made the call iterates it. Not thread-safe.
    Refs it never handed out are freed when it is garbage-collected.
    """

    def __init__(self, completed_ref, backpressure=-1):
        self._ref = completed_ref          # return 0: ready when the call has ended
        self._client = completed_ref._client
        self._task_id = completed_ref._id[:-4]
        self._next = 0                     # refs handed out so far
        self._done = False                 # the end, or an error ref, was reached
        self._backpressure = backpressure  # > 0: the call pauses until we take its items

    def __iter__(self):
        return self

    def __next__(self):
        return self._next_sync()

    def _next_sync(self, timeout_s=None):
        """The next ref, waiting at most ``timeout_s`` seconds (None: for ever).

        Returns:
            The next ObjectRef; the nil ObjectRef (``ref.is_nil()``) if it did not come
            within ``timeout_s``.

        Raises:
            StopIteration: the generator has ended.
        """
        ref = self._client.stream_next(self, timeout_s)
        if ref is None:
            return ObjectRef(NIL_ID)
        return ref

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._next_async()

    async def _next_async(self, timeout_s=None, sleep_interval_s=0.0001):
        """As ``_next_sync``, awaited; raises StopAsyncIteration at the end.

        ``sleep_interval_s`` is accepted for compatibility with Ray: the wait here is woken
        by the item's arrival, not by polling.
        """
        import asyncio
        arrived = self._client.stream_future(self)   # None: here already
        if arrived is not None:
            try:
                await asyncio.wait_for(asyncio.wrap_future(arrived), timeout_s)
            except asyncio.TimeoutError:
                return ObjectRef(NIL_ID)
        try:
            return self._next_sync(0)
        except StopIteration:
            raise StopAsyncIteration from None

    def completed(self):
        """A ref that is ready when the call has ended; ``get`` of it raises the call's
        error if it failed (a worker crash, a cancellation, an exception)."""
        return self._ref

    def next_ready(self):
        """Whether the next ``next()`` returns (or stops) without waiting."""
        return self._done or self._client.stream_has_next(self)

    def is_finished(self):
        """Whether every ref was handed out and the generator has ended."""
        return self._done or self._client.stream_at_end(self)

    def task_id(self):
        """The TaskID of the generator call."""
        return self._ref.task_id()

    @property
    def _id(self):
        # What purerun.wait waits for: the next item (which the owner is always sent), or
        # the call's end once every ref was handed out.
        return self._client.stream_waitable(self)

    def send(self, value):
        raise NotImplementedError("`gen.send` is not supported.")

    def throw(self, *args):
        raise NotImplementedError("`gen.throw` is not supported.")

    def close(self):
        raise NotImplementedError("`gen.close` is not supported.")

    def __reduce__(self):
        raise TypeError("An ObjectRefGenerator cannot be serialized: only the process that "
                        "called .remote() can iterate it. Pass the refs it yields instead.")

    def __repr__(self):
        return f"ObjectRefGenerator({self._ref._id.hex()})"

    def __del__(self):
        client = getattr(self, "_client", None)
        if client is not None:
            client.close_stream(self._task_id, self._next)


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` call's ref: the refs it yielded, in order.

    Iterate it (``for ref in purerun.get(dynamic_ref)``) and ``get`` each ref; ``len`` is
    their number. It can be passed to other tasks like any value holding refs.
    """

    def __init__(self, refs):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self):
        return len(self._refs)

    def __repr__(self):
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
