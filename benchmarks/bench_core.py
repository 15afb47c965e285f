"""pytest-benchmark rows for purerun's hot paths (the same work as `purerun microbenchmark`).

Run: python -m pytest benchmarks/bench_core.py --benchmark-only
"""

import numpy as np
import pytest

import purerun


@purerun.remote
def small_value():
    return b"ok"


@purerun.remote(num_cpus=0)
class Actor:
    def small_value(self):
        return b"ok"


@purerun.remote
class AsyncActor:
    async def small_value(self):
        return b"ok"


def test_get_small(benchmark, cluster):
    ref = purerun.put(0)
    benchmark(purerun.get, ref)


def test_put_small(benchmark, cluster):
    benchmark(purerun.put, 0)


def test_put_800mb(benchmark, cluster):
    arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)
    benchmark.pedantic(purerun.put, args=(arr,), rounds=5, warmup_rounds=1)
    benchmark.extra_info["bytes"] = arr.nbytes


def test_get_800mb(benchmark, cluster):
    ref = purerun.put(np.zeros(100 * 1024 * 1024, dtype=np.int64))
    benchmark(purerun.get, ref)


def test_task_sync(benchmark, cluster):
    benchmark(lambda: purerun.get(small_value.remote()))


def test_tasks_async_1000(benchmark, cluster):
    benchmark.pedantic(lambda: purerun.get([small_value.remote() for _ in range(1000)]),
                       rounds=5, warmup_rounds=1)


def test_actor_call_sync(benchmark, cluster):
    a = Actor.remote()
    benchmark(lambda: purerun.get(a.small_value.remote()))


def test_actor_calls_async_1000(benchmark, cluster):
    a = Actor.remote()
    benchmark.pedantic(lambda: purerun.get([a.small_value.remote() for _ in range(1000)]),
                       rounds=5, warmup_rounds=1)


def test_async_actor_call_sync(benchmark, cluster):
    a = AsyncActor.remote()
    benchmark(lambda: purerun.get(a.small_value.remote()))


def test_wait_1k(benchmark, cluster):
    def wait_all():
        not_ready = [small_value.remote() for _ in range(1000)]
        while not_ready:
            _, not_ready = purerun.wait(not_ready)
    benchmark.pedantic(wait_all, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("size", [1, 1000, 10000])
def test_get_object_containing_refs(benchmark, cluster, size):
    @purerun.remote
    def make(n):
        return [purerun.put(1) for _ in range(n)]
    ref = make.remote(size)
    purerun.get(ref)
    benchmark(purerun.get, ref)
