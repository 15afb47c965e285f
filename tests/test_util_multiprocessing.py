"""purerun.util.multiprocessing.Pool: the standard library's Pool API on purerun actors.

Two halves. The pool's bookkeeping (``PoolState``: batching, retries after a lost worker,
maxtasksperchild, close and terminate) is a pure state machine, driven here call by call
with no process started. The rest runs real pools on one node shared by the module
(``cluster``: 2 CPUs) and checks what the stdlib documents: results and their order,
errors re-raised with their own type, callbacks, timeouts, close/terminate/join, the
initializer and maxtasksperchild; plus what the stdlib cannot do: a worker killed in the
middle of a map has its task run again instead of hanging the pool.

Nothing sleeps to let things settle: slow tasks wait for a marker file the test creates,
and the test waits for conditions with a deadline (``wait_for``).
"""

import itertools
import logging
import multiprocessing
import multiprocessing.pool
import os
import pickle
import signal
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import purerun
from purerun.exceptions import ActorDiedError
from purerun.util.multiprocessing import Pool, TimeoutError
from purerun.util.multiprocessing.pool import RemoteTraceback
from purerun.util.multiprocessing.pool_state import (MAX_ATTEMPTS, MAX_BATCHES_IN_FLIGHT,
                                                     MAX_UNITS_PER_BATCH, Deliver, PoolState,
                                                     SendBatch, StartWorker, StopWorker, Unit)

from helpers import run_fresh_script, touch, wait_for

# How long a task waits for a marker file the test will create: far above what any test
# here needs, it only turns a bug into a failure instead of a hang.
MARKER_TIMEOUT_S = 60
# Upper bound on one result: far above what any call here takes.
GET_TIMEOUT_S = 60


# --- the pure state machine ------------------------------------------------------------------


def units(n, size=1, job="job"):
    return [Unit(job, i, size, f"payload{i}") for i in range(n)]


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def test_start_asks_for_each_worker():
    state = PoolState()
    assert state.start(3) == [StartWorker(0), StartWorker(1), StartWorker(2)]
    assert state.size == 3 and not state.has_work()


def test_a_map_is_spread_over_every_worker_in_one_batch_each():
    state = PoolState()
    state.start(2)
    sends = of(state.submit(units(8, size=125)), SendBatch)
    assert sorted(s.worker_id for s in sends) == [0, 1]
    assert [len(s.units) for s in sends] == [4, 4]
    assert [u.index for s in sends for u in s.units] == list(range(8))


def test_a_burst_of_tiny_units_is_capped_per_batch_and_per_worker():
    state = PoolState()
    state.start(2)
    n = MAX_UNITS_PER_BATCH * MAX_BATCHES_IN_FLIGHT * 2 + 10
    sends = of(state.submit(units(n)), SendBatch)
    assert all(len(s.units) <= MAX_UNITS_PER_BATCH for s in sends)
    per_worker = {w: sum(1 for s in sends if s.worker_id == w) for w in (0, 1)}
    assert per_worker == {0: MAX_BATCHES_IN_FLIGHT, 1: MAX_BATCHES_IN_FLIGHT}
    assert len(state.pending) == 10
    # A batch coming back frees its slot: the rest goes out, and its units are delivered.
    actions = state.batch_done(sends[0].batch_id, ["r"] * len(sends[0].units))
    delivered = of(actions, Deliver)
    assert [d.unit for d in delivered] == sends[0].units
    assert all(not d.is_error and d.outcome == "r" for d in delivered)
    more = of(actions, SendBatch)
    assert [s.worker_id for s in more] == [sends[0].worker_id]
    assert len(more[0].units) == 10 and not state.pending


