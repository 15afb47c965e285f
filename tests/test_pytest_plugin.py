"""The pytest plugin (purerun/pytest_plugin.py): its fixtures, used by small test files that
pytester runs, as a project using purerun would.

The inner runs find the plugin through its entry point: no conftest is copied. Each inner
test writes what it saw (node ids, session directories) to a file, which the outer test
then reads. The number of real clusters is kept small: the machine has 2 cores.
"""

import glob
import importlib.metadata
import json
import os
import sys
import textwrap

import psutil
import pytest

from purerun import pytest_plugin
from purerun.core import launcher

pytest_plugins = ["pytester"]

# Every inner file starts with this: ``record(**fields)`` appends one JSON line to RECORDS.
PRELUDE = """
import json, os
import pytest
import purerun

RECORDS = {records!r}

def record(**fields):
    with open(RECORDS, "a") as f:
        f.write(json.dumps(fields) + "\\n")

def node_id():
    return purerun.get_runtime_context().get_node_id()
"""


def write_tests(pytester, records, body, name="test_inner"):
    source = PRELUDE.format(records=str(records)) + textwrap.dedent(body)
    return pytester.makepyfile(**{name: source})


def read_records(records):
    with open(records) as f:
        return [json.loads(line) for line in f]


def session_dirs():
    return set(glob.glob(os.path.join(launcher.temp_root(), "session_*")))


def test_the_plugin_is_registered_by_entry_point():
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert plugins.get("purerun") == "purerun.pytest_plugin"


def test_init_kwargs_defaults_and_overrides():
    assert pytest_plugin.init_kwargs({}) == {
        "num_cpus": 1, "object_store_memory": pytest_plugin.DEFAULT_OBJECT_STORE_MEMORY}
    assert pytest_plugin.init_kwargs({"num_cpus": 4, "object_store_memory": 10 ** 8,
                                      "namespace": "n"}) == {
        "num_cpus": 4, "object_store_memory": 10 ** 8, "namespace": "n"}
    # Attaching to a running cluster takes no resources.
    assert pytest_plugin.init_kwargs({"address": "auto"}) == {"address": "auto"}


