"""experimental.tqdm_ray: bars in tasks are drawn by the driver, one line per bar, never
mixed with other output; the BarManager's drawing is checked on its own with a fake
terminal and a fake clock."""

import io
import os
import subprocess
import sys

from purerun.core import progress
from purerun.core.progress import MAGIC, BarManager, render, state_line

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER_SCRIPT = os.path.join(REPO_ROOT, "tests", "scripts", "tqdm_driver.py")
DRIVER_DEADLINE_S = 120


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_render():
    assert render({"desc": "d", "x": 4, "total": 10, "pid": 7}) == \
        f"d:  40%|{'#' * 12}{' ' * 18}| 4/10 [pid=7]"
    assert render({"x": 3, "unit": "rows"}) == "3 rows"


def test_plain_output_throttles_and_always_shows_the_end():
    out, clock = io.StringIO(), FakeClock()
    bars = BarManager(out=out, clock=clock, tty=False)
    bars.update(1, {"uuid": "a", "x": 0, "total": 3, "desc": "a"})
    bars.update(1, {"uuid": "a", "x": 1})           # too soon: not written
    clock.now += progress.PLAIN_INTERVAL_S
    bars.update(1, {"uuid": "a", "x": 2})
    bars.update(1, {"uuid": "a", "x": 3, "closed": True})
    lines = out.getvalue().splitlines()
    assert [line.split("|")[-1] for line in lines] == [" 0/3 [pid=1]", " 2/3 [pid=1]",
                                                        " 3/3 [pid=1]"]
    assert bars.bars == {}


def test_terminal_bars_redraw_in_place_and_output_goes_above():
    bar_out, text_out = io.StringIO(), io.StringIO()
    bars = BarManager(out=bar_out, tty=True)
    bars.update(1, {"uuid": "a", "x": 1, "total": 2, "desc": "a"})
    bars.update(2, {"uuid": "b", "x": 0, "total": 2, "desc": "b"})
    assert bars.showing()
    drawn_before = bar_out.getvalue()
    # An ordinary line: the two bar lines are cleared, the line written, the bars redrawn.
    bars.relay(text_out, 3, "(pid=3) ", "hello")
    assert text_out.getvalue() == "(pid=3) hello\n"
    after = bar_out.getvalue()[len(drawn_before):]
    assert after.count("\x1b[1A\x1b[2K") == 2
    assert after.endswith(render(bars.bars[(1, "a")]) + "\n" + render(bars.bars[(2, "b")])
                          + "\n")
    # A state line from a worker updates its bar instead of being printed.
    bars.relay(text_out, 1, "(pid=1) ", state_line({"uuid": "a", "x": 2, "closed": True}))
    assert text_out.getvalue() == "(pid=3) hello\n"
    assert list(bars.bars) == [(2, "b")]


def test_bars_from_tasks_reach_the_driver_one_line_each():
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                        os.environ.get("PYTHONPATH")])))
    env.pop("PURERUN_ADDRESS", None)
    done = subprocess.run([sys.executable, DRIVER_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=DRIVER_DEADLINE_S)
    assert done.returncode == 0, done.stderr
    stdout, stderr = done.stdout.splitlines(), done.stderr.splitlines()
    assert stdout[-1] == "DONE"
    pids = stdout[-2].split()[1:]
    assert not any(MAGIC in line for line in stdout + stderr)  # every state was consumed
    for i, pid in enumerate(pids):
        assert f"(pid={pid}) ordinary line from task {i}" in stdout
        final = f"task {i}: 100%|{'#' * progress.BAR_WIDTH}| 5/5 [pid={pid}]"
        assert stderr.count(final) == 1, stderr
    # Every line on stderr is one whole bar: nothing else is mixed into them.
    for line in stderr:
        assert line.startswith(("task ", "driver: ")) and line.endswith("]"), line
    assert any(line.startswith("driver: 100%") for line in stderr)
    assert "safe line from the driver" in stdout
