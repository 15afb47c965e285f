"""Crash matrices: a fault injected at each phase of a call's life, for tasks and for actor
calls, ends in its exact outcome (Ray's), never a hang; and the next call on the same cluster
succeeds.

Phases, in the order a call lives them::

    pickling the arguments       in the caller, in .remote()
    unpickling the arguments     in the worker; small ones travel in the call, large ones
                                 through the arena
    running                      in the worker
    pickling the result          in the worker
    unpickling the result        in the caller, in get()

Faults: ``error`` raises RuntimeError, ``exit`` calls sys.exit(3), ``crash`` calls
os._exit(3). Tasks run with max_retries=1, actors with max_restarts=0.

Tasks::

    phase               error                          exit                crash
    pickle arguments    RuntimeError from .remote()    SystemExit from     the caller dies
                                                       .remote()           (its node goes)
    unpickle arguments  RayTaskError(RaySystemError):  WorkerCrashedError  WorkerCrashedError
                        "At least one of the input     after 2 attempts    after 2 attempts
                        arguments ... could not be
                        computed"
    run                 RayTaskError(RuntimeError)     WorkerCrashedError  WorkerCrashedError
                                                       after 2 attempts    after 2 attempts
    pickle result       RayTaskError(RuntimeError)     WorkerCrashedError  WorkerCrashedError
                                                       after 2 attempts    after 2 attempts
    unpickle result     RaySystemError from get()      SystemExit from     the caller dies
                                                       get()               (its node goes)

Actor calls (the actor stays alive after an error, dies after an exit or a crash)::

    phase               error                          exit                crash
    pickle arguments    RuntimeError from .remote()    SystemExit from     the caller dies
                                                       .remote()
    unpickle arguments  RayTaskError(RaySystemError),  ActorDiedError      ActorDiedError
                        as for tasks
    run                 RayTaskError(RuntimeError)     ActorDiedError      ActorDiedError
    pickle result       RayTaskError(RuntimeError)     ActorDiedError      ActorDiedError
    unpickle result     RaySystemError from get()      SystemExit from     the caller dies
                                                       get()

The "caller dies" cells run in a driver subprocess (tests/scripts/crash_matrix_driver.py).
Beyond the matrices: sys.exit(0) in an actor is an intended exit (never restarted), any other
exit a death (restarted when max_restarts allows), another BaseException is as an exit, and a
KeyboardInterrupt a call raises itself is TaskCancelledError (all as in Ray).
"""

import os
import subprocess
import sys

import psutil
import pytest

import purerun
from purerun import exceptions
from helpers import wait_for

CALL_DEADLINE_S = 30.0
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRASH_DRIVER = os.path.join(REPO_ROOT, "tests", "scripts", "crash_matrix_driver.py")
# More than the inline threshold: such an argument travels through the arena.
LARGE_PADDING = b"x" * (200 * 1024)
FAULTS = ("error", "exit", "crash")


def inject(fault, while_doing):
    if fault == "error":
        raise RuntimeError(f"injected error while {while_doing}")
    if fault == "exit":
        sys.exit(3)
    if fault == "crash":
        os._exit(3)
    raise AssertionError(fault)


class FaultOnDump:
    """Faults when pickled."""

    def __init__(self, fault):
        self.fault = fault

    def __reduce__(self):
        inject(self.fault, "pickling")
        return FaultOnDump, (self.fault,)


def _load(fault, only_in_pid, padding):
    if only_in_pid is None or os.getpid() == only_in_pid:
        inject(fault, "unpickling")
    return "loaded"


class FaultOnLoad:
    """Pickles fine; faults when unpickled (only in process ``only_in_pid``, if given)."""

    def __init__(self, fault, only_in_pid=None, padding=b""):
        self.fault = fault
        self.only_in_pid = only_in_pid
        self.padding = padding

    def __reduce__(self):
        return _load, (self.fault, self.only_in_pid, self.padding)


@purerun.remote(max_retries=1)
def take(argument):
    return "ran"


@purerun.remote(max_retries=1)
def run(fault):
    inject(fault, "running")


@purerun.remote(max_retries=1)
def produce(kind, fault, driver_pid):
    return FaultOnDump(fault) if kind == "dump" else FaultOnLoad(fault, driver_pid)


@purerun.remote
def identity(x):
    return x


@purerun.remote(max_restarts=0, max_task_retries=0)
class Target:
    def take(self, argument):
        return "ran"

    def run(self, fault):
        inject(fault, "running")

    def produce(self, kind, fault, driver_pid):
        return FaultOnDump(fault) if kind == "dump" else FaultOnLoad(fault, driver_pid)

    def pid(self):
        return os.getpid()


@pytest.fixture(scope="module")
def cluster():
    purerun.init(num_cpus=2)
    yield
    purerun.shutdown()


