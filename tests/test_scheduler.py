"""Tests of the node's local scheduler, driven event by event with no process started."""

import math

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from purerun.core.scheduler import (
    CancelTask,
    Dispatch,
    IdleTick,
    Infeasible,
    ObjectReady,
    PrestartWorkers,
    RetireWorker,
    Scheduler,
    StartWorker,
    SubmitTask,
    TaskCancelled,
    TaskFinished,
    TaskLost,
    WorkerBlocked,
    WorkerDied,
    WorkerReleased,
    WorkerRetiring,
    WorkerStarted,
    WorkerUnblocked,
)


def make(resources=None, gpu_ids=(), *, max_workers=16, max_starting_workers=16, **kwargs):
    return Scheduler(
        {"CPU": 2} if resources is None else resources,
        gpu_ids,
        max_workers=max_workers,
        max_starting_workers=max_starting_workers,
        **kwargs,
    )


def start_workers(scheduler, *worker_ids):
    """Connect workers one after another; return every action this caused."""
    actions = []
    for worker_id in worker_ids:
        actions += scheduler.handle(WorkerStarted(worker_id))
    return actions


def dispatched(actions):
    return [(a.task_id, a.worker_id) for a in actions if isinstance(a, Dispatch)]


# ─── basics ──────────────────────────────────────────────────────────────────────────────────


def test_submit_asks_for_a_worker_and_dispatches_when_it_connects():
    s = make({"CPU": 2})
    assert s.handle(SubmitTask("t1", {"CPU": 1})) == [StartWorker()]
    assert s.num_pending == 1 and s.num_starting == 1
    assert s.handle(WorkerStarted("w1")) == [Dispatch("t1", "w1", ())]
    assert s.num_pending == 0 and s.num_starting == 0
    assert s.available_resources() == {"CPU": 1.0}
    assert s.handle(TaskFinished("w1")) == []
    assert s.available_resources() == {"CPU": 2.0}
    assert s.total_resources() == {"CPU": 2.0}
    assert s.num_idle == 1


def test_idle_worker_is_reused_without_starting_another():
    s = make()
    start_workers(s, "w1")
    assert s.handle(SubmitTask("t1", {"CPU": 1})) == [Dispatch("t1", "w1", ())]
    s.handle(TaskFinished("w1"))
    assert s.handle(SubmitTask("t2", {"CPU": 1})) == [Dispatch("t2", "w1", ())]


def test_task_with_zero_cpu_still_needs_an_idle_worker():
    s = make({"CPU": 1})
    start_workers(s, "w1")
    s.handle(SubmitTask("busy", {"CPU": 1}))
    assert s.handle(SubmitTask("free", {"CPU": 0})) == [StartWorker()]
    assert s.handle(WorkerStarted("w2")) == [Dispatch("free", "w2", ())]


def test_actions_compare_and_print_by_fields():
    assert Dispatch("t", "w", (0,)) == Dispatch("t", "w", (0,))
    assert Dispatch("t", "w", (0,)) != Dispatch("t", "w", (1,))
    assert TaskLost("t") != TaskCancelled("t")
    assert repr(Dispatch("t", "w", ())) == "Dispatch(task_id='t', worker_id='w', gpu_ids=())"


def test_unknown_event_type_is_a_type_error():
    with pytest.raises(TypeError, match="does not handle"):
        make().handle(object())


# ─── dependencies and order ──────────────────────────────────────────────────────────────────


def test_task_waits_for_every_missing_object():
    s = make()
    start_workers(s, "w1")
    assert s.handle(SubmitTask("t1", {"CPU": 1}, frozenset({"o1", "o2"}))) == []
    assert s.handle(ObjectReady("o1")) == []
    assert s.num_pending == 1
    assert s.handle(ObjectReady("unrelated")) == []
    assert s.handle(ObjectReady("o2")) == [Dispatch("t1", "w1", ())]


def test_waiting_task_does_not_ask_for_a_worker():
    s = make()
    assert s.handle(SubmitTask("t1", {"CPU": 1}, {"o1"})) == []
    assert s.handle(ObjectReady("o1")) == [StartWorker()]


def test_fifo_within_a_scheduling_class():
    s = make({"CPU": 1})
    start_workers(s, "w1")
    actions = []
    for task_id in ("a", "b", "c"):
        actions += s.handle(SubmitTask(task_id, {"CPU": 1}))
    for _ in range(3):
        actions += s.handle(TaskFinished("w1"))
    assert dispatched(actions) == [("a", "w1"), ("b", "w1"), ("c", "w1")]


def test_tasks_sharing_an_object_become_ready_in_submit_order():
    s = make({"CPU": 1})
    start_workers(s, "w1")
    s.handle(SubmitTask("a", {"CPU": 1}, {"o"}))
    s.handle(SubmitTask("b", {"CPU": 1}, {"o"}))
    actions = s.handle(ObjectReady("o")) + s.handle(TaskFinished("w1"))
    assert dispatched(actions) == [("a", "w1"), ("b", "w1")]


