"""purerun.util: utilities on top of the core API, under Ray's names (``ray.util``).

Exports ``ActorPool``, ``as_completed``, ``map_unordered``, ``inspect_serializability``,
``get_node_ip_address``, ``list_named_actors``, and the placement-group calls (``placement_group``,
``placement_group_table``, ``remove_placement_group``, ``get_placement_group``,
``get_current_placement_group``; ``PlacementGroup`` is in ``purerun.util.placement_group``);
the submodules ``queue`` (``Queue``, ``Empty``, ``Full``), ``metrics`` (``Counter``,
``Gauge``, ``Histogram``), ``actor_pool``, ``check_serialize`` and
``scheduling_strategies`` are imported with ``import purerun.util.<name>``.

``import purerun.util`` itself imports nothing more but the placement-group module (light:
it needs only the core): each other name is loaded on first use (PEP 562), so a program that
never touches a utility never pays for its imports. The placement-group functions are bound
at once because one of them shares its name with its module: bound lazily, a later
``import purerun.util.placement_group`` would put the module where the function belongs.
"""

import importlib
import socket

from purerun.util.placement_group import (get_current_placement_group, get_placement_group,
                                          placement_group, placement_group_table,
                                          remove_placement_group)

# name -> the submodule that defines it.
_EXPORTS = {
    "ActorPool": "purerun.util.actor_pool",
    "as_completed": "purerun.util.completion",
    "map_unordered": "purerun.util.completion",
    "inspect_serializability": "purerun.util.check_serialize",
}

# Submodules reachable as attributes (``purerun.util.queue.Queue``) without an import.
_SUBMODULES = frozenset({"actor_pool", "check_serialize", "completion", "metrics", "queue",
                         "scheduling_strategies"})

__all__ = list(_EXPORTS) + ["get_node_ip_address", "list_named_actors", "placement_group",
                            "placement_group_table", "remove_placement_group",
                            "get_placement_group", "get_current_placement_group"]


def get_node_ip_address(address="8.8.8.8:53"):
    """The IP address of this process's node, as ``ray.util.get_node_ip_address``.

    Inside a running purerun (driver, task or actor) it is the address the node was started
    with; otherwise the address of this host that routes towards ``address`` (no packet is
    sent: the kernel only picks the outgoing interface), or ``127.0.0.1`` without a route.

    Args:
        address: ``"host:port"`` whose route picks the interface, when purerun is not running.

    Returns:
        The IP address, a str.
    """
    from purerun.core import context   # not at import time: purerun.util stays cheap
    client = context.client
    if client is not None:
        info = client.wait_welcome() if hasattr(client, "wait_welcome") else client.info
        if info and info.get("node_ip"):
            return info["node_ip"]
    host, _, port = address.rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host.strip("[]"), int(port)))
            return probe.getsockname()[0]
    except (OSError, ValueError):
        return "127.0.0.1"


def list_named_actors(all_namespaces=False):
    """The live named actors, as ``ray.util.list_named_actors``.

    Args:
        all_namespaces: list those of every namespace, not only this job's.

    Returns:
        Their names (sorted str) in this job's namespace; with ``all_namespaces``, a dict
        ``{"name": ..., "namespace": ...}`` per actor, sorted by namespace, then name.
    """
    from purerun.core import context
    return context.get_or_start().list_named_actors(all_namespaces)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'purerun.util' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
