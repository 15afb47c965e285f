"""Placement groups: reserve resources on the cluster's nodes, all at once, as ``ray.util``.

::

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    purerun.get(pg.ready())                      # both bundles are reserved
    f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    remove_placement_group(pg)                   # its tasks fail, its actors die

A group is a list of *bundles* (resource dicts). The cluster places every bundle of it on a
node or none (the control store decides, against what each node has left once other groups'
bundles are taken off its totals), and each node then reserves its bundles as soon as their
resources are free. Reserved resources serve only work scheduled in the group: they leave
``available_resources()``, which lists the group's own resources instead
(``CPU_group_<id>``, ``CPU_group_<index>_<id>``, ...), as Ray does; ``cluster_resources()``
lists those too, beside the nodes' totals. A GPU bundle takes GPU ids when it is reserved,
and work in it is given them.

Strategies: ``PACK`` (as few nodes as possible), ``SPREAD`` (distinct nodes where possible),
``STRICT_PACK`` (one node), ``STRICT_SPREAD`` (distinct nodes, or the group waits).

A group lives until ``remove_placement_group``, or until its job's driver ends unless it was
created with ``lifetime="detached"``. When a node holding bundles dies, they are placed again
on the nodes left (the group is ``RESCHEDULING`` meanwhile).
"""

import os
from typing import Dict, List, Optional

from purerun import exceptions
from purerun.core import context
from purerun.core.placement_groups import STRATEGIES, parse_label_selector

__all__ = ["PlacementGroup", "placement_group", "remove_placement_group",
           "get_placement_group", "placement_group_table", "get_current_placement_group"]

# The size of a placement group id, as Ray's PlacementGroupID.
PLACEMENT_GROUP_ID_SIZE = 18


def _client():
    """This process's client, starting purerun first if needed (as Ray's calls auto-init)."""
    return context.get_or_start()