def test_equal_demands_spelled_differently_share_one_queue():
    s = make({"CPU": 1, "GPU": 1})
    start_workers(s, "w1")
    s.handle(SubmitTask("a", {"CPU": 1, "GPU": 0}))
    s.handle(SubmitTask("b", {"CPU": 1.0}))
    s.handle(SubmitTask("c", {"GPU": 0, "CPU": 1}))
    actions = s.handle(TaskFinished("w1")) + s.handle(TaskFinished("w1"))
    assert dispatched(actions) == [("b", "w1"), ("c", "w1")]


def test_a_demand_that_does_not_fit_blocks_only_its_own_class():
    s = make({"CPU": 2})
    start_workers(s, "w1", "w2", "w3")
    assert dispatched(s.handle(SubmitTask("small1", {"CPU": 1}))) == [("small1", "w3")]
    assert s.handle(SubmitTask("big", {"CPU": 2})) == []
    assert dispatched(s.handle(SubmitTask("small2", {"CPU": 1}))) == [("small2", "w2")]
    s.handle(TaskFinished("w3"))
    assert dispatched(s.handle(TaskFinished("w2"))) == [("big", "w2")]


def test_free_workers_are_shared_round_robin_between_classes():
    s = make({"CPU": 8, "custom": 8}, max_workers=1)
    for i in range(3):
        s.handle(SubmitTask(f"cpu{i}", {"CPU": 1}))
    for i in range(3):
        s.handle(SubmitTask(f"custom{i}", {"custom": 1}))
    order = [task_id for task_id, _ in dispatched(start_workers(s, "w1"))]
    for _ in range(5):
        order += [task_id for task_id, _ in dispatched(s.handle(TaskFinished("w1")))]
    assert order == ["cpu0", "custom0", "cpu1", "custom1", "cpu2", "custom2"]


# ─── resources ───────────────────────────────────────────────────────────────────────────────


def test_fractional_cpus_run_together():
    s = make({"CPU": 2})
    actions = []
    for i in range(5):
        actions += s.handle(SubmitTask(i, {"CPU": 0.5}))
    assert actions.count(StartWorker()) == 4  # the fifth does not fit, so no fifth worker
    actions = start_workers(s, "w0", "w1", "w2", "w3")
    assert dispatched(actions) == [(0, "w0"), (1, "w1"), (2, "w2"), (3, "w3")]
    assert s.available_resources() == {}
    assert dispatched(s.handle(TaskFinished("w2"))) == [(4, "w2")]


def test_fractions_add_up_exactly():
    s = make({"CPU": 1})
    workers = [f"w{i}" for i in range(10)]
    start_workers(s, *workers)
    for i in range(10):
        s.handle(SubmitTask(i, {"CPU": 0.1}))
    assert s.available_resources() == {}
    for worker_id in workers:
        s.handle(TaskFinished(worker_id))
    assert s.available_resources() == {"CPU": 1.0}


def test_whole_gpus_get_whole_free_ids_and_give_them_back():
    s = make({"CPU": 8}, gpu_ids=(0, 1, 2))
    assert s.total_resources() == {"CPU": 8.0, "GPU": 3.0}
    start_workers(s, "a", "b", "c", "d")
    assert s.handle(SubmitTask("two", {"GPU": 2})) == [Dispatch("two", "d", (0, 1))]
    assert s.handle(SubmitTask("one", {"GPU": 1})) == [Dispatch("one", "c", (2,))]
    assert s.handle(SubmitTask("wait", {"GPU": 1})) == []
    assert "GPU" not in s.available_resources()
    assert s.handle(TaskFinished("d")) == [Dispatch("wait", "d", (0,))]
    assert s.available_resources()["GPU"] == 1.0


def test_fractional_gpus_pack_onto_one_id():
    s = make({"CPU": 8}, gpu_ids=("gpu-a", "gpu-b"))
    start_workers(s, "w1", "w2", "w3", "w4")
    assert s.handle(SubmitTask("h1", {"GPU": 0.5})) == [Dispatch("h1", "w4", ("gpu-a",))]
    assert s.handle(SubmitTask("q1", {"GPU": 0.25})) == [Dispatch("q1", "w3", ("gpu-a",))]
    # gpu-a has a quarter left: the next half goes to gpu-b, and a whole GPU must wait.
    assert s.handle(SubmitTask("h2", {"GPU": 0.5})) == [Dispatch("h2", "w2", ("gpu-b",))]
    assert s.handle(SubmitTask("whole", {"GPU": 1})) == []
    assert s.available_resources()["GPU"] == 0.75
    s.handle(TaskFinished("w2"))  # gpu-b is whole again
    assert s.handle(TaskFinished("w4")) == []  # the worker freed by h1 is used next
    assert s.handle(SubmitTask("q2", {"GPU": 0.25})) == [Dispatch("q2", "w4", ("gpu-a",))]


