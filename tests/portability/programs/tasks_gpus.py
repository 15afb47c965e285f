"""GPUs as a resource: get_gpu_ids() and CUDA_VISIBLE_DEVICES per task (no GPU needed)."""

import os

import ray


@ray.remote(num_gpus=1)
def one_gpu():
    return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@ray.remote(num_gpus=0.5)
def half_gpu():
    return len(ray.get_gpu_ids())


@ray.remote
def no_gpu():
    return ray.get_gpu_ids()


def main():
    ray.init(num_cpus=2, num_gpus=2)
    print("GPUs:", ray.cluster_resources()["GPU"])
    ids, visible = ray.get(one_gpu.remote())
    print("one GPU:", len(ids), visible == ",".join(str(i) for i in ids))
    print("two GPUs:", sorted(len(r[0]) for r in ray.get([one_gpu.options(num_gpus=2).remote()])))
    print("half a GPU:", ray.get([half_gpu.remote() for _ in range(2)]))
    print("no GPU asked:", ray.get(no_gpu.remote()))
    print("driver:", ray.get_gpu_ids())
    ray.shutdown()


if __name__ == "__main__":
    main()
