"""Spreading a pytest run over a purerun cluster: ``pytest -p purerun.testing --purerun N``.

::

    controller: the pytest you ran       runner actor (one per worker,        test process
    ──────────────────────────────       num_cpus=1, anywhere in the          (a fresh python,
    collects, deselects (-k, -m)         cluster)                             child of its actor)
    Schedule: batches by module ──run(batch)──▶ RUN ids ──── pipe ────▶      pytest.main(same args)
                                                                              runs the items it is
    replays reports through its  ◀── events ─── START / REPORT / DONE ◀──     sent, holding the last
    own hooks: terminal, -x,         (one list   IDLE; its stderr on a        one back for the
    junitxml, cache, exit code        per call)  third pipe                    next batch (fixtures)

The plugin is loaded only by ``-p purerun.testing`` (it is no ``pytest11`` entry point, unlike
the fixtures of ``purerun.pytest_plugin``), so a plain ``pytest`` never changes behaviour
because purerun is installed.

**The controller** is the pytest process the user started. It collects as usual (so
``--collect-only``, ``-k``, ``-m``, collection errors and "collected N items" are pytest's
own), starts the runner actors, hands each a batch of test ids at a time (two calls in
flight per actor, so a worker never waits for its next batch), and replays the reports that
come back through ``pytest_runtest_logreport`` and friends, as pytest-xdist's controller does.
Its pytest plugins therefore see every test as if it had run here. ``-x`` / ``--maxfail``
stop handing out work at the first report that sets ``session.shouldfail``.

**A runner actor** (``TestRunner``) owns one test process. It starts it, writes commands to
one pipe and reads events from another, and keeps the process's stderr (a third pipe). It
alone knows which test is running, so it turns the test process dying (``os._exit``, a
segfault) into a "crashed" event for that test, and a test that outlives its timeout into a
"timeout" event, after asking the process for every thread's stack (faulthandler on
SIGUSR1) and killing it. Tests sent but not started come back as "unstarted", to be handed
out again; the next batch starts a new test process.

**The test process** runs ``pytest.main`` over the controller's own arguments, in the
controller's directory, with ``TestProcessPlugin``: it collects, then instead of running
every item it runs those it is sent. It marks its config with ``workerinput`` (pytest's and
pytest-xdist's convention for "a worker": junitxml, the cache and stepwise plugins then leave
writing files to the controller; its terminal reporter is taken out, since the controller
prints) and ``PURERUN_TESTING_WORKER`` in its environment, which
also keeps a ``--purerun`` in ``addopts`` from spreading again from inside. Running tests in
a fresh interpreter rather than in the actor's own process means a test sees a process as
under plain pytest: it may start its own purerun node (``purerun.init()``, the
``purerun_cluster`` fixture), install signal handlers, or crash, without touching the
runtime that carries the run.

A test's timeout: its ``timeout`` marker (pytest-timeout's), else ``--purerun-timeout``,
else pytest-timeout's ``--timeout`` / ``timeout`` ini value / ``PYTEST_TIMEOUT``. The runner
enforces it around the test's setup, call and teardown; pytest-timeout's own timer is not
armed in the test process (it would end the process from inside, without a report).
"""

import collections
import faulthandler
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from multiprocessing.connection import Connection

import pytest

__all__ = ["Schedule", "TestRunner", "TestProcessPlugin"]

# Set in a test process: the worker's id ("pr0", "pr1", ...). Its presence also tells this
# plugin that it runs inside a worker, where ``--purerun`` must not spread again.
WORKER_ENV = "PURERUN_TESTING_WORKER"
# Set in a test process: the id (hex) of the purerun node its runner actor lives on.
NODE_ENV = "PURERUN_TESTING_NODE_ID"
# The most tests in one batch. A round trip costs about a millisecond and is hidden by the
# second call in flight, so small batches cost little; large ones let one worker sit on
# slow tests while the others run dry at the end of the run.
MAX_BATCH = 8
# Early batches are remaining / (BATCHES_PER_WORKER * workers) tests, shrinking towards one
# near the end, so that the last tests spread evenly over the workers.
BATCHES_PER_WORKER = 4
# Calls in flight per runner actor: the next batch is already queued at the actor when the
# current one ends, so a worker does not idle for a round trip between batches.
CALLS_IN_FLIGHT = 2
# How long a test process that timed out gets to write every thread's stack (faulthandler
# writes it at once from its signal handler; this only bounds a stuck write), and how long
# its stderr must stay quiet for the dump to count as complete.
STACK_DUMP_WAIT_S = 2.0
STACK_DUMP_QUIET_S = 0.2
# The end of a test process's stderr kept by its runner, for crash and start-up reports.
STDERR_KEPT_BYTES = 256 * 1024
# The end of that stderr shown in one report.
STDERR_SHOWN_BYTES = 16 * 1024
# How long a test process may take to exit once told to stop, or once its pipe closed.
EXIT_WAIT_S = 30.0
# A worker whose runner actor died is replaced, at most this many times per worker, so a
# cluster that kills every actor ends the run instead of looping.
REPLACEMENTS_PER_WORKER = 3
# The object store of the node ``--purerun N`` starts: reports are small.
OBJECT_STORE_MEMORY = 64 * 1024 * 1024
# Linux prctl: the test process gets SIGKILL when its runner actor's process dies.
_PR_SET_PDEATHSIG = 1

