"""Placement groups and node labels: the pure rules both the control store and a node apply.

::

    driver ── placement_group(bundles, strategy) ──▶ node ──▶ ControlStore
                                                             place_bundles: bundle -> node,
                                                             against what each node has left
                                                             once other groups' bundles are
                                                             taken off its totals
    node ◀── the bundles assigned to it (bundles_on) ───────  (version in its node record)
      Scheduler: ReserveBundle takes the bundle's resources off what is free as soon as
      they are free, and adds the group's own resources (below); the node tells the store
      (bundle_reserved); a group is CREATED when every bundle is reserved.

**Group resources.** As in Ray, a reserved bundle turns into resources of its own on its
node: bundle ``i`` of group ``G`` with ``{"CPU": 2}`` adds ``CPU_group_<G>: 2`` (any bundle
of the group) and ``CPU_group_<i>_<G>: 2`` (that bundle), plus ``bundle_group_<G>`` and
``bundle_group_<i>_<G>`` (``BUNDLE_UNITS`` each, so that a task asking for nothing is still
pinned to its bundle). A task scheduled in the group asks for those names instead of
``CPU``: the node's ordinary scheduler then keeps it inside its bundle's reservation, and
nothing outside the group can take what the bundle holds.

**Labels.** A node has labels (str to str, from ``init(labels=...)`` or ``purerun start
--labels``, plus ``ray.io/node-id``). A label constraint is ``(key, operator, values)``, with
operator one of ``IN``, ``NOT_IN``, ``EXISTS``, ``DOES_NOT_EXIST`` (Ray's ``In``, ``NotIn``,
``Exists``, ``DoesNotExist``, and ``label_selector``'s ``"v"``, ``"!v"``, ``"in(a,b)"``,
``"!in(a,b)"``).

Nothing here holds state, a socket or a clock.
"""

__all__ = ["STRATEGIES", "PLACEMENT_GROUP", "LABELS", "BUNDLE_UNITS", "bundle_resources",
           "group_demand", "place_bundles", "labels_match", "parse_label_selector",
           "IN", "NOT_IN", "EXISTS", "DOES_NOT_EXIST", "NODE_ID_LABEL"]

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")

# TaskSpec.strategy for a task in a placement group:
#   (PLACEMENT_GROUP, group id bytes, bundle index (-1: any), capture child tasks: bool)
PLACEMENT_GROUP = "PLACEMENT_GROUP"
# TaskSpec.strategy for label scheduling: (LABELS, hard constraints, soft constraints),
# each a tuple of (key, operator, values tuple).
LABELS = "LABELS"

IN = "IN"
NOT_IN = "NOT_IN"
EXISTS = "EXISTS"
DOES_NOT_EXIST = "DOES_NOT_EXIST"

# The default label every node has, as in Ray.
NODE_ID_LABEL = "ray.io/node-id"

# What each reserved bundle offers of its "bundle_group" resources, and what a task in the
# group asks of them: Ray's numbers (1000 and 0.001), so a bundle takes a million tasks.
BUNDLE_UNITS = 1000
BUNDLE_DEMAND = 0.001


def bundle_resources(group_hex, index, resources):
    """The resources a reserved bundle adds to its node.

    Args:
        group_hex: the group's id in hex.
        index: the bundle's index in the group.
        resources: the bundle, name to amount.

    Returns:
        ``{name_group_<hex>: amount, name_group_<index>_<hex>: amount, ...}`` for every
        resource of the bundle, plus the ``bundle_group`` pair.
    """
    added = {}
    for name, amount in resources.items():
        if amount > 0:
            added[f"{name}_group_{group_hex}"] = amount
            added[f"{name}_group_{index}_{group_hex}"] = amount
    added[f"bundle_group_{group_hex}"] = BUNDLE_UNITS
    added[f"bundle_group_{index}_{group_hex}"] = BUNDLE_UNITS
    return added


def group_demand(demand, group_hex, index):
    """What a task in the group asks its node's scheduler for, instead of ``demand``.

    A task for one bundle asks for both that bundle's and the group's names, so that it is
    counted against both: then tasks for any bundle and tasks for one bundle never take more
    than the bundles hold together.
    """
    asked = {}
    for name, amount in demand.items():
        if amount > 0:
            asked[f"{name}_group_{group_hex}"] = amount
            if index >= 0:
                asked[f"{name}_group_{index}_{group_hex}"] = amount
    asked[f"bundle_group_{group_hex}"] = BUNDLE_DEMAND
    if index >= 0:
        asked[f"bundle_group_{index}_{group_hex}"] = BUNDLE_DEMAND
    return asked


def _fits(demand, have):
    return all(have.get(name, 0) + 1e-9 >= amount for name, amount in demand.items()
               if amount > 0)


