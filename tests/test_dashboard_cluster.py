"""The status page's snapshot of a two-node cluster: both nodes listed, and every task
counted once, by the node that ran it, wherever it was submitted."""

import purerun
from purerun.core import context, dashboard

from helpers import wait_for


@purerun.remote(num_cpus=1, scheduling_strategy="SPREAD")
def spread_for_the_status_page():
    return purerun.get_runtime_context().get_node_id()


def test_a_cluster_snapshot_counts_each_task_once_and_lists_both_nodes(two_nodes):
    ran_on = purerun.get([spread_for_the_status_page.remote() for _ in range(6)])
    assert len(set(ran_on)) == 2   # both nodes ran some: forwarded ones among them
    source = dashboard.NodeSource(context.client.info["address"])
    try:
        def listed():
            snap = source.snapshot()
            return snap if len([n for n in snap["nodes"] if n["alive"]]) == 2 else None
        snap = wait_for(listed, timeout=20, interval=0.1, message="both nodes listed")
        [counts] = [f["states"] for f in snap["tasks"]["by_function"]
                    if f["name"] == "spread_for_the_status_page"]
        assert counts == {"FINISHED": 6}
        shown = [t for t in snap["tasks"]["recent"]
                 if t["name"] == "spread_for_the_status_page"]
        assert {t["node_id"] for t in shown} == set(ran_on)
        this, other = sorted(snap["nodes"], key=lambda n: not n["this_node"])
        assert this["object_store_capacity"] > 0 and other["object_store_capacity"] is None
        assert this["resources"]["CPU"]["total"] == other["resources"]["CPU"]["total"] == 1
    finally:
        source.close()
