"""The state API, as Ray's ``ray.util.state``: list and summarize the cluster's tasks, actors,
objects, nodes and jobs.

::

    import purerun as ray
    from purerun.util.state import list_tasks, summarize_tasks

    list_tasks(filters=[("state", "=", "RUNNING")], limit=10)
    summarize_tasks()["cluster"]["summary"]

A driver that called ``purerun.init()`` asks its node; any other process asks the node at
``address`` (a node's socket or session directory, or a head's "host:port", whose node on
this host answers), else the one ``purerun start`` left running here. The node answers from
its task table and its bounded history of finished tasks and dead actors
(core/state_rules.py), and from the control store for nodes, jobs and actors of other nodes.
In a cluster it asks every other live node for its tasks and objects too, and lists each
task once, as the node that ran it saw it.

Records are dataclasses, as Ray's (``TaskState``, ``ActorState``, ...); they also answer
``record["state"]`` and ``record.asdict()``. With ``detail=False`` the columns shown only in
detail are None.
"""

import dataclasses
import os
from typing import Any, Optional

from purerun.core import state_rules

__all__ = ["list_tasks", "list_actors", "list_objects", "list_nodes", "list_jobs", "get_actor",
           "get_task", "get_node", "get_objects", "summarize_tasks", "summarize_actors",
           "summarize_objects", "TaskState", "ActorState", "ObjectState", "NodeState",
           "JobState", "StateApiException", "DEFAULT_LIMIT", "DEFAULT_RPC_TIMEOUT"]

DEFAULT_LIMIT = 100          # Ray's default ``limit``
DEFAULT_RPC_TIMEOUT = 30     # seconds, Ray's default ``timeout``
# summarize_* read every record the node has: its task history is bounded, so is this.
_SUMMARY_LIMIT = None


class StateApiException(Exception):
    """The state could not be read (no node to ask, or it did not answer in time), as Ray's
    ``ray.util.state.exception.RayStateApiException``."""


RayStateApiException = StateApiException


class _Record:
    """Dict access on a state dataclass, as Ray's records allow."""

    def __getitem__(self, key):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key, default) if key in self.__dataclass_fields__ else default

    def keys(self):
        return self.__dataclass_fields__.keys()

    def asdict(self):
        """The record as a plain dict."""
        return dataclasses.asdict(self)


def _state_class(name, resource, doc):
    base, detail = state_rules.COLUMNS[resource]
    fields = [(column, Any, dataclasses.field(default=None)) for column in base + detail]
    cls = dataclasses.make_dataclass(name, fields, bases=(_Record,))
    cls.__doc__ = doc
    cls.__module__ = __name__
    return cls


TaskState = _state_class("TaskState", "tasks", "One task attempt, as Ray's TaskState.")
ActorState = _state_class("ActorState", "actors", "One actor, as Ray's ActorState.")
ObjectState = _state_class("ObjectState", "objects", "One object, as Ray's ObjectState.")
NodeState = _state_class("NodeState", "nodes", "One node, as Ray's NodeState.")
JobState = _state_class("JobState", "jobs", "One job, as Ray's JobState (JobDetails).")
_CLASSES = {"tasks": TaskState, "actors": ActorState, "objects": ObjectState,
            "nodes": NodeState, "jobs": JobState}


# -- asking the node ------------------------------------------------------------------------------

def _ask(address, op, args, timeout):
    from purerun.core import context
    client = context.client
    if address is None and client is not None:
        from purerun import exceptions
        try:
            return client.request(op, *args, timeout=timeout)
        except exceptions.GetTimeoutError:
            raise StateApiException(f"The node did not answer within {timeout:g} s") from None
    return _ask_socket(_node_address(address), op, args, timeout)


def _node_address(address):
    from purerun.core import launcher
    target = address
    if target is None or target == "auto":
        for name in launcher.ADDRESS_ENV_VARS:
            value = os.environ.get(name)
            if value and value != "auto":
                target = value
                break
        else:
            target = launcher.recorded_address()
    if not target:
        raise StateApiException("No purerun node found: call purerun.init(), give address=, "
                                "or start one with 'purerun start'.")
    if launcher.is_head_address(target):
        record = launcher.node_for_head(target)
        if record is None:
            raise StateApiException(f"No node of this host is joined to the head at {target}: "
                                    "the state API asks a node.")
        target = record.address
    return target


def _ask_socket(address, op, args, timeout):
    """One REQUEST over a fresh connection to the node at ``address``, as a driver asks."""
    from purerun.core import launcher
    try:
        [(ok, value)] = launcher.ask_node(address, [(op, args)], timeout)
    except ConnectionError as exc:
        raise StateApiException(str(exc)) from None
    if not ok:
        raise value
    return value