def test_a_lost_worker_is_replaced_and_its_units_run_again_alone():
    state = PoolState()
    state.start(1)
    of(state.submit(units(2)), SendBatch)
    of(state.submit(units(3, job="other")), SendBatch)
    held = sorted(state.running[0].batches)
    assert [len(state.running[0].batches[b]) for b in held] == [2, 3]
    actions = state.batch_failed(held[0], ActorDiedError(), lost=True)
    assert StopWorker(0, kill=True) in actions
    assert StartWorker(1) in actions
    resent = of(actions, SendBatch)
    # Everything the dead worker held is retried, one unit per batch, in submission order.
    assert all(len(s.units) == 1 and s.worker_id == 1 for s in resent)
    order = [(u.job, u.index) for s in resent for u in s.units] + \
            [(u.job, u.index) for u in state.pending]
    assert order == [("job", 0), ("job", 1), ("other", 0), ("other", 1), ("other", 2)]
    # The dead worker's other batch, reported later, is already settled.
    assert state.batch_failed(held[1], ActorDiedError(), lost=True) == []


def test_a_unit_that_keeps_killing_workers_fails_after_max_attempts():
    state = PoolState()
    state.start(1)
    (send,) = of(state.submit(units(1)), SendBatch)
    error = ActorDiedError("it died")
    for attempt in range(1, MAX_ATTEMPTS):
        actions = state.batch_failed(send.batch_id, error, lost=True)
        assert not of(actions, Deliver)
        (send,) = of(actions, SendBatch)
        assert send.units[0].attempts == attempt
    actions = state.batch_failed(send.batch_id, error, lost=True)
    (delivered,) = of(actions, Deliver)
    assert delivered.is_error and delivered.outcome is error
    assert not state.has_work()


def test_a_failure_that_is_not_a_lost_worker_is_the_units_outcome():
    state = PoolState()
    state.start(1)
    (send,) = of(state.submit(units(2)), SendBatch)
    error = RuntimeError("could not unpickle")
    actions = state.batch_failed(send.batch_id, error, lost=False)
    assert [(d.unit.index, d.outcome, d.is_error) for d in of(actions, Deliver)] == [
        (0, error, True), (1, error, True)]
    assert not of(actions, StartWorker) and not of(actions, StopWorker)


def test_maxtasksperchild_retires_a_worker_after_its_units_and_replaces_it():
    state = PoolState(maxtasksperchild=2)
    state.start(1)
    sends = of(state.submit(units(5)), SendBatch)
    assert [len(s.units) for s in sends] == [2]  # no more than 2 units for worker 0, ever
    assert 0 in state.retiring and not state.running
    actions = state.batch_done(sends[0].batch_id, ["a", "b"])
    assert StopWorker(0, kill=False) in actions and StartWorker(1) in actions
    (send,) = of(actions, SendBatch)
    assert send.worker_id == 1 and len(send.units) == 2


def test_close_stops_the_workers_once_the_work_is_done():
    state = PoolState()
    state.start(2)
    sends = of(state.submit(units(2)), SendBatch)
    assert state.close() == []
    with pytest.raises(ValueError, match="Pool not running"):
        state.submit(units(1))
    state.batch_done(sends[0].batch_id, ["x"])
    assert not state.finished()
    actions = state.batch_done(sends[1].batch_id, ["y"])
    assert sorted(a.worker_id for a in of(actions, StopWorker)) == [0, 1]
    assert all(not a.kill for a in of(actions, StopWorker))
    assert state.finished()


def test_close_with_nothing_to_do_stops_at_once():
    state = PoolState()
    state.start(2)
    assert of(state.close(), StopWorker) == [StopWorker(0, False), StopWorker(1, False)]
    assert state.finished()


def test_terminate_settles_everything_and_ignores_late_reports():
    state = PoolState()
    state.start(1)
    n = MAX_UNITS_PER_BATCH * MAX_BATCHES_IN_FLIGHT + 3
    sends = of(state.submit(units(n)), SendBatch)
    actions = state.terminate()
    assert of(actions, StopWorker) == [StopWorker(0, kill=True)]
    failed = of(actions, Deliver)
    assert sorted(d.unit.index for d in failed) == list(range(n))
    assert all(d.is_error and d.outcome is None for d in failed)
    assert state.finished()
    assert state.batch_done(sends[0].batch_id, ["x"] * len(sends[0].units)) == []


