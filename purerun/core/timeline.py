"""What ``purerun.timeline()`` returns: finished task spans as Chrome trace events.

The node (and local mode) keep the most recent spans, ``(name, pid, (start, end), task_id)``
with times from ``time.time()``, in a deque of at most ``TIMELINE_MAX_EVENTS``; this module
formats them as Ray's timeline does, for chrome://tracing or Perfetto.
"""

# Task spans kept for purerun.timeline(): the most recent ones, a bounded amount of memory
# (about 270 bytes each, so some 27 MB when full).
TIMELINE_MAX_EVENTS = 100_000


def chrome_trace(spans, node_ip):
    """Task spans as Chrome trace events (chrome://tracing, Perfetto), as Ray's timeline.

    Args:
        spans: ``(name, pid, (start, end), task_id)`` tuples, times in seconds.
        node_ip: the node's address, shown as the "process" the workers belong to.

    Returns:
        A list of complete ("X") events, times in microseconds.
    """
    return [{"cat": "task", "name": name, "pid": f"Node {node_ip}", "tid": f"worker {pid}",
             "ts": start * 1e6, "dur": (end - start) * 1e6, "ph": "X",
             "args": {"task_id": task_id.hex()}}
            for name, pid, (start, end), task_id in spans]