def _check_limit(limit):
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ValueError(f"limit must be a positive int, got {limit!r}")


def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _list(resource, address, filters, limit, timeout, detail, raise_on_missing_output):
    if filters is not None and not isinstance(filters, (list, tuple)):
        raise ValueError(f"filters must be a list of (column, predicate, value) tuples, "
                         f"got {filters!r}")
    filters = state_rules.check_filters(resource, filters)
    if limit is not None:
        _check_limit(limit)
    _check_timeout(timeout)
    records, total = _ask(address, "state", (resource, filters, limit, True), timeout)
    if raise_on_missing_output and limit is not None and total > len(records):
        # Ray warns that the output is truncated; purerun says so the same way.
        import warnings
        warnings.warn(f"{total - len(records)} ({total} total) {resource} are not listed: "
                      f"the limit is {limit}. Raise limit= to see more.", stacklevel=3)
    cls = _CLASSES[resource]
    detail_columns = state_rules.COLUMNS[resource][1]
    out = []
    for record in records:
        if not detail:
            for column in detail_columns:
                record[column] = None
        out.append(cls(**record))
    return out


# -- lists ----------------------------------------------------------------------------------------

def list_tasks(address: Optional[str] = None, filters: Optional[list] = None,
               limit: int = DEFAULT_LIMIT, timeout: int = DEFAULT_RPC_TIMEOUT,
               detail: bool = False, raise_on_missing_output: bool = True,
               _explain: bool = False) -> list:
    """The cluster's tasks: those queued or running, and each node's last finished ones.

    Args:
        address: a node's socket or session directory, or a head's "host:port"; None: the
            node of this driver, else the one ``purerun start`` left running here.
        filters: ``[(column, "=" or "!=", value)]``, e.g. ``[("state", "=", "RUNNING")]``;
            strings compare case-insensitively.
        limit: at most this many records.
        timeout: seconds to wait for the node's answer.
        detail: also fill the detail columns (timings, error message, resources).
        raise_on_missing_output: warn when ``limit`` leaves records out.
        _explain: accepted for Ray's signature; nothing more is printed.

    Returns:
        A list of ``TaskState``, finished tasks first (oldest first), then live ones.

    Raises:
        ValueError: a filter names a column that cannot be filtered, or an unknown
            predicate; a bad ``limit`` or ``timeout``.
        StateApiException: no node to ask, or it did not answer within ``timeout``.
    """
    return _list("tasks", address, filters, limit, timeout, detail, raise_on_missing_output)


def list_actors(address: Optional[str] = None, filters: Optional[list] = None,
                limit: int = DEFAULT_LIMIT, timeout: int = DEFAULT_RPC_TIMEOUT,
                detail: bool = False, raise_on_missing_output: bool = True,
                _explain: bool = False) -> list:
    """The cluster's actors, live and recently dead (arguments as ``list_tasks``).

    Returns:
        A list of ``ActorState``; ``state`` is DEPENDENCIES_UNREADY, PENDING_CREATION,
        ALIVE, RESTARTING or DEAD.
    """
    return _list("actors", address, filters, limit, timeout, detail, raise_on_missing_output)


def list_objects(address: Optional[str] = None, filters: Optional[list] = None,
                 limit: int = DEFAULT_LIMIT, timeout: int = DEFAULT_RPC_TIMEOUT,
                 detail: bool = False, raise_on_missing_output: bool = True,
                 _explain: bool = False) -> list:
    """The objects each node holds or waits for (arguments as ``list_tasks``).

    Returns:
        A list of ``ObjectState``.
    """
    return _list("objects", address, filters, limit, timeout, detail, raise_on_missing_output)


def list_nodes(address: Optional[str] = None, filters: Optional[list] = None,
               limit: int = DEFAULT_LIMIT, timeout: int = DEFAULT_RPC_TIMEOUT,
               detail: bool = False, raise_on_missing_output: bool = True,
               _explain: bool = False) -> list:
    """The cluster's nodes, live and recently dead (arguments as ``list_tasks``).

    Returns:
        A list of ``NodeState``.
    """
    return _list("nodes", address, filters, limit, timeout, detail, raise_on_missing_output)


def list_jobs(address: Optional[str] = None, filters: Optional[list] = None,
              limit: int = DEFAULT_LIMIT, timeout: int = DEFAULT_RPC_TIMEOUT,
              detail: bool = False, raise_on_missing_output: bool = True,
              _explain: bool = False) -> list:
    """The cluster's jobs (drivers), running and finished (arguments as ``list_tasks``).

    Returns:
        A list of ``JobState``; ``status`` is RUNNING or SUCCEEDED.
    """
    return _list("jobs", address, filters, limit, timeout, detail, raise_on_missing_output)