def test_a_whole_gpu_waits_for_a_whole_free_id_even_if_the_total_suffices():
    s = make({"CPU": 8}, gpu_ids=(0, 1))
    start_workers(s, "w1", "w2", "w3")
    s.handle(SubmitTask("h1", {"GPU": 0.5}))
    s.handle(SubmitTask("h2", {"GPU": 0.5}))
    s.handle(SubmitTask("h3", {"GPU": 0.5}))  # 0 full and 1 half used: 0.5 free
    assert s.handle(SubmitTask("whole", {"GPU": 1})) == []
    s.handle(TaskFinished("w3"))  # h1 leaves gpu 0 half used
    assert dispatched(s.handle(TaskFinished("w1"))) == [("whole", "w1")]


def test_gpu_count_defaults_to_ids_and_must_agree():
    assert make({"GPU": 2}).total_resources() == {"GPU": 2.0}
    with pytest.raises(ValueError, match="gpu_ids"):
        make({"GPU": 2}, gpu_ids=(0,))


def test_gpu_demand_above_one_must_be_whole():
    s = make({"GPU": 2})
    with pytest.raises(ValueError, match="whole number"):
        s.handle(SubmitTask("t", {"GPU": 1.5}))


def test_custom_resources_and_zero_entries_left_out_of_available():
    s = make({"CPU": 4, "custom": 4, "memory": 8e9})
    start_workers(s, "w1", "w2")
    assert dispatched(s.handle(SubmitTask("a", {"custom": 3, "memory": 8e9}))) == [("a", "w2")]
    assert s.available_resources() == {"CPU": 4.0, "custom": 1.0}
    assert s.handle(SubmitTask("b", {"custom": 2})) == []
    assert dispatched(s.handle(TaskFinished("w2"))) == [("b", "w2")]
    assert s.available_resources() == {"CPU": 4.0, "custom": 2.0, "memory": 8e9}


def test_infeasible_reported_once_and_blocks_nothing():
    s = make({"CPU": 2})
    start_workers(s, "w1")
    assert s.handle(SubmitTask("gpu", {"GPU": 1})) == [Infeasible("gpu", {"GPU": 1})]
    assert s.handle(SubmitTask("huge", {"CPU": 3}, {"o"})) == [Infeasible("huge", {"CPU": 3})]
    assert s.handle(SubmitTask("ok", {"CPU": 1})) == [Dispatch("ok", "w1", ())]
    later = s.handle(ObjectReady("o")) + s.handle(TaskFinished("w1"))
    assert later == []
    assert s.num_pending == 2
    assert s.handle(CancelTask("gpu")) == [TaskCancelled("gpu")]
    assert s.num_pending == 1


# ─── blocked workers ─────────────────────────────────────────────────────────────────────────


def test_recursive_chain_of_depth_10_completes_on_one_cpu():
    # Each task submits its child and blocks in get() on it; a blocked worker lends its CPU,
    # so the child runs on a new worker. max_workers=2 shows blocked workers are not counted.
    s = make({"CPU": 1}, max_workers=2, max_starting_workers=1)
    depth = 10
    assert s.handle(SubmitTask(0, {"CPU": 1})) == [StartWorker()]
    assert s.handle(WorkerStarted("w0")) == [Dispatch(0, "w0", ())]
    for level in range(1, depth):
        assert s.handle(SubmitTask(level, {"CPU": 1})) == []  # the parent holds the CPU
        assert s.handle(WorkerBlocked(f"w{level - 1}")) == [StartWorker()]
        assert s.handle(WorkerStarted(f"w{level}")) == [Dispatch(level, f"w{level}", ())]
    # Unwind: the innermost returns, its parent wakes up, and so on.
    for level in reversed(range(depth)):
        assert s.handle(TaskFinished(f"w{level}")) == []
        if level:
            assert s.handle(WorkerUnblocked(f"w{level - 1}")) == []
    assert s.num_pending == 0
    assert s.num_idle == depth
    assert s.available_resources() == {"CPU": 1.0}


def test_unblocking_may_oversubscribe_and_holds_back_dispatch():
    s = make({"CPU": 1})
    start_workers(s, "w1", "w2", "w3")
    s.handle(SubmitTask("parent", {"CPU": 1}))
    s.handle(SubmitTask("child", {"CPU": 1}))
    assert dispatched(s.handle(WorkerBlocked("w3"))) == [("child", "w2")]
    assert s.handle(WorkerUnblocked("w3")) == []  # both run: CPU is at -1
    assert s.available_resources() == {}
    assert s.handle(SubmitTask("next", {"CPU": 1})) == []
    assert s.handle(TaskFinished("w2")) == []  # back to 0: still nothing free
    assert dispatched(s.handle(TaskFinished("w3"))) == [("next", "w3")]


def test_blocks_nest_and_lend_only_cpu():
    s = make({"CPU": 1, "custom": 1})
    start_workers(s, "w1", "w2")
    s.handle(SubmitTask("t", {"CPU": 1, "custom": 1}))
    s.handle(WorkerBlocked("w2"))
    s.handle(WorkerBlocked("w2"))
    assert s.available_resources() == {"CPU": 1.0}
    s.handle(WorkerUnblocked("w2"))
    assert s.available_resources() == {"CPU": 1.0}
    s.handle(WorkerUnblocked("w2"))
    assert s.available_resources() == {}


