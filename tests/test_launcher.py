"""core.launcher without starting anything: where init() connects to, what a new node
offers, and the record of the node `purerun start` leaves running. Starting and stopping
real nodes is tested through init() (test_api, test_lifecycle) and the command line
(test_cli)."""

import json
import os
import tempfile

import pytest

from purerun.core import launcher


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """A private temp dir: no recorded node, no address in the environment."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for name in launcher.ADDRESS_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return launcher.temp_root()


def record(root, address, pid=12345):
    with open(os.path.join(root, launcher.CURRENT_NODE_FILE), "w") as f:
        json.dump({"address": address, "pid": pid}, f)


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


def test_auto_finds_the_environment_then_the_recorded_node(temp_root, monkeypatch):
    with pytest.raises(ConnectionError, match="purerun start"):
        launcher.resolve_address("auto")
    record(temp_root, "/recorded/node.sock")
    assert launcher.resolve_address("auto") == "/recorded/node.sock"
    monkeypatch.setenv("PURERUN_ADDRESS", "auto")  # as RAY_ADDRESS=auto in Ray
    assert launcher.resolve_address(None) == "/recorded/node.sock"
    monkeypatch.setenv("PURERUN_ADDRESS", "/from/env")
    assert launcher.resolve_address("auto") == "/from/env"


def test_a_record_that_cannot_be_read_is_no_node(temp_root):
    with open(os.path.join(temp_root, launcher.CURRENT_NODE_FILE), "w") as f:
        f.write("{not json")
    assert launcher.recorded_address() is None
    assert launcher.running_standalone_address() is None
    assert launcher.stop_recorded(timeout=1) is None


def test_a_recorded_node_runs_only_while_its_socket_exists(temp_root, tmp_path):
    socket_path = tmp_path / "node.sock"
    record(temp_root, str(socket_path))
    assert launcher.running_standalone_address() is None
    socket_path.touch()
    assert launcher.running_standalone_address() == str(socket_path)


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
