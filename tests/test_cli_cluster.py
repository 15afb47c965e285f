"""A cluster made with the command line, as a user makes one: ``purerun start --head``,
``purerun start --address``, ``python -m purerun.node``, ``purerun status``, drivers with
``purerun.init(address="host:port")``, ``purerun stop``; and each way that can go wrong.

Every command runs as a subprocess with its own TMPDIR (so its own records and session
directories) and HOME (so its own token file). What ``purerun start`` leaves running is
not a child of this process once the command exits, so the suite's leak guard cannot see
it: the tests check with the pids of the records that ``purerun stop`` ended it, and the
``cli`` fixture kills whatever a failing test left.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap

import psutil
import pytest

from helpers import wait_for

# Seconds a command may take: each one runs in well under one; this bounds a broken one.
COMMAND_TIMEOUT_S = 30
pytestmark = pytest.mark.timeout(60)


class CommandLine:
    """Runs purerun's commands and drivers in one private TMPDIR and HOME."""

    def __init__(self, tmp_path):
        # A short TMPDIR: a node's socket path must fit in AF_UNIX's 108 bytes, which
        # pytest's tmp_path (named after the test) may not leave room for.
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="cli-"))
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.dir = tmp_path
        env = dict(os.environ, TMPDIR=str(self.tmp), HOME=str(self.home),
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        for name in ("PURERUN_AUTH_TOKEN", "PURERUN_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN",
                     "RAY_AUTH_TOKEN_PATH", "PURERUN_ADDRESS", "RAY_ADDRESS"):
            env.pop(name, None)
        self.env = env

    @property
    def sessions(self):
        return self.tmp / "purerun-sessions"

    def run(self, *args, **env):
        return subprocess.run([sys.executable, "-m", "purerun.cli", *args],
                              env=dict(self.env, **env), capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)

    def driver(self, code, **env):
        script = self.dir / "driver.py"
        script.write_text(textwrap.dedent(code))
        return subprocess.run([sys.executable, str(script)], env=dict(self.env, **env),
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)

    def records(self, kind=None):
        """The records `purerun start` wrote, oldest first."""
        found = []
        directory = self.sessions / "records"
        for path in directory.glob("*.json") if directory.exists() else ():
            found.append(json.loads(path.read_text()))
        found.sort(key=lambda r: r["started"])
        return [r for r in found if kind is None or r["kind"] == kind]

    def start_head(self, *args):
        started = self.run("start", "--head", "--port", "0", "--num-cpus", "1", *args)
        assert started.returncode == 0, started.stderr
        address = re.search(r"purerun start --address '([^']+)'", started.stdout).group(1)
        return address, started.stdout


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def cli(tmp_path):
    """A CommandLine; afterwards, whatever it left running is killed (and the test fails
    later in its own asserts if that was not expected)."""
    line = CommandLine(tmp_path)
    try:
        yield line
    finally:
        for record in line.records():
            if not gone(record["pid"]):
                try:
                    psutil.Process(record["pid"]).kill()
                except psutil.NoSuchProcess:
                    pass
        shutil.rmtree(line.tmp, ignore_errors=True)


def stop_everything(cli, expected):
    """`purerun stop`, then check that the recorded processes and their directories are
    gone."""
    pids = [r["pid"] for r in cli.records()]
    assert len(pids) == expected, cli.records()
    stopped = cli.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.count("Stopped ") == expected, stopped.stdout
    for pid in pids:
        wait_for(lambda: gone(pid), timeout=10, message=f"pid {pid} to exit after stop")
    assert cli.records() == []
    assert sorted(os.listdir(cli.sessions)) == ["records"]
    again = cli.run("stop")
    assert again.returncode == 1 and "No purerun process" in again.stderr


def active_nodes(status_text):
    active = status_text.split("Active:")[1].split("Dead:")[0]
    return re.findall(r"node_[0-9a-f]+", active)


def test_head_node_and_driver_through_the_command_line(cli):
    address, banner = cli.start_head()
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    token_file = cli.home / ".purerun" / "auth_token"
    assert token_file.exists() and str(token_file) in banner
    assert f'purerun.init(address="{address}")' in banner and "purerun stop" in banner
    assert "PURERUN_AUTH_TOKEN" in banner

    joined = cli.run("start", "--address", address, "--num-cpus", "1",
                     "--resources", '{"side": 1}', "--labels", "zone=b")
    assert joined.returncode == 0, joined.stderr
    heads, nodes = cli.records("head"), cli.records("node")
    assert [h["address"] for h in heads] == [address]
    assert [n["head"] for n in nodes] == [address, address]
    second = nodes[1]["node_id"]

    status = cli.run("status")
    assert status.returncode == 0, status.stderr
    assert sorted(active_nodes(status.stdout)) == sorted(
        f"node_{n['node_id'][:12]}" for n in nodes)
    assert " 0.0/2.0 CPU" in status.stdout and " 0.0/1.0 side" in status.stdout
    verbose = cli.run("status", "-v", "--address", address)
    assert verbose.returncode == 0, verbose.stderr
    details = verbose.stdout.split("Nodes")[1]
    # Every node also has Ray's default label ray.io/node-id.
    assert "0.0/1.0 side" in details and "zone=b" in details

    ran = cli.driver(f"""
        import purerun
        purerun.init(address="{address}")

        @purerun.remote(resources={{"side": 1}})
        def where():
            return purerun.get_runtime_context().get_node_id()

        print("ran on", purerun.get(where.remote()))
        print("alive", sum(n["Alive"] for n in purerun.nodes()))
        purerun.shutdown()
    """)
    assert ran.returncode == 0, ran.stderr
    assert f"ran on {second}" in ran.stdout
    assert "alive 2" in ran.stdout   # it attached to a recorded node: none was added

    auto = cli.driver("""
        import purerun
        purerun.init(address="auto")
        print("on", purerun.get_runtime_context().get_node_id())
        try:
            purerun.shutdown()
            purerun.init(address="auto", num_cpus=1)
        except ValueError as e:
            print("refused:", e)
    """)
    assert auto.returncode == 0, auto.stderr
    assert f"on {nodes[0]['node_id']}" in auto.stdout   # the head's node
    assert "refused: When connecting to an existing cluster" in auto.stdout

    again = cli.run("start", "--head", "--port", "0")
    assert again.returncode == 1 and "already running" in again.stderr
    stop_everything(cli, expected=3)


def test_a_driver_without_a_node_here_starts_its_own(cli, tmp_path):
    address, _ = cli.start_head()
    # Another TMPDIR: no record of the head's node, as on another host.
    elsewhere = cli.tmp / "elsewhere"
    elsewhere.mkdir()
    ran = cli.driver("""
        import purerun
        purerun.init()          # PURERUN_ADDRESS says where
        print("alive", sum(n["Alive"] for n in purerun.nodes()))
        purerun.shutdown()
    """, TMPDIR=str(elsewhere), PURERUN_ADDRESS=address)
    assert ran.returncode == 0, ran.stderr
    assert "alive 2" in ran.stdout
    # Its node lived as long as the driver: the head sees it gone.
    wait_for(lambda: len(active_nodes(cli.run("status").stdout)) == 1, timeout=10,
             message="the driver's own node to leave the cluster")
    assert os.listdir(elsewhere / "purerun-sessions") == []
    shutil.rmtree(elsewhere)
    stop_everything(cli, expected=2)


def test_a_wrong_token_is_refused_and_force_stop_kills(cli):
    address, _ = cli.start_head()
    refused = cli.run("start", "--address", address, PURERUN_AUTH_TOKEN="x" * 40)
    assert refused.returncode == 1
    assert "refused" in refused.stderr and address in refused.stderr
    assert len(cli.records("node")) == 1   # the head's node only
    # A driver of another host (here: another TMPDIR, with no record of a local node,
    # which a driver would reach over its unix socket with no token) must start a node.
    elsewhere = cli.tmp / "elsewhere"
    elsewhere.mkdir()
    bad_driver = cli.driver(f"""
        import purerun
        try:
            purerun.init(address="{address}")
        except ConnectionError as e:
            print("error:", e)
    """, PURERUN_AUTH_TOKEN="x" * 40, TMPDIR=str(elsewhere))
    assert "error:" in bad_driver.stdout and "refused" in bad_driver.stdout
    assert not (elsewhere / "purerun-sessions").exists() or \
        os.listdir(elsewhere / "purerun-sessions") == []
    shutil.rmtree(elsewhere)

    pids = [r["pid"] for r in cli.records()]
    forced = cli.run("stop", "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.count("with SIGKILL") == 2
    for pid in pids:
        wait_for(lambda: gone(pid), timeout=10, message=f"pid {pid} to be killed")
    assert cli.records() == [] and sorted(os.listdir(cli.sessions)) == ["records"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_joining_needs_a_token_and_a_head_that_answers(cli):
    port = free_port()
    no_token = cli.run("start", "--address", f"127.0.0.1:{port}")
    assert no_token.returncode == 1
    assert "PURERUN_AUTH_TOKEN" in no_token.stderr and "auth_token" in no_token.stderr
    token = "t" * 40
    unreachable = cli.run("start", "--address", f"127.0.0.1:{port}", PURERUN_AUTH_TOKEN=token)
    assert unreachable.returncode == 1
    assert f"127.0.0.1:{port}" in unreachable.stderr and "unreachable" in unreachable.stderr
    driver = cli.driver(f"""
        import purerun
        try:
            purerun.init(address="127.0.0.1:{port}")
        except ConnectionError as e:
            print("error:", e)
    """, PURERUN_AUTH_TOKEN=token)
    assert f"error: the head at 127.0.0.1:{port} is unreachable" in driver.stdout
    assert cli.records() == []
    bad = cli.run("start", "--address", "no-port-here")
    assert bad.returncode == 2 and "host:port" in bad.stderr
    nothing = cli.run("status")
    assert nothing.returncode == 1 and "No purerun head found" in nothing.stderr


def test_a_busy_port_is_named(cli):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = cli.run("start", "--head", "--port", str(port))
    assert busy.returncode == 1
    assert f"127.0.0.1:{port}" in busy.stderr and "in use" in busy.stderr
    assert cli.records() == []


def test_a_foreground_node_stops_cleanly_on_a_signal(cli):
    address, _ = cli.start_head()
    foreground = subprocess.Popen(
        [sys.executable, "-m", "purerun.node", "--address", address, "--num-cpus", "1"],
        env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        nodes = wait_for(lambda: len(cli.records("node")) == 2 and cli.records("node"),
                         timeout=20, message="the foreground node to be recorded")
        record = nodes[1]
        assert len(active_nodes(cli.run("status").stdout)) == 2
        foreground.send_signal(signal.SIGINT)
        out, err = foreground.communicate(timeout=20)
    finally:
        if foreground.poll() is None:
            foreground.kill()
            foreground.wait()
    assert foreground.returncode == 0, err
    assert "joined the head" in out and "stopped" in out
    assert gone(record["pid"])
    assert not os.path.exists(record["session_dir"])
    assert len(cli.records("node")) == 1
    stop_everything(cli, expected=2)
