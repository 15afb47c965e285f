"""Small helpers shared by the tests (import with ``from helpers import wait_for``)."""

import time
from typing import Any, Callable

import psutil

from purerun.core.allocator import Allocator


def run_fresh_script(path, code, timeout=120):
    """Write ``code`` to ``path`` and run it in a new interpreter with no cluster address in
    its environment (so it must start purerun itself), from the repository's top directory.

    Returns:
        The ``subprocess.CompletedProcess`` (text output captured).
    """
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path.write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("PURERUN_ADDRESS", "RAY_ADDRESS")}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=repo)


def touch(path) -> None:
    """Create an empty file at ``path`` (how tests signal a task, or see that it ran)."""
    with open(path, "w"):
        pass


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10,
    interval: float = 0.01,
    message: str = "",
) -> Any:
    """Poll ``predicate`` until it returns a truthy value, or fail after ``timeout``.

    Tests wait on a condition with a deadline instead of sleeping "long enough": a sleep
    is either too short on a loaded CI machine (flaky) or too long everywhere else (slow).

    Args:
        predicate: Called with no arguments; exceptions it raises propagate.
        timeout: Seconds to wait before failing.
        interval: Seconds between two calls of ``predicate``.
        message: What was being waited for, shown in the failure.

    Returns:
        The first truthy value ``predicate`` returned.

    Raises:
        AssertionError: ``predicate`` stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        # Checked after calling predicate, so it always gets one last call at the deadline.
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"Timed out after {timeout} s waiting for: {what}")
        time.sleep(interval)


class FakeStore:
    """The byte store's interface over the real allocator; spill files are a dict."""

    def __init__(self, size=1 << 20):
        self.allocator = Allocator(size)
        self.files = {}           #: spill file name -> size
        self.direct_files = 0

    def allocate(self, size):
        return self.allocator.allocate(size)

    def free_block(self, offset):
        self.allocator.free(offset)

    def block_size(self, offset):
        return self.allocator.block_size(offset)

    capacity = property(lambda self: self.allocator.capacity)
    used = property(lambda self: self.allocator.used)
    largest_free = property(lambda self: self.allocator.largest_free)

    def spill(self, object_id, payload):
        offset, meta_len, spans = payload
        size = self.allocator.block_size(offset)
        self.files[object_id] = size
        self.free_block(offset)
        return (object_id, size, meta_len, spans)

    def read_back(self, disk, offset):
        del self.files[disk[0]]
        return (offset, disk[2], disk[3])

    def drop_spill(self, disk):
        self.files.pop(disk[0], None)

    def new_file(self):
        self.direct_files += 1
        name = f"direct-{self.direct_files}"
        self.files[name] = 0
        return name


def pid_gone(pid):
    """The process has exited (it may still be a zombie its parent has not waited for)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
