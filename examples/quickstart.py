"""The smallest purerun program: a remote function, an actor, put/get/wait.

Run: python examples/quickstart.py. Change the import to `import ray` and it runs on Ray.
"""

# portability: scrub (?<=first ready: )\d+

import purerun as ray


@ray.remote
def square(x):
    return x * x


@ray.remote
class Counter:
    def __init__(self):
        self.value = 0

    def add(self, amount):
        self.value += amount
        return self.value


def main():
    ray.init()
    squares = ray.get([square.remote(i) for i in range(10)])
    print("squares:", squares)

    counter = Counter.remote()
    for s in squares:
        counter.add.remote(s)
    print("sum via actor:", ray.get(counter.add.remote(0)))

    data = ray.put(list(range(1000)))
    ready, not_ready = ray.wait([square.remote(7), square.remote(8)], num_returns=1)
    print("first ready:", ray.get(ready[0]), "| still pending:", len(not_ready))
    print("length of stored list:", len(ray.get(data)))
    ray.shutdown()


if __name__ == "__main__":
    main()