# A test process loads this file by its path, not as ``purerun.testing``: importing the
# purerun package before pytest starts would keep pytest from rewriting the assertions of
# purerun's own pytest plugin (and warn about it), as it does in a serial run.
# Written by a test process to its stderr as each test starts: what follows the last mark
# is the running test's (stderr and events travel on different pipes, so the order in
# which they are read says nothing).
_TEST_START_MARK = b"\n\x00purerun-test-start\x00\n"
_PROCESS_BOOT = ("import importlib.util, sys; "
                 "spec = importlib.util.spec_from_file_location('purerun_test_process', "
                 "sys.argv[1]); module = importlib.util.module_from_spec(spec); "
                 "spec.loader.exec_module(module); module._test_process_main()")


# -- options ---------------------------------------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("purerun", "spreading tests over a purerun cluster")
    group.addoption(
        "--purerun", action="store", default=None, metavar="N|ADDRESS", dest="purerun",
        help="run the tests on purerun workers: N starts a local node with N workers; "
             "HOST:PORT (or any address purerun.init accepts) uses a running cluster, one "
             "worker per CPU.")
    group.addoption(
        "--purerun-timeout", action="store", default=None, type=float, metavar="SECONDS",
        dest="purerun_timeout",
        help="fail a test whose setup, call and teardown take longer than SECONDS (its "
             "timeout marker wins); its test process is killed and replaced.")


def _spread_to(config):
    """What ``--purerun`` asks for: (number of workers or None, address or None), or None
    when this run is not spread (no option, or this is a worker's own session)."""
    value = config.getoption("purerun", None)
    if value is None or os.environ.get(WORKER_ENV):
        return None
    value = str(value).strip()
    if value.isdigit():
        count = int(value)
        if count < 1:
            raise pytest.UsageError(f"--purerun needs at least 1 worker, got {value!r}.")
        return count, None
    if not value or value.startswith("-"):
        raise pytest.UsageError(f"--purerun takes a number of workers or a cluster's "
                                f"address (HOST:PORT), got {value!r}.")
    return None, value


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    spread = _spread_to(config)
    timeout = config.getoption("purerun_timeout", None)
    if timeout is not None and timeout <= 0:
        raise pytest.UsageError(f"--purerun-timeout must be a positive number of seconds, "
                                f"got {timeout:g}.")
    if spread is None:
        return
    if config.getoption("numprocesses", None) or config.getoption("dist", "no") != "no":
        raise pytest.UsageError("--purerun and pytest-xdist's -n / --dist both spread the "
                                "tests: use one of them.")
    if config.getoption("usepdb", False):
        raise pytest.UsageError("--pdb cannot debug tests that run on purerun workers: "
                                "run without --purerun to debug.")
    if config.getoption("trace", False):
        raise pytest.UsageError("--trace cannot step through tests that run on purerun "
                                "workers: run without --purerun.")
    count, address = spread
    config.pluginmanager.register(Controller(config, count, address), "purerun-controller")


# -- what the controller does -------------------------------------------------------------------------

