"""What the pytest plugin's per-test cluster costs a test, and that many in a row leave nothing.

Run: python -m pytest benchmarks/bench_fixtures.py --benchmark-only
 or: python benchmarks/bench_fixtures.py [--rounds 100] [--in-a-row 200]

One round is what ``purerun_cluster`` does around a test: ``init()`` with the fixtures'
defaults, waiting until the node is up (the test's first call would), ``shutdown()``, and
the plugin's check that every process and the session directory are gone. The script
prints the median and p99 of the rounds, then runs ``--in-a-row`` clusters back to back and
counts what is left: processes, session directories, /dev/shm files.

The node is a fresh interpreter each time, so its imports dominate: run with byte-code
caching on (an installed purerun has it; ``PYTHONDONTWRITEBYTECODE=1`` roughly doubles the
cost).
"""

import argparse
import glob
import os
import statistics
import sys
import time

import psutil

from purerun.core import launcher
from purerun.pytest_plugin import started_cluster


def one_cluster():
    with started_cluster() as info:
        info["node_id"]  # the node is up


def test_fixture_cycle(benchmark):
    benchmark.pedantic(one_cluster, rounds=30, warmup_rounds=2)


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def leftovers(before):
    """What exists now that did not in ``before`` (from ``snapshot``)."""
    now = snapshot()
    return {kind: sorted(now[kind] - before[kind]) for kind in now}


def snapshot():
    return {
        "processes": {p.pid for p in psutil.Process().children(recursive=True)
                      if p.status() != psutil.STATUS_ZOMBIE},
        "session dirs": set(glob.glob(os.path.join(launcher.temp_root(), "*"))),
        "/dev/shm files": set(glob.glob("/dev/shm/purerun*")),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--in-a-row", type=int, default=200)
    args = parser.parse_args(argv)
    if sys.flags.dont_write_bytecode:
        print("note: byte-code caching is off (PYTHONDONTWRITEBYTECODE): nodes compile "
              "their imports every time")
    one_cluster()  # warm-up
    samples = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        one_cluster()
        samples.append(time.perf_counter() - t0)
    before = snapshot()
    t0 = time.perf_counter()
    for _ in range(args.in_a_row):
        one_cluster()
    elapsed = time.perf_counter() - t0
    left = leftovers(before)
    print(f"{'per-test cluster (init + shutdown + check)':<46} {'median':>8} {'p99':>8}")
    print(f"{f'  over {args.rounds} rounds':<46} {statistics.median(samples):>7.3f}s "
          f"{percentile(samples, 0.99):>7.3f}s")
    print(f"{args.in_a_row} clusters in a row: {elapsed:.1f} s; left behind: "
          + ", ".join(f"{len(v)} {k}" for k, v in left.items()))
    return 1 if any(left.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
