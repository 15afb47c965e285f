"""pytest-benchmark rows for process handling: how soon a dead worker's task is known lost,
and what the memory monitor costs the node.

Run: python -m pytest benchmarks/bench_processes.py --benchmark-only

``test_crashed_task_round_trip`` is one task whose worker exits at once, submitted and its
WorkerCrashedError received: the node learns of the exit from the worker's socket.
``test_crashed_task_round_trip_forked_child`` is the same with a child the task forked
holding the worker's socket open: the node learns of it from the pidfd alone. Both include
forking the replacement worker. ``test_memory_reading`` is one reading of the memory in use,
as the node takes it every refresh interval; ``test_choose_victim_64`` one decision of the
monitor's rule among 64 running tasks of 4 owners.
"""

import os
import time

import pytest

import purerun
from purerun import exceptions
from purerun.core.memory_monitor import Candidate, choose_victim
from purerun.core.node import MemorySource


@purerun.remote(max_retries=0)
def exits():
    os._exit(1)


@purerun.remote(max_retries=0)
def forks_then_exits():
    if os.fork() == 0:
        time.sleep(2)
        os._exit(0)
    os._exit(1)


def _lost(fn):
    try:
        purerun.get(fn.remote())
    except exceptions.WorkerCrashedError:
        return
    raise AssertionError("the task did not fail")


def test_crashed_task_round_trip(benchmark, cluster):
    benchmark.pedantic(_lost, args=(exits,), rounds=20, warmup_rounds=1)


def test_crashed_task_round_trip_forked_child(benchmark, cluster):
    benchmark.pedantic(_lost, args=(forks_then_exits,), rounds=20, warmup_rounds=1)


def test_memory_reading(benchmark):
    benchmark(MemorySource().read)


@pytest.fixture
def candidates():
    return [Candidate(i, f"owner{i % 4}", i, i % 3 != 0) for i in range(64)]


def test_choose_victim_64(benchmark, candidates):
    benchmark(choose_victim, candidates)
