"""Placement groups on one node, with real processes: creation and readiness, reserved
resources, tasks and actors in bundles, capture of child tasks, removal, names, lifetimes.
(The rules themselves are tested event by event in test_placement_group_rules.py; groups
across nodes in test_placement_group_cluster.py.)
"""

import logging
import os
import warnings

import pytest

import purerun
from helpers import wait_for
from purerun import exceptions
from purerun.util.placement_group import (PlacementGroup, get_current_placement_group,
                                          get_placement_group, placement_group,
                                          placement_group_table, remove_placement_group)
from purerun.util.scheduling_strategies import PlacementGroupSchedulingStrategy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster():
    purerun.init(num_cpus=2, num_gpus=2)
    yield
    purerun.shutdown()


@pytest.fixture
def group(cluster):
    """A created group of one 1-CPU bundle, removed after the test."""
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(timeout_seconds=30)
    yield pg
    remove_placement_group(pg)
    wait_for(lambda: purerun.available_resources().get("CPU") == 2,
             message="the group's CPU is free again")


def in_group(pg, index=-1, capture=None):
    return PlacementGroupSchedulingStrategy(pg, index, capture)


@purerun.remote
def current_group():
    pg = get_current_placement_group()
    return None if pg is None else pg.id.hex()


@purerun.remote(num_cpus=0)
def child_group():
    return purerun.get(current_group.options(num_cpus=0).remote())


@purerun.remote
def hang_once(path):
    import time
    open(path, "w").close()
    time.sleep(120)


@purerun.remote(num_cpus=0)
class Where:
    def group(self):
        pg = get_current_placement_group()
        return None if pg is None else pg.id.hex()


# -- arguments: checked in the caller, with Ray's errors ----------------------------------------

@pytest.mark.parametrize("args, error, match", [
    (([],), ValueError, "cannot contain an empty list"),
    (([{}],), ValueError, "only 0 values"),
    (([{"CPU": 0}],), ValueError, "only 0 values"),
    (([{"CPU": -1}],), ValueError, "negative"),
    (({"CPU": 1},), ValueError, "must be list"),
    (([{"CPU": 1}], "TIGHT"), ValueError, "Invalid placement group strategy"),
])
def test_bad_arguments_raise_in_the_caller(args, error, match):
    with pytest.raises(error, match=match):
        placement_group(*args)


def test_bad_lifetime_and_bundle_label_selector_are_refused():
    with pytest.raises(ValueError, match="lifetime"):
        placement_group([{"CPU": 1}], lifetime="forever")
    with pytest.raises(ValueError, match="length of `bundle_label_selector`"):
        placement_group([{"CPU": 1}], bundle_label_selector=[{"zone": "a"}, {}])
    with pytest.raises(ValueError, match="must not be empty"):
        placement_group([{"CPU": 1}], bundle_label_selector=[{"zone": ""}])


def test_a_strategy_needs_a_placement_group():
    with pytest.raises(TypeError, match="PlacementGroup"):
        PlacementGroupSchedulingStrategy("not a group")
    with pytest.raises(ValueError, match="-1"):
        PlacementGroupSchedulingStrategy(None, -2)


def test_a_strategy_without_a_group_schedules_as_the_default(cluster):
    assert purerun.get(current_group.options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(None)).remote()) is None


# -- creation, readiness, the table -------------------------------------------------------------

