"""Large numpy arrays: put once, read zero-copy (read-only) by tasks and the driver."""

import numpy as np

import ray


@ray.remote
def stats(array):
    return int(array.sum()), array.dtype.name, array.shape, array.flags.writeable


@ray.remote
def make(n):
    return np.arange(n, dtype=np.float64)


@ray.remote
def try_write(array):
    try:
        array[0] = 1
        return "written"
    except ValueError:
        return "read-only"


def main():
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024)
    big = np.ones((1000, 2500), dtype=np.int32)           # 10 MB
    ref = ray.put(big)
    print("task sees:", ray.get(stats.remote(ref)))
    out = ray.get(ref)
    print("driver sees: equal", bool((out == big).all()), "writeable", out.flags.writeable)
    print("array is not the original:", out is not big)
    again = ray.get(ref)
    print("two gets share memory:", np.shares_memory(out, again))
    made = ray.get(make.remote(2_000_000))
    print("returned array:", made.shape, float(made[-1]), made.flags.writeable)
    print("write in a task:", ray.get(try_write.remote(ref)))
    copy = out.copy()
    copy[0, 0] = 7
    print("a copy is writeable:", int(copy[0, 0]))
    small = ray.get(ray.put(np.arange(3)))
    print("small array:", small.tolist())
    nested = ray.get(ray.put({"a": np.zeros(300_000), "b": [np.ones(5)]}))
    print("arrays in a dict:", nested["a"].shape, nested["b"][0].tolist())
    ray.shutdown()


if __name__ == "__main__":
    main()
