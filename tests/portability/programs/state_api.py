"""ray.util.state: list actors, tasks and nodes, with filters.

The state API lists what the cluster has recorded, which may trail the calls that made
it by a moment: the program waits for what it expects, with a deadline. It names its own
cluster's state server (the dashboard address init returned, where there is one): Ray's
state API otherwise looks for every Ray cluster on the host, and refuses when it finds
more than one.

# portability: ray-needs aiohttp, Ray's state API needs ray[default] (its dashboard serves it)
"""

import functools
import time

import ray
from ray.util import state


@ray.remote
class Alpha:
    def ping(self):
        return 1


@ray.remote
def marked_task():
    return 1


def wait_until(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def main():
    context = ray.init(num_cpus=2)
    address = f"http://{context.dashboard_url}" if context.dashboard_url else None
    list_actors = functools.partial(state.list_actors, address=address)
    list_tasks = functools.partial(state.list_tasks, address=address)
    list_nodes = functools.partial(state.list_nodes, address=address)
    actors = [Alpha.options(name=f"alpha-{i}").remote() for i in range(2)]
    ray.get([a.ping.remote() for a in actors])
    ray.get([marked_task.remote() for _ in range(3)])
    alive = wait_until(lambda: [a for a in list_actors(filters=[("state", "=", "ALIVE")])
                                if a.class_name == "Alpha"], "2 alive actors")
    print("alive actors:", sorted((a.class_name, a.name, a.state) for a in alive))
    done = wait_until(lambda: [t for t in list_tasks(filters=[("name", "=", "marked_task")])
                               if t.state == "FINISHED"][2:] and
                      list_tasks(filters=[("name", "=", "marked_task")]), "3 finished tasks")
    print("tasks:", sorted((t.name, t.state, t.type) for t in done))
    ray.kill(actors[0])
    dead = wait_until(lambda: list_actors(filters=[("state", "=", "DEAD")]), "a dead actor")
    print("dead actors:", sorted(a.name for a in dead))
    print("not dead:", sorted(a["name"] for a in list_actors(filters=[("state", "!=", "DEAD")])))
    nodes = list_nodes()
    print("nodes:", len(nodes), [n.state for n in nodes], [n.is_head_node for n in nodes])
    print("limit=1:", len(list_tasks(limit=1)))
    ray.shutdown()


if __name__ == "__main__":
    main()
