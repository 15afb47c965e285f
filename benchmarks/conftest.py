"""Benchmarks share one cluster per module; they measure, they never assert timings."""

import pytest

import purerun


@pytest.fixture(scope="module")
def cluster():
    purerun.init(num_cpus=2)
    yield purerun
    purerun.shutdown()
