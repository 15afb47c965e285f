"""purerun's pytest plugin: cluster fixtures for tests, with Ray's names and parameters.

Installed with purerun (the ``pytest11`` entry point ``purerun``), so any test run in an
environment with purerun has these fixtures without copying a conftest::

    purerun_cluster          function scope: purerun.init() before the test, shutdown() after;
                             yields what init() returns
    purerun_cluster_shared   the same, one node for all the tests of a module
    purerun_multinode        function scope: a cluster_utils.Cluster (head + nodes on this
                             host); yields the Cluster

    ray_start_regular         = purerun_cluster          (Ray's names, so that Ray test
    ray_start_regular_shared  = purerun_cluster_shared    files run unchanged with
    ray_start_cluster         = purerun_multinode         ``import purerun as ray``)
    shutdown_only             nothing started; shutdown() after the test

Parametrize them as Ray's, indirectly, with a dict of ``init`` keyword arguments::

    @pytest.mark.parametrize("purerun_cluster", [{"num_cpus": 4}], indirect=True)
    def test_four(purerun_cluster): ...

    @pytest.mark.parametrize("ray_start_cluster", [{"num_nodes": 2, "num_cpus": 1}],
                             indirect=True)
    def test_two_nodes(ray_start_cluster): ...

For the multi-node fixtures, as in Ray, ``num_nodes`` (default 0) nodes are added with the
remaining arguments as ``add_node`` arguments, and ``do_init`` (default: True when there are
nodes) connects this process to the first one (with ``namespace``, if given).

Every fixture shuts down even when the test fails, then checks that the runtime left
nothing behind: every process started while the fixture was up has exited and every
session directory it made is gone, within ``LEAK_DEADLINE_S``. Otherwise the test errors in
teardown, naming what was left (which is then killed or removed, so later tests start
clean).

The fixtures' nodes are forked from a fork server (``launcher.use_forkserver``), started
with the first of them and kept for the test run: a node is up in milliseconds rather than
the tenth of a second a new interpreter takes to import purerun. ``PURERUN_FORKSERVER=0``
in the environment spawns every node afresh instead. ``--purerun-fork-nodes`` (or the ini
option ``purerun_fork_nodes = true``) forks every node the test run starts, also those of
tests that call ``purerun.init()`` themselves.

A conftest fixture of the same name takes precedence over these (pytest's rule), so a
project's own ``ray_start_regular`` keeps working. Ray itself registers no pytest plugin;
its fixtures live in its own test conftest.

The module has one section per kind of hook; command-line options and collection hooks
belong next to the fixtures section, not in another module.
"""

import contextlib
import os
import shutil
import time

import psutil
import pytest

# Ray's fixtures default to one CPU, so that a test states the CPUs it needs.
DEFAULT_NUM_CPUS = 1
# The object store of a fixture's node, unless the parameters set one. purerun's default
# (30% of RAM) suits a program, not a test: a CI container may have little memory and a
# 64 MB /dev/shm (Docker's default), and with ``pytest -n N`` N clusters run at once. The
# arena is a memfd, not a /dev/shm file, but where memfd is missing it falls back to a file
# in /dev/shm, so 32 MB also keeps two such nodes within Docker's 64 MB there. Larger
# values still work: they spill to disk (see README, Objects).
DEFAULT_OBJECT_STORE_MEMORY = 32 * 1024 * 1024
# What the runtime gets to exit after shutdown(): an orderly stop takes well under a
# second; this only bounds a loaded CI machine.
LEAK_DEADLINE_S = 10.0
POLL_INTERVAL_S = 0.01
# Kept by the standard library for the interpreter's lifetime on purpose: not leaks.
_STDLIB_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
# Set to "0" to have the fixtures spawn each node instead of forking it (see above).
FORKSERVER_ENV_VAR = "PURERUN_FORKSERVER"
# The multi-node fixtures' own parameters; the rest are add_node() arguments.
_MULTINODE_PARAMS = ("num_nodes", "do_init", "namespace")


# -- what a fixture leaves behind ------------------------------------------------------------------

def _live_descendants():
    """{(pid, create_time): Process} of the live (not zombie) descendants of this process."""
    from purerun.core.proctree import with_descendants
    found = {}
    for pid in with_descendants([os.getpid()])[1:]:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found[(proc.pid, proc.create_time())] = proc
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _is_stdlib_helper(proc):
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(name in cmdline for name in _STDLIB_HELPERS)


