"""The state API's rules (core/state_rules.py), event by event on a NodeState: what each task,
actor and object is listed as, the bounded finished-task history, filters, and the "state"
REQUEST."""

import pytest

from purerun import exceptions
from purerun.core import ids, protocol, state_rules
from purerun.core.state_rules import check_filters, select

from test_node_state import Node, actor_spec, call, start_actor, task


def ask(node, resource, filters=None, limit=None):
    """The node's REPLY to REQUEST "state": (ok, value)."""
    node.feed("driver", (protocol.REQUEST, 9, "state", (resource, filters, limit, True)))
    [(_token, reply)] = [(t, m) for t, m in node.take(protocol.REPLY, "driver") if m[1] == 9]
    return reply[2], reply[3]


def records(node, resource, filters=None, limit=None):
    ok, value = ask(node, resource, filters, limit)
    assert ok, value
    return value[0]


def by_id(node, resource, key, the_id):
    [record] = [r for r in records(node, resource) if r[key] == the_id.hex()]
    return record


def test_a_task_is_pending_then_running_then_finished_with_its_worker_and_times():
    node = Node(cpus=1)
    first, second = task("f"), task("g")
    node.feed("driver", (protocol.SUBMIT, first))
    node.feed("driver", (protocol.SUBMIT, second))
    assert by_id(node, "tasks", "task_id", first.task_id)["state"] == "RUNNING"
    assert by_id(node, "tasks", "task_id", second.task_id)["state"] == "PENDING_NODE_ASSIGNMENT"
    [(worker, _spec)] = node.executes()
    node.done(worker, first)
    record = by_id(node, "tasks", "task_id", first.task_id)
    assert record["state"] == "FINISHED" and record["type"] == "NORMAL_TASK"
    assert record["worker_pid"] == node.pids[int(worker[1:])]
    assert record["start_time_ms"] == 0 and record["end_time_ms"] == 1000   # its span, (0, 1)
    assert record["error_type"] is None and record["name"] == "f"
    assert len(node.state.tasks) == 1   # the live table forgot it; the history keeps it


def test_a_task_waiting_for_an_argument_is_pending_args_avail():
    node = Node(cpus=1)
    producer = task("p")
    node.feed("driver", (protocol.SUBMIT, producer))
    consumer = task("c", deps=[producer.return_ids()[0]])
    node.feed("driver", (protocol.SUBMIT, consumer))
    assert by_id(node, "tasks", "task_id", consumer.task_id)["state"] == "PENDING_ARGS_AVAIL"