def test_ready_returns_the_group_once_its_bundles_are_reserved(cluster):
    pg = placement_group([{"CPU": 1}, {"CPU": 0.5}], strategy="STRICT_PACK", name="two")
    assert isinstance(pg, PlacementGroup)
    assert not pg.id.is_nil() and bytes.fromhex(pg.id.hex()) == pg.id.binary()
    assert pg.bundle_specs == [{"CPU": 1.0}, {"CPU": 0.5}] and pg.bundle_count == 2
    assert purerun.get(pg.ready(), timeout=30) == pg
    ready, _ = purerun.wait([pg.ready()], timeout=30)
    assert len(ready) == 1
    free = purerun.available_resources()
    assert free["CPU"] == 0.5                          # 1.5 of 2 reserved
    total = purerun.cluster_resources()
    assert total["CPU"] == 2 and total[f"CPU_group_0_{pg.id.hex()}"] == 1
    assert free[f"CPU_group_{pg.id.hex()}"] == 1.5
    assert free[f"CPU_group_1_{pg.id.hex()}"] == 0.5
    table = placement_group_table(pg)
    assert table["placement_group_id"] == pg.id.hex() and table["name"] == "two"
    assert table["state"] == "CREATED" and table["strategy"] == "STRICT_PACK"
    assert table["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 0.5}}
    node = purerun.get_runtime_context().get_node_id()
    assert table["bundles_to_node_id"] == {0: node, 1: node}
    assert pg.id.hex() in placement_group_table()
    assert get_placement_group("two") == pg
    with pytest.raises(exceptions.RaySystemError, match="name 'two' already exists"):
        placement_group([{"CPU": 0.5}], name="two")
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    assert purerun.available_resources()["CPU"] == 2
    with pytest.raises(ValueError, match="Failed to look up"):
        get_placement_group("two")


def test_a_group_this_node_cannot_hold_stays_pending_and_warns(cluster, caplog):
    with caplog.at_level(logging.WARNING, logger="purerun"):
        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        assert pg.wait(timeout_seconds=0.3) is False
    assert placement_group_table(pg)["state"] == "PENDING"
    assert "cannot be created yet" in caplog.text
    remove_placement_group(pg)


def test_a_group_waits_for_resources_in_use_and_is_created_when_they_free(cluster, tmp_path):
    flag = str(tmp_path / "started")
    busy = hang_once.options(num_cpus=2).remote(flag)
    wait_for(lambda: os.path.exists(flag), message="the task holding both CPUs started")
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(timeout_seconds=0.3) is False
    purerun.cancel(busy, force=True)
    assert pg.wait(timeout_seconds=30)
    remove_placement_group(pg)


# -- work in a group ------------------------------------------------------------------------------

def test_a_task_runs_in_its_bundle_and_one_too_big_is_refused(group):
    assert purerun.get(current_group.options(
        scheduling_strategy=in_group(group, 0)).remote()) == group.id.hex()
    with pytest.raises(ValueError, match="cannot fit into any bundles"):
        current_group.options(num_cpus=2, scheduling_strategy=in_group(group)).remote()
    with pytest.raises(ValueError, match="bundle index 1 is invalid"):
        current_group.options(scheduling_strategy=in_group(group, 1)).remote()


def test_reserved_resources_serve_only_the_group(group, tmp_path):
    # The free CPU outside the group runs one task; the group's CPU runs another at once.
    outside_flag, inside_flag = str(tmp_path / "outside"), str(tmp_path / "inside")
    outside = hang_once.remote(outside_flag)
    inside = hang_once.options(scheduling_strategy=in_group(group)).remote(inside_flag)
    wait_for(lambda: os.path.exists(outside_flag) and os.path.exists(inside_flag),
             message="both tasks running")
    assert "CPU" not in purerun.available_resources()
    purerun.cancel(outside, force=True)
    purerun.cancel(inside, force=True)


def test_captured_child_tasks_run_in_the_same_group(group):
    hex_id = group.id.hex()
    assert purerun.get(child_group.options(
        scheduling_strategy=in_group(group, capture=True)).remote()) == hex_id
    assert purerun.get(child_group.options(
        scheduling_strategy=in_group(group, capture=False)).remote()) is None
    assert get_current_placement_group() is None     # a driver is in no group


def test_an_actor_lives_in_its_bundle_and_dies_when_the_group_is_removed(cluster):
    pg = placement_group([{"CPU": 1}])
    actor = Where.options(num_cpus=1, scheduling_strategy=in_group(pg, 0, True)).remote()
    assert purerun.get(actor.group.remote(), timeout=30) == pg.id.hex()
    assert purerun.available_resources()["CPU"] == 1
    remove_placement_group(pg)
    with pytest.raises(exceptions.ActorDiedError, match="placement group was removed"):
        purerun.get(actor.group.remote(), timeout=30)
    wait_for(lambda: purerun.available_resources().get("CPU") == 2,
             message="the actor's CPU is free")


def test_removing_a_group_fails_its_waiting_and_running_tasks(cluster, tmp_path):
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)
    flag = str(tmp_path / "running")
    running = hang_once.options(scheduling_strategy=in_group(pg)).remote(flag)
    waiting = current_group.options(scheduling_strategy=in_group(pg)).remote()
    wait_for(lambda: os.path.exists(flag), message="the first task running")
    remove_placement_group(pg)
    for ref in (running, waiting):
        with pytest.raises(exceptions.TaskPlacementGroupRemoved):
            purerun.get(ref, timeout=30)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        purerun.get(current_group.options(scheduling_strategy=in_group(pg)).remote())


def test_the_deprecated_placement_group_option_still_works_with_a_warning(group):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = child_group.options(placement_group=group,
                                  placement_group_capture_child_tasks=True).remote()
    assert purerun.get(ref) == group.id.hex()
    assert any(issubclass(w.category, DeprecationWarning) and "placement_group" in
               str(w.message) for w in caught)


def test_the_runtime_context_names_the_group(group):
    @purerun.remote(num_cpus=0)
    def group_id():
        return purerun.get_runtime_context().get_placement_group_id()

    assert purerun.get(group_id.options(scheduling_strategy=in_group(group)).remote()) \
        == group.id.hex()
    assert purerun.get(group_id.remote()) is None
    assert purerun.get_runtime_context().get_placement_group_id() is None


def test_a_task_waiting_on_its_captured_child_lends_it_the_bundle(group):
    @purerun.remote
    def parent():
        return purerun.get(current_group.remote(), timeout=30)

    # The bundle has 1 CPU: the child runs only on the CPU its blocked parent lends.
    assert purerun.get(parent.options(scheduling_strategy=in_group(group, 0, True)).remote(),
                       timeout=30) == group.id.hex()


def test_a_task_in_a_gpu_bundle_is_given_the_bundle_s_gpu(cluster):
    @purerun.remote(num_cpus=0, num_gpus=1)
    def gpus():
        return purerun.get_gpu_ids()

    pg = placement_group([{"GPU": 1}])
    assert pg.wait(30)
    inside = purerun.get(gpus.options(scheduling_strategy=in_group(pg, 0)).remote())
    outside = purerun.get(gpus.remote())
    assert len(inside) == 1 and len(outside) == 1 and inside != outside
    remove_placement_group(pg)


def test_the_placement_group_functions_are_reachable_from_purerun_util_as_in_ray():
    import importlib

    import purerun.util
    importlib.import_module("purerun.util.placement_group")   # the module of the same name
    from purerun.util.placement_group import PlacementGroup
    assert callable(purerun.util.placement_group)
    for name in ("placement_group_table", "remove_placement_group", "get_placement_group",
                 "get_current_placement_group"):
        assert callable(getattr(purerun.util, name)), name
    assert PlacementGroup.__module__ == "purerun.util.placement_group"