def _describe(proc):
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline()) or proc.name()}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"pid {proc.pid}: (exited)"


class LeftoverCheck:
    """The processes and directories a fixture's runtime must not leave behind.

    Made when the fixture starts, it remembers this process's descendants then. ``track``
    is called just before shutdown: every descendant born since (nodes, workers, the head)
    is recorded while it is still in this process tree, before an orphan could leave it.
    ``verify`` waits for them and for the given directories to be gone.

    Only this process's own descendants and the fixture's own directories are looked at, so
    clusters of other pytest-xdist workers on the same machine are never mistaken for
    leftovers.
    """

    def __init__(self):
        self._before = set(_live_descendants())
        self._tracked = []

    def track(self):
        from purerun.core import launcher
        keep = launcher.forkserver_pid()   # kept for the test run on purpose, as above
        self._tracked = [proc for key, proc in _live_descendants().items()
                         if key not in self._before and not _is_stdlib_helper(proc)
                         and proc.pid != keep]

    def verify(self, directories, what):
        """Fail (pytest.fail) naming what is still there ``LEAK_DEADLINE_S`` after shutdown.

        Leftovers are killed or removed before failing.
        """
        deadline = time.monotonic() + LEAK_DEADLINE_S
        while True:
            processes = [p for p in self._tracked if _alive(p)]
            dirs = [d for d in directories if d and os.path.exists(d)]
            if not processes and not dirs:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL_S)
        problems = []
        if processes:
            problems.append(f"{len(processes)} process(es) still alive:\n"
                            + "\n".join("  " + _describe(p) for p in processes))
            for proc in processes:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                    proc.kill()
            psutil.wait_procs(processes, timeout=5)
        if dirs:
            problems.append(f"{len(dirs)} session director(y/ies) not removed:\n"
                            + "\n".join("  " + d for d in dirs))
            for path in dirs:
                shutil.rmtree(path, ignore_errors=True)
        pytest.fail(f"Started while the fixture was up and still there {LEAK_DEADLINE_S:g} s "
                    f"after {what} (now killed or removed):\n" + "\n".join(problems),
                    pytrace=False)


