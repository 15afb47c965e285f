"""Direct actor calls (core/direct.py) on real processes: a driver calls its asyncio and
threaded actors on a channel to their worker, and what a Ray program does with actor calls
still holds: results large and small, refs handed on, the state API, cancel, deaths,
restarts and retries, exit_actor, and the actor's life while calls are in flight."""

import asyncio
import gc
import os
import signal
import threading

import pytest

import purerun
from purerun import exceptions
from purerun.core import context

from helpers import pid_gone, touch, wait_for


@pytest.fixture(scope="module", autouse=True)
def cluster():
    purerun.init(num_cpus=2)
    yield
    purerun.shutdown()


def channel_of(actor):
    """The driver's channel to ``actor``, if one is connected."""
    submitter = context.client._direct
    channel = submitter.channels.get(actor._actor_id) if submitter else None
    return channel if channel is not None and channel.frames is not None else None


def wait_channel(actor, method="ping"):
    """Call ``actor`` until its calls take a channel (the first asks for it)."""
    def connected():
        purerun.get(getattr(actor, method).remote())
        return channel_of(actor) is not None
    wait_for(connected, timeout=60, message="the actor's channel")
    return channel_of(actor)


def wait_path(path):
    wait_for(lambda: os.path.exists(path), timeout=60, message=path)


@purerun.remote(num_cpus=0)
class AsyncActor:
    def __init__(self):
        self.count = 0

    async def ping(self):
        return "pong"

    async def incr(self):
        self.count += 1
        return self.count

    async def pid(self):
        return os.getpid()

    async def echo(self, blob, index):
        return blob, index

    async def big(self, size):
        return b"x" * size

    async def boxed(self, value):
        return [purerun.put(value)]

    async def fail(self):
        raise ValueError("no such thing")

    async def wait_file(self, path, value=None):
        while not os.path.exists(path):
            await asyncio.sleep(0.005)
        return value

    async def sleep_long(self, started):
        open(started, "w").close()
        await asyncio.sleep(600)

    async def die(self):
        os._exit(1)

    async def leave(self):
        purerun.actor.exit_actor()


@purerun.remote(num_cpus=0, max_concurrency=4)
class Threaded:
    def ping(self):
        return threading.current_thread().name

    def add(self, a, b):
        return a + b


@purerun.remote(num_cpus=0)
class Plain:
    def __init__(self):
        self.seen = []

    def ping(self):
        return "pong"

    def note(self, i):
        self.seen.append(i)
        return i

    def notes(self):
        return self.seen


def test_asyncio_actor_calls_take_a_channel_and_answer_as_before():
    actor = AsyncActor.remote()
    channel = wait_channel(actor)
    assert purerun.get(actor.pid.remote()) == channel.pid
    assert purerun.get([actor.incr.remote() for _ in range(100)])[-1] >= 100
    with pytest.raises(exceptions.RayTaskError) as info:
        purerun.get(actor.fail.remote())
    assert isinstance(info.value, ValueError) and "no such thing" in str(info.value)
    assert purerun.get(actor.ping.remote()) == "pong"     # the actor lives on
    assert channel_of(actor) is channel
    purerun.kill(actor)


def test_a_burst_larger_than_the_sockets_hold_goes_through_both_ways():
    # Calls and results each fill their socket: neither side may wait for the other.
    actor = AsyncActor.remote()
    wait_channel(actor)
    blob = b"y" * 4096
    refs = [actor.echo.remote(blob, i) for i in range(3000)]
    assert [index for _blob, index in purerun.get(refs, timeout=120)] == list(range(3000))
    purerun.kill(actor)


def test_threaded_actor_calls_take_a_channel():
    actor = Threaded.remote()
    wait_channel(actor)
    assert purerun.get([actor.add.remote(i, 1) for i in range(50)]) == \
        [i + 1 for i in range(50)]
    purerun.kill(actor)


def test_a_plain_actor_keeps_its_calls_in_order_through_the_node():
    actor = Plain.remote()
    for _ in range(3):
        purerun.get(actor.ping.remote())
    assert channel_of(actor) is None
    refs = [actor.note.remote(i) for i in range(200)]
    purerun.get(refs)
    assert purerun.get(actor.notes.remote()) == list(range(200))
    actor_id = actor._actor_id
    assert actor_id in context.client._direct.channels    # asked for, never connected
    del actor, refs
    purerun.get(Plain.remote().ping.remote())   # (a call drops what was forgotten)
    assert actor_id not in context.client._direct.channels  # forgotten with the handle


def test_calls_on_a_channel_appear_in_the_state_api_and_timeline():
    from purerun.util.state import list_tasks
    actor = AsyncActor.remote()
    wait_channel(actor)
    purerun.get([actor.incr.remote() for _ in range(20)])
    records = list_tasks(filters=[("name", "=", "AsyncActor.incr"),
                                  ("actor_id", "=", actor._actor_id.hex())], limit=1000)
    assert len(records) == 20
    assert all(r["type"] == "ACTOR_TASK" and r["state"] == "FINISHED" and r["worker_pid"]
               for r in records)
    assert any(event.get("name") == "AsyncActor.incr" for event in purerun.timeline())
    purerun.kill(actor)


def test_large_results_and_results_holding_refs_on_a_channel():
    actor = AsyncActor.remote()
    wait_channel(actor)
    size = 8 << 20
    value = purerun.get(actor.big.remote(size))
    assert len(value) == size and value[:1] == b"x"
    del value
    [inner] = purerun.get(actor.boxed.remote({"k": 1}))
    assert purerun.get(inner) == {"k": 1}
    purerun.kill(actor)


@purerun.remote
def length(value):
    return len(value)


