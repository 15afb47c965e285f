"""Remote functions: positional and keyword arguments, defaults, refs as arguments, a chain."""

import ray


@ray.remote
def add(a, b=10, *, scale=1):
    return (a + b) * scale


@ray.remote
def total(*values):
    return sum(values)


def main():
    ray.init(num_cpus=2)
    print("defaults:", ray.get(add.remote(1)))
    print("keywords:", ray.get(add.remote(1, b=2, scale=3)))
    print("list:", ray.get([add.remote(i, i) for i in range(5)]))
    first = add.remote(1, 2)
    print("ref as argument:", ray.get(add.remote(first, first)))
    print("varargs:", ray.get(total.remote(*[add.remote(i, 0) for i in range(4)])))
    ref = add.remote(0, 0)
    for _ in range(5):
        ref = add.remote(ref, 1)
    print("chain:", ray.get(ref))
    print("single get type:", type(ray.get(add.remote(2, 2))).__name__)
    try:
        add.remote(1, 2, 3)
    except TypeError as e:
        print("too many arguments: TypeError in the caller:", "positional" in str(e))
    try:
        add(1)
    except TypeError as e:
        print("calling a remote function directly: TypeError:", ".remote(" in str(e))
    ray.shutdown()


if __name__ == "__main__":
    main()
