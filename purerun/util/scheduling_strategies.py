"""Scheduling strategies: where a task or actor may run, as ``ray.util.scheduling_strategies``.

Pass one as the ``scheduling_strategy`` option::

    f.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()

The strings ``"DEFAULT"`` (run where it fits, preferring the submitter's node) and ``"SPREAD"``
(spread over the nodes that can run it) are accepted there too.

``PlacementGroupSchedulingStrategy`` runs work inside a placement group's reserved bundles
(see ``purerun.util.placement_group``); ``NodeLabelSchedulingStrategy`` runs it on nodes
whose labels match, with ``In``, ``NotIn``, ``Exists`` and ``DoesNotExist``.
"""

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy",
           "NodeLabelSchedulingStrategy", "In", "NotIn", "Exists", "DoesNotExist"]


class NodeAffinitySchedulingStrategy:
    """Run on one node, given by its id.

    While that node is alive and has the resources in total, the task runs only there, waiting
    if it is busy. If the node is dead (or unknown, or could never fit the task), ``soft=True``
    runs it where the default strategy would, and ``soft=False`` fails it with
    ``TaskUnschedulableError`` (``ActorUnschedulableError`` for an actor).

    Args:
        node_id: the node's id in hex, as ``get_runtime_context().get_node_id()`` or
            ``nodes()[i]["NodeID"]`` give it.
        soft: fall back to other nodes when that one cannot run it.

    Raises:
        TypeError: ``node_id`` is not a str, or ``soft`` is not a bool.
        ValueError: ``node_id`` is not a hex node id.
    """

    __slots__ = ("node_id", "soft", "_spill_on_unavailable", "_fail_on_unavailable")

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        if not isinstance(node_id, str):
            raise TypeError(f"node_id must be the node's id as a hex str, got "
                            f"{type(node_id).__name__}")
        try:
            bytes.fromhex(node_id)
        except ValueError:
            raise ValueError(f"node_id must be a node id in hex, got {node_id!r}") from None
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be a bool, got {type(soft).__name__}")
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


class PlacementGroupSchedulingStrategy:
    """Run in a placement group: inside the resources its bundles reserved.

    The task (or actor) asks its bundle, not the node, for its resources: what it asks for
    must fit in the bundle (or in one of the bundles, for index -1), else ``.remote()``
    raises ValueError. While the group is not created yet, the work waits for it.

    Args:
        placement_group: the ``PlacementGroup``, as ``placement_group()`` returns it; None
            schedules as if no group were given (a child still joins a capturing parent's).
        placement_group_bundle_index: the bundle to run in; -1 (the default) for any.
        placement_group_capture_child_tasks: tasks and actors this one submits go into the
            same group too (unless they say otherwise). None: as the submitter's own task,
            False for a driver.

    Raises:
        TypeError: ``placement_group`` is not a PlacementGroup, the index is not an int,
            or capture is neither None nor a bool.
        ValueError: the index is below -1.
    """

    __slots__ = ("placement_group", "placement_group_bundle_index",
                 "placement_group_capture_child_tasks")

    def __init__(self, placement_group, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks=None):
        from purerun.util.placement_group import PlacementGroup
        if placement_group is not None and not isinstance(placement_group, PlacementGroup):
            raise TypeError(f"placement_group must be a PlacementGroup (or None for no "
                            f"group), got {type(placement_group).__name__}")
        if isinstance(placement_group_bundle_index, bool) or not isinstance(
                placement_group_bundle_index, int):
            raise TypeError(f"placement_group_bundle_index must be an int, got "
                            f"{type(placement_group_bundle_index).__name__}")
        if placement_group_bundle_index < -1:
            raise ValueError(f"placement_group_bundle_index must be -1 (any bundle) or a "
                             f"bundle index >= 0, got {placement_group_bundle_index}")
        if placement_group_capture_child_tasks is not None and not isinstance(
                placement_group_capture_child_tasks, bool):
            raise TypeError(f"placement_group_capture_child_tasks must be None or a bool, "
                            f"got {type(placement_group_capture_child_tasks).__name__}")
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self):
        return (f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
                f"placement_group_bundle_index={self.placement_group_bundle_index}, "
                f"placement_group_capture_child_tasks="
                f"{self.placement_group_capture_child_tasks})")


def _check_values(operator, values):
    if not values:
        raise ValueError(f"The variadic parameter of the {operator} operator must be a "
                         f'non-empty tuple: e.g. {operator}("value1", "value2").')
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"Type of value in position {i} for the {operator} operator "
                             f'must be str (e.g. {operator}("value1", "value2")) but got '
                             f"{value!r} of type {type(value)}.")
    return tuple(values)


class In:
    """The label's value is one of ``values``."""

    __slots__ = ("values",)

    def __init__(self, *values: str):
        self.values = _check_values("In", values)

    def __repr__(self):
        return f"In{self.values!r}"


class NotIn:
    """The label is absent, or its value is none of ``values``."""

    __slots__ = ("values",)

    def __init__(self, *values: str):
        self.values = _check_values("NotIn", values)

    def __repr__(self):
        return f"NotIn{self.values!r}"


class Exists:
    """The node has the label, whatever its value."""

    __slots__ = ()

    def __repr__(self):
        return "Exists()"


class DoesNotExist:
    """The node does not have the label."""

    __slots__ = ()

    def __repr__(self):
        return "DoesNotExist()"


_OPERATORS = (In, NotIn, Exists, DoesNotExist)


def _check_expressions(which, expressions):
    if expressions is None:
        return {}
    if not isinstance(expressions, dict):
        raise ValueError(f"The {which} parameter must be a map (dict) but got type "
                         f"{type(expressions)}.")
    for key, operator in expressions.items():
        if not isinstance(key, str):
            raise ValueError(f"The key of the {which} parameter must be a str but got "
                             f"{key!r} of type {type(key)}.")
        if not isinstance(operator, _OPERATORS):
            raise ValueError(f"The value of the {which} parameter must be In, NotIn, Exists "
                             f"or DoesNotExist, but got {operator!r} of type "
                             f"{type(operator)}.")
    return dict(expressions)


class NodeLabelSchedulingStrategy:
    """Run on a node whose labels match.

    Every ``hard`` expression must hold on the node; where several nodes qualify, those on
    which the ``soft`` expressions hold too are preferred. No node matching ``hard``: the
    work stays pending (with a warning) until such a node joins, as Ray keeps it.

    Args:
        hard: label key -> ``In(...)``, ``NotIn(...)``, ``Exists()`` or ``DoesNotExist()``.
        soft: the same form: preferences.

    Raises:
        ValueError: both are empty, or an expression is not of that form.
    """

    __slots__ = ("hard", "soft")

    def __init__(self, hard, *, soft=None):
        self.hard = _check_expressions("hard", hard)
        self.soft = _check_expressions("soft", soft)
        if not self.hard and not self.soft:
            raise ValueError("The hard and soft parameter of NodeLabelSchedulingStrategy "
                             "cannot both be empty.")

    def __repr__(self):
        return f"NodeLabelSchedulingStrategy(hard={self.hard!r}, soft={self.soft!r})"


def label_constraints(expressions):
    """``(key, operator, values)`` constraints (core/placement_groups.py) of a hard or soft
    map of a NodeLabelSchedulingStrategy."""
    from purerun.core import placement_groups as pgs
    names = {In: pgs.IN, NotIn: pgs.NOT_IN, Exists: pgs.EXISTS,
             DoesNotExist: pgs.DOES_NOT_EXIST}
    return tuple((key, names[type(op)], getattr(op, "values", ()))
                 for key, op in expressions.items())
