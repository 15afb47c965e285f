"""Task options: num_returns (decorator and .options), name, num_cpus, fractional CPUs."""

import ray


@ray.remote(num_returns=2)
def split(x):
    return x, -x


@ray.remote
def three(x):
    return x, x + 1, x + 2


@ray.remote(num_cpus=0.5)
def half(x):
    return ray.get_runtime_context().get_assigned_resources().get("CPU"), x


@ray.remote
def one():
    return 1


def main():
    ray.init(num_cpus=2)
    a, b = split.remote(5)
    print("num_returns=2:", ray.get(a), ray.get(b))
    refs = three.options(num_returns=3).remote(1)
    print("options(num_returns=3):", len(refs), ray.get(list(refs)))
    print("num_returns=1 returns one ref:", type(three.remote(1)).__name__)
    print("num_returns=0:", three.options(num_returns=0).remote(1))
    print("fractional CPU:", sorted(ray.get([half.remote(i) for i in range(4)])))
    print("options(num_cpus=2):", ray.get(one.options(num_cpus=2).remote()))
    print("options(name=...):", ray.get(one.options(name="custom-name").remote()))
    for bad in ({"num_returns": -1}, {"num_cpus": -1}, {"max_retries": -2}):
        try:
            one.options(**bad).remote()
            print(sorted(bad), "accepted")
        except ValueError:
            print(sorted(bad), "ValueError")
    try:
        one.options(no_such_option=1)
    except ValueError:
        print("unknown option: ValueError")
    ray.shutdown()


if __name__ == "__main__":
    main()
