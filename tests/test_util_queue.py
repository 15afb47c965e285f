"""purerun.util.queue on a real node: FIFO order, blocking and timeouts with Empty / Full,
the _nowait and batch forms, maxsize, the async forms, actor options, shutdown, and one
Queue shared by the driver, tasks and actors. (Across two nodes: tests/test_util_cluster.py.)

A get or put that must stay blocked is watched with ``wait(timeout=...)`` on its call; it
is then released by the test's own put or get, never by a sleep.
"""

import asyncio
import pickle
import queue as stdlib_queue
import time

import pytest

import purerun
from purerun.exceptions import RayActorError
from purerun.util.queue import Empty, Full, Queue

from helpers import wait_for

# Upper bound on anything that is meant to finish: turns a hang into a named failure.
CALL_TIMEOUT_S = 60
# How long a call that must stay blocked is watched. Only negative checks use it.
STILL_BLOCKED_S = 0.3
# A timeout that must expire (the queue stays empty or full meanwhile).
SHORT_TIMEOUT_S = 0.2


@pytest.fixture
def make_queue(node):
    """``make_queue(...)``: a Queue that is shut down when the test ends."""
    made = []

    def make(*args, **kwargs):
        q = Queue(*args, **kwargs)
        made.append(q)
        return q
    yield make
    for q in made:
        q.shutdown(force=True)


@purerun.remote
def produce(q, items):
    for item in items:
        q.put(item)
    return len(items)


@purerun.remote
def consume(q, n, timeout=None):
    return [q.get(timeout=timeout) for _ in range(n)]


@purerun.remote
def get_one(q, timeout=None):
    return q.get(timeout=timeout)


@purerun.remote
def put_one(q, item, timeout=None):
    q.put(item, timeout=timeout)
    return item


@purerun.remote
class Consumer:
    def __init__(self, q):
        self.q = q

    def take(self, n):
        return [self.q.get(timeout=CALL_TIMEOUT_S) for _ in range(n)]

    def give(self, item):
        self.q.put(item)


@purerun.remote
class AsyncConsumer:
    async def take(self, q, n):
        return [await q.get_async(timeout=CALL_TIMEOUT_S) for _ in range(n)]

    async def give(self, q, item):
        await q.put_async(item)


def still_blocked(ref):
    ready, _ = purerun.wait([ref], timeout=STILL_BLOCKED_S)
    return not ready


def test_exceptions_are_the_standard_librarys():
    assert issubclass(Empty, stdlib_queue.Empty)
    assert issubclass(Full, stdlib_queue.Full)


def test_items_come_out_in_the_order_they_went_in(make_queue):
    q = make_queue()
    for item in range(20):
        q.put(item)
    assert [q.get() for _ in range(20)] == list(range(20))


def test_sizes(make_queue):
    q = make_queue(maxsize=2)
    assert (q.size(), q.qsize(), len(q), q.empty(), q.full()) == (0, 0, 0, True, False)
    q.put("a")
    assert (q.size(), q.qsize(), len(q), q.empty(), q.full()) == (1, 1, 1, False, False)
    q.put("b")
    assert (q.size(), q.empty(), q.full()) == (2, False, True)
    assert q.maxsize == 2


def test_an_unbounded_queue_is_never_full(make_queue):
    q = make_queue()
    q.put_nowait_batch(range(1000))
    assert not q.full()
    assert q.size() == 1000


def test_get_nowait_on_an_empty_queue_raises_empty(make_queue):
    q = make_queue()
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(stdlib_queue.Empty):
        q.get(block=False, timeout=5)   # the timeout does not apply when not blocking


def test_put_nowait_on_a_full_queue_raises_full(make_queue):
    q = make_queue(maxsize=1)
    q.put_nowait(1)
    with pytest.raises(Full):
        q.put_nowait(2)
    with pytest.raises(stdlib_queue.Full):
        q.put(2, block=False)
    assert q.get() == 1   # the refused item did not go in


def test_get_with_a_timeout_raises_empty_when_nothing_comes(make_queue):
    q = make_queue()
    start = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=SHORT_TIMEOUT_S)
    assert time.monotonic() - start >= SHORT_TIMEOUT_S * 0.9   # it did wait


