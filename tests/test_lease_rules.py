"""The node's rules for the direct call path (core/lease_rules.py), event by event."""

import pickle

from test_node_state import Node, error_of, task, value

from purerun import exceptions
from purerun.core import ids, protocol
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
                       ([(oid, ARENA, (offset, 10, ((offset + 10, 990),)), [inner])],)))
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
                       ([(oid, ARENA, (offset, 10, ((offset + 10, 990),)), ())],)))
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
