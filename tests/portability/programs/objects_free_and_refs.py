"""ObjectRef behaviour: hex ids, equality and hashing, refs in sets and dicts."""

import ray


@ray.remote
def identity(x):
    return x


def main():
    ray.init(num_cpus=2)
    ref = ray.put("value")
    print("hex is a hex str:", all(c in "0123456789abcdef" for c in ref.hex()))
    same = ray.get(identity.remote([ref]))[0]
    print("ref after a round trip is equal:", same == ref, hash(same) == hash(ref))
    print("usable as a dict key:", {ref: 1}[same])
    print("distinct refs differ:", ray.put("value") != ref)
    print("task_id():", ref.task_id() is not None)
    print("get returns the value:", ray.get(same))
    print("repr mentions ObjectRef:", repr(ref).startswith("ObjectRef("))
    ray.shutdown()


if __name__ == "__main__":
    main()
