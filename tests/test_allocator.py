"""Tests for the shared-memory arena's best-fit allocator.

The allocator is pure bookkeeping, so these tests start no processes and map
no memory. The property tests check each result against a brute-force model:
the free blocks must be exactly the maximal gaps between live blocks, and
best fit is computed over those gaps by a linear scan.
"""

import importlib.util
import pathlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)


def _load_allocator_module():
    # Prefer the normal import. While other parts of the package are being
    # written, `import purerun` can fail for reasons unrelated to the
    # allocator. In that case, load the module from its file.
    try:
        from purerun.core import allocator

        return allocator
    except Exception:
        path = pathlib.Path(__file__).resolve().parents[1] / "purerun" / "core" / "allocator.py"
        spec = importlib.util.spec_from_file_location("purerun_core_allocator", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


allocator_module = _load_allocator_module()
Allocator = allocator_module.Allocator


def fill(alloc, sizes):
    """Allocate each size in order and return the offsets."""
    offsets = [alloc.allocate(size) for size in sizes]
    assert None not in offsets
    return offsets


def make_holes(alloc, hole_sizes, separator=64):
    """Lay out [hole, separator, hole, separator, ...] and free the holes.

    Returns the offsets of the holes, which are left free with a live
    separator after each so that they cannot coalesce. Whatever is left at the
    end of the arena stays allocated, so it cannot take part in best fit.
    """
    holes = []
    for size in hole_sizes:
        holes.append(alloc.allocate(size))
        assert alloc.allocate(separator) is not None
    if alloc.largest_free:
        assert alloc.allocate(alloc.largest_free) is not None
    for offset in holes:
        alloc.free(offset)
    alloc._check_invariants()
    return holes


# ---------------------------------------------------------------- construction


def test_new_allocator_is_one_free_block():
    alloc = Allocator(4096)
    assert alloc.capacity == 4096
    assert alloc.alignment == 64
    assert alloc.used == 0
    assert alloc.free_bytes == 4096
    assert alloc.largest_free == 4096
    assert alloc.num_allocated == 0
    assert alloc.num_free_blocks == 1
    assert alloc.fragmentation() == 0.0
    alloc._check_invariants()


@pytest.mark.parametrize("capacity", [0, -64])
def test_rejects_non_positive_capacity(capacity):
    with pytest.raises(ValueError, match="capacity"):
        Allocator(capacity)


@pytest.mark.parametrize("alignment", [0, -64, 3, 48, 100])
def test_rejects_alignment_that_is_not_a_power_of_two(alignment):
    with pytest.raises(ValueError, match=f"power of two, got {alignment}"):
        Allocator(4096, alignment=alignment)


# ------------------------------------------------------------------- alignment


@pytest.mark.parametrize(
    "size, rounded", [(1, 64), (63, 64), (64, 64), (65, 128), (128, 128), (1000, 1024)]
)
def test_sizes_round_up_to_alignment(size, rounded):
    alloc = Allocator(4096)
    offset = alloc.allocate(size)
    assert alloc.block_size(offset) == rounded
    assert alloc.used == rounded


@pytest.mark.parametrize("alignment", [1, 8, 64, 4096])
def test_offsets_are_aligned(alignment):
    alloc = Allocator(1 << 20, alignment=alignment)
    rng = random.Random(alignment)
    for _ in range(100):
        offset = alloc.allocate(rng.randrange(1, 5000))
        assert offset is not None
        assert offset % alignment == 0
        assert alloc.block_size(offset) % alignment == 0
    alloc._check_invariants()


def test_capacity_not_a_multiple_of_alignment_keeps_an_unusable_tail():
    alloc = Allocator(100, alignment=64)
    assert alloc.allocate(64) == 0
    # 36 bytes remain free but cannot hold even a minimal block.
    assert alloc.free_bytes == 36
    assert alloc.largest_free == 36
    assert alloc.allocate(0) is None
    alloc._check_invariants()
    alloc.free(0)
    assert alloc.num_free_blocks == 1
    assert alloc.largest_free == 100


def test_zero_size_gets_a_minimal_distinct_block():
    alloc = Allocator(4096)
    a = alloc.allocate(0)
    b = alloc.allocate(0)
    assert a != b
    assert alloc.block_size(a) == alloc.block_size(b) == 64
    assert alloc.used == 128
    alloc._check_invariants()


def test_size_must_be_a_non_negative_integer():
    alloc = Allocator(4096)
    with pytest.raises(ValueError, match="negative"):
        alloc.allocate(-1)
    with pytest.raises(TypeError):
        alloc.allocate(1.5)
    assert alloc.used == 0


# ------------------------------------------------------------ fit and splitting


def test_exact_fit_takes_the_whole_hole_without_splitting():
    alloc = Allocator(4096)
    holes = make_holes(alloc, [256, 128, 512])
    free_blocks_before = alloc.num_free_blocks
    assert alloc.allocate(128) == holes[1]
    assert alloc.num_free_blocks == free_blocks_before - 1
    alloc._check_invariants()


def test_best_fit_picks_the_smallest_hole_that_fits():
    alloc = Allocator(1 << 16)
    holes = make_holes(alloc, [1024, 256, 512, 192, 2048])
    # 150 rounds up to 192, and the 192-byte hole fits it exactly.
    assert alloc.allocate(150) == holes[3]
    # 200 rounds up to 256. The 256-byte hole beats the 512, 1024 and 2048 ones.
    assert alloc.allocate(200) == holes[1]
    # 300 rounds up to 320. Only the 512-byte hole is the smallest left that fits.
    assert alloc.allocate(300) == holes[2]
    alloc._check_invariants()


def test_best_fit_ties_go_to_the_lowest_offset():
    alloc = Allocator(1 << 16)
    holes = make_holes(alloc, [256, 512, 256, 256])
    assert alloc.allocate(256) == holes[0]
    assert alloc.allocate(256) == holes[2]
    assert alloc.allocate(256) == holes[3]
    assert alloc.allocate(256) == holes[1]


def test_split_leaves_the_remainder_free_after_the_block():
    alloc = Allocator(4096)
    offset = alloc.allocate(1000)
    assert offset == 0
    assert alloc.num_free_blocks == 1
    assert alloc.largest_free == 4096 - 1024
    # The remainder starts right where the block ends.
    assert alloc.allocate(alloc.largest_free) == 1024
    assert alloc.free_bytes == 0
    alloc._check_invariants()


def test_split_inside_a_hole_keeps_the_tail_of_the_hole():
    alloc = Allocator(1 << 16)
    (hole,) = make_holes(alloc, [1024])
    assert alloc.allocate(64) == hole
    assert alloc.allocate(960) == hole + 64
    alloc._check_invariants()


# -------------------------------------------------------------------- coalescing


def four_blocks():
    """Return an arena filled by four 256-byte blocks a, b, c, d."""
    alloc = Allocator(1024)
    return alloc, fill(alloc, [256, 256, 256, 256])


def test_free_coalesces_with_left_neighbour():
    alloc, (a, b, c, d) = four_blocks()
    alloc.free(a)
    alloc.free(b)
    assert alloc.num_free_blocks == 1
    assert alloc.largest_free == 512
    alloc._check_invariants()
    assert alloc.allocate(512) == a


def test_free_coalesces_with_right_neighbour():
    alloc, (a, b, c, d) = four_blocks()
    alloc.free(c)
    alloc.free(b)
    assert alloc.num_free_blocks == 1
    assert alloc.largest_free == 512
    alloc._check_invariants()
    assert alloc.allocate(512) == b


def test_free_coalesces_with_both_neighbours():
    alloc, (a, b, c, d) = four_blocks()
    alloc.free(a)
    alloc.free(c)
    assert alloc.num_free_blocks == 2
    assert alloc.fragmentation() == pytest.approx(0.5)
    alloc.free(b)
    assert alloc.num_free_blocks == 1
    assert alloc.largest_free == 768
    assert alloc.fragmentation() == 0.0
    alloc._check_invariants()
    alloc.free(d)
    assert alloc.num_free_blocks == 1
    assert alloc.largest_free == alloc.capacity


def test_free_without_free_neighbours_adds_a_hole():
    alloc, (a, b, c, d) = four_blocks()
    alloc.free(b)
    assert alloc.num_free_blocks == 1
    alloc.free(d)
    assert alloc.num_free_blocks == 2
    alloc._check_invariants()


# ---------------------------------------------------------------- running out


def test_full_arena_returns_none():
    alloc = Allocator(1024)
    fill(alloc, [512, 512])
    assert alloc.free_bytes == 0
    assert alloc.largest_free == 0
    assert alloc.fragmentation() == 0.0
    assert alloc.allocate(0) is None
    assert alloc.allocate(1) is None


def test_request_larger_than_capacity_returns_none():
    alloc = Allocator(1024)
    assert alloc.allocate(1025) is None
    assert alloc.used == 0


def test_fragmented_arena_refuses_what_no_single_hole_fits():
    alloc, (a, b, c, d) = four_blocks()
    alloc.free(a)
    alloc.free(c)
    # 512 bytes are free in total, but no single hole holds 512 bytes.
    assert alloc.free_bytes == 512
    assert alloc.allocate(512) is None
    assert alloc.allocate(256) == a
    alloc._check_invariants()


# ---------------------------------------------------------------------- errors


def test_double_free_raises_and_names_the_offset():
    alloc = Allocator(4096)
    fill(alloc, [64])
    offset = alloc.allocate(128)
    fill(alloc, [64])
    alloc.free(offset)
    with pytest.raises(ValueError, match=rf"offset {offset}\b.*already freed"):
        alloc.free(offset)
    alloc._check_invariants()


@pytest.mark.parametrize("bad", [32, 4096, 10_000, -64])
def test_free_of_unknown_offset_raises_and_names_it(bad):
    alloc = Allocator(4096)
    fill(alloc, [256])
    with pytest.raises(ValueError, match=rf"offset {bad}\b"):
        alloc.free(bad)
    assert alloc.num_allocated == 1
    alloc._check_invariants()


def test_free_inside_a_block_points_at_its_start():
    alloc = Allocator(4096)
    offset = alloc.allocate(256)
    with pytest.raises(ValueError, match=rf"inside the block allocated at offset {offset}"):
        alloc.free(offset + 64)
    assert alloc.num_allocated == 1


def test_block_size_of_unknown_offset_raises():
    alloc = Allocator(4096)
    offset = alloc.allocate(64)
    alloc.free(offset)
    with pytest.raises(ValueError, match=rf"offset {offset}\b"):
        alloc.block_size(offset)


def test_check_invariants_detects_adjacent_free_blocks():
    # A corrupted state must fail the check, or the property tests below
    # would prove nothing.
    alloc, (a, b, c, d) = four_blocks()
    alloc.free(a)
    alloc.free(c)
    # Turn b into a free block by hand, skipping the merge with a and c.
    del alloc._allocated[b]
    alloc._used -= 256
    alloc._free_by_size.add((256, b))
    alloc._free_by_start[b] = 256
    alloc._free_by_end[b + 256] = b
    with pytest.raises(AssertionError, match="adjacent"):
        alloc._check_invariants()


def test_check_invariants_detects_lost_bytes():
    alloc, (a, b, c, d) = four_blocks()
    del alloc._allocated[b]
    alloc._used -= 256
    with pytest.raises(AssertionError, match="gap"):
        alloc._check_invariants()


# ---------------------------------------------------------- property tests


def expected_free_blocks(capacity, allocated):
    """Return the maximal gaps between live blocks as sorted (offset, size) pairs."""
    gaps = []
    position = 0
    for offset in sorted(allocated):
        if offset > position:
            gaps.append((position, offset - position))
        position = offset + allocated[offset]
    if position < capacity:
        gaps.append((position, capacity - position))
    return gaps


def expected_best_fit(capacity, alignment, allocated, size):
    need = max(alignment, -(-size // alignment) * alignment)
    fits = [(hole, offset) for offset, hole in expected_free_blocks(capacity, allocated) if hole >= need]
    return min(fits)[1] if fits else None


class AllocatorMachine(RuleBasedStateMachine):
    """Drives an Allocator and a plain dict of live blocks side by side."""

    @initialize(
        capacity=st.integers(min_value=1, max_value=1 << 14),
        alignment=st.sampled_from([1, 8, 64, 256]),
    )
    def setup(self, capacity, alignment):
        self.alloc = Allocator(capacity, alignment=alignment)
        self.live = {}  # offset -> rounded size

    @rule(size=st.integers(min_value=0, max_value=1 << 12))
    def allocate(self, size):
        expected = expected_best_fit(self.alloc.capacity, self.alloc.alignment, self.live, size)
        offset = self.alloc.allocate(size)
        assert offset == expected
        if offset is not None:
            block = self.alloc.block_size(offset)
            assert block >= size and block % self.alloc.alignment == 0
            assert 0 <= offset and offset + block <= self.alloc.capacity
            for other, other_size in self.live.items():
                assert offset + block <= other or other + other_size <= offset
            self.live[offset] = block

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        offset = data.draw(st.sampled_from(sorted(self.live)))
        self.alloc.free(offset)
        del self.live[offset]

    @rule(offset=st.integers(min_value=-64, max_value=1 << 14))
    def free_unknown_offset_is_rejected(self, offset):
        if offset in self.live:
            return
        before = (self.alloc.used, self.alloc.num_free_blocks)
        try:
            self.alloc.free(offset)
        except ValueError as error:
            assert str(offset) in str(error)
        else:
            raise AssertionError(f"free({offset}) of a non-live offset did not raise")
        assert (self.alloc.used, self.alloc.num_free_blocks) == before

    @invariant()
    def books_balance(self):
        alloc = self.alloc
        alloc._check_invariants()
        assert alloc.used == sum(self.live.values())
        assert alloc.used + alloc.free_bytes == alloc.capacity
        assert alloc.num_allocated == len(self.live)
        gaps = expected_free_blocks(alloc.capacity, self.live)
        assert alloc.num_free_blocks == len(gaps)
        assert alloc.largest_free == max((size for _, size in gaps), default=0)
        assert 0.0 <= alloc.fragmentation() < 1.0

    def teardown(self):
        # Freeing everything must leave one free block spanning the arena.
        alloc = getattr(self, "alloc", None)
        if alloc is None:
            return
        for offset in list(self.live):
            alloc.free(offset)
        alloc._check_invariants()
        assert alloc.num_free_blocks == 1
        assert alloc.largest_free == alloc.free_bytes == alloc.capacity
        assert alloc.used == 0


AllocatorMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestAllocatorMachine = AllocatorMachine.TestCase


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=200),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_random_sequence_then_free_all_restores_one_block(sizes, seed):
    rng = random.Random(seed)
    alloc = Allocator(1 << 18)
    live = []
    for size in sizes:
        # Free about a third of the time so that holes form and refill.
        if live and rng.random() < 0.35:
            alloc.free(live.pop(rng.randrange(len(live))))
        offset = alloc.allocate(size)
        if offset is not None:
            live.append(offset)
    alloc._check_invariants()
    rng.shuffle(live)
    for offset in live:
        alloc.free(offset)
    alloc._check_invariants()
    assert alloc.num_free_blocks == 1
    assert alloc.largest_free == alloc.capacity
    assert alloc.used == 0
