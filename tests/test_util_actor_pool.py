"""purerun.util.ActorPool on real actors: order, errors, timeouts, dead actors, the pool's
own bookkeeping (has_next, has_free, pop_idle, push), as Ray's ActorPool behaves.

One node for the module. A call that must stay unfinished waits for a marker file the test
creates afterwards (``Worker.wait_for``); nothing sleeps to let things settle.
"""

import os
import time

import pytest

import purerun
from helpers import touch
from purerun.exceptions import ActorDiedError, RayActorError, RayTaskError
from purerun.util import ActorPool
from purerun.util.actor_pool import ActorPool as ActorPoolFromModule

# Upper bound on a call that is not meant to block: turns a hang into a named failure.
CALL_TIMEOUT_S = 60
# How long a call waits in an actor for the marker file the test will create.
MARKER_TIMEOUT_S = 60
# A timeout that must expire: the call it waits for is blocked on a marker file.
SHORT_TIMEOUT_S = 0.2


@purerun.remote
class Worker:
    def double(self, value):
        return 2 * value

    def pid(self):
        return os.getpid()

    def fail_on(self, value, bad):
        if value == bad:
            raise ValueError(f"bad value {value}")
        return value

    def die_on(self, value, bad):
        if value == bad:
            os._exit(1)
        return value

    def wait_for(self, path, value):
        deadline = time.monotonic() + MARKER_TIMEOUT_S
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} was never created")
            time.sleep(0.005)
        return value

    @purerun.method(num_returns=2)
    def pair(self, value):
        return value, -value


@pytest.fixture
def actors(node):
    """``actors(n)``: n fresh Worker actors, killed when the test ends."""
    made = []

    def make(n):
        handles = [Worker.remote() for _ in range(n)]
        made.extend(handles)
        return handles
    yield make
    for handle in made:
        try:
            purerun.kill(handle)
        except Exception:  # already dead: nothing to stop
            pass


def double(actor, value):
    return actor.double.remote(value)


def test_importable_from_both_places():
    assert ActorPool is ActorPoolFromModule


def test_map_returns_results_in_order(actors):
    pool = ActorPool(actors(2))
    assert list(pool.map(double, range(10))) == [2 * v for v in range(10)]
    assert not pool.has_next()


def test_map_spreads_work_over_every_actor(actors):
    handles = actors(2)
    pool = ActorPool(handles)
    pids = set(pool.map(lambda a, v: a.pid.remote(), range(6)))
    assert pids == set(purerun.get([a.pid.remote() for a in handles], timeout=CALL_TIMEOUT_S))


def test_map_unordered_returns_every_result_once(actors):
    pool = ActorPool(actors(3))
    assert sorted(pool.map_unordered(double, range(12))) == [2 * v for v in range(12)]


def test_map_unordered_yields_the_finished_one_first(actors, tmp_path):
    marker = str(tmp_path / "go")
    pool = ActorPool(actors(2))

    def work(actor, value):
        if value == "slow":
            return actor.wait_for.remote(marker, value)
        return actor.double.remote(value)
    results = pool.map_unordered(work, ["slow", 21])
    assert next(results) == 42
    touch(marker)
    assert next(results) == "slow"
    assert list(results) == []


def test_submit_and_get_next_in_submission_order(actors):
    pool = ActorPool(actors(1))
    for value in range(5):
        pool.submit(double, value)
    assert pool.has_next()
    assert [pool.get_next() for _ in range(5)] == [0, 2, 4, 6, 8]
    assert not pool.has_next()


def test_get_next_with_nothing_submitted_raises_stop_iteration(actors):
    pool = ActorPool(actors(1))
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_more_values_than_actors_wait_for_a_free_actor(actors):
    pool = ActorPool(actors(2))
    for value in range(5):
        pool.submit(double, value)
    assert not pool.has_free()
    assert pool.pop_idle() is None
    assert [pool.get_next() for _ in range(5)] == [0, 2, 4, 6, 8]
    assert pool.has_free()


def test_get_next_timeout_raises_builtin_timeout_error_and_keeps_the_task(actors, tmp_path):
    marker = str(tmp_path / "go")
    pool = ActorPool(actors(1))
    pool.submit(lambda a, v: a.wait_for.remote(marker, v), "done")
    with pytest.raises(TimeoutError) as info:
        pool.get_next(timeout=SHORT_TIMEOUT_S)
    assert type(info.value) is TimeoutError
    assert "Timed out waiting for result" in str(info.value)
    assert pool.has_next()
    touch(marker)
    assert pool.get_next(timeout=CALL_TIMEOUT_S) == "done"


def test_get_next_ignore_if_timedout_drops_the_task_and_frees_its_actor(actors, tmp_path):
    marker = str(tmp_path / "go")
    pool = ActorPool(actors(1))
    pool.submit(lambda a, v: a.wait_for.remote(marker, v), "ignored")
    pool.submit(double, 5)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=SHORT_TIMEOUT_S, ignore_if_timedout=True)
    touch(marker)
    # The next result is the one after the ignored task; the ignored one never comes.
    assert pool.get_next(timeout=CALL_TIMEOUT_S) == 10
    assert not pool.has_next()
    assert pool.has_free()


