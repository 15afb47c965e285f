"""A driver for test_tqdm_ray.py: tasks with progress bars, and a driver bar.

Three tasks each count a bar of ``STEPS`` steps (reporting every step) and print one
ordinary line in the middle; the driver counts a bar of its own. The driver then makes
one more request to the node (which relays worker output before it answers later
requests), so that every task's output has arrived, prints ``DONE`` and shuts down.
"""

import os

import purerun
from purerun.experimental.tqdm_ray import safe_print, tqdm

STEPS = 5
TASKS = 3


@purerun.remote
def count(i):
    bar = tqdm(total=STEPS, desc=f"task {i}", flush_interval_s=0)
    for step in range(STEPS):
        bar.update(1)
        if step == 2:
            print(f"ordinary line from task {i}", flush=True)
    bar.close()
    return os.getpid()


def main():
    purerun.init(num_cpus=2)
    pids = purerun.get([count.remote(i) for i in range(TASKS)])
    for _ in tqdm(range(STEPS), desc="driver"):
        pass
    safe_print("safe line from the driver")
    purerun.available_resources()
    print("PIDS " + " ".join(map(str, pids)), flush=True)
    print("DONE", flush=True)
    purerun.shutdown()


if __name__ == "__main__":
    main()
