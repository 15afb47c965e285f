"""A driver for test_processes.py: a task starts processes of its own, then the driver ends
as the test tells it.

Usage: python subprocess_driver.py

It prints one line ``INFO {json}`` with the pids of the processes a task started and left
running (a child, and a grandchild that detached with a double fork and setsid), then waits
until the test closes its stdin or kills it.
"""

import json
import os
import subprocess
import sys

import purerun


@purerun.remote
def start_processes():
    child = subprocess.Popen(["sleep", "300"])
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:   # the middle of a double fork: detaches, starts the daemon, exits
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            os.execvp("sleep", ["sleep", "300"])
        os.write(write, str(daemon).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(middle, 0)
    with os.fdopen(read) as f:
        daemon = int(f.read())
    return {"child": child.pid, "daemon": daemon, "worker": os.getpid()}


def main():
    purerun.init(num_cpus=1)
    print("INFO " + json.dumps(purerun.get(start_processes.remote())), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
