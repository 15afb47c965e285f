"""A get of more than the object store holds: 5 arrays of 50 MiB from a 200 MiB store, against
the same get from a store that holds them all.

Run: python -m pytest benchmarks/bench_spilling.py --benchmark-only

* ``in_memory``: a 400 MiB store; the five values are zero-copy views of the arena.
* ``over_store``: a 200 MiB store; three values stay in the arena, the two spilled ones are
  read-only mappings of their spill files (the arena has no room for them while the first
  three are pinned by the get).
* ``_and_read`` variants also read every byte (a sum), since a mapping of a file only loads
  its pages from the page cache when they are touched.
* ``spill_file_mmap`` / ``spill_file_copy``: the two ways a reader could take one 50 MiB
  spill file (a read-only mapping, as purerun does, or a private copy read into a
  bytearray), each followed by a sum of every byte.
"""

import mmap
import os

import numpy as np
import pytest

import purerun
from purerun.core import context

MIB = 1024 * 1024
PART = 50 * MIB
PARTS = 5


def _stores(store_bytes):
    purerun.init(num_cpus=1, object_store_memory=store_bytes)
    refs = [purerun.put(np.full(PART // 8, i, dtype=np.int64)) for i in range(PARTS)]
    return refs


@pytest.fixture
def in_memory():
    refs = _stores(400 * MIB)
    assert context.client.request("stats")["num_spilled"] == 0
    yield refs
    del refs[:]
    purerun.shutdown()


@pytest.fixture
def over_store():
    refs = _stores(200 * MIB)
    assert context.client.request("stats")["num_spilled"] > 0
    yield refs
    del refs[:]
    purerun.shutdown()


def _get(refs):
    return len(purerun.get(refs))


def _get_and_read(refs):
    return sum(int(v.sum()) for v in purerun.get(refs))


def _record(benchmark):
    benchmark.extra_info["bytes"] = PARTS * PART
    benchmark.extra_info.update({k: v for k, v in context.client.request("stats").items()
                                 if k in ("num_spilled", "num_restored", "spilled_bytes")})


def test_get_5x50mib_in_memory(benchmark, in_memory):
    benchmark.pedantic(_get, args=(in_memory,), rounds=10, warmup_rounds=1)
    _record(benchmark)


def test_get_5x50mib_over_store(benchmark, over_store):
    benchmark.pedantic(_get, args=(over_store,), rounds=10, warmup_rounds=1)
    _record(benchmark)


def test_get_5x50mib_in_memory_and_read(benchmark, in_memory):
    benchmark.pedantic(_get_and_read, args=(in_memory,), rounds=5, warmup_rounds=1)
    _record(benchmark)


def test_get_5x50mib_over_store_and_read(benchmark, over_store):
    benchmark.pedantic(_get_and_read, args=(over_store,), rounds=5, warmup_rounds=1)
    _record(benchmark)


@pytest.fixture
def spill_file(tmp_path):
    path = str(tmp_path / "value")
    np.full(PART // 8, 3, dtype=np.int64).tofile(path)
    yield path
    os.unlink(path)


def test_spill_file_mmap(benchmark, spill_file):
    def read():
        with open(spill_file, "rb") as f:
            mapped = mmap.mmap(f.fileno(), PART, access=mmap.ACCESS_READ)
        return int(np.frombuffer(mapped, dtype=np.int64).sum())
    benchmark.pedantic(read, rounds=10, warmup_rounds=1)


def test_spill_file_copy(benchmark, spill_file):
    def read():
        buf = bytearray(PART)
        with open(spill_file, "rb") as f:
            f.readinto(buf)
        return int(np.frombuffer(buf, dtype=np.int64).sum())
    benchmark.pedantic(read, rounds=10, warmup_rounds=1)