def test_function_fixture_default_and_indirect_parameters(pytester, tmp_path):
    records = tmp_path / "records"
    write_tests(pytester, records, """
        def test_default(purerun_cluster):
            assert purerun.cluster_resources()["CPU"] == 1
            assert purerun_cluster["node_id"] == node_id()
            record(test="default", node=node_id(), session=purerun_cluster["session_dir"])

        @pytest.mark.parametrize("purerun_cluster",
                                 [{"num_cpus": 2, "resources": {"disk": 1}}], indirect=True)
        def test_params(purerun_cluster):
            resources = purerun.cluster_resources()
            assert resources["CPU"] == 2 and resources["disk"] == 1
            record(test="params", node=node_id(), session=purerun_cluster["session_dir"])

        @pytest.mark.parametrize("ray_start_regular",
                                 [{"num_cpus": 3, "namespace": "ns"}], indirect=True)
        def test_ray_name(ray_start_regular):
            assert purerun.cluster_resources()["CPU"] == 3
            assert purerun.get_runtime_context().namespace == "ns"
            record(test="ray", node=node_id(), session=ray_start_regular["session_dir"])

        def test_shutdown_only(shutdown_only):
            assert not purerun.is_initialized()
            purerun.init(num_cpus=1, object_store_memory=32 * 1024 * 1024)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=4)
    seen = read_records(records)
    assert [r["test"] for r in seen] == ["default", "params", "ray"]
    assert len({r["node"] for r in seen}) == 3, "each test has its own node"
    assert not any(os.path.exists(r["session"]) for r in seen)
    assert not pytest_plugin_initialized()


def pytest_plugin_initialized():
    import purerun
    return purerun.is_initialized()


def test_module_scope_shares_one_cluster_per_module(pytester, tmp_path):
    records = tmp_path / "records"
    for module, param in (("test_first", ""), ("test_second", '{"num_cpus": 2}')):
        decorator = (f'@pytest.mark.parametrize("ray_start_regular_shared", [{param}], '
                     f'indirect=True)' if param else "")
        fixture = "ray_start_regular_shared" if param else "purerun_cluster_shared"
        write_tests(pytester, records, f"""
            {decorator}
            def test_a({fixture}):
                record(module="{module}", node=node_id(),
                       cpus=purerun.cluster_resources()["CPU"])

            {decorator}
            def test_b({fixture}):
                record(module="{module}", node=node_id(),
                       cpus=purerun.cluster_resources()["CPU"])

            {decorator}
            def test_c({fixture}):
                record(module="{module}", node=node_id(),
                       cpus=purerun.cluster_resources()["CPU"])
        """, name=module)
    result = pytester.runpytest()
    result.assert_outcomes(passed=6)
    seen = read_records(records)
    nodes = {m: {r["node"] for r in seen if r["module"] == m}
             for m in ("test_first", "test_second")}
    assert len(nodes["test_first"]) == 1 and len(nodes["test_second"]) == 1
    assert nodes["test_first"] != nodes["test_second"]
    assert {r["cpus"] for r in seen if r["module"] == "test_second"} == {2}


def test_multinode_fixture(pytester, tmp_path):
    records = tmp_path / "records"
    write_tests(pytester, records, """
        from purerun.cluster_utils import Cluster

        @pytest.mark.parametrize("ray_start_cluster", [{"num_nodes": 2, "num_cpus": 1}],
                                 indirect=True)
        def test_two_nodes_connected(ray_start_cluster):
            assert isinstance(ray_start_cluster, Cluster)
            assert purerun.is_initialized()
            ray_start_cluster.wait_for_nodes()
            assert len([n for n in purerun.nodes() if n["Alive"]]) == 2
            assert purerun.cluster_resources()["CPU"] == 2
            record(dirs=[n._process.session_dir for n in ray_start_cluster.list_all_nodes()])

        def test_empty_cluster_then_add(purerun_multinode):
            assert not purerun.is_initialized() and purerun_multinode.list_all_nodes() == []
            purerun_multinode.add_node(num_cpus=1)
            purerun_multinode.connect()
            assert purerun.cluster_resources()["CPU"] == 1
            record(dirs=[n._process.session_dir for n in purerun_multinode.list_all_nodes()])
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    dirs = [d for r in read_records(records) for d in r["dirs"]]
    assert len(dirs) == 3 and not any(os.path.exists(d) for d in dirs)


def test_a_failing_test_still_shuts_down(pytester, tmp_path):
    records = tmp_path / "records"
    write_tests(pytester, records, """
        @purerun.remote
        class Holder:
            def pid(self):
                return os.getpid()

        def test_fails(purerun_cluster):
            holder = Holder.remote()
            record(pid=purerun.get(holder.pid.remote()), session=purerun_cluster["session_dir"])
            assert False, "this test fails on purpose"
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)  # and no error in teardown
    result.stdout.fnmatch_lines(["*this test fails on purpose*"])
    (seen,) = read_records(records)
    assert not psutil.pid_exists(seen["pid"]) or (
        psutil.Process(seen["pid"]).status() == psutil.STATUS_ZOMBIE)
    assert not os.path.exists(seen["session"])
    assert not pytest_plugin_initialized()


def test_a_process_left_behind_fails_the_test_by_name(pytester, tmp_path, monkeypatch):
    monkeypatch.setattr(pytest_plugin, "LEAK_DEADLINE_S", 0.5)  # it is not going to go
    records = tmp_path / "records"
    write_tests(pytester, records, """
        import subprocess

        def test_leaves_a_process(purerun_cluster):
            # Processes a task starts are the node's to end (it is their subreaper); one
            # started here, while the fixture is up, is not, and outlives shutdown().
            record(pid=subprocess.Popen(["sleep", "60"]).pid)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    (seen,) = read_records(records)
    result.stdout.fnmatch_lines(["*still there 0.5 s after shutdown()*",
                                 "*1 process(es) still alive*", f"*pid {seen['pid']}: sleep 60*"])
    # It was killed: gone, or a zombie waiting for init to reap it.
    assert not psutil.pid_exists(seen["pid"]) or (
        psutil.Process(seen["pid"]).status() == psutil.STATUS_ZOMBIE)


def test_a_parameter_that_is_not_a_dict_is_named(pytester, tmp_path):
    write_tests(pytester, tmp_path / "records", """
        @pytest.mark.parametrize("purerun_cluster", [4], indirect=True)
        def test_bad(purerun_cluster):
            pass

        @pytest.mark.parametrize("purerun_multinode", [{"num_nodes": -1}], indirect=True)
        def test_bad_nodes(purerun_multinode):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*TypeError: The purerun_cluster fixture takes a dict of keyword arguments*got int: 4",
        "*ValueError: num_nodes must be a non-negative integer, got -1"])


def test_fork_nodes_option_forks_the_nodes_of_plain_init_calls_too(pytester, tmp_path):
    write_tests(pytester, tmp_path / "records", """
        from purerun.core import context

        def test_plain_init():
            purerun.init(num_cpus=1, object_store_memory=32 << 20)
            try:
                kind = type(context.client.node.process).__name__
                assert purerun.get(purerun.put(kind)) == kind
                print("NODE PROCESS", kind)
            finally:
                purerun.shutdown()
    """)
    forked = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider",
                                           "--purerun-fork-nodes")
    forked.assert_outcomes(passed=1)
    forked.stdout.fnmatch_lines(["*NODE PROCESS ForkedProcess*"])
    spawned = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    spawned.assert_outcomes(passed=1)
    spawned.stdout.fnmatch_lines(["*NODE PROCESS Popen*"])
    pytester.makeini("[pytest]\npurerun_fork_nodes = true\n")
    by_ini = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    by_ini.stdout.fnmatch_lines(["*NODE PROCESS ForkedProcess*"])


def test_xdist_workers_do_not_collide(pytester, tmp_path):
    records = tmp_path / "records"
    write_tests(pytester, records, """
        @pytest.mark.parametrize("i", range(4))
        def test_cluster(purerun_cluster, i):
            @purerun.remote
            def pid():
                return os.getpid()
            record(worker=os.environ["PYTEST_XDIST_WORKER"], node=node_id(),
                   session=purerun_cluster["session_dir"], pid=purerun.get(pid.remote()))
    """)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    seen = read_records(records)
    assert len({r["worker"] for r in seen}) == 2
    assert len({r["session"] for r in seen}) == 4 and len({r["node"] for r in seen}) == 4
    assert not any(os.path.exists(r["session"]) for r in seen)


def test_many_clusters_in_a_row_leave_nothing(pytester, tmp_path):
    runs = 20
    write_tests(pytester, tmp_path / "records", f"""
        @pytest.mark.parametrize("i", range({runs}))
        def test_cluster(purerun_cluster, i):
            assert purerun.get(purerun.put(i)) == i
    """)
    dirs_before = session_dirs()
    shm_before = set(glob.glob("/dev/shm/purerun*"))
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = pytester.runpytest()
    result.assert_outcomes(passed=runs)
    assert session_dirs() - dirs_before == set()
    assert set(glob.glob("/dev/shm/purerun*")) - shm_before == set()
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in children_before and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []


def _small_dev_shm_command(size):
    """A shell command prefix running what follows with a tmpfs of ``size`` on /dev/shm, as
    in a container, or None where user and mount namespaces are not available."""
    import shutil
    import subprocess
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size={size} tmpfs /dev/shm"],
                           capture_output=True)
    return None if probe.returncode else f"mount -t tmpfs -o size={size} tmpfs /dev/shm && "


def test_xdist_in_a_container_sized_dev_shm(pytester, tmp_path):
    prefix = _small_dev_shm_command("64m")
    if prefix is None:
        pytest.skip("needs unshare with user and mount namespaces to make a 64 MB /dev/shm")
    records = tmp_path / "records"
    write_tests(pytester, records, """
        import shutil
        import numpy as np

        @pytest.mark.parametrize("i", range(2))
        def test_large_values(purerun_cluster, i):
            assert shutil.disk_usage("/dev/shm").total <= 64 * 1024 * 1024
            # 40 MB: larger than the fixtures' object store, and most of /dev/shm.
            value = np.full(40 * 1024 * 1024 // 8, i, dtype=np.int64)
            assert (purerun.get(purerun.put(value)) == i).all()
            record(session=purerun_cluster["session_dir"])
    """)
    command = prefix + (f"exec {sys.executable} -m pytest -p no:cacheprovider -q -n 2 "
                        f"test_inner.py")
    result = pytester.run("unshare", "-rm", "sh", "-c", command)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*2 passed*"])
    seen = read_records(records)
    assert len({r["session"] for r in seen}) == 2
    assert not any(os.path.exists(r["session"]) for r in seen)
