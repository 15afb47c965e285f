"""Actors keep state; one caller's calls run in order; handles travel to tasks."""

import ray


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.value = start
        self.log = []

    def add(self, amount=1):
        self.value += amount
        self.log.append(amount)
        return self.value

    def history(self):
        return self.log

    @ray.method(num_returns=2)
    def pair(self):
        return self.value, -self.value


@ray.remote
def bump(counter, times):
    return ray.get([counter.add.remote() for _ in range(times)])[-1]


def main():
    ray.init(num_cpus=2)
    counter = Counter.remote(100)
    refs = [counter.add.remote(i) for i in range(10)]
    print("in order:", ray.get(refs))
    print("history:", ray.get(counter.history.remote()))
    a, b = counter.pair.remote()
    print("method num_returns=2:", ray.get([a, b]))
    print("handle passed to tasks:", sorted(ray.get([bump.remote(counter, 5) for _ in range(3)]))[-1])
    print("final:", ray.get(counter.add.remote(0)))
    other = Counter.options(num_cpus=0).remote()
    print("independent instances:", ray.get(other.add.remote(1)), ray.get(counter.add.remote(0)))
    print("handle type:", type(counter).__name__)
    try:
        Counter()
    except TypeError as e:
        print("instantiating directly: TypeError:", ".remote()" in str(e))
    try:
        counter.no_such_method
    except AttributeError:
        print("unknown method: AttributeError")
    ray.shutdown()


if __name__ == "__main__":
    main()
