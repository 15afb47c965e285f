"""Endurance: a million tiny tasks, a hundred thousand actor calls, and a soak with kills.

Run: python benchmarks/bench_endurance.py [--tasks 1000000] [--wave 10000]
                                          [--calls 100000] [--soak-s 600]
                                          [--only tasks,calls,soak]
 or: python -m pytest benchmarks/bench_endurance.py --benchmark-only   (short forms)

a. ``tasks``: ``--tasks`` tiny tasks in waves of ``--wave`` (submitted at once, then got).
   After each wave: the rate, and the resident memory (RSS) of the driver, of the node and
   of its workers (the largest one, and all of them together). The report shows the first
   and the last wave side by side: a runtime that leaks per task grows between them.
b. ``calls``: ``--calls`` calls of one actor's method, in waves, measured the same way.
c. ``soak``: ``--soak-s`` seconds of a mix, each round picking one of: a wave of tasks
   (some of which kill their own worker on the first attempt and are retried), calls on a
   few restartable actors (one of which is killed now and then, and answers again once it
   is restarted), a put of a numpy array and its get (checked by checksum), and a task that
   returns a large array (checked too). Every result is checked: nothing may be lost. At the
   end, the node's object table must be back where it started (no object left, the arena
   empty), and after ``shutdown()`` no process and no /dev/shm segment may be left.

Nothing is asserted about speed; the soak fails loudly if a value is wrong or lost, or if
anything is left behind.
"""

import argparse
import glob
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time

import numpy as np
import psutil

import purerun
from purerun.core import context

MB = 1 << 20
# How long processes get to go away after shutdown() before they count as leaked.
LEAK_DEADLINE_S = 10.0


# -- work ---------------------------------------------------------------------------------------

@purerun.remote
def tiny(x):
    return x


@purerun.remote(max_retries=3)
def maybe_crash(x, marker_dir):
    """Returns ``x``; for some ``x`` kills its own worker on the first attempt."""
    if x % 97 == 0:
        marker = os.path.join(marker_dir, f"crashed-{x}")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
    return x


@purerun.remote
def make_array(seed, n):
    return np.random.default_rng(seed).integers(0, 1 << 30, n, dtype=np.int64)


@purerun.remote
class Echo:
    def echo(self, x):
        return x

    def pid(self):
        return os.getpid()


