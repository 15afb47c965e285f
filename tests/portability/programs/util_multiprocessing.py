"""ray.util.multiprocessing.Pool: the standard library Pool API on Ray workers."""

import ray
from ray.util.multiprocessing import Pool


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail(x):
    raise KeyError(x)


def main():
    ray.init(num_cpus=2)
    with Pool(processes=2) as pool:
        print("map:", pool.map(square, range(8)))
        print("starmap:", pool.starmap(add, [(1, 2), (3, 4)]))
        print("apply:", pool.apply(add, (5, 6)))
        result = pool.apply_async(square, (9,))
        print("apply_async:", result.get(timeout=30), result.ready(), result.successful())
        print("map_async:", pool.map_async(square, [1, 2, 3]).get(timeout=30))
        print("imap:", list(pool.imap(square, range(5))))
        print("imap_unordered:", sorted(pool.imap_unordered(square, range(5))))
        print("chunksize:", pool.map(square, range(10), chunksize=3))
        try:
            pool.apply(fail, ("k",))
        except KeyError as e:
            print("error in a worker:", type(e).__name__)
        failed = pool.apply_async(fail, ("k",))
        failed.wait(timeout=30)
        print("successful() after an error:", failed.successful())
    ray.shutdown()


if __name__ == "__main__":
    main()
