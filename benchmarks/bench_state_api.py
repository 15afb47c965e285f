"""Benchmarks for the state API (purerun.util.state, core/state_rules.py).

Run with::

    python -m pytest benchmarks/bench_state_api.py

Three questions:

* What does a finished task cost the node's hot path? ``_record_finished`` appends one tuple
  to the bounded history per task: timed alone, per call.
* How much memory does a full history take? The history is filled to ``TASK_HISTORY_MAX``
  on a NodeState with no process behind it and measured with tracemalloc
  (``extra_info["history_mb"]``).
* How long do ``list_tasks`` (the default limit, 100) and ``summarize_tasks`` (every record)
  take against a real node whose history is full?

No timings are asserted. Compare runs with ``--benchmark-compare``.
"""

import tracemalloc

import pytest

import purerun
from purerun.core import ids, state_rules
from purerun.core.control_store import ControlStore
from purerun.core.node_state import NodeState
from purerun.core.task_spec import TaskSpec
from purerun.core.tasks import Task
from purerun.util.state import list_tasks, summarize_tasks


class _NoStore:
    """The byte store behind the object table: never touched by these rules."""


def _node_state():
    return NodeState({"node_id": b"B" * 16, "resources": {"CPU": 1}}, _NoStore(),
                     ControlStore(), max_workers=1, max_starting_workers=1)


def _finished_task(i):
    spec = TaskSpec(task_id=ids.new_task_id(), name="square", function_key=b"k" * 16,
                    args=None, args_in_store=False, deps=[], contained=[],
                    resources={"CPU": 1}, job_id=b"\1\0\0\0")
    task = Task(spec, "driver")
    task.worker_id = 1 + i % 4
    task.span = (1.7e9 + i, 1.7e9 + i + 0.001)
    return task


def test_record_one_finished_task(benchmark):
    state = _node_state()
    task = _finished_task(0)
    benchmark(state._record_finished, task, None, None)


def test_memory_of_a_full_history(benchmark):
    tasks = [_finished_task(i) for i in range(state_rules.TASK_HISTORY_MAX)]

    def fill():
        state = _node_state()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for task in tasks:
            state._record_finished(task, None, None)
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return used

    used = benchmark.pedantic(fill, rounds=3, iterations=1)
    benchmark.extra_info["history_entries"] = state_rules.TASK_HISTORY_MAX
    benchmark.extra_info["history_mb"] = round(used / 2**20, 2)


@pytest.fixture(scope="module")
def full_history():
    purerun.init(num_cpus=2)

    @purerun.remote
    def square(x):
        return x * x

    done = 0
    while done < state_rules.TASK_HISTORY_MAX:
        purerun.get([square.remote(i) for i in range(1000)])
        done += 1000
    yield
    purerun.shutdown()


def test_list_tasks_default_limit_full_history(benchmark, full_history):
    records = benchmark(list_tasks, raise_on_missing_output=False)
    assert len(records) == 100


def test_summarize_tasks_full_history(benchmark, full_history):
    summary = benchmark.pedantic(summarize_tasks, rounds=5, iterations=1)
    benchmark.extra_info["tasks_summarized"] = summary["cluster"]["total_tasks"]
