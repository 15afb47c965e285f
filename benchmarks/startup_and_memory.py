"""Start-up time, idle memory and memory stability of a local cluster.

Run: python benchmarks/startup_and_memory.py [--objects N]

Prints, as medians over several fresh clusters:
- time from init() to the first task's result, and of shutdown();
- idle resident memory (RSS and USS) of the whole cluster with 2 workers;
then, on one cluster, the RSS of every process before and after N small objects are put and
dropped (after a warm-up of N/10), which should come back to its starting level.
"""

import argparse
import gc
import statistics
import time

import psutil

import purerun


def cluster_processes():
    return [psutil.Process()] + psutil.Process().children(recursive=True)


def start_once():
    t0 = time.perf_counter()
    purerun.init(num_cpus=2)

    @purerun.remote
    def f():
        return b"ok"

    purerun.get(f.remote())
    first = time.perf_counter() - t0
    purerun.get([f.remote() for _ in range(2)])
    procs = psutil.Process().children(recursive=True)
    rss = sum(p.memory_full_info().rss for p in procs)
    uss = sum(p.memory_full_info().uss for p in procs)
    t1 = time.perf_counter()
    purerun.shutdown()
    return first, time.perf_counter() - t1, rss, uss, len(procs)


def memory_stability(n):
    purerun.init(num_cpus=2)
    client = purerun.core.context.client

    def settle():
        client.flush()
        deadline = time.time() + 10
        while client.request("stats")["num_objects"] and time.time() < deadline:
            time.sleep(0.01)  # benchmark only: waiting for the node to drain frees
        gc.collect()

    for i in range(n // 10):
        purerun.put(i)
    settle()
    before = {p.pid: p.memory_info().rss for p in cluster_processes()}
    t = time.perf_counter()
    for i in range(n):
        purerun.put(i)
    elapsed = time.perf_counter() - t
    settle()
    after = {p.pid: p.memory_info().rss for p in cluster_processes()}
    purerun.shutdown()
    return before, after, elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--objects", type=int, default=1_000_000)
    args = parser.parse_args()
    runs = [start_once() for _ in range(args.runs)]
    med = [statistics.median(r[i] for r in runs) for i in range(4)]
    print(f"init to first result: {med[0] * 1000:.0f} ms (median of {args.runs})")
    print(f"shutdown: {med[1] * 1000:.0f} ms")
    print(f"idle cluster ({runs[0][4]} processes: node + workers): RSS {med[2] / 2**20:.0f} MiB,"
          f" USS {med[3] / 2**20:.0f} MiB")
    before, after, elapsed = memory_stability(args.objects)
    print(f"{args.objects:,} small objects put and dropped in {elapsed:.1f} s "
          f"({args.objects / elapsed:,.0f}/s); RSS per process before -> after:")
    for pid in before:
        if pid in after:
            print(f"  pid {pid}: {before[pid] / 2**20:.1f} -> {after[pid] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
