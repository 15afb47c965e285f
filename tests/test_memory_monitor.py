"""The memory monitor's rule, without a process: which worker goes when memory runs low
(core/memory_monitor.py), and what NodeState does about it, event by event."""

import pytest

from purerun import exceptions
from purerun.core import protocol
from purerun.core.memory_monitor import (DEFAULT_REFRESH_MS, DEFAULT_USAGE_THRESHOLD,
                                         Candidate, MemoryMonitor, choose_victim,
                                         settings_from_env, threshold_bytes)
from purerun.core.node_state import DISCONNECTED, MEMORY_READING, KillWorker, NodeState
from purerun.core.control_store import ControlStore
from helpers import FakeStore
from test_node_state import actor_spec, error_of, start_actor, task
from test_node_state import Node as BaseNode

GB = 1024 ** 3


def c(worker_id, owner="driver", started=0, retriable=True):
    return Candidate(worker_id, owner, started, retriable, name=f"t{worker_id}")


# ─── the rule ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("candidates, victim", [
    ([], None),
    ([c(1, started=0)], 1),
    # the newest of one owner's work
    ([c(1, started=0), c(2, started=2), c(3, started=1)], 2),
    # retriable first, even if older
    ([c(1, started=0), c(2, started=5, retriable=False)], 1),
    # nothing retriable: the newest anyway
    ([c(1, started=0, retriable=False), c(2, started=5, retriable=False)], 2),
    # the owner with the most running gives back first, even if another started later
    ([c(1, "a", 0), c(2, "a", 1), c(3, "b", 9)], 2),
    # equal groups: the one whose earliest work started later
    ([c(1, "a", 0), c(2, "a", 5), c(3, "b", 2), c(4, "b", 3)], 4),
    # non-retriable work does not count in the groups while retriable work runs
    ([c(1, "a", 0, False), c(2, "a", 1, False), c(3, "a", 2, False), c(4, "b", 3)], 4),
], ids=["none", "one", "newest", "retriable-first", "no-retriable", "biggest-owner",
        "tie-later-group", "non-retriable-ignored"])
def test_choose_victim(candidates, victim):
    chosen = choose_victim(candidates)
    assert (chosen.worker_id if chosen else None) == victim


def test_threshold_bytes_and_min_free():
    assert threshold_bytes(100 * GB, 0.95) == 95 * GB
    # min_free raises the threshold to leave at most that much free, never lowers it
    assert threshold_bytes(100 * GB, 0.5, min_free_bytes=GB) == 99 * GB
    assert threshold_bytes(100 * GB, 0.95, min_free_bytes=20 * GB) == 95 * GB


def test_a_kill_waits_for_its_worker_before_the_next():
    monitor = MemoryMonitor(0.9)
    running = [c(1, started=0), c(2, started=1)]
    assert monitor.choose(89, 100, running) is None        # under the threshold
    assert monitor.choose(91, 100, running).worker_id == 2
    assert monitor.choose(99, 100, running) is None        # worker 2 is not gone yet
    monitor.worker_gone(2)
    assert monitor.choose(91, 100, running[:1]).worker_id == 1
    monitor.worker_gone(1)
    assert monitor.choose(99, 100, []) is None             # nothing runs: nothing to kill
    assert monitor.pending is None


def test_threshold_zero_turns_the_monitor_off():
    monitor = MemoryMonitor(0)
    assert not monitor.enabled
    assert not monitor.over_threshold(100, 100)
    assert monitor.choose(100, 100, [c(1)]) is None


def test_settings_from_the_environment():
    assert settings_from_env({}) == (DEFAULT_USAGE_THRESHOLD, DEFAULT_REFRESH_MS, -1)
    assert settings_from_env({"RAY_memory_usage_threshold": "0.5",
                              "RAY_memory_monitor_refresh_ms": "0"}) == (0.5, 0, -1)
    # purerun's own name wins
    assert settings_from_env({"RAY_memory_usage_threshold": "0.5",
                              "PURERUN_memory_usage_threshold": "0.7",
                              "RAY_min_memory_free_bytes": "1000"}) == (0.7, 250, 1000)
    for name, text in [("RAY_memory_usage_threshold", "1.5"),
                       ("PURERUN_memory_usage_threshold", "high"),
                       ("RAY_memory_monitor_refresh_ms", "-1"),
                       ("RAY_min_memory_free_bytes", "-2")]:
        with pytest.raises(ValueError, match=name):
            settings_from_env({name: text})