def test_put_with_a_timeout_raises_full_when_no_room_comes(make_queue):
    q = make_queue(maxsize=1)
    q.put("first")
    start = time.monotonic()
    with pytest.raises(Full):
        q.put("second", timeout=SHORT_TIMEOUT_S)
    assert time.monotonic() - start >= SHORT_TIMEOUT_S * 0.9
    assert q.size() == 1


def test_negative_timeouts_are_refused(make_queue):
    q = make_queue()
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    with pytest.raises(TypeError):
        q.get(timeout="soon")


def test_a_blocked_get_is_woken_by_a_put(make_queue):
    q = make_queue()
    waiting = get_one.remote(q)
    assert still_blocked(waiting)
    q.put("hello")
    assert purerun.get(waiting, timeout=CALL_TIMEOUT_S) == "hello"


def test_a_blocked_get_with_a_timeout_is_woken_by_a_put(make_queue):
    q = make_queue()
    waiting = get_one.remote(q, timeout=CALL_TIMEOUT_S)
    assert still_blocked(waiting)
    q.put("hello")
    assert purerun.get(waiting, timeout=CALL_TIMEOUT_S) == "hello"


def test_a_blocked_put_is_woken_by_a_get(make_queue):
    q = make_queue(maxsize=1)
    q.put("first")
    waiting = put_one.remote(q, "second")
    assert still_blocked(waiting)
    assert q.get() == "first"
    assert purerun.get(waiting, timeout=CALL_TIMEOUT_S) == "second"
    assert q.get(timeout=CALL_TIMEOUT_S) == "second"


def test_many_blocked_getters_are_all_served(make_queue):
    q = make_queue()
    waiting = [get_one.remote(q, timeout=CALL_TIMEOUT_S) for _ in range(4)]
    assert still_blocked(waiting[0])
    q.put_nowait_batch(["a", "b", "c", "d"])
    assert sorted(purerun.get(waiting, timeout=CALL_TIMEOUT_S)) == ["a", "b", "c", "d"]


def test_put_nowait_batch_is_all_or_nothing(make_queue):
    q = make_queue(maxsize=3)
    q.put(0)
    with pytest.raises(Full, match="Cannot add 3 items to queue of size 1 and maxsize 3"):
        q.put_nowait_batch([1, 2, 3])
    assert q.size() == 1
    q.put_nowait_batch(x for x in (1, 2))   # any iterable
    assert q.get_nowait_batch(3) == [0, 1, 2]


def test_get_nowait_batch_is_all_or_nothing(make_queue):
    q = make_queue()
    q.put_nowait_batch(["a", "b"])
    with pytest.raises(Empty, match="Cannot get 3 items from queue of size 2"):
        q.get_nowait_batch(3)
    assert q.size() == 2
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(2) == ["a", "b"]
    assert q.empty()


def test_batch_arguments_are_checked_in_the_caller(make_queue):
    q = make_queue()
    with pytest.raises(TypeError, match="Iterable"):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError, match="int"):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError, match="nonnegative"):
        q.get_nowait_batch(-1)


def test_constructor_arguments_are_checked(node):
    with pytest.raises(ValueError, match="maxsize"):
        Queue(maxsize=-1)
    with pytest.raises(TypeError, match="maxsize"):
        Queue(maxsize=1.5)
    with pytest.raises(TypeError, match="actor_options"):
        Queue(actor_options=[("num_cpus", 1)])


def test_items_keep_their_type(make_queue):
    q = make_queue()
    items = [None, {"a": [1, 2]}, b"bytes", (1, "x"), 3.5]
    for item in items:
        q.put(item)
    assert [q.get() for _ in items] == items


def test_the_queue_is_shared_with_tasks(make_queue):
    q = make_queue()
    produced = produce.remote(q, list(range(10)))
    consumed = consume.remote(q, 10, CALL_TIMEOUT_S)
    assert purerun.get(produced, timeout=CALL_TIMEOUT_S) == 10
    assert purerun.get(consumed, timeout=CALL_TIMEOUT_S) == list(range(10))


