"""What the state API (purerun.util.state) reads from a node: its tasks, actors and objects
as records in the shape of Ray's, a bounded history of finished tasks and dead actors, and the
filters that select among them.

::

    TaskTable (live tasks)     ─┐
    task_history (finished)    ─┼─▶ _request_state(resource, filters, limit) ─▶ (records, total)
    actors, dead_actors        ─┤        records: dicts of Ray's columns (ids as hex)
    ObjectTable, ControlStore  ─┘

A finished task leaves the TaskTable at once; what the state API shows of it afterwards is a
small tuple kept in ``task_history``, a deque of at most ``TASK_HISTORY_MAX`` entries (the
oldest go first), so memory stays bounded however many tasks a node runs. Ray keeps up to
100,000 task events in the GCS (``RAY_task_events_max_num_task_in_gcs``); a node of this size
runs a few thousand tasks a second, so 10,000 keeps the last seconds to minutes of work, in
about 1.4 MB (an entry is ~140 bytes: benchmarks/bench_state_api.py), and a full reply (a
dict of ~25 columns per task, ~1 KB) stays near 10 MB. A node started with
``RAY_task_events_max_num_task_in_gcs`` (or ``PURERUN_TASK_HISTORY_MAX``) set keeps that
many instead.

Pure: no socket, process or clock; the times shown come from the spans workers report.
NodeState takes these methods (``StateRules`` is one of its bases).
"""

import collections
import itertools

from purerun import exceptions
from purerun.core import ids, serialization, timeline
from purerun.core.actors import DEAD, PENDING
from purerun.core import protocol
from purerun.core.control_store import worker_id as worker_id_bytes
from purerun.core.node_vocabulary import DEFERRED
from purerun.core.object_table import block_length
from purerun.core.protocol import ARENA, ERROR, INLINE, ON_DISK, REMOTE
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD, LEASE_NAME

__all__ = ["StateRules", "TASK_HISTORY_MAX", "TASK_HISTORY_ENV", "history_cap_from_env", "DEAD_ACTOR_HISTORY_MAX", "RESOURCES", "COLUMNS",
           "PREDICATES", "TASK_STATES", "Gather", "ACTOR_STATES", "check_filters", "select",
           "ERROR_MESSAGE_MAX", "LOG_LINES_PER_WORKER", "LOG_WORKERS_KEPT", "LOG_LINE_MAX",
           "DASHBOARD_TIMELINE_MAX", "TASK_SUMMARY_LATEST", "SummaryGather"]

# Finished tasks still listed, newest kept (see the module docstring).
TASK_HISTORY_MAX = 10_000
# Environment variables that set the history's cap instead (Ray's name first).
TASK_HISTORY_ENV = ("RAY_task_events_max_num_task_in_gcs", "PURERUN_TASK_HISTORY_MAX")
# Dead actors still listed. Ray keeps 100,000 destroyed actors in the GCS
# (RAY_maximum_gcs_destroyed_actor_cached_count); actors are far fewer than tasks here.
DEAD_ACTOR_HISTORY_MAX = 1_000
# A failed task's error message, as listed, is cut to this many characters.
ERROR_MESSAGE_MAX = 2_000
# A failed task keeps its error (to show its type and message) only if its pickle is this small.
ERROR_PAYLOAD_KEPT = 64 * 1024
# The status page shows each worker's last lines of output: a screenful per worker, for the
# workers seen last (the oldest go first), each line cut to a width a page can show. At most
# 64 x 100 lines of 500 characters: about 3 MB when full, mostly far less.
LOG_LINES_PER_WORKER = 100
LOG_WORKERS_KEPT = 64
LOG_LINE_MAX = 500
# Task spans the status page shows: the most recent ones, what its timeline has room for.
DASHBOARD_TIMELINE_MAX = 200
# The status page's task summary lists the records of this many of the newest finished
# tasks, and of as many live ones, per node; the rest are only counted.
TASK_SUMMARY_LATEST = 50

PREDICATES = ("=", "!=")

TASK_STATES = ("PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER",
               "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY", "RUNNING", "FINISHED", "FAILED")