def _checksum(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# -- measuring ----------------------------------------------------------------------------------

def _rss_mb(proc):
    try:
        return proc.memory_info().rss / MB
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def _memory():
    """RSS in MiB: (driver, node, largest worker, all workers)."""
    me = psutil.Process()
    nodes = [p for p in me.children() if "purerun.core.node" in " ".join(_cmdline(p))]
    node = nodes[0] if nodes else None
    workers = node.children() if node is not None else []
    sizes = [_rss_mb(w) for w in workers]
    return (_rss_mb(me), _rss_mb(node) if node is not None else 0.0,
            max(sizes, default=0.0), sum(sizes))


def _cmdline(proc):
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def _stats():
    return context.client.request("stats")


def waves(total, wave, run_wave):
    """Run ``total`` items in waves; one row per wave: (items/s, driver, node, max worker,
    all workers)."""
    rows = []
    done = 0
    while done < total:
        n = min(wave, total - done)
        start = time.perf_counter()
        run_wave(done, n)
        elapsed = time.perf_counter() - start
        rows.append((n / elapsed,) + _memory())
        done += n
    return rows


def tasks_wave(first, n):
    refs = [tiny.remote(i) for i in range(first, first + n)]
    values = purerun.get(refs)
    if values != list(range(first, first + n)):
        raise AssertionError("a tiny task returned a wrong value")


def calls_wave_for(actor):
    def run(first, n):
        refs = [actor.echo.remote(i) for i in range(first, first + n)]
        if purerun.get(refs) != list(range(first, first + n)):
            raise AssertionError("an actor call returned a wrong value")
    return run


def report(title, rows, unit):
    """First and last wave side by side, and the wave at a fifth of the run: bounded
    buffers (the timeline keeps the last 100,000 task events) fill early, so growth from
    there to the end is what a leak would show."""
    first, settled, last = rows[0], rows[len(rows) // 5], rows[-1]
    print(f"\n{title}: {len(rows)} waves")
    print(f"{'':14}{'first wave':>12}{f'wave {len(rows) // 5 + 1}':>12}{'last wave':>12}"
          f"{'last/first':>12}{'last/wave':>12}")
    names = (f"{unit}/s", "driver MiB", "node MiB", "worker MiB", "workers MiB")
    for i, name in enumerate(names):
        ratio = last[i] / first[i] if first[i] else float("nan")
        since = last[i] / settled[i] if settled[i] else float("nan")
        print(f"{name:14}{first[i]:12.1f}{settled[i]:12.1f}{last[i]:12.1f}{ratio:12.2f}"
              f"{since:12.2f}")
    rates = [r[0] for r in rows]
    print(f"median {unit}/s over all waves: {statistics.median(rates):,.0f}")


# -- the soak -----------------------------------------------------------------------------------

def soak(seconds, seed=0):
    rng = random.Random(seed)
    marker_dir = tempfile.mkdtemp(prefix="soak_")
    baseline = _stats()
    actors = [Echo.options(max_restarts=-1, max_task_retries=-1).remote() for _ in range(3)]
    counts = dict.fromkeys(("task waves", "tasks", "retried crashes", "actor calls",
                            "actor kills", "puts", "large results"), 0)
    actor = actors[0]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        choice = rng.random()
        if choice < 0.35:
            base = rng.randrange(1 << 30)
            xs = [base + i for i in range(200)]
            if purerun.get([maybe_crash.remote(x, marker_dir) for x in xs]) != xs:
                raise AssertionError("a task's value was lost or wrong")
            counts["task waves"] += 1
            counts["tasks"] += len(xs)
            counts["retried crashes"] += sum(1 for x in xs if x % 97 == 0)
        elif choice < 0.65:
            actor = rng.choice(actors)
            if rng.random() < 0.05:
                purerun.kill(actor, no_restart=False)
                counts["actor kills"] += 1
            xs = list(range(100))
            if purerun.get([actor.echo.remote(x) for x in xs]) != xs:
                raise AssertionError("an actor call's value was lost or wrong")
            counts["actor calls"] += len(xs)
        elif choice < 0.9:
            array = np.random.default_rng(rng.randrange(1 << 30)).random(rng.choice(
                (100, 10_000, 1_000_000)))
            ref = purerun.put(array)
            if _checksum(purerun.get(ref)) != _checksum(array):
                raise AssertionError("a put value came back different")
            del ref
            counts["puts"] += 1
        else:
            seed_ = rng.randrange(1 << 30)
            n = rng.choice((1_000, 2_000_000))
            got = purerun.get(make_array.remote(seed_, n))
            want = np.random.default_rng(seed_).integers(0, 1 << 30, n, dtype=np.int64)
            if not np.array_equal(got, want):
                raise AssertionError("a large task result came back different")
            del got
            counts["large results"] += 1
    for each in actors:
        purerun.kill(each)
    del actors, each, actor   # the handles too: their actors' objects go with them
    # Everything made in the soak is released: the object table must come back to where it
    # started (references drop asynchronously: give them a moment, polled).
    until = time.monotonic() + LEAK_DEADLINE_S
    while True:
        now = _stats()
        if (now["num_objects"] <= baseline["num_objects"]
                and now["arena_used"] <= baseline["arena_used"]):
            break
        if time.monotonic() > until:
            raise AssertionError(f"objects left after the soak: {now} (before: {baseline})")
        time.sleep(0.05)
    return counts, now, baseline


def _leftovers(before_children, before_shm):
    until = time.monotonic() + LEAK_DEADLINE_S
    while True:
        alive = [p for p in psutil.Process().children(recursive=True)
                 if p.pid not in before_children and p.is_running()
                 and p.status() != psutil.STATUS_ZOMBIE]
        shm = set(glob.glob("/dev/shm/purerun*")) - before_shm
        if not alive and not shm:
            return [], []
        if time.monotonic() > until:
            return alive, sorted(shm)
        time.sleep(0.05)


# -- entry points -------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--wave", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--only", default="tasks,calls,soak")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    before_children = {p.pid for p in psutil.Process().children(recursive=True)}
    before_shm = set(glob.glob("/dev/shm/purerun*"))
    purerun.init(num_cpus=args.cpus)
    try:
        if "tasks" in parts:
            report(f"{args.tasks:,} tiny tasks", waves(args.tasks, args.wave, tasks_wave),
                   "tasks")
        if "calls" in parts:
            actor = Echo.remote()
            report(f"{args.calls:,} actor calls",
                   waves(args.calls, args.wave, calls_wave_for(actor)), "calls")
            purerun.kill(actor)
            del actor
        if "soak" in parts:
            start = time.monotonic()
            counts, after, before = soak(args.soak_s)
            print(f"\nsoak: {time.monotonic() - start:.0f} s, every value checked")
            for name, count in counts.items():
                print(f"  {name:16}{count:>10,}")
            print(f"  objects before/after: {before['num_objects']}/{after['num_objects']}, "
                  f"arena used before/after: {before['arena_used']}/{after['arena_used']} B")
    finally:
        purerun.shutdown()
    alive, shm = _leftovers(before_children, before_shm)
    print(f"\nafter shutdown: {len(alive)} processes and {len(shm)} /dev/shm segments left")
    if alive or shm:
        raise SystemExit(f"leaked: {alive} {shm}")


def test_tiny_task_waves(benchmark):
    purerun.init(num_cpus=2)
    try:
        rows = []
        benchmark.pedantic(lambda: rows.extend(waves(20_000, 5_000, tasks_wave)),
                           rounds=3, iterations=1)
        benchmark.extra_info["last/first node RSS"] = rows[-1][2] / rows[0][2]
    finally:
        purerun.shutdown()


def test_short_soak(benchmark):
    purerun.init(num_cpus=2)
    try:
        result = benchmark.pedantic(lambda: soak(10.0), rounds=1, iterations=1)
        benchmark.extra_info.update(result[0])
    finally:
        purerun.shutdown()


if __name__ == "__main__":
    main()
