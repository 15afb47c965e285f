"""Worker output reaches the driver: what a task prints appears on the driver's stdout (and
stderr) prefixed with ``(pid=<worker pid>) ``, unless init(log_to_driver=False).

The driver is a subprocess (tests/scripts/output_driver.py) whose output is read line by
line on threads; the test waits for the lines it expects, with a deadline.
"""

import os
import queue
import re
import subprocess
import sys
import threading
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER_SCRIPT = os.path.join(REPO_ROOT, "tests", "scripts", "output_driver.py")
EXIT_DRIVER_SCRIPT = os.path.join(REPO_ROOT, "tests", "scripts", "exit_output_driver.py")
# How long the driver may take to start its cluster, run its tasks and relay their output.
OUTPUT_DEADLINE_S = 60.0


class _Stream:
    """Lines of one pipe, collected by a thread."""

    def __init__(self, pipe):
        self.lines = []
        self._new = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe):
        for line in pipe:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, predicate, what, timeout=OUTPUT_DEADLINE_S):
        """Read lines until ``predicate(lines)`` is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self.lines):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                     f"got:\n" + "\n".join(self.lines))
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the stream ended before {what}; got:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)

    def join(self, timeout):
        self._thread.join(timeout)

    @property
    def ended(self):
        return not self._thread.is_alive()

    def read_to_end(self, timeout=OUTPUT_DEADLINE_S):
        """Every line, once the pipe has closed (the process exited)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._new.get_nowait()
            except queue.Empty:
                return self.lines
            if line is not None:
                self.lines.append(line)


@pytest.fixture
def run_driver():
    procs = []

    def start(log_to_driver):
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                            os.environ.get("PYTHONPATH")])))
        env.pop("PURERUN_ADDRESS", None)
        proc = subprocess.Popen(
            [sys.executable, DRIVER_SCRIPT, "on" if log_to_driver else "off"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
        started = (proc, _Stream(proc.stdout), _Stream(proc.stderr))
        procs.append(started)
        return started

    yield start
    for proc, out, err in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdin.close()
        # Closing a pipe that a reader thread is blocked on would block as well (a leaked
        # node can hold the driver's stderr open): close only the pipes that ended.
        for stream, pipe in ((out, proc.stdout), (err, proc.stderr)):
            stream.join(10)
            if stream.ended:
                pipe.close()


def _task_pids(lines):
    return [int(line.split()[1]) for line in lines if line.startswith("TASK_PID ")]


def _finish(proc, out, err):
    """Let the driver shut down and exit; return its complete stdout and stderr."""
    proc.stdin.close()
    assert proc.wait(timeout=OUTPUT_DEADLINE_S) == 0, "\n".join(err.read_to_end())
    return out.read_to_end(), err.read_to_end()


def test_task_prints_reach_the_driver_prefixed_with_the_worker_pid(run_driver):
    proc, out, err = run_driver(log_to_driver=True)
    out.wait_for(lambda lines: len(_task_pids(lines)) == 2, "both tasks to finish")
    pids = _task_pids(out.lines)
    for tag, pid in zip(("task-1", "task-2"), pids):
        expected = [f"(pid={pid}) hello from {tag}", f"(pid={pid}) second line from {tag}"]
        out.wait_for(lambda lines: all(e in lines for e in expected),
                     f"the stdout of {tag} on the driver's stdout")
        err.wait_for(lambda lines: f"(pid={pid}) complaint from {tag}" in lines,
                     f"the stderr of {tag} on the driver's stderr")
    out.wait_for(lambda lines: any(line.startswith("MANY_PID ") for line in lines),
                 "the task printing many lines to finish")
    _, many_pid, count = next(line for line in out.lines if line.startswith("MANY_PID ")).split()
    numbered = [f"(pid={many_pid}) numbered line {i} from task-many" for i in range(int(count))]
    out.wait_for(lambda lines: numbered[-1] in lines, "the last of the numbered lines")
    assert [line for line in out.lines if "from task-many" in line] == numbered
    # What a task printed just before its worker died is not lost either.
    out.wait_for(lambda lines: any(re.fullmatch(r"\(pid=\d+\) last words from task-dying", line)
                                   for line in lines),
                 "the last words of the task that killed its worker")
    stdout, stderr = _finish(proc, out, err)
    # Each line comes once, on its own stream, and always with its prefix.
    for tag in ("task-1", "task-2"):
        assert sum(f"hello from {tag}" in line for line in stdout) == 1
        assert not any(f"complaint from {tag}" in line for line in stdout)
        assert not any(f"hello from {tag}" in line for line in stderr)
    for line in stdout + stderr:
        if "from task-" in line:
            assert line.startswith("(pid="), line
    assert "DONE" in stdout


def test_log_to_driver_false_hides_worker_output(run_driver):
    proc, out, err = run_driver(log_to_driver=False)
    # The driver prints DONE after a request round trip that comes after all the tasks'
    # output was relayed: had the output been shown, it would be there by now.
    out.wait_for(lambda lines: "DONE" in lines, "the driver to finish its tasks")
    stdout, stderr = _finish(proc, out, err)
    assert len(_task_pids(stdout)) == 2
    assert "CRASHED" in stdout
    for line in stdout + stderr:
        assert "from task-" not in line, line
        assert not line.startswith("(pid="), line


@pytest.mark.parametrize("how", ["shutdown", "atexit"])
def test_what_tasks_printed_reaches_a_driver_that_leaves_at_once(how):
    # As Ray: output of tasks that ran just before the driver ends is shown, an unfinished
    # last line too, before the driver goes (it asks the node to relay it all first).
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                        os.environ.get("PYTHONPATH")])))
    env.pop("PURERUN_ADDRESS", None)
    done = subprocess.run([sys.executable, EXIT_DRIVER_SCRIPT, how], capture_output=True,
                          text=True, env=env, timeout=OUTPUT_DEADLINE_S)
    assert done.returncode == 0, done.stderr
    stdout, stderr = done.stdout.splitlines(), done.stderr.splitlines()
    assert "GOT" in stdout
    for tag in ("task-1", "task-2", "actor"):
        assert sum(re.fullmatch(rf"\(pid=\d+\) line from {tag}", line) is not None
                   for line in stdout) == 1, done.stdout
    assert any(re.fullmatch(r"\(pid=\d+\) unfinished line from the last task", line)
               for line in stdout), done.stdout
    for tag in ("task-1", "task-2"):
        assert any(re.fullmatch(rf"\(pid=\d+\) complaint from {tag}", line)
                   for line in stderr), done.stderr


def test_relayed_lines_never_interleave_with_what_the_driver_prints():
    """Worker output is relayed on the client's reader thread while the driver's own thread
    prints; with an unbuffered stdout on a full pipe neither may cut into the other's
    lines (a relay is written in atomic pieces of whole lines)."""
    script = os.path.join(REPO_ROOT, "tests", "scripts", "interleave_driver.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-u", script], stdout=subprocess.PIPE, env=env)
    chunks = []
    try:
        while True:   # small reads keep the pipe full most of the time
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        proc.stdout.close()
        assert proc.wait(timeout=OUTPUT_DEADLINE_S) == 0
    lines = b"".join(chunks).decode().split("\n")
    assert lines.pop() == ""
    marks = [line for line in lines if line.startswith("MARK ")]
    relayed = [line for line in lines if not line.startswith("MARK ")]
    assert marks == [f"MARK {i}" for i in range(1000)]
    assert relayed == [f"(pid=1) numbered line {i} from the worker"
                       for i in range(10000)] * 2
