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


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(log_to_driver):
    purerun.init(num_cpus=1, log_to_driver=log_to_driver)
    # One write per line: task output is relayed by another thread meanwhile, and print()
    # writes the text and its newline apart.
    say(f"TASK_PID {purerun.get(chatty.remote('task-1'))}")
    say(f"TASK_PID {purerun.get(chatty.remote('task-2'))}")
    say(f"MANY_PID {purerun.get(many_lines.remote(MANY_LINES))} {MANY_LINES}")
    try:
        purerun.get(dies_after_printing.remote())
    except purerun.exceptions.WorkerCrashedError:
        say("CRASHED")
    purerun.available_resources()
    say("DONE")
    sys.stdin.read()
    purerun.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] == "on")
