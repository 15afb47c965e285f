"""pytest-benchmark rows for what faults and their neighbours cost: a worker that exits and
the retry that follows, small numpy arrays (every buffer out of band, so that they come back
read-only), and the output drain a leaving driver asks for.

Run: python -m pytest benchmarks/bench_faults.py --benchmark-only
"""

import sys

import numpy as np
import pytest

import purerun
from purerun import exceptions
from purerun.core import context, serialization


@purerun.remote
def identity(x):
    return x


@purerun.remote(max_retries=0)
def exits():
    sys.exit(3)


@purerun.remote(max_retries=0)
def fails():
    raise ValueError("fails")


@purerun.remote(max_retries=0)
def takes(x):
    return None


def test_serialize_round_trip_small_array(benchmark):
    array = np.zeros(16)

    def round_trip():
        meta, buffers = serialization.to_inline(serialization.serialize(array))
        return serialization.deserialize(meta, buffers)

    assert not benchmark(round_trip).flags.writeable


def test_serialize_round_trip_100_small_arrays(benchmark):
    arrays = [np.zeros(16) for _ in range(100)]

    def round_trip():
        meta, buffers = serialization.to_inline(serialization.serialize(arrays))
        return serialization.deserialize(meta, buffers)

    benchmark(round_trip)


def test_task_small_array_argument(benchmark, cluster):
    array = np.zeros(16)
    benchmark(lambda: purerun.get(identity.remote(array)))


def test_task_error(benchmark, cluster):
    def run():
        with pytest.raises(ValueError):
            purerun.get(fails.remote())
    benchmark(run)


def test_task_failed_argument(benchmark, cluster):
    failed = fails.remote()

    def run():
        with pytest.raises(ValueError):
            purerun.get(takes.remote(failed))
    benchmark(run)


def test_task_sys_exit_worker_crashed(benchmark, cluster):
    # The worker exits; the node sees it gone and fails the task: a fork for the next one.
    def run():
        with pytest.raises(exceptions.WorkerCrashedError):
            purerun.get(exits.remote())
    benchmark(run)


def test_flush_output_request(benchmark, cluster):
    client = context.client
    benchmark(lambda: client.request("flush_output"))
