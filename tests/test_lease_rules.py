"""The node's rules for the direct call path (core/lease_rules.py), event by event."""

import pickle

from test_node_state import Node, actor_spec, call, error_of, start_actor, task, value

from purerun import exceptions
from purerun.core import ids, protocol
from purerun.core.actors import DEAD, RESTARTING
from purerun.core.node_state import DISCONNECTED
from purerun.core.protocol import ARENA
from purerun.core.task_spec import LEASE_NAME


def lease(owner_job=b"\1\0\0\0"):
    return task(name=LEASE_NAME, job=owner_job)


def start_lease(node, owner="driver"):
    spec = lease()
    node.feed(owner, (protocol.SUBMIT, spec))
    [(worker, sent)] = node.executes()
    assert sent.task_id == spec.task_id
    return spec, worker


def test_a_lease_is_scheduled_as_a_task_and_kept_out_of_the_history_and_timeline():
    node = Node(cpus=1)
    spec, worker = start_lease(node)
    assert node.state.scheduler.available_resources().get("CPU", 0) == 0
    assert spec.task_id in node.state.leases
    records, count = node.state._local_state("tasks", [], None)
    assert records == [] and count == 0
    node.done(worker, spec)
    assert spec.task_id not in node.state.leases
    assert node.state.scheduler.available_resources()["CPU"] == 1
    assert list(node.state.task_history) == [] and list(node.state.timeline) == []


