"""max_calls: a worker that has run max_calls tasks of a function is replaced."""

import os

import ray


@ray.remote(max_calls=1)
def pid():
    return os.getpid()


def main():
    ray.init(num_cpus=1)
    pids = [ray.get(pid.remote()) for _ in range(3)]
    print("max_calls=1, one CPU, three calls, distinct workers:", len(set(pids)))
    print("worker is not the driver:", os.getpid() not in pids)
    ray.shutdown()


if __name__ == "__main__":
    main()
