"""Retries: application errors with retry_exceptions, worker crashes with max_retries."""

import os
import tempfile

import ray


def attempt(path):
    """Count this call's attempts in a file (tasks run in other processes)."""
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        return len(f.read())


@ray.remote(max_retries=3, retry_exceptions=True)
def flaky(path, fail_times):
    n = attempt(path)
    if n <= fail_times:
        raise ValueError(f"attempt {n} fails")
    return n


@ray.remote(max_retries=2, retry_exceptions=[KeyError])
def only_key_errors(path, error):
    attempt(path)
    raise error("no")


@ray.remote(max_retries=1)
def crashes_once(path):
    if attempt(path) == 1:
        os._exit(1)
    return "survived"


@ray.remote(max_retries=0)
def crashes():
    os._exit(1)


def main():
    ray.init(num_cpus=2)
    with tempfile.TemporaryDirectory() as d:
        print("succeeds on attempt:", ray.get(flaky.remote(os.path.join(d, "a"), 2)))
        try:
            ray.get(flaky.remote(os.path.join(d, "b"), 10))
        except ValueError as e:
            print("gives up after 4 attempts:", open(os.path.join(d, "b")).read().count("x"),
                  type(e).__name__)
        for error in (KeyError, IndexError):
            path = os.path.join(d, error.__name__)
            try:
                ray.get(only_key_errors.remote(path, error))
            except error:
                print(error.__name__, "attempts:", open(path).read().count("x"))
        print("crash retried:", ray.get(crashes_once.remote(os.path.join(d, "c"))))
        try:
            ray.get(crashes.remote())
        except ray.exceptions.WorkerCrashedError as e:
            print("crash without retries:", type(e).__name__,
                  isinstance(e, ray.exceptions.RayError))
    ray.shutdown()


if __name__ == "__main__":
    main()