def test_a_result_of_a_channel_call_handed_on_before_and_after_it_is_back(tmp_path):
    actor = AsyncActor.remote()
    wait_channel(actor)
    gate = str(tmp_path / "gate")
    pending = actor.wait_file.remote(gate, "abc")
    later = length.remote(pending)            # promised to the node, sealed on arrival
    stored = purerun.put({"ref": pending})
    touch(gate)
    assert purerun.get(later) == 3
    assert purerun.get(purerun.get(stored)["ref"]) == "abc"
    ready = actor.ping.remote()
    assert purerun.get(ready) == "pong"
    assert purerun.get(length.remote(ready)) == 4          # back already: PUT
    purerun.kill(actor)


def test_cancel_of_a_call_running_on_a_channel(tmp_path):
    actor = AsyncActor.remote()
    wait_channel(actor)
    started = str(tmp_path / "started")
    ref = actor.sleep_long.remote(started)
    wait_path(started)
    purerun.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(ref, timeout=60)
    assert purerun.get(actor.ping.remote()) == "pong"
    purerun.kill(actor)


def test_a_killed_actor_fails_its_calls_in_flight_on_the_channel(tmp_path):
    actor = AsyncActor.remote()
    wait_channel(actor)
    pid = purerun.get(actor.pid.remote())
    waiting = [actor.wait_file.remote(str(tmp_path / "never")) for _ in range(3)]
    purerun.kill(actor)
    for ref in waiting:
        with pytest.raises(exceptions.ActorDiedError):
            purerun.get(ref, timeout=60)
    with pytest.raises(exceptions.ActorDiedError):
        purerun.get(actor.ping.remote(), timeout=60)
    wait_for(lambda: pid_gone(pid), timeout=60, message="the killed actor's process")


def test_a_crash_restarts_the_actor_and_retries_the_calls_in_flight(tmp_path):
    actor = AsyncActor.options(max_restarts=1, max_task_retries=1).remote()
    wait_channel(actor)
    first_pid = purerun.get(actor.pid.remote())
    gate = str(tmp_path / "gate")
    in_flight = actor.wait_file.remote(gate, "done")
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: pid_gone(first_pid), timeout=60, message="the actor's process to die")
    touch(gate)
    assert purerun.get(in_flight, timeout=60) == "done"     # retried on the new incarnation
    channel = wait_channel(actor)
    assert channel.incarnation == 1
    assert purerun.get(actor.pid.remote()) != first_pid
    purerun.kill(actor)


def test_a_call_in_flight_at_a_crash_fails_without_task_retries(tmp_path):
    actor = AsyncActor.options(max_restarts=1).remote()
    wait_channel(actor)
    in_flight = actor.wait_file.remote(str(tmp_path / "never"))
    actor.die.remote()
    with pytest.raises(exceptions.ActorDiedError):
        purerun.get(in_flight, timeout=60)
    assert purerun.get(actor.ping.remote(), timeout=60) == "pong"   # restarted
    purerun.kill(actor)


def test_exit_actor_on_a_channel_ends_the_actor_without_restart():
    actor = AsyncActor.options(max_restarts=2).remote()
    wait_channel(actor)
    pid = purerun.get(actor.pid.remote())
    with pytest.raises(exceptions.ActorDiedError) as info:
        purerun.get(actor.leave.remote(), timeout=60)
    assert "exit_actor" in str(info.value)
    with pytest.raises(exceptions.ActorDiedError):
        purerun.get(actor.ping.remote(), timeout=60)
    wait_for(lambda: pid_gone(pid), timeout=60, message="the actor's process to exit")


def test_the_actor_lives_while_a_call_on_its_channel_runs_after_its_handle_went(tmp_path):
    actor = AsyncActor.remote()
    channel = wait_channel(actor)
    pid = purerun.get(actor.pid.remote())
    gate = str(tmp_path / "gate")
    ref = actor.wait_file.remote(gate, "finished")
    actor_id = actor._actor_id
    del actor
    touch(gate)
    assert purerun.get(ref, timeout=60) == "finished"
    wait_for(lambda: pid_gone(pid), timeout=60, message="the actor to end with its handle")
    wait_for(lambda: actor_id not in context.client._direct.channels and channel.gone,
             timeout=60, message="the channel to go with the actor's last handle")


def test_max_pending_calls_counts_calls_on_a_channel(tmp_path):
    actor = AsyncActor.options(max_pending_calls=2).remote()
    wait_channel(actor)
    gate = str(tmp_path / "gate")
    refs = [actor.wait_file.remote(gate, i) for i in range(2)]
    with pytest.raises(exceptions.PendingCallsLimitExceeded):
        actor.wait_file.remote(gate)
    touch(gate)
    assert purerun.get(refs, timeout=60) == [0, 1]
    assert purerun.get(actor.ping.remote()) == "pong"
    purerun.kill(actor)


def test_calls_with_refs_as_arguments_go_through_the_node_alongside(tmp_path):
    actor = Threaded.remote()
    wait_channel(actor)
    ref = purerun.put(41)
    assert purerun.get(actor.add.remote(ref, 1)) == 42
    assert purerun.get(actor.add.remote(1, 2)) == 3
    purerun.kill(actor)


def test_a_handle_collected_while_the_submitter_is_busy_waits_for_nothing():
    # A garbage collection pass may free an actor's last handle inside any call, under
    # the submitter's lock: what that frees must not wait for the lock.
    actor = AsyncActor.remote()
    channel = wait_channel(actor)
    actor_id = actor._actor_id
    cycle = [actor]
    cycle.append(cycle)
    del actor, cycle
    submitter = context.client._direct
    with submitter.lock:
        gc.collect()
    wait_for(lambda: actor_id not in submitter.channels and channel.gone, timeout=60,
             message="the collected handle's channel to go, its reader with it")