def test_records_of_tasks_run_on_a_lease_name_its_worker():
    node = Node(cpus=1)
    spec, worker = start_lease(node)
    task_id = ids.new_task_id()
    error = pickle.dumps(ValueError("no"))
    node.feed("driver", (protocol.DIRECT_DONE, [
        (task_id, 0, "f", b"\1\0\0\0", spec.task_id, (1.0, 2.0), None, {"CPU": 1.0}),
        (ids.new_task_id(), 1, "g", b"\1\0\0\0", spec.task_id, (2.0, 3.0), error,
         {"CPU": 1.0})]))
    pid = node.pids[int(worker[1:])]
    records = {r["name"]: r for r in node.state._local_state("tasks", [], None)[0]}
    assert records["f"]["state"] == "FINISHED" and records["f"]["worker_pid"] == pid
    assert records["f"]["task_id"] == task_id.hex()
    assert records["g"]["state"] == "FAILED" and records["g"]["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert records["g"]["attempt_number"] == 1
    assert [entry[0] for entry in node.state.timeline] == ["f", "g"]
    # a record arriving after the lease ended still names the worker it ran on
    node.done(worker, spec)
    node.feed("driver", (protocol.DIRECT_DONE, [
        (ids.new_task_id(), 0, "late", b"\1\0\0\0", spec.task_id, (3.0, 4.0), None, {})]))
    records = {r["name"]: r for r in node.state._local_state("tasks", [], None)[0]}
    assert records["late"]["worker_pid"] == pid


def test_other_work_waiting_for_a_cpu_revokes_the_running_leases_once():
    node = Node(cpus=1)
    spec, worker = start_lease(node)
    assert node.take(protocol.REVOKE) == []
    node.feed("driver", (protocol.SUBMIT, task(name="other")))
    assert node.take(protocol.REVOKE) == [("driver", (protocol.REVOKE, spec.task_id))]
    node.feed("driver", (protocol.SUBMIT, task(name="another")))
    assert node.take(protocol.REVOKE) == []          # revoked already
    node.done(worker, spec)
    [(_, other)] = node.executes()
    assert other.name == "other"


def test_a_drivers_own_extra_lease_requests_revoke_nothing_but_another_drivers_do():
    node = Node(cpus=1)
    spec, _worker = start_lease(node)
    node.feed("driver", (protocol.SUBMIT, lease()))
    assert node.take(protocol.REVOKE) == []
    node.connect("driver2")
    node.feed("driver2", (protocol.SUBMIT, lease()))
    assert node.take(protocol.REVOKE) == [("driver", (protocol.REVOKE, spec.task_id))]


def test_work_that_a_cpu_would_not_let_run_revokes_nothing():
    node = Node(cpus=1)
    start_lease(node)
    gpu = task(name="gpu")
    gpu.resources = {"CPU": 1, "GPU": 1}        # no GPU here: infeasible, not waiting
    node.feed("driver", (protocol.SUBMIT, gpu))
    assert node.take(protocol.REVOKE) == []
    pending = ids.object_id(ids.new_task_id(), 0)
    node.feed("driver", (protocol.PROMISE, [pending]))
    node.feed("driver", (protocol.SUBMIT, task(name="waits", deps=[pending])))
    assert node.take(protocol.REVOKE) == []     # it waits for its argument, not a CPU


def test_a_promised_value_is_pending_until_sealed_and_a_task_on_it_waits():
    node = Node(cpus=2)
    promised = ids.object_id(ids.new_task_id(), 0)
    node.feed("driver", (protocol.PROMISE, [promised]))
    uses = task(name="uses", deps=[promised])
    node.feed("driver", (protocol.SUBMIT, uses))
    assert node.executes() == []
    node.feed("driver", (protocol.SEAL, promised, *value(41)))
    [(_worker, sent)] = node.executes()
    assert sent.task_id == uses.task_id
    # a second seal, or one never promised, changes nothing
    node.feed("driver", (protocol.SEAL, promised, *value(0)))
    node.feed("driver", (protocol.SEAL, ids.object_id(ids.new_task_id(), 0), *value(0)))
    assert node.state.objects.get(promised).payload == value(41)[1]


def test_a_driver_leaving_fails_what_it_promised_and_did_not_seal():
    node = Node(cpus=1)
    node.connect("driver2")
    promised = ids.object_id(ids.new_task_id(), 0)
    node.feed("driver2", (protocol.PROMISE, [promised]))
    node.feed("driver", (protocol.ADD_REFS, [promised]))
    node.feed("driver", (protocol.SUBSCRIBE, [promised]))
    node.feed("driver2", (DISCONNECTED,))
    got = node.objects_to("driver")
    assert isinstance(error_of(got[promised]), exceptions.OwnerDiedError)


def test_a_promised_task_handed_to_the_node_is_held_once():
    node = Node(cpus=1)
    spec = task(name="f")
    [oid] = spec.return_ids()
    node.feed("driver", (protocol.PROMISE, [oid]))
    node.feed("driver", (protocol.SUBMIT, spec))
    assert node.state.objects.get(oid).holds == 1
    assert not node.state.peers["driver"].promised
    [(worker, _)] = node.executes()
    node.done(worker, spec, 5)
    node.feed("driver", (protocol.DROP_REFS, [oid]))
    assert node.state.objects.get(oid) is None


def test_direct_put_seals_a_leased_workers_results_for_the_driver():
    node = Node(cpus=1)
    spec, worker = start_lease(node)
    node.feed(worker, (protocol.REQUEST, 1, "alloc", (1000,)))
    [(_, reply)] = node.take(protocol.REPLY, worker)
    kind, offset = reply[3]
    assert kind == ARENA
    oid = ids.object_id(ids.new_task_id(), 0)
    inner = ids.new_put_id()
    node.feed("driver", (protocol.PUT, inner, *value("inner"), ()))
    node.feed(worker, (protocol.REQUEST, 2, "direct_put",
                       ([(oid, ARENA, (offset, 10, ((offset + 10, 990),)), [inner])], None)))
    [(_, reply)] = node.take(protocol.REPLY, worker)
    assert reply[2] is True
    entry = node.state.objects.get(oid)
    assert entry.kind == ARENA and entry.holds == 1
    assert oid in node.state.peers["driver"].refs
    assert not node.state.peers[worker].reservations      # sealed: no longer the worker's
    assert node.state.objects.get(inner).holds == 2       # the driver's, and the value's
    node.feed("driver", (protocol.DROP_REFS, [oid]))
    assert node.state.objects.get(oid) is None
    assert node.state.objects.get(inner).holds == 1


def test_direct_put_after_the_driver_left_frees_the_block():
    node = Node(cpus=1)
    node.connect("driver2")
    spec, worker = start_lease(node, owner="driver2")
    node.feed(worker, (protocol.REQUEST, 1, "alloc", (1000,)))
    [(_, reply)] = node.take(protocol.REPLY, worker)
    _, offset = reply[3]
    assert node.store.allocator.used > 0
    node.feed("driver2", (DISCONNECTED,))
    oid = ids.object_id(ids.new_task_id(), 0)
    node.feed(worker, (protocol.REQUEST, 2, "direct_put",
                       ([(oid, ARENA, (offset, 10, ((offset + 10, 990),)), ())], None)))
    assert node.state.objects.get(oid) is None
    assert node.store.allocator.used == 0


def test_the_askers_live_direct_tasks_answer_its_next_task_request_only():
    node = Node(cpus=1)
    spec, _worker = start_lease(node)
    running, queued = ids.new_task_id(), ids.new_task_id()
    node.feed("driver", (protocol.DIRECT_LIVE, [
        (running, 0, "f", b"\1\0\0\0", spec.task_id, {"CPU": 1.0}),
        (queued, 0, "f", b"\1\0\0\0", None, {"CPU": 1.0})]))
    node.feed("driver", (protocol.REQUEST, 1, "state", ("tasks", [], 100, False)))
    [(_, reply)] = node.take(protocol.REPLY)
    records, total = reply[3]
    assert total == 2
    assert {(r["task_id"], r["state"]) for r in records} == {
        (running.hex(), "RUNNING"), (queued.hex(), "PENDING_NODE_ASSIGNMENT")}
    node.feed("driver", (protocol.REQUEST, 2, "state", ("tasks", [], 100, False)))
    [(_, reply)] = node.take(protocol.REPLY)
    assert reply[3] == ([], 0)      # taken with the request it came for


# ── actor channels ────────────────────────────────────────────────────────────────────────

def channels_to(node, worker):
    return [m[1:] for _t, m in node.take(protocol.ACTOR_CHANNEL, worker)]


def test_a_channel_ask_reaches_the_actors_worker_once_it_is_alive():
    node = Node(cpus=2)
    spec = actor_spec(max_restarts=1)
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _creation)] = node.executes()
    node.feed("driver", (protocol.ACTOR_DIRECT, spec.actor_id, b"\0addr", b"n1"))
    assert channels_to(node, worker) == []          # not alive yet: kept
    node.done(worker, spec)
    assert channels_to(node, worker) == [(b"\0addr", b"n1")]
    node.feed("driver", (protocol.ACTOR_DIRECT, spec.actor_id, b"\0addr", b"n2"))
    assert channels_to(node, worker) == [(b"\0addr", b"n2")]   # alive: at once
    # a restarting actor gets the ask when its next incarnation is alive
    node.feed(worker, (DISCONNECTED,))
    node.feed("driver", (protocol.ACTOR_DIRECT, spec.actor_id, b"\0addr", b"n3"))
    [(worker2, _)] = node.executes()
    node.done(worker2, spec)
    assert channels_to(node, worker2) == [(b"\0addr", b"n3")]