def test_unblocked_worker_counts_toward_max_workers_again():
    s = make({"CPU": 1}, max_workers=2)
    start_workers(s, "w1")
    s.handle(SubmitTask("parent", {"CPU": 1}))
    s.handle(SubmitTask("child", {"CPU": 1}))
    assert s.handle(WorkerBlocked("w1")) == [StartWorker()]
    assert s.handle(WorkerStarted("w2")) == [Dispatch("child", "w2", ())]
    s.handle(WorkerUnblocked("w1"))
    # Two task workers run: the pool is full, even for a task that needs no CPU.
    assert s.handle(SubmitTask("free", {})) == []
    assert s.handle(TaskFinished("w2")) == [Dispatch("free", "w2", ())]


def test_task_finishing_while_blocked_does_not_free_its_cpu_twice():
    s = make({"CPU": 1})
    start_workers(s, "w1")
    s.handle(SubmitTask("t", {"CPU": 1}))
    s.handle(WorkerBlocked("w1"))
    s.handle(TaskFinished("w1"))
    assert s.available_resources() == {"CPU": 1.0}
    assert s.handle(WorkerUnblocked("w1")) == []  # stale: the task is gone
    assert s.available_resources() == {"CPU": 1.0}


# ─── worker death, actors, retiring ──────────────────────────────────────────────────────────


def test_worker_death_mid_task_loses_the_task_and_frees_resources():
    s = make({"CPU": 1}, gpu_ids=(0,))
    start_workers(s, "w1", "w2")
    s.handle(SubmitTask("t1", {"CPU": 1, "GPU": 1}))
    s.handle(SubmitTask("t2", {"CPU": 1, "GPU": 1}))
    assert s.handle(WorkerDied("w2")) == [TaskLost("t1"), Dispatch("t2", "w1", (0,))]
    assert s.num_workers == 1
    # A retry under the same id is a new submission.
    assert s.handle(SubmitTask("t1", {"CPU": 1, "GPU": 1})) == []
    assert s.handle(WorkerDied("w1")) == [TaskLost("t2"), StartWorker()]
    assert s.handle(WorkerStarted("w3")) == [Dispatch("t1", "w3", (0,))]


def test_idle_worker_death_loses_nothing():
    s = make()
    start_workers(s, "w1")
    assert s.handle(WorkerDied("w1")) == []
    assert s.num_workers == 0 and s.num_idle == 0
    assert s.handle(TaskFinished("w1")) == []  # stale message after death: ignored


def test_actor_holds_less_than_it_was_placed_with_and_keeps_its_worker():
    s = make({"CPU": 1})
    start_workers(s, "w1")
    assert s.handle(SubmitTask("actor", {"CPU": 1}, dedicated=True, hold={})) == [
        Dispatch("actor", "w1", ())
    ]
    assert s.available_resources() == {}
    s.handle(SubmitTask("t", {"CPU": 1}))
    # The constructor returns: the CPU is free, but the worker belongs to the actor.
    assert s.handle(TaskFinished("w1")) == [StartWorker()]
    assert s.available_resources() == {"CPU": 1.0}
    assert s.handle(WorkerStarted("w2")) == [Dispatch("t", "w2", ())]
    assert s.handle(TaskFinished("w1")) == []  # an actor's worker has no task to finish
    assert s.handle(WorkerDied("w1")) == [TaskLost("actor")]
    assert s.available_resources() == {}  # t still runs


def test_actor_hold_defaults_to_its_demand_and_keeps_its_gpu_ids():
    s = make({"CPU": 2}, gpu_ids=(0, 1))
    start_workers(s, "w1", "w2")
    s.handle(SubmitTask("actor", {"CPU": 1, "GPU": 1}, dedicated=True, hold={"GPU": 1}))
    s.handle(SubmitTask("plain", {"CPU": 1, "GPU": 1}, dedicated=True))
    s.handle(TaskFinished("w2"))
    s.handle(TaskFinished("w1"))
    assert s.available_resources() == {"CPU": 1.0}
    s.handle(SubmitTask("t", {"GPU": 1}))
    start_workers(s, "w3")
    assert s.handle(WorkerReleased("w2")) == [Dispatch("t", "w3", (0,))]
    assert s.available_resources() == {"CPU": 1.0}
    assert s.handle(WorkerDied("w2")) == []  # released on purpose: nothing lost
    assert s.handle(WorkerReleased("w1")) == []
    assert s.available_resources() == {"CPU": 2.0, "GPU": 1.0}


def test_actor_released_during_creation_frees_its_demand():
    s = make({"CPU": 1})
    start_workers(s, "w1")
    s.handle(SubmitTask("actor", {"CPU": 1}, dedicated=True, hold={}))
    assert s.handle(WorkerReleased("w1")) == []
    assert s.available_resources() == {"CPU": 1.0}
    assert s.handle(TaskFinished("w1")) == []
    assert s.handle(WorkerDied("w1")) == []


def test_actor_workers_do_not_count_toward_max_workers():
    s = make({"CPU": 4}, max_workers=1)
    actions = []
    for i in range(3):
        actions += s.handle(SubmitTask(f"actor{i}", {"CPU": 1}, dedicated=True, hold={}))
        actions += start_workers(s, f"w{i}")
        actions += s.handle(TaskFinished(f"w{i}"))
    assert dispatched(actions) == [("actor0", "w0"), ("actor1", "w1"), ("actor2", "w2")]


