"""The text of ``purerun status``: the cluster at a glance, in the layout of ``ray status``.

::

    ControlStore (embedded, or the head's via RemoteControlStore)
        node_table() or nodes(), cluster_resources(), available_resources(), stats()
            │
            ▼
    format_status(...) ──▶ text:   Node status   Active / Dead nodes
                                   Resources     Usage: " 1.0/4.0 CPU", " 0B/2.00GiB memory"
                                   Workload      jobs, tasks, actors, objects

A pure function of plain values, so that it is tested without a cluster and reads the same
whichever store answered.
"""

from typing import Mapping, Sequence

__all__ = ["format_status", "format_bytes", "NODE_ID_SHOWN"]

# Hex digits of a node id shown: 48 random bits tell apart the nodes of any cluster, and
# the line stays short. Ray prints the whole id; a prefix is what people type and compare.
NODE_ID_SHOWN = 12
# Resources measured in bytes (as in Ray), shown in B/KiB/MiB/GiB.
MEMORY_RESOURCES = ("memory", "object_store_memory")
# Listed first, in this order; every other resource follows by name.
FIRST_RESOURCES = ("CPU", "GPU") + MEMORY_RESOURCES
# Resources that name a node rather than measure anything (Ray's "node:<ip>"): not listed.
HIDDEN_PREFIXES = ("node:",)
_RULE = "-" * 63
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(amount: float) -> str:
    """A byte count in binary units, as ``ray status`` writes them.

    Returns:
        ``"512B"`` under one KiB, else two decimals and the largest unit that keeps the
        number at least 1: ``"1.50KiB"``, ``"2.00GiB"``.
    """
    if amount < 1024:
        return f"{int(amount)}B"
    for unit in _UNITS:
        amount /= 1024
        if amount < 1024 or unit == _UNITS[-1]:
            return f"{amount:.2f}{unit}"


def _amount(value: float) -> str:
    # One decimal at least (4.0 CPU, as Ray), more only when the amount has them (0.25).
    text = f"{value:.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _node(record: Mapping) -> tuple:
    """(short id, ip, alive) of a node record from node_table() or one from nodes()."""
    if "node_id" in record:
        node_id = record["node_id"]
        node_id = node_id.hex() if isinstance(node_id, bytes) else str(node_id)
        return node_id[:NODE_ID_SHOWN], record.get("node_ip", ""), bool(record["alive"])
    return (str(record["NodeID"])[:NODE_ID_SHOWN], record.get("NodeManagerAddress", ""),
            bool(record["Alive"]))


def _node_lines(nodes, alive, none):
    lines = [f" node_{short} {ip}".rstrip() for short, ip, is_alive in nodes if is_alive is alive]
    return lines or [f" ({none})"]


def _order(name):
    return (FIRST_RESOURCES.index(name), "") if name in FIRST_RESOURCES else (
        len(FIRST_RESOURCES), name)


def _usage_lines(cluster_resources, available_resources, stats):
    lines = []
    for name in sorted(cluster_resources, key=_order):
        if name.startswith(HIDDEN_PREFIXES):
            continue
        total = cluster_resources[name]
        used = max(total - available_resources.get(name, 0.0), 0.0)
        if name == "object_store_memory" and "object_store_bytes" in stats:
            used = stats["object_store_bytes"]   # what the stores hold, not a reservation
        if name in MEMORY_RESOURCES:
            lines.append(f" {format_bytes(used)}/{format_bytes(total)} {name}")
        else:
            lines.append(f" {_amount(used)}/{_amount(total)} {name}")
    return lines or [" (no resources)"]


def _plural(count, word):
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _workload_lines(stats):
    lines = []
    if "jobs" in stats:
        lines.append(f" {_plural(stats.get('jobs_running', 0), 'job')} running "
                     f"({stats['jobs']} in all)")
    if "tasks" in stats:
        lines.append(f" {_plural(stats['tasks'], 'task')} queued or running")
    if "actors" in stats:
        line = f" {_plural(stats['actors'], 'actor')}"
        if stats.get("named_actors"):
            line += f" ({stats['named_actors']} named)"
        lines.append(line)
    if "objects" in stats:
        lines.append(f" {_plural(stats['objects'], 'object')}")
    return lines or [" (nothing reported)"]


def format_status(nodes: Sequence[Mapping], cluster_resources: Mapping[str, float],
                  available_resources: Mapping[str, float], stats: Mapping[str, int]) -> str:
    """The cluster's state as text, laid out like ``ray status``.

    Args:
        nodes: Node records, from ``ControlStore.node_table()`` (``node_id`` bytes,
            ``node_ip``, ``alive``) or ``ControlStore.nodes()`` (Ray's ``NodeID``,
            ``NodeManagerAddress``, ``Alive``); alive and dead.
        cluster_resources: Totals of the live nodes (``cluster_resources()``).
        available_resources: What is free (``available_resources()``; a resource left out
            has nothing free).
        stats: ``ControlStore.stats()``: ``jobs``, ``jobs_running``, ``tasks``, ``actors``,
            ``named_actors``, ``objects``, and ``object_store_bytes`` (used for the
            ``object_store_memory`` line when present). Missing keys are left out.

    Returns:
        Lines without a trailing newline: a header, "Node status" (Active and Dead nodes by
        short id and IP), "Resources" (a Usage line ``used/total name`` per resource,
        memory in B/KiB/MiB/GiB), and "Workload" (counts of jobs, tasks, actors, objects).
    """
    records = [_node(record) for record in nodes]
    lines = ["======== Cluster status ========",
             "Node status", _RULE,
             "Active:", *_node_lines(records, True, "no active nodes"),
             "Dead:", *_node_lines(records, False, "no dead nodes"),
             "",
             "Resources", _RULE,
             "Usage:", *_usage_lines(cluster_resources, available_resources, stats),
             "",
             "Workload", _RULE,
             *_workload_lines(stats)]
    return "\n".join(lines)
