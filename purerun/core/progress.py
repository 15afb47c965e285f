"""Progress bars of many tasks at once, drawn by the driver (``experimental.tqdm_ray``).

A task cannot draw on the driver's terminal: what it prints reaches the driver as lines,
prefixed with its pid, mixed with every other worker's. So a bar in a task prints its
state as one JSON line marked with ``MAGIC``; the driver's client, which receives worker
output (``Client._on_log``), hands such lines to the one ``BarManager`` of the process
instead of printing them, and the manager keeps one bar per (pid, bar id) and draws them
all, each on its own line, on stderr:

::

    task: tqdm.update() ─▶ print {"__purerun_tqdm__": ..., "x": 3, ...} ─▶ node ─▶ LOG
    driver: Client._on_log ─▶ BarManager.relay ─▶ bars redrawn in place; other lines above

On a terminal the bars stay together below the other output: before a line of ordinary
output is written the bars are cleared, after it they are drawn again, so bars and lines
never interleave. Elsewhere (a pipe, a log file) the manager writes a bar's line when it
starts, at most every ``PLAIN_INTERVAL_S`` while it moves, and when it closes.

Bars in the driver itself go to the same manager directly.
"""

import json
import select
import sys
import threading
import time

MAGIC = "__purerun_tqdm__"

# Without a terminal a bar's line is written again at most this often: enough to see that
# work moves, few enough lines to keep a log readable.
PLAIN_INTERVAL_S = 1.0
BAR_WIDTH = 30

_CLEAR_LINE = "\x1b[2K"
_UP = "\x1b[1A"


# Relayed output is written in pieces of whole lines of at most this many bytes. A write to
# a pipe of up to PIPE_BUF bytes is atomic; a longer one that blocks on a full pipe may be
# interleaved with another thread's write (an unbuffered stdout has no lock), which could
# put a line the driver prints in the middle of a worker's line.
PIECE_BYTES = getattr(select, "PIPE_BUF", 4096)


def write_lines(out, prefix, lines):
    """Write ``lines`` to ``out``, each with ``prefix`` and a newline, in atomic pieces."""
    piece, size = [], 0
    for line in lines:
        text = prefix + line + "\n"
        n = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
        if piece and size + n > PIECE_BYTES:
            out.write("".join(piece))
            out.flush()
            piece, size = [], 0
        piece.append(text)
        size += n
    if piece:
        out.write("".join(piece))
    out.flush()


def state_line(state):
    """The line a task prints to report a bar's state (a dict of its fields)."""
    return json.dumps({MAGIC: 1, **state}, separators=(",", ":"))


def render(state):
    """One bar as text: ``desc:  40%|############                  | 4/10 [pid=12]``."""
    desc = state.get("desc") or ""
    x = state.get("x", 0)
    total = state.get("total")
    unit = state.get("unit") or "it"
    head = f"{desc}: " if desc else ""
    where = f" [pid={state['pid']}]" if state.get("pid") else ""
    if total:
        fraction = min(max(x / total, 0.0), 1.0)
        filled = int(fraction * BAR_WIDTH)
        return (f"{head}{int(fraction * 100):3d}%|{'#' * filled}{' ' * (BAR_WIDTH - filled)}"
                f"| {x}/{total}{where}")
    return f"{head}{x} {unit}{where}"


class BarManager:
    """Every bar this driver shows, and the output written around them.

    Args:
        out: where bars are drawn (default: sys.stderr at the time of drawing).
        clock: returns seconds (monotonic); injectable for tests.
        tty: whether to redraw in place; default: ``out.isatty()``.
    """

    def __init__(self, out=None, clock=time.monotonic, tty=None):
        self._out = out
        self._clock = clock
        self._tty = tty
        self._lock = threading.Lock()
        self.bars = {}        # (pid, id) -> state, in order of appearance
        self._drawn = 0       # bar lines on the terminal now (tty mode)
        self._printed = {}    # (pid, id) -> when its plain line was last written

    @property
    def out(self):
        return self._out if self._out is not None else sys.stderr

    def _is_tty(self):
        if self._tty is not None:
            return self._tty
        try:
            return self.out.isatty()
        except Exception:
            return False

    def update(self, pid, state):
        """A bar's new state (``x``, ``total``, ``desc``, ``closed``, ...)."""
        key = (pid, state.get("uuid"))
        with self._lock:
            bar = self.bars.setdefault(key, {})
            bar.update(state)
            bar["pid"] = pid
            if self._is_tty():
                self._clear()
                if bar.get("closed"):
                    # A closed bar stays, above the live ones, as tqdm leaves it.
                    del self.bars[key]
                    self.out.write(render(bar) + "\n")
                self._draw()
            else:
                now = self._clock()
                last = self._printed.get(key)
                if bar.get("closed") or last is None or now - last >= PLAIN_INTERVAL_S:
                    self._printed[key] = now
                    self.out.write(render(bar) + "\n")
                if bar.get("closed"):
                    del self.bars[key]
                    self._printed.pop(key, None)
            self.out.flush()

    def relay(self, out, pid, prefix, text):
        """Worker output: bar states go to their bars, other lines are written to ``out``
        with ``prefix``, around the bars."""
        plain = []
        for line in text.split("\n"):
            if MAGIC in line and line.startswith("{"):
                try:
                    state = json.loads(line)
                except ValueError:
                    plain.append(line)
                    continue
                if plain:
                    self.write_lines(out, prefix, plain)
                    plain = []
                state.pop(MAGIC, None)
                self.update(pid, state)
            else:
                plain.append(line)
        if plain:
            self.write_lines(out, prefix, plain)

    def write(self, out, text):
        """Write ``text`` to ``out`` above the bars."""
        def write():
            out.write(text)
            out.flush()
        self._above(write)

    def write_lines(self, out, prefix, lines):
        """Write ``lines`` with ``prefix`` to ``out`` above the bars (see ``write_lines``)."""
        self._above(lambda: write_lines(out, prefix, lines))

    def _above(self, write):
        with self._lock:
            if self._drawn:
                self._clear()
                self.out.flush()
                write()
                self._draw()
                self.out.flush()
            else:
                write()

    def showing(self):
        """Whether bars are on the terminal now (output must be written around them)."""
        return self._drawn > 0

    # -- terminal drawing (callers hold the lock) ------------------------------------------

    def _clear(self):
        out = self.out
        for _ in range(self._drawn):
            out.write(_UP + _CLEAR_LINE + "\r")
        self._drawn = 0

    def _draw(self):
        out = self.out
        for bar in self.bars.values():
            out.write(render(bar) + "\n")
        self._drawn = len(self.bars)


_manager = None
_manager_lock = threading.Lock()


def manager():
    """This process's BarManager, made on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = BarManager()
        return _manager


def showing():
    """Whether this process shows bars now (cheap: no manager is made)."""
    return _manager is not None and _manager.showing()