def test_hold_larger_than_the_demand_is_rejected():
    s = make({"CPU": 2, "GPU": 2})
    with pytest.raises(ValueError, match="cannot hold more"):
        s.handle(SubmitTask("a", {"CPU": 1}, dedicated=True, hold={"CPU": 2}))
    with pytest.raises(ValueError, match="GPU"):
        s.handle(SubmitTask("b", {"GPU": 1}, dedicated=True, hold={"GPU": 0.5}))


def test_retiring_idle_worker_is_never_used_again():
    s = make()
    start_workers(s, "w1")
    assert s.handle(WorkerRetiring("w1")) == []
    assert s.handle(SubmitTask("t", {"CPU": 1})) == [StartWorker()]
    assert s.handle(WorkerDied("w1")) == []
    assert s.num_starting == 1  # w1 was known: its death is not a failed start


def test_retiring_busy_worker_finishes_its_task_then_is_replaced():
    s = make({"CPU": 1})
    start_workers(s, "w1")
    s.handle(SubmitTask("a", {"CPU": 1}))
    s.handle(SubmitTask("b", {"CPU": 1}))
    assert s.handle(WorkerRetiring("w1")) == []  # b does not fit yet: no worker wanted
    assert s.handle(TaskFinished("w1")) == [StartWorker()]
    assert s.handle(WorkerDied("w1")) == []
    assert s.handle(WorkerStarted("w2")) == [Dispatch("b", "w2", ())]


# ─── worker starts ───────────────────────────────────────────────────────────────────────────


def test_at_most_max_starting_workers_start_at_once():
    s = make({"CPU": 8}, max_starting_workers=2)
    actions = []
    for i in range(5):
        actions += s.handle(SubmitTask(i, {"CPU": 1}))
    assert actions == [StartWorker(), StartWorker()]
    assert s.handle(WorkerStarted("w0")) == [Dispatch(0, "w0", ()), StartWorker()]


def test_no_more_than_max_workers_in_the_pool():
    s = make({"CPU": 8}, max_workers=3, max_starting_workers=2)
    actions = []
    for i in range(6):
        actions += s.handle(SubmitTask(i, {"CPU": 1}))
    actions += start_workers(s, "w0", "w1")
    actions += start_workers(s, "w2")
    assert actions.count(StartWorker()) == 3
    assert s.num_starting == 0
    # Freeing a worker hands it the next task; the pool does not grow.
    assert s.handle(TaskFinished("w0")) == [Dispatch(3, "w0", ())]


def test_workers_are_requested_only_for_tasks_that_fit():
    s = make({"CPU": 2})
    actions = []
    for i in range(4):
        actions += s.handle(SubmitTask(i, {"CPU": 1}))
    assert actions == [StartWorker(), StartWorker()]


def test_worker_that_dies_while_starting_is_replaced():
    s = make(max_starting_workers=1)
    assert s.handle(SubmitTask("t", {"CPU": 1})) == [StartWorker()]
    assert s.handle(WorkerDied("never-connected")) == [StartWorker()]
    assert s.num_starting == 1
    assert s.handle(WorkerStarted("w1")) == [Dispatch("t", "w1", ())]


def test_idle_workers_beyond_the_cpu_count_retire_after_enough_ticks_oldest_first():
    s = make({"CPU": 2}, retire_idle_after=3)
    start_workers(s, "w1", "w2", "w3", "w4", "w5")
    assert s.handle(IdleTick()) == [] and s.handle(IdleTick()) == []
    # w1..w3 became idle first: they go first, and two stay (the node's CPU count).
    assert s.handle(IdleTick()) == [RetireWorker("w1"), RetireWorker("w2"),
                                    RetireWorker("w3")]
    assert s.num_idle == 2
    assert s.handle(IdleTick()) == []
    # A retired worker is never given a task; its death loses nothing.
    assert s.handle(WorkerDied("w1")) == []
    assert dispatched(s.handle(SubmitTask("t", {"CPU": 1}))) == [("t", "w5")]


def test_a_worker_that_ran_a_task_starts_its_idle_count_again():
    s = make({"CPU": 1}, retire_idle_after=2)
    start_workers(s, "w1", "w2")
    s.handle(IdleTick())
    assert dispatched(s.handle(SubmitTask("t", {"CPU": 1}))) == [("t", "w2")]
    s.handle(TaskFinished("w2"))
    # w1 has now been idle two ticks, w2 one: only w1 goes, and w2 is the one kept.
    assert s.handle(IdleTick()) == [RetireWorker("w1")]
    assert s.handle(IdleTick()) == []


def test_busy_workers_count_toward_the_kept_ones():
    s = make({"CPU": 2}, retire_idle_after=1)
    start_workers(s, "w1", "w2", "w3")
    s.handle(SubmitTask("a", {"CPU": 1}))
    s.handle(SubmitTask("b", {"CPU": 1}))
    # Two run, one is idle beyond the two CPUs: it goes.
    assert s.handle(IdleTick()) == [RetireWorker("w1")]


