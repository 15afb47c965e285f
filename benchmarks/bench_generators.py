"""Per-yield cost of a streaming generator against a tiny task's round trip.

Run: python -m pytest benchmarks/bench_generators.py --benchmark-only -s

``test_stream_1000_items`` iterates a streaming generator of 1,000 tiny items, getting
each ref as it comes; ``test_tasks_sync_1000`` runs 1,000 tiny tasks one after another
(``get(f.remote())``). ``test_per_yield_against_per_task`` times both in the same run,
alternately, and records (and prints) their ratio: the goal is about 1 or less.
"""

import time

import purerun

ITEMS = 1000


@purerun.remote
def tiny_stream(n):
    for i in range(n):
        yield i


@purerun.remote
def tiny_task():
    return 0


def _stream():
    return [purerun.get(ref) for ref in tiny_stream.remote(ITEMS)]


def _tasks():
    return [purerun.get(tiny_task.remote()) for _ in range(ITEMS)]


def test_stream_1000_items(benchmark, cluster):
    benchmark.pedantic(_stream, rounds=5, warmup_rounds=1)
    benchmark.extra_info["items"] = ITEMS


def test_tasks_sync_1000(benchmark, cluster):
    benchmark.pedantic(_tasks, rounds=5, warmup_rounds=1)
    benchmark.extra_info["tasks"] = ITEMS


def _timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def test_per_yield_against_per_task(benchmark, cluster):
    _stream(), _tasks()   # warm: workers started, functions exported
    streams, tasks = [], []

    def both():
        streams.append(_timed(_stream))
        tasks.append(_timed(_tasks))

    benchmark.pedantic(both, rounds=5)
    per_yield = min(streams) / ITEMS
    per_task = min(tasks) / ITEMS
    benchmark.extra_info.update(per_yield_us=per_yield * 1e6, per_task_us=per_task * 1e6,
                                ratio=per_yield / per_task)
    print(f"\nper yield {per_yield * 1e6:.1f} us, per tiny task {per_task * 1e6:.1f} us, "
          f"ratio {per_yield / per_task:.2f}")
