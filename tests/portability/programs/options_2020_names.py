"""Option names from Ray 2020 (num_return_vals, max_reconstructions) still work.

# portability: purerun-only, Ray 2.x rejects the 2020 option names num_return_vals and max_reconstructions
"""

import ray


@ray.remote(num_return_vals=2)
def pair():
    return 1, 2


@ray.remote(max_reconstructions=1)
class Actor:
    def ping(self):
        return "pong"


def main():
    ray.init(num_cpus=2)
    a, b = pair.remote()
    print("num_return_vals=2:", ray.get([a, b]))
    print("max_reconstructions:", ray.get(Actor.remote().ping.remote()))
    ray.shutdown()


if __name__ == "__main__":
    main()