class Schedule:
    """Which tests a worker runs next: batches of one module at a time (pure, no I/O).

    A worker keeps taking from the module it took from last, so module-scoped fixtures are
    set up once per worker that runs the module; when that module is used up it takes the
    first module no other worker is on, and when every module left has a worker, it shares
    the largest. Batches shrink as the run nears its end, so the last tests spread evenly.

    Args:
        nodeids: the test ids, in collection order.
        workers: how many workers take batches.
    """

    def __init__(self, nodeids, workers):
        self._modules = collections.OrderedDict()
        for nodeid in nodeids:
            self._modules.setdefault(module_of(nodeid), collections.deque()).append(nodeid)
        self._workers = max(1, workers)
        self._current = {}  # worker -> the module it takes from
        self.remaining = len(nodeids)

    def next_batch(self, worker):
        """The next test ids for ``worker`` (an empty list when none are left)."""
        if not self.remaining:
            return []
        module = self._current.get(worker)
        if module not in self._modules:
            module = self._pick(worker)
            self._current[worker] = module
        size = max(1, min(MAX_BATCH, self.remaining // (BATCHES_PER_WORKER * self._workers)))
        tests = self._modules[module]
        batch = [tests.popleft() for _ in range(min(size, len(tests)))]
        if not tests:
            del self._modules[module]
        self.remaining -= len(batch)
        return batch

    def _pick(self, worker):
        taken = {m for w, m in self._current.items() if w != worker}
        for module in self._modules:
            if module not in taken:
                return module
        return max(self._modules, key=lambda m: len(self._modules[m]))

    def give_back(self, nodeids):
        """Tests handed out but not run (their worker stopped first): they go out again,
        first in their modules, in their order."""
        for nodeid in reversed(nodeids):
            module = module_of(nodeid)
            if module not in self._modules:
                self._modules[module] = collections.deque()
                self._modules.move_to_end(module, last=False)
            self._modules[module].appendleft(nodeid)
            self.remaining += 1

    def set_workers(self, workers):
        """The number of workers left, which sizes the batches."""
        self._workers = max(1, workers)


def module_of(nodeid):
    """The file part of a test id: ``"tests/test_a.py::TestX::test_y[1]"`` -> ``"tests/test_a.py"``."""
    return nodeid.split("::", 1)[0]


def item_timeout(item, purerun_timeout):
    """Seconds ``item`` may take (setup, call and teardown), or None for no limit.

    Its pytest-timeout ``timeout`` marker wins (0 means none), then ``--purerun-timeout``,
    then pytest-timeout's ``--timeout`` option, ``timeout`` ini value or ``PYTEST_TIMEOUT``.
    """
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
        return _seconds(value)
    if purerun_timeout is not None:
        return purerun_timeout
    config = item.config
    if not config.pluginmanager.hasplugin("timeout"):
        return None
    value = config.getoption("timeout", None)
    if value is None:
        try:
            value = config.getini("timeout")
        except ValueError:
            value = None
    if value in (None, "", "0") or not _seconds(value):
        value = os.environ.get("PYTEST_TIMEOUT")
    return _seconds(value)


def _seconds(value):
    try:
        seconds = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


class _Worker:
    """The controller's view of one worker: its actor and the tests it holds, in order."""

    def __init__(self, index, actor):
        self.index = index
        self.id = f"pr{index}"
        self.actor = actor
        self.calls = []                    # refs of its run() calls in flight, oldest first
        self.held = collections.deque()    # ids sent and not finished, in the order it runs them
        self.stopped = False               # its stop() was sent since its last batch
        self.replaced = 0


class Controller:
    """The controller's plugin: starts the workers, hands out tests, replays their reports.

    Args:
        config: the run's pytest config.
        count: the number of workers to start a local node for, or None.
        address: the cluster to use (anything ``purerun.init(address=...)`` takes), or None.
    """

    def __init__(self, config, count, address):
        self.config = config
        self.count = count
        self.address = address
        self.workers = []
        self.started_purerun = False
        self._testrunuid = uuid.uuid4().hex
        self._started = set()   # ids whose logstart was replayed
        self._reports = collections.defaultdict(list)  # id -> whens replayed
        self._items = {}
        self._session = None
        self._stopping = False  # -x / --maxfail: no more tests are handed out or replayed
        self._last_broken = None  # why the last worker that could not start could not

    # -- the workers ------------------------------------------------------------------------------

    def _start(self):
        import purerun
        if purerun.is_initialized():
            raise pytest.UsageError("--purerun starts or joins a cluster itself, but this "
                                    "pytest process is connected to purerun already (a "
                                    "conftest called purerun.init()?).")
        if self.address is None:
            purerun.init(address="local", num_cpus=self.count,
                         object_store_memory=OBJECT_STORE_MEMORY, log_to_driver=True)
            count = self.count
        else:
            try:
                purerun.init(address=self.address, log_to_driver=True)
            except ConnectionError as exc:
                raise pytest.UsageError(f"--purerun {self.address}: {exc}") from None
            count = int(purerun.cluster_resources().get("CPU", 0))
            if count < 1:
                purerun.shutdown()
                raise pytest.UsageError(f"--purerun {self.address}: the cluster has no CPU "
                                        f"to run tests on.")
        self.started_purerun = True
        self.workers = [_Worker(i, self._new_actor(i, count)) for i in range(count)]

    def _new_actor(self, index, count):
        import purerun
        spec = {
            "args": list(self.config.invocation_params.args),
            "cwd": str(self.config.invocation_params.dir),
            "sys_path": list(sys.path),
            "worker_id": f"pr{index}",
            "worker_count": count,
            "testrunuid": self._testrunuid,
            "basetemp": self._basetemp(index),
            "controller_host": socket.gethostname(),
        }
        runner = purerun.remote(TestRunner).options(
            num_cpus=1, max_concurrency=1, max_restarts=0, scheduling_strategy="SPREAD")
        return runner.remote(spec)

    def _basetemp(self, index):
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is None:
            return None
        return str(factory.getbasetemp() / f"pr{index}")

    def _stop(self):
        """Disconnect from purerun (a node it started stops; its actors and their test
        processes die with it). Every worker has ended its session by then, unless the
        run was interrupted."""
        import purerun
        if not self.started_purerun:
            return
        self.workers = []
        self.started_purerun = False
        purerun.shutdown()

    # -- hooks ------------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_collection(self, session):
        # The workers start (and collect, in their own processes) while this one collects.
        if not self.config.option.collectonly:
            self._start()
        try:
            return (yield)
        except BaseException:
            self._stop()
            raise

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            self._stop()
            raise session.Interrupted(
                f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} "
                f"during collection")
        if session.config.option.collectonly:
            return True
        try:
            if session.items:
                self._run(session)
        finally:
            self._stop()
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def pytest_unconfigure(self, config):
        self._stop()

    # -- the run ----------------------------------------------------------------------------------

    def _run(self, session):
        """Hand out every test, replay what comes back, and end each worker's session."""
        import purerun
        items = session.items
        self._session = session
        self._items = {item.nodeid: item for item in items}
        # More workers than tests: the extra ones only end their (empty) session.
        live = self.workers[:len(items)]
        idle = self.workers[len(items):]
        schedule = Schedule([item.nodeid for item in items], len(live))
        timeout = self.config.getoption("purerun_timeout", None)
        timeouts = {item.nodeid: item_timeout(item, timeout) for item in items}
        calls = {}  # ref -> (worker, "run" or "stop")
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.config.option.verbose >= 0:
            where = f"the cluster at {self.address}" if self.address else "a local node"
            reporter.write_line(f"purerun: {_plural(len(items), 'test')} on "
                                f"{_plural(len(live), 'worker')} of {where}")
        for worker in idle:
            calls[worker.actor.stop.remote(True)] = (worker, "stop")
            worker.stopped = True

        def fill(worker):
            while len(worker.calls) < CALLS_IN_FLIGHT and not self._stopping:
                batch = schedule.next_batch(worker.index)
                if not batch:
                    break
                ref = worker.actor.run.remote([(i, timeouts[i]) for i in batch])
                worker.calls.append(ref)
                worker.held.extend(batch)
                worker.stopped = False
                calls[ref] = (worker, "run")
            if not worker.calls and not worker.stopped:
                # Nothing left to hand out: it runs what it holds and ends its session
                # (a test given back later starts a new one).
                ref = worker.actor.stop.remote(not self._stopping)
                worker.calls.append(ref)
                worker.stopped = True
                calls[ref] = (worker, "stop")

        for worker in live:
            fill(worker)
        while calls:
            ready, _ = purerun.wait(list(calls), num_returns=1)
            ref = ready[0]
            worker, _kind = calls.pop(ref)
            if ref in worker.calls:
                worker.calls.remove(ref)
            try:
                events = purerun.get(ref)
            except purerun.exceptions.RayError as exc:
                # Its actor died (or failed: then it is ended, as one that died).
                self._lost_actor(worker, exc, schedule, calls)
                if worker.actor is None and worker in live:
                    live.remove(worker)
                    schedule.set_workers(len(live))
            else:
                schedule.give_back(self._replay(worker, events))
                broken = [e[1] for e in events if e[0] == "broken"]
                if broken and worker in live:
                    # Its test process cannot even start: it takes no more tests, and
                    # what its other calls held goes out again.
                    live.remove(worker)
                    schedule.set_workers(len(live))
                    for other in worker.calls:
                        calls.pop(other, None)
                    worker.calls.clear()
                    schedule.give_back(list(worker.held))
                    worker.held.clear()
                    self._last_broken = broken[0]
            if not live:
                self._fail_remaining(schedule, self._last_broken or (
                    "every purerun worker was lost (their actors died and could not be "
                    "replaced)"))
                for other in list(calls):
                    calls.pop(other)
                break
            for each in live:
                fill(each)

    def _replay(self, worker, events):
        """Replay one call's events through this process's hooks; returns the ids to hand
        out again."""
        given_back = []
        for event in events:
            kind = event[0]
            if kind == "report":
                self._report(event[1])
            elif kind == "warning":
                self._warning(event[1])
            elif kind == "done":
                self._finished(worker, event[1])
                self._check_stop()
            elif kind == "missing":
                self._failed(worker, event[1], event[2], "call")
                self._check_stop()
            elif kind in ("crashed", "timeout"):
                self._failed(worker, event[1], event[2], None)
                self._check_stop()
            elif kind == "unstarted":
                for nodeid in event[1]:
                    _discard(worker.held, nodeid)
                given_back.extend(event[1])
        return given_back

    def _check_stop(self):
        """After each test, as pytest's own loop: has -x / --maxfail / a plugin ended the
        run? (pytest_runtestloop raises Failed or Interrupted once the workers stopped.)"""
        session = self._session
        if session is not None and (session.shouldfail or session.shouldstop):
            self._stopping = True

    def _report(self, data):
        if self._stopping:
            return
        report = self.config.hook.pytest_report_from_serializable(config=self.config,
                                                                 data=data)
        self._logstart(report.nodeid, report.location)
        self._reports[report.nodeid].append(report.when)
        self.config.hook.pytest_runtest_logreport(report=report)

    def _logstart(self, nodeid, location):
        if nodeid not in self._started:
            self._started.add(nodeid)
            self.config.hook.pytest_runtest_logstart(nodeid=nodeid, location=location)

    def _finished(self, worker, nodeid):
        _discard(worker.held, nodeid)
        if self._stopping or nodeid not in self._started:
            return
        item = self._items.get(nodeid)
        location = item.location if item is not None else None
        self.config.hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)

    def _failed(self, worker, nodeid, detail, when):
        """A test that did not end by itself (crash, timeout, not collected there): one
        failed report saying why, in the phase it stopped in."""
        _discard(worker.held, nodeid)
        if self._stopping:
            return
        item = self._items.get(nodeid)
        if item is None:
            return
        seen = self._reports.get(nodeid, [])
        if when is None:
            # A crash in teardown is an error of that test, like any teardown failure.
            when = "teardown" if "call" in seen else "call"
        report = pytest.TestReport(
            nodeid=nodeid, location=item.location, keywords={k: 1 for k in item.keywords},
            outcome="failed", longrepr=detail, when=when, sections=[], duration=0.0,
            user_properties=[])
        self._logstart(nodeid, item.location)
        self._reports[nodeid].append(when)
        self.config.hook.pytest_runtest_logreport(report=report)
        self.config.hook.pytest_runtest_logfinish(nodeid=nodeid, location=item.location)

    def _warning(self, data):
        category = _warning_category(data["category"])
        try:
            message = category(data["message"])
        except Exception:
            category, message = UserWarning, UserWarning(data["message"])
        warning = warnings.WarningMessage(message=message, category=category,
                                          filename=data["filename"], lineno=data["lineno"],
                                          line=data["line"])
        self.config.hook.pytest_warning_recorded.call_historic(kwargs={
            "warning_message": warning, "when": data["when"], "nodeid": data["nodeid"],
            "location": data["location"]})

    def _lost_actor(self, worker, exc, schedule, calls):
        """The worker's actor died (its node died, or it was killed): the test it was
        running fails, the rest go out again, and a new actor takes its place."""
        import purerun
        for other in worker.calls:
            calls.pop(other, None)
        worker.calls.clear()
        if not isinstance(exc, purerun.exceptions.RayActorError):
            purerun.kill(worker.actor)
        held = list(worker.held)
        worker.held.clear()
        if held:
            self._failed(worker, held[0], (
                f"The purerun worker {worker.id} running this test (or about to) was lost: "
                f"its actor died.\n{exc}"), None)
            schedule.give_back(held[1:])
        if worker.replaced >= REPLACEMENTS_PER_WORKER or self._stopping:
            worker.actor = None
            return
        worker.replaced += 1
        worker.stopped = False
        worker.actor = self._new_actor(worker.index, len(self.workers))

    def _fail_remaining(self, schedule, detail):
        """No worker is left: every test not yet run fails, saying why."""
        nobody = _Worker(-1, None)
        while schedule.remaining and not self._stopping:
            for nodeid in schedule.next_batch(nobody.index):
                self._failed(nobody, nodeid, f"Not run: {detail}", "call")
                self._check_stop()


