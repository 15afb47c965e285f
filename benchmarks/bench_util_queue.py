"""pytest-benchmark rows for purerun.util.queue.Queue: one item at a time and in batches.

Run: python -m pytest benchmarks/bench_util_queue.py --benchmark-only

Each round of ``test_put_get_single`` is one ``put`` and one ``get``: its ops/s is put+get
pairs per second. A round of ``test_put_get_batched`` moves BATCH items in and out with
``put_nowait_batch`` / ``get_nowait_batch``. ``extra_info["put+get per second (median)"]``
gives pairs (or items) per second from the median round, steadier than the mean on a shared
machine. ``test_async_actor_call_sync`` is one bare call of an asyncio actor, the floor
under each queue call (a put+get is two of them).
"""

import pytest

import purerun
from purerun.util.queue import Queue

# Items per batch: large enough that the two calls' fixed cost is spread thin, small enough
# that a batch travels inline in one message.
BATCH = 1000


@purerun.remote(num_cpus=0)
class AsyncActor:
    async def small_value(self):
        return b"ok"


@pytest.fixture
def queue(cluster):
    q = Queue()
    q.put(0)
    q.get()   # the actor is up before the clock starts
    yield q
    q.shutdown()


def test_put_get_single(benchmark, queue):
    def put_get():
        queue.put(b"item")
        queue.get()
    benchmark(put_get)
    benchmark.extra_info["put+get per second (median)"] = 1 / benchmark.stats.stats.median


def test_put_get_nowait_single(benchmark, queue):
    def put_get():
        queue.put_nowait(b"item")
        queue.get_nowait()
    benchmark(put_get)
    benchmark.extra_info["put+get per second (median)"] = 1 / benchmark.stats.stats.median


def test_put_get_batched(benchmark, queue):
    items = [b"item"] * BATCH

    def put_get():
        queue.put_nowait_batch(items)
        queue.get_nowait_batch(BATCH)
    benchmark.pedantic(put_get, rounds=50, warmup_rounds=2)
    benchmark.extra_info["items per round"] = BATCH
    benchmark.extra_info["put+get per second (median)"] = BATCH / benchmark.stats.stats.median


def test_async_actor_call_sync(benchmark, cluster):
    actor = AsyncActor.remote()
    purerun.get(actor.small_value.remote())
    benchmark(lambda: purerun.get(actor.small_value.remote()))
