"""Generator calls on real processes: num_returns="streaming" (ObjectRefGenerator) and
"dynamic" (DynamicObjectRefGenerator), for tasks and actor methods."""

import asyncio
import os
import time

import pytest

import purerun
from purerun import exceptions
from purerun.core import context

from helpers import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", autouse=True)
def runtime():
    purerun.init(num_cpus=2)
    yield
    purerun.shutdown()


def _wait_for_path(path):
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)


def _stats():
    return context.client.request("stats")


@purerun.remote
def count_to(n):
    for i in range(n):
        yield i


@purerun.remote
def yield_then_wait(path):
    yield "first"
    _wait_for_path(path)
    yield "second"


@purerun.remote
def fail_at(n, bad):
    for i in range(n):
        if i == bad:
            raise ValueError(f"bad item {i}")
        yield i


# -- streaming: iteration --------------------------------------------------------------------------

def test_a_generator_function_streams_its_values_in_order():
    gen = count_to.remote(5)
    assert isinstance(gen, purerun.ObjectRefGenerator)
    assert [purerun.get(ref) for ref in gen] == [0, 1, 2, 3, 4]
    with pytest.raises(StopIteration):
        next(gen)
    assert gen.is_finished()
    assert purerun.get(gen.completed()) is None


def test_the_first_value_is_gettable_before_the_generator_ends(tmp_path):
    release = str(tmp_path / "release")
    gen = yield_then_wait.remote(release)
    assert purerun.get(next(gen)) == "first"
    ref = gen._next_sync(timeout_s=0.05)   # the second waits for the file
    assert ref.is_nil()
    ready, not_ready = purerun.wait([gen], timeout=0.05)
    assert (ready, not_ready) == ([], [gen])
    assert not gen.next_ready()
    open(release, "w").close()
    ready, _ = purerun.wait([gen], timeout=30)
    assert ready == [gen]
    assert purerun.get(next(gen)) == "second"
    assert list(gen) == []


def test_an_exception_surfaces_at_the_failing_item_then_iteration_stops():
    gen = fail_at.remote(5, 2)
    assert purerun.get(next(gen)) == 0
    assert purerun.get(next(gen)) == 1
    with pytest.raises(ValueError, match="bad item 2") as info:
        purerun.get(next(gen))
    assert isinstance(info.value, exceptions.RayTaskError)
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(ValueError):
        purerun.get(gen.completed())


def test_streaming_and_dynamic_options_and_their_errors():
    @purerun.remote(num_returns="streaming")
    def explicit():
        yield 1

    assert [purerun.get(r) for r in explicit.remote()] == [1]
    assert purerun.get(count_to.options(num_returns=2).remote(2)) == [0, 1]
    with pytest.raises(ValueError, match=r"Task returned 1 objects, but num_returns=2\."):
        purerun.get(count_to.options(num_returns=2).remote(1)[1])
    with pytest.raises(ValueError, match=r"Task returned more than num_returns=2 objects\."):
        purerun.get(count_to.options(num_returns=2).remote(3)[0])
    with pytest.raises(ValueError, match="not a generator function"):
        @purerun.remote(num_returns="streaming")
        def plain():
            return 1
    with pytest.raises(ValueError, match="_generator_backpressure_num_objects=0"):
        count_to.options(_generator_backpressure_num_objects=0)


def test_a_generator_cannot_be_got_or_passed_to_a_task():
    gen = count_to.remote(1)
    with pytest.raises(ValueError, match="one by one"):
        purerun.get(gen)

    @purerun.remote
    def take(g):
        return g

    with pytest.raises(TypeError, match="cannot be serialized"):
        take.remote([gen])
    for method in (lambda: gen.send(1), gen.throw, gen.close):
        with pytest.raises(NotImplementedError):
            method()
    assert [purerun.get(r) for r in gen] == [0]


def test_async_for_in_an_asyncio_driver(tmp_path):
    async def main():
        values = [await ref async for ref in count_to.remote(4)]
        gen = yield_then_wait.remote(str(tmp_path / "never"))
        first = await gen.__anext__()
        timed_out = await gen._next_async(timeout_s=0.05)
        purerun.cancel(gen)
        return values, await first, timed_out.is_nil()

    assert asyncio.run(main()) == ([0, 1, 2, 3], "first", True)


# -- streaming: actors -----------------------------------------------------------------------------

@purerun.remote
class Streamer:
    def values(self, n):
        for i in range(n):
            yield i * 10

    @purerun.method(num_returns="streaming")
    def declared(self, n):
        yield from range(n)

    def listed(self, n):
        return list(range(n))

    def crash(self):
        yield "before"
        os._exit(1)


@purerun.remote
class AsyncStreamer:
    async def values(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def failing(self):
        yield "ok"
        raise KeyError("async bad")


def test_actor_generator_methods_stream():
    actor = Streamer.remote()
    assert [purerun.get(r) for r in actor.values.remote(3)] == [0, 10, 20]
    assert [purerun.get(r) for r in actor.declared.remote(2)] == [0, 1]
    assert purerun.get(actor.values.options(num_returns=3).remote(3)) == [0, 10, 20]
    dynamic = purerun.get(actor.values.options(num_returns="dynamic").remote(2))
    assert [purerun.get(r) for r in dynamic] == [0, 10]
    purerun.kill(actor)


def test_async_actor_generators_stream_and_fail_at_the_item():
    actor = AsyncStreamer.remote()
    assert [purerun.get(r) for r in actor.values.remote(3)] == [0, 1, 2]
    gen = actor.failing.remote()
    assert purerun.get(next(gen)) == "ok"
    with pytest.raises(KeyError):
        purerun.get(next(gen))
    assert list(gen) == []
    purerun.kill(actor)


@purerun.remote
class Consumer:
    async def total(self, n):
        return sum([await ref async for ref in count_to.remote(n)])

    def total_sync(self, n):
        return sum(purerun.get(ref) for ref in count_to.remote(n))


def test_actors_and_tasks_can_iterate_the_generators_they_make():
    consumer = Consumer.remote()
    assert purerun.get(consumer.total.remote(4)) == 6

    @purerun.remote
    def nested(n):
        return sum(purerun.get(ref) for ref in count_to.remote(n))

    assert purerun.get(nested.remote(5)) == 10
    purerun.kill(consumer)


@purerun.remote(max_restarts=1, max_task_retries=1)
class Flaky:
    def values(self, marker):
        for i in range(3):
            yield i
            if i == 0 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)


