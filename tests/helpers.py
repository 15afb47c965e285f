"""Small helpers shared by the tests (import with ``from helpers import wait_for``)."""

import time
from typing import Any, Callable


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
