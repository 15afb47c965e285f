"""Three nodes on this machine, joined through a head as on three hosts.

The head node has 1 CPU; two more nodes join with 1 CPU each, one of them offering a custom
resource "reader". Tasks spread over all three, a task asking for "reader" runs where it is,
and a 40 MB array made on one node is summed on another: it crosses between the nodes'
arenas over an authenticated TCP connection, never through the head.

Run: python examples/cluster.py. On real hosts the same program connects with
``purerun.init(address="HEAD:6380")`` after ``purerun start --head`` / ``--address`` (see the
README's "Running a cluster"); ``ray.cluster_utils.Cluster`` is the same API on Ray.
"""

# portability: scrub \{'[^}]*\}
# portability: scrub (?<=made on )\w+|(?<=summed on )\w+

import collections

import numpy as np

import purerun as ray
from purerun.cluster_utils import Cluster


@ray.remote
def where():
    return ray.get_runtime_context().get_node_id()[:8]


@ray.remote
def make(n):
    return np.arange(n, dtype=np.int64), ray.get_runtime_context().get_node_id()[:8]


@ray.remote
def total(pair):
    array, made_on = pair
    return int(array.sum()), made_on, ray.get_runtime_context().get_node_id()[:8]


def main():
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1, resources={"reader": 1})
        cluster.wait_for_nodes()
        print("nodes:", len(ray.nodes()), "CPUs:", ray.cluster_resources()["CPU"])

        spread = collections.Counter(ray.get([where.options(scheduling_strategy="SPREAD")
                                              .remote() for _ in range(9)]))
        print("9 SPREAD tasks ran on:", dict(spread))

        pair = make.options(scheduling_strategy="SPREAD").remote(5_000_000)   # 40 MB
        value, made_on, summed_on = ray.get(total.options(resources={"reader": 1}).remote(pair))
        assert value == 5_000_000 * 4_999_999 // 2
        print(f"made on {made_on}, summed on {summed_on}: {value}")
    finally:
        ray.shutdown()          # the driver leaves first: its node is one of the cluster's
        cluster.shutdown()


if __name__ == "__main__":
    main()
