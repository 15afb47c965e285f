"""local_mode=True: everything runs serially in the driver, for debugging.

# portability: purerun-only, Ray 2.x removed local_mode (ray.init(local_mode=True) raises RuntimeError)
"""

import os

import ray


@ray.remote
def pid():
    return os.getpid()


@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n


@ray.remote
def fail():
    raise KeyError("k")


def main():
    ray.init(local_mode=True)
    print("task runs in the driver:", ray.get(pid.remote()) == os.getpid())
    counter = Counter.remote()
    print("actor:", ray.get([counter.add.remote() for _ in range(3)]))
    print("put/get:", ray.get(ray.put([1, 2])))
    try:
        ray.get(fail.remote())
    except KeyError as e:
        print("error:", type(e.cause).__name__)
    ray.shutdown()


if __name__ == "__main__":
    main()
