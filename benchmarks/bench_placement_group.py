"""pytest-benchmark rows for placement groups on one node: a group's whole life (create,
ready, remove, as ray_perf's placement group row), and a task in a bundle next to a plain
task (what scheduling into a group costs).

Run: python -m pytest benchmarks/bench_placement_group.py --benchmark-only
"""

import purerun
from purerun.util.placement_group import placement_group, remove_placement_group
from purerun.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@purerun.remote
def small_value():
    return b"ok"


def test_placement_group_create_ready_remove(benchmark, cluster):
    def life():
        pg = placement_group([{"CPU": 1}])
        pg.wait(timeout_seconds=30)
        remove_placement_group(pg)

    benchmark(life)


def test_task_sync_in_a_bundle(benchmark, cluster):
    pg = placement_group([{"CPU": 1}])
    pg.wait(timeout_seconds=30)
    in_group = small_value.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0))
    benchmark(lambda: purerun.get(in_group.remote()))
    remove_placement_group(pg)


def test_task_sync_plain(benchmark, cluster):
    benchmark(lambda: purerun.get(small_value.remote()))


def test_tasks_async_1000_in_a_bundle(benchmark, cluster):
    pg = placement_group([{"CPU": 2}])
    pg.wait(timeout_seconds=30)
    in_group = small_value.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg))
    benchmark.pedantic(lambda: purerun.get([in_group.remote() for _ in range(1000)]),
                       rounds=5, warmup_rounds=1)
    remove_placement_group(pg)
