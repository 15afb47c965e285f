"""Objects across nodes: an array made on one node is read on another; actors on each."""

import numpy as np

import ray
from ray.cluster_utils import Cluster


@ray.remote(resources={"left": 1})
def make(n):
    return np.arange(n, dtype=np.int64)


@ray.remote(resources={"right": 1})
def total(array):
    return int(array.sum()), array.flags.writeable


@ray.remote(resources={"right": 1})
class Holder:
    def __init__(self, array):
        self.array = array

    def size(self):
        return int(self.array.size)


def main():
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1, resources={"left": 1})
        cluster.add_node(num_cpus=1, resources={"right": 1})
        cluster.wait_for_nodes()
        n = 1_000_000                                   # 8 MB
        made = make.remote(n)
        print("summed on the other node:", ray.get(total.remote(made)), n * (n - 1) // 2)
        print("driver reads it:", int(ray.get(made)[-1]))
        put = ray.put(np.ones(500_000))
        print("driver's put read remotely:", ray.get(total.remote(put)))
        holder = Holder.remote(made)
        print("actor on the other node:", ray.get(holder.size.remote()))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
