"""Nodes forked from the fork server (core/forkserver.py): they run as spawned nodes do, and the
fork server goes away with its driver."""

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import purerun
from purerun.core import forkserver, launcher

from helpers import run_fresh_script, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def forked():
    with launcher.forked_nodes():
        yield
    launcher.stop_forkserver()


def test_a_forked_node_runs_tasks_with_the_drivers_cwd_environment_and_path(
        forked, tmp_path, monkeypatch):
    monkeypatch.setenv("PURERUN_TEST_FORKED", "yes")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "forked_helper_module.py").write_text("VALUE = 41\n")
    purerun.init(num_cpus=1, object_store_memory=32 << 20)
    try:
        node = purerun.core.context.client.node
        assert isinstance(node.process, forkserver.ForkedProcess)
        assert psutil.Process(node.pid).ppid() == launcher.forkserver_pid()

        @purerun.remote
        def where():
            import forked_helper_module
            return (os.getcwd(), os.environ.get("PURERUN_TEST_FORKED"),
                    forked_helper_module.VALUE + 1, os.getsid(0) == os.getpid())

        cwd, env, value, _ = purerun.get(where.remote())
        assert (cwd, env, value) == (str(tmp_path), "yes", 42)
        assert os.getsid(node.pid) == node.pid  # its own session, as a spawned node
    finally:
        purerun.shutdown()
    assert node.process.returncode == 0
    assert not os.path.exists(node.session_dir)


def test_one_fork_server_serves_many_nodes_and_stops_with_its_nodes_gone(forked):
    server = None
    for _ in range(3):
        purerun.init(num_cpus=1, object_store_memory=32 << 20)
        server = server or launcher.forkserver_pid()
        assert launcher.forkserver_pid() == server
        pid = purerun.core.context.client.node.pid
        purerun.shutdown()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    launcher.stop_forkserver()
    assert launcher.forkserver_pid() is None
    assert not psutil.pid_exists(server)


def test_a_node_that_fails_at_start_up_reports_its_exit_code_and_error(forked, tmp_path):
    # A node that cannot start: nothing listens where its head should be.
    process = launcher.spawn_node(launcher.node_resources(1, 0, None), 32 << 20,
                                  head="127.0.0.1:9", die_with_parent=True, errors_file=True)
    assert isinstance(process.process, forkserver.ForkedProcess)
    with pytest.raises(launcher.NodeStartError) as info:
        process.wait_listening(60)
    assert info.value.exit_code == 1
    assert "purerun node:" in info.value.errors
    assert not os.path.exists(process.session_dir)


def test_wait_times_out_as_popen_does_and_a_signal_gives_a_negative_code(forked):
    node = launcher.spawn_node(launcher.node_resources(1, 0, None), 32 << 20,
                               die_with_parent=True)
    process = node.process
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.05)
    assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL
    assert process.poll() == -signal.SIGKILL
    node.reap(5)   # removes the directory a killed node left
    assert not os.path.exists(node.session_dir)


def test_a_killed_fork_server_is_replaced_by_the_next_node(forked):
    purerun.init(num_cpus=1, object_store_memory=32 << 20)
    first = launcher.forkserver_pid()
    purerun.shutdown()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: launcher.forkserver_pid() is None, message="the fork server to die")
    purerun.init(num_cpus=1, object_store_memory=32 << 20)
    try:
        assert purerun.get(purerun.put(7)) == 7
        assert launcher.forkserver_pid() not in (None, first)
    finally:
        purerun.shutdown()


def test_the_fork_server_and_its_nodes_die_with_a_killed_driver(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        import purerun
        from purerun.core import launcher, context
        launcher.use_forkserver()
        purerun.init(num_cpus=1, object_store_memory=32 << 20)

        @purerun.remote
        def pid():
            import os
            return os.getpid()

        worker = purerun.get(pid.remote())
        print(launcher.forkserver_pid(), context.client.node.pid, worker, flush=True)
        time.sleep(600)
    """)
    path = tmp_path / "driver.py"
    path.write_text(script)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    driver = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=repo)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 3, pids
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()

    def all_gone():
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in pids)
    wait_for(all_gone, timeout=30, message="the fork server, node and worker to exit")


def test_the_pytest_fixtures_fork_their_nodes_unless_told_not_to(tmp_path):
    code = textwrap.dedent("""
        import os
        from purerun.core import context, forkserver, launcher
        from purerun.pytest_plugin import started_cluster
        with started_cluster() as info:
            print(type(context.client.node.process).__name__)
        launcher.stop_forkserver()
    """)
    forked_run = run_fresh_script(tmp_path / "a.py", code)
    assert forked_run.returncode == 0, forked_run.stderr
    assert forked_run.stdout.strip() == "ForkedProcess"
    os.environ["PURERUN_FORKSERVER"] = "0"
    try:
        spawned_run = run_fresh_script(tmp_path / "b.py", code)
    finally:
        del os.environ["PURERUN_FORKSERVER"]
    assert spawned_run.returncode == 0, spawned_run.stderr
    assert spawned_run.stdout.strip() == "Popen"
