"""The memory monitor on a real node: a task that pushes memory use past the threshold has
its worker killed, runs again while retries allow, then fails with OutOfMemoryError.

The threshold is set just above what the host uses when the test starts, and the task
allocates a bounded amount (in steps, touching every page) until it is killed: the machine
never comes near running out.
"""

import subprocess
import sys
import time

import psutil
import pytest

import purerun
from purerun import exceptions

# How far above the memory in use now the threshold is set: well above the noise of the
# rest of the host, well below what the task may allocate.
MARGIN_BYTES = 200 * 1024 * 1024
# The memory in use counts as settled once two readings this far apart differ by less
# than SETTLED_BYTES (the processes of an earlier test may still be giving memory back).
SETTLE_INTERVAL_S = 0.25
SETTLED_BYTES = 16 * 1024 * 1024
SETTLE_DEADLINE_S = 20.0
# The task allocates this much per step, up to the cap, unless killed first.
STEP_BYTES = 20 * 1024 * 1024
CAP_BYTES = 1024 * 1024 * 1024
STEP_PAUSE_S = 0.02
GET_DEADLINE_S = 60.0


# The probe of whether this host's memory reading follows a process's memory promptly.
PROBE_BYTES = 256 * 1024 * 1024
PROBE_SEEN_BYTES = 200 * 1024 * 1024
PROBE_BACK_BYTES = 64 * 1024 * 1024
PROBE_DEADLINE_S = 2.0


def _reading_follows_processes():
    """Whether the host's reading (MemAvailable) rises when a process takes PROBE_BYTES and
    falls back when it dies, each within PROBE_DEADLINE_S. On some virtual machines freed
    pages go back to the hypervisor first and are counted as in use for seconds: there the
    monitor still works, but no test can say when it will act."""
    for _ in range(2):
        before = _use()
        child = subprocess.Popen(
            [sys.executable, "-c", f"b = bytearray({PROBE_BYTES}); b[::4096] = "
             f"b'x' * len(b[::4096]); print('held', flush=True); import time; time.sleep(60)"],
            stdout=subprocess.PIPE)
        try:
            child.stdout.readline()
            if not _within(lambda: _use() - before >= PROBE_SEEN_BYTES):
                return False
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        if not _within(lambda: _use() - before <= PROBE_BACK_BYTES):
            return False
    return True


def _within(condition):
    deadline = time.monotonic() + PROBE_DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def low_threshold(monkeypatch):
    assert not purerun.is_initialized()
    if not _reading_follows_processes():
        pytest.skip("this host's memory reading (MemAvailable) does not follow a process's "
                    "memory within seconds (freed pages are counted as in use for a while, "
                    "as on some virtual machines): the monitor's timing cannot be tested here")
    memory = psutil.virtual_memory()
    used = _settled_use()
    if memory.available < 4 * CAP_BYTES:
        pytest.skip("not enough free memory to test the monitor safely")
    monkeypatch.setenv("RAY_memory_usage_threshold", f"{(used + MARGIN_BYTES) / memory.total:.6f}")
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "50")
    purerun.init(num_cpus=1)
    yield
    purerun.shutdown()


def _use():
    memory = psutil.virtual_memory()
    return memory.total - memory.available


def _settled_use():
    """The host's memory in use, once it stops moving (or at the deadline)."""
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    before = _use()
    while True:
        time.sleep(SETTLE_INTERVAL_S)   # the interval the two readings compare over
        now = _use()
        if abs(now - before) < SETTLED_BYTES or time.monotonic() > deadline:
            return now
        before = now


def _allocate_until_killed():
    held = []
    while len(held) * STEP_BYTES < CAP_BYTES:
        held.append(b"\x01" * STEP_BYTES)
        time.sleep(STEP_PAUSE_S)
    return "not killed"


@purerun.remote(max_retries=1)
def hungry():
    return _allocate_until_killed()


def test_a_task_over_the_threshold_fails_with_out_of_memory_error_once_retried(
        low_threshold, capfd):
    with pytest.raises(exceptions.OutOfMemoryError) as info:
        purerun.get(hungry.remote(), timeout=GET_DEADLINE_S)
    message = str(info.value)
    assert "hungry" in message and "memory used=" in message
    assert "exceeds the memory usage threshold" in message
    # the node is fine afterwards
    assert purerun.get(purerun.remote(lambda: "ok").remote()) == "ok"


def test_a_task_killed_for_memory_runs_again(low_threshold, tmp_path):
    marker = tmp_path / "first-attempt"

    @purerun.remote(max_retries=3)
    def hungry_once(path):
        if not path.exists():
            path.touch()
            return _allocate_until_killed()
        return "second attempt"

    assert purerun.get(hungry_once.remote(marker), timeout=GET_DEADLINE_S) == "second attempt"


def test_a_bad_setting_is_reported_by_init(monkeypatch):
    assert not purerun.is_initialized()
    monkeypatch.setenv("PURERUN_memory_usage_threshold", "2")
    with pytest.raises(ValueError, match="PURERUN_memory_usage_threshold"):
        purerun.init(num_cpus=1)
    assert not purerun.is_initialized()
