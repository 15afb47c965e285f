"""Scheduling strategies: DEFAULT, SPREAD, node affinity (hard and soft)."""

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote
def node():
    return ray.get_runtime_context().get_node_id()


def main():
    ray.init(num_cpus=2)
    here = ray.get_runtime_context().get_node_id()
    print("node id is a hex str:", all(c in "0123456789abcdef" for c in here))
    for strategy in ("DEFAULT", "SPREAD"):
        print(strategy, set(ray.get([node.options(scheduling_strategy=strategy).remote()
                                     for _ in range(3)])) == {here})
    hard = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    print("affinity:", ray.get(node.options(scheduling_strategy=hard).remote()) == here)
    missing = "ab" * 28
    soft = NodeAffinitySchedulingStrategy(node_id=missing, soft=True)
    print("soft affinity to a missing node runs anyway:",
          ray.get(node.options(scheduling_strategy=soft).remote()) == here)
    strict = node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(missing, soft=False))
    try:
        ray.get(strict.remote(), timeout=30)
    except ray.exceptions.TaskUnschedulableError as e:
        print("hard affinity to a missing node:", type(e).__name__)
    try:
        node.options(scheduling_strategy="NEAREST").remote()
    except ValueError:
        print("unknown strategy: ValueError")
    ray.shutdown()


if __name__ == "__main__":
    main()