def _alive(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


# -- clusters --------------------------------------------------------------------------------------

def _params(request, fixture):
    """The dict a test passed with indirect parametrization, or {} (Ray's rule)."""
    param = getattr(request, "param", {})
    if param is None:
        return {}
    if not isinstance(param, dict):
        raise TypeError(f"The {fixture} fixture takes a dict of keyword arguments as its "
                        f"parameter (indirect=True), got {type(param).__name__}: {param!r}")
    return dict(param)


def init_kwargs(params):
    """``purerun.init`` keyword arguments for a fixture: the fixtures' defaults (one CPU,
    ``DEFAULT_OBJECT_STORE_MEMORY``) under what ``params`` sets."""
    if params.get("address") not in (None, "local"):
        return dict(params)  # attaching to a running cluster: it has its resources already
    kwargs = {"num_cpus": DEFAULT_NUM_CPUS, "object_store_memory": DEFAULT_OBJECT_STORE_MEMORY}
    kwargs.update(params)
    return kwargs


def _forked_nodes():
    """A context in which the nodes started are forked from the fork server, unless the
    environment says not to."""
    from purerun.core import launcher
    return launcher.forked_nodes(os.environ.get(FORKSERVER_ENV_VAR, "1") != "0")


@contextlib.contextmanager
def started_cluster(**params):
    """``purerun.init(**init_kwargs(params))``; on exit shutdown() and the leftover check.

    Yields:
        What init() returned.

    Raises:
        Whatever init() raises for bad arguments; pytest's failure exception (on exit) if
        processes or the session directory outlived shutdown().
    """
    import purerun
    from purerun.core import context
    check = LeftoverCheck()
    with _forked_nodes():
        info = purerun.init(**init_kwargs(params))
    # The directory of the node init() started (None when it attached to one).
    session_dir = getattr(getattr(context.client, "node", None), "session_dir", None)
    try:
        yield info
    finally:
        check.track()
        purerun.shutdown()
    check.verify([session_dir], "shutdown()")


@contextlib.contextmanager
def started_multinode(**params):
    """A ``cluster_utils.Cluster`` with ``num_nodes`` nodes, connected if ``do_init``.

    The parameters other than ``num_nodes``, ``do_init`` and ``namespace`` are the
    ``add_node`` arguments of every node (default: one CPU and
    ``DEFAULT_OBJECT_STORE_MEMORY`` each). On exit this process disconnects, the cluster
    shuts down and the leftover check runs.

    Yields:
        The Cluster.
    """
    import purerun
    from purerun.cluster_utils import Cluster
    num_nodes = params.pop("num_nodes", 0)
    do_init = params.pop("do_init", num_nodes > 0)
    namespace = params.pop("namespace", None)
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 0:
        raise ValueError(f"num_nodes must be a non-negative integer, got {num_nodes!r}")
    if do_init and num_nodes == 0:
        raise ValueError("do_init=True needs num_nodes >= 1: there is no node to connect to.")
    node_args = {"num_cpus": DEFAULT_NUM_CPUS,
                 "object_store_memory": DEFAULT_OBJECT_STORE_MEMORY}
    node_args.update(params)
    check = LeftoverCheck()
    cluster = Cluster()
    directories = [cluster._head_dir]
    try:
        with _forked_nodes():   # the nodes the test adds too
            for _ in range(num_nodes):
                cluster.add_node(**node_args)
            if do_init:
                cluster.connect(namespace=namespace)
            yield cluster
    finally:
        check.track()
        # Nodes added by the test too: their directories are checked as well.
        directories += [node._process.session_dir for node in cluster.list_all_nodes()]
        if purerun.is_initialized():
            purerun.shutdown()
        cluster.connected = False
        cluster.shutdown()
    check.verify(directories, "the cluster's shutdown()")


# -- command-line options --------------------------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("purerun")
    group.addoption("--purerun-fork-nodes", action="store_true", default=False,
                    help="fork every node this test run starts from the fork server, also "
                         "those of plain purerun.init() calls in tests (the fixtures' nodes "
                         "always are, unless PURERUN_FORKSERVER=0)")
    parser.addini("purerun_fork_nodes", type="bool", default=False,
                  help="as --purerun-fork-nodes")


def pytest_configure(config):
    if ((config.getoption("purerun_fork_nodes") or config.getini("purerun_fork_nodes"))
            and os.environ.get(FORKSERVER_ENV_VAR, "1") != "0"):
        from purerun.core import launcher
        launcher.use_forkserver()


# -- fixtures --------------------------------------------------------------------------------------

@pytest.fixture
def purerun_cluster(request):
    """A node for this test: ``purerun.init(num_cpus=1, ...)``, shut down after it.

    Parametrize with ``indirect=True`` and a dict of init keyword arguments.
    """
    with started_cluster(**_params(request, "purerun_cluster")) as info:
        yield info


@pytest.fixture(scope="module")
def purerun_cluster_shared(request):
    """One node for all the tests of a module that ask for it (as ``purerun_cluster``)."""
    with started_cluster(**_params(request, "purerun_cluster_shared")) as info:
        yield info


@pytest.fixture
def purerun_multinode(request):
    """A ``purerun.cluster_utils.Cluster`` for this test, shut down after it.

    Parameters (indirect): ``num_nodes``, ``do_init``, ``namespace``, and ``add_node``
    arguments for every node.
    """
    with started_multinode(**_params(request, "purerun_multinode")) as cluster:
        yield cluster


@pytest.fixture
def ray_start_regular(request):
    """Ray's name for ``purerun_cluster``."""
    with started_cluster(**_params(request, "ray_start_regular")) as info:
        yield info


@pytest.fixture(scope="module")
def ray_start_regular_shared(request):
    """Ray's name for ``purerun_cluster_shared``."""
    with started_cluster(**_params(request, "ray_start_regular_shared")) as info:
        yield info


@pytest.fixture
def ray_start_cluster(request):
    """Ray's name for ``purerun_multinode``."""
    with started_multinode(**_params(request, "ray_start_cluster")) as cluster:
        yield cluster


@pytest.fixture
def shutdown_only():
    """Nothing started: the test calls init() itself; shutdown() runs after it, as Ray's."""
    import purerun
    yield None
    purerun.shutdown()
