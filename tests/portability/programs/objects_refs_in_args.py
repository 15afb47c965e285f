"""ObjectRefs as arguments: top-level refs are resolved, refs inside containers are not."""

import ray


@ray.remote
def describe(x):
    return type(x).__name__


@ray.remote
def inner(container):
    return [type(r).__name__ for r in container["refs"]], sum(ray.get(container["refs"]))


@ray.remote
def make():
    return ray.put(41)


@ray.remote
class Keeper:
    def keep(self, value, refs):
        self.value, self.refs = value, refs
        return value

    def deref(self):
        return ray.get(self.refs[0]) + 1


def main():
    ray.init(num_cpus=2)
    ref = ray.put(5)
    print("top-level ref resolved:", ray.get(describe.remote(ref)))
    print("refs in a dict stay refs:", ray.get(inner.remote({"refs": [ray.put(1), ray.put(2)]})))
    print("ref made by a task:", ray.get(ray.get(make.remote())))
    keeper = Keeper.remote()
    print("actor argument resolved:", ray.get(keeper.keep.remote(ref, [ray.put(10)])))
    print("ref kept inside an actor:", ray.get(keeper.deref.remote()))
    print("keyword ref resolved:", ray.get(describe.remote(x=ref)))
    ray.shutdown()


if __name__ == "__main__":
    main()
