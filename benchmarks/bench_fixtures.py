"""What the pytest plugin's per-test cluster costs a test, and that many in a row leave nothing.

Run: python -m pytest benchmarks/bench_fixtures.py --benchmark-only
 or: python benchmarks/bench_fixtures.py [--rounds 100] [--in-a-row 200] [--ray-rounds 10]

One round is what ``purerun_cluster`` does around a test: ``init()`` with the fixtures'
defaults, waiting until the node is up (the test's first call would), ``shutdown()``, and
the plugin's check that every process and the session directory are gone. The script
prints the median and p99 of the rounds twice: with the fixtures' nodes forked from the
fork server (their default) and spawned as fresh interpreters (``PURERUN_FORKSERVER=0``);
then it runs ``--in-a-row`` clusters back to back and counts what is left: processes,
session directories, /dev/shm files. With Ray importable (run it with Ray's interpreter and
``PYTHONPATH`` naming this checkout), ``--ray-rounds`` rounds of Ray's equivalent,
``ray.init(num_cpus=1)`` and ``ray.shutdown()``, follow in the same run.

A spawned node is a fresh interpreter, so its imports dominate: run with byte-code caching
on (an installed purerun has it; ``PYTHONDONTWRITEBYTECODE=1`` roughly doubles the cost).
"""

import argparse
import glob
import importlib.util
import os
import statistics
import sys
import time

import psutil

from purerun.core import launcher
from purerun.pytest_plugin import FORKSERVER_ENV_VAR, started_cluster


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


def timed_rounds(rounds, one):
    one()  # warm-up (it starts the fork server, when one is used)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        one()
        samples.append(time.perf_counter() - t0)
    return samples


def ray_cycle():
    import ray
    ray.init(num_cpus=1, include_dashboard=False)
    ray.shutdown()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--in-a-row", type=int, default=200)
    parser.add_argument("--ray-rounds", type=int, default=10)
    args = parser.parse_args(argv)
    if sys.flags.dont_write_bytecode:
        print("note: byte-code caching is off (PYTHONDONTWRITEBYTECODE): nodes compile "
              "their imports every time")
    rows = [("forked nodes (the default)", timed_rounds(args.rounds, one_cluster))]
    os.environ[FORKSERVER_ENV_VAR] = "0"
    try:
        rows.append((f"spawned nodes ({FORKSERVER_ENV_VAR}=0)",
                     timed_rounds(args.rounds, one_cluster)))
    finally:
        del os.environ[FORKSERVER_ENV_VAR]
    if importlib.util.find_spec("ray") is None:
        ray_note = "Ray is not installed here: no Ray row"
    else:
        ray_note = None
        rows.append(("Ray: ray.init(num_cpus=1) + ray.shutdown()",
                     timed_rounds(args.ray_rounds, ray_cycle)))
    before = snapshot()
    t0 = time.perf_counter()
    for _ in range(args.in_a_row):
        one_cluster()
    elapsed = time.perf_counter() - t0
    left = leftovers(before)
    print(f"{'per-test cluster (init + shutdown + check)':<46} {'rounds':>6} {'median':>8} "
          f"{'p99':>8}")
    for name, samples in rows:
        print(f"  {name:<44} {len(samples):>6} {statistics.median(samples):>7.3f}s "
              f"{percentile(samples, 0.99):>7.3f}s")
    if ray_note:
        print(f"  ({ray_note})")
    print(f"{args.in_a_row} clusters in a row: {elapsed:.1f} s; left behind: "
          + ", ".join(f"{len(v)} {k}" for k, v in left.items()))
    return 1 if any(left.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
