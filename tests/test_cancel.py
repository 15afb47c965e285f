"""purerun.cancel on real processes: pending, running, forced, recursive, actor calls."""

import asyncio
import os

import pytest

import purerun
from purerun import exceptions

from helpers import wait_for


@pytest.fixture(scope="module", autouse=True)
def cluster():
    purerun.init(num_cpus=1)
    yield
    purerun.shutdown()


def _wait_for_path(path):
    import time
    deadline = time.time() + 60
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.005)
    return "done"


@purerun.remote
def wait_for_file(path):
    return _wait_for_path(path)


@purerun.remote
def mark_and_wait_for_file(started, path):
    open(started, "w").close()
    return _wait_for_path(path)


@purerun.remote
def mark_and_wait(started, path):
    """A parent waiting for its child, which marks ``started`` once it runs: by then the node
    knows the child as the parent's, whatever a cancellation finds."""
    return purerun.get(mark_and_wait_for_file.remote(started, path))


@purerun.remote
def quick():
    return os.getpid()


def test_cancel_a_pending_task(tmp_path):
    release = str(tmp_path / "release")
    blocker = wait_for_file.remote(release)       # holds the only CPU
    pending = quick.remote()
    purerun.cancel(pending)
    open(release, "w").close()
    assert purerun.get(blocker) == "done"
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(pending, timeout=30)


def test_cancel_a_running_task_and_the_worker_goes_on(tmp_path):
    started = str(tmp_path / "started")
    running = mark_and_wait.remote(started, str(tmp_path / "never"))
    wait_for(lambda: os.path.exists(started), timeout=30, message="child did not start")
    purerun.cancel(running, recursive=True)
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(running, timeout=30)
    assert isinstance(purerun.get(quick.remote(), timeout=30), int)


def test_force_cancel_kills_the_worker_and_is_not_retried(tmp_path):
    started = str(tmp_path / "started")

    @purerun.remote(max_retries=3)
    def spin(started):
        open(started, "w").close()
        while True:
            pass

    ref = spin.remote(started)
    wait_for(lambda: os.path.exists(started), timeout=30, message="task did not start")
    purerun.cancel(ref, force=True)
    with pytest.raises(exceptions.WorkerCrashedError):
        purerun.get(ref, timeout=30)
    assert isinstance(purerun.get(quick.remote(), timeout=30), int)


def test_recursive_cancel_reaches_child_tasks(tmp_path):
    started = str(tmp_path / "started")
    release = str(tmp_path / "release")
    parent = mark_and_wait.remote(started, release)
    wait_for(lambda: os.path.exists(started), timeout=30, message="child did not start")
    purerun.cancel(parent, recursive=True)
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(parent, timeout=30)
    # The child (waiting for a file that never comes) was cancelled too: the CPU is free.
    assert isinstance(purerun.get(quick.remote(), timeout=30), int)


def test_cancel_a_queued_actor_call(tmp_path):
    @purerun.remote(num_cpus=0)
    class Slow:
        def wait(self, path):
            return purerun.get(wait_for_file.remote(path))

        def ping(self):
            return "pong"

    release = str(tmp_path / "release")
    actor = Slow.remote()
    busy = actor.wait.remote(release)
    queued = actor.ping.remote()
    purerun.cancel(queued)
    open(release, "w").close()
    assert purerun.get(busy, timeout=30) == "done"
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(queued, timeout=30)
    assert purerun.get(actor.ping.remote(), timeout=30) == "pong"


def test_cancel_takes_object_refs_only():
    with pytest.raises(TypeError):
        purerun.cancel("not a ref")


def test_force_cancel_of_an_actor_call_is_refused_in_the_caller():
    @purerun.remote(num_cpus=0)
    class Echo:
        def echo(self, x):
            return x

    actor = Echo.remote()
    ref = actor.echo.remote(1)
    with pytest.raises(ValueError, match="force=True"):
        purerun.cancel(ref, force=True)
    assert purerun.get(ref, timeout=30) == 1


def test_cancel_a_call_queued_in_the_worker_of_a_live_actor(tmp_path):
    # The node sends a live actor every ready call at once: this one waits in the worker,
    # behind the running call, and must not start.
    @purerun.remote(num_cpus=0)
    class Slow:
        def wait(self, started, path):
            open(started, "w").close()
            return _wait_for_path(path)

        def ping(self):
            return "pong"

    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    actor = Slow.remote()
    assert purerun.get(actor.ping.remote(), timeout=30) == "pong"  # alive
    busy = actor.wait.remote(started, release)
    queued = actor.ping.remote()
    wait_for(lambda: os.path.exists(started), timeout=30, message="call did not start")
    purerun.cancel(queued)
    # A round trip to the node: it handles our messages in order, and sends the worker its
    # INTERRUPT in the same pass as this answer. Released only then, the running call
    # cannot end (and the queued one start) before the worker has it.
    purerun.cluster_resources()
    open(release, "w").close()
    assert purerun.get(busy, timeout=30) == "done"
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(queued, timeout=30)
    assert purerun.get(actor.ping.remote(), timeout=30) == "pong"


