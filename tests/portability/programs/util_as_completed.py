"""ray.util.as_completed and ray.util.map_unordered."""

import ray
from ray.util import as_completed, map_unordered


@ray.remote
def square(x):
    return x * x


def main():
    ray.init(num_cpus=2)
    refs = [square.remote(i) for i in range(10)]
    print("as_completed:", sorted(as_completed(refs)))
    print("chunk_size=3:", sorted(as_completed(refs, chunk_size=3)))
    print("yield_obj_refs:", sorted(ray.get(list(as_completed(refs, yield_obj_refs=True)))))
    print("map_unordered:", sorted(map_unordered(square, range(6))))
    print("backpressure_size=2:", sorted(map_unordered(square, range(6), backpressure_size=2)))
    try:
        list(as_completed(refs, chunk_size=0))
    except ValueError:
        print("chunk_size=0: ValueError")
    ray.shutdown()


if __name__ == "__main__":
    main()