def _plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _discard(ids, nodeid):
    try:
        ids.remove(nodeid)
    except ValueError:
        pass


def _warning_category(name):
    module, _, qualname = name.rpartition(".")
    try:
        target = sys.modules.get(module) or __import__(module, fromlist=["_"])
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:
        return UserWarning
    return target if isinstance(target, type) and issubclass(target, Warning) else UserWarning


# -- the runner actor --------------------------------------------------------------------------------

class TestRunner:
    """A purerun actor that runs tests in a test process of its own (see the module doc).

    Each call returns the events of the tests it ran, as a list of tuples:
    ``("report", data)`` a serialized TestReport, ``("warning", data)``, ``("done", id)``,
    ``("missing", id, why)`` (this worker's collection has no such test), ``("crashed", id,
    why)``, ``("timeout", id, why)``, ``("unstarted", ids)`` (to be run elsewhere or later),
    ``("broken", why)`` (the test process could not start its session; nothing more can run
    here).

    Args:
        spec: the test process's settings: ``args``, ``cwd``, ``sys_path``, ``worker_id``,
            ``worker_count``, ``testrunuid``, ``basetemp``, ``controller_host``.
    """

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, spec):
        self._spec = spec
        self._process = None
        self._commands = None       # Connection: commands to the test process
        self._events = None         # Connection: its events
        self._stderr_fd = None
        self._stderr = bytearray()  # the end of its stderr
        self._stderr_total = 0      # bytes of stderr read in all
        self._pending = []          # ids it was sent and has not finished, in order
        self._running = None        # (id, monotonic start)
        self._timeouts = {}
        self._collect_errors = ""
        self._broken = None
        self._start_process()

    # -- calls ------------------------------------------------------------------------------------

    def run(self, batch):
        """Run ``batch``, a list of ``(test id, timeout seconds or None)``, after what is left
        from the previous batch; the last test is held back until the next call or stop()."""
        events = []
        ids = [nodeid for nodeid, _ in batch]
        if self._broken is not None:
            return [("broken", self._broken), ("unstarted", ids)]
        if self._process is None:
            self._start_process()
        for nodeid, seconds in batch:
            self._timeouts[nodeid] = seconds
        self._pending.extend(ids)
        if not self._wait_collected(events):
            return events
        self._send(("run", ids))
        self._pump(events, "idle")
        return events

    def stop(self, run_held=True):
        """End the test process's session, after running the test held back unless
        ``run_held`` is False, and return the events."""
        events = []
        if self._process is None:
            return events
        if self._wait_collected(events):
            if not run_held:
                events.append(("unstarted", list(self._pending)))
                self._pending.clear()
            self._send(("stop", run_held))
            self._pump(events, "finished")
        self._close()
        return events

    # -- the test process -------------------------------------------------------------------------

    def _start_process(self):
        command_read, command_write = os.pipe()
        event_read, event_write = os.pipe()
        env = dict(os.environ)
        env[WORKER_ENV] = self._spec["worker_id"]
        try:
            import purerun
            env[NODE_ENV] = purerun.get_runtime_context().get_node_id()
        except Exception:
            pass
        cwd = self._spec["cwd"]
        if not os.path.isdir(cwd):
            self._broken = (f"The directory the tests ran from, {cwd}, does not exist on "
                            f"{socket.gethostname()}: every host of the cluster needs the "
                            f"tests at the same path.")
            for fd in (command_read, command_write, event_read, event_write):
                os.close(fd)
            return
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _PROCESS_BOOT, os.path.abspath(__file__),
                 str(command_read), str(event_write), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(command_read, event_write), cwd=cwd, env=env)
        finally:
            os.close(command_read)
            os.close(event_write)
        self._commands = Connection(command_write, readable=False)
        self._events = Connection(event_read, writable=False)
        self._stderr_fd = self._process.stderr.fileno()
        os.set_blocking(self._stderr_fd, False)
        self._running = None
        self._collected = False
        self._send(self._spec)

    def _wait_collected(self, events):
        """Wait for the test process's collection; False (events say why) if it failed."""
        if self._collected:
            return True
        self._pump(events, "collected")
        if self._collected:
            return True
        if self._broken is None:
            self._broken = ("The test process could not start its pytest session "
                            f"(on {socket.gethostname()}).\n" + self._stderr_tail(whole=True))
        events.append(("broken", self._broken))
        events.append(("unstarted", list(self._pending)))
        self._pending.clear()
        return False

    def _send(self, message):
        try:
            self._commands.send(message)
        except OSError:
            pass  # the process died: _pump finds out and says which test it took with it

    def _pump(self, events, until):
        """Read the test process's events until ``until`` (or its death, or a timeout)."""
        while True:
            wait = None
            if self._running is not None:
                nodeid, started = self._running
                limit = self._timeouts.get(nodeid)
                if limit is not None:
                    wait = started + limit - time.monotonic()
                    if wait <= 0:
                        self._timed_out(events, limit)
                        return
            fds = [self._events.fileno()]
            if self._stderr_fd is not None:
                fds.append(self._stderr_fd)
            readable, _, _ = select.select(fds, [], [], wait)
            if self._events.fileno() not in readable:
                self._read_stderr()
                continue
            # An event before the stderr that came with it: a "start" marks where the
            # test's stderr begins, so the crash output read after it is the test's.
            try:
                message = self._events.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                self._died(events)
                return
            if self._stderr_fd in readable:
                self._read_stderr()
            kind = message[0]
            if kind == "start":
                self._running = (message[1], time.monotonic())
            elif kind == "done":
                self._running = None
                _discard(self._pending, message[1])
                events.append(message)
            elif kind == "missing":
                _discard(self._pending, message[1])
                events.append(("missing", message[1], self._missing_why(message[1])))
            elif kind == "collected":
                self._collected = True
                self._collect_errors = message[1]
            elif kind in ("report", "warning"):
                events.append(message)
            if kind == until:
                return

    def _read_stderr(self):
        try:
            data = os.read(self._stderr_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._stderr_fd = None  # closed: the process is exiting
            return
        self._stderr += data
        self._stderr_total += len(data)
        if len(self._stderr) > STDERR_KEPT_BYTES:
            del self._stderr[:len(self._stderr) - STDERR_KEPT_BYTES]

    def _stderr_tail(self, whole=False):
        """The end of the test process's stderr: what the running test wrote (since the
        test process marked its start), or all of it that was kept."""
        data = bytes(self._stderr)
        start = 0 if whole else data.rfind(_TEST_START_MARK)
        text = data[max(0, start):].replace(_TEST_START_MARK, b"").decode("utf-8", "replace")
        if len(text) > STDERR_SHOWN_BYTES:
            text = "...\n" + text[-STDERR_SHOWN_BYTES:]
        return text

    def _drain_stderr(self, deadline):
        while self._stderr_fd is not None and time.monotonic() < deadline:
            readable, _, _ = select.select([self._stderr_fd], [], [],
                                           max(0.0, deadline - time.monotonic()))
            if not readable:
                return
            self._read_stderr()

    def _missing_why(self, nodeid):
        why = (f"{nodeid} was collected by the controller but not by purerun worker "
               f"{self._spec['worker_id']} on {socket.gethostname()}: the two collections "
               f"differ (tests generated at random, files missing on that host, ...).")
        if self._collect_errors:
            why += "\n\nThe worker's collection errors:\n" + self._collect_errors
        return why

    def _where(self):
        return (f"purerun worker {self._spec['worker_id']} (test process pid "
                f"{self._process.pid} on {socket.gethostname()})")

    def _died(self, events):
        """The test process's event pipe closed: it exited or was killed."""
        code = None
        try:
            code = self._process.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._drain_stderr(time.monotonic() + 1.0)
        if self._running is not None and self._collected:
            nodeid, started = self._running
            why = (f"The {self._where()} crashed while running this test: "
                   f"{_describe_exit(code)}, after {time.monotonic() - started:.2f} s.")
            output = self._stderr_tail().strip()
            if output:
                why += "\n\nIts stderr (faulthandler's traceback, if any):\n" + output
            _discard(self._pending, nodeid)
            events.append(("crashed", nodeid, why))
        elif not self._collected:
            self._broken = (f"The test process of purerun worker {self._spec['worker_id']} "
                            f"on {socket.gethostname()} exited before its collection "
                            f"ended: {_describe_exit(code)}.\n" + self._stderr_tail(whole=True))
        if self._collected:
            events.append(("unstarted", list(self._pending)))
            self._pending.clear()
        self._close()

    def _timed_out(self, events, limit):
        """The running test outlived its timeout: dump its stacks, kill the process."""
        nodeid, _ = self._running
        asked = self._stderr_total
        try:
            os.kill(self._process.pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STACK_DUMP_WAIT_S
        while self._stderr_fd is not None and time.monotonic() < deadline:
            before = self._stderr_total
            readable, _, _ = select.select([self._stderr_fd], [], [], STACK_DUMP_QUIET_S)
            if readable:
                self._read_stderr()
            elif self._stderr_total > asked and self._stderr_total == before:
                break
        self._process.kill()
        self._process.wait()
        why = (f"Timeout: this test took longer than {limit:g} s (its setup, call and "
               f"teardown); the {self._where()} was killed and replaced.")
        output = self._stderr_tail().strip()
        if output:
            why += "\n\nEvery thread's stack when it was stopped, and its stderr:\n" + output
        _discard(self._pending, nodeid)
        events.append(("timeout", nodeid, why))
        events.append(("unstarted", list(self._pending)))
        self._pending.clear()
        self._close()

    def _close(self):
        for conn in (self._commands, self._events):
            if conn is not None:
                conn.close()
        if self._process is not None:
            if self._process.poll() is None:
                try:
                    self._process.wait(timeout=EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process.stderr.close()
        self._process = self._commands = self._events = self._stderr_fd = None
        self._running = None
        self._stderr = bytearray()
        self._stderr_total = 0


def _describe_exit(code):
    if code is None:
        return "it did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


# -- the test process ----------------------------------------------------------------------------------

def _test_process_main():
    """The test process: argv is (this file, command fd, event fd, the runner's pid)."""
    command_fd, event_fd, parent = (int(a) for a in sys.argv[2:5])
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)  # the runner is gone already
    commands = Connection(command_fd, writable=False)
    events = Connection(event_fd, readable=False)
    spec = commands.recv()
    sys.path[:] = spec["sys_path"] + [p for p in sys.path if p not in spec["sys_path"]]
    # SIGUSR1 (sent by the runner when a test outlives its timeout) writes every thread's
    # stack to stderr, which the runner reads: a duplicate of fd 2, since pytest's fd
    # capturing points fd 2 elsewhere while a test runs.
    stderr_fd = os.dup(2)
    faulthandler.register(signal.SIGUSR1, file=stderr_fd, all_threads=True)
    if spec["basetemp"]:
        os.makedirs(os.path.dirname(spec["basetemp"]), exist_ok=True)
    code = pytest.main(spec["args"], plugins=[TestProcessPlugin(spec, commands, events, stderr_fd)])
    try:
        events.send(("finished", int(code)))
    except OSError:
        pass
    sys.exit(int(code))


class TestProcessPlugin:
    """The test process's plugin: runs the items it is sent, sends back what they report.

    Args:
        spec: as TestRunner's.
        commands: the Connection commands arrive on.
        events: the Connection events go out on.
        stderr_fd: the process's own stderr (fd 2 points elsewhere while pytest captures).
    """

    __test__ = False

    def __init__(self, spec, commands, events, stderr_fd):
        self.spec = spec
        self.stderr_fd = stderr_fd
        self.commands = commands
        self.events = events
        self.config = None
        self.collect_errors = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config):
        self.config = config
        config.workerinput = {"workerid": self.spec["worker_id"],
                              "workercount": self.spec["worker_count"],
                              "testrunuid": self.spec["testrunuid"],
                              "mainargv": list(self.spec["args"])}
        config.workeroutput = {}
        # The controller counts failures, stops, and debugs nothing remotely.
        config.option.maxfail = 0
        config.option.usepdb = False
        if self.spec["basetemp"]:
            config.option.basetemp = self.spec["basetemp"]
        for name in ("lfplugin", "nfplugin", "stepwiseplugin"):
            plugin = config.pluginmanager.get_plugin(name)
            if plugin is not None:
                config.pluginmanager.unregister(plugin)

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors.append(f"{report.nodeid}:\n{report.longreprtext}")

    def pytest_collection_finish(self, session):
        self.events.send(("collected", "\n\n".join(self.collect_errors)))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        # What the terminal reporter prints goes nowhere here (stdout is /dev/null), and
        # its end-of-session summary (some plugins import a lot for theirs) would only
        # delay the end of the run, or a crashed worker's next batch.
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            self.config.pluginmanager.unregister(reporter)
        items = {}
        for item in session.items:
            items.setdefault(item.nodeid, item)
        pending = collections.deque()
        while True:
            try:
                command = self.commands.recv()
            except EOFError:
                return True  # the runner is gone
            if command[0] == "run":
                for nodeid in command[1]:
                    item = items.get(nodeid)
                    if item is None:
                        self.events.send(("missing", nodeid))
                    else:
                        pending.append(item)
                # The last one waits for its successor: pytest tears a module's fixtures
                # down after a test only when the next one is elsewhere.
                while len(pending) > 1:
                    self._run(pending.popleft(), pending[0])
                self.events.send(("idle",))
            elif command[0] == "stop":
                if not command[1]:
                    pending.clear()
                while pending:
                    item = pending.popleft()
                    self._run(item, pending[0] if pending else None)
                return True

    def _run(self, item, nextitem):
        os.write(self.stderr_fd, _TEST_START_MARK)
        self.events.send(("start", item.nodeid))
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        self.events.send(("done", item.nodeid))

    def pytest_runtest_logreport(self, report):
        data = self.config.hook.pytest_report_to_serializable(config=self.config,
                                                             report=report)
        self.events.send(("report", data))

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        category = warning_message.category
        self.events.send(("warning", {
            "message": str(warning_message.message),
            "category": f"{category.__module__}.{category.__qualname__}",
            "filename": warning_message.filename, "lineno": warning_message.lineno,
            "line": warning_message.line, "when": when, "nodeid": nodeid,
            "location": location}))

    # pytest-timeout's timer would end this process from inside; the runner keeps time.
    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_set_timer(self, item, settings):
        return True

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_cancel_timer(self, item):
        return True