def test_the_queue_is_shared_with_actors(make_queue):
    q = make_queue()
    consumer = Consumer.remote(q)
    try:
        q.put_nowait_batch(["x", "y"])
        assert purerun.get(consumer.take.remote(2), timeout=CALL_TIMEOUT_S) == ["x", "y"]
        purerun.get(consumer.give.remote("back"), timeout=CALL_TIMEOUT_S)
        assert q.get(timeout=CALL_TIMEOUT_S) == "back"
    finally:
        purerun.kill(consumer)


def test_a_queue_pickles_to_the_same_queue(make_queue):
    q = make_queue(maxsize=5)
    copy = pickle.loads(pickle.dumps(q))
    assert copy.maxsize == 5
    copy.put("via the copy")
    assert q.get() == "via the copy"


def test_put_async_and_get_async_in_the_driver(make_queue):
    q = make_queue(maxsize=1)

    async def main():
        await q.put_async(1)
        with pytest.raises(Full):
            await q.put_async(2, block=False)
        with pytest.raises(Full):
            await q.put_async(2, timeout=SHORT_TIMEOUT_S)
        first = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(Empty):
            await q.get_async(timeout=SHORT_TIMEOUT_S)
        with pytest.raises(ValueError):
            await q.get_async(timeout=-1)
        return first
    assert asyncio.run(main()) == 1


def test_put_async_and_get_async_in_an_async_actor(make_queue):
    q = make_queue()
    consumer = AsyncConsumer.remote()
    try:
        taking = consumer.take.remote(q, 3)
        assert still_blocked(taking)
        q.put_nowait_batch([1, 2, 3])
        assert purerun.get(taking, timeout=CALL_TIMEOUT_S) == [1, 2, 3]
        purerun.get(consumer.give.remote(q, "from actor"), timeout=CALL_TIMEOUT_S)
        assert q.get(timeout=CALL_TIMEOUT_S) == "from actor"
    finally:
        purerun.kill(consumer)


def test_the_actor_reserves_no_cpu_unless_asked(make_queue):
    total = purerun.cluster_resources()["CPU"]

    def free_cpus():
        return purerun.available_resources().get("CPU", 0)
    q = make_queue()
    q.put(1)   # the actor is up
    wait_for(lambda: free_cpus() == total, timeout=CALL_TIMEOUT_S,
             message="every CPU free beside a 0-CPU queue actor")
    q_cpu = make_queue(actor_options={"num_cpus": 1})
    q_cpu.put(1)
    assert free_cpus() == total - 1
    q_cpu.shutdown()
    wait_for(lambda: free_cpus() == total, timeout=CALL_TIMEOUT_S,
             message="the queue actor's CPU to be given back")


def test_actor_options_name_the_actor(make_queue):
    q = make_queue(actor_options={"name": "util-queue-jobs"})
    q.put("named")
    found = purerun.get_actor("util-queue-jobs")
    assert found == q.actor


def test_shutdown_stops_the_actor(make_queue):
    q = make_queue()
    copy = pickle.loads(pickle.dumps(q))
    q.put(1)
    q.shutdown()
    assert q.actor is None
    with pytest.raises(RuntimeError, match="shut down"):
        q.get()
    with pytest.raises(RayActorError):
        copy.get(timeout=CALL_TIMEOUT_S)
    q.shutdown()   # again: nothing to do


def test_shutdown_force_kills_at_once(make_queue):
    q = make_queue()
    copy = pickle.loads(pickle.dumps(q))
    blocked = get_one.remote(copy)
    assert still_blocked(blocked)
    q.shutdown(force=True)
    with pytest.raises(RayActorError):
        purerun.get(blocked, timeout=CALL_TIMEOUT_S)


def test_an_orderly_shutdown_fails_a_blocked_get(make_queue):
    q = make_queue()
    copy = pickle.loads(pickle.dumps(q))
    blocked = get_one.remote(copy)
    assert still_blocked(blocked)
    # An asyncio actor takes the exit call while the get waits in its loop: the actor
    # ends (or is killed after the grace period) and the waiting get fails.
    q.shutdown(grace_period_s=SHORT_TIMEOUT_S)
    with pytest.raises(RayActorError):
        purerun.get(blocked, timeout=CALL_TIMEOUT_S)
