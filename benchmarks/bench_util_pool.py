"""purerun.util.multiprocessing.Pool against the standard library's multiprocessing.Pool.

The goal: 1,000 tiny items, as ``pool.map(f, range(1000))`` and as 1,000 ``apply_async``
calls, in at most twice the standard library's time, both pools of the same size measured
in the same run. The joblib rows time a small ``Parallel`` run on the "purerun" backend
(pool start included, as every ``Parallel`` call starts its own pool).

Run: python -m pytest benchmarks/bench_util_pool.py --benchmark-only
     python benchmarks/bench_util_pool.py          (prints the comparison table)
"""

import multiprocessing
import statistics
import sys
import time

import pytest

import purerun
from purerun.util.multiprocessing import Pool

# Pool size: the 2 CPUs the benchmark node has (benchmarks/conftest.py).
PROCESSES = 2
ITEMS = 1000
# Timed repetitions of each row, after WARMUP untimed ones (the first calls also pay for
# the workers importing this module).
ROUNDS = 30
WARMUP = 3


def tiny(x):
    return x + 1


def map_1000(pool):
    return pool.map(tiny, range(ITEMS))


def apply_async_1000(pool):
    results = [pool.apply_async(tiny, (i,)) for i in range(ITEMS)]
    return [r.get() for r in results]


def imap_1000(pool):
    return list(pool.imap(tiny, range(ITEMS)))


@pytest.fixture(scope="module")
def stdlib_pool():
    pool = multiprocessing.get_context("fork").Pool(PROCESSES)
    yield pool
    pool.terminate()
    pool.join()


@pytest.fixture(scope="module")
def purerun_pool(cluster):
    pool = Pool(PROCESSES)
    yield pool
    pool.terminate()


@pytest.mark.parametrize("work", [map_1000, apply_async_1000, imap_1000],
                         ids=["map_1000", "apply_async_1000", "imap_1000"])
def test_stdlib_pool(benchmark, stdlib_pool, work):
    result = benchmark.pedantic(work, args=(stdlib_pool,), rounds=ROUNDS, warmup_rounds=WARMUP)
    assert result == [x + 1 for x in range(ITEMS)]


@pytest.mark.parametrize("work", [map_1000, apply_async_1000, imap_1000],
                         ids=["map_1000", "apply_async_1000", "imap_1000"])
def test_purerun_pool(benchmark, purerun_pool, work):
    result = benchmark.pedantic(work, args=(purerun_pool,), rounds=ROUNDS, warmup_rounds=WARMUP)
    assert result == [x + 1 for x in range(ITEMS)]


def test_joblib_parallel_100(benchmark, cluster):
    joblib = pytest.importorskip("joblib")
    from purerun.util.joblib import register_purerun
    register_purerun()

    def run():
        with joblib.parallel_backend("purerun"):
            return joblib.Parallel(n_jobs=PROCESSES)(joblib.delayed(tiny)(i) for i in range(100))
    assert benchmark.pedantic(run, rounds=3, warmup_rounds=1) == [x + 1 for x in range(100)]


def _time(work, pool):
    start = time.perf_counter()
    work(pool)
    return time.perf_counter() - start


def main():
    """Both pools alive at once and measured in alternation, round by round, so that
    whatever else the machine does weighs on both alike."""
    rows = (("map(f, range(1000))", map_1000), ("apply_async x1000", apply_async_1000),
            ("imap(f, range(1000))", imap_1000))
    stdlib = multiprocessing.get_context("fork").Pool(PROCESSES)
    purerun.init(num_cpus=PROCESSES)
    try:
        with Pool(PROCESSES) as pool:
            table = []
            for label, work in rows:
                for _ in range(WARMUP):
                    work(stdlib)
                    work(pool)
                theirs, ours = [], []
                for _ in range(ROUNDS):
                    theirs.append(_time(work, stdlib))
                    ours.append(_time(work, pool))
                table.append((label, statistics.median(theirs), statistics.median(ours)))
    finally:
        stdlib.terminate()
        stdlib.join()
        purerun.shutdown()
    print(f"{PROCESSES} processes, median of {ROUNDS} alternating rounds")
    print("| work | multiprocessing.Pool (ms) | purerun Pool (ms) | purerun / stdlib |")
    print("|---|---:|---:|---:|")
    for label, theirs, ours in table:
        print(f"| {label} | {theirs * 1e3:.2f} | {ours * 1e3:.2f} | {ours / theirs:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