# ── the calls of each phase: submit(fault, on) returns the ref; ``on`` is the task table
# (module functions) or an actor ──────────────────────────────────────────────────────────

def _on(target, name):
    return getattr(target, name) if target is not None else globals()[name]


PHASES = {
    "pickle-arguments": lambda fault, on: _on(on, "take").remote(FaultOnDump(fault)),
    "unpickle-arguments": lambda fault, on: _on(on, "take").remote(FaultOnLoad(fault)),
    "unpickle-large-arguments": lambda fault, on: _on(on, "take").remote(
        FaultOnLoad(fault, padding=LARGE_PADDING)),
    "run": lambda fault, on: _on(on, "run").remote(fault),
    "pickle-result": lambda fault, on: _on(on, "produce").remote("dump", fault, None),
    "unpickle-result": lambda fault, on: _on(on, "produce").remote("load", fault, os.getpid()),
}


class Raises:
    """The call raises ``error`` (matching ``match``), from .remote() if ``at_submit`` else
    from get(); ``exact``: of exactly that type (a SystemExit that is no RayTaskError)."""

    def __init__(self, error, match=None, at_submit=False, exact=False, kills_actor=False):
        self.error = error
        self.match = match
        self.at_submit = at_submit
        self.exact = exact
        self.kills_actor = kills_actor

    def check(self, submit):
        with pytest.raises(self.error, match=self.match) as info:
            ref = submit()
            assert not self.at_submit, "the call was submitted"
            purerun.get(ref, timeout=CALL_DEADLINE_S)
        if self.exact:
            assert type(info.value) is self.error
        return info.value


ARGUMENT_FAILED = "At least one of the input arguments for this task could not be computed"
IN_CALLER = {
    ("pickle-arguments", "error"): Raises(RuntimeError, "injected error while pickling",
                                          at_submit=True, exact=True),
    ("pickle-arguments", "exit"): Raises(SystemExit, "3", at_submit=True, exact=True),
    ("unpickle-result", "error"): Raises(exceptions.RaySystemError,
                                         "injected error while unpickling", exact=True),
    ("unpickle-result", "exit"): Raises(SystemExit, "3", exact=True),
}
IN_WORKER_ERRORS = {
    "unpickle-arguments": Raises(exceptions.RaySystemError, ARGUMENT_FAILED),
    "unpickle-large-arguments": Raises(exceptions.RaySystemError, ARGUMENT_FAILED),
    "run": Raises(RuntimeError, "injected error while running"),
    "pickle-result": Raises(RuntimeError, "injected error while pickling"),
}
WORKER_PHASES = tuple(IN_WORKER_ERRORS)

TASK_OUTCOMES = dict(IN_CALLER)
ACTOR_OUTCOMES = dict(IN_CALLER)
for _phase in WORKER_PHASES:
    TASK_OUTCOMES[_phase, "error"] = ACTOR_OUTCOMES[_phase, "error"] = IN_WORKER_ERRORS[_phase]
    for _fault in ("exit", "crash"):
        TASK_OUTCOMES[_phase, _fault] = Raises(exceptions.WorkerCrashedError,
                                               r"tried 2 time\(s\) \(max_retries=1\)")
        ACTOR_OUTCOMES[_phase, _fault] = Raises(exceptions.ActorDiedError, kills_actor=True)


def _cells(outcomes):
    return [pytest.param(phase, fault, outcome, id=f"{phase}-{fault}")
            for (phase, fault), outcome in outcomes.items()]


@pytest.mark.parametrize("phase, fault, outcome", _cells(TASK_OUTCOMES))
def test_task_crash_matrix(cluster, phase, fault, outcome):
    error = outcome.check(lambda: PHASES[phase](fault, None))
    if isinstance(error, exceptions.RayTaskError):
        assert isinstance(error, exceptions.RayTaskError) and error.function_name in (
            "take", "run", "produce")
    assert purerun.get(identity.remote("still working"), timeout=CALL_DEADLINE_S) == \
        "still working"


@pytest.mark.parametrize("phase, fault, outcome", _cells(ACTOR_OUTCOMES))
def test_actor_call_crash_matrix(cluster, phase, fault, outcome):
    actor = Target.remote()
    pid = purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S)
    try:
        outcome.check(lambda: PHASES[phase](fault, actor))
        if outcome.kills_actor:
            with pytest.raises(exceptions.ActorDiedError):  # not restarted: max_restarts=0
                purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S)
            wait_for(lambda: _gone(pid), timeout=CALL_DEADLINE_S,
                     message="the dead actor's process to exit")
        else:  # the same actor, in the same process, goes on
            assert purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S) == pid
        fresh = Target.remote()
        assert purerun.get(fresh.take.remote("fine"), timeout=CALL_DEADLINE_S) == "ran"
        purerun.kill(fresh)
        assert purerun.get(identity.remote("still working"), timeout=CALL_DEADLINE_S) == \
            "still working"
    finally:
        purerun.kill(actor)


