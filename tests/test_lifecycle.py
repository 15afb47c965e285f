"""Nothing outlives a session: shutdown(), a driver that exits without shutdown(), a driver
that is killed while tasks run, and a node that dies under its driver.

Every test records the pids of the cluster it made (the node, every worker that ran a
task, and the worker of a task still running at the end) and the session directory, then
checks with psutil that all of them are gone, waiting with a deadline where the runtime
needs a moment to notice (a killed driver), never sleeping blindly.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil
import pytest

import purerun
from purerun import exceptions
from helpers import wait_for

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER_SCRIPT = os.path.join(REPO_ROOT, "tests", "scripts", "lifecycle_driver.py")
# How long a killed driver's cluster may take to go away.
CLEANUP_DEADLINE_S = 10.0
# How long a subprocess driver may take to start its cluster and run its first tasks.
STARTUP_DEADLINE_S = 60.0
TASK_DEADLINE_S = 30.0


@purerun.remote
def worker_pid(_):
    return os.getpid()


@purerun.remote(max_retries=0)
def run_until_file(started, path):
    with open(started, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + TASK_DEADLINE_S
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return "done"


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _alive_among(pids):
    return sorted(pid for pid in pids if _alive(pid))


def _processes_of_session(session_dir):
    """Live processes whose command line names the session: the node and its workers
    (workers are forked from the node and keep its command line)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if "purerun" in cmdline and session_dir in cmdline and _alive(proc.info["pid"]):
            found.append(proc.info["pid"])
    return sorted(found)


def _new_children(before):
    return {p.pid for p in psutil.Process().children(recursive=True)} - before


def _assert_all_gone(pids, session_dir, deadline=CLEANUP_DEADLINE_S):
    wait_for(lambda: not _alive_among(pids), timeout=deadline,
             message=f"processes {_alive_among(pids)} of the session to exit")
    wait_for(lambda: not _processes_of_session(session_dir), timeout=deadline,
             message=f"processes {_processes_of_session(session_dir)} naming "
                     f"{session_dir} to exit")
    wait_for(lambda: not os.path.exists(session_dir), timeout=deadline,
             message=f"the session directory {session_dir} to be removed")


@pytest.fixture
def no_cluster():
    assert not purerun.is_initialized()
    yield
    purerun.shutdown()


# --- shutdown() in this process --------------------------------------------------------------


