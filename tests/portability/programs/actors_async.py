"""Async actors: coroutines interleave on one loop; max_concurrency bounds them."""

import asyncio

import ray


@ray.remote
class Rendezvous:
    def __init__(self, parties):
        self.parties = parties
        self.arrived = 0
        self.event = asyncio.Event()

    async def arrive(self, i):
        self.arrived += 1
        if self.arrived == self.parties:
            self.event.set()
        await self.event.wait()      # returns only if all calls run at the same time
        return i

    async def nested(self, ref_list):
        return sum(await asyncio.gather(*ref_list))


@ray.remote
class Limited:
    def __init__(self):
        self.running = 0
        self.peak = 0

    async def work(self):
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.05)
        self.running -= 1

    def get_peak(self):
        return self.peak


@ray.remote
def value(x):
    return x


async def driver_side():
    refs = [value.remote(i) for i in range(3)]
    return await asyncio.gather(*refs)


def main():
    ray.init(num_cpus=2)
    actor = Rendezvous.remote(5)
    print("5 calls met:", sorted(ray.get([actor.arrive.remote(i) for i in range(5)])))
    print("await refs in an actor:", ray.get(actor.nested.remote([value.remote(i) for i in range(4)])))
    limited = Limited.options(max_concurrency=2).remote()
    ray.get([limited.work.remote() for _ in range(6)])
    print("peak with max_concurrency=2:", ray.get(limited.get_peak.remote()))
    print("await refs in the driver:", asyncio.run(driver_side()))
    print("future():", value.remote(7).future().result(timeout=30))
    ray.shutdown()


if __name__ == "__main__":
    main()
