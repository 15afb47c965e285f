"""A driver for test_lifecycle.py: starts a cluster, runs tasks, then ends as told.

Usage: python lifecycle_driver.py WORK_DIR

It prints one line ``INFO {json}`` with the session directory, the pid of every worker that
ran a task, and the pid of the worker running a long task (which waits for a file that never
appears, so it is still running when the driver goes). Then it waits until the test closes
its stdin, and returns from the script without calling shutdown (the atexit handler must
stop the cluster) — unless the test kills it first.
"""

import json
import os
import sys
import time

import purerun

# The long task gives up after this long, so that even a leaked worker goes away in the end.
LONG_TASK_S = 60.0


@purerun.remote
def worker_pid(_):
    return os.getpid()


@purerun.remote(max_retries=0)
def long_task(started, never):
    with open(started, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + LONG_TASK_S
    while not os.path.exists(never) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "gave up"


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def main(work_dir):
    info = purerun.init(num_cpus=2)
    pids = set(purerun.get([worker_pid.remote(i) for i in range(8)]))
    started = os.path.join(work_dir, "long-task-started")
    long_ref = long_task.remote(started, os.path.join(work_dir, "never"))
    deadline = time.monotonic() + 30
    while not _read(started):
        if time.monotonic() > deadline:
            sys.exit("the long task did not start")
        time.sleep(0.01)
    # An object in the arena and one inline, so the store has something to release.
    refs = [purerun.put(b"x" * (1 << 20)), purerun.put("small")]
    print("INFO " + json.dumps({
        "session_dir": info["session_dir"],
        "worker_pids": sorted(pids),
        "long_task_pid": int(_read(started)),
    }), flush=True)
    sys.stdin.read()
    del long_ref, refs


if __name__ == "__main__":
    main(sys.argv[1])