ACTOR_STATES = ("DEPENDENCIES_UNREADY", "PENDING_CREATION", "ALIVE", "RESTARTING", "DEAD")
TASK_TYPES = {0: "NORMAL_TASK", ACTOR_CREATION: "ACTOR_CREATION_TASK",
              ACTOR_METHOD: "ACTOR_TASK"}

# resource -> (columns listed always, columns listed with detail=True), in Ray's order.
COLUMNS = {
    "tasks": (("task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type",
               "func_or_class_name", "parent_task_id", "node_id", "worker_id", "worker_pid",
               "error_type"),
              ("language", "required_resources", "runtime_env_info", "placement_group_id",
               "events", "profiling_data", "creation_time_ms", "start_time_ms", "end_time_ms",
               "task_log_info", "error_message", "is_debugger_paused")),
    "actors": (("actor_id", "class_name", "state", "job_id", "name", "node_id", "pid",
                "ray_namespace", "placement_group_id", "repr_name", "num_restarts",
                "num_restarts_due_to_lineage_reconstruction"),
               ("serialized_runtime_env", "required_resources", "death_cause", "is_detached",
                "call_site")),
    "objects": (("object_id", "object_size", "task_status", "attempt_number",
                 "reference_type", "call_site", "type", "pid", "ip"), ()),
    "nodes": (("node_id", "node_ip", "is_head_node", "state", "state_message", "node_name",
               "resources_total", "labels"),
              ("start_time_ms", "end_time_ms")),
    "jobs": (("job_id", "submission_id", "type", "status", "entrypoint", "message",
              "error_type", "start_time", "end_time", "metadata", "runtime_env",
              "driver_info", "driver_node_id", "driver_exit_code"), ()),
}
RESOURCES = tuple(COLUMNS)

# Columns a filter may name: the scalar ones listed always (as Ray's filterable columns).
_NOT_FILTERABLE = {"resources_total", "labels", "metadata", "runtime_env", "driver_info",
                   "required_resources", "events", "profiling_data", "task_log_info"}
FILTERABLE = {resource: tuple(c for c in base if c not in _NOT_FILTERABLE)
              for resource, (base, _detail) in COLUMNS.items()}

# Exception class -> Ray's ErrorType name, most specific first.
_ERROR_TYPES = (
    (exceptions.TaskCancelledError, "TASK_CANCELLED"),
    (exceptions.OutOfMemoryError, "OUT_OF_MEMORY"),
    (exceptions.RayTaskError, "TASK_EXECUTION_EXCEPTION"),
    (exceptions.WorkerCrashedError, "WORKER_DIED"),
    (exceptions.ActorUnschedulableError, "ACTOR_UNSCHEDULABLE_ERROR"),
    (exceptions.ActorPlacementGroupRemoved, "ACTOR_PLACEMENT_GROUP_REMOVED"),
    (exceptions.RayActorError, "ACTOR_DIED"),
    (exceptions.TaskUnschedulableError, "TASK_UNSCHEDULABLE_ERROR"),
    (exceptions.TaskPlacementGroupRemoved, "TASK_PLACEMENT_GROUP_REMOVED"),
    (exceptions.RuntimeEnvSetupError, "RUNTIME_ENV_SETUP_FAILED"),
    (exceptions.OwnerDiedError, "OWNER_DIED"),
    (exceptions.ObjectLostError, "OBJECT_LOST"),
    (exceptions.NodeDiedError, "NODE_DIED"),
)


def history_cap_from_env(environ):
    """The finished-task history's cap set in ``environ`` (a mapping), else None.

    Raises:
        ValueError: the variable is not a positive integer.
    """
    for name in TASK_HISTORY_ENV:
        text = environ.get(name)
        if text:
            try:
                cap = int(text)
            except ValueError:
                cap = 0
            if cap <= 0:
                raise ValueError(f"{name} must be a positive integer, got {text!r}")
            return cap
    return None


def error_type(error):
    """Ray's ErrorType name for an exception a task failed with."""
    for cls, name in _ERROR_TYPES:
        if isinstance(error, cls):
            return name
    return "TASK_EXECUTION_EXCEPTION" if error is not None else None


