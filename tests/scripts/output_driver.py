"""A driver for test_output.py: runs tasks that print, then waits for the test.

Usage: python output_driver.py on|off

``on`` and ``off`` set init's log_to_driver. Two tasks print two lines to stdout and one to
stderr and return their pid, which the driver prints as ``TASK_PID <pid>``; one prints
``MANY_LINES`` numbered lines (``MANY_PID <pid> <count>``); one prints a line and kills its worker
(``CRASHED``). The driver then
makes one more request to the node, which (the node relays worker output before it answers
later requests) means all that output has reached this process, prints ``DONE`` and waits
until the test closes its stdin.
"""

import os
import sys

import purerun

# Lines one task prints in a burst (the test checks that none is lost or reordered).
MANY_LINES = 2000


@purerun.remote
def chatty(tag):
    print(f"hello from {tag}")
    print(f"second line from {tag}", flush=True)
    print(f"complaint from {tag}", file=sys.stderr)
    return os.getpid()


@purerun.remote
def many_lines(count):
    for i in range(count):
        print(f"numbered line {i} from task-many")
    return os.getpid()


@purerun.remote(max_retries=0)
def dies_after_printing():
    print("last words from task-dying", flush=True)
    os._exit(1)


def main(log_to_driver):
    purerun.init(num_cpus=1, log_to_driver=log_to_driver)
    print(f"TASK_PID {purerun.get(chatty.remote('task-1'))}", flush=True)
    print(f"TASK_PID {purerun.get(chatty.remote('task-2'))}", flush=True)
    print(f"MANY_PID {purerun.get(many_lines.remote(MANY_LINES))} {MANY_LINES}", flush=True)
    try:
        purerun.get(dies_after_printing.remote())
    except purerun.exceptions.WorkerCrashedError:
        print("CRASHED", flush=True)
    purerun.available_resources()
    print("DONE", flush=True)
    sys.stdin.read()
    purerun.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] == "on")