def test_without_retire_idle_after_idle_workers_stay():
    s = make({"CPU": 1})
    start_workers(s, "w1", "w2", "w3")
    for _ in range(100):
        assert s.handle(IdleTick()) == []
    assert s.num_idle == 3


def test_prestart_keeps_min_idle_workers():
    s = make(min_idle_workers=2, max_starting_workers=1)
    assert s.handle(PrestartWorkers()) == [StartWorker()]
    assert s.handle(WorkerStarted("w1")) == [StartWorker()]
    assert s.handle(WorkerStarted("w2")) == []
    assert s.handle(SubmitTask("t", {"CPU": 1})) == [Dispatch("t", "w2", ()), StartWorker()]


def test_duplicate_ids_are_caller_bugs():
    s = make()
    s.handle(SubmitTask("t", {"CPU": 5}))
    with pytest.raises(ValueError, match="already pending"):
        s.handle(SubmitTask("t", {"CPU": 1}))
    start_workers(s, "w1")
    with pytest.raises(ValueError, match="already connected"):
        s.handle(WorkerStarted("w1"))


# ─── cancel ──────────────────────────────────────────────────────────────────────────────────


def test_cancel_pending_tasks_only():
    s = make({"CPU": 1})
    start_workers(s, "w1")
    s.handle(SubmitTask("running", {"CPU": 1}))
    s.handle(SubmitTask("queued", {"CPU": 1}))
    s.handle(SubmitTask("next", {"CPU": 1}))
    s.handle(SubmitTask("waiting", {"CPU": 1}, {"o1", "o2"}))
    assert s.handle(CancelTask("running")) == []
    assert s.handle(CancelTask("unknown")) == []
    assert s.handle(CancelTask("queued")) == [TaskCancelled("queued")]
    assert s.handle(CancelTask("queued")) == []
    assert s.handle(CancelTask("waiting")) == [TaskCancelled("waiting")]
    assert s.num_pending == 1
    assert s.handle(ObjectReady("o1")) == []
    assert s.handle(ObjectReady("o2")) == []
    # The cancelled head is skipped: the next task in its queue runs.
    assert s.handle(TaskFinished("w1")) == [Dispatch("next", "w1", ())]


def test_cancelled_tasks_do_not_ask_for_workers():
    s = make({"CPU": 4}, max_starting_workers=4)
    start_workers(s, "w1")
    s.handle(SubmitTask("running", {"CPU": 4}))
    for i in range(3):
        s.handle(SubmitTask(i, {"CPU": 1}))
    s.handle(CancelTask(0))
    s.handle(CancelTask(1))
    assert s.handle(TaskFinished("w1")) == [Dispatch(2, "w1", ())]


# ─── properties ──────────────────────────────────────────────────────────────────────────────

TOTALS = {"CPU": 2, "GPU": 2, "custom": 1}
GPU_IDS = (0, 1)
MAX_WORKERS = 4
MAX_STARTING = 2
DEMANDS = [
    {"CPU": 1},
    {"CPU": 0.5},
    {},
    {"CPU": 2},
    {"GPU": 1},
    {"GPU": 2, "CPU": 0.5},
    {"CPU": 0.5, "GPU": 0.5},
    {"GPU": 0.25},
    {"custom": 1, "CPU": 1},
    {"CPU": 3},  # infeasible: too much
    {"other": 1},  # infeasible: unknown resource
]


def _feasible(demand):
    return all(TOTALS.get(name, 0) >= amount for name, amount in demand.items())


class _ModelWorker:
    def __init__(self):
        self.task = None  # task id running, or the actor's creation task id
        self.held = {}
        self.gpus = {}  # gpu id -> share held
        self.blocked = 0
        self.actor = False  # dedicated task dispatched here
        self.alive_actor = False  # creation task finished
        self.retiring = False
        self.exiting = False

    @property
    def idle(self):
        return self.task is None and not self.exiting and not self.actor

    @property
    def busy(self):
        return self.task is not None and not self.alive_actor