# ─── NodeState ───────────────────────────────────────────────────────────────────────────


class Node(BaseNode):
    """A NodeState whose memory monitor kills above 90%."""

    def __init__(self, cpus=2):
        self.store = FakeStore(1 << 20)
        self.control = ControlStore()
        self.state = NodeState({"node_id": b"N" * 16, "resources": {"CPU": cpus},
                                "session_dir": "/nonexistent",
                                "memory_usage_threshold": 0.9}, self.store, self.control,
                               max_workers=8, max_starting_workers=8)
        self.sent, self.effects, self.pids = [], [], {}
        self.connect("driver", owner=True)

    def reading(self, used, total=100 * GB, own=None):
        self.feed(None, (MEMORY_READING, used, total, own or {}))
        kills = [a for a in self.effects if isinstance(a, KillWorker)]
        self.effects = [a for a in self.effects if not isinstance(a, KillWorker)]
        return [a.worker_id for a in kills]

    def worker_of(self, spec):
        return self.state.tasks.get(spec.task_id).worker_id


def test_the_newest_task_is_killed_and_runs_again():
    node = Node()
    older, newer = task("older", max_retries=1), task("newer", max_retries=1)
    node.feed("driver", (protocol.SUBMIT, older))
    node.feed("driver", (protocol.SUBMIT, newer))
    assert len(node.executes()) == 2
    victim = node.worker_of(newer)
    assert node.reading(80 * GB) == []
    assert node.reading(95 * GB, own={victim: 3 * GB}) == [victim]
    warnings = node.take(protocol.WARN, "driver")
    assert len(warnings) == 1 and "newer" in warnings[0][1][1]
    assert node.reading(96 * GB) == []            # the kill is still under way
    node.feed(f"w{victim}", (DISCONNECTED,))
    [(worker, again)] = node.executes()
    assert again.task_id == newer.task_id and again.attempt == 1
    node.done(worker, again, "fine")
    assert newer.return_ids()[0] in node.objects_to()


def test_a_task_without_retries_left_fails_with_out_of_memory_error():
    node = Node()
    spec = task("hungry", max_retries=0)
    node.feed("driver", (protocol.SUBMIT, spec))
    node.executes()
    victim = node.worker_of(spec)
    assert node.reading(95 * GB, own={victim: 3 * GB}) == [victim]
    node.feed(f"w{victim}", (DISCONNECTED,))
    error = error_of(node.objects_to()[spec.return_ids()[0]])
    assert isinstance(error, exceptions.OutOfMemoryError)
    assert "hungry" in str(error) and "memory used=3.00GB" in str(error)
    assert "95.00GB / 100.00GB" in str(error)
    assert node.state.memory.pending is None and not node.state.memory.killed


def test_a_worker_dying_for_another_reason_is_not_out_of_memory():
    node = Node()
    spec = task("crashes", max_retries=0)
    node.feed("driver", (protocol.SUBMIT, spec))
    node.executes()
    node.feed(f"w{node.worker_of(spec)}", (DISCONNECTED,))
    error = error_of(node.objects_to()[spec.return_ids()[0]])
    assert type(error) is exceptions.WorkerCrashedError


def test_idle_workers_and_the_driver_are_never_killed():
    node = Node()
    spec = task()
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    node.done(worker, spec, 1)
    assert node.state.workers          # an idle worker is left
    assert node.reading(99 * GB) == []


def test_a_retriable_task_goes_before_an_actor_without_restarts():
    node = Node(cpus=3)
    start_actor(node, actor_spec(max_restarts=0))
    spec = task("retriable", max_retries=2)
    node.feed("driver", (protocol.SUBMIT, spec))
    node.executes()
    assert node.reading(95 * GB) == [node.worker_of(spec)]


def test_an_actor_killed_without_restarts_left_dies_of_out_of_memory():
    node = Node()
    creation = actor_spec(max_restarts=0)
    worker = start_actor(node, creation)
    [victim] = node.reading(95 * GB)
    assert f"w{victim}" == worker
    node.feed(worker, (DISCONNECTED,))
    cause = node.state.actors[creation.actor_id].cause
    assert isinstance(cause, exceptions.ActorDiedError) and "low on memory" in str(cause)