def _take(have, demand):
    for name, amount in demand.items():
        have[name] = have.get(name, 0) - amount


def place_bundles(bundles, strategy, capacities, labels=None, constraints=None):
    """Choose a node for every bundle of a group, or none at all.

    Args:
        bundles: the group's bundles, each name to amount.
        strategy: one of ``STRATEGIES``.
        capacities: node id -> what it has left for bundles (its totals, less the bundles
            of other groups placed there), in the order nodes are preferred.
        labels: node id -> its labels, when ``constraints`` are given.
        constraints: per bundle, the label constraints its node must meet (None or an
            empty tuple: any node), as ``placement_group(bundle_label_selector=...)``.

    Returns:
        A list of node ids, one per bundle, or None when the strategy cannot be met.

        * STRICT_PACK: every bundle on one node.
        * PACK: on as few nodes as possible: one node if one fits all, else bundles go in
          turn to the first node with room.
        * STRICT_SPREAD: every bundle on a different node.
        * SPREAD: on different nodes where possible, else on the node with room that has
          the fewest of the group's bundles so far.
    """
    left = {node_id: dict(have) for node_id, have in capacities.items()}
    constraints = constraints or [()] * len(bundles)

    def allowed(node_id, i):
        return not constraints[i] or labels_match(labels.get(node_id, {}), constraints[i])

    if strategy in ("PACK", "STRICT_PACK"):
        total = {}
        for bundle in bundles:
            for name, amount in bundle.items():
                total[name] = total.get(name, 0) + amount
        for node_id, have in left.items():
            if _fits(total, have) and all(allowed(node_id, i) for i in range(len(bundles))):
                return [node_id] * len(bundles)
        if strategy == "STRICT_PACK":
            return None
        placed = []
        for i, bundle in enumerate(bundles):
            node_id = next((n for n, have in left.items()
                            if _fits(bundle, have) and allowed(n, i)), None)
            if node_id is None:
                return None
            _take(left[node_id], bundle)
            placed.append(node_id)
        return placed
    # SPREAD and STRICT_SPREAD: the biggest bundles choose first, so that small ones do
    # not take the only node a big one fits.
    order = sorted(range(len(bundles)), key=lambda i: -sum(bundles[i].values()))
    placed = [None] * len(bundles)
    counts = {node_id: 0 for node_id in left}
    for i in order:
        bundle = bundles[i]
        candidates = [n for n, have in left.items() if _fits(bundle, have) and allowed(n, i)
                      and (strategy == "SPREAD" or counts[n] == 0)]
        if not candidates:
            return None
        node_id = min(candidates, key=lambda n: counts[n])
        _take(left[node_id], bundle)
        counts[node_id] += 1
        placed[i] = node_id
    return placed


def labels_match(labels, constraints):
    """Whether a node with ``labels`` meets every ``(key, operator, values)`` constraint."""
    for key, operator, values in constraints:
        value = labels.get(key)
        if operator == IN:
            if value is None or value not in values:
                return False
        elif operator == NOT_IN:
            if value is not None and value in values:
                return False
        elif operator == EXISTS:
            if value is None:
                return False
        elif operator == DOES_NOT_EXIST:
            if value is not None:
                return False
        else:
            raise ValueError(f"unknown label operator {operator!r}")
    return True


def parse_label_selector(selector):
    """Turn a ``label_selector`` option into label constraints.

    Args:
        selector: label key -> ``"v"`` (equals), ``"!v"`` (is not), ``"in(a,b)"`` (one
            of), ``"!in(a,b)"`` (none of).

    Returns:
        A tuple of ``(key, operator, values)``.

    Raises:
        ValueError: an empty key or value, or a malformed ``in(...)`` list.
    """
    constraints = []
    for key, text in selector.items():
        if not key:
            raise ValueError("label_selector keys must be non-empty label names")
        text = text.strip()
        negated = text.startswith("!")
        if negated:
            text = text[1:].strip()
        if text.startswith("in(") or text.startswith("in ("):
            if not text.endswith(")"):
                raise ValueError(f"label_selector value for {key!r} must close its in(...) "
                                 f"list with ')', got {selector[key]!r}")
            inner = text[text.index("(") + 1:-1]
            values = tuple(v.strip() for v in inner.split(","))
            if not inner.strip() or any(not v for v in values):
                raise ValueError(f"label_selector value for {key!r} must list values as "
                                 f"in(a,b,...), got {selector[key]!r}")
        else:
            if not text:
                raise ValueError(f"label_selector value for {key!r} must not be empty")
            values = (text,)
        constraints.append((key, NOT_IN if negated else IN, values))
    return tuple(constraints)
