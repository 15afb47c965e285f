"""CPU time each process of a local cluster spends per tiny task (driver, node, workers).

Run: python benchmarks/cpu_per_task.py [batches]

Shows where the time of a task goes: the per-process CPU (psutil) over `batches` x 1000
tasks submitted together, then over 3000 tasks submitted one at a time. On a 2-core machine
the sum over processes bounds the task rate.
"""

import sys
import time

import psutil

import purerun


def main(batches=10):
    purerun.init(num_cpus=2)

    @purerun.remote
    def small_value():
        return b"ok"

    purerun.get([small_value.remote() for _ in range(2000)])
    me = psutil.Process()
    procs = [me] + me.children(recursive=True)
    names = {me.pid: "driver"}
    for p in procs[1:]:
        names[p.pid] = "node" if p.ppid() == me.pid else "worker"

    def cpu():
        return {p.pid: sum(p.cpu_times()[:2]) for p in procs}

    def report(label, n, run):
        before = cpu()
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        after = cpu()
        print(f"{label}: {n / elapsed:,.0f} tasks/s")
        for pid in before:
            print(f"  {names[pid]:>6} {pid}: {1e6 * (after[pid] - before[pid]) / n:.0f} us CPU "
                  "per task")

    report("1000 at a time", batches * 1000,
           lambda: [purerun.get([small_value.remote() for _ in range(1000)])
                    for _ in range(batches)])
    report("one at a time", 3000,
           lambda: [purerun.get(small_value.remote()) for _ in range(3000)])
    purerun.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
