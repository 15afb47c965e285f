"""The scale rows of ``purerun microbenchmark --scale``, as pytest-benchmark rows: Ray's
single-node release test (many args, many returns, many gets, many queued tasks, a large
object) sized for a 2-core host, plus tiny tasks, actors and wait loops at 10x steps.

Run: python -m pytest benchmarks/bench_scale.py --benchmark-only
(``SCALE_SHRINK=N`` divides every count and size by N, for a quick look.)

Each row runs once per round; the row's own clock (``timed_s``, which leaves out building
its inputs) and its cost per item are in ``extra_info``. Per-item costs of one kind of work
at 1k, 10k and 100k items should stay flat.
"""

import os

import numpy as np
import pytest

import purerun
from purerun import microbenchmark

SHRINK = int(os.environ.get("SCALE_SHRINK", "1"))
ROWS = microbenchmark.scale_rows(SHRINK)


@pytest.fixture(scope="module")
def scale_cluster():
    purerun.init(num_cpus=os.cpu_count(),
                 object_store_memory=max(microbenchmark.SCALE_STORE_BYTES // SHRINK, 256 << 20))
    yield purerun
    purerun.shutdown()


@pytest.mark.parametrize("row", ROWS, ids=[name for name, _items, _run in ROWS])
def test_scale(benchmark, scale_cluster, row):
    name, items, run = row
    timed = []
    benchmark.pedantic(lambda: timed.append(run(scale_cluster, np)), rounds=1, iterations=1)
    benchmark.extra_info.update(items=items, timed_s=timed[-1],
                                per_item_us=timed[-1] / items * 1e6)
