"""The placement-group and label rules, event by event, with no process started: bundle
placement (core/placement_groups.py), the control store's group table, bundle reservation in
the scheduler, and NodeState placing work in groups and by labels, on one node and on a
cluster of NodeStates sharing one ControlStore (the fake net of test_node_state_cluster).
"""

import os

import pytest
from test_node_state import Node, actor_spec, call
from test_node_state_cluster import Net, done, task

from purerun import exceptions
from purerun.core import placement_groups as pgs
from purerun.core import protocol, serialization
from purerun.core.control_store import ControlStore
from purerun.core.node_state import DISCONNECTED, DRIVER_CONNECTED, TICK, KillWorker
from purerun.core.placement_groups import (DOES_NOT_EXIST, EXISTS, IN, LABELS, NOT_IN,
                                           PLACEMENT_GROUP, labels_match,
                                           parse_label_selector, place_bundles)
from purerun.core.protocol import ERROR
from purerun.core.scheduler import (BundleReserved, Dispatch, ReserveBundle, ReturnBundle,
                                    Scheduler, SubmitTask, TaskFinished, WorkerBlocked,
                                    WorkerDied, WorkerStarted, WorkerUnblocked)

G1 = b"g" * 18
G2 = b"h" * 18
N1 = b"1" * 16
N2 = b"2" * 16
N3 = b"3" * 16
JOB = b"\1\0\0\0"


# ─── placing bundles ─────────────────────────────────────────────────────────────────────────

NODES = {N1: {"CPU": 2}, N2: {"CPU": 2}, N3: {"CPU": 1}}


@pytest.mark.parametrize("strategy, bundles, expected", [
    ("STRICT_PACK", [{"CPU": 1}, {"CPU": 1}], [N1, N1]),
    ("STRICT_PACK", [{"CPU": 2}, {"CPU": 1}], None),        # no node has 3
    ("PACK", [{"CPU": 1}, {"CPU": 1}], [N1, N1]),
    ("PACK", [{"CPU": 2}, {"CPU": 1}], [N1, N2]),           # spills over, best effort
    ("PACK", [{"CPU": 2}, {"CPU": 2}, {"CPU": 2}], None),
    ("STRICT_SPREAD", [{"CPU": 1}] * 3, [N1, N2, N3]),
    ("STRICT_SPREAD", [{"CPU": 1}] * 4, None),              # three nodes only
    ("STRICT_SPREAD", [{"CPU": 1}, {"CPU": 2}], [N2, N1]),  # the big one chooses first
    ("SPREAD", [{"CPU": 1}] * 3, [N1, N2, N3]),
    ("SPREAD", [{"CPU": 1}] * 4, [N1, N2, N3, N1]),         # shares once every node has one
    ("SPREAD", [{"GPU": 1}], None),
])
def test_bundles_are_placed_per_strategy_or_not_at_all(strategy, bundles, expected):
    assert place_bundles(bundles, strategy, NODES) == expected


def test_bundle_label_constraints_choose_among_the_nodes_that_match():
    labels = {N1: {"zone": "a"}, N2: {"zone": "b"}, N3: {}}
    west = (("zone", IN, ("b",)),)
    assert place_bundles([{"CPU": 1}], "PACK", NODES, labels, [west]) == [N2]
    assert place_bundles([{"CPU": 1}] * 2, "STRICT_PACK", NODES, labels, [(), west]) == [N2, N2]
    assert place_bundles([{"CPU": 1}] * 2, "STRICT_SPREAD", NODES, labels,
                         [west, west]) is None
    nowhere = (("zone", IN, ("c",)),)
    assert place_bundles([{"CPU": 1}], "SPREAD", NODES, labels, [nowhere]) is None


def test_group_resources_name_the_group_and_the_bundle():
    assert pgs.bundle_resources("ab", 1, {"CPU": 2, "GPU": 0}) == {
        "CPU_group_ab": 2, "CPU_group_1_ab": 2, "bundle_group_ab": 1000,
        "bundle_group_1_ab": 1000}
    assert pgs.group_demand({"CPU": 1}, "ab", -1) == {"CPU_group_ab": 1,
                                                       "bundle_group_ab": 0.001}
    assert pgs.group_demand({}, "ab", 0) == {"bundle_group_ab": 0.001,
                                             "bundle_group_0_ab": 0.001}