@purerun.remote(num_cpus=0)
class AsyncSleeper:
    async def sleep(self, started):
        open(started, "w").close()
        await asyncio.sleep(60)
        return "woke up"

    async def wait(self, started, path):
        open(started, "w").close()
        while not os.path.exists(path):
            await asyncio.sleep(0.005)
        return "done"

    async def ping(self):
        return "pong"


def test_cancel_a_running_call_of_an_async_actor(tmp_path):
    started = str(tmp_path / "started")
    actor = AsyncSleeper.remote()
    ref = actor.sleep.remote(started)
    wait_for(lambda: os.path.exists(started), timeout=30, message="call did not start")
    purerun.cancel(ref)
    # Far less than the call's 60 s sleep: the coroutine itself was cancelled.
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(ref, timeout=30)
    assert purerun.get(actor.ping.remote(), timeout=30) == "pong"


def test_cancel_an_async_call_waiting_for_its_turn(tmp_path):
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    actor = AsyncSleeper.options(max_concurrency=1).remote()
    busy = actor.wait.remote(started, release)
    waiting = actor.sleep.remote(str(tmp_path / "never started"))
    wait_for(lambda: os.path.exists(started), timeout=30, message="call did not start")
    purerun.cancel(waiting)
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(waiting, timeout=30)
    open(release, "w").close()
    assert purerun.get(busy, timeout=30) == "done"
    assert not os.path.exists(str(tmp_path / "never started"))
    assert purerun.get(actor.ping.remote(), timeout=30) == "pong"


# -- RuntimeContext.is_canceled ------------------------------------------------------------------

def _poll_until_cancelled(started):
    """Mark ``started``, then poll is_canceled(); what it saw, or "never" after 60 s."""
    import time
    context = purerun.get_runtime_context()
    before = context.is_canceled()
    open(started, "w").close()
    deadline = time.time() + 60
    while time.time() < deadline:
        if context.is_canceled():
            return before, True
        time.sleep(0.005)
    return before, "never"


@pytest.mark.parametrize("max_concurrency", [1, 4], ids=["plain", "threaded"])
def test_a_cancelled_actor_call_goes_on_and_sees_it(max_concurrency, tmp_path):
    @purerun.remote(num_cpus=0, max_concurrency=max_concurrency)
    class Poller:
        def poll(self, started):
            return _poll_until_cancelled(started)

        def cancelled_now(self):
            return purerun.get_runtime_context().is_canceled()

    started = str(tmp_path / "started")
    actor = Poller.remote()
    ref = actor.poll.remote(started)
    wait_for(lambda: os.path.exists(started), timeout=30, message="call did not start")
    purerun.cancel(ref)
    assert purerun.get(ref, timeout=30) == (False, True)  # not interrupted: its result stands
    assert purerun.get(actor.cancelled_now.remote(), timeout=30) is False  # the next call


def test_a_cancelled_task_sees_it_once_interrupted(tmp_path):
    started = str(tmp_path / "started")

    @purerun.remote
    def interrupted(started):
        import time
        context = purerun.get_runtime_context()
        before = context.is_canceled()
        try:
            # (Inside the try: the cancel may interrupt the line right after the file.)
            open(started, "w").close()
            # Short sleeps: the SIGINT may land on another of the worker's threads, and
            # only wakes this one when it next runs Python code.
            deadline = time.time() + 60
            while time.time() < deadline:
                time.sleep(0.005)
        except KeyboardInterrupt:  # how the node cancels a running task
            return before, context.is_canceled()
        return before, "never"

    ref = interrupted.remote(started)
    wait_for(lambda: os.path.exists(started), timeout=30, message="task did not start")
    purerun.cancel(ref)
    assert purerun.get(ref, timeout=30) == (False, True)

    @purerun.remote
    def next_task():
        return purerun.get_runtime_context().is_canceled()

    assert purerun.get(next_task.remote(), timeout=30) is False  # same worker, new task


def test_is_canceled_is_refused_in_a_driver_and_in_an_async_actor():
    with pytest.raises(RuntimeError, match="driver"):
        purerun.get_runtime_context().is_canceled()

    @purerun.remote(num_cpus=0)
    class Async:
        async def ask(self):
            try:
                purerun.get_runtime_context().is_canceled()
            except RuntimeError as exc:
                return str(exc)

    assert "asyncio" in purerun.get(Async.remote().ask.remote(), timeout=30)


@purerun.remote
def sleep_long():
    import time
    time.sleep(60)
    return "finished"


def test_a_cancel_right_after_submit_always_wins_against_the_start():
    # The cancel reaches the node while the task is being dispatched or just started: the
    # signal may come before the worker runs it. Either way it must not run to its end.
    for _ in range(20):
        ref = sleep_long.remote()
        purerun.cancel(ref)
        with pytest.raises(exceptions.TaskCancelledError):
            purerun.get(ref, timeout=30)
    assert isinstance(purerun.get(quick.remote(), timeout=30), int)
