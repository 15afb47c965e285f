"""ray.cancel: a queued task, force=True, and recursive cancellation (a running task without
force: tasks_cancel_running)."""

import os
import shutil
import tempfile
import time

import ray


@ray.remote
def sleeper():
    for _ in range(600):         # short sleeps: a cancel interrupts Python code, not a C call
        time.sleep(0.1)
    return "finished"


@ray.remote
def parent():
    child = sleeper.remote()
    ray.get(child)


@ray.remote
def report_then_sleep(path):
    open(path, "w").close()     # started: the driver may cancel it now
    # Busy in Python rather than asleep: Ray may miss a cancel of a sleeping task (its
    # issue 32954).
    end = time.monotonic() + 60
    while time.monotonic() < end:
        pass


def wait_started(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def outcome(ref, **cancel):
    # A cancel can miss a task its worker is just starting (Ray on a loaded host): it is
    # asked again while the task has not ended, as a program would.
    for _ in range(6):
        try:
            ray.get(ref, timeout=5)
            return "finished"
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, **cancel)
        except ray.exceptions.TaskCancelledError:
            return "TaskCancelledError"
        except ray.exceptions.WorkerCrashedError:
            return "WorkerCrashedError"
    return "still running"


def main():
    ray.init(num_cpus=1)
    directory = tempfile.mkdtemp()
    queued = sleeper.options(resources={"absent": 1}).remote()   # never runs
    ray.cancel(queued)
    print("queued:", outcome(queued))

    forced = report_then_sleep.remote(os.path.join(directory, "forced"))
    wait_started(os.path.join(directory, "forced"))
    ray.cancel(forced, force=True)
    # Ray's documentation says WorkerCrashedError; Ray 2.60 raises TaskCancelledError.
    print("force=True:", outcome(forced, force=True) in ("TaskCancelledError",
                                                         "WorkerCrashedError"))

    tree = parent.remote()
    ray.cancel(tree, recursive=True)
    print("recursive:", outcome(tree, recursive=True))
    print("is a RayError:", issubclass(ray.exceptions.TaskCancelledError,
                                       ray.exceptions.RayError))
    ray.shutdown()
    shutil.rmtree(directory)


if __name__ == "__main__":
    main()