@pytest.mark.parametrize("constraints, labels, expected", [
    (((("zone", IN, ("a", "b")),)), {"zone": "b"}, True),
    (((("zone", IN, ("a",)),)), {}, False),
    (((("zone", NOT_IN, ("a",)),)), {}, True),
    (((("zone", NOT_IN, ("a",)),)), {"zone": "a"}, False),
    (((("gpu", EXISTS, ()),)), {"gpu": "x"}, True),
    (((("gpu", DOES_NOT_EXIST, ()),)), {"gpu": "x"}, False),
    ((("zone", IN, ("a",)), ("gpu", EXISTS, ())), {"zone": "a"}, False),
])
def test_labels_match_every_constraint(constraints, labels, expected):
    assert labels_match(labels, constraints) is expected


def test_label_selector_syntax():
    assert parse_label_selector({"a": "x", "b": "!y", "c": "in(p, q)", "d": "!in(r)"}) == (
        ("a", IN, ("x",)), ("b", NOT_IN, ("y",)), ("c", IN, ("p", "q")), ("d", NOT_IN, ("r",)))
    for bad in ({"a": ""}, {"a": "in(x"}, {"a": "in()"}, {"": "x"}):
        with pytest.raises(ValueError):
            parse_label_selector(bad)


# ─── the control store's group table ────────────────────────────────────────────────────────


def store_with(*nodes):
    store = ControlStore()
    for node_id, cpus in nodes:
        store.register_node(node_id, "addr", {"CPU": cpus})
    return store


def test_a_group_that_does_not_fit_what_is_left_waits_for_a_removal():
    store = store_with((N1, 2))
    first = store.create_placement_group(G1, [{"CPU": 2}], "PACK", job_id=JOB)
    assert first == {"state": "PENDING", "nodes": [N1], "infeasible": False}
    version = store.node_table()[0]["bundles_version"]
    second = store.create_placement_group(G2, [{"CPU": 1}], "PACK", job_id=JOB)
    assert second == {"state": "PENDING", "nodes": [None], "infeasible": False}
    assert store.remove_placement_group(G1) == [N1]
    assert store.placement_group_info(G2)["nodes"] == [N1]
    assert store.bundles_on(N1) == [(G2, 0, {"CPU": 1.0})]
    assert store.node_table()[0]["bundles_version"] > version
    assert store.remove_placement_group(G1) == []   # twice: nothing