@pytest.mark.parametrize("target", ["task", "actor"])
@pytest.mark.parametrize("phase", ["pickle-arguments", "unpickle-result"])
def test_a_crash_in_the_caller_ends_the_caller_and_its_cluster(target, phase):
    # Outside the module's cluster: the driver that crashes has its own, which must go too.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO_ROOT, os.path.join(REPO_ROOT, "tests"),
                      os.environ.get("PYTHONPATH")])))
    env.pop("PURERUN_ADDRESS", None)
    done = subprocess.run([sys.executable, CRASH_DRIVER, target, phase], capture_output=True,
                          text=True, env=env, timeout=2 * CALL_DEADLINE_S)
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "CALLED" in lines and "SURVIVED" not in lines, done.stdout
    session_dir = next(line.split(" ", 1)[1] for line in lines if line.startswith("SESSION "))
    wait_for(lambda: not _processes_naming(session_dir), timeout=CALL_DEADLINE_S,
             message=f"the crashed driver's node and workers ({session_dir}) to exit")
    wait_for(lambda: not os.path.exists(session_dir), timeout=CALL_DEADLINE_S,
             message="the crashed driver's session directory to be removed")


# ── exits beyond the matrices ─────────────────────────────────────────────────────────────

class NotAnError(BaseException):
    pass


@purerun.remote
class Leaver:
    def pid(self):
        return os.getpid()

    def leave(self, how):
        if how == "base-exception":
            raise NotAnError("not an error")
        if how == "interrupt":
            raise KeyboardInterrupt
        sys.exit(int(how))


@pytest.mark.parametrize("how, restarted", [
    pytest.param("0", False, id="exit-0-is-intended"),
    pytest.param("3", True, id="exit-3-restarts"),
    pytest.param("base-exception", True, id="base-exception-restarts"),
])
def test_an_actor_that_exits_is_restarted_unless_it_meant_to(cluster, how, restarted):
    actor = Leaver.options(max_restarts=1).remote()
    try:
        pid = purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S)
        with pytest.raises(exceptions.ActorDiedError) as info:
            purerun.get(actor.leave.remote(how), timeout=CALL_DEADLINE_S)
        if not restarted:
            assert "Worker exits with an exit code 0." in str(info.value)
        wait_for(lambda: _gone(pid), timeout=CALL_DEADLINE_S,
                 message="the actor's first process to exit")
        if restarted:
            assert purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S) != pid
        else:
            with pytest.raises(exceptions.ActorDiedError, match="exit code 0"):
                purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S)
    finally:
        purerun.kill(actor)


def test_a_keyboard_interrupt_a_call_raises_is_task_cancelled_error(cluster):
    # As Ray: whatever raised it, a KeyboardInterrupt ends the call as cancelled; the worker
    # and the actor live on.
    @purerun.remote(max_retries=1)
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(interrupted.remote(), timeout=CALL_DEADLINE_S)
    actor = Leaver.remote()
    try:
        pid = purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S)
        with pytest.raises(exceptions.TaskCancelledError):
            purerun.get(actor.leave.remote("interrupt"), timeout=CALL_DEADLINE_S)
        assert purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S) == pid
    finally:
        purerun.kill(actor)


@pytest.mark.parametrize("code, restarted", [pytest.param("0", False, id="exit-0"),
                                           pytest.param("3", True, id="exit-3")])
@pytest.mark.parametrize("options", [pytest.param({"max_concurrency": 2}, id="threaded"),
                                     pytest.param({}, id="async")])
def test_an_exit_in_a_threaded_or_async_actor_ends_it_too(cluster, options, code, restarted):
    cls = Leaver if options else AsyncLeaver
    actor = cls.options(max_restarts=1, **options).remote()
    try:
        pid = purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S)
        with pytest.raises(exceptions.ActorDiedError):
            purerun.get(actor.leave.remote(code), timeout=CALL_DEADLINE_S)
        wait_for(lambda: _gone(pid), timeout=CALL_DEADLINE_S, message="the actor to exit")
        if restarted:
            assert purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S) != pid
        else:
            with pytest.raises(exceptions.ActorDiedError, match="exit code 0"):
                purerun.get(actor.pid.remote(), timeout=CALL_DEADLINE_S)
    finally:
        purerun.kill(actor)


@purerun.remote
class AsyncLeaver:
    async def pid(self):
        return os.getpid()

    async def leave(self, how):
        sys.exit(int(how))


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _processes_naming(session_dir):
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if session_dir in cmdline and not _gone(proc.info["pid"]):
            found.append(proc.info["pid"])
    return found