def check_filters(resource, filters):
    """Validate state API filters, as Ray does; return them as a list of triples.

    Args:
        resource: one of ``RESOURCES``.
        filters: None, or a list of ``(column, predicate, value)``; predicates "=" and "!=".

    Raises:
        ValueError: an unknown resource, a filter that is not a triple, a column that cannot
            be filtered on, or a predicate other than "=" and "!=".
    """
    if resource not in COLUMNS:
        raise ValueError(f"Unsupported resource {resource!r}; supported: {', '.join(RESOURCES)}")
    checked = []
    for item in filters or ():
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"A filter is a (column, predicate, value) tuple, got {item!r}")
        column, predicate, value = item
        if column not in FILTERABLE[resource]:
            raise ValueError(f"The given filter column {column} is not supported. Enter "
                             f"filters with one of: {list(FILTERABLE[resource])}")
        if predicate not in PREDICATES:
            raise ValueError(f"Unsupported filter predicate {predicate} is given. Available "
                             f"predicates: {', '.join(PREDICATES)}.")
        checked.append((column, predicate, value))
    return checked


def _equal(have, want):
    if isinstance(have, bool) or isinstance(want, bool):
        return str(have).lower() == str(want).lower()
    if isinstance(have, (int, float)) and not isinstance(want, (int, float)):
        try:
            return have == type(have)(want)
        except (TypeError, ValueError):
            return False
    if isinstance(have, str) and isinstance(want, str):
        return have.lower() == want.lower()
    return have == want


def matches(record, filters):
    for column, predicate, value in filters:
        equal = _equal(record.get(column), value)
        if equal != (predicate == "="):
            return False
    return True


def select(records, filters, limit):
    """``(the first `limit` records that pass `filters`, how many passed)``."""
    chosen = []
    total = 0
    for record in records:
        if matches(record, filters):
            total += 1
            if limit is None or len(chosen) < limit:
                chosen.append(record)
    return chosen, total


def _size(kind, payload):
    if kind == INLINE:
        meta, buffers = payload
        return len(meta) + sum(len(b) for b in buffers)
    if kind == ARENA:
        return block_length(payload[1], payload[2])
    if kind == ON_DISK or kind == REMOTE:
        return payload[1]
    if kind == ERROR:
        return len(payload)
    return None


def _ms(seconds):
    return None if seconds is None else int(seconds * 1000)


