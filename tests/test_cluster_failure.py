"""A node, or the head, dies under a running multi-node cluster (real processes)."""

import os
import signal
import time

import numpy as np
import pytest

import purerun
from cluster_common import Counter, alive, mark_then_hang, node_of, on
from helpers import wait_for
from purerun import exceptions
from purerun.cluster_utils import Cluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fresh():
    """A cluster for one test that kills part of it."""
    c = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    c.second = c.add_node(num_cpus=1, resources={"b": 4})
    c.third = c.add_node(num_cpus=1, resources={"b": 4})
    c.wait_for_nodes()
    yield c
    c.shutdown()


def test_a_node_killed_is_dead_its_task_runs_elsewhere_its_actor_restarts(fresh, tmp_path):
    victim = fresh.second
    make = node_of.options(scheduling_strategy=on(victim))

    @purerun.remote
    def big():
        return np.ones(1_000_000, dtype=np.uint8)

    lost = big.options(scheduling_strategy=on(victim), max_retries=0).remote()
    remade = big.options(scheduling_strategy=on(victim, soft=True), max_retries=1).remote()
    purerun.wait([lost, remade], num_returns=2, timeout=30)
    actor = Counter.options(max_restarts=1, scheduling_strategy=on(victim, soft=True)).remote()
    assert purerun.get(actor.node.remote()) == victim.node_id
    marker = tmp_path / "started"
    task = mark_then_hang.options(scheduling_strategy=on(victim, soft=True)).remote(str(marker))
    wait_for(marker.exists, timeout=30, message="the task started on the victim")

    fresh.remove_node(victim, allow_graceful=False)
    wait_for(lambda: not alive(victim.node_id), timeout=10, message="the node shown dead")
    assert purerun.get(task, timeout=30) != victim.node_id
    assert purerun.get(actor.node.remote(), timeout=30) != victim.node_id
    assert purerun.get(actor.add.remote(), timeout=30) == 1   # a fresh instance
    with pytest.raises(exceptions.ObjectLostError):
        purerun.get(lost, timeout=30)
    assert int(purerun.get(remade, timeout=30).sum()) == 1_000_000   # made again elsewhere
    with pytest.raises(exceptions.TaskUnschedulableError, match="dead"):
        purerun.get(make.remote(), timeout=30)


def test_a_silent_node_is_declared_dead_and_stops_when_it_wakes(fresh, tmp_path):
    victim = fresh.third
    marker = tmp_path / "started"
    task = mark_then_hang.options(scheduling_strategy=on(victim, soft=True)).remote(str(marker))
    wait_for(marker.exists, timeout=30, message="the task started on the victim")
    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not alive(victim.node_id), timeout=15,
                 message="the silent node declared dead")
        assert purerun.get(task, timeout=30) != victim.node_id
    finally:
        os.kill(victim.process.pid, signal.SIGCONT)
    # Declared dead, it must not carry on: it stops by itself once it runs again.
    victim.process.wait(30)


def test_without_a_head_new_tasks_fail_with_a_clear_error(fresh):
    assert purerun.get(node_of.remote()) == fresh.head_node.node_id
    fresh._head.kill()
    fresh._head.wait()

    def refused():
        try:
            purerun.get(node_of.remote(), timeout=30)
        except exceptions.RaySystemError as exc:
            return "head is gone" in str(exc)
        return False
    wait_for(refused, timeout=10, message="a task refused for want of a head")
    with pytest.raises(ConnectionError, match="unreachable"):
        purerun.nodes()


def test_a_head_that_stops_answering_does_not_stall_work_on_the_nodes(fresh):
    pinned = node_of.options(scheduling_strategy=on(fresh.head_node))
    assert purerun.get(pinned.remote()) == fresh.head_node.node_id   # exported already
    fresh._head.send_signal(signal.SIGSTOP)
    try:
        # Heartbeats go out without waiting for an answer: through several ticks (0.5 s
        # apart) the node keeps serving, at once, what needs no head.
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            assert purerun.get([pinned.remote() for _ in range(5)], timeout=5) \
                == [fresh.head_node.node_id] * 5
    finally:
        fresh._head.send_signal(signal.SIGCONT)


def test_a_driver_that_connects_after_the_head_died_is_told_why_its_tasks_fail(fresh):
    import subprocess
    import sys
    fresh._head.kill()
    fresh._head.wait()
    script = ("import sys, purerun\n"
              "purerun.init(address=sys.argv[1])\n"
              "@purerun.remote\n"
              "def f():\n"
              "    return 1\n"
              "try:\n"
              "    purerun.get(f.remote(), timeout=20)\n"
              "except purerun.exceptions.RaySystemError as exc:\n"
              "    print('refused:', 'head is gone' in str(exc))\n")
    out = subprocess.run([sys.executable, "-c", script, fresh.second.address],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refused: True"   # told at its first task, not at init