@settings(max_examples=60, deadline=None)
@given(workers=st.integers(1, 3), sizes=st.lists(st.integers(1, 200), max_size=40),
       maxtasks=st.one_of(st.none(), st.integers(1, 5)),
       events=st.lists(st.tuples(st.sampled_from(["done", "lost", "failed"]),
                                 st.integers(0, 1000)), max_size=200))
def test_every_unit_is_delivered_exactly_once(workers, sizes, maxtasks, events):
    """Whatever order batches come back in, and whichever workers die, each submitted unit
    ends in exactly one Deliver, and the pool is left with nothing running."""
    state = PoolState(maxtasksperchild=maxtasks)
    state.start(workers)
    delivered = []
    in_flight = {}

    def apply(actions):
        for a in actions:
            if isinstance(a, SendBatch):
                assert len(a.units) <= MAX_UNITS_PER_BATCH
                in_flight[a.batch_id] = a
            elif isinstance(a, Deliver):
                delivered.append((a.unit.job, a.unit.index))

    apply(state.submit([Unit("j", i, size, None) for i, size in enumerate(sizes)]))
    for kind, pick in itertools.chain(events, itertools.repeat(("done", 0))):
        if not in_flight:
            break
        batch = sorted(in_flight)[pick % len(in_flight)]
        send = in_flight.pop(batch)
        if kind == "done":
            apply(state.batch_done(batch, ["r"] * len(send.units)))
        else:
            apply(state.batch_failed(batch, ActorDiedError(), lost=kind == "lost"))
        for worker in list(state.running.values()) + list(state.retiring.values()):
            assert len(worker.batches) <= MAX_BATCHES_IN_FLIGHT
            if maxtasks is not None:
                assert worker.assigned <= maxtasks
    assert sorted(delivered) == [("j", i) for i in range(len(sizes))]
    assert not state.has_work()
    apply(state.close())
    assert state.finished()


# --- functions the pool workers run (workers import this module) ----------------------------


_initialized = []


def remember_init(*args):
    _initialized.append(args)


def init_record():
    return os.getpid(), list(_initialized)


def square(x):
    return x * x


def add(a, b):
    return a + b


def keyword_call(a, b=0, *, c=0):
    return a + b + c


def pid_of(_):
    return os.getpid()


def fail_on(x, bad=3):
    if x == bad:
        raise KeyError(f"item {x} is bad")
    return x


def unpicklable_result(_):
    return threading.Lock()


def raise_in_init():
    raise RuntimeError("initializer failed")


def wait_path(path, timeout=MARKER_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"marker {path} never appeared")
        time.sleep(0.01)
    return path


def exit_once(x, marker):
    """Kills its own process the first time it runs (marker file absent), then works."""
    if x == 2 and not os.path.exists(marker):
        touch(marker)
        os._exit(1)
    return x * 10


def always_exit(_):
    os._exit(1)


def wait_to_be_killed(x, pid_file, killed_marker):
    """Item 0 writes its pid and waits for the test to kill it; its retry finds the marker."""
    if x == 0 and not os.path.exists(killed_marker):
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        wait_path(killed_marker)
    return -x


def call_remote_task(x):
    return purerun.get(remote_square.remote(x))


@purerun.remote
def remote_square(x):
    return x * x


# --- pools on real processes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    info = purerun.init(num_cpus=2)
    try:
        yield info
    finally:
        purerun.shutdown()


@pytest.fixture
def pool(cluster):
    pool = Pool(2)
    try:
        yield pool
    finally:
        pool.terminate()


def test_map_apply_and_starmap_return_what_the_function_returns(pool):
    assert pool.map(square, range(20)) == [x * x for x in range(20)]
    assert pool.map(square, iter(range(7)), chunksize=3) == [x * x for x in range(7)]
    assert pool.map(square, []) == []
    assert pool.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert pool.apply(keyword_call, (1,), {"b": 2, "c": 3}) == 6
    assert pool.apply(keyword_call, (1,), kwds={"b": 2}) == 3  # the stdlib's name
    assert pool.apply(keyword_call, (1,), kwargs={"c": 4}) == 5  # Ray's name
    with pytest.raises(TypeError, match="not both"):
        pool.apply(keyword_call, (1,), kwargs={"c": 4}, kwds={"b": 2})
    assert pool.apply(square, (9,)) == 81
    assert pool.map(lambda x: x + 1, range(3)) == [1, 2, 3]  # pickled by value


