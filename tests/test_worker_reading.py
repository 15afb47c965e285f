"""Task workers read their socket on the task's own thread until something needs a reader
thread (another thread waiting, a future, asyncio, a threaded actor): each case still works,
and the worker keeps working afterwards."""

import asyncio
import threading

import pytest

import purerun


@pytest.fixture(scope="module", autouse=True)
def cluster():
    purerun.init(num_cpus=2)
    yield
    purerun.shutdown()


@purerun.remote
def double(x):
    return x * 2


@purerun.remote
def get_from_threads():
    out = {}

    def run(i):
        out[i] = purerun.get(double.remote(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return sorted(out.values())


@purerun.remote
def wait_on_future():
    return double.remote(5).future().result(timeout=30)


@purerun.remote
def await_in_asyncio():
    async def main():
        return await double.remote(7)
    return asyncio.run(main())


@purerun.remote
def nested_get():
    return purerun.get(double.remote(1))


@purerun.remote
def wait_with_timeouts():
    ref = double.remote(3)
    ready, _ = purerun.wait([ref], timeout=30)
    return len(ready), purerun.get(ref, timeout=30)


@purerun.remote
def put_and_get_large():
    import numpy as np
    ref = purerun.put(np.arange(1_000_000))
    return int(purerun.get(ref).sum())


@pytest.mark.parametrize("task, expected", [
    (get_from_threads, [0, 2, 4, 6]),
    (wait_on_future, 10),
    (await_in_asyncio, 14),
    (nested_get, 2),
    (wait_with_timeouts, (1, 6)),
    (put_and_get_large, sum(range(1_000_000))),
])
def test_waiting_inside_a_task(task, expected):
    assert purerun.get(task.remote(), timeout=60) == expected
    # Workers that switched to a reader thread keep serving tasks.
    assert purerun.get([nested_get.remote() for _ in range(20)], timeout=60) == [2] * 20


def test_thread_left_behind_by_a_task_can_get_while_the_worker_idles(tmp_path):
    go = tmp_path / "go"
    done = tmp_path / "done"

    @purerun.remote
    def leave_a_thread(go, done):
        import os
        import time

        def later():
            deadline = time.time() + 30
            while not os.path.exists(go) and time.time() < deadline:
                time.sleep(0.01)
            value = purerun.get(double.remote(21), timeout=30)
            with open(done, "w") as f:
                f.write(str(value))
        threading.Thread(target=later, daemon=True).start()
        return os.getpid()

    purerun.get(leave_a_thread.remote(str(go), str(done)))
    go.write_text("")  # the task has returned: its worker is idle, reading inline
    from helpers import wait_for
    wait_for(lambda: done.exists() and done.read_text() == "42", timeout=30,
             message="the background thread's get never completed")
    assert purerun.get(nested_get.remote()) == 2