def test_a_group_is_created_once_every_bundle_is_reserved():
    store = store_with((N1, 1), (N2, 1))
    store.create_placement_group(G1, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD", "g", JOB)
    assert store.bundle_reserved(G1, 0, N2) is False          # not where it was placed
    assert store.bundle_reserved(G1, 0, N1) is False
    assert store.placement_group_table(G1)["state"] == "PENDING"
    assert store.bundle_reserved(G1, 1, N2) is True
    table = store.placement_group_table(G1)
    assert table["state"] == "CREATED" and table["name"] == "g"
    assert table["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}
    assert table["bundles_to_node_id"] == {0: N1.hex(), 1: N2.hex()}
    assert table["strategy"] == "STRICT_SPREAD"
    assert table["stats"]["scheduling_state"] == "FINISHED"
    store.remove_placement_group(G1)
    assert store.placement_group_table()[G1.hex()]["state"] == "REMOVED"
    assert store.placement_group_info(G1)["state"] == "REMOVED"


def test_a_group_goes_first_to_the_node_with_the_most_cpu_free():
    store = store_with((N1, 2), (N2, 2))
    store.heartbeat(N1, {"CPU": 0})          # busy with tasks
    store.create_placement_group(G1, [{"CPU": 1}], "PACK")
    assert store.placement_group_info(G1)["nodes"] == [N2]


def test_an_infeasible_group_says_so_and_is_placed_when_a_node_that_fits_joins():
    store = store_with((N1, 1))
    answer = store.create_placement_group(G1, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD")
    assert answer["infeasible"] is True and answer["nodes"] == [None, None]
    store.register_node(N2, "addr", {"CPU": 1})
    assert store.placement_group_info(G1)["nodes"] == [N1, N2]


def test_names_are_unique_per_namespace_and_found_by_the_job():
    store = store_with((N1, 4))
    job, other = store.new_job_id(), store.new_job_id()
    store.set_job_namespace(job, "ns")
    store.create_placement_group(G1, [{"CPU": 1}], "PACK", "g", job)
    with pytest.raises(ValueError, match="already exists"):
        store.create_placement_group(G2, [{"CPU": 1}], "PACK", "g", job)
    assert store.get_placement_group("g", job)[0] == G1
    assert store.get_placement_group("g", other) is None   # another (anonymous) namespace
    store.remove_placement_group(G1)
    assert store.get_placement_group("g", job) is None


def test_bad_groups_are_refused():
    store = store_with((N1, 4))
    with pytest.raises(ValueError, match="strategy"):
        store.create_placement_group(G1, [{"CPU": 1}], "TIGHT")
    with pytest.raises(ValueError, match="at least one bundle"):
        store.create_placement_group(G1, [], "PACK")


def test_bundle_labels_are_kept_when_a_group_waits_for_a_node_that_matches():
    store = store_with((N1, 2))
    west = [(("zone", IN, ("west",)),)]
    answer = store.create_placement_group(G1, [{"CPU": 1}], "PACK", bundle_labels=west)
    assert answer["infeasible"] is True
    store.register_node(N2, "addr", {"CPU": 1}, labels={"zone": "west"})
    assert store.placement_group_info(G1)["nodes"] == [N2]


def test_cluster_resources_list_what_reserved_bundles_offer():
    store = store_with((N1, 2))
    store.create_placement_group(G1, [{"CPU": 1}], "PACK")
    assert store.cluster_resources() == {"CPU": 2.0}       # placed, not reserved yet
    store.bundle_reserved(G1, 0, N1)
    assert store.cluster_resources() == {"CPU": 2.0, **{
        name: float(amount) for name, amount in pgs.bundle_resources(G1.hex(), 0,
                                                                     {"CPU": 1}).items()}}
    store.remove_placement_group(G1)
    assert store.cluster_resources() == {"CPU": 2.0}


def test_a_job_ending_removes_its_groups_but_not_detached_ones():
    store = store_with((N1, 4))
    job = store.new_job_id()
    store.create_placement_group(G1, [{"CPU": 1}], "PACK", job_id=job)
    store.create_placement_group(G2, [{"CPU": 1}], "PACK", job_id=job, detached=True)
    store.job_finished(job)
    assert store.placement_group_info(G1)["state"] == "REMOVED"
    assert store.placement_group_info(G2)["state"] == "PENDING"   # not reserved yet


def test_bundles_of_a_dead_node_are_placed_again_keeping_the_strategy():
    store = store_with((N1, 1), (N2, 1), (N3, 1))
    store.create_placement_group(G1, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD")
    assert store.placement_group_info(G1)["nodes"] == [N1, N2]
    for i, node in enumerate((N1, N2)):
        store.bundle_reserved(G1, i, node)
    store.node_dead(N2)
    info = store.placement_group_info(G1)
    assert info["state"] == "RESCHEDULING" and info["nodes"] == [N1, N3]
    assert store.bundle_reserved(G1, 1, N3) is True


# ─── the scheduler: reserving bundles ───────────────────────────────────────────────────────

PROVIDES = pgs.bundle_resources("aa", 0, {"CPU": 1})


def scheduler(cpus=2):
    return Scheduler({"CPU": cpus}, max_workers=4, max_starting_workers=4)


def test_a_bundle_is_reserved_at_once_when_free_and_only_the_group_uses_it():
    s = scheduler()
    assert s.handle(ReserveBundle("b", {"CPU": 1}, PROVIDES)) == [BundleReserved("b")]
    assert s.available_resources()["CPU"] == 1
    assert s.total_resources()["CPU"] == 2 and s.total_resources()["CPU_group_aa"] == 1
    s.handle(WorkerStarted("w1"))
    s.handle(WorkerStarted("w2"))
    assert s.handle(SubmitTask("t1", {"CPU": 2})) == []        # the bundle's CPU is not free
    actions = s.handle(SubmitTask("t2", pgs.group_demand({"CPU": 1}, "aa", 0)))
    assert [type(a) for a in actions] == [Dispatch]
    assert "CPU_group_aa" not in s.available_resources()


def test_a_bundle_waits_for_its_resources_and_comes_before_queued_tasks():
    s = scheduler(cpus=1)
    s.handle(WorkerStarted("w1"))
    [dispatch] = s.handle(SubmitTask("t1", {"CPU": 1}))
    assert s.handle(ReserveBundle("b", {"CPU": 1}, PROVIDES)) == []
    assert s.handle(SubmitTask("t2", {"CPU": 1})) == []
    actions = s.handle(TaskFinished(dispatch.worker_id))
    assert actions == [BundleReserved("b")]                    # t2 still waits
    assert s.num_pending == 1


def test_returning_a_bundle_frees_it_and_its_workers_stop_counting_it():
    s = scheduler()
    s.handle(ReserveBundle("b", {"CPU": 1}, PROVIDES))
    s.handle(WorkerStarted("w1"))
    s.handle(SubmitTask("t1", pgs.group_demand({"CPU": 1}, "aa", 0)))
    assert s.handle(ReturnBundle("b")) == []
    assert s.available_resources() == {"CPU": 2}
    assert s.total_resources() == {"CPU": 2}
    s.handle(WorkerDied("w1"))                                 # the node killed it
    assert s.available_resources() == {"CPU": 2}
    # A task with the gone group's demand can no longer be queued.
    actions = s.handle(SubmitTask("t2", pgs.group_demand({"CPU": 1}, "aa", 0)))
    assert [type(a).__name__ for a in actions] == ["Infeasible"]


def test_a_task_blocked_in_get_lends_its_bundle_cpu_to_the_bundle():
    s = scheduler(cpus=1)
    s.handle(ReserveBundle("b", {"CPU": 1}, PROVIDES))
    for worker in ("w1", "w2"):
        s.handle(WorkerStarted(worker))
    demand = pgs.group_demand({"CPU": 1}, "aa", 0)
    [parent] = s.handle(SubmitTask("parent", demand))
    assert s.handle(SubmitTask("child", demand)) == []
    [child] = s.handle(WorkerBlocked(parent.worker_id))
    assert child.task_id == "child"
    s.handle(TaskFinished(child.worker_id))
    s.handle(WorkerUnblocked(parent.worker_id))
    assert "CPU_group_aa" not in s.available_resources()
    # Returned while blocked: what it lent is not given back twice.
    s.handle(WorkerBlocked(parent.worker_id))
    s.handle(ReturnBundle("b"))
    s.handle(WorkerDied(parent.worker_id))
    assert s.available_resources() == {"CPU": 1}


def test_a_gpu_bundle_takes_gpu_ids_and_its_tasks_get_them():
    s = Scheduler({"CPU": 2, "GPU": 2}, gpu_ids=("g0", "g1"), max_workers=4,
                  max_starting_workers=4)
    provides = pgs.bundle_resources("aa", 0, {"GPU": 1})
    s.handle(ReserveBundle("b", {"GPU": 1}, provides))
    for worker in ("w1", "w2"):
        s.handle(WorkerStarted(worker))
    [inside] = s.handle(SubmitTask("in", pgs.group_demand({"GPU": 1}, "aa", 0)))
    [outside] = s.handle(SubmitTask("out", {"GPU": 1}))
    assert inside.gpu_ids == ("g0",) and outside.gpu_ids == ("g1",)
    s.handle(TaskFinished(inside.worker_id))
    s.handle(TaskFinished(outside.worker_id))
    s.handle(ReturnBundle("b"))
    [both] = s.handle(SubmitTask("both", {"GPU": 2}))
    assert both.gpu_ids == ("g0", "g1")


def test_a_pending_bundle_returned_is_just_dropped():
    s = scheduler(cpus=1)
    s.handle(WorkerStarted("w1"))
    s.handle(SubmitTask("t1", {"CPU": 1}))
    s.handle(ReserveBundle("b", {"CPU": 1}, PROVIDES))
    assert s.handle(ReturnBundle("b")) == []
    assert s.handle(TaskFinished("w1")) == []
    assert s.available_resources() == {"CPU": 1}


# ─── one node ───────────────────────────────────────────────────────────────────────────────


def group_task(node, group_id, index=-1, cpus=1, capture=False, **kw):
    spec = task(node, resources={"CPU": cpus} if cpus else {}, **kw)
    spec.strategy = (PLACEMENT_GROUP, group_id, index, capture)
    return spec


class OneNode(Node):
    """A lone node (no head): what test_node_state drives, with task ids of its own."""

    def tid(self):
        return (1).to_bytes(4, "little") + os.urandom(12)


def request(node, op, *args, token="driver"):
    node.feed(token, (protocol.REQUEST, 5, op, args))
    [(_, reply)] = node.take(protocol.REPLY, token)
    assert reply[2] is True, reply
    return reply[3]


def error_of(node, spec, token="driver"):
    objects = node.objects_to(token)
    kind, payload = objects[spec.return_ids()[0]]
    assert kind == ERROR
    return serialization.deserialize(payload)


def one_node(cpus=2):
    node = OneNode(cpus=cpus)
    node.control.export_function(b"k" * 16, b"pickled")
    return node


def test_one_node_reserves_a_group_at_once_and_runs_its_tasks_inside_it():
    node = one_node(cpus=2)
    assert request(node, "pg_create", G1, [{"CPU": 1}], "PACK", "", JOB, False, None) == "CREATED"
    assert node.state.scheduler.available_resources()["CPU"] == 1
    inside = group_task(node, G1, 0)
    node.feed("driver", (protocol.SUBMIT, inside))
    assert [s.task_id for _w, s in node.executes()] == [inside.task_id]
    # The other CPU serves plain tasks; a second group task waits for the bundle.
    second = group_task(node, G1, -1)
    plain = task(node)
    node.feed("driver", (protocol.SUBMIT, second))
    node.feed("driver", (protocol.SUBMIT, plain))
    assert [s.task_id for _w, s in node.executes()] == [plain.task_id]


def test_a_task_for_a_group_still_pending_waits_and_runs_once_it_is_created():
    node = one_node(cpus=1)
    busy = task(node)
    node.feed("driver", (protocol.SUBMIT, busy))
    [(worker, _)] = node.executes()
    assert request(node, "pg_create", G1, [{"CPU": 1}], "PACK", "", JOB, False, None) == "PENDING"
    waiting = group_task(node, G1, 0)
    node.feed("driver", (protocol.SUBMIT, waiting))
    assert node.executes() == [] and waiting.task_id in node.state.parked
    node.done(worker, busy)
    assert [s.task_id for _w, s in node.executes()] == [waiting.task_id]
    assert node.control.placement_group_info(G1)["state"] == "CREATED"


def test_work_for_every_bundle_waits_until_the_whole_group_is_reserved():
    node = one_node(cpus=2)
    busy = task(node, resources={"CPU": 2})
    node.feed("driver", (protocol.SUBMIT, busy))
    [(worker, _)] = node.executes()
    request(node, "pg_create", G1, [{"CPU": 1}, {"CPU": 1}], "PACK", "", JOB, False, None)
    specs = [group_task(node, G1, i) for i in (1, 0)]
    for spec in specs:
        node.feed("driver", (protocol.SUBMIT, spec))
    assert node.executes() == []
    node.done(worker, busy)
    assert sorted(s.task_id for _w, s in node.executes()) == sorted(s.task_id for s in specs)


def test_an_actor_waits_for_its_group_lives_in_its_bundle_and_dies_with_it():
    node = one_node(cpus=1)
    busy = task(node)
    node.feed("driver", (protocol.SUBMIT, busy))
    [(worker, _)] = node.executes()
    request(node, "pg_create", G1, [{"CPU": 1}], "PACK", "", JOB, False, None)
    creation = actor_spec()
    creation.strategy = creation.actor.strategy = (PLACEMENT_GROUP, G1, 0, False)
    node.feed("driver", (protocol.SUBMIT, creation))
    assert node.executes() == [] and creation.task_id in node.state.parked
    node.done(worker, busy)
    [(actor_worker, sent)] = node.executes()
    assert sent.task_id == creation.task_id
    node.done(actor_worker, creation)
    request(node, "pg_remove", G1)
    method = call(creation)
    node.feed("driver", (protocol.SUBMIT, method))
    error = error_of(node, method)
    assert isinstance(error, exceptions.ActorDiedError)
    assert "placement group was removed" in str(error)
    assert node.state.scheduler.available_resources() == {"CPU": 1}


def test_an_infeasible_group_warns_the_driver():
    node = one_node(cpus=1)
    request(node, "pg_create", G1, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD", "", JOB, False, None)
    [(_, warn)] = node.take(protocol.WARN, "driver")
    assert "cannot be created yet" in warn[1] and "STRICT_SPREAD" in warn[1]


def test_removing_a_group_fails_its_tasks_and_frees_its_resources():
    node = one_node(cpus=2)
    request(node, "pg_create", G1, [{"CPU": 1}], "PACK", "", JOB, False, None)
    running = group_task(node, G1, 0)
    queued = group_task(node, G1, 0)
    for spec in (running, queued):
        node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    request(node, "pg_remove", G1)
    assert KillWorker(node.state.workers[int(worker[1:])].worker_id) in node.effects
    objects = node.objects_to()
    for spec in (running, queued):
        kind, payload = objects[spec.return_ids()[0]]
        assert kind == ERROR
        assert isinstance(serialization.deserialize(payload),
                          exceptions.TaskPlacementGroupRemoved)
    assert node.state.scheduler.available_resources() == {"CPU": 2}
    late = group_task(node, G1, 0)
    node.feed("driver", (protocol.SUBMIT, late))
    assert isinstance(error_of(node, late), exceptions.TaskPlacementGroupRemoved)


def test_a_child_of_a_capturing_task_goes_into_the_same_group():
    node = one_node(cpus=2)
    request(node, "pg_create", G1, [{"CPU": 2}], "PACK", "", JOB, False, None)
    parent = group_task(node, G1, 0, capture=True)
    node.feed("driver", (protocol.SUBMIT, parent))
    [(worker, _)] = node.executes()
    child = task(node)
    node.feed(worker, (protocol.SUBMIT, child))
    [(_, sent)] = node.executes()
    assert sent.strategy == (PLACEMENT_GROUP, G1, -1, True)
    assert request(node, "pg_current", token=worker) == G1
    assert request(node, "pg_current") is None     # a driver is in no group


def test_a_task_naming_a_bundle_the_group_lacks_is_unschedulable():
    node = one_node(cpus=2)
    request(node, "pg_create", G1, [{"CPU": 1}], "PACK", "", JOB, False, None)
    spec = group_task(node, G1, 3)
    node.feed("driver", (protocol.SUBMIT, spec))
    assert isinstance(error_of(node, spec), exceptions.TaskUnschedulableError)


def test_the_driver_ending_removes_its_groups():
    node = one_node(cpus=2)
    node.connect("d2")
    request(node, "pg_create", G1, [{"CPU": 1}], "PACK", "", node.state.peers["d2"].job_id,
            False, None, token="d2")
    assert node.state.scheduler.available_resources()["CPU"] == 1
    node.feed("d2", (DISCONNECTED,))
    assert node.state.scheduler.available_resources() == {"CPU": 2}
    assert node.control.placement_group_info(G1)["state"] == "REMOVED"


def test_labels_on_one_node_run_a_match_and_park_the_rest_with_a_warning():
    node = one_node(cpus=2)
    match = task(node, strategy=(LABELS, (("ray.io/node-id", IN, ((b"N" * 16).hex(),)),), ()))
    miss = task(node, strategy=(LABELS, (("zone", EXISTS, ()),), ()))
    node.feed("driver", (protocol.SUBMIT, match))
    node.feed("driver", (protocol.SUBMIT, miss))
    assert [s.task_id for _w, s in node.executes()] == [match.task_id]
    [(_, warn)] = node.take(protocol.WARN, "driver")
    assert "zone exists" in warn[1]
    assert miss.task_id in node.state.parked
    # Its labels match but it can never fit: infeasible, as any task too big for the node.
    big = task(node, resources={"CPU": 8}, strategy=(LABELS, (("zone", DOES_NOT_EXIST, ()),), ()))
    node.feed("driver", (protocol.SUBMIT, big))
    [(_, warn)] = node.take(protocol.WARN, "driver")
    assert "no node has that much" in warn[1] and big.task_id not in node.state.parked


# ─── a cluster ──────────────────────────────────────────────────────────────────────────────


def cluster():
    net = Net()
    a = net.add("a", CPU=1)
    b = net.add("b", CPU=1)
    net.control.export_function(b"k" * 16, b"pickled")
    a.feed("driver", (DRIVER_CONNECTED, True))
    return net, a, b


def create(node, *args):
    node.feed("driver", (protocol.REQUEST, 5, "pg_create", args))
    [(_, reply)] = node.take(protocol.REPLY, "driver")
    return reply[3]


def test_strict_spread_reserves_one_bundle_per_node_and_each_task_goes_to_its_bundle():
    net, a, b = cluster()
    create(a, G1, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD", "", JOB, False, None)
    info = net.control.placement_group_info(G1)
    assert info["state"] == "CREATED" and info["nodes"] == [a.node_id, b.node_id]
    specs = [group_task(a, G1, i) for i in (0, 1)]
    for spec in specs:
        a.feed("driver", (protocol.SUBMIT, spec))
    assert [s.task_id for _w, s, _d in a.executes()] == [specs[0].task_id]
    [(worker, sent, _)] = b.executes()
    assert sent.task_id == specs[1].task_id
    done(b, worker, specs[1], "there")
    assert specs[1].return_ids()[0] in dict(
        (m[1], m) for _t, m in a.take(protocol.OBJECT, "driver"))


def test_a_group_waiting_for_a_node_is_placed_when_one_joins_and_parked_work_follows():
    net = Net()
    a = net.add("a", CPU=1)
    net.control.export_function(b"k" * 16, b"pickled")
    a.feed("driver", (DRIVER_CONNECTED, True))
    create(a, G1, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD", "", JOB, False, None)
    assert a.take(protocol.WARN, "driver")
    spec = group_task(a, G1, 1)
    a.feed("driver", (protocol.SUBMIT, spec))
    assert spec.task_id in a.state.parked
    b = net.add("b", CPU=1)
    # b learns of its bundle from its own record in the node table (its heartbeat); a then
    # hears that the group is complete.
    b.feed(None, (TICK,))
    assert net.control.placement_group_info(G1)["state"] == "CREATED"
    assert [s.task_id for _w, s, _d in b.executes()] == [spec.task_id]


def test_bundles_of_a_dead_node_move_and_their_work_runs_again_there():
    net, a, b = cluster()
    c = net.add("c", CPU=1)
    create(a, G1, [{"CPU": 1}], "PACK", "", JOB, False, None)
    create(a, G2, [{"CPU": 1}], "PACK", "", JOB, False, None)   # fills a then b
    assert net.control.placement_group_info(G2)["nodes"] == [b.node_id]
    spec = group_task(a, G2, 0, max_retries=1)
    a.feed("driver", (protocol.SUBMIT, spec))
    assert [s.task_id for _w, s, _d in b.executes()] == [spec.task_id]
    net.kill(b)
    assert net.control.placement_group_info(G2)["nodes"] == [c.node_id]
    c.feed(None, (TICK,))      # c's heartbeat: it reserves the moved bundle
    a.feed(None, (TICK,))
    assert [s.task_id for _w, s, _d in c.executes()] == [spec.task_id]


def test_labels_route_work_to_the_labelled_node_and_wait_for_one_to_join():
    net = Net()
    a = net.add("a", CPU=1)
    net.control.export_function(b"k" * 16, b"pickled")
    a.feed("driver", (DRIVER_CONNECTED, True))
    spec = task(a, strategy=(LABELS, (("zone", IN, ("west",)),), ()))
    a.feed("driver", (protocol.SUBMIT, spec))
    assert spec.task_id in a.state.parked and a.take(protocol.WARN, "driver")
    b = net.nodes["b"] = type(a)(net, "b", {"CPU": 1})
    b.state.labels["zone"] = "west"
    net.control.register_node(b.node_id, "b:1", {"CPU": 1}, labels=b.state.labels)
    a.feed(None, (TICK,))
    [(worker, sent, _)] = b.executes()
    assert sent.task_id == spec.task_id
    done(b, worker, spec)
    # Soft constraints prefer, hard ones decide.
    soft = task(a, strategy=(LABELS, (), (("zone", IN, ("west",)),)))
    a.feed("driver", (protocol.SUBMIT, soft))
    assert [s.task_id for _w, s, _d in b.executes()] == [soft.task_id]