def test_an_actor_generator_retried_after_a_restart_does_not_repeat_items(tmp_path):
    actor = Flaky.remote()
    assert [purerun.get(r) for r in actor.values.remote(str(tmp_path / "m"))] == [0, 1, 2]
    purerun.kill(actor)


def test_an_actor_dying_in_a_generator_fails_the_next_ref_with_actor_died():
    actor = Streamer.remote()
    gen = actor.crash.remote()
    assert purerun.get(next(gen)) == "before"
    with pytest.raises(exceptions.ActorDiedError):
        purerun.get(next(gen))
    assert list(gen) == []


# -- streaming: failures, retries, cancel ---------------------------------------------------------

@purerun.remote(max_retries=0)
def crash_after(n):
    for i in range(n):
        yield i
    os._exit(1)


@purerun.remote(max_retries=1)
def crash_once_after(n, marker):
    for i in range(n):
        yield i
        if i == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)


def test_a_worker_crash_without_retries_fails_the_next_ref():
    gen = crash_after.remote(2)
    assert [purerun.get(next(gen)) for _ in range(2)] == [0, 1]
    with pytest.raises(exceptions.WorkerCrashedError):
        purerun.get(next(gen))
    assert list(gen) == []


def test_a_retried_generator_does_not_repeat_the_items_already_reported(tmp_path):
    gen = crash_once_after.remote(4, str(tmp_path / "crashed"))
    assert [purerun.get(r) for r in gen] == [0, 1, 2, 3]
    assert os.path.exists(tmp_path / "crashed")


def test_cancelling_a_generator_fails_its_next_ref(tmp_path):
    gen = yield_then_wait.remote(str(tmp_path / "never"))
    assert purerun.get(next(gen)) == "first"
    purerun.cancel(gen)
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(next(gen))
    assert list(gen) == []


# -- backpressure -----------------------------------------------------------------------------------

@purerun.remote
def produce(path, n):
    for i in range(n):
        with open(path, "a") as f:
            f.write("x")
        yield i


def _produced(path):
    return len(open(path).read()) if os.path.exists(path) else 0


def test_backpressure_pauses_the_generator_until_the_caller_reads(tmp_path):
    path = str(tmp_path / "produced")
    gen = produce.options(_generator_backpressure_num_objects=2).remote(path, 6)
    wait_for(lambda: _produced(path) == 2)
    # Paused: it stays at 2 while nothing is read (the node has both, the worker waits).
    wait_for(lambda: gen.next_ready())
    assert _produced(path) == 2
    assert purerun.get(next(gen)) == 0
    wait_for(lambda: _produced(path) == 3)
    assert [purerun.get(r) for r in gen] == [1, 2, 3, 4, 5]
    assert _produced(path) == 6


def test_dropping_a_paused_generator_lets_it_run_to_its_end(tmp_path):
    path = str(tmp_path / "produced")
    gen = produce.options(_generator_backpressure_num_objects=1).remote(path, 4)
    wait_for(lambda: _produced(path) == 1)
    done = gen.completed()
    del gen
    assert purerun.get(done, timeout=30) is None
    assert _produced(path) == 4


# -- lifetime ---------------------------------------------------------------------------------------

@purerun.remote
def big_items(n):
    for i in range(n):
        yield bytes(200 * 1024) + bytes([i])


def test_items_are_freed_when_their_refs_and_the_generator_go():
    # Earlier tests' objects may still be on their way out: settle on the start first.
    before = wait_for(lambda: _stats()["arena_used"] == 0 and _stats())
    gen = big_items.remote(4)
    first = next(gen)
    assert purerun.get(first)[-1] == 0
    done = gen.completed()
    assert purerun.get(done) is None
    del done
    assert _stats()["arena_used"] > 0
    del first   # dropped by the caller: freed
    del gen     # unread items and the end marker: freed with the generator
    wait_for(lambda: _stats()["arena_used"] == 0
             and _stats()["num_objects"] == before["num_objects"],
             message="the generator's items freed")


# -- dynamic ----------------------------------------------------------------------------------------

def test_dynamic_returns_one_ref_to_the_refs_it_yielded():
    ref = count_to.options(num_returns="dynamic").remote(3)
    assert isinstance(ref, purerun.ObjectRef)
    refs = purerun.get(ref)
    assert isinstance(refs, purerun.DynamicObjectRefGenerator)
    assert len(refs) == 3 and [purerun.get(r) for r in refs] == [0, 1, 2]

    @purerun.remote
    def total(dynamic):
        return sum(purerun.get(list(dynamic)))

    assert purerun.get(total.remote(ref)) == 3


def test_dynamic_stores_the_error_as_a_last_ref():
    refs = list(purerun.get(fail_at.options(num_returns="dynamic").remote(5, 2)))
    assert len(refs) == 3
    assert purerun.get(refs[:2]) == [0, 1]
    with pytest.raises(ValueError, match="bad item 2"):
        purerun.get(refs[2])
