"""Ending actors: exit_actor(), __ray_terminate__, and an error in __init__."""

import ray


@ray.remote
class Quitter:
    def ping(self):
        return "pong"

    def quit(self):
        ray.actor.exit_actor()


@ray.remote
class BrokenInit:
    def __init__(self):
        raise ZeroDivisionError("bad start")

    def ping(self):
        return "pong"


def main():
    ray.init(num_cpus=2)
    q = Quitter.remote()
    print(ray.get(q.ping.remote()))
    try:
        ray.get(q.quit.remote())
    except ray.exceptions.RayActorError as e:
        print("exit_actor:", type(e).__name__)
    try:
        ray.get(q.ping.remote())
    except ray.exceptions.RayActorError as e:
        print("after exit_actor:", type(e).__name__)

    t = Quitter.remote()
    print(ray.get(t.ping.remote()))
    t.__ray_terminate__.remote()
    try:
        ray.get(t.ping.remote())
    except ray.exceptions.RayActorError as e:
        print("after __ray_terminate__:", type(e).__name__)

    b = BrokenInit.remote()
    try:
        ray.get(b.ping.remote())
    except ray.exceptions.RayActorError as e:
        print("error in __init__:", type(e).__name__)
    ray.shutdown()


if __name__ == "__main__":
    main()
