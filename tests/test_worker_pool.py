"""The worker pool grows for tasks blocked in get, and shrinks back once they are done.

A task blocked in ``get`` lends its CPU, so a burst of them makes the node start a worker
for each. Once the burst is over, the workers beyond the CPU count sit idle; after
``WORKER_IDLE_CHECKS`` idle checks they exit, and the pool is back to the CPU count.
"""

import os

import psutil
import pytest

import purerun
from helpers import wait_for
from purerun.core import context
from purerun.core.node_state import WORKER_IDLE_CHECK_S, WORKER_IDLE_CHECKS

pytestmark = pytest.mark.timeout(120)

CPUS = 2
BLOCKED = 12
# Long enough for the retirement (WORKER_IDLE_CHECKS checks) on a loaded machine.
SHRINK_DEADLINE_S = WORKER_IDLE_CHECK_S * WORKER_IDLE_CHECKS + 30


@purerun.remote
def leaf(path):
    with open(path, "a") as f:
        f.write("x")
    return os.getpid()


@purerun.remote
def waits_for_its_leaf(path, gate):
    # Blocks in get until the gate file exists: every such task holds a worker of its own.
    import time
    while not os.path.exists(gate):
        time.sleep(0.005)
    return purerun.get(leaf.remote(path))


def _workers():
    return context.client.request("stats")["workers"]


def test_idle_workers_beyond_the_cpu_count_retire_and_the_pool_still_works(tmp_path):
    purerun.init(num_cpus=CPUS)
    try:
        gate = str(tmp_path / "gate")
        refs = [waits_for_its_leaf.options(num_cpus=0).remote(str(tmp_path / "leaves"), gate)
                for _ in range(BLOCKED)]
        wait_for(lambda: len(_workers()) >= BLOCKED, timeout=60,
                 message=f"{BLOCKED} workers for the blocked tasks")
        open(gate, "w").close()
        assert len(purerun.get(refs, timeout=60)) == BLOCKED
        grown = _workers()
        assert len(grown) > CPUS
        wait_for(lambda: len(_workers()) <= CPUS, timeout=SHRINK_DEADLINE_S,
                 message="the pool to shrink back to the CPU count")
        # The retired processes are gone, not just forgotten.
        kept = set(_workers().values())
        for pid in set(grown.values()) - kept:
            wait_for(lambda: not psutil.pid_exists(pid) or
                     psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=10,
                     message=f"retired worker {pid} to exit")
        # What is left still runs tasks, and more workers come when needed.
        assert len(purerun.get([leaf.remote(str(tmp_path / "after")) for _ in range(20)],
                               timeout=60)) == 20
    finally:
        purerun.shutdown()