class StateRules:
    """The state API's part of NodeState: the histories, and the "state" request."""

    def _init_state(self):
        #: finished and failed tasks, oldest first (see ``_record_finished``)
        self.task_history = collections.deque(
            maxlen=self.config.get("task_history_max") or TASK_HISTORY_MAX)
        #: dead actors' records, oldest first
        self.dead_actors = collections.deque(maxlen=DEAD_ACTOR_HISTORY_MAX)
        #: request id sent to other nodes -> Gather, for a "state" asked of the cluster
        self.state_gathers = {}
        self.next_gather = 1
        #: the token whose "state" request is being answered
        self._asking = None
        #: worker pid -> deque of its last (stream, line) of output, for the status page;
        #: the workers whose output came last are last
        self.worker_logs = collections.OrderedDict()

    def _keep_output(self, pid, stream, text):
        """Keep the last lines a worker printed (``text``: one or more lines, no final
        newline), within ``LOG_LINES_PER_WORKER`` per worker and ``LOG_WORKERS_KEPT``
        workers."""
        lines = self.worker_logs.get(pid)
        if lines is None:
            lines = self.worker_logs[pid] = collections.deque(maxlen=LOG_LINES_PER_WORKER)
            while len(self.worker_logs) > LOG_WORKERS_KEPT:
                self.worker_logs.popitem(last=False)
        else:
            self.worker_logs.move_to_end(pid)
        for line in text.split("\n")[-LOG_LINES_PER_WORKER:]:
            lines.append((stream, line[:LOG_LINE_MAX]))

    # ── histories ──────────────────────────────────────────────────────────────────────────

    def _record_finished(self, task, worker, error):
        """``task`` reached its end (``error``: the ERROR payload it failed with, or None)."""
        spec = task.spec
        if spec.name == LEASE_NAME:
            return   # the tasks run on it are recorded instead (core/lease_rules.py)
        if error is not None and len(error) > ERROR_PAYLOAD_KEPT:
            error = b""
        self.task_history.append((
            spec.task_id, spec.attempt, spec.name, spec.kind, spec.job_id, spec.actor_id,
            task.parent, task.worker_id, worker.pid if worker is not None else None,
            task.span, error, spec.resources,
            task.node.node_id if task.node is not None else self.node_id))

    def _record_dead_actor(self, actor, worker_id):
        """``actor`` is DEAD; ``worker_id``: the worker it last ran in, if any."""
        self.dead_actors.append(self._actor_record(actor, worker_id))

    # ── records ────────────────────────────────────────────────────────────────────────────

    def _worker_hex(self, worker_id):
        return None if worker_id is None else worker_id_bytes(self.node_number, worker_id).hex()

    def _task_record(self, task_id, attempt, name, kind, job_id, actor_id, parent, worker_id,
                     pid, span, state, error, resources, node_id):
        error_name = message = None
        if error is not None:
            try:
                exc = serialization.deserialize(error) if error else None
            except Exception as failed:   # a class the node cannot import, say
                exc = failed
            error_name = error_type(exc)
            message = str(exc)[:ERROR_MESSAGE_MAX] if exc is not None else None
        start, end = span if span is not None else (None, None)
        return {
            "task_id": task_id.hex(), "attempt_number": attempt, "name": name, "state": state,
            "job_id": job_id.hex() if job_id else None,
            "actor_id": actor_id.hex() if actor_id is not None else None,
            "type": TASK_TYPES.get(kind, "NORMAL_TASK"), "func_or_class_name": name,
            "parent_task_id": parent.hex() if parent is not None else None,
            "node_id": node_id.hex() if node_id is not None else None,
            "worker_id": self._worker_hex(worker_id), "worker_pid": pid,
            "error_type": error_name, "language": "PYTHON",
            "required_resources": dict(resources or {}), "runtime_env_info": None,
            "placement_group_id": None, "events": [], "profiling_data": None,
            "creation_time_ms": None, "start_time_ms": _ms(start), "end_time_ms": _ms(end),
            "task_log_info": None, "error_message": message, "is_debugger_paused": None,
        }

    def _live_state(self, task):
        spec = task.spec
        if task.node is not None:
            return "SUBMITTED_TO_WORKER"
        if task.worker_id is not None:
            return "RUNNING"
        if self.objects.missing(spec.deps):
            return "PENDING_ARGS_AVAIL"
        if spec.kind == ACTOR_METHOD:
            return "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY"
        return "PENDING_NODE_ASSIGNMENT"

    def _task_records(self):
        """Every task's record, built one at a time: a list with a limit and no filter
        builds only what it returns. The asker's direct tasks queued or running now
        (core/lease_rules.py) come first."""
        if self._asking is not None:
            yield from self._live_direct(self._asking)
        for entry in self.task_history:
            yield self._finished_record(entry)
        for task in self.tasks.tasks.values():
            if task.spec.name != LEASE_NAME:
                yield self._live_record(task)

    def _finished_record(self, entry):
        (task_id, attempt, name, kind, job_id, actor_id, parent, worker_id, pid, span,
         error, resources, node_id) = entry
        return self._task_record(
            task_id, attempt, name, kind, job_id, actor_id, parent, worker_id, pid, span,
            "FAILED" if error is not None else "FINISHED", error, resources, node_id)

    def _live_record(self, task):
        spec = task.spec
        worker = self.workers.get(task.worker_id) if task.worker_id is not None else None
        node_id = task.node.node_id if task.node is not None else self.node_id
        return self._task_record(
            spec.task_id, spec.attempt, spec.name, spec.kind, spec.job_id, spec.actor_id,
            task.parent, task.worker_id, worker.pid if worker is not None else None, None,
            self._live_state(task), None, spec.resources, node_id)

    def _task_summary(self):
        """(summary, how many tasks) of the tasks this node runs or ran, or holds queued:
        ``{"counts": {name: {state: n}}, "latest": [the newest ones' records]}``. A task
        placed elsewhere is left to the node that runs it, so that a cluster's summaries
        add up without counting a task twice. Cheap however long the history is: only
        the latest ``TASK_SUMMARY_LATEST`` of each kind become records."""
        counts = {}
        total = 0
        here = self.node_id
        finished = []
        for entry in reversed(self.task_history):   # newest first
            if entry[12] != here:
                continue
            if len(finished) < TASK_SUMMARY_LATEST:
                finished.append(entry)
            by_state = counts.setdefault(entry[2], {})
            state = "FAILED" if entry[10] is not None else "FINISHED"
            by_state[state] = by_state.get(state, 0) + 1
            total += 1
        live = []
        for task in self.tasks.tasks.values():
            if task.node is not None or task.spec.name == LEASE_NAME:
                continue
            if len(live) < TASK_SUMMARY_LATEST:
                live.append(task)
            by_state = counts.setdefault(task.spec.name, {})
            state = self._live_state(task)
            by_state[state] = by_state.get(state, 0) + 1
            total += 1
        latest = ([self._live_record(task) for task in live]
                  + [self._finished_record(entry) for entry in finished])
        return {"counts": counts, "latest": latest}, total

    def _actor_record(self, actor, worker_id=None):
        creation = actor.creation
        state = actor.state
        if state == PENDING:
            state = ("DEPENDENCIES_UNREADY" if self.objects.missing(creation.deps)
                     else "PENDING_CREATION")
        worker_id = actor.worker_id if worker_id is None else worker_id
        worker = self.workers.get(worker_id) if worker_id is not None else None
        node_id = actor.node.node_id if actor.node is not None else self.node_id
        death = None
        if state == DEAD:
            cause = actor.cause
            death = str(cause)[:ERROR_MESSAGE_MAX] if cause is not None else (
                "The actor ended: every handle to it was deleted, or it was killed.")
        class_name = creation.actor.class_name
        return {
            "actor_id": actor.actor_id.hex(), "class_name": class_name, "state": state,
            "job_id": creation.job_id.hex() if creation.job_id else None,
            "name": actor.name or "", "node_id": node_id.hex(),
            "pid": worker.pid if worker is not None else None,
            "ray_namespace": actor.namespace, "placement_group_id": None,
            "repr_name": "", "num_restarts": actor.num_restarts,
            "num_restarts_due_to_lineage_reconstruction": 0,
            "serialized_runtime_env": None,
            "required_resources": dict(creation.actor.hold or {}),
            "death_cause": death, "is_detached": bool(actor.detached), "call_site": None,
        }

    def _actor_records(self):
        seen = set()
        records = []
        for record in self.dead_actors:
            seen.add(record["actor_id"])
            records.append(record)
        for actor in self.actors.values():
            if actor.state != DEAD:
                record = self._actor_record(actor)
                seen.add(record["actor_id"])
                records.append(record)
        # Actors other nodes own: what the control store knows of them.
        for info in self.control.actor_table():
            actor_id = info["actor_id"].hex()
            if actor_id in seen:
                continue
            state = info["state"]
            records.append({
                "actor_id": actor_id, "class_name": info.get("class_name"),
                "state": "PENDING_CREATION" if state == PENDING else state,
                "job_id": info["job_id"].hex(), "name": info["name"] or "",
                "node_id": info["node_id"].hex() if info["node_id"] else None, "pid": None,
                "ray_namespace": info["namespace"], "placement_group_id": None,
                "repr_name": "", "num_restarts": 0,
                "num_restarts_due_to_lineage_reconstruction": 0,
                "serialized_runtime_env": None, "required_resources": {},
                "death_cause": None, "is_detached": info["detached"], "call_site": None})
        return records

    def _object_records(self):
        records = []
        ip = self.config.get("node_ip", "127.0.0.1")
        tasks = self.tasks
        for object_id, entry in self.objects.entries.items():
            kind = entry.kind
            if kind is None:
                task = tasks.get(ids.task_id_of(object_id))
                status = self._live_state(task) if task is not None else "NIL"
            else:
                status = "FAILED" if kind == ERROR else "FINISHED"
            if entry.pins:
                reference = "PINNED_IN_MEMORY"
            elif entry.holds:
                reference = "LOCAL_REFERENCE"
            else:
                reference = "UNKNOWN_STATUS"
            records.append({
                "object_id": object_id.hex(), "object_size": _size(kind, entry.payload),
                "task_status": status, "attempt_number": 0, "reference_type": reference,
                "call_site": "disabled", "type": "DRIVER", "pid": None, "ip": ip})
        return records

    def _node_records(self):
        records = []
        for index, row in enumerate(self.control.node_table()):
            alive = row["alive"]
            records.append({
                "node_id": row["node_id"].hex(), "node_ip": row["node_ip"],
                "is_head_node": index == 0,   # the head's own node registers first
                "state": "ALIVE" if alive else "DEAD",
                "state_message": None if alive else "The node stopped sending heartbeats.",
                "node_name": row["node_ip"], "resources_total": dict(row["resources"]),
                "labels": dict(row.get("labels") or {}),
                "start_time_ms": None, "end_time_ms": None})
        return records

    def _job_records(self):
        records = []
        for job in self.control.jobs():
            records.append({
                "job_id": job["JobID"], "submission_id": None, "type": "DRIVER",
                "status": "SUCCEEDED" if job["IsDead"] else "RUNNING",
                "entrypoint": job["Entrypoint"], "message": None, "error_type": None,
                "start_time": job["StartTime"], "end_time": job["EndTime"] or None,
                "metadata": dict(job.get("Metadata") or {}), "runtime_env": {},
                "driver_info": {"id": job["JobID"], "node_ip_address": job["DriverIPAddress"],
                                "pid": str(job["DriverPid"])},
                "driver_node_id": job["DriverNodeID"] or None, "driver_exit_code": None})
        return records

    # ── the request ────────────────────────────────────────────────────────────────────────

    def _request_state(self, token, resource, filters, limit, everywhere):
        """REQUEST "state": the records of ``resource`` that pass ``filters``, at most
        ``limit`` (None: all), and how many passed. Tasks and objects are each node's own:
        with ``everywhere``, in a cluster, the other live nodes are asked too, and the
        answer waits for theirs (a node that dies meanwhile is left out). Nodes, jobs and
        actors come from the control store, which every node shares."""
        filters = check_filters(resource, filters)
        self._asking = token
        try:
            records, total = self._local_state(resource, filters, limit)
        finally:
            self._asking = None
        if not everywhere or resource not in ("tasks", "objects") or not self.clustered:
            return records, total
        others = [remote for remote in self.remote.values() if remote.alive]
        if not others:
            return records, total
        gather_id = self.next_gather
        self.next_gather += 1
        self.state_gathers[gather_id] = Gather(token, self._request_id, set(others), records,
                                               total, limit)
        for remote in others:
            self._send(remote, (protocol.REQUEST, gather_id, "state",
                                (resource, filters, limit, False)))
        return DEFERRED

    def _local_state(self, resource, filters, limit):
        if resource == "tasks" and self._asking is not None:
            live = self.peers[self._asking].direct_live
            extra = len(live) if live else 0
        else:
            extra = 0
        records = getattr(self, f"_{resource[:-1]}_records")()
        if not filters and limit is not None and resource == "tasks":
            # No filter: the count is known without building every record.
            return list(itertools.islice(records, limit)), (len(self.task_history)
                                                              + len(self.tasks)
                                                              - len(self.leases) + extra)
        return select(records, filters, limit)

    def _state_answer(self, remote, request_id, ok, value):
        """Another node answered a "state" this node asked of it (None: it died)."""
        gather = self.state_gathers.get(request_id)
        if gather is None or remote not in gather.waiting:
            return
        gather.waiting.discard(remote)
        if ok:
            gather.add(value)
        if gather.waiting:
            return
        del self.state_gathers[request_id]
        if gather.token in self.peers:
            self._send(gather.token, (protocol.REPLY, gather.request_id, True,
                                      gather.merged()))

    def _request_dashboard(self, token):
        """REQUEST "dashboard": what the status page shows besides the state API's tasks and
        actors — the node table (this node's row as of now, not of its last heartbeat), this
        node's object store, its latest task spans, and its workers' last lines of output.
        """
        nodes = self.control.node_table()
        available, load = self.heartbeat_report()[1:]
        for row in nodes:
            if row["node_id"] == self.node_id:
                row["available"] = {name: amount for name, amount in available.items()
                                    if amount > 0}
                row["load"] = load
            row["node_id"] = row["node_id"].hex()
            row["this_node"] = row["node_id"] == self.node_id.hex()
        spans = list(itertools.islice(reversed(self.timeline), DASHBOARD_TIMELINE_MAX))
        spans.reverse()
        live = {worker.pid for worker in self.workers.values()}
        return {
            "node_id": self.node_id.hex(), "nodes": nodes, "store": self.objects.stats(),
            "timeline": timeline.chrome_trace(spans, self.config.get("node_ip", "127.0.0.1")),
            "logs": [{"pid": pid, "alive": pid in live, "lines": list(lines)}
                     for pid, lines in self.worker_logs.items()],
        }

    def _request_task_summary(self, token, everywhere):
        """REQUEST "task_summary": ``(summary, total)`` of ``_task_summary``; with
        ``everywhere``, in a cluster, the other live nodes' are added in (the answer waits
        for theirs; a node that dies meanwhile is left out)."""
        summary, total = self._task_summary()
        for record in self._live_direct(token):   # the asker's direct tasks, now
            by_state = summary["counts"].setdefault(record["name"], {})
            by_state[record["state"]] = by_state.get(record["state"], 0) + 1
            total += 1
            if len(summary["latest"]) < TASK_SUMMARY_LATEST:
                summary["latest"].append(record)
        others = [remote for remote in self.remote.values() if remote.alive]
        if not everywhere or not self.clustered or not others:
            return summary, total
        gather_id = self.next_gather
        self.next_gather += 1
        self.state_gathers[gather_id] = SummaryGather(token, self._request_id, set(others),
                                                      summary, total)
        for remote in others:
            self._send(remote, (protocol.REQUEST, gather_id, "task_summary", (False,)))
        return DEFERRED

    def _request_log_to_driver(self, token, on):
        """REQUEST "log_to_driver": whether the asker gets LOG messages of worker output
        (a tool that keeps its connection open does not read them)."""
        self.peers[token].log_to_driver = bool(on)

    def _state_node_gone(self, remote):
        for request_id in [i for i, g in self.state_gathers.items() if remote in g.waiting]:
            self._state_answer(remote, request_id, False, None)


