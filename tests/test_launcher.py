"""core.launcher without starting a node: where init() connects to, what a new node
offers, the records of what `purerun start` leaves running (and stopping recorded processes,
plain sleepers here), and joining a head that is not there. Starting and stopping real nodes
and heads is tested through init() (test_api, test_lifecycle) and the command line
(test_cli, test_cli_cluster)."""

import json
import os
import subprocess
import sys
import tempfile

import psutil
import pytest

from purerun.core import launcher


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """A private temp dir: no recorded node, no address in the environment."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for name in launcher.ADDRESS_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return launcher.temp_root()


def record(kind, address, head=None, pid=None):
    """Record this process (alive, so the record is not stale) as a head or node."""
    record = launcher.ProcessRecord(kind, os.getpid() if pid is None else pid, address,
                                    head=head)
    launcher._write_record(record)
    return record


def socket_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    return str(path)


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- resolve_address --------------------------------------------------------------------------


def test_temp_root_is_under_the_temp_dir(temp_root, tmp_path):
    assert temp_root == str(tmp_path / "purerun-sessions")
    assert os.path.isdir(temp_root)


def test_no_address_starts_a_node_unless_the_environment_names_one(temp_root, monkeypatch):
    assert launcher.resolve_address(None) is None
    assert launcher.resolve_address("local") is None
    monkeypatch.setenv("RAY_ADDRESS", "/ray/node.sock")
    assert launcher.resolve_address(None) == "/ray/node.sock"
    monkeypatch.setenv("PURERUN_ADDRESS", "/purerun/node.sock")
    assert launcher.resolve_address(None) == "/purerun/node.sock"  # the first one set wins
    assert launcher.resolve_address("local") is None


def test_an_explicit_address_is_taken_as_it_is(temp_root, monkeypatch):
    monkeypatch.setenv("PURERUN_ADDRESS", "/from/env")
    assert launcher.resolve_address("/given/node.sock") == "/given/node.sock"


def test_auto_finds_the_environment_then_the_recorded_head_then_node(temp_root, tmp_path,
                                                                     monkeypatch):
    with pytest.raises(ConnectionError, match="purerun start"):
        launcher.resolve_address("auto")
    node_socket = socket_file(tmp_path, "node.sock")
    record(launcher.NODE, node_socket)
    assert launcher.resolve_address("auto") == node_socket
    monkeypatch.setenv("PURERUN_ADDRESS", "auto")  # as RAY_ADDRESS=auto in Ray
    assert launcher.resolve_address(None) == node_socket
    record(launcher.HEAD, "127.0.0.1:6380", pid=os.getppid())
    assert launcher.resolve_address("auto") == "127.0.0.1:6380"
    monkeypatch.setenv("PURERUN_ADDRESS", "/from/env")
    assert launcher.resolve_address("auto") == "/from/env"


def test_a_record_that_cannot_be_read_is_removed(temp_root):
    os.makedirs(launcher.records_dir(), exist_ok=True)
    path = os.path.join(launcher.records_dir(), "node-1.json")
    for text in ("{not json", json.dumps({"kind": "other", "pid": 1, "address": "x"})):
        with open(path, "w") as f:
            f.write(text)
        assert launcher.running_records() == []
        assert not os.path.exists(path)
    assert launcher.recorded_address() is None
    assert launcher.stop_recorded(grace_period=1) == []


def test_a_record_of_a_dead_or_recycled_pid_is_stale_and_removed(temp_root, tmp_path):
    gone = record(launcher.NODE, socket_file(tmp_path, "a.sock"), pid=dead_pid())
    recycled = launcher.ProcessRecord(launcher.NODE, os.getpid(), "b.sock",
                                      create_time=launcher._create_time(os.getpid()) - 60)
    launcher._write_record(recycled)
    assert launcher.running_records() == []
    assert not os.path.exists(gone.path) and not os.path.exists(recycled.path)


def test_a_record_round_trips(temp_root, tmp_path):
    written = record(launcher.NODE, socket_file(tmp_path, "n.sock"), head="10.0.0.1:6380")
    [read] = launcher.running_records()
    assert read.to_dict() == written.to_dict()
    assert read.kind == "node" and read.head == "10.0.0.1:6380" and read.pid == os.getpid()
    assert os.path.basename(read.path) == f"node-{os.getpid()}.json"
    assert launcher.running_records(launcher.HEAD) == []


def test_a_recorded_node_counts_only_while_its_socket_exists(temp_root, tmp_path):
    socket_path = tmp_path / "node.sock"
    record(launcher.NODE, str(socket_path), head="127.0.0.1:6380")
    assert launcher.recorded_address() is None
    assert launcher.node_for_head("127.0.0.1:6380") is None
    socket_path.touch()
    assert launcher.recorded_address() == str(socket_path)
    assert launcher.node_for_head("localhost:6380").address == str(socket_path)
    assert launcher.node_for_head("127.0.0.1:6381") is None


@pytest.mark.parametrize("address, is_head", [
    ("127.0.0.1:6380", True), ("localhost:1", True), ("[::1]:6380", True),
    ("head.example.com:6380", True),
    ("/tmp/session/node.sock", False), ("node.sock", False), ("host:port", False),
    ("host:0", False), ("host:70000", False), (":6380", False), ("a b:1", False),
    (None, False),
])
def test_head_addresses_are_told_from_paths(address, is_head):
    assert launcher.is_head_address(address) is is_head


def test_an_existing_path_is_never_a_head_address(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd:1").touch()
    assert not launcher.is_head_address("odd:1")


def test_same_head_compares_ports_and_what_hosts_resolve_to():
    assert launcher.same_head("127.0.0.1:6380", "127.0.0.1:6380")
    assert launcher.same_head("localhost:6380", "127.0.0.1:6380")
    assert not launcher.same_head("127.0.0.1:6380", "127.0.0.1:6381")
    assert not launcher.same_head("127.0.0.1:6380", "not an address")


@pytest.mark.parametrize("text, error", [
    ("", ""),
    ("just one line\n", "just one line"),
    ("a log line\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
     "    join()\npurerun.core.transport.HandshakeError: the head refused the token\n",
     "the head refused the token"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyboardInterrupt\n",
     "KeyboardInterrupt"),
])
def test_the_last_error_of_a_crashed_process(text, error):
    assert launcher.last_error(text) == error


# --- stopping what `purerun start` recorded ----------------------------------------------------

def sleeper(ignore_term=False):
    """A process of our own to stop, and a session directory for it."""
    code = ("import signal, sys, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + "print('ready', flush=True)\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    session_dir = tempfile.mkdtemp(prefix="session_", dir=launcher.temp_root())
    return process, session_dir


@pytest.mark.parametrize("ignore_term, force, killed", [
    (False, False, False), (True, False, True), (False, True, True)])
def test_stop_terminates_then_kills_and_cleans_up(temp_root, ignore_term, force, killed):
    node, node_dir = sleeper(ignore_term)
    head, head_dir = sleeper()
    try:
        launcher._write_record(launcher.ProcessRecord(launcher.NODE, node.pid, "n.sock",
                                                      session_dir=node_dir))
        launcher._write_record(launcher.ProcessRecord(launcher.HEAD, head.pid, "h:1",
                                                      session_dir=head_dir))
        stopped = launcher.stop_recorded(grace_period=0.2, force=force)
        assert [(r.kind, r.pid, k) for r, k in stopped] == [
            ("node", node.pid, killed), ("head", head.pid, force)]
        # (stop_recorded reaped them, being their parent here: no exit status is left.)
        assert not psutil.pid_exists(node.pid) and not psutil.pid_exists(head.pid)
        assert launcher.running_records() == []
        assert not os.path.exists(node_dir) and not os.path.exists(head_dir)
    finally:
        for process in (node, head):
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()


# --- joining a head -------------------------------------------------------------------------------

@pytest.fixture
def no_token(tmp_path, monkeypatch):
    from purerun.core import auth
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (auth.TOKEN_ENV, auth.TOKEN_PATH_ENV, auth.RAY_TOKEN_ENV,
                 auth.RAY_TOKEN_PATH_ENV):
        monkeypatch.delenv(name, raising=False)


def closed_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_joining_without_a_token_says_where_to_put_one(temp_root, no_token):
    with pytest.raises(ConnectionError, match="PURERUN_AUTH_TOKEN.*PURERUN_AUTH_TOKEN_PATH"):
        launcher.attach(f"127.0.0.1:{closed_port()}", {"CPU": 1.0})
    assert os.listdir(temp_root) == []   # no node was started


def test_joining_an_unreachable_head_names_it(temp_root, no_token, monkeypatch):
    monkeypatch.setenv("PURERUN_AUTH_TOKEN", "t" * 40)
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ConnectionError, match=f"{address} is unreachable"):
        launcher.attach(address, {"CPU": 1.0})
    assert os.listdir(temp_root) == []


def test_connecting_where_nothing_listens_names_the_address(temp_root, tmp_path):
    with pytest.raises(ConnectionError, match="no-node"):
        launcher.connect(str(tmp_path / "no-node"))
    with pytest.raises(ConnectionError, match=str(tmp_path)):
        launcher.connect(str(tmp_path))  # a session directory without a socket


# --- what a node offers -----------------------------------------------------------------------


def test_node_resources_take_what_is_asked_for():
    total = launcher.node_resources(3, 1, {"widget": 2})
    assert total["CPU"] == 3.0 and total["GPU"] == 1.0 and total["widget"] == 2.0
    assert total["memory"] > 0
    assert all(type(amount) is float for amount in total.values())
    assert "GPU" not in launcher.node_resources(1, 0, None)


def test_node_resources_default_to_the_machine(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    total = launcher.node_resources(None, None, None)
    assert total["CPU"] == float(os.cpu_count() or 1)
    assert "GPU" not in total


@pytest.mark.parametrize("visible, count", [("", 0), ("0", 1), ("0,1,3", 3), ("0, ,2", 2)])
def test_visible_devices_decide_the_gpu_count(monkeypatch, visible, count):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert launcher.detect_gpus() == count


@pytest.mark.parametrize("args, error, words", [
    ((-1, None, None), ValueError, "num_cpus"),
    ((None, "2", None), ValueError, "num_gpus"),
    ((None, None, {"CPU": 1}), ValueError, "num_cpus and num_gpus"),
    ((None, None, {"w": -1}), ValueError, "resources"),
    ((None, None, {"w": True}), ValueError, "resources"),
    ((None, None, {1: 1}), TypeError, "strings"),
    ((None, None, [("w", 1)]), TypeError, "dict"),
])
def test_bad_resources_are_refused(args, error, words):
    with pytest.raises(error, match=words):
        launcher.node_resources(*args)


@pytest.mark.parametrize("memory", [0, -1, 1.5, True, "1GB"])
def test_bad_object_store_memory_is_refused_before_anything_starts(temp_root, memory):
    with pytest.raises(ValueError, match="object_store_memory"):
        launcher.spawn_node({"CPU": 1.0}, memory)
    assert os.listdir(temp_root) == []  # not even a session directory


def test_ask_node_answers_in_order_and_names_a_node_that_is_not_there(tmp_path):
    import purerun
    info = purerun.init(num_cpus=1)
    try:
        answers = launcher.ask_node(info["session_dir"],
                                           [("cluster_resources", ()), ("no such op", ())], 10)
        assert answers[0][0] is True and answers[0][1]["CPU"] == 1
        assert answers[1][0] is False and "unknown request" in str(answers[1][1])
    finally:
        purerun.shutdown()
    with pytest.raises(ConnectionError, match="Could not connect"):
        launcher.ask_node(str(tmp_path / "nowhere.sock"), [("stats", ())], 1)
