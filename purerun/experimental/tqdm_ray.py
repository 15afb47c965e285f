"""Progress bars for tasks and actors, drawn on the driver: ``ray.experimental.tqdm_ray``.

.. code-block:: python

    from purerun.experimental.tqdm_ray import tqdm

    @purerun.remote
    def work(i):
        for _ in tqdm(range(100), desc=f"task {i}"):
            ...

A bar made in a task reports its state to the driver as a marked line of output, at most
every ``flush_interval_s`` and when it closes; the driver keeps one bar per task bar and
draws them together, each on its own line, without mixing them into other output (see
``purerun.core.progress``). A bar made in the driver is drawn the same way.
"""

import os
import uuid

from purerun.core import context, progress

# A task's bar reports its state at most this often, and when it closes: few lines, and
# still a bar that moves.
DEFAULT_FLUSH_INTERVAL_S = 1.0


class tqdm:
    """A progress bar, usable in tasks, actors and the driver (a subset of tqdm's API).

    Args:
        iterable: iterate over this, counting one step per item.
        desc: the text before the bar.
        total: the number of steps (default: ``len(iterable)`` when it has one).
        unit: what a step is called (default "it").
        position: accepted for compatibility; bars are drawn in the order they appear.
        flush_interval_s: in a task, report the state at most this often (seconds).

    Raises:
        TypeError: total is not a number.
    """

    def __init__(self, iterable=None, desc=None, total=None, unit=None, position=None,
                 flush_interval_s=None):
        import time
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        if total is not None and (isinstance(total, bool) or
                                  not isinstance(total, (int, float))):
            raise TypeError(f"total must be a number, got {type(total).__name__}")
        self._iterable = iterable
        self._desc = desc or ""
        self._total = total
        self._unit = unit or "it"
        self._position = position
        self._x = 0
        self._closed = False
        self._uuid = uuid.uuid4().hex
        self._interval = DEFAULT_FLUSH_INTERVAL_S if flush_interval_s is None \
            else flush_interval_s
        self._time = time.monotonic
        self._last_flush = None
        self._dump()

    def set_description(self, desc):
        """Change the text before the bar."""
        self._desc = desc or ""
        self._dump()

    def update(self, n=1):
        """Count ``n`` more steps."""
        self._x += n
        self._dump()

    def refresh(self):
        """Report the bar's state now."""
        self._dump(force=True)

    def close(self):
        """End the bar (its last state stays on the driver's screen)."""
        if not self._closed:
            self._closed = True
            self._dump(force=True)

    @property
    def n(self):
        """The steps counted so far."""
        return self._x

    @property
    def total(self):
        return self._total

    def __iter__(self):
        if self._iterable is None:
            raise ValueError("No iterable provided")
        for item in self._iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _state(self):
        return {"uuid": self._uuid, "x": self._x, "total": self._total, "desc": self._desc,
                "unit": self._unit, "pos": self._position, "closed": self._closed}

    def _dump(self, force=False):
        client = context.client
        if client is not None and getattr(client, "is_worker", False):
            now = self._time()
            if not force and not self._closed and self._last_flush is not None and \
                    now - self._last_flush < self._interval:
                return
            self._last_flush = now
            # One whole line, flushed at once: the node relays complete lines only.
            print(progress.state_line(self._state()), flush=True)
        else:
            progress.manager().update(os.getpid(), self._state())


def safe_print(*args, **kwargs):
    """``print``, written above the driver's bars instead of through them."""
    import io
    client = context.client
    if client is not None and getattr(client, "is_worker", False):
        print(*args, **kwargs)
        return
    import sys
    file = kwargs.pop("file", None) or sys.stdout
    buffer = io.StringIO()
    print(*args, file=buffer, **kwargs)
    progress.manager().write(file, buffer.getvalue())


__all__ = ["safe_print", "tqdm"]
