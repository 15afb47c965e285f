"""get_runtime_context() in the driver, a task and an actor."""

import ray


@ray.remote
def in_task():
    ctx = ray.get_runtime_context()
    return (ctx.get_task_id() is not None, ctx.get_actor_id() is None,
            ctx.get_node_id() == ray.get_runtime_context().get_node_id(),
            ctx.get_assigned_resources(), ctx.get_job_id() is not None,
            isinstance(ctx.get_worker_id(), str))


@ray.remote
class Named:
    def info(self):
        ctx = ray.get_runtime_context()
        return (isinstance(ctx.get_actor_id(), str), ctx.get_actor_name(),
                ctx.was_current_actor_reconstructed, ctx.current_actor is not None)


@ray.remote
def task_name():
    return ray.get_runtime_context().get_task_name()


def main():
    ray.init(num_cpus=2, namespace="ctx-demo")
    ctx = ray.get_runtime_context()
    print("driver: namespace", ctx.namespace, "job id str", isinstance(ctx.get_job_id(), str),
          "task id None", ctx.get_task_id() is None, "actor id None", ctx.get_actor_id() is None)
    print("driver node id is hex:", all(c in "0123456789abcdef" for c in ctx.get_node_id()))
    print("task:", ray.get(in_task.remote()))
    print("task with num_cpus=2:", ray.get(in_task.options(num_cpus=2).remote())[3])
    actor = Named.options(name="ctx-actor").remote()
    print("actor:", ray.get(actor.info.remote()))
    print("task name:", ray.get(task_name.options(name="renamed").remote()))
    print("gcs address is a str:", isinstance(ctx.gcs_address, str))
    print("is_initialized:", ray.is_initialized())
    ray.shutdown()
    print("after shutdown:", ray.is_initialized())


if __name__ == "__main__":
    main()