def test_get_next_unordered_timeout(actors, tmp_path):
    marker = str(tmp_path / "go")
    pool = ActorPool(actors(2))
    pool.submit(lambda a, v: a.wait_for.remote(marker, v), "a")
    pool.submit(lambda a, v: a.wait_for.remote(marker, v), "b")
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=SHORT_TIMEOUT_S)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0, ignore_if_timedout=True)
    touch(marker)
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT_S) == "b"
    assert not pool.has_next()


def test_get_next_after_get_next_unordered_took_the_latest_raises(actors, tmp_path):
    marker = str(tmp_path / "go")
    pool = ActorPool(actors(2))
    pool.submit(lambda a, v: a.wait_for.remote(marker, v), "first")
    pool.submit(double, 1)
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT_S) == 2
    with pytest.raises(ValueError, match="not allowed to call get_next"):
        pool.get_next()
    touch(marker)
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT_S) == "first"
    # Empty again: ordered results work from here.
    pool.submit(double, 3)
    assert pool.get_next() == 6


def test_an_error_is_raised_by_get_next_and_the_actor_stays(actors):
    handles = actors(1)
    pool = ActorPool(handles)
    pool.submit(lambda a, v: a.fail_on.remote(v, 1), 1)
    pool.submit(lambda a, v: a.fail_on.remote(v, 1), 2)
    with pytest.raises(ValueError, match="bad value 1") as info:
        pool.get_next()
    assert isinstance(info.value, RayTaskError)
    assert pool.get_next() == 2
    assert pool.has_free() and pool.pop_idle() == handles[0]


def test_map_raises_the_error_in_place_and_can_go_on(actors):
    pool = ActorPool(actors(2))
    results = pool.map(lambda a, v: a.fail_on.remote(v, 2), range(4))
    assert next(results) == 0
    assert next(results) == 1
    with pytest.raises(ValueError, match="bad value 2"):
        next(results)
    # A generator that raised is finished; the results after the error are still there.
    assert list(results) == []
    assert pool.get_next() == 3
    assert not pool.has_next()


def test_a_dead_actor_is_dropped_and_the_rest_carry_on(actors):
    handles = actors(2)
    pool = ActorPool(handles)
    pool.submit(lambda a, v: a.die_on.remote(v, "die"), "die")   # runs on handles[1]
    pool.submit(lambda a, v: a.die_on.remote(v, "die"), "ok")    # runs on handles[0]
    pool.submit(double, 7)                                       # waits for an actor
    with pytest.raises(RayActorError) as info:
        pool.get_next(timeout=CALL_TIMEOUT_S)
    assert isinstance(info.value, ActorDiedError)
    assert pool.get_next(timeout=CALL_TIMEOUT_S) == "ok"
    assert pool.get_next(timeout=CALL_TIMEOUT_S) == 14
    # Only the live actor is left: everything from now on runs on it.
    live_pid = purerun.get(handles[0].pid.remote(), timeout=CALL_TIMEOUT_S)
    assert set(pool.map(lambda a, v: a.pid.remote(), range(4))) == {live_pid}
    assert pool.pop_idle() == handles[0]
    assert pool.pop_idle() is None


def test_work_left_when_every_actor_died_raises_a_clear_error(actors):
    pool = ActorPool(actors(1))
    pool.submit(lambda a, v: a.die_on.remote(v, "die"), "die")
    pool.submit(double, 1)
    with pytest.raises(ActorDiedError):
        pool.get_next(timeout=CALL_TIMEOUT_S)
    assert pool.has_next()
    with pytest.raises(RuntimeError, match="push"):
        pool.get_next()
    pool.push(actors(1)[0])
    assert pool.get_next(timeout=CALL_TIMEOUT_S) == 2


def test_push_adds_an_actor_and_starts_waiting_work(actors):
    first, second = actors(2)
    pool = ActorPool([first])
    pool.submit(double, 1)
    pool.submit(double, 2)
    pool.push(second)
    assert not pool.has_free()   # both actors busy now
    assert [pool.get_next(), pool.get_next()] == [2, 4]
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(first)


def test_push_of_a_busy_actor_raises(actors):
    (handle,) = actors(1)
    pool = ActorPool([handle])
    pool.submit(double, 1)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(handle)
    assert pool.get_next() == 2


def test_pop_idle_takes_actors_out(actors):
    handles = actors(2)
    pool = ActorPool(handles)
    popped = {pool.pop_idle(), pool.pop_idle()}
    assert popped == set(handles)
    assert pool.pop_idle() is None
    assert not pool.has_free()


def test_several_returns_come_back_as_a_list(actors):
    pool = ActorPool(actors(2))
    assert list(pool.map(lambda a, v: a.pair.remote(v), [1, 2])) == [[1, -1], [2, -2]]
    assert sorted(pool.map_unordered(lambda a, v: a.pair.remote(v), [3, 4])) == \
        [[3, -3], [4, -4]]


def test_map_drops_results_left_from_earlier_submissions(actors):
    pool = ActorPool(actors(1))
    pool.submit(double, 100)
    assert list(pool.map(double, [1, 2])) == [2, 4]
    assert not pool.has_next()


def test_bad_arguments_raise_in_the_caller(actors):
    pool = ActorPool(actors(1))
    with pytest.raises(TypeError, match="callable"):
        pool.submit("not a function", 1)
    pool.submit(double, 1)
    with pytest.raises(ValueError, match="timeout"):
        pool.get_next(timeout=-1)
    assert pool.get_next() == 2
