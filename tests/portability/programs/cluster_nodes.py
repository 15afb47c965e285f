"""A multi-node cluster on one machine: custom resources pin work to nodes, nodes leave."""

import ray
from ray.cluster_utils import Cluster


@ray.remote
def where():
    return ray.get_runtime_context().get_node_id()


@ray.remote(max_retries=2)
def tagged():
    return sorted(k for k in ray.get_runtime_context().get_assigned_resources())


def main():
    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    try:
        worker_node = cluster.add_node(num_cpus=1, resources={"worker": 1})
        cluster.wait_for_nodes()
        alive = [n for n in ray.nodes() if n["Alive"]]
        print("nodes:", len(alive), "CPUs:", ray.cluster_resources()["CPU"])
        print("resources:", sorted(k for k in ray.cluster_resources()
                                   if k in ("CPU", "head", "worker")))
        on_head = ray.get(where.options(resources={"head": 1}).remote())
        on_worker = ray.get(where.options(resources={"worker": 1}).remote())
        print("two different nodes:", on_head != on_worker)
        print("driver is on the head:", on_head == ray.get_runtime_context().get_node_id())
        print("worker node's id:", on_worker == worker_node.node_id)
        print("assigned:", ray.get(tagged.options(resources={"worker": 1}).remote()))
        cluster.remove_node(worker_node)
        cluster.wait_for_nodes()
        left = [n for n in ray.nodes() if n["Alive"]]
        print("after remove_node:", len(left))
        extra = cluster.add_node(num_cpus=1, resources={"worker": 1})
        cluster.wait_for_nodes()
        print("replacement node runs pinned work:",
              ray.get(where.options(resources={"worker": 1}).remote()) == extra.node_id)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
