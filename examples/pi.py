"""Estimate pi by Monte Carlo sampling on every CPU of this machine.

Each task draws random points in the unit square with numpy and counts those inside the
quarter circle. The driver also `put`s a large array of seeds once: every task reads it from
shared memory without copying. Run: python examples/pi.py [total_samples]
"""

# portability: args 2000000
# portability: scrub (?<=pi ~= 3\.1)\d+ \(error .*

import sys
import time

import numpy as np

import purerun as ray


@ray.remote
def count_inside(seeds, index, samples):
    """Count random points of the unit square that fall inside the unit circle."""
    rng = np.random.default_rng(int(seeds[index]))
    inside = 0
    remaining = samples
    while remaining:
        n = min(remaining, 1_000_000)
        xy = rng.random((n, 2))
        inside += int(np.count_nonzero((xy * xy).sum(axis=1) <= 1.0))
        remaining -= n
    return inside


def main(total=20_000_000):
    start = time.perf_counter()
    ray.init()
    num_tasks = max(4, int(ray.cluster_resources()["CPU"]) * 4)
    per_task = total // num_tasks
    # One shared array of seeds: put once, read zero-copy by every task.
    seeds = ray.put(np.random.SeedSequence(2024).generate_state(num_tasks, dtype=np.uint64))
    refs = [count_inside.remote(seeds, i, per_task) for i in range(num_tasks)]
    inside = sum(ray.get(refs))
    estimate = 4.0 * inside / (per_task * num_tasks)
    elapsed = time.perf_counter() - start
    print(f"pi ~= {estimate:.6f} (error {abs(estimate - np.pi):.2e}) from "
          f"{per_task * num_tasks:,} samples in {num_tasks} tasks, {elapsed:.2f} s")
    ray.shutdown()
    return estimate


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000_000)
