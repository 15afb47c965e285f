"""Finished-task spans as Chrome trace events (chrome://tracing, Perfetto), as Ray's timeline."""

# Spans kept per node for purerun.timeline(): the most recent ones, a bounded amount of memory.
MAX_EVENTS = 100_000


def chrome_trace(spans, node_ip):
    """Spans ``(name, pid, (start, end), task_id)`` as Chrome trace events."""
    return [{"cat": "task", "name": name, "pid": f"Node {node_ip}", "tid": f"worker {pid}",
             "ts": start * 1e6, "dur": (end - start) * 1e6, "ph": "X",
             "args": {"task_id": task_id.hex()}}
            for name, pid, (start, end), task_id in spans]
