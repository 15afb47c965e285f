"""runtime_env env_vars: per job, per task and per actor."""

import os

import ray


@ray.remote
def read(name):
    return os.environ.get(name)


@ray.remote
class Reader:
    def read(self, name):
        return os.environ.get(name)


def main():
    ray.init(num_cpus=2, runtime_env={"env_vars": {"JOB_LEVEL": "job"}})
    print("job level:", ray.get(read.remote("JOB_LEVEL")))
    task = read.options(runtime_env={"env_vars": {"TASK_LEVEL": "task"}})
    print("task level:", ray.get(task.remote("TASK_LEVEL")))
    actor = Reader.options(runtime_env={"env_vars": {"ACTOR_LEVEL": "actor"}}).remote()
    print("actor level:", ray.get(actor.read.remote("ACTOR_LEVEL")))
    print("not leaked to other tasks:", ray.get(read.remote("TASK_LEVEL")))
    print("driver unchanged:", os.environ.get("JOB_LEVEL"))
    ray.shutdown()


if __name__ == "__main__":
    main()