def test_async_variants_and_their_callbacks(pool):
    got = []
    errors = []
    result = pool.apply_async(square, (4,), callback=got.append, error_callback=errors.append)
    assert result.get(timeout=GET_TIMEOUT_S) == 16
    assert result.ready() and result.successful()
    mapped = pool.map_async(square, range(5), callback=got.append)
    assert mapped.get(timeout=GET_TIMEOUT_S) == [0, 1, 4, 9, 16]
    starred = pool.starmap_async(add, [(1, 1), (2, 2)], callback=got.append)
    assert starred.get(timeout=GET_TIMEOUT_S) == [2, 4]
    # Callbacks run before get() returns, with the value (the list, for the maps).
    assert got == [16, [0, 1, 4, 9, 16], [2, 4]] and errors == []
    many = [pool.apply_async(add, (i, i)) for i in range(300)]
    assert [r.get(timeout=GET_TIMEOUT_S) for r in many] == [2 * i for i in range(300)]


def test_imap_keeps_order_and_imap_unordered_yields_everything(pool):
    assert list(pool.imap(square, range(50))) == [x * x for x in range(50)]
    assert list(pool.imap(square, range(50), chunksize=7)) == [x * x for x in range(50)]
    assert sorted(pool.imap_unordered(square, range(50), chunksize=4)) == sorted(
        x * x for x in range(50))
    assert list(pool.imap(square, [])) == []


def test_imap_reads_an_endless_iterable_lazily(pool):
    results = pool.imap(square, itertools.count())
    assert [next(results) for _ in range(300)] == [x * x for x in range(300)]


def test_imap_next_times_out_with_multiprocessing_timeout_error(pool, tmp_path):
    marker = str(tmp_path / "go")
    results = pool.imap(wait_path, [marker])
    with pytest.raises(multiprocessing.TimeoutError):
        results.next(timeout=0.05)
    touch(marker)
    assert results.next(timeout=GET_TIMEOUT_S) == marker
    with pytest.raises(StopIteration):
        results.next(timeout=GET_TIMEOUT_S)


def test_errors_are_reraised_with_their_own_type_and_the_worker_traceback(pool):
    with pytest.raises(KeyError, match="item 3 is bad") as info:
        pool.map(fail_on, range(10))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_on" in str(info.value.__cause__)
    with pytest.raises(KeyError):
        pool.apply(fail_on, (3,))
    with pytest.raises(KeyError):
        pool.starmap(fail_on, [(1,), (3,)])
    results = pool.imap(fail_on, range(5))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError):
        next(results)
    assert list(results) == [4]  # as the stdlib (chunksize 1): the next items still come


def test_error_callback_and_successful(pool):
    errors = []
    result = pool.map_async(fail_on, range(10), chunksize=1, callback=errors.append,
                            error_callback=errors.append)
    result.wait(GET_TIMEOUT_S)
    assert result.ready() and not result.successful()
    assert len(errors) == 1 and isinstance(errors[0], KeyError)
    with pytest.raises(KeyError):
        result.get()


def test_unpicklable_result_is_an_encoding_error(pool):
    with pytest.raises(multiprocessing.pool.MaybeEncodingError):
        pool.apply(unpicklable_result, (1,))


def test_get_times_out_and_wait_returns_after_its_timeout(pool, tmp_path):
    marker = str(tmp_path / "go")
    result = pool.apply_async(wait_path, (marker,))
    with pytest.raises(TimeoutError):
        result.get(timeout=0.05)
    assert TimeoutError is multiprocessing.TimeoutError
    result.wait(0.05)
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    touch(marker)
    assert result.get(timeout=GET_TIMEOUT_S) == marker


