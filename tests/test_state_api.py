"""purerun.util.state against a real node: every list function with filters, limit and
detail, finished and failed tasks in the history, actor states up to DEAD with restarts, and
the summaries."""

import dataclasses
import os
import warnings

import pytest

import purerun
from purerun.util import state
from purerun.util.state import (get_actor, get_task, list_actors, list_jobs, list_nodes,
                                list_objects, list_tasks, summarize_actors, summarize_objects,
                                summarize_tasks)

from helpers import wait_for


@purerun.remote
def square(x):
    return x * x


@purerun.remote
def broken():
    raise ValueError("broken on purpose")


@purerun.remote(max_restarts=1)
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n

    def pid(self):
        return os.getpid()


def tasks_named(name, **kw):
    return list_tasks(filters=[("name", "=", name)], limit=1000, **kw)


def test_finished_and_failed_tasks_are_listed_with_filters(node):
    assert purerun.get([square.remote(i) for i in range(3)]) == [0, 1, 4]
    with pytest.raises(ValueError):
        purerun.get(broken.remote())
    finished = tasks_named("square")
    assert len(finished) >= 3 and {t.state for t in finished} == {"FINISHED"}
    assert all(t.type == "NORMAL_TASK" and t.worker_pid for t in finished)
    [failed] = list_tasks(filters=[("name", "=", "broken"), ("state", "=", "FAILED")])
    assert failed.error_type == "TASK_EXECUTION_EXCEPTION"
    assert failed.error_message is None   # a detail column
    [failed] = list_tasks(filters=[("name", "=", "broken")], detail=True)
    assert "broken on purpose" in failed.error_message
    assert failed.start_time_ms <= failed.end_time_ms
    assert not list_tasks(filters=[("name", "=", "square"), ("state", "!=", "FINISHED")])
    assert get_task(failed.task_id).state == "FAILED"
    assert get_task("00" * 16) is None


def test_records_are_dataclasses_with_dict_access(node):
    purerun.get(square.remote(5))
    record = tasks_named("square")[0]
    assert dataclasses.is_dataclass(record) and isinstance(record, state.TaskState)
    assert record["state"] == record.state == record.asdict()["state"]
    assert dataclasses.asdict(record)["task_id"] == record.task_id
    with pytest.raises(KeyError):
        record["nope"]


def test_limit_bounds_the_list_and_warns_of_what_it_left_out(node):
    purerun.get([square.remote(i) for i in range(4)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(list_tasks(filters=[("name", "=", "square")], limit=2)) == 2
    assert any("not listed" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list_tasks(filters=[("name", "=", "square")], limit=2, raise_on_missing_output=False)
    assert not caught


@purerun.remote
def wait_here(path):
    import time
    while not os.path.exists(path):
        time.sleep(0.01)
    return 1


def test_a_running_task_is_running(node):
    import tempfile
    path = os.path.join(tempfile.gettempdir(), f"state-api-{os.getpid()}")
    ref = wait_here.remote(path)
    try:
        wait_for(lambda: list_tasks(filters=[("name", "=", "wait_here"),
                                             ("state", "=", "RUNNING")]),
                 message="the task never showed as RUNNING")
    finally:
        open(path, "w").close()
    assert purerun.get(ref) == 1
    os.unlink(path)


def test_bad_filters_and_arguments_are_refused_in_the_caller(node):
    with pytest.raises(ValueError, match="filter column bogus is not supported"):
        list_tasks(filters=[("bogus", "=", "x")])
    with pytest.raises(ValueError, match="Unsupported filter predicate"):
        list_actors(filters=[("state", "~", "ALIVE")])
    with pytest.raises(ValueError, match="limit must be a positive int"):
        list_nodes(limit=0)
    with pytest.raises(ValueError, match="timeout"):
        list_jobs(timeout=-1)
    with pytest.raises(TypeError, match="hex str"):
        get_actor(b"\0" * 16)


def test_actor_states_through_a_restart_to_dead(node):
    counter = Counter.remote()
    assert purerun.get(counter.add.remote()) == 1
    actor_id = counter._actor_id.hex()
    record = get_actor(actor_id)
    assert (record.state, record.class_name, record.num_restarts) == ("ALIVE", "Counter", 0)
    assert record.pid == purerun.get(counter.pid.remote())
    purerun.kill(counter, no_restart=False)
    wait_for(lambda: get_actor(actor_id).num_restarts == 1
             and get_actor(actor_id).state == "ALIVE", message="the actor did not restart")
    purerun.kill(counter)
    record = get_actor(actor_id)
    assert record.state == "DEAD" and record.num_restarts == 1 and record.death_cause
    assert list_actors(filters=[("actor_id", "=", actor_id), ("state", "=", "DEAD")])
    del counter
    # Still listed once every handle is gone.
    assert get_actor(actor_id).state == "DEAD"
    assert get_actor("00" * 16) is None


def test_objects_nodes_and_jobs_are_listed(node):
    ref = purerun.put(b"x" * 1000)
    [obj] = list_objects(filters=[("object_id", "=", ref.hex())])
    assert obj.object_size >= 1000 and obj.task_status == "FINISHED"
    assert obj.reference_type in ("LOCAL_REFERENCE", "PINNED_IN_MEMORY")
    [this] = list_nodes()
    assert this.node_id == purerun.get_runtime_context().get_node_id()
    assert this.state == "ALIVE" and this.is_head_node and this.resources_total["CPU"] == 2
    assert list_nodes(filters=[("state", "=", "DEAD")]) == []
    jobs = list_jobs(filters=[("status", "=", "RUNNING")])
    assert purerun.get_runtime_context().get_job_id() in [j.job_id for j in jobs]


def test_summaries_count_by_name_and_state(node):
    purerun.get([square.remote(i) for i in range(2)])
    keep = Counter.remote()
    purerun.get(keep.add.remote())
    tasks = summarize_tasks()["cluster"]
    assert tasks["summary_by"] == "func_name"
    entry = tasks["summary"]["square"]
    assert entry["type"] == "NORMAL_TASK" and entry["state_counts"]["FINISHED"] >= 2
    assert tasks["total_tasks"] >= 2 and tasks["total_actor_tasks"] >= 1
    actors = summarize_actors()["cluster"]
    assert actors["summary"]["Counter"]["state_counts"]["ALIVE"] >= 1
    assert actors["total_actors"] >= 1 and actors["summary_by"] == "class"
    objects = summarize_objects()["cluster"]
    assert objects["total_objects"] >= 1
    del keep


def test_without_a_node_the_state_api_says_so(monkeypatch, tmp_path):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # no recorded node here
    for name in ("PURERUN_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(state.StateApiException, match="No purerun node found"):
        list_tasks(address="auto")
    with pytest.raises(state.StateApiException, match="Could not connect"):
        list_tasks(address=str(tmp_path / "nothing.sock"))
