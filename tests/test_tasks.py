"""Task semantics on a real cluster: argument binding, num_returns, resources, max_calls,
retries after crashes and exceptions, errors, recursion, infeasible tasks, and the worker's
environment (cwd, sys.path).

The first section starts its own clusters; everything after it shares one module-scoped
cluster with 2 CPUs, 2 GPUs and one unit of the custom resource "custom".

Concurrency is proved by rendezvous, never by timing: each task announces itself with a file
in a shared directory and waits, with a deadline, until all its peers have too. Exclusion is
proved the other way round: a task holds an exclusive marker file while the test keeps it
running, and a second task started beside it would find the marker taken.
"""

import importlib
import logging
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
import uuid

import psutil
import pytest

import purerun
from purerun import exceptions
from helpers import wait_for

# A task waiting for a file or for its peers gives up after this long, so that a failing
# test fails instead of holding a worker until the suite times out.
TASK_DEADLINE_S = 30.0


class CustomError(Exception):
    """A user exception with state, defined where the test (and so the worker) imports it."""

    def __init__(self, code):
        super().__init__(f"custom failure {code}")
        self.code = code


class RetryableError(Exception):
    pass


class OtherError(Exception):
    pass


class UnpicklableError(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def _wait_until(predicate, what, timeout=TASK_DEADLINE_S):
    """The in-task counterpart of helpers.wait_for (workers cannot fail a test)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.002)


def _rendezvous(directory, parties):
    """Announce this task in ``directory``; return once ``parties`` tasks have."""
    with open(os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex}"), "w"):
        pass
    _wait_until(lambda: len(os.listdir(directory)) >= parties, f"{parties} tasks to meet")


def _count_attempt(path):
    """Record one attempt in ``path``; return how many there have been, this one included."""
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        return len(f.read())


@purerun.remote
def identity(x):
    return x


@purerun.remote
def add(a, b=10, *, scale=1):
    return (a + b) * scale


@purerun.remote
def fail(message):
    raise ValueError(message)


@purerun.remote
def fib(n):
    if n < 2:
        return n
    return sum(purerun.get([fib.remote(n - 1), fib.remote(n - 2)]))


@purerun.remote
def tree(depth):
    """A binary tree of tasks; returns the number of its leaves."""
    if depth == 0:
        return 1
    return sum(purerun.get([tree.remote(depth - 1), tree.remote(depth - 1)]))


@purerun.remote
def meet(directory, parties):
    _rendezvous(directory, parties)
    return os.getpid()


@pytest.fixture
def no_cluster():
    """For tests with their own cluster: none may be running, and theirs is shut down."""
    assert not purerun.is_initialized(), (
        "a cluster is already running: tests with their own cluster must come before the "
        "first test that uses the module's shared cluster")
    yield
    purerun.shutdown()


# --- tests with their own cluster ------------------------------------------------------------


def test_recursive_tasks_finish_on_one_cpu(no_cluster):
    # Each parent blocks in get() on its children: without lending its CPU while blocked,
    # the first child could never start.
    purerun.init(num_cpus=1)
    assert purerun.get(fib.remote(6), timeout=60) == 8
    assert purerun.get(tree.remote(6), timeout=60) == 64


def test_workers_start_in_the_drivers_cwd_with_its_sys_path(no_cluster, tmp_path, monkeypatch):
    module_name = f"user_module_{uuid.uuid4().hex}"
    (tmp_path / f"{module_name}.py").write_text(textwrap.dedent("""
        class Point:
            def __init__(self, x, y):
                self.x = x
                self.y = y

            def norm2(self):
                return self.x * self.x + self.y * self.y
    """))
    (tmp_path / "data.txt").write_text("relative file")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    try:
        module = importlib.import_module(module_name)
        purerun.init(num_cpus=1)

        @purerun.remote
        def use_point(point):
            with open("data.txt") as f:
                text = f.read()
            return point.y, point.norm2(), type(point).__module__, os.getcwd(), text

        y, norm2, where, cwd, text = purerun.get(use_point.remote(module.Point(3, 4)))
        assert (y, norm2, where) == (4, 25, module_name)
        assert os.path.samefile(cwd, tmp_path)
        assert text == "relative file"
    finally:
        sys.modules.pop(module_name, None)


# --- everything below shares one cluster ----------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    purerun.init(num_cpus=2, num_gpus=2, resources={"custom": 1})
    yield
    purerun.shutdown()


@pytest.fixture
def meeting(cluster, tmp_path):
    """An empty directory for one rendezvous."""
    directory = tmp_path / "meeting"
    directory.mkdir()
    return str(directory)


# --- arguments -------------------------------------------------------------------------------


def test_arguments_are_bound_like_a_local_call(cluster):
    assert purerun.get(add.remote(1)) == 11
    assert purerun.get(add.remote(1, 2)) == 3
    assert purerun.get(add.remote(a=1, b=2, scale=3)) == 9
    assert purerun.get(add.remote(1, scale=2)) == 22


@pytest.mark.parametrize("args, kwargs", [
    pytest.param((), {}, id="missing-argument"),
    pytest.param((1, 2, 3), {}, id="too-many"),
    pytest.param((1,), {"c": 3}, id="unknown-keyword"),
    pytest.param((1,), {"a": 1}, id="given-twice"),
    pytest.param((1, 2, 3), {"scale": 1}, id="keyword-only-given-positionally"),
])
def test_a_wrong_call_fails_in_the_caller_at_remote_time(cluster, args, kwargs):
    with pytest.raises(TypeError):
        add.remote(*args, **kwargs)


def test_an_unpicklable_argument_fails_at_remote_time_naming_its_type(cluster):
    with pytest.raises(TypeError, match="lock"):
        identity.remote(threading.Lock())
    with pytest.raises(TypeError, match="lock"):
        add.remote([1, threading.Lock()], b=[2])


def test_refs_given_by_keyword_and_twice_arrive_as_values(cluster):
    two, three = purerun.put(2), purerun.put(3)
    assert purerun.get(add.remote(two, b=three, scale=two)) == 10
    assert purerun.get(add.remote(two, two)) == 4


def test_many_small_tasks(cluster):
    refs = [add.remote(i, 0) for i in range(2000)]
    assert purerun.get(refs, timeout=120) == list(range(2000))


def test_arguments_of_many_kinds_arrive_intact(cluster):
    value = {"tuple": (1, 2.5, "s", b"b", None), "set": {1, 2}, "nested": [[{"k": [1]}]],
             "big int": 2 ** 100, "class": CustomError, "builtin": len}
    assert purerun.get(identity.remote(value)) == value


# --- num_returns -------------------------------------------------------------------------------


@purerun.remote(num_returns=3)
def three():
    return 1, "two", [3]


@purerun.remote(num_return_vals=2)
def two_old_style():
    return "a", "b"


def test_num_returns_gives_one_ref_per_value(cluster):
    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert all(isinstance(r, purerun.ObjectRef) for r in refs)
    assert purerun.get(refs) == [1, "two", [3]]
    assert purerun.get(refs[1]) == "two"


def test_num_return_vals_is_the_old_name_of_num_returns(cluster):
    a, b = two_old_style.remote()
    assert purerun.get([a, b]) == ["a", "b"]
    c, d = identity.options(num_return_vals=2).remote(("c", "d"))
    assert purerun.get([c, d]) == ["c", "d"]


def test_num_returns_zero_returns_none_and_still_runs_the_task(cluster, tmp_path):
    marker = tmp_path / "ran"

    @purerun.remote(num_returns=0)
    def touch(path):
        with open(path, "w"):
            pass

    assert touch.remote(str(marker)) is None
    wait_for(marker.exists, timeout=TASK_DEADLINE_S, message="the num_returns=0 task to run")


@pytest.mark.parametrize("returned", [
    pytest.param((1, 2, 3), id="too-many"),
    pytest.param((1,), id="too-few"),
    pytest.param(7, id="not-iterable"),
])
def test_returning_the_wrong_number_of_values_fails_every_return(cluster, returned):
    refs = identity.options(num_returns=2).remote(returned)
    for ref in refs:
        with pytest.raises(exceptions.RayTaskError) as info:
            purerun.get(ref, timeout=TASK_DEADLINE_S)
        assert isinstance(info.value, ValueError)
        assert "num_returns=2" in str(info.value)


def test_num_returns_zero_task_returning_a_value_does_not_block_the_worker(cluster):
    # Returning a value from a num_returns=0 task is an error nobody can get(): the task
    # must still complete and give its worker back.
    refs = [identity.options(num_returns=0).remote(1) for _ in range(3)]
    assert refs == [None, None, None]
    assert purerun.get(identity.remote("after"), timeout=TASK_DEADLINE_S) == "after"


# --- resources --------------------------------------------------------------------------------


def test_fractional_cpus_let_four_tasks_run_at_once_on_two_cpus(meeting):
    refs = [meet.options(num_cpus=0.5).remote(meeting, 4) for _ in range(4)]
    pids = purerun.get(refs, timeout=TASK_DEADLINE_S)
    assert len(set(pids)) == 4


def test_a_task_needing_two_cpus_runs_alone(meeting):
    # Proves the CPU limit is enforced: the 2-CPU task cannot meet a 1-CPU task.
    big = meet.options(num_cpus=2).remote(meeting, 2)
    small = meet.options(num_cpus=1).remote(meeting, 2)
    wait_for(lambda: os.listdir(meeting), timeout=TASK_DEADLINE_S,
             message="one of the tasks to start")
    # Give the other one the chance to start wrongly (the two would meet and finish).
    ready, _ = purerun.wait([big, small], timeout=1.0)
    assert ready == []
    assert len(os.listdir(meeting)) == 1
    purerun.cancel(small)
    purerun.cancel(big)
    for ref in (big, small):
        with pytest.raises((exceptions.TaskCancelledError, exceptions.RayTaskError)):
            purerun.get(ref, timeout=TASK_DEADLINE_S)


def test_custom_resource_lets_one_task_run_at_a_time(tmp_path, cluster):
    # Three tasks each need the single unit of "custom" (and half a CPU, so CPUs are not
    # what limits them). Each one, while it runs, marks itself active with an exclusive
    # file and waits for the test to release it: a second task running at the same time
    # would find the mark taken and report it.
    active = str(tmp_path / "active")

    @purerun.remote(resources={"custom": 1}, num_cpus=0.5)
    def exclusive(index, release):
        try:
            fd = os.open(active, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return f"task {index} overlapped another task"
        os.write(fd, str(index).encode())
        os.close(fd)
        _wait_until(lambda: os.path.exists(release), release)
        os.unlink(active)
        return f"task {index} ran alone"

    def holder():
        try:
            with open(active) as f:
                return f.read()  # empty until the task has written its index
        except FileNotFoundError:
            return None

    releases = [str(tmp_path / f"release-{i}") for i in range(3)]
    refs = [exclusive.remote(i, releases[i]) for i in range(3)]
    finished = []
    for _ in range(3):
        running = int(wait_for(holder, timeout=TASK_DEADLINE_S,
                               message="a task to hold 'custom'"))
        assert "custom" not in purerun.available_resources()
        # Give a wrongly dispatched second task the chance to show up (it would finish at
        # once, reporting the overlap) before the running one is released.
        others = [r for i, r in enumerate(refs) if i != running and i not in finished]
        ready, _ = purerun.wait(others, timeout=0.5) if others else ([], [])
        assert ready == [], purerun.get(ready)
        with open(releases[running], "w"):
            pass
        assert purerun.get(refs[running], timeout=TASK_DEADLINE_S) == f"task {running} ran alone"
        finished.append(running)
    assert sorted(finished) == [0, 1, 2]


@purerun.remote(num_gpus=1)
def gpu_task(directory, parties):
    _rendezvous(directory, parties)
    return purerun.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_gpu_tasks_get_their_own_gpu_ids_and_cuda_visible_devices(meeting):
    first, second = purerun.get([gpu_task.remote(meeting, 2), gpu_task.remote(meeting, 2)],
                                timeout=TASK_DEADLINE_S)
    for ids, visible in (first, second):
        assert len(ids) == 1
        assert visible == ",".join(str(i) for i in ids)
    assert sorted(first[0] + second[0]) == [0, 1]


def test_cuda_visible_devices_is_restored_for_tasks_without_gpus(meeting):
    @purerun.remote(num_gpus=0)
    def visible():
        return purerun.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    # Both workers of the pool have run a GPU task; tasks without GPUs see the
    # environment the workers started with.
    purerun.get([gpu_task.remote(meeting, 2) for _ in range(2)], timeout=TASK_DEADLINE_S)
    for ids, seen in purerun.get([visible.remote() for _ in range(4)], timeout=TASK_DEADLINE_S):
        assert ids == []
        assert seen == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_memory_option_is_accepted(cluster):
    assert purerun.get(identity.options(memory=100 * 1024 * 1024).remote("m")) == "m"

    @purerun.remote(memory=10 * 1024 * 1024)
    def with_memory():
        return "ok"

    assert purerun.get(with_memory.remote()) == "ok"


def test_infeasible_task_logs_a_warning_instead_of_hanging(cluster, caplog):
    caplog.set_level(logging.WARNING, logger="purerun")
    too_big = identity.options(num_cpus=100).remote("never")
    missing = identity.options(resources={"no_such_resource": 1}).remote("never")

    def warned(*words):
        return [r for r in caplog.records
                if r.name.startswith("purerun") and r.levelno >= logging.WARNING
                and all(word in r.getMessage() for word in words)]

    wait_for(lambda: warned("identity", "CPU", "100"), timeout=TASK_DEADLINE_S,
             message="a warning naming the task that asks for 100 CPUs")
    wait_for(lambda: warned("identity", "no_such_resource"), timeout=TASK_DEADLINE_S,
             message="a warning naming the task that asks for a missing resource")
    # The node keeps working, and the infeasible tasks can be cancelled.
    assert purerun.get(identity.remote("alive"), timeout=TASK_DEADLINE_S) == "alive"
    for ref in (too_big, missing):
        purerun.cancel(ref)
        with pytest.raises(exceptions.TaskCancelledError):
            purerun.get(ref, timeout=TASK_DEADLINE_S)


# --- max_calls and retries ----------------------------------------------------------------------


@purerun.remote(max_calls=1)
def pid_once():
    return os.getpid()


def test_max_calls_one_runs_each_call_in_a_new_worker(cluster):
    first = purerun.get(pid_once.remote())
    second = purerun.get(pid_once.remote())
    assert first != second

    def gone():
        try:
            return psutil.Process(first).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, timeout=TASK_DEADLINE_S, message="the max_calls=1 worker to exit")


@purerun.remote
def crash_once(marker, how):
    """Kill this worker on the first attempt (``marker`` remembers it); then succeed."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        if how == "exit":
            os._exit(1)
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_task_whose_worker_dies_is_retried(cluster, tmp_path, how):
    marker = tmp_path / "crashed"
    pid = purerun.get(crash_once.options(max_retries=1).remote(str(marker), how),
                      timeout=TASK_DEADLINE_S)
    assert marker.exists()
    assert pid != int(marker.read_text())


def test_a_retried_task_gets_its_arguments_again(cluster, tmp_path):
    @purerun.remote(max_retries=1)
    def crash_once_with(marker, array, value):
        if not os.path.exists(marker):
            with open(marker, "w"):
                pass
            os._exit(1)
        return float(array.sum()) + value

    import numpy as np
    array = np.ones(1_000_000)  # too large to travel inline: stored, and kept for the retry
    ref = crash_once_with.remote(str(tmp_path / "crashed"), array, purerun.put(0.5))
    assert purerun.get(ref, timeout=TASK_DEADLINE_S) == 1_000_000.5


def test_default_max_retries_retries_a_crashed_worker(cluster, tmp_path):
    marker = tmp_path / "crashed"
    assert purerun.get(crash_once.remote(str(marker), "sigkill"), timeout=TASK_DEADLINE_S)
    assert marker.exists()


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_with_max_retries_zero_a_crash_fails_with_worker_crashed_error(cluster, tmp_path, how):
    marker = tmp_path / "crashed"
    with pytest.raises(exceptions.WorkerCrashedError):
        purerun.get(crash_once.options(max_retries=0).remote(str(marker), how),
                    timeout=TASK_DEADLINE_S)
    assert marker.exists()
    # The cluster replaces the dead worker.
    assert purerun.get(identity.remote("next"), timeout=TASK_DEADLINE_S) == "next"


@purerun.remote
def flaky(counter, failures, error_name):
    """Raise ``error_name`` on the first ``failures`` attempts, then return the attempt."""
    attempt = _count_attempt(counter)
    if attempt <= failures:
        raise {"RetryableError": RetryableError, "OtherError": OtherError}[error_name](
            f"attempt {attempt}")
    return attempt


def test_retry_exceptions_true_retries_any_exception(cluster, tmp_path):
    counter = str(tmp_path / "attempts")
    ref = flaky.options(max_retries=3, retry_exceptions=True).remote(counter, 2, "OtherError")
    assert purerun.get(ref, timeout=TASK_DEADLINE_S) == 3


def test_retry_exceptions_gives_up_after_max_retries(cluster, tmp_path):
    counter = tmp_path / "attempts"
    ref = flaky.options(max_retries=1, retry_exceptions=True).remote(str(counter), 5,
                                                                     "OtherError")
    with pytest.raises(OtherError, match="attempt 2"):
        purerun.get(ref, timeout=TASK_DEADLINE_S)
    assert counter.read_text() == "xx"


def test_retry_exceptions_list_retries_only_the_listed_types(cluster, tmp_path):
    listed = tmp_path / "listed"
    ref = flaky.options(max_retries=3, retry_exceptions=[RetryableError]).remote(
        str(listed), 2, "RetryableError")
    assert purerun.get(ref, timeout=TASK_DEADLINE_S) == 3

    other = tmp_path / "other"
    ref = flaky.options(max_retries=3, retry_exceptions=[RetryableError]).remote(
        str(other), 2, "OtherError")
    with pytest.raises(OtherError, match="attempt 1"):
        purerun.get(ref, timeout=TASK_DEADLINE_S)
    assert other.read_text() == "x"


def test_exceptions_are_not_retried_by_default(cluster, tmp_path):
    counter = tmp_path / "attempts"
    with pytest.raises(OtherError):
        purerun.get(flaky.remote(str(counter), 1, "OtherError"), timeout=TASK_DEADLINE_S)
    assert counter.read_text() == "x"


# --- errors -----------------------------------------------------------------------------------


def test_get_raises_both_ray_task_error_and_the_original_type(cluster):
    with pytest.raises(ValueError) as info:
        purerun.get(fail.remote("bad value"), timeout=TASK_DEADLINE_S)
    error = info.value
    assert isinstance(error, exceptions.RayTaskError)
    assert isinstance(error, exceptions.RayError)
    text = str(error)
    assert "bad value" in text
    assert "raise ValueError(message)" in text  # the remote traceback
    assert "fail" in text
    assert isinstance(error.cause, ValueError)


def test_a_task_depending_on_a_failed_task_fails_with_its_error(cluster):
    failed = fail.remote("upstream")
    downstream = identity.remote(failed)
    further = add.remote(downstream, 1)
    for ref in (downstream, further):
        with pytest.raises(ValueError, match="upstream") as info:
            purerun.get(ref, timeout=TASK_DEADLINE_S)
        assert isinstance(info.value, exceptions.RayTaskError)
        assert "raise ValueError(message)" in str(info.value)


def test_an_error_raised_by_get_inside_a_task_propagates(cluster):
    @purerun.remote
    def get_failed():
        return purerun.get(fail.remote("nested"))

    with pytest.raises(ValueError, match="nested") as info:
        purerun.get(get_failed.remote(), timeout=TASK_DEADLINE_S)
    assert isinstance(info.value, exceptions.RayTaskError)


def test_custom_exception_classes_keep_their_type_and_state(cluster):
    @purerun.remote
    def raise_custom(code):
        raise CustomError(code)

    with pytest.raises(CustomError) as info:
        purerun.get(raise_custom.remote(7), timeout=TASK_DEADLINE_S)
    assert isinstance(info.value, exceptions.RayTaskError)
    assert info.value.code == 7
    assert "custom failure 7" in str(info.value)

    try:
        purerun.get(raise_custom.remote(8), timeout=TASK_DEADLINE_S)
    except CustomError as error:  # the way user code catches it
        assert error.code == 8


def test_an_unpicklable_exception_still_fails_the_task_with_its_text(cluster):
    @purerun.remote
    def raise_unpicklable():
        raise UnpicklableError("cannot travel")

    with pytest.raises(exceptions.RayTaskError) as info:
        purerun.get(raise_unpicklable.remote(), timeout=TASK_DEADLINE_S)
    text = str(info.value)
    assert "UnpicklableError" in text
    assert "cannot travel" in text
    # The worker survived and the cluster goes on.
    assert purerun.get(identity.remote(1), timeout=TASK_DEADLINE_S) == 1


def test_an_unpicklable_return_value_fails_the_task(cluster):
    @purerun.remote
    def return_lock():
        return threading.Lock()

    with pytest.raises(exceptions.RayTaskError) as info:
        purerun.get(return_lock.remote(), timeout=TASK_DEADLINE_S)
    assert "lock" in str(info.value)


def test_system_exit_in_a_task_ends_its_worker_and_is_retried(cluster):
    # As Ray: the worker exits (the driver does not); the task is retried, then it is
    # WorkerCrashedError. sys.exit(0) too: Ray retries it as well.
    @purerun.remote(max_retries=1)
    def exits(code, pids_dir):
        open(os.path.join(pids_dir, str(os.getpid())), "w").close()
        sys.exit(code)

    for code in (3, 0):
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as pids_dir:
            with pytest.raises(exceptions.WorkerCrashedError, match=r"tried 2 time\(s\)"):
                purerun.get(exits.remote(code, pids_dir), timeout=TASK_DEADLINE_S)
            assert len(os.listdir(pids_dir)) == 2  # two attempts, each in its own worker
    assert purerun.get(identity.remote(2), timeout=TASK_DEADLINE_S) == 2


# The failures at every phase of a task's life (and of an actor call's) are in
# test_crash_matrix.py.


class RefusesToPickle:
    def __reduce__(self):
        raise ValueError("not today")


def test_an_argument_whose_pickling_raises_raises_that_error_in_the_caller(cluster):
    # As Ray: what the value's own __reduce__ raises goes up unchanged; only what pickling
    # itself says of an unpicklable value (a TypeError) becomes the "could not serialize" one.
    @purerun.remote(max_retries=0)
    def run_with(argument):
        return "ran"

    with pytest.raises(ValueError, match="not today"):
        run_with.remote(RefusesToPickle())
    with pytest.raises(ValueError, match="not today"):
        purerun.put([RefusesToPickle()])
    with pytest.raises(TypeError, match="Could not serialize"):
        run_with.remote(threading.Lock())
    assert purerun.get(run_with.remote(1), timeout=TASK_DEADLINE_S) == "ran"


# --- nested tasks -------------------------------------------------------------------------------


def test_tasks_can_submit_tasks_and_pass_refs_around(cluster):
    @purerun.remote
    def fan_out(n):
        refs = [add.remote(i, 0) for i in range(n)]
        ready, _ = purerun.wait(refs, num_returns=n, timeout=TASK_DEADLINE_S)
        return sum(purerun.get(ready)), purerun.put("made inside")

    total, inner = purerun.get(fan_out.remote(10), timeout=TASK_DEADLINE_S)
    assert total == sum(range(10))
    assert purerun.get(inner) == "made inside"


def test_recursive_tasks_on_the_shared_cluster(cluster):
    assert purerun.get(fib.remote(7), timeout=60) == 13
