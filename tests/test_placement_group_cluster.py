"""Placement groups across the nodes of a cluster (real processes, cluster_utils.Cluster):
bundles on distinct nodes, a group waiting for a node to join, bundles of a dead node placed
again, and a detached group outliving its driver.
"""

import subprocess
import sys

import pytest

import purerun
from cluster_common import Counter, alive, node_of
from helpers import wait_for
from purerun.util.placement_group import (placement_group, placement_group_table,
                                          remove_placement_group)
from purerun.util.scheduling_strategies import PlacementGroupSchedulingStrategy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster(two_nodes):
    return two_nodes


def bundle(pg, index):
    return PlacementGroupSchedulingStrategy(pg, index)


def test_strict_spread_puts_each_bundle_on_its_own_node_and_work_follows_its_bundle(cluster):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(timeout_seconds=30)
    where = placement_group_table(pg)["bundles_to_node_id"]
    assert set(where.values()) == {cluster.head_node.node_id, cluster.second.node_id}
    for index in (0, 1):
        assert purerun.get(node_of.options(scheduling_strategy=bundle(pg, index)).remote(),
                           timeout=30) == where[index]
    wait_for(lambda: "CPU" not in purerun.available_resources(), timeout=10,
             message="both CPUs reserved (as the nodes' heartbeats report)")
    remove_placement_group(pg)
    wait_for(lambda: purerun.available_resources().get("CPU") == 2, timeout=10,
             message="both CPUs free again (the nodes' heartbeats report it)")


def test_an_actor_in_a_bundle_on_another_node_dies_with_its_group(cluster):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(timeout_seconds=30)
    where = placement_group_table(pg)["bundles_to_node_id"]
    index = next(i for i, node in where.items() if node == cluster.second.node_id)
    counter = Counter.options(num_cpus=1, scheduling_strategy=bundle(pg, index)).remote()
    assert purerun.get(counter.node.remote(), timeout=30) == cluster.second.node_id
    remove_placement_group(pg)
    with pytest.raises(purerun.exceptions.ActorDiedError):
        purerun.get(counter.add.remote(), timeout=30)
    wait_for(lambda: purerun.available_resources().get("CPU") == 2, timeout=10,
             message="both CPUs free again")


def test_a_group_waits_for_a_node_to_join_and_its_bundles_move_when_a_node_dies(cluster):
    # Only the third node offers "spot": the group waits for it, pending.
    pg = placement_group([{"CPU": 0.5, "spot": 1}], strategy="PACK")
    assert pg.wait(timeout_seconds=0.3) is False
    third = cluster.add_node(num_cpus=1, resources={"spot": 1})
    cluster.wait_for_nodes()
    assert pg.wait(timeout_seconds=30)
    assert placement_group_table(pg)["bundles_to_node_id"] == {0: third.node_id}
    assert purerun.get(node_of.options(num_cpus=0.5, scheduling_strategy=bundle(pg, 0))
                       .remote(), timeout=30) == third.node_id
    # That node dies: the bundle has nowhere to go until another node with "spot" joins.
    cluster.remove_node(third, allow_graceful=False)
    wait_for(lambda: not alive(third.node_id), timeout=15, message="the node declared dead")
    assert placement_group_table(pg)["state"] == "RESCHEDULING"
    fourth = cluster.add_node(num_cpus=1, resources={"spot": 1})
    cluster.wait_for_nodes()
    assert pg.wait(timeout_seconds=30)
    assert placement_group_table(pg)["bundles_to_node_id"] == {0: fourth.node_id}
    assert purerun.get(node_of.options(num_cpus=0.5, scheduling_strategy=bundle(pg, 0))
                       .remote(), timeout=30) == fourth.node_id
    remove_placement_group(pg)
    cluster.remove_node(fourth)


DRIVER = """
import sys, purerun
from purerun.util.placement_group import placement_group
purerun.init(address=sys.argv[1])
for name, lifetime in (("kept", "detached"), ("dropped", None)):
    assert placement_group([{"CPU": 0.25}], name=name, lifetime=lifetime).wait(30)
"""


def test_a_detached_group_outlives_its_driver_and_the_others_go_with_it(cluster):
    out = subprocess.run([sys.executable, "-c", DRIVER, cluster.second.address],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    def states():
        return {t["name"]: t["state"] for t in placement_group_table().values() if t["name"]}

    wait_for(lambda: states().get("dropped") == "REMOVED", timeout=10,
             message="the driver's own group removed with it")
    assert states()["kept"] == "CREATED"
    from purerun.util.placement_group import PlacementGroup
    kept = next(t for t in placement_group_table().values() if t["name"] == "kept")
    remove_placement_group(PlacementGroup(bytes.fromhex(kept["placement_group_id"])))
    assert states()["kept"] == "REMOVED"