def test_a_failed_task_is_failed_with_its_error_type_and_message():
    node = Node(cpus=1)
    spec = task("bad")
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    node.raised(worker, spec, exceptions.RayTaskError("bad", "Traceback: boom", ValueError("x")))
    record = by_id(node, "tasks", "task_id", spec.task_id)
    assert record["state"] == "FAILED"
    assert record["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert "boom" in record["error_message"]


def test_a_cancelled_task_is_failed_as_task_cancelled():
    node = Node(cpus=1)
    running, queued = task(), task()
    node.feed("driver", (protocol.SUBMIT, running))
    node.feed("driver", (protocol.SUBMIT, queued))
    node.feed("driver", (protocol.CANCEL, queued.return_ids()[0], False, False))
    record = by_id(node, "tasks", "task_id", queued.task_id)
    assert (record["state"], record["error_type"]) == ("FAILED", "TASK_CANCELLED")


def test_a_retried_task_is_listed_by_its_last_attempt():
    node = Node(cpus=1)
    spec = task("flaky", max_retries=1, retry_exceptions=True)
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    node.raised(worker, spec, ValueError("once"), retry=True)
    assert by_id(node, "tasks", "task_id", spec.task_id)["state"] == "RUNNING"
    [(worker, _)] = node.executes()
    node.done(worker, spec)
    record = by_id(node, "tasks", "task_id", spec.task_id)
    assert (record["state"], record["attempt_number"]) == ("FINISHED", 1)


def test_the_history_keeps_only_the_newest_finished_tasks(monkeypatch):
    monkeypatch.setattr(state_rules, "TASK_HISTORY_MAX", 3)
    node = Node(cpus=1)
    specs = [task(f"t{i}") for i in range(5)]
    for spec in specs:
        node.feed("driver", (protocol.SUBMIT, spec))
        [(worker, _)] = node.executes()
        node.done(worker, spec)
    assert len(node.state.task_history) == 3
    assert [r["name"] for r in records(node, "tasks")] == ["t2", "t3", "t4"]


def test_actor_states_restarts_and_death_are_listed():
    node = Node(cpus=2)
    spec = actor_spec(max_restarts=1)
    start_actor(node, spec)
    record = by_id(node, "actors", "actor_id", spec.actor_id)
    assert (record["state"], record["class_name"], record["num_restarts"]) == ("ALIVE", "A", 0)
    assert record["pid"] is not None
    node.feed("driver", (protocol.REQUEST, 7, "kill_actor", (spec.actor_id, False)))
    assert by_id(node, "actors", "actor_id", spec.actor_id)["state"] == "RESTARTING"
    [(worker, creation)] = node.executes()
    node.done(worker, creation)
    record = by_id(node, "actors", "actor_id", spec.actor_id)
    assert (record["state"], record["num_restarts"]) == ("ALIVE", 1)
    node.feed("driver", (protocol.REQUEST, 7, "kill_actor", (spec.actor_id, True)))
    record = by_id(node, "actors", "actor_id", spec.actor_id)
    assert record["state"] == "DEAD" and record["num_restarts"] == 1
    assert record["death_cause"]
    # Still listed once the node forgets the actor (its last handle gone).
    node.feed("driver", (protocol.DROP_REFS, [ids.object_id(spec.actor_id, 0)]))
    assert spec.actor_id not in node.state.actors
    assert by_id(node, "actors", "actor_id", spec.actor_id)["state"] == "DEAD"


def test_an_actor_waiting_for_its_arguments_is_dependencies_unready():
    node = Node(cpus=2)
    producer = task("p")
    node.feed("driver", (protocol.SUBMIT, producer))
    spec = actor_spec()
    spec.deps = [producer.return_ids()[0]]
    node.feed("driver", (protocol.SUBMIT, spec))
    assert by_id(node, "actors", "actor_id", spec.actor_id)["state"] == "DEPENDENCIES_UNREADY"


def test_actor_calls_are_actor_tasks_queued_calls_wait_for_ordering():
    node = Node(cpus=2)
    spec = actor_spec()
    start_actor(node, spec)
    first = call(spec)
    node.feed("driver", (protocol.SUBMIT, first))
    record = by_id(node, "tasks", "task_id", first.task_id)
    assert (record["type"], record["state"]) == ("ACTOR_TASK", "RUNNING")
    assert record["actor_id"] == spec.actor_id.hex()
    creation = by_id(node, "tasks", "task_id", spec.task_id)
    assert (creation["type"], creation["state"]) == ("ACTOR_CREATION_TASK", "FINISHED")


def test_objects_are_listed_with_size_and_the_status_of_their_task():
    node = Node(cpus=1)
    oid = ids.new_put_id()
    node.feed("driver", (protocol.PUT, oid, protocol.INLINE, (b"m" * 3, (b"x" * 7,)), ()))
    node.feed("driver", (protocol.ADD_REFS, [oid]))
    spec = task()
    node.feed("driver", (protocol.SUBMIT, spec))
    put = by_id(node, "objects", "object_id", oid)
    assert (put["object_size"], put["task_status"]) == (10, "FINISHED")
    pending = by_id(node, "objects", "object_id", spec.return_ids()[0])
    assert pending["task_status"] == "RUNNING" and pending["object_size"] is None


def test_nodes_and_jobs_come_from_the_control_store():
    node = Node()
    [record] = records(node, "nodes")
    assert record["node_id"] == (b"N" * 16).hex() and record["state"] == "ALIVE"
    assert record["is_head_node"] and record["resources_total"]["CPU"] == 1
    [job] = records(node, "jobs")
    assert job["status"] == "RUNNING" and job["type"] == "DRIVER"


def test_filters_select_case_insensitively_and_limit_counts_what_passed():
    node = Node(cpus=1)
    specs = [task(f"t{i}") for i in range(3)]
    for spec in specs:
        node.feed("driver", (protocol.SUBMIT, spec))
    ok, (listed, total) = ask(node, "tasks", [("state", "=", "pending_node_assignment")], 1)
    assert ok and total == 2 and [r["name"] for r in listed] == ["t1"]
    ok, (listed, total) = ask(node, "tasks", [("state", "!=", "RUNNING"), ("name", "=", "t2")])
    assert ok and total == 1 and listed[0]["name"] == "t2"
    ok, (listed, total) = ask(node, "tasks", [("attempt_number", "=", "0")])
    assert ok and total == 3


def test_a_bad_filter_is_refused_in_the_reply():
    node = Node()
    ok, error = ask(node, "tasks", [("nope", "=", "x")])
    assert not ok and isinstance(error, ValueError) and "nope" in str(error)


def test_check_filters_names_the_problem():
    assert check_filters("tasks", None) == []
    assert check_filters("actors", [("state", "=", "ALIVE")]) == [("state", "=", "ALIVE")]
    with pytest.raises(ValueError, match="filter column bogus is not supported"):
        check_filters("tasks", [("bogus", "=", 1)])
    with pytest.raises(ValueError, match="Unsupported filter predicate >"):
        check_filters("tasks", [("state", ">", "RUNNING")])
    with pytest.raises(ValueError, match="tuple"):
        check_filters("tasks", ["state=RUNNING"])
    with pytest.raises(ValueError, match="Unsupported resource"):
        check_filters("workers", None)
    with pytest.raises(ValueError, match="not supported"):
        check_filters("nodes", [("labels", "=", "x")])   # not a scalar column


def test_select_keeps_order_and_counts_past_the_limit():
    rows = [{"state": s} for s in ("A", "B", "A", "A")]
    chosen, total = select(rows, [("state", "=", "a")], 2)
    assert chosen == [rows[0], rows[2]] and total == 3
    assert select(rows, [], None) == (rows, 4)


def test_the_history_cap_comes_from_the_config_or_the_environment():
    node = Node()
    assert node.state.task_history.maxlen == state_rules.TASK_HISTORY_MAX
    assert state_rules.history_cap_from_env({}) is None
    assert state_rules.history_cap_from_env({"RAY_task_events_max_num_task_in_gcs": "7"}) == 7
    assert state_rules.history_cap_from_env({"PURERUN_TASK_HISTORY_MAX": "3"}) == 3
    with pytest.raises(ValueError, match="RAY_task_events_max_num_task_in_gcs must be a "
                                         "positive integer, got '-1'"):
        state_rules.history_cap_from_env({"RAY_task_events_max_num_task_in_gcs": "-1"})


# ─── in a cluster: tasks are asked of every node ────────────────────────────────────────


def cluster_ask(node, resource, filters=None, limit=None):
    node.feed("driver", (protocol.REQUEST, 9, "state", (resource, filters, limit, True)))
    [(_token, reply)] = [(t, m) for t, m in node.take(protocol.REPLY, "driver") if m[1] == 9]
    assert reply[2], reply[3]
    return reply[3]


def test_in_a_cluster_each_task_is_listed_once_from_the_node_that_ran_it():
    from test_node_state_cluster import done as cluster_done
    from test_node_state_cluster import make_net, task as cluster_task
    net, a, b = make_net(gpu_box=1)
    here = cluster_task(a)
    there = cluster_task(a, resources={"CPU": 1, "gpu_box": 1})
    a.feed("driver", (protocol.SUBMIT, here))
    a.feed("driver", (protocol.SUBMIT, there))
    [(worker, _spec, _deps)] = b.executes()
    records, total = cluster_ask(a, "tasks")
    assert total == 2
    by_task = {r["task_id"]: r for r in records}
    assert by_task[there.task_id.hex()]["node_id"] == b.node_id.hex()
    assert by_task[there.task_id.hex()]["state"] == "RUNNING"
    assert by_task[there.task_id.hex()]["worker_pid"] is not None   # b's record, not a's
    cluster_done(b, worker, there, 1)
    records, total = cluster_ask(a, "tasks", [("state", "=", "FINISHED")])
    assert [r["task_id"] for r in records] == [there.task_id.hex()] and total == 1
    assert records[0]["node_id"] == b.node_id.hex()
    assert not a.state.state_gathers


def test_a_node_that_dies_before_it_answers_is_left_out():
    from test_node_state_cluster import make_net, task as cluster_task
    net, a, b = make_net()
    a.feed("driver", (protocol.SUBMIT, cluster_task(a)))
    net.down.add(b.name)          # b's answer never comes
    a.feed("driver", (protocol.REQUEST, 9, "state", ("tasks", None, None, True)))
    assert not a.take(protocol.REPLY, "driver") and a.state.state_gathers
    net.down.discard(b.name)
    net.kill(b)
    [(_token, reply)] = a.take(protocol.REPLY, "driver")
    assert reply[1] == 9 and reply[2] and reply[3][1] == 1
    assert not a.state.state_gathers
