"""Concurrency groups: a group's calls are bounded by its size, others are not blocked."""

import asyncio

import ray


@ray.remote(concurrency_groups={"io": 2, "compute": 1})
class Worker:
    def __init__(self):
        # A flag, not an asyncio.Event: each group may run on an event loop of its own.
        self.io_released = False
        self.io_waiting = 0

    @ray.method(concurrency_group="io")
    async def io_wait(self):
        self.io_waiting += 1
        while not self.io_released:
            await asyncio.sleep(0.01)
        return "io done"

    @ray.method(concurrency_group="compute")
    async def compute(self):
        return f"compute ran while {self.io_waiting} io calls wait"

    async def release(self):
        self.io_released = True
        return "released"

    async def waiting(self):
        return self.io_waiting


def main():
    ray.init(num_cpus=2)
    worker = Worker.remote()
    blocked = [worker.io_wait.remote() for _ in range(3)]
    while ray.get(worker.waiting.remote()) < 2:
        pass
    print(ray.get(worker.compute.remote()))
    ready, _ = ray.wait(blocked, timeout=0.3)
    print("io group holds 2, so the third waits; waiting now:", ray.get(worker.waiting.remote()),
          "ready:", len(ready))
    print(ray.get(worker.release.remote()))
    print(ray.get(blocked))
    print("options(concurrency_group=...):",
          ray.get(worker.compute.options(concurrency_group="io").remote())[:11])
    ray.shutdown()


if __name__ == "__main__":
    main()