def test_a_channel_ask_for_a_dead_or_unknown_actor_goes_nowhere():
    node = Node(cpus=2)
    spec = actor_spec()
    worker = start_actor(node, spec)
    node.feed(worker, (DISCONNECTED,))
    assert node.state.actors[spec.actor_id].state == DEAD
    node.feed("driver", (protocol.ACTOR_DIRECT, spec.actor_id, b"\0addr", b"n1"))
    node.feed("driver", (protocol.ACTOR_DIRECT, ids.new_task_id(), b"\0addr", b"n2"))
    assert node.take(protocol.ACTOR_CHANNEL) == []
    assert node.state.actor_channels == {}


def test_a_dead_actor_forgets_the_asks_for_channels_to_it():
    node = Node(cpus=2)
    spec = actor_spec()
    worker = start_actor(node, spec)
    node.feed("driver", (protocol.ACTOR_DIRECT, spec.actor_id, b"\0addr", b"n1"))
    assert node.state.actor_channels == {b"n1": "driver"}
    node.feed(worker, (DISCONNECTED,))
    assert node.state.actor_channels == {}


def test_an_ask_of_a_driver_that_left_is_not_passed_on():
    node = Node(cpus=2)
    node.connect("driver2")
    spec = actor_spec()
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    node.feed("driver2", (protocol.ACTOR_DIRECT, spec.actor_id, b"\0addr", b"n1"))
    node.feed("driver2", (DISCONNECTED,))
    assert node.state.actor_channels == {}
    node.done(worker, spec)
    assert channels_to(node, worker) == []


def test_calls_lost_with_a_channel_before_the_node_saw_the_death_settle_with_it():
    node = Node(cpus=2)
    spec = actor_spec(max_restarts=1, max_task_retries=0)
    worker = start_actor(node, spec)
    retried, failed = call(spec, max_retries=1), call(spec)
    node.feed("driver", (protocol.ACTOR_LOST, spec.actor_id, 0, [retried, failed]))
    # still alive as far as the node knows: entered as sent to its (dying) worker
    assert [s.task_id for _w, s in node.executes()] == [retried.task_id, failed.task_id]
    node.feed(worker, (DISCONNECTED,))
    error = error_of(node.objects_to()[failed.return_ids()[0]])
    assert isinstance(error, exceptions.ActorDiedError)
    [(worker2, _)] = node.executes()
    node.done(worker2, spec)
    [(w, again)] = node.executes()
    assert again is retried and retried.attempt == 1 and w == worker2
    node.done(worker2, retried, "ok")
    assert retried.return_ids()[0] in node.objects_to()


