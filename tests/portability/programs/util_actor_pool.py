"""ray.util.ActorPool: ordered and unordered map, submit/get_next, idle actors."""

import ray
from ray.util import ActorPool


@ray.remote(num_cpus=0)
class Doubler:
    def double(self, x):
        return 2 * x


def main():
    ray.init(num_cpus=2)
    actors = [Doubler.remote() for _ in range(2)]
    pool = ActorPool(actors)
    print("map:", list(pool.map(lambda a, v: a.double.remote(v), range(6))))
    print("map_unordered:", sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(6))))
    pool.submit(lambda a, v: a.double.remote(v), 10)
    pool.submit(lambda a, v: a.double.remote(v), 20)
    print("has_free while both busy:", pool.has_free())
    print("submit/get_next:", pool.get_next(), pool.get_next())
    print("has_next when drained:", pool.has_next())
    try:
        pool.get_next()
    except StopIteration:
        print("get_next with nothing pending: StopIteration")
    idle = pool.pop_idle()
    print("pop_idle gives an actor:", ray.get(idle.double.remote(1)))
    try:
        pool.push(actors[0] if idle is actors[1] else actors[1])
    except ValueError:
        print("push of a pool member: ValueError")
    pool.push(idle)
    pool.submit(lambda a, v: a.double.remote(v), 3)
    print("get_next_unordered:", pool.get_next_unordered(timeout=30))
    ray.shutdown()


if __name__ == "__main__":
    main()
