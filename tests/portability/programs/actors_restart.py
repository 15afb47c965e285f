"""Actor fault tolerance: max_restarts re-runs __init__, max_task_retries retries calls."""

import os
import tempfile
import time

import ray


@ray.remote(max_restarts=1, max_task_retries=0)
class Fragile:
    def __init__(self):
        self.calls = 0

    def incr(self):
        self.calls += 1
        return self.calls

    def die(self):
        os._exit(1)

    def restarted(self):
        return ray.get_runtime_context().was_current_actor_reconstructed


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Retried:
    def __init__(self, path):
        self.path = path

    def crash_once(self):
        if not os.path.exists(self.path):
            open(self.path, "w").close()
            os._exit(1)
        return "retried after a restart"


def wait_for(call, until=None, timeout=60):
    """Call ``call`` until it returns something true, or (with ``until``) raises ``until``;
    other actor errors (a call that met the restart) count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if call():
                return
        except ray.exceptions.RayActorError as e:
            if until is not None and isinstance(e, until):
                return
        time.sleep(0.05)
    raise AssertionError("timed out")


def main():
    ray.init(num_cpus=2)
    actor = Fragile.remote()
    print("before:", ray.get([actor.incr.remote() for _ in range(3)]))
    print("reconstructed:", ray.get(actor.restarted.remote()))
    try:
        ray.get(actor.die.remote())
    except ray.exceptions.RayActorError:
        # ActorDiedError, or ActorUnavailableError when the restart is seen first.
        print("call that killed it: RayActorError")
    print("after restart, state is fresh:", ray.get(actor.incr.remote()))
    print("reconstructed:", ray.get(actor.restarted.remote()))
    try:
        ray.get(actor.die.remote())
    except ray.exceptions.ActorDiedError:
        print("second death: ActorDiedError")
    try:
        ray.get(actor.incr.remote())
    except ray.exceptions.ActorDiedError as e:
        print("restarts used up:", type(e).__name__, isinstance(e, ray.exceptions.RayActorError))

    with tempfile.TemporaryDirectory() as d:
        retried = Retried.remote(os.path.join(d, "marker"))
        print(ray.get(retried.crash_once.remote()))

    killed = Fragile.remote()
    ray.get(killed.incr.remote())
    ray.kill(killed, no_restart=False)
    # ray.kill returns at once: calls made meanwhile may still reach the old instance, or
    # fail while it restarts.
    wait_for(lambda: ray.get(killed.restarted.remote()))
    print("ray.kill(no_restart=False) restarts:", ray.get(killed.incr.remote()))
    ray.kill(killed)
    wait_for(lambda: ray.get(killed.incr.remote()) and False, until=ray.exceptions.ActorDiedError)
    print("ray.kill: ActorDiedError")
    ray.shutdown()


if __name__ == "__main__":
    main()