def test_a_closed_or_terminated_pool_refuses_work(cluster):
    pool = Pool(1)
    with pytest.raises(ValueError, match="Pool is still running"):
        pool.join()
    pool.close()
    for call in (lambda: pool.map(square, [1]), lambda: pool.apply(square, (1,)),
                 lambda: pool.apply_async(square, (1,)), lambda: pool.imap(square, [1]),
                 lambda: pool.starmap_async(add, [(1, 2)])):
        with pytest.raises(ValueError, match="Pool not running"):
            call()
    pool.join()
    pool.terminate()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])


def test_close_lets_submitted_work_finish_then_join_waits(cluster, tmp_path):
    pool = Pool(2)
    marker = str(tmp_path / "go")
    pids = set(pool.map(pid_of, range(8), chunksize=1))
    slow = pool.apply_async(wait_path, (marker,))
    mapped = pool.map_async(square, range(100))
    pool.close()
    touch(marker)
    pool.join()
    assert slow.get(timeout=0) == marker
    assert mapped.get(timeout=0) == [x * x for x in range(100)]
    wait_for(lambda: not any(_alive(pid) for pid in pids),
             message="the closed pool's workers to exit")


def test_close_during_imap_lets_the_iterable_be_read_to_its_end(cluster):
    pool = Pool(2)
    try:
        results = pool.imap_unordered(square, (x for x in range(500)))
        pool.close()
        assert sorted(results) == [x * x for x in range(500)]
        pool.join()
    finally:
        pool.terminate()


def test_the_context_manager_terminates_and_unfinished_results_fail(cluster, tmp_path):
    marker = str(tmp_path / "never")
    with Pool(2) as pool:
        pids = set(pool.map(pid_of, range(8), chunksize=1))
        stuck = pool.apply_async(wait_path, (marker,))
    with pytest.raises(ActorDiedError):
        stuck.get(timeout=GET_TIMEOUT_S)
    wait_for(lambda: not any(_alive(pid) for pid in pids),
             message="the terminated pool's workers to exit")
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(square, (1,))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited: only its parent has not reaped it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_initializer_runs_once_in_each_worker(cluster):
    with Pool(2, initializer=remember_init, initargs=("hello", 1)) as pool:
        records = [pool.apply_async(init_record) for _ in range(20)]
        records = [r.get(GET_TIMEOUT_S) for r in records]
        assert {tuple(map(tuple, seen)) for _pid, seen in records} == {(("hello", 1),)}
    assert _initialized == []  # it ran in the workers, not here


def test_an_initializer_that_raises_fails_the_pool_creation(cluster):
    with pytest.raises(ActorDiedError, match="initializer failed"):
        Pool(1, initializer=raise_in_init)


def test_maxtasksperchild_replaces_workers(cluster):
    with Pool(2, maxtasksperchild=1) as pool:
        pids = pool.map(pid_of, range(4), chunksize=1)
        assert len(set(pids)) == 4  # each task on a fresh worker
    with Pool(1, maxtasksperchild=3) as pool:
        pids = pool.map(pid_of, range(6), chunksize=1)
        assert [pids.count(pid) for pid in dict.fromkeys(pids)] == [3, 3]


def test_a_worker_that_exits_mid_map_has_its_task_retried(cluster, tmp_path):
    marker = str(tmp_path / "exited")
    with Pool(2) as pool:
        results = pool.map(_bound_exit_once(marker), range(6), chunksize=1)
        assert results == [x * 10 for x in range(6)]
        assert os.path.exists(marker)
        assert pool.map(square, range(4)) == [0, 1, 4, 9]  # the pool goes on working


class _bound_exit_once:
    def __init__(self, marker):
        self.marker = marker

    def __call__(self, x):
        return exit_once(x, self.marker)


class _bound_wait_to_be_killed:
    def __init__(self, pid_file, killed_marker):
        self.pid_file, self.killed_marker = pid_file, killed_marker

    def __call__(self, x):
        return wait_to_be_killed(x, self.pid_file, self.killed_marker)


