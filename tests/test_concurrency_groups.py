"""Actor concurrency groups: each group runs up to its own limit at once, apart from the
default group; a call's options can choose the group."""

import asyncio
import threading

import pytest

import purerun


@pytest.fixture(scope="module", autouse=True)
def cluster():
    purerun.init(num_cpus=2)
    yield
    purerun.shutdown()


@purerun.remote(concurrency_groups={"io": 2, "compute": 1})
class Threaded:
    def __init__(self):
        self.io_barrier = threading.Barrier(2, timeout=20)
        self.released = threading.Event()

    @purerun.method(concurrency_group="io")
    def io_rendezvous(self):
        self.io_barrier.wait()  # passes only with two io calls in at once
        return "io"

    @purerun.method(concurrency_group="io")
    def io_wait_for_compute(self):
        return self.released.wait(20)

    @purerun.method(concurrency_group="compute")
    def compute_release(self):
        self.released.set()
        return "compute"

    def plain(self):
        return "default"


@purerun.remote(concurrency_groups={"io": 2})
class Async:
    def __init__(self):
        self.event = None

    async def wait_for_release(self):
        self.event = self.event or asyncio.Event()
        await asyncio.wait_for(self.event.wait(), 20)
        return "released"

    @purerun.method(concurrency_group="io")
    async def release(self):
        self.event = self.event or asyncio.Event()
        self.event.set()
        return "io"


def test_threaded_groups_run_apart_and_to_their_limits():
    actor = Threaded.remote()
    assert purerun.get([actor.io_rendezvous.remote(), actor.io_rendezvous.remote()],
                       timeout=30) == ["io", "io"]
    waiting = actor.io_wait_for_compute.remote()
    assert purerun.get(actor.compute_release.remote(), timeout=30) == "compute"
    assert purerun.get(waiting, timeout=30) is True
    assert purerun.get(actor.plain.remote(), timeout=30) == "default"


def test_call_options_choose_the_group():
    actor = Threaded.remote()
    waiting = actor.io_wait_for_compute.remote()
    # The call names its group explicitly; it runs while the io call waits for it.
    assert purerun.get(actor.compute_release.options(concurrency_group="compute").remote(),
                       timeout=30) == "compute"
    assert purerun.get(waiting, timeout=30) is True


def test_async_groups():
    actor = Async.options(max_concurrency=1).remote()
    waiting = actor.wait_for_release.remote()  # holds the default group's only slot
    assert purerun.get(actor.release.remote(), timeout=30) == "io"
    assert purerun.get(waiting, timeout=30) == "released"


@purerun.remote(max_concurrency=2)
class TwoAtOnce:
    def __init__(self):
        self.barrier = threading.Barrier(2, timeout=20)

    def my_task_id(self):
        before = purerun.get_runtime_context().get_task_id()
        self.barrier.wait()  # both calls are in at once from here
        return before, purerun.get_runtime_context().get_task_id()


def test_each_concurrent_call_sees_its_own_task_id():
    actor = TwoAtOnce.remote()
    first, second = purerun.get([actor.my_task_id.remote(), actor.my_task_id.remote()],
                                timeout=30)
    assert first[0] == first[1] and second[0] == second[1]
    assert first[0] != second[0]
