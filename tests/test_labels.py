"""Label scheduling with real processes: ``init(labels=...)`` and ``purerun start --labels``
reach the node table, ``label_selector`` and ``NodeLabelSchedulingStrategy`` run work on the
nodes whose labels match, and work no node matches waits (Ray keeps it pending) until one
joins. The rules are tested event by event in test_placement_group_rules.py.
"""

import logging

import pytest

import purerun
from cluster_common import Counter, node_of
from helpers import wait_for
from purerun import exceptions
from purerun.cluster_utils import Cluster
from purerun.util.scheduling_strategies import (DoesNotExist, Exists, In,
                                                NodeLabelSchedulingStrategy, NotIn)

pytestmark = pytest.mark.timeout(90)


def labels(hard, soft=None):
    return NodeLabelSchedulingStrategy(hard, soft=soft)


# -- arguments ---------------------------------------------------------------------------------

def test_bad_label_expressions_raise_in_the_caller():
    with pytest.raises(ValueError, match="non-empty tuple"):
        In()
    with pytest.raises(ValueError, match="must be str"):
        NotIn("a", 1)
    with pytest.raises(ValueError, match="cannot both be empty"):
        NodeLabelSchedulingStrategy({})
    with pytest.raises(ValueError, match="In, NotIn, Exists or DoesNotExist"):
        NodeLabelSchedulingStrategy({"zone": "a"})
    with pytest.raises(ValueError, match="label selector"):
        node_of.options(label_selector={"zone": "in(a"})
    with pytest.raises(TypeError, match="label_selector"):
        node_of.options(label_selector={"zone": 1})
    with pytest.raises(TypeError, match="labels"):
        purerun.init(labels={"zone": 1})
    assert not purerun.is_initialized()


# -- one node ----------------------------------------------------------------------------------

def test_one_node_runs_what_its_labels_match_and_keeps_the_rest_pending(caplog):
    purerun.init(num_cpus=1, labels={"zone": "a"})
    try:
        [node] = purerun.nodes()
        me = node["NodeID"]
        assert node["Labels"] == {"zone": "a", "ray.io/node-id": me}
        for strategy in (labels({"zone": In("a", "b")}), labels({"zone": Exists()}),
                         labels({"gpu": DoesNotExist()}), labels({"zone": NotIn("b")})):
            assert purerun.get(node_of.options(scheduling_strategy=strategy).remote(),
                               timeout=30) == me
        for selector in ({"zone": "a"}, {"zone": "in(a,b)"}, {"zone": "!b"},
                         {"ray.io/node-id": me}):
            assert purerun.get(node_of.options(label_selector=selector).remote(),
                               timeout=30) == me
        with caplog.at_level(logging.WARNING, logger="purerun"):
            stuck = node_of.options(label_selector={"zone": "!in(a)"}).remote()
            assert purerun.wait([stuck], timeout=0.3) == ([], [stuck])
        wait_for(lambda: "no node has labels that match" in caplog.text,
                 message="the pending warning")
        purerun.cancel(stuck)
        with pytest.raises(exceptions.TaskCancelledError):
            purerun.get(stuck, timeout=30)
    finally:
        purerun.shutdown()


# -- a cluster ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """A head node without labels and a second node labelled zone=west."""
    c = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    c.west = c.add_node(num_cpus=1, labels={"zone": "west"})
    c.wait_for_nodes()
    yield c
    c.shutdown()


def test_labels_of_every_node_are_in_the_node_table(cluster):
    by_id = {n["NodeID"]: n["Labels"] for n in purerun.nodes() if n["Alive"]}
    assert by_id[cluster.west.node_id]["zone"] == "west"
    assert "zone" not in by_id[cluster.head_node.node_id]


def test_work_goes_to_the_node_whose_labels_match(cluster):
    west, head = cluster.west.node_id, cluster.head_node.node_id
    assert purerun.get(node_of.options(label_selector={"zone": "west"}).remote(),
                       timeout=30) == west
    assert purerun.get(node_of.options(label_selector={"zone": "!west"}).remote(),
                       timeout=30) == head
    assert purerun.get(node_of.options(label_selector={"ray.io/node-id": head}).remote(),
                       timeout=30) == head
    assert purerun.get(node_of.options(
        scheduling_strategy=labels({"zone": DoesNotExist()})).remote(), timeout=30) == head
    # Soft expressions prefer a node; hard ones decide.
    assert purerun.get(node_of.options(scheduling_strategy=labels(
        {}, soft={"zone": In("west")})).remote(), timeout=30) == west
    counter = Counter.options(scheduling_strategy=labels({"zone": In("west")})).remote()
    assert purerun.get(counter.node.remote(), timeout=30) == west
    purerun.kill(counter)


def test_work_no_node_matches_waits_until_a_node_that_matches_joins(cluster):
    waiting = node_of.options(label_selector={"zone": "east"}).remote()
    assert purerun.wait([waiting], timeout=0.3) == ([], [waiting])
    east = cluster.add_node(num_cpus=1, labels={"zone": "east"})
    try:
        assert purerun.get(waiting, timeout=30) == east.node_id
    finally:
        cluster.remove_node(east)


def test_a_bundle_label_selector_places_the_bundle_on_a_matching_node(cluster):
    from purerun.util.placement_group import (placement_group, placement_group_table,
                                              remove_placement_group)
    from purerun.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    pg = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="PACK",
                         bundle_label_selector=[{"zone": "west"}, {"zone": "!west"}])
    assert pg.wait(timeout_seconds=30)
    assert placement_group_table(pg)["bundles_to_node_id"] == {
        0: cluster.west.node_id, 1: cluster.head_node.node_id}
    assert purerun.get(node_of.options(num_cpus=0.5, scheduling_strategy=(
        PlacementGroupSchedulingStrategy(pg, 0))).remote(), timeout=30) == cluster.west.node_id
    remove_placement_group(pg)