class Gather:
    """A "state" request asked of every node: the answers so far."""

    __slots__ = ("token", "request_id", "waiting", "records", "total", "limit")

    def __init__(self, token, request_id, waiting, records, total, limit):
        self.token = token              #: who asked
        self.request_id = request_id    #: its REQUEST's id
        self.waiting = waiting          #: RemoteNodes yet to answer
        self.records = list(records)
        self.total = total
        self.limit = limit

    def add(self, value):
        """Another node's answer: (records, how many passed its filters)."""
        records, total = value
        self.records.extend(records)
        self.total += total

    def merged(self):
        """(records, total): one record per task attempt (or object), the one from the
        node that ran it (it knows the worker) over the one from the node that placed it."""
        chosen = {}
        duplicates = 0
        for record in self.records:
            key = (record.get("task_id") or record.get("object_id"),
                   record.get("attempt_number"))
            kept = chosen.get(key)
            if kept is None:
                chosen[key] = record
                continue
            duplicates += 1
            if kept.get("worker_pid") is None and record.get("worker_pid") is not None:
                chosen[key] = record
        records = list(chosen.values())
        if self.limit is not None:
            records = records[:self.limit]
        return records, max(self.total - duplicates, len(records))


class SummaryGather(Gather):
    """A "task_summary" asked of every node: the counts added up so far."""

    __slots__ = ("summary",)

    def __init__(self, token, request_id, waiting, summary, total):
        super().__init__(token, request_id, waiting, (), total, None)
        self.summary = summary

    def add(self, value):
        summary, total = value
        counts = self.summary["counts"]
        for name, by_state in summary["counts"].items():
            mine = counts.setdefault(name, {})
            for state, n in by_state.items():
                mine[state] = mine.get(state, 0) + n
        self.summary["latest"].extend(summary["latest"])
        self.total += total

    def merged(self):
        return self.summary, self.total