class SchedulerMachine(RuleBasedStateMachine):
    """Random event sequences against a plain model of what the scheduler must do."""

    def __init__(self):
        super().__init__()
        self.s = Scheduler(
            TOTALS, GPU_IDS, max_workers=MAX_WORKERS, max_starting_workers=MAX_STARTING,
            retire_idle_after=2,
        )
        self.starting = 0
        self.workers = {}
        self.next_worker = 0
        self.next_task = 0
        self.tasks = {}  # task id -> (demand, dedicated, hold)
        self.pending = set()
        self.infeasible = set()
        self.outcome = {}  # task id -> "dispatched" / "lost" / "cancelled"
        self.unready_objects = []
        self.next_object = 0
        self.raw_cpu = TOTALS["CPU"]

    # ── the model's view of resources ──

    def raw_available(self):
        available = dict(TOTALS)
        for worker in self.workers.values():
            for name, amount in worker.held.items():
                if name == "CPU" and worker.blocked:
                    continue
                available[name] -= amount
        return available

    def pool_size(self):
        return sum(
            1
            for w in self.workers.values()
            if not w.actor and not w.blocked and not w.retiring and not w.exiting
        )

    # ── sending events and checking what comes back ──

    def send(self, event):
        before_cpu = self.raw_available()["CPU"]
        actions = self.s.handle(event)
        for action in actions:
            self.apply(event, action)
        after_cpu = self.raw_available()["CPU"]
        if after_cpu < 0 and not isinstance(event, WorkerUnblocked):
            # Only an unblock may push CPU below zero; nothing else may take from it then.
            assert after_cpu >= before_cpu - 1e-9
        return actions

    def apply(self, event, action):
        if isinstance(action, StartWorker):
            self.starting += 1
            assert self.starting <= MAX_STARTING
            assert self.pool_size() + self.starting <= MAX_WORKERS
        elif isinstance(action, Dispatch):
            task_id = action.task_id
            assert task_id in self.pending and task_id not in self.infeasible
            worker = self.workers[action.worker_id]
            assert worker.idle, "dispatched to a worker that is not idle"
            demand, dedicated, hold = self.tasks[task_id]
            available = self.raw_available()
            for name, amount in demand.items():
                assert available[name] >= amount - 1e-9
            gpu = demand.get("GPU", 0)
            if gpu >= 1:
                assert len(action.gpu_ids) == gpu
                share = 1
            elif gpu:
                assert len(action.gpu_ids) == 1
                share = gpu
            else:
                assert action.gpu_ids == ()
            for gpu_id in action.gpu_ids:
                used = sum(w.gpus.get(gpu_id, 0) for w in self.workers.values())
                assert used + share <= 1 + 1e-9
                worker.gpus[gpu_id] = share
            assert len(set(action.gpu_ids)) == len(action.gpu_ids)
            worker.task = task_id
            worker.held = dict(demand)
            worker.actor = dedicated
            self.pending.discard(task_id)
            self.outcome[task_id] = "dispatched"
        elif isinstance(action, TaskLost):
            assert isinstance(event, WorkerDied)
            assert self.outcome[action.task_id] == "dispatched"
            self.outcome[action.task_id] = "lost"
        elif isinstance(action, TaskCancelled):
            assert event == CancelTask(action.task_id)
            assert action.task_id in self.pending
            self.pending.discard(action.task_id)
            self.infeasible.discard(action.task_id)
            self.outcome[action.task_id] = "cancelled"
        elif isinstance(action, RetireWorker):
            assert isinstance(event, IdleTick)
            worker = self.workers[action.worker_id]
            assert worker.idle, "retired a worker that is not idle"
            worker.retiring = worker.exiting = True
            assert self.pool_size() >= TOTALS["CPU"], "retired one of the kept workers"
        elif isinstance(action, Infeasible):
            assert isinstance(event, SubmitTask) and event.task_id == action.task_id
            assert not _feasible(event.resources)
            self.infeasible.add(action.task_id)
        else:
            raise AssertionError(f"unexpected action {action!r}")

    def live(self, predicate):
        return sorted(wid for wid, w in self.workers.items() if predicate(w))

    # ── rules ──

    @rule(
        demand=st.sampled_from(DEMANDS),
        deps=st.integers(0, 2),
        dedicated=st.booleans(),
        hold_nothing=st.booleans(),
    )
    def submit(self, demand, deps, dedicated, hold_nothing):
        task_id = self.next_task
        self.next_task += 1
        missing = set()
        for _ in range(deps):
            object_id = f"o{self.next_object}"
            self.next_object += 1
            self.unready_objects.append(object_id)
            missing.add(object_id)
        hold = {} if dedicated and hold_nothing else None
        self.tasks[task_id] = (demand, dedicated, dict(demand) if hold is None else hold)
        self.pending.add(task_id)
        self.send(SubmitTask(task_id, demand, frozenset(missing), dedicated, hold))
        assert (task_id in self.infeasible) == (not _feasible(demand))

    @precondition(lambda self: self.unready_objects)
    @rule(data=st.data())
    def object_ready(self, data):
        object_id = data.draw(st.sampled_from(self.unready_objects))
        self.unready_objects.remove(object_id)
        self.send(ObjectReady(object_id))

    @precondition(lambda self: self.starting)
    @rule(fails=st.booleans())
    def worker_connects_or_fails(self, fails):
        worker_id = self.next_worker
        self.next_worker += 1
        self.starting -= 1
        if fails:
            self.send(WorkerDied(worker_id))
        else:
            self.workers[worker_id] = _ModelWorker()
            self.send(WorkerStarted(worker_id))

    @precondition(lambda self: any(w.busy for w in self.workers.values()))
    @rule(data=st.data())
    def finish(self, data):
        worker_id = data.draw(st.sampled_from(self.live(lambda w: w.busy)))
        worker = self.workers[worker_id]
        if worker.actor:
            _, _, hold = self.tasks[worker.task]
            worker.held = dict(hold)
            if not hold.get("GPU"):
                worker.gpus = {}
            worker.alive_actor = True
        else:
            worker.task = None
            worker.held = {}
            worker.gpus = {}
            worker.blocked = 0
            worker.exiting = worker.retiring
        self.send(TaskFinished(worker_id))

    @precondition(lambda self: any(w.task is not None for w in self.workers.values()))
    @rule(data=st.data())
    def block(self, data):
        worker_id = data.draw(st.sampled_from(self.live(lambda w: w.task is not None)))
        self.workers[worker_id].blocked += 1
        self.send(WorkerBlocked(worker_id))

    @precondition(lambda self: any(w.blocked for w in self.workers.values()))
    @rule(data=st.data())
    def unblock(self, data):
        worker_id = data.draw(st.sampled_from(self.live(lambda w: w.blocked)))
        self.workers[worker_id].blocked -= 1
        self.send(WorkerUnblocked(worker_id))

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def die(self, data):
        worker_id = data.draw(st.sampled_from(sorted(self.workers)))
        worker = self.workers.pop(worker_id)
        actions = self.send(WorkerDied(worker_id))
        lost = [a.task_id for a in actions if isinstance(a, TaskLost)]
        assert lost == ([] if worker.task is None else [worker.task])

    @precondition(lambda self: any(w.actor and w.task is not None for w in self.workers.values()))
    @rule(data=st.data())
    def release(self, data):
        worker_id = data.draw(
            st.sampled_from(self.live(lambda w: w.actor and w.task is not None))
        )
        worker = self.workers[worker_id]
        worker.task = None
        worker.held = {}
        worker.gpus = {}
        worker.blocked = 0
        worker.exiting = True
        self.send(WorkerReleased(worker_id))

    @precondition(lambda self: any(not w.actor and not w.exiting for w in self.workers.values()))
    @rule(data=st.data())
    def retire(self, data):
        worker_id = data.draw(
            st.sampled_from(self.live(lambda w: not w.actor and not w.exiting))
        )
        worker = self.workers[worker_id]
        worker.retiring = True
        worker.exiting = worker.task is None
        self.send(WorkerRetiring(worker_id))

    @rule()
    def idle_tick(self):
        self.send(IdleTick())

    @precondition(lambda self: self.next_task)
    @rule(data=st.data())
    def cancel(self, data):
        task_id = data.draw(st.integers(0, self.next_task - 1))
        was_pending = task_id in self.pending
        actions = self.send(CancelTask(task_id))
        assert actions == ([TaskCancelled(task_id)] if was_pending else [])

    # ── invariants ──

    @invariant()
    def accounting_matches_the_model(self):
        raw = self.raw_available()
        for name, total in TOTALS.items():
            assert raw[name] <= total + 1e-9
            if name != "CPU":
                assert raw[name] >= -1e-9
        expected = {name: amount for name, amount in raw.items() if amount > 1e-9}
        actual = self.s.available_resources()
        assert actual.keys() == expected.keys()
        for name, amount in expected.items():
            assert math.isclose(actual[name], amount, abs_tol=1e-9)

    @invariant()
    def no_task_is_lost_track_of(self):
        assert self.s.num_pending == len(self.pending)
        assert self.s.num_starting == self.starting
        for task_id in range(self.next_task):
            assert (task_id in self.pending) != (task_id in self.outcome)

    def teardown(self):
        # Liveness: let everything run to the end; every feasible task must get dispatched.
        # Bounded, so a scheduler that keeps asking for workers fails instead of hanging.
        for _ in range(100):
            progressed = False
            for object_id in list(self.unready_objects):
                self.unready_objects.remove(object_id)
                self.send(ObjectReady(object_id))
                progressed = True
            for worker_id in self.live(lambda w: w.blocked):
                while self.workers[worker_id].blocked:
                    self.workers[worker_id].blocked -= 1
                    self.send(WorkerUnblocked(worker_id))
                progressed = True
            for _ in range(self.starting):
                self.worker_connects_or_fails(fails=False)
                progressed = True
            for worker_id in self.live(lambda w: w.busy and not w.actor):
                self.finish_now(worker_id)
                progressed = True
            for worker_id in self.live(lambda w: w.actor and w.task is not None):
                self.workers[worker_id].task = None
                self.workers[worker_id].held = {}
                self.workers[worker_id].gpus = {}
                self.workers[worker_id].exiting = True
                self.send(WorkerReleased(worker_id))
                progressed = True
            for worker_id in self.live(lambda w: w.exiting):
                del self.workers[worker_id]
                self.send(WorkerDied(worker_id))
                progressed = True
            if not progressed:
                break
        else:
            raise AssertionError("the scheduler still makes work after 100 rounds")
        assert self.pending == self.infeasible
        assert self.s.num_pending == len(self.infeasible)
        assert self.s.available_resources() == {k: float(v) for k, v in TOTALS.items()}

    def finish_now(self, worker_id):
        worker = self.workers[worker_id]
        worker.task = None
        worker.held = {}
        worker.gpus = {}
        worker.blocked = 0
        worker.exiting = worker.retiring
        self.send(TaskFinished(worker_id))


SchedulerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_event_sequences = SchedulerMachine.TestCase
