"""Suite-wide guards: a hang dumps every stack, and nothing may outlive the test that made it.

After every test (and again after every module and at the end of the session) the
``leak_guard`` fixtures check that

* no process started during that scope is still alive: descendants of this pytest
  process, found with psutil; and
* no shared-memory file ``/dev/shm/purerun*`` created during that scope still exists.

Both get ``LEAK_DEADLINE_S`` to go away (a shutdown may still be finishing), polled, never
slept through blindly. Whatever is left is named in the failure, then killed or removed so
that the following tests start clean.

Processes started by a process that already existed when the scope began (e.g. workers
that a module-scoped cluster's node spawns during a test) are that older process's
business: they are checked when its own scope ends, at the latest at the end of the
session.

Caveats:

* A process whose parent exits is re-parented to init and leaves this process tree, so
  the check cannot see it any more; such orphans are not reported.
* The /dev/shm check compares file names before and after, so two test sessions running
  at the same time on one machine would see each other's segments. Run one session per
  machine (or per container).
"""

import faulthandler
import glob
import os
import shutil
import signal
import sys
import tempfile
import time

import psutil
import pytest
from hypothesis import settings

from purerun.core import launcher

# Property and model tests draw the same examples on every CI run, so a failure there is
# reproducible from the log; elsewhere they explore new ones each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Processes and shared memory get this long to disappear after a test: enough for an
# orderly shutdown (stop workers, unlink the arena) on a loaded CI machine.
LEAK_DEADLINE_S = 10.0
# How often the deadline loop looks again: frequent enough not to slow the suite down.
LEAK_POLL_INTERVAL_S = 0.02
SHARED_MEMORY_GLOB = "/dev/shm/purerun*"
# Helper processes the standard library starts once and keeps for the interpreter's
# lifetime on purpose (shared-memory bookkeeping, the forkserver): not leaks.
_STDLIB_HELPERS = (
    "multiprocessing.resource_tracker",
    "multiprocessing.semaphore_tracker",
    "multiprocessing.forkserver",
)

# A crash (segfault, abort) dumps every thread's stack; so does `kill -USR1 <pytest pid>`,
# which helps find out where a slow or stuck run is. pytest-timeout (thread method, see
# pytest.ini) dumps all stacks itself when a test exceeds its timeout.
if sys.__stderr__ is not None and not faulthandler.is_enabled():
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
if sys.__stderr__ is not None and hasattr(signal, "SIGUSR1"):
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)


def _is_stdlib_helper(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(name in cmdline for name in _STDLIB_HELPERS)


def _live_descendants() -> dict:
    """Live descendants of this process: {(pid, create_time): Process}.

    create_time is part of the key so that a recycled pid is not taken for the old process.
    Zombies have exited already; they are not alive, only not yet reaped by their parent.
    """
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found[(proc.pid, proc.create_time())] = proc
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


class _Snapshot:
    """What existed when a scope began: its processes and shared-memory files."""

    def __init__(self):
        self.processes = set(_live_descendants())
        self.shared_memory = set(glob.glob(SHARED_MEMORY_GLOB))

    def new_processes(self) -> list:
        """Processes that appeared since, excluding those owned by an older process.

        The fork server nodes are forked from (core/forkserver.py) lives as long as this
        process on purpose: not a leak, and not an owner that excuses the nodes it forked.
        """
        current = _live_descendants()
        key_of_pid = {key[0]: key for key in current}
        forkserver = launcher.forkserver_pid()
        return [
            proc
            for key, proc in current.items()
            if key not in self.processes
            and not _is_stdlib_helper(proc)
            and proc.pid != forkserver
            and not self._has_older_ancestor(proc, current, key_of_pid, forkserver)
        ]

    def _has_older_ancestor(self, proc: psutil.Process, current: dict, key_of_pid: dict,
                            forkserver) -> bool:
        """Whether a process between ``proc`` and this pytest process predates the scope."""
        me = os.getpid()
        try:
            ppid = proc.ppid()
            while ppid != me and ppid in key_of_pid:
                key = key_of_pid[ppid]
                if key in self.processes and ppid != forkserver:
                    return True
                ppid = current[key].ppid()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
        return False

    def new_shared_memory(self) -> list:
        return sorted(set(glob.glob(SHARED_MEMORY_GLOB)) - self.shared_memory)


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline()) or proc.name()}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"pid {proc.pid}: (exited)"


def _check_nothing_leaked(snapshot: _Snapshot, scope: str) -> None:
    """Wait up to LEAK_DEADLINE_S for leftovers to go; fail naming (and cleaning) the rest."""
    deadline = time.monotonic() + LEAK_DEADLINE_S
    while True:
        processes = snapshot.new_processes()
        files = snapshot.new_shared_memory()
        if (not processes and not files) or time.monotonic() >= deadline:
            break
        time.sleep(LEAK_POLL_INTERVAL_S)
    if not processes and not files:
        return

    problems = []
    if processes:
        problems.append(
            f"{len(processes)} process(es) still alive {LEAK_DEADLINE_S:g} s after the "
            f"{scope} ended (now killed):\n" + "\n".join("  " + _describe(p) for p in processes)
        )
        for proc in processes:
            try:
                proc.kill()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        psutil.wait_procs(processes, timeout=5)
    if files:
        problems.append(
            f"{len(files)} shared-memory file(s) still present {LEAK_DEADLINE_S:g} s after the "
            f"{scope} ended (now removed):\n" + "\n".join("  " + f for f in files)
        )
        for path in files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    pytest.fail("Leaked by this " + scope + ":\n" + "\n".join(problems), pytrace=False)


SESSION_DIRS_GLOB = os.path.join(tempfile.gettempdir(), "purerun-sessions", "session_*")


@pytest.fixture(autouse=True, scope="session")
def leak_guard_session():
    """Fail the session if anything it started is still around at its end, including the
    session directories that nodes create (and must remove) under the temp dir."""
    snapshot = _Snapshot()
    session_dirs = set(glob.glob(SESSION_DIRS_GLOB))
    yield
    launcher.stop_forkserver()  # kept until now on purpose; it waits for its nodes
    _check_nothing_leaked(snapshot, "test session")
    left = sorted(set(glob.glob(SESSION_DIRS_GLOB)) - session_dirs)
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    if left:
        pytest.fail(f"{len(left)} purerun session director(y/ies) left behind (now removed):\n"
                    + "\n".join("  " + p for p in left), pytrace=False)


@pytest.fixture(autouse=True, scope="module")
def leak_guard_module(leak_guard_session):
    """Check after each module, so module-scoped fixtures' leftovers are caught there."""
    snapshot = _Snapshot()
    yield
    _check_nothing_leaked(snapshot, "test module")


@pytest.fixture(autouse=True)
def leak_guard(leak_guard_module):
    """Check after each test: autouse fixtures are set up first and torn down last, so
    this runs after the test's own fixtures have cleaned up."""
    snapshot = _Snapshot()
    yield
    _check_nothing_leaked(snapshot, "test")


@pytest.fixture(scope="module")
def node():
    """A purerun node with 2 CPUs, shared by the tests of one module (ask for it by name)."""
    import purerun
    info = purerun.init(num_cpus=2)
    try:
        yield info
    finally:
        purerun.shutdown()


@pytest.fixture(scope="module")
def two_nodes():
    """A ``Cluster``: a head node and ``.second``, 1 CPU each, this process connected."""
    from purerun.cluster_utils import Cluster
    c = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    c.second = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()
