"""The processes a task starts die with the session, and a worker's death is seen at once.

* A child a task started (``subprocess.Popen``) and a grandchild that detached from it (a
  double fork with ``setsid``) are gone after ``shutdown()``, after the driver is killed,
  and after the worker that started them dies (the node is their subreaper).
* A worker that exits while a child it forked holds its socket open is seen dead at once
  (the node watches its pid): its task fails with WorkerCrashedError, or runs again.

Every wait has a deadline; nothing sleeps to let things settle.
"""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import purerun
from purerun import exceptions
from helpers import wait_for

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER_SCRIPT = os.path.join(REPO_ROOT, "tests", "scripts", "subprocess_driver.py")
# How long the processes of a session may take to go once it ended.
GONE_DEADLINE_S = 10.0
# How long a driver script gets to start its cluster and run its task.
STARTUP_DEADLINE_S = 60.0
# How long a task whose worker died may take to fail (or run again): far below the life of
# the child that keeps the worker's socket open.
NOTICE_DEADLINE_S = 20.0
# The life of the processes the tasks start: longer than any test.
SLEEP_S = "300"


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _assert_gone(pids):
    try:
        wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=GONE_DEADLINE_S,
                 message=f"processes {[pid for pid in pids if _alive(pid)]} to be gone")
    finally:   # whatever failed, leave nothing behind (an orphan escapes the leak guard)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _double_fork_sleep():
    """Start ``sleep`` detached (double fork, setsid); returns its pid."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.setsid()
            daemon = os.fork()
            if daemon == 0:
                os.execvp("sleep", ["sleep", SLEEP_S])
            os.write(write, str(daemon).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(middle, 0)
    with os.fdopen(read) as f:
        return int(f.read())


@purerun.remote
def start_processes():
    child = subprocess.Popen(["sleep", SLEEP_S])
    return [child.pid, _double_fork_sleep()]


@pytest.fixture
def session():
    assert not purerun.is_initialized()
    purerun.init(num_cpus=1)
    yield
    purerun.shutdown()


def test_a_task_s_processes_die_at_shutdown(session):
    pids = purerun.get(start_processes.remote())
    assert all(_alive(pid) for pid in pids)
    purerun.shutdown()
    _assert_gone(pids)


def test_a_task_s_processes_die_with_an_actor(session):
    @purerun.remote
    class Starter:
        def start(self):
            return purerun.get(start_processes.remote()) + [
                subprocess.Popen(["sleep", SLEEP_S]).pid, _double_fork_sleep()]

    starter = Starter.remote()
    pids = purerun.get(starter.start.remote())
    assert all(_alive(pid) for pid in pids)
    # They live as long as the worker that started them: a detached one is not taken for
    # an orphan while its worker runs.
    assert all(_alive(pid) for pid in purerun.get(start_processes.remote()))
    purerun.kill(starter)
    _assert_gone(pids[2:])
    purerun.shutdown()
    _assert_gone(pids)


def test_a_task_s_processes_die_with_its_worker(session, tmp_path):
    pids_file = tmp_path / "pids"

    @purerun.remote(max_retries=0)
    def start_and_die(path):
        pids = [subprocess.Popen(["sleep", SLEEP_S]).pid, _double_fork_sleep()]
        with open(path, "w") as f:
            json.dump(pids, f)
        os._exit(1)

    with pytest.raises(exceptions.WorkerCrashedError):
        purerun.get(start_and_die.remote(str(pids_file)), timeout=NOTICE_DEADLINE_S)
    pids = json.loads(pids_file.read_text())
    _assert_gone(pids)   # while the session goes on
    assert purerun.get(purerun.remote(lambda: 7).remote()) == 7


@pytest.mark.timeout(120)
def test_a_task_s_processes_die_with_a_killed_driver(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                        os.environ.get("PYTHONPATH")])))
    env.pop("PURERUN_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, DRIVER_SCRIPT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    pids = []
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        for line in driver.stdout:   # the script prints INFO within seconds, or exits
            if line.startswith("INFO "):
                info = json.loads(line[len("INFO "):])
                pids = [info["child"], info["daemon"]]
                break
            assert time.monotonic() < deadline, "the driver printed no INFO in time"
        assert pids, "the driver exited without printing INFO"
        assert all(_alive(pid) for pid in pids)
        driver.kill()
        assert driver.wait(timeout=GONE_DEADLINE_S) == -signal.SIGKILL
        _assert_gone(pids + [info["worker"]])
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
        driver.stdin.close()
        driver.stdout.close()


# --- a worker's death, while a child it forked holds its socket ------------------------------


def _fork_sleeper_and_exit():
    """Fork a child that inherits everything (the worker's socket too) and sleeps; exit."""
    if os.fork() == 0:
        time.sleep(float(SLEEP_S))
        os._exit(0)
    os._exit(1)


def test_a_worker_that_dies_under_a_forked_child_fails_its_task_at_once(session):
    @purerun.remote(max_retries=0)
    def forks_then_dies():
        _fork_sleeper_and_exit()

    start = time.monotonic()
    with pytest.raises(exceptions.WorkerCrashedError):
        purerun.get(forks_then_dies.remote(), timeout=NOTICE_DEADLINE_S)
    assert time.monotonic() - start < NOTICE_DEADLINE_S


def test_a_worker_that_dies_under_a_forked_child_has_its_task_retried(session, tmp_path):
    marker = tmp_path / "first-attempt"

    @purerun.remote(max_retries=1)
    def forks_then_dies_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            _fork_sleeper_and_exit()
        return "second attempt"

    assert purerun.get(forks_then_dies_once.remote(str(marker)),
                       timeout=NOTICE_DEADLINE_S) == "second attempt"


def test_what_a_worker_sent_before_it_died_is_not_lost(session):
    # max_calls=1: the worker reports the result, then exits at once; its exit may be seen
    # before its last message is read.
    @purerun.remote(max_calls=1)
    def value(i):
        return i * 2

    assert purerun.get([value.remote(i) for i in range(20)]) == [i * 2 for i in range(20)]


def test_the_nodes_walk_of_descendants_finds_what_a_scan_of_every_process_finds(tmp_path):
    from purerun.core.proctree import with_descendants as _with_descendants
    from purerun.core.proctree import with_descendants_psutil as _with_descendants_psutil
    ready = tmp_path / "ready"
    # Below the shell: a sleep, and a subshell with a sleep of its own below it.
    tree = subprocess.Popen(
        ["bash", "-c", "sleep 300 & (sleep 300 & wait) & touch " + str(ready) + "; wait"])
    try:
        wait_for(lambda: ready.exists() and len(_with_descendants_psutil([tree.pid])) == 4,
                 message="the process tree to start")
        walked = _with_descendants([tree.pid])
        assert walked[0] == tree.pid   # parents first
        assert sorted(walked) == sorted(_with_descendants_psutil([tree.pid]))
        assert _with_descendants([2 ** 22 + 12345]) == [2 ** 22 + 12345]   # no such process
    finally:
        for pid in reversed(_with_descendants([tree.pid])):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        tree.wait()
