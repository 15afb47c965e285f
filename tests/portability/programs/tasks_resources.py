"""Custom resources: tasks wait until the resource they ask for is free."""

import ray


@ray.remote(resources={"disk": 1})
def uses_disk(i):
    return ray.get_runtime_context().get_assigned_resources()


@ray.remote
class Holder:
    def ping(self):
        return "pong"


def main():
    ray.init(num_cpus=2, resources={"disk": 2, "license": 1})
    total = ray.cluster_resources()
    print("cluster:", {k: total[k] for k in ("CPU", "disk", "license")})
    print("assigned:", sorted(ray.get(uses_disk.remote(0)).items()))
    print("all ran:", len(ray.get([uses_disk.remote(i) for i in range(6)])))
    holder = Holder.options(resources={"license": 1}, num_cpus=0).remote()
    print("actor with license:", ray.get(holder.ping.remote()))
    # The actor holds the only license for as long as it lives.
    blocked = uses_disk.options(resources={"license": 1}).remote(0)
    ready, _ = ray.wait([blocked], timeout=0.5)
    print("second license holder runs while the actor lives:", bool(ready))
    ray.kill(holder)
    print("runs once the actor is gone:", sorted(ray.get(blocked).items()))
    infeasible = uses_disk.options(resources={"disk": 5}).remote(0)
    ready, _ = ray.wait([infeasible], timeout=0.5)
    print("infeasible task is not ready:", not ready)
    ray.cancel(infeasible)
    ray.shutdown()


if __name__ == "__main__":
    main()
