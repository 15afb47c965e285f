"""purerun.util: utilities on top of the core API, under Ray's names (``ray.util``).

Exports ``ActorPool``, ``as_completed``, ``map_unordered`` and ``inspect_serializability``;
the submodules ``queue`` (``Queue``, ``Empty``, ``Full``), ``metrics`` (``Counter``,
``Gauge``, ``Histogram``), ``actor_pool``, ``check_serialize`` and
``scheduling_strategies`` are imported with ``import purerun.util.<name>``.

``import purerun.util`` itself imports nothing more: each name is loaded on first use
(PEP 562), so a program that never touches a utility never pays for its imports.
"""

import importlib

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

__all__ = list(_EXPORTS)


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