def test_calls_lost_after_the_node_saw_the_death_are_retried_or_failed_at_once():
    node = Node(cpus=2)
    spec = actor_spec(max_restarts=1, max_task_retries=1)
    worker = start_actor(node, spec)
    node.feed(worker, (DISCONNECTED,))
    actor = node.state.actors[spec.actor_id]
    assert actor.state == RESTARTING
    default, none_left = call(spec), call(spec, max_retries=0)
    node.feed("driver", (protocol.ACTOR_LOST, spec.actor_id, 0, [default, none_left]))
    error = error_of(node.objects_to()[none_left.return_ids()[0]])
    assert isinstance(error, exceptions.ActorDiedError)
    [(worker2, _)] = node.executes()
    node.done(worker2, spec)
    [(_w, again)] = node.executes()
    assert again is default and default.attempt == 1   # the actor's max_task_retries
    # lost with incarnation 0 once incarnation 1 is alive: the same
    late = call(spec, max_retries=0)
    node.feed("driver", (protocol.ACTOR_LOST, spec.actor_id, 0, [late]))
    assert isinstance(error_of(node.objects_to()[late.return_ids()[0]]),
                      exceptions.ActorDiedError)
    assert node.executes() == []


def test_an_exit_on_a_channel_ends_the_actor_without_restart_and_says_why():
    node = Node(cpus=2)
    spec = actor_spec(max_restarts=3)
    worker = start_actor(node, spec)
    queued = call(spec)
    node.feed("driver", (protocol.SUBMIT, queued))
    node.executes()
    node.feed(worker, (protocol.ACTOR_EXITING, "sys.exit(0) in a method"))
    actor = node.state.actors[spec.actor_id]
    assert actor.state == DEAD
    assert any(type(e).__name__ == "KillWorker" for e in node.effects)
    error = error_of(node.objects_to()[queued.return_ids()[0]])
    assert isinstance(error, exceptions.ActorDiedError) and "sys.exit(0)" in str(error)
    node.feed(worker, (DISCONNECTED,))
    assert node.executes() == []     # not restarted
    later = call(spec)
    node.feed("driver", (protocol.SUBMIT, later))
    assert "sys.exit(0)" in str(error_of(node.objects_to()[later.return_ids()[0]]))


def test_direct_put_for_a_channel_seals_for_the_driver_that_asked():
    node = Node(cpus=2)
    node.connect("driver2")
    spec = actor_spec()
    worker = start_actor(node, spec)
    node.feed("driver2", (protocol.ACTOR_DIRECT, spec.actor_id, b"\0addr", b"n1"))
    node.feed(worker, (protocol.REQUEST, 1, "alloc", (1000,)))
    [(_, reply)] = node.take(protocol.REPLY, worker)
    _, offset = reply[3]
    oid = ids.object_id(ids.new_task_id(), 0)
    node.feed(worker, (protocol.REQUEST, 2, "direct_put",
                       ([(oid, ARENA, (offset, 10, ((offset + 10, 990),)), ())], b"n1")))
    assert node.state.objects.get(oid).holds == 1
    assert oid in node.state.peers["driver2"].refs
    assert oid not in node.state.peers["driver"].refs


def test_records_of_calls_on_a_channel_name_the_actor_and_its_worker():
    node = Node(cpus=2)
    spec = actor_spec()
    worker = start_actor(node, spec)
    task_id = ids.new_task_id()
    node.feed("driver", (protocol.DIRECT_DONE, [
        (task_id, 0, "A.m", b"\1\0\0\0", spec.actor_id, (1.0, 2.0), None, None)]))
    running = ids.new_task_id()
    node.feed("driver", (protocol.DIRECT_LIVE, [
        (running, 0, "A.n", b"\1\0\0\0", spec.actor_id, None)]))
    node.feed("driver", (protocol.REQUEST, 1, "state", ("tasks", [], 100, False)))
    [(_, reply)] = node.take(protocol.REPLY)
    records = {r["name"]: r for r in reply[3][0]}
    pid = node.pids[int(worker[1:])]
    assert records["A.m"]["state"] == "FINISHED" and records["A.m"]["type"] == "ACTOR_TASK"
    assert records["A.m"]["actor_id"] == spec.actor_id.hex()
    assert records["A.m"]["worker_pid"] == pid
    assert records["A.n"]["state"] == "RUNNING" and records["A.n"]["worker_pid"] == pid
    assert records["A.n"]["type"] == "ACTOR_TASK"
