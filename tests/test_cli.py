"""The purerun command line: start/stop/status of a standalone node (no head), detached
actors across drivers, arguments it refuses, version, and a quick microbenchmark run.
Clusters with a head are in test_cli_cluster."""

import json
import os
import subprocess
import sys
import textwrap

import psutil
import pytest

from helpers import wait_for


def run(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "purerun.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    # A private temp dir: the node's session dir and the records of `purerun start` live there.
    return dict(os.environ, TMPDIR=str(tmp_path),
                PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


def driver(env, tmp_path, name, code):
    script = tmp_path / name
    script.write_text(textwrap.dedent(code))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def started_pid(tmp_path):
    """The pid of the node `purerun start` recorded, or None."""
    for path in (tmp_path / "purerun-sessions" / "records").glob("node-*.json"):
        return json.loads(path.read_text())["pid"]
    return None


@pytest.fixture
def started_node(env, tmp_path):
    """Run `purerun start`; whatever happens, the node is gone afterwards.

    A started node is not a child of this process (it outlives `purerun start`), so the
    suite's leak check cannot see it: this fixture must make sure of it.
    """
    try:
        yield run(["start", "--num-cpus", "2"], env)
    finally:
        pid = started_pid(tmp_path)
        if pid is not None and psutil.pid_exists(pid):
            run(["stop"], env)
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()


def test_detached_actor_outlives_its_driver_on_a_started_node(env, tmp_path, started_node):
    started = started_node
    assert started.returncode == 0, started.stderr
    pid = started_pid(tmp_path)
    try:
        assert "first: 1" in driver(env, tmp_path, "first.py", """
            import purerun
            purerun.init(address="auto", namespace="cli-test")

            @purerun.remote
            class Keeper:
                def __init__(self):
                    self.n = 0
                def add(self):
                    self.n += 1
                    return self.n

            k = Keeper.options(name="keeper", lifetime="detached").remote()
            print("first:", purerun.get(k.add.remote()))
        """)
        assert "second: 2" in driver(env, tmp_path, "second.py", """
            import purerun
            purerun.init(address="auto", namespace="cli-test")
            print("second:", purerun.get(purerun.get_actor("keeper").add.remote()))
        """)
        again = run(["start"], env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = run(["stop"], env)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not psutil.pid_exists(pid) or
             psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=10,
             message="the started node is still running after 'purerun stop'")
    assert os.listdir(tmp_path / "purerun-sessions") == ["records"]
    assert os.listdir(tmp_path / "purerun-sessions" / "records") == []


def test_a_departed_drivers_work_ends_with_it_on_a_shared_node(env, tmp_path, started_node):
    assert started_node.returncode == 0, started_node.stderr
    ran = tmp_path / "ran"
    ran.mkdir()
    first = driver(env, tmp_path, "first.py", f"""
        import os, time, purerun
        purerun.init(address="auto")

        @purerun.remote
        def slow(i):
            open(os.path.join({str(ran)!r}, str(i)), "w").close()
            time.sleep(0.2)

        @purerun.remote
        class Holder:
            def pid(self):
                return os.getpid()

        holder = Holder.remote()
        print("actor pid:", purerun.get(holder.pid.remote()))
        refs = [slow.remote(i) for i in range(400)]
        purerun.wait(refs, num_returns=1)
        purerun.shutdown()      # with 400 tasks submitted, hardly one ran
    """)
    actor_pid = int(first.split("actor pid:")[1].split()[0])
    second = driver(env, tmp_path, "second.py", """
        import time, purerun
        from purerun.core import context
        purerun.init(address="auto")

        @purerun.remote
        def tiny():
            return "answered"

        print(purerun.get(tiny.remote(), timeout=30))
        deadline = time.monotonic() + 30
        while context.client.request("stats")["tasks"] and time.monotonic() < deadline:
            time.sleep(0.02)
        print("tasks left:", context.client.request("stats")["tasks"])
    """)
    assert "answered" in second and "tasks left: 0" in second, second
    assert len(os.listdir(ran)) < 400     # the rest was dropped, not run
    wait_for(lambda: not psutil.pid_exists(actor_pid) or
             psutil.Process(actor_pid).status() == psutil.STATUS_ZOMBIE, timeout=10,
             message="the departed driver's actor is still running")


def test_status_of_a_node_without_a_head(env, tmp_path, started_node):
    assert started_node.returncode == 0, started_node.stderr
    status = run(["status", "-v"], env)
    assert status.returncode == 0, status.stderr
    active = status.stdout.split("Active:")[1].split("Dead:")[0]
    assert active.count("node_") == 1
    assert " 0.0/2.0 CPU" in status.stdout
    assert "a node without a head" in status.stdout
    assert "resources: 2.0 CPU" in status.stdout.split("Nodes")[1]


@pytest.mark.parametrize("args, words", [
    (["start", "--port", "6380"], "--host and --port are for the head"),
    (["start", "--node-ip-address", "127.0.0.1"], "--node-ip-address is for a node"),
    (["start", "--head", "--address", "127.0.0.1:6380"], "not allowed with"),
    (["start", "--resources", "[1]"], "JSON object"),
    (["start", "--labels", "novalue"], "key=value"),
])
def test_bad_start_arguments_are_named(env, args, words):
    done = run(args, env)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_auto_without_a_node_names_the_problem(env, tmp_path):
    out = driver(env, tmp_path, "auto.py", """
        import purerun
        try:
            purerun.init(address="auto")
        except ConnectionError as e:
            print("error:", e)
    """)
    assert "purerun start" in out
    stopped = run(["stop"], env)
    assert stopped.returncode == 1 and "No purerun process" in stopped.stderr


def test_version_and_microbenchmark(env):
    version = run(["version"], env)
    assert version.returncode == 0 and version.stdout.strip()
    bench = run(["microbenchmark", "--filter", "single client get calls", "--trials", "1",
                 "--trial-seconds", "0.05", "--no-stdlib"], env)
    assert bench.returncode == 0, bench.stderr
    assert "single client get calls (Plasma Store) per second" in bench.stdout
    assert "init to first result" in bench.stdout and "idle cluster" in bench.stdout


def test_scale_rows(env, tmp_path):
    out = tmp_path / "scale.json"
    bench = run(["microbenchmark", "--scale", "--shrink", "1000", "--json", str(out)], env)
    assert bench.returncode == 0, bench.stderr
    rows = json.loads(out.read_text())["rows"]
    names = [row["name"] for row in rows]
    assert "many returns (3 returns of 10k-int lists, get each)" in names
    assert "tiny tasks, 100 at once" in names and "wait(num_returns=1) loop over 10 refs" in names
    for row in rows:
        assert row["seconds"] > 0 and row["per_item_us"] == row["seconds"] / row["items"] * 1e6
        assert f"{row['name']}: " in bench.stdout


@pytest.fixture
def capped_history(env):
    """A started node keeps only 5 finished tasks (set before `started_node` starts it)."""
    env["RAY_task_events_max_num_task_in_gcs"] = "5"
    return env


def test_list_and_summary_print_the_state_of_a_started_node(capped_history, env, tmp_path,
                                                            started_node):
    assert started_node.returncode == 0, started_node.stderr
    driver(env, tmp_path, "work.py", """
        import purerun
        purerun.init(address="auto", namespace="state")

        @purerun.remote
        def square(x):
            return x * x

        @purerun.remote
        def broken():
            raise ValueError("on purpose")

        @purerun.remote
        class Keeper:
            def add(self):
                return 1

        assert purerun.get([square.remote(i) for i in range(12)])[-1] == 121
        try:
            purerun.get(broken.remote())
        except ValueError:
            pass
        keeper = Keeper.options(name="keeper", lifetime="detached").remote()
        purerun.get(keeper.add.remote())
    """)
    listed = run(["list", "tasks", "--format", "json"], env)
    assert listed.returncode == 0, listed.stderr
    tasks = json.loads(listed.stdout)
    # The history holds the newest 5 finished tasks, whatever ran before.
    assert len(tasks) == 5
    assert [t["name"] for t in tasks][-3:] == ["broken", "Keeper.__init__", "Keeper.add"]
    failed = run(["list", "tasks", "--filter", "state=FAILED"], env)
    assert failed.returncode == 0, failed.stderr
    assert "Total: 1" in failed.stdout and "broken" in failed.stdout
    assert "TASK_EXECUTION_EXCEPTION" in failed.stdout
    assert "square" not in run(["list", "tasks", "--filter", "name!=square", "--limit", "10"],
                               env).stdout
    detail = run(["list", "tasks", "--filter", "name=broken", "--detail"], env)
    assert "error_message:" in detail.stdout and "on purpose" in detail.stdout
    actors = run(["list", "actors"], env)
    assert actors.returncode == 0 and "Keeper" in actors.stdout and "ALIVE" in actors.stdout
    for resource in ("nodes", "jobs", "objects"):
        done = run(["list", resource], env)
        assert done.returncode == 0 and "Total:" in done.stdout, done.stderr
    assert "ALIVE" in run(["list", "nodes"], env).stdout
    summary = run(["summary", "tasks"], env)
    assert summary.returncode == 0, summary.stderr
    assert "Tasks Summary" in summary.stdout and "square" in summary.stdout
    assert "Keeper" in run(["summary", "actors"], env).stdout
    objects = run(["summary", "objects", "--format", "json"], env)
    assert objects.returncode == 0 and "total_objects" in json.loads(objects.stdout)
    bad = run(["list", "tasks", "--filter", "nope=1"], env)
    assert bad.returncode == 1 and "nope is not supported" in bad.stderr
    assert run(["list", "tasks", "--filter", "junk"], env).returncode == 2


def test_list_without_a_node_names_the_problem(env):
    done = run(["list", "tasks"], env)
    assert done.returncode == 1 and "No purerun node found" in done.stderr