def test_a_worker_killed_from_outside_mid_map_has_its_task_retried(cluster, tmp_path):
    pid_file, killed = str(tmp_path / "pid"), str(tmp_path / "killed")
    with Pool(2) as pool:
        result = pool.map_async(_bound_wait_to_be_killed(pid_file, killed), range(8),
                                chunksize=2)
        wait_for(lambda: os.path.exists(pid_file), timeout=MARKER_TIMEOUT_S,
                 message="the first task to report its pid")
        with open(pid_file) as f:
            victim = int(f.read())
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not _alive(victim), message="the killed worker to be gone")
        touch(killed)
        assert result.get(timeout=GET_TIMEOUT_S) == [-x for x in range(8)]


def test_a_task_that_always_kills_its_worker_fails_instead_of_hanging(cluster):
    with Pool(1) as pool:
        with pytest.raises(ActorDiedError):
            pool.apply(always_exit, (1,))
        assert pool.apply(square, (3,)) == 9


def test_a_future_sends_the_submission_it_waits_for(cluster):
    """The pool waits on its batches through futures: making one must send the submission
    still held in the client's batch, not leave it for the flusher's next round."""
    from purerun.core import context, protocol
    client = context.client
    purerun.get(remote_square.remote(0))  # the next submission starts a burst
    dropped = remote_square.remote(1)
    purerun.get(dropped)
    del dropped  # a reference change: the flusher waits a few ms to gather more
    first = remote_square.remote(2)  # goes out at once (first after a blocking call)
    second = remote_square.remote(3)  # held in the batch
    future = second.future()
    held = [msg for msg in client._pending if msg[0] == protocol.SUBMIT]
    assert held == []
    assert future.result(timeout=GET_TIMEOUT_S) == 9 and purerun.get(first) == 4


def test_tasks_may_use_purerun_themselves(pool):
    assert pool.map(call_remote_task, range(4)) == [0, 1, 4, 9]


def test_ray_remote_args_configure_the_worker_actors(cluster):
    with Pool(2, ray_remote_args={"num_cpus": 1}):
        wait_for(lambda: purerun.available_resources().get("CPU", 0) == 0,
                 message="the pool's two 1-CPU workers to hold both CPUs")
    wait_for(lambda: purerun.available_resources().get("CPU", 0) == 2,
             message="the CPUs to be returned after terminate")


def test_bad_arguments_are_refused_in_the_caller(cluster, caplog):
    with pytest.raises(ValueError, match="must be >0"):
        Pool(0)
    with pytest.raises(ValueError, match="only 2 CPUs"):
        Pool(3)
    with pytest.raises(TypeError, match="processes"):
        Pool("2")
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(1, maxtasksperchild=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        Pool(1, initializer=5)
    with pytest.raises(TypeError, match="ray_remote_args"):
        Pool(1, ray_remote_args=[("num_cpus", 1)])
    with caplog.at_level(logging.WARNING, logger="purerun.util.multiprocessing.pool"):
        pool = Pool(1, context=multiprocessing.get_context("spawn"))
    try:
        assert "context" in caplog.text
        with pytest.raises(ValueError, match="Chunksize must be 1"):
            pool.imap(square, [1], chunksize=0)
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(square, [1], chunksize=0)
        with pytest.raises(NotImplementedError, match="cannot be passed"):
            pickle.dumps(pool)
    finally:
        pool.terminate()


def test_pool_starts_purerun_when_it_is_not_running(tmp_path):
    """In a fresh interpreter with nothing started, Pool() starts a node itself."""
    script = ("from purerun.util.multiprocessing import Pool\n"
              "import purerun\n"
              "def sq(x): return x * x\n"
              "if __name__ == '__main__':\n"
              "    with Pool(2) as p:\n"
              "        print(p.map(sq, range(5)), purerun.is_initialized(),\n"
              "              int(purerun.cluster_resources()['CPU']))\n")
    out = run_fresh_script(tmp_path / "start.py", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "[0, 1, 4, 9, 16] True 2"
