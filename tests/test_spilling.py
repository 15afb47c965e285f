"""Objects that together exceed the object store, and values larger than it, on real processes:
a get of more than fits, a task given more than fits, a put and a task result larger than
the store. Values read from disk must be correct (checksums) and read-only like arena views,
and once dropped nothing may remain: no spill file, no arena block."""

import gc
import os

import numpy as np
import pytest

import purerun
from purerun import exceptions
from purerun.core import context

from helpers import wait_for

MB = 1024 * 1024
STORE = 64 * MB
# Five of these exceed the store; each fits alone (with room to spare for its metadata).
PART = 16 * MB


def stats():
    return context.client.request("stats")


def spill_files():
    spill_dir = os.path.join(context.client.info["session_dir"], "spill")
    return sorted(os.listdir(spill_dir)) if os.path.isdir(spill_dir) else []


def part(i, nbytes=PART):
    return np.arange(nbytes // 8, dtype=np.int64) * 3 + i


def checksum(array):
    return int(array.sum(dtype=np.int64))


def settled(arena_used):
    """Wait until the node holds nothing but what it held at the start."""
    def check():
        gc.collect()
        context.client.flush()
        s = stats()
        return s["num_objects"] == 0 and s["arena_used"] == arena_used and not spill_files()
    wait_for(check, timeout=20, message=f"objects left behind: {stats()}, {spill_files()}")


@pytest.fixture
def store():
    purerun.init(num_cpus=1, object_store_memory=STORE)
    yield stats()["arena_used"]
    purerun.shutdown()


@purerun.remote
def checksums(*arrays):
    return [int(a.sum(dtype=np.int64)) for a in arrays]


@purerun.remote
def make(nbytes, i):
    return np.arange(nbytes // 8, dtype=np.int64) * 3 + i


def test_get_of_more_than_fits_returns_every_value(store):
    expected = [checksum(part(i)) for i in range(5)]
    refs = [purerun.put(part(i)) for i in range(5)]
    assert stats()["num_spilled"] >= 1
    values = purerun.get(refs)                    # all five alive at once
    assert [checksum(v) for v in values] == expected
    for value in values:
        assert not value.flags.writeable
        with pytest.raises(ValueError):
            value[0] = 1
    # Asked again while the first ones are still alive, in another order.
    again = purerun.get(refs[::-1])
    assert [checksum(v) for v in again] == expected[::-1]
    del values, again, refs, value
    settled(store)


def test_a_task_given_more_than_fits_reads_every_argument(store):
    refs = [purerun.put(part(i)) for i in range(5)]
    assert purerun.get(checksums.remote(*refs)) == [checksum(part(i)) for i in range(5)]
    # Arguments inside a list are refs the task gets itself.
    @purerun.remote
    def by_ref(refs):
        return checksums.remote(*refs)

    assert purerun.get(purerun.get(by_ref.remote(refs))) == [checksum(part(i)) for i in range(5)]
    del refs
    settled(store)


def test_a_put_larger_than_the_store_is_kept_on_disk_and_readable(store):
    value = part(7, STORE + 32 * MB)
    expected = checksum(value)
    ref = purerun.put(value)
    del value
    assert stats()["spilled_bytes"] >= STORE + 32 * MB
    got = purerun.get(ref)
    assert checksum(got) == expected and not got.flags.writeable
    assert purerun.get(checksums.remote(ref)) == [expected]
    # The arena keeps serving small values meanwhile, zero-copy.
    small = purerun.put(part(1, MB))
    assert checksum(purerun.get(small)) == checksum(part(1, MB))
    del ref, got, small
    settled(store)


def test_a_task_result_larger_than_the_store_is_kept_on_disk_and_readable(store):
    nbytes = STORE + 16 * MB
    expected = checksum(part(5, nbytes))
    ref = make.remote(nbytes, 5)
    assert checksum(purerun.get(ref)) == expected
    assert purerun.get(checksums.remote(ref)) == [expected]   # as another task's argument
    del ref
    settled(store)


def test_a_streamed_item_larger_than_the_store_is_kept_on_disk_and_readable(store):
    @purerun.remote(num_returns="streaming")
    def items(nbytes):
        for i in range(2):
            yield np.arange(nbytes // 8, dtype=np.int64) * 3 + i

    nbytes = STORE + 8 * MB
    got = [checksum(purerun.get(ref)) for ref in items.remote(nbytes)]
    assert got == [checksum(part(i, nbytes)) for i in range(2)]
    settled(store)


def test_only_pinned_values_make_the_store_full(store):
    refs = [purerun.put(part(i)) for i in range(3)]
    views = purerun.get(refs)                     # 48 MB of live zero-copy views
    with pytest.raises(exceptions.ObjectStoreFullError, match="in use"):
        purerun.put(part(9, 32 * MB))
    # A value larger than the whole arena never needed it: it goes to disk.
    big = purerun.put(part(8, STORE + MB))
    assert checksum(purerun.get(big)) == checksum(part(8, STORE + MB))
    del views
    gc.collect()
    ref = purerun.put(part(9, 32 * MB))           # unpinned now: the old ones spill
    assert checksum(purerun.get(ref)) == checksum(part(9, 32 * MB))
    assert [checksum(v) for v in purerun.get(refs)] == [checksum(part(i)) for i in range(3)]
    del refs, big, ref
    settled(store)


def test_freeing_a_spilled_value_removes_its_file(store):
    refs = [purerun.put(part(i)) for i in range(5)]
    assert spill_files()
    purerun.internal.free(refs)
    for ref in refs:
        with pytest.raises(exceptions.ObjectFreedError):
            purerun.get(ref)
    wait_for(lambda: not spill_files(), timeout=20, message="spill files left after free")
    del refs, ref
    settled(store)


# ── between nodes ──────────────────────────────────────────────────────────────────────────


@pytest.fixture
def two_nodes():
    """A head node (the driver's) and a second one, each with a store of ``STORE`` bytes."""
    from purerun.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 1, "object_store_memory": STORE})
    cluster.second = cluster.add_node(num_cpus=1, resources={"there": 1},
                                      object_store_memory=STORE)
    cluster.wait_for_nodes()
    yield cluster, stats()["arena_used"]
    cluster.shutdown()


def test_a_value_larger_than_both_stores_crosses_between_nodes_on_disk(two_nodes):
    _cluster, arena_used = two_nodes
    nbytes = STORE + 16 * MB      # on disk where it is made, and pulled into a file here
    ref = make.options(resources={"there": 1}).remote(nbytes, 4)
    assert checksum(purerun.get(ref)) == checksum(part(4, nbytes))
    assert stats()["spilled_bytes"] >= nbytes     # the copy here is a file
    del ref
    settled(arena_used)


def test_a_value_pulled_into_a_store_full_of_pinned_values_is_read_from_a_file(two_nodes):
    _cluster, arena_used = two_nodes
    refs = [purerun.put(part(i)) for i in range(3)]
    views = purerun.get(refs)                     # 48 MB pinned here
    remote = make.options(resources={"there": 1}).remote(24 * MB, 6)
    value = purerun.get(remote)
    assert checksum(value) == checksum(part(6, 24 * MB)) and not value.flags.writeable
    assert stats()["spilled_bytes"] >= 24 * MB    # pulled into a file, not the arena
    assert [checksum(v) for v in views] == [checksum(part(i)) for i in range(3)]
    del refs, views, remote, value
    settled(arena_used)
