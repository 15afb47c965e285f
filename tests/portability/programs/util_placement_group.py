"""Placement groups: reserve bundles, run tasks and actors in them, remove them."""

import ray
from ray.util.placement_group import (get_current_placement_group, placement_group,
                                      placement_group_table, remove_placement_group)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@ray.remote(num_cpus=1)
def inside():
    pg = get_current_placement_group()
    return pg is not None


@ray.remote(num_cpus=1)
class InGroup:
    def where(self):
        return get_current_placement_group() is not None


def main():
    ray.init(num_cpus=2)
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK", name="pair")
    print("ready:", ray.get(pg.ready(), timeout=60) == pg)
    print("wait:", pg.wait(timeout_seconds=30))
    print("bundles:", pg.bundle_count, pg.bundle_specs)
    print("state:", placement_group_table(pg)["state"], placement_group_table(pg)["strategy"])
    print("CPU left outside the group:", ray.available_resources().get("CPU", 0.0))
    strategy = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=0)
    print("task in bundle 0:", ray.get(inside.options(scheduling_strategy=strategy).remote()))
    print("task in the driver has no group:", get_current_placement_group() is None)
    actor = InGroup.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote()
    print("actor in bundle 1:", ray.get(actor.where.remote()))
    ray.kill(actor)
    print("by name:", ray.util.get_placement_group("pair").id == pg.id)
    too_big = placement_group([{"CPU": 4}])
    print("infeasible group not ready:", not too_big.wait(timeout_seconds=0.5))
    remove_placement_group(too_big)
    remove_placement_group(pg)
    print("removed:", placement_group_table(pg)["state"])
    for bad in (lambda: placement_group([]), lambda: placement_group([{"CPU": 1}], strategy="X")):
        try:
            bad()
        except ValueError:
            print("bad placement group: ValueError")
    ray.shutdown()


if __name__ == "__main__":
    main()