# -- gets -----------------------------------------------------------------------------------------

def _get(resource, column, id, address, timeout):
    if not isinstance(id, str):
        raise TypeError(f"id must be a hex str, got {type(id).__name__}")
    found = _list(resource, address, [(column, "=", id)], None, timeout, True, False)
    return found


def get_actor(id: str, address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
              _explain: bool = False):
    """One actor by id (hex), with detail; None if it is not known."""
    found = _get("actors", "actor_id", id, address, timeout)
    return found[0] if found else None


def get_task(id: str, address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
             _explain: bool = False):
    """One task by id (hex), with detail: its latest attempt; None if it is not known."""
    found = _get("tasks", "task_id", id, address, timeout)
    return max(found, key=lambda t: t.attempt_number) if found else None


def get_node(id: str, address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
             _explain: bool = False):
    """One node by id (hex), with detail; None if it is not known."""
    found = _get("nodes", "node_id", id, address, timeout)
    return found[0] if found else None


def get_objects(id: str, address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
                _explain: bool = False) -> list:
    """The records of one object by id (hex): a list, as Ray's (one record here)."""
    return _get("objects", "object_id", id, address, timeout)


# -- summaries ------------------------------------------------------------------------------------

def summarize_tasks(address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
                    raise_on_missing_output: bool = True, _explain: bool = False) -> dict:
    """Task counts by function and state, in the shape of Ray's summary.

    Returns:
        ``{"cluster": {"summary": {name: {"func_or_class_name", "type", "state_counts"}},
        "total_tasks", "total_actor_tasks", "total_actor_scheduled",
        "summary_by": "func_name"}}``.
    """
    tasks = _list("tasks", address, None, _SUMMARY_LIMIT, timeout, False, False)
    summary = {}
    totals = {"NORMAL_TASK": 0, "ACTOR_TASK": 0, "ACTOR_CREATION_TASK": 0}
    for task in tasks:
        entry = summary.setdefault(task.func_or_class_name, {
            "func_or_class_name": task.func_or_class_name, "type": task.type,
            "state_counts": {}})
        counts = entry["state_counts"]
        counts[task.state] = counts.get(task.state, 0) + 1
        totals[task.type] = totals.get(task.type, 0) + 1
    return {"cluster": {"summary": summary, "total_tasks": totals["NORMAL_TASK"],
                        "total_actor_tasks": totals["ACTOR_TASK"],
                        "total_actor_scheduled": totals["ACTOR_CREATION_TASK"],
                        "summary_by": "func_name"}}


def summarize_actors(address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
                     raise_on_missing_output: bool = True, _explain: bool = False) -> dict:
    """Actor counts by class and state, in the shape of Ray's summary.

    Returns:
        ``{"cluster": {"summary": {class_name: {"class_name", "state_counts"}},
        "total_actors", "summary_by": "class"}}``.
    """
    actors = _list("actors", address, None, _SUMMARY_LIMIT, timeout, False, False)
    summary = {}
    for actor in actors:
        entry = summary.setdefault(actor.class_name, {"class_name": actor.class_name,
                                                      "state_counts": {}})
        counts = entry["state_counts"]
        counts[actor.state] = counts.get(actor.state, 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(actors),
                        "summary_by": "class"}}


def summarize_objects(address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
                      raise_on_missing_output: bool = True, _explain: bool = False) -> dict:
    """Object counts and sizes by the status of the task that made them.

    Returns:
        ``{"cluster": {"summary": {task_status: {"total_objects", "total_size_mb",
        "ref_type_counts"}}, "total_objects", "total_size_mb", "summary_by": "callsite"}}``
        (there is no call site here: objects group by task status).
    """
    objects = _list("objects", address, None, _SUMMARY_LIMIT, timeout, False, False)
    summary = {}
    total_size = 0
    for obj in objects:
        size = obj.object_size or 0
        total_size += size
        entry = summary.setdefault(obj.task_status, {"total_objects": 0, "total_size_mb": 0.0,
                                                     "ref_type_counts": {}})
        entry["total_objects"] += 1
        entry["total_size_mb"] += size / 2**20
        counts = entry["ref_type_counts"]
        counts[obj.reference_type] = counts.get(obj.reference_type, 0) + 1
    return {"cluster": {"summary": summary, "total_objects": len(objects),
                        "total_size_mb": total_size / 2**20, "summary_by": "callsite"}}