def test_shutdown_stops_every_process_and_removes_the_session_dir(no_cluster, tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    info = purerun.init(num_cpus=2)
    session_dir = info["session_dir"]
    assert os.path.isdir(session_dir)
    assert os.path.commonpath([session_dir, tempfile.gettempdir()]) == tempfile.gettempdir()
    pids = set(purerun.get([worker_pid.remote(i) for i in range(6)]))
    started = tmp_path / "started"
    running = run_until_file.remote(str(started), str(tmp_path / "never"))
    wait_for(lambda: started.exists() and started.read_text(), timeout=TASK_DEADLINE_S,
             message="the long task to start")
    pids.add(int(started.read_text()))
    pids |= _new_children(before)
    assert len(pids) >= 2  # the node and at least one worker
    assert set(_processes_of_session(session_dir)) <= pids | _new_children(before)

    purerun.shutdown()
    # shutdown() returns once the node has stopped its workers and exited.
    assert _alive_among(pids) == []
    assert _processes_of_session(session_dir) == []
    assert not os.path.exists(session_dir)
    assert _alive_among(_new_children(before)) == []
    del running


def test_shutdown_while_a_task_blocks_in_get_does_not_hang(no_cluster, tmp_path):
    info = purerun.init(num_cpus=2)

    @purerun.remote
    def waits_on(refs):
        return purerun.get(refs[0])

    started = tmp_path / "started"
    blocked = waits_on.remote([run_until_file.remote(str(started), str(tmp_path / "never"))])
    wait_for(started.exists, timeout=TASK_DEADLINE_S, message="the inner task to start")
    purerun.shutdown()
    assert not os.path.exists(info["session_dir"])
    assert _processes_of_session(info["session_dir"]) == []
    del blocked


def _session_dir_of_node(node):
    """The session directory named in the node's command line (its JSON config).

    Read from there rather than from init()'s result, which waits for the node to answer:
    the test below must not give the node that time.
    """
    for arg in node.cmdline():
        if '"session_dir"' in arg:
            return json.loads(arg)["session_dir"]
    raise AssertionError(f"no session_dir in the command line of {node}")


def test_shutdown_right_after_init_cleans_up_quietly(no_cluster, capfd):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    purerun.init(num_cpus=1)
    nodes = [psutil.Process(pid) for pid in _new_children(before)]
    assert len(nodes) == 1
    session_dir = _session_dir_of_node(nodes[0])
    try:
        purerun.shutdown()  # very likely before the node has even finished starting
        assert not _alive(nodes[0].pid)
        assert not os.path.exists(session_dir), "the session directory was left behind"
        assert "Traceback" not in capfd.readouterr().err
    finally:
        shutil.rmtree(session_dir, ignore_errors=True)


def test_init_shutdown_cycles_leave_no_threads_descriptors_or_mappings(no_cluster):
    import numpy as np

    def arena_mappings():
        with open("/proc/self/maps") as maps:
            return sum("purerun-arena" in line for line in maps)

    def runtime_threads():
        return [t.name for t in threading.enumerate() if t.name.startswith("purerun")]

    fds_before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        purerun.init(num_cpus=1, object_store_memory=64 * 1024 * 1024)
        view = purerun.get(purerun.put(np.arange(1_000_000.0)))
        assert float(view[-1]) == 999_999.0
        del view
        purerun.shutdown()
    wait_for(lambda: not runtime_threads(), timeout=CLEANUP_DEADLINE_S,
             message=f"the runtime's threads {runtime_threads()} to end")
    assert arena_mappings() == 0
    wait_for(lambda: set(os.listdir("/proc/self/fd")) <= fds_before,
             timeout=CLEANUP_DEADLINE_S, message="descriptors opened by the runtime to close")


def test_a_zero_copy_view_stays_readable_after_shutdown(no_cluster):
    import numpy as np

    purerun.init(num_cpus=1, object_store_memory=64 * 1024 * 1024)
    view = purerun.get(purerun.put(np.arange(1_000_000.0)))
    purerun.shutdown()
    # The mapping lives as long as the view: reading it must not crash this process.
    assert float(view.sum()) == float(np.arange(1_000_000.0).sum())


# --- drivers in a subprocess -------------------------------------------------------------------


class Driver:
    """A driver script in a subprocess, its stdout and stderr read line by line on threads."""

    def __init__(self, work_dir):
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                            os.environ.get("PYTHONPATH")])))
        env.pop("PURERUN_ADDRESS", None)
        self.proc = subprocess.Popen(
            [sys.executable, DRIVER_SCRIPT, str(work_dir)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=str(work_dir))
        self.session_dir = None
        self.lines = queue.Queue()  # stdout lines, then None at its end
        self.stderr = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append),
                             daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line)
        put(None)

    def info(self, timeout=STARTUP_DEADLINE_S):
        """The INFO the script prints once its cluster runs, plus the cluster's pids."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"the driver printed no INFO within {timeout} s; "
                                     f"stderr:\n{''.join(filter(None, self.stderr))}")
            if line.startswith("INFO "):
                info = json.loads(line[len("INFO "):])
                self.session_dir = info["session_dir"]
                # The node is the driver's child; workers are the node's children.
                info["cluster_pids"] = {p.pid for p in
                                        psutil.Process(self.proc.pid).children(recursive=True)}
                return info

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.session_dir is not None:
            # Whatever is left of its cluster was reported by the test; do not let it
            # outlive the test (orphans are out of sight of the suite's leak guard).
            for pid in _processes_of_session(self.session_dir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.stdin.close()
        # A leaked process may still hold the pipes open: closing a pipe that a pump is
        # blocked reading would block too, so only close those that reached their end.
        for pump, stream in zip(self._pumps, (self.proc.stdout, self.proc.stderr)):
            pump.join(CLEANUP_DEADLINE_S)
            if not pump.is_alive():
                stream.close()


@pytest.fixture
def driver_factory(tmp_path):
    drivers = []

    def start():
        work_dir = tmp_path / f"driver-{uuid.uuid4().hex[:8]}"
        work_dir.mkdir()
        driver = Driver(work_dir)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.close()


def _all_pids(info):
    return set(info["worker_pids"]) | {info["long_task_pid"]} | info["cluster_pids"]


def test_a_driver_that_exits_without_shutdown_leaves_nothing(driver_factory):
    driver = driver_factory()
    info = driver.info()
    assert info["long_task_pid"] in info["cluster_pids"]
    driver.proc.stdin.close()  # the script returns, its long task still running
    assert driver.proc.wait(timeout=STARTUP_DEADLINE_S) == 0, "".join(driver.stderr)
    # The atexit handler shut the cluster down before the interpreter exited.
    _assert_all_gone(_all_pids(info), info["session_dir"], deadline=1.0)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_driver_leaves_nothing(driver_factory, sig):
    driver = driver_factory()
    info = driver.info()
    pids = _all_pids(info)
    assert info["long_task_pid"] in info["cluster_pids"]
    assert set(info["worker_pids"]) <= info["cluster_pids"]
    assert _alive_among(pids)
    os.kill(driver.proc.pid, sig)
    assert driver.proc.wait(timeout=CLEANUP_DEADLINE_S) == -sig
    _assert_all_gone(pids, info["session_dir"])


# --- the node dies under its driver ---------------------------------------------------------


def test_a_dead_node_fails_waiting_gets_instead_of_hanging(no_cluster, tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    info = purerun.init(num_cpus=2)
    session_dir = info["session_dir"]
    started = tmp_path / "started"
    pending = run_until_file.remote(str(started), str(tmp_path / "never"))
    wait_for(started.exists, timeout=TASK_DEADLINE_S, message="the task to start")
    cluster = _new_children(before)
    nodes = [pid for pid in cluster if psutil.Process(pid).ppid() == os.getpid()]
    assert len(nodes) == 1
    try:
        os.kill(nodes[0], signal.SIGKILL)
        with pytest.raises(exceptions.RayError):
            purerun.get(pending, timeout=TASK_DEADLINE_S)
        # Workers notice that their node is gone and exit.
        wait_for(lambda: not _alive_among(cluster), timeout=CLEANUP_DEADLINE_S,
                 message=f"workers {_alive_among(cluster)} of the killed node to exit")
        purerun.shutdown()
        assert not purerun.is_initialized()
        # The node could not clean up after itself: the driver that started it did.
        assert not os.path.exists(session_dir)
    finally:
        shutil.rmtree(session_dir, ignore_errors=True)


def test_calls_blocked_when_the_node_dies_and_every_later_call_say_how_it_died(no_cluster,
                                                                              tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    info = purerun.init(num_cpus=2)
    session_dir = info["session_dir"]
    started = tmp_path / "started"
    pending = run_until_file.remote(str(started), str(tmp_path / "never"))
    wait_for(started.exists, timeout=TASK_DEADLINE_S, message="the task to start")
    cluster = _new_children(before)
    node = next(pid for pid in cluster if psutil.Process(pid).ppid() == os.getpid())
    outcomes = queue.Queue()

    def blocked(call):
        try:
            outcomes.put(("returned", call()))
        except BaseException as exc:
            outcomes.put(("raised", exc))

    threads = [threading.Thread(target=blocked, args=(call,), daemon=True)
               for call in (lambda: purerun.get(pending), lambda: purerun.wait([pending]))]
    for thread in threads:
        thread.start()
    try:
        os.kill(node, signal.SIGKILL)
        said = f"the purerun node process (pid {node}) was killed by SIGKILL"
        for _ in threads:
            how, what = outcomes.get(timeout=TASK_DEADLINE_S)
            assert how == "raised" and isinstance(what, exceptions.RaySystemError), what
            assert said in str(what)
        for later in (lambda: purerun.get(pending), lambda: purerun.wait([pending]),
                      lambda: purerun.put(1), lambda: run_until_file.remote("a", "b")):
            with pytest.raises(exceptions.RaySystemError, match=re.escape(said)):
                later()
        wait_for(lambda: not _alive_among(cluster), timeout=CLEANUP_DEADLINE_S,
                 message=f"workers {_alive_among(cluster)} of the killed node to exit")
        purerun.shutdown()
    finally:
        shutil.rmtree(session_dir, ignore_errors=True)