class PlacementGroup:
    """A handle to a placement group: its id and bundles. Pickles by value, so tasks and
    actors may be given one.

    Attributes:
        id: the group's id (``.id.hex()`` is how ``placement_group_table`` names it).
        bundle_specs: the bundles, a list of resource dicts.
        bundle_count: how many bundles.
        is_empty: whether it has no bundles.
    """

    __slots__ = ("id", "_bundles")

    def __init__(self, id, bundle_cache: Optional[List[Dict[str, float]]] = None):
        self.id = _GroupId(id)
        self._bundles = bundle_cache

    @property
    def bundle_specs(self) -> List[Dict[str, float]]:
        """The bundles of the group, each a dict of resource name to amount."""
        if self._bundles is None:
            info = _client().request("pg_info", bytes(self.id))
            self._bundles = [] if info is None else info["bundles"]
        return [dict(bundle) for bundle in self._bundles]

    @property
    def bundle_count(self) -> int:
        """How many bundles the group has."""
        return len(self.bundle_specs)

    @property
    def is_empty(self) -> bool:
        return self.bundle_count == 0

    def ready(self):
        """An ObjectRef that becomes ready once every bundle of the group is reserved.

        ``purerun.get(pg.ready())`` returns the group; ``purerun.wait([pg.ready()],
        timeout=...)`` waits for it with a deadline. It is a task scheduled in the group
        (asking for no CPU), so it runs only once the group is created, as in Ray.

        Returns:
            An ObjectRef to this PlacementGroup.
        """
        from purerun.remote_function import RemoteFunction
        from purerun.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        global _ready_check
        if _ready_check is None:
            _ready_check = RemoteFunction(_bundle_reservation_check, {"num_cpus": 0})
        return _ready_check.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(self)).remote(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Wait until the group is created.

        Args:
            timeout_seconds: how long to wait at most, in seconds.

        Returns:
            True if the group was created within the time, else False.
        """
        import purerun
        ready, _ = purerun.wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"PlacementGroup(id={self.id.hex()})"

    def __reduce__(self):
        return PlacementGroup, (bytes(self.id), self._bundles)


class _GroupId(bytes):
    """A placement group id: bytes with ``hex()`` and ``binary()``, as Ray's PlacementGroupID."""

    def binary(self) -> bytes:
        return bytes(self)

    def is_nil(self) -> bool:
        return not any(self)

    def __repr__(self):
        return f"PlacementGroupID({self.hex()})"


def _bundle_reservation_check(placement_group):
    return placement_group


_ready_check = None


def _check_bundles(bundles):
    if not isinstance(bundles, list):
        raise ValueError(f"The type of bundles must be list, got {bundles!r}")
    if not bundles:
        raise ValueError("The placement group `bundles` argument cannot contain an empty "
                         "list")
    checked = []
    for bundle in bundles:
        if not isinstance(bundle, dict):
            raise ValueError(f"Bundles must be a list of dicts of resource name to amount, "
                             f"got {bundle!r} in {bundles}")
        for name, amount in bundle.items():
            if not isinstance(name, str):
                raise ValueError(f"Resource names in a bundle must be str, got {name!r}")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or \
                    amount != amount or amount < 0:
                raise ValueError(f"Bundles cannot have a negative or non-numeric resource "
                                 f"amount: {name!r}: {amount!r} in {bundle}")
        if not bundle or all(amount == 0 for amount in bundle.values()):
            raise ValueError("Bundles cannot be an empty dictionary or resources with only "
                             f"0 values. Bundles: {bundles}")
        checked.append({name: float(amount) for name, amount in bundle.items() if amount})
    return checked


def placement_group(bundles: List[Dict[str, float]], strategy: str = "PACK", name: str = "",
                    lifetime: Optional[str] = None, _soft_target_node_id=None,
                    bundle_label_selector=None) -> PlacementGroup:
    """Reserve a group of resource bundles on the cluster, all of them or none.

    Returns at once; the group is created when its bundles are reserved (``ready()``,
    ``wait()``). A group no set of nodes can hold stays PENDING, with a warning printed to
    the driver, and is created when nodes that fit join.

    Args:
        bundles: the bundles, each a dict of resource name to amount, e.g.
            ``[{"CPU": 1}, {"CPU": 1, "GPU": 1}]``.
        strategy: "PACK" (few nodes, best effort), "SPREAD" (distinct nodes, best effort),
            "STRICT_PACK" (one node) or "STRICT_SPREAD" (distinct nodes).
        name: a name to find it by with ``get_placement_group`` ("" for none); unique in
            the job's namespace.
        lifetime: None (it is removed when its job's driver ends) or "detached" (it lives
            until removed).
        _soft_target_node_id: accepted for compatibility; not used.
        bundle_label_selector: None, or one ``label_selector`` dict per bundle (``{"zone":
            "west"}``, ``"!v"``, ``"in(a,b)"``, ``"!in(a,b)"``): the node of that bundle
            must have matching labels.

    Returns:
        The PlacementGroup.

    Raises:
        ValueError: empty bundles, a bundle with no positive amount, a bad amount, an
            unknown strategy or lifetime, or a malformed ``bundle_label_selector``.
        RaySystemError: the name is taken by a live group in this namespace (as Ray).
    """
    bundles = _check_bundles(bundles)
    if strategy not in STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy}. Supported "
                         f"strategies are: {list(STRATEGIES)}.")
    if lifetime not in (None, "detached"):
        raise ValueError("Placement group `lifetime` argument must be either `None` or "
                         f"'detached'. Got {lifetime}.")
    if not isinstance(name, str):
        raise TypeError(f"Placement group name must be a str, got {type(name).__name__}")
    bundle_labels = None
    if bundle_label_selector is not None:
        if not isinstance(bundle_label_selector, list):
            raise ValueError(f"bundle_label_selector must be a list of dicts, one per bundle, "
                             f"got {bundle_label_selector!r}")
        if len(bundle_label_selector) != len(bundles):
            raise ValueError("The length of `bundle_label_selector` should equal the length "
                             "of `bundles`.")
        bundle_labels = []
        for selector in bundle_label_selector:
            if not isinstance(selector, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in selector.items()):
                raise ValueError(f"Each bundle_label_selector entry must be a dict of label "
                                 f"name to selector string, got {selector!r}")
            bundle_labels.append(parse_label_selector(selector))
    client = _client()
    group_id = os.urandom(PLACEMENT_GROUP_ID_SIZE)
    try:
        client.request("pg_create", group_id, bundles, strategy, name, client.job_id,
                       lifetime == "detached", bundle_labels)
    except ValueError as exc:
        if name and "already exists" in str(exc):
            raise exceptions.RaySystemError(str(exc)) from None   # as Ray raises it
        raise
    return PlacementGroup(group_id, bundles)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Remove a placement group: free its bundles, end its work.

    Its actors die (``ActorDiedError``); its tasks not finished fail with
    ``TaskPlacementGroupRemoved``; work still waiting for it fails the same way.
    Removing a group twice does nothing.

    Args:
        placement_group: the group.

    Raises:
        TypeError: not a PlacementGroup.
    """
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group expects a PlacementGroup, got "
                        f"{type(placement_group).__name__}")
    _client().request("pg_remove", bytes(placement_group.id))


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live placement group of that name, in this job's namespace.

    Args:
        placement_group_name: the name it was created with.

    Returns:
        The PlacementGroup.

    Raises:
        ValueError: no live group has that name (or the name is empty).
    """
    if not placement_group_name:
        raise ValueError("Please supply a non-empty value to get_placement_group")
    client = _client()
    found = client.request("pg_get", placement_group_name, client.job_id)
    if found is None:
        raise ValueError(f"Failed to look up placement group with name: "
                         f"{placement_group_name}")
    group_id, bundles, _strategy = found
    return PlacementGroup(group_id, bundles)


def placement_group_table(placement_group: Optional[PlacementGroup] = None) -> dict:
    """The state of one placement group, or of all, in Ray's shape.

    Args:
        placement_group: a group, or None for all of them.

    Returns:
        For a group: ``{"placement_group_id", "name", "bundles": {index: bundle},
        "bundles_to_node_id": {index: node id hex}, "strategy", "state" ("PENDING",
        "CREATED", "REMOVED" or "RESCHEDULING"), "stats": {...}}``. For all: group id hex
        -> that dict.
    """
    if placement_group is not None and not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"placement_group_table expects a PlacementGroup or None, got "
                        f"{type(placement_group).__name__}")
    group_id = None if placement_group is None else bytes(placement_group.id)
    return _client().request("pg_table", group_id)


def get_current_placement_group() -> Optional[PlacementGroup]:
    """The placement group the calling task or actor runs in, or None (always in a driver).

    Returns:
        The PlacementGroup, or None.
    """
    client = _client()
    if getattr(client, "current_task", None) is None and \
            getattr(client, "actor_id", None) is None:
        return None   # a driver is in no group
    group_id = client.request("pg_current")
    return None if group_id is None else PlacementGroup(group_id)
