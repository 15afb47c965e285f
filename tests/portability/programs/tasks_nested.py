"""Nested tasks: tasks that submit tasks and wait for them, deeper than the CPUs."""

import ray


@ray.remote
def fib(n):
    if n < 2:
        return n
    return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))


@ray.remote
def leaf(x):
    return x * 10


@ray.remote
def fan_out(n):
    return [leaf.remote(i) for i in range(n)]


@ray.remote
def depth(n):
    return 0 if n == 0 else 1 + ray.get(depth.remote(n - 1))


def main():
    ray.init(num_cpus=1)
    print("fib(7):", ray.get(fib.remote(7)))
    refs = ray.get(fan_out.remote(4))
    print("refs made by a task:", ray.get(refs))
    print("depth 8 on one CPU:", ray.get(depth.remote(8)))
    ray.shutdown()


if __name__ == "__main__":
    main()
