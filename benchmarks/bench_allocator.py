"""Benchmarks for the shared-memory arena's best-fit allocator.

Run with::

    python -m pytest benchmarks/bench_allocator.py

Two questions are measured here:

* What does one ``allocate`` + ``free`` pair cost, and how does the cost grow
  with the number of holes? A pair on a fragmented arena leaves the allocator
  exactly as it found it: the remainder of the split merges back on ``free``.
  Every round therefore sees the same state, and the per-pair figure is
  reported in ``extra_info["us_per_pair"]``.
* How fragmented does the arena get under a steady, random workload? The
  workload holds the arena at a fixed fill level (half or 90% full) and
  evicts random objects when a request does not fit, as the object store
  would. The resulting figures go
  into ``extra_info``.

No timings are asserted. Compare runs with ``--benchmark-compare``.
"""

import importlib.util
import math
import pathlib
import random

import pytest


def _load_allocator_module():
    # Prefer the normal import, but fall back to loading the file when the
    # rest of the package cannot be imported yet.
    try:
        from purerun.core import allocator

        return allocator
    except Exception:
        path = pathlib.Path(__file__).resolve().parents[1] / "purerun" / "core" / "allocator.py"
        spec = importlib.util.spec_from_file_location("purerun_core_allocator", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


Allocator = _load_allocator_module().Allocator

# Sizes are drawn log-uniformly between these bounds. Object stores see many
# small objects and a few large ones, and a uniform draw would hide the small
# ones entirely.
MIN_OBJECT = 64
MAX_OBJECT = 1 << 20

# Pairs per timed round. This is enough to swamp the cost of the timer call
# while keeping a round to a few milliseconds.
PAIRS_PER_ROUND = 1000

# Large enough that the live blocks of the biggest case fit with room to spare.
ARENA_BYTES = 1 << 36


def log_uniform_sizes(rng, count, low=MIN_OBJECT, high=MAX_OBJECT):
    """Return ``count`` sizes drawn log-uniformly from ``[low, high]``."""
    log_low, log_high = math.log(low), math.log(high)
    return [int(math.exp(rng.uniform(log_low, log_high))) for _ in range(count)]


def fragmented_arena(num_blocks, seed=0):
    """Return an allocator with ``num_blocks`` blocks laid out, a random half freed.

    The freed half leaves roughly ``num_blocks / 4`` separate holes, since
    neighbouring freed blocks coalesce. The live half keeps them apart.
    """
    rng = random.Random(seed)
    alloc = Allocator(ARENA_BYTES)
    offsets = [alloc.allocate(size) for size in log_uniform_sizes(rng, num_blocks)]
    for offset in rng.sample(offsets, len(offsets) // 2):
        alloc.free(offset)
    return alloc


def record_per_pair_cost(benchmark):
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        # Stats are absent when the run uses --benchmark-disable.
        benchmark.extra_info["us_per_pair"] = round(stats.stats.mean / PAIRS_PER_ROUND * 1e6, 3)


@pytest.mark.parametrize("num_blocks", [0, 1_000, 100_000])
def test_allocate_free_pair_mixed_sizes(benchmark, num_blocks):
    alloc = fragmented_arena(num_blocks)
    sizes = log_uniform_sizes(random.Random(1), PAIRS_PER_ROUND)
    allocate, free = alloc.allocate, alloc.free

    def pairs():
        for size in sizes:
            free(allocate(size))

    benchmark(pairs)

    benchmark.extra_info.update(
        pairs_per_round=PAIRS_PER_ROUND,
        free_blocks=alloc.num_free_blocks,
        live_blocks=alloc.num_allocated,
    )
    record_per_pair_cost(benchmark)
    alloc._check_invariants()


@pytest.mark.parametrize("num_blocks", [1_000, 100_000])
def test_allocate_free_pair_small_sizes(benchmark, num_blocks):
    # Small requests fit in many holes, so best fit has the most candidates
    # to choose from and almost always splits.
    alloc = fragmented_arena(num_blocks)
    sizes = log_uniform_sizes(random.Random(2), PAIRS_PER_ROUND, high=4096)
    allocate, free = alloc.allocate, alloc.free

    def pairs():
        for size in sizes:
            free(allocate(size))

    benchmark(pairs)

    benchmark.extra_info.update(
        pairs_per_round=PAIRS_PER_ROUND,
        free_blocks=alloc.num_free_blocks,
        live_blocks=alloc.num_allocated,
    )
    record_per_pair_cost(benchmark)
    alloc._check_invariants()


# The random workload: a 256 MiB arena kept at a fixed fill level. Objects
# of up to 4 MiB are 1/64 of the arena, big enough that fragmentation shows.
WORKLOAD_ARENA = 256 << 20
WORKLOAD_MAX_OBJECT = 4 << 20
WORKLOAD_STEPS = 20_000
WORKLOAD_SAMPLE_EVERY = 100


def random_workload(fill, seed):
    """Run the workload with the arena held at ``fill`` of its capacity.

    Returns:
        The allocator after the last step, and a dict of figures for
        ``extra_info``.
    """
    rng = random.Random(seed)
    alloc = Allocator(WORKLOAD_ARENA)
    live = []
    sizes = log_uniform_sizes(rng, WORKLOAD_STEPS, high=WORKLOAD_MAX_OBJECT)
    # Requests that found enough free bytes in total but no single hole to
    # hold them. These are the failures that fragmentation causes.
    fragmentation_misses = 0
    samples = []

    def evict_one():
        index = rng.randrange(len(live))
        live[index], live[-1] = live[-1], live[index]
        alloc.free(live.pop())

    for step, size in enumerate(sizes):
        while alloc.used > fill * WORKLOAD_ARENA:
            evict_one()
        offset = alloc.allocate(size)
        if offset is None and alloc.free_bytes >= size:
            fragmentation_misses += 1
        while offset is None:
            evict_one()
            offset = alloc.allocate(size)
        live.append(offset)
        if step % WORKLOAD_SAMPLE_EVERY == 0:
            samples.append(alloc.fragmentation())

    figures = {
        "steps": WORKLOAD_STEPS,
        "final_fragmentation": round(alloc.fragmentation(), 4),
        "mean_fragmentation": round(sum(samples) / len(samples), 4),
        "max_fragmentation": round(max(samples), 4),
        "fragmentation_miss_rate": round(fragmentation_misses / WORKLOAD_STEPS, 4),
        "final_utilization": round(alloc.used / alloc.capacity, 4),
        "final_free_blocks": alloc.num_free_blocks,
        "final_live_blocks": alloc.num_allocated,
    }
    return alloc, figures


@pytest.mark.parametrize("fill", [0.5, 0.9])
def test_fragmentation_after_random_workload(benchmark, fill):
    alloc, figures = benchmark.pedantic(random_workload, args=(fill, 0), rounds=3, iterations=1)
    benchmark.extra_info.update(figures, fill=fill)
    alloc._check_invariants()
    assert 0.0 <= figures["final_fragmentation"] < 1.0
