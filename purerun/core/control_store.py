"""The control store: the facts the whole cluster shares, in one class with plain-value methods.

::

    one host, no head                          several hosts

    driver ─unix─┐                             driver ─unix─▶ node ─┐
    worker ─unix─┼─▶ node ──call──▶ store      driver ─unix─▶ node ─┼─TCP─▶ head ──call──▶ store
    driver ─unix─┘   (embeds it)               worker ─unix─▶ node ─┘ (HMAC)  (python -m
                                                                               purerun.head)

    store = ControlStore: job counter and job table, job namespaces, KV, function table,
            named-actor directory, node table with heartbeats, object directory

**A node with no head** embeds one ``ControlStore`` and calls its methods directly, on its one
thread, while it handles its drivers' and workers' requests (``register_actor``, ``kv_put``,
``new_job_id`` for a driver that connects, ...). It is then the only caller.

**A head** owns the one ``ControlStore`` of a multi-host cluster. It reads ``(method, args)``
requests from authenticated TCP connections (one per node), calls the same method on its
store, and sends back the result or the exception (``core/head.py``). A node talks to it
through a ``RemoteControlStore`` (``core/remote_control.py``) with this very interface, so that
code above the node cannot tell which one it holds. Only the names in ``REMOTE_METHODS`` may be
called that way.

What crosses the wire is therefore plain data: every argument and every result is bytes, str,
int, float, bool, None, or dicts, lists, tuples and sets of those, except an actor's ``meta``,
which the store keeps and hands back without ever looking into it. Errors are ``ValueError``
or ``TypeError``, which pickle too.

The store holds no socket, starts no thread or process, and never blocks or sleeps. Time comes
from two injectable clocks (Trio's habit): ``clock`` (monotonic seconds) for heartbeats and
``wall_clock`` (epoch seconds) for the job table, so tests advance a fake clock instead of
sleeping. The store decides nothing that needs a process: when a node dies or a job ends it
reports what is affected (objects lost, actors to restart or end) and its caller acts on it.

invariant: one caller at a time (the node's loop, or the head's loop); nothing here locks.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any, Callable, Mapping, Optional

from purerun.core import placement_groups as pgs
from purerun.core.scheduler import RESOURCE_UNIT

__all__ = [
    "ControlStore",
    "REMOTE_METHODS",
    "HEARTBEAT_INTERVAL_S",
    "NODE_DEATH_TIMEOUT_S",
    "MAX_DEAD_NODES_KEPT",
    "JOB_ID_SIZE",
    "ACTOR_STATES",
    "NODE_LOAD",
    "MAX_REMOVED_GROUPS_KEPT",
    "worker_id",
]

# How often a node reports to the head (and how often the head should call check_nodes):
# cheap enough to be noise on the wire, frequent enough that a death is seen well within 5 s.
HEARTBEAT_INTERVAL_S = 0.5
# A node silent for longer than this is declared dead. The multi-host spec asks for death to
# be declared within 5 s: 3 s of silence plus at most one check interval is 3.5 s. It is six
# missed heartbeats, so a garbage-collection pause or one slow loop turn is not a death.
NODE_DEATH_TIMEOUT_S = 3.0
# Dead nodes still listed by nodes() (Alive: False), as Ray keeps its recent dead nodes;
# older ones are forgotten so that a cluster whose nodes come and go stays bounded in memory.
MAX_DEAD_NODES_KEPT = 1000
# A job id is a 4-byte little-endian counter, as Ray's JobID; one store issues them all, so
# they are unique across the cluster.
JOB_ID_SIZE = 4
# Ray's GCS rejects KV keys starting with this (its storage flattens a namespace into a key
# prefix of this form); rejected here too so that a program behaves the same on both.
KV_RESERVED_PREFIX = b"@namespace_"
# An actor's life as the store records it. DEAD is final: the actor is forgotten, its name freed.
ACTOR_STATES = ("PENDING", "ALIVE", "RESTARTING", "DEAD")
# Removed placement groups still listed by placement_group_table (state REMOVED), as Ray
# keeps them for a while; older ones are forgotten so the table stays bounded.
MAX_REMOVED_GROUPS_KEPT = 1000
# A worker id is 16 bytes: the node's number (issued by the store, never reused) and then the
# node's own worker counter. Two nodes therefore never make the same worker id.
WORKER_ID_SIZE = 16
NODE_NUMBER_SIZE = 4
# What a node may report of its load with each heartbeat (``heartbeat(load=...)``), and the
# key ``stats()`` sums it under over the live nodes. The store's own "actors" and "objects"
# count its tables (registered actors, objects with a known location), which is not what is
# running, so the nodes' counts get keys of their own.
NODE_LOAD = {
    "tasks": "tasks",                            # tasks queued or running on the node
    "actors": "actors_on_nodes",                 # actor workers alive there
    "objects": "objects_on_nodes",               # objects in its object store
    "object_store_bytes": "object_store_bytes",  # bytes those objects take there
}


def worker_id(node_number: int, local_id: int) -> bytes:
    """The cluster-unique id of worker ``local_id`` of the node numbered ``node_number``.

    Args:
        node_number: what ``ControlStore.register_node`` returned to the worker's node (≥ 1).
        local_id: the node's own worker counter (≥ 0; 0 can stand for a driver).

    Returns:
        ``WORKER_ID_SIZE`` bytes: ``node_number`` (4 bytes, little-endian), then ``local_id``
        (12 bytes, little-endian). No two (node_number, local_id) pairs share one.

    Raises:
        OverflowError: a number too large for its field (or negative).
    """
    return (node_number.to_bytes(NODE_NUMBER_SIZE, "little")
            + local_id.to_bytes(WORKER_ID_SIZE - NODE_NUMBER_SIZE, "little"))


class _Job:
    __slots__ = ("job_id", "start_ms", "end_ms", "is_dead", "driver_ip", "driver_pid",
                 "node_id", "entrypoint", "metadata")

    def __init__(self, job_id, start_ms, driver_ip, driver_pid, node_id, entrypoint):
        self.job_id = job_id
        self.start_ms = start_ms
        self.end_ms = 0                 # 0 while the job runs, as in Ray's job table
        self.is_dead = False
        self.driver_ip = driver_ip
        self.driver_pid = driver_pid
        self.node_id = node_id          # the node the driver is attached to, if known
        self.entrypoint = entrypoint
        self.metadata = {}              # JobConfig(metadata=...): str to str


class _Actor:
    __slots__ = ("actor_id", "name", "namespace", "job_id", "meta", "detached", "state",
                 "node_id")

    def __init__(self, actor_id, name, namespace, job_id, meta, detached):
        self.actor_id = actor_id
        self.name = name                # None for an actor without a name
        self.namespace = namespace
        self.job_id = job_id            # the job that created it
        self.meta = meta                # opaque to the store
        self.detached = detached
        self.state = "PENDING"
        self.node_id = None             # where it lives (or is being placed), if known


class _Node:
    __slots__ = ("node_id", "number", "address", "node_ip", "hostname", "resources",
                 "available", "labels", "last_heartbeat", "alive", "fallout", "load",
                 "bundles_version")

    def __init__(self, node_id, number):
        self.node_id = node_id
        self.number = number
        self.alive = True
        self.fallout = None             # once dead: what died with it (see node_dead)
        self.load = {}                  # its last heartbeat's load (NODE_LOAD keys)
        self.bundles_version = 0        # changes whenever the bundles assigned to it do


class _Group:
    """A placement group. ``nodes[i]`` is where bundle i goes (None: not placed yet) and
    ``reserved[i]`` whether that node has reserved it; CREATED once all are reserved."""

    __slots__ = ("group_id", "name", "namespace", "job_id", "detached", "bundles",
                 "strategy", "state", "nodes", "reserved", "created_at", "placed_at",
                 "attempts", "constraints")

    def __init__(self, group_id, name, namespace, job_id, detached, bundles, strategy, now,
                 constraints):
        self.group_id = group_id
        self.name = name
        self.namespace = namespace
        self.job_id = job_id
        self.detached = detached
        self.bundles = bundles
        self.strategy = strategy
        self.state = "PENDING"
        self.nodes = [None] * len(bundles)
        self.reserved = [False] * len(bundles)
        self.created_at = now
        self.placed_at = None
        self.attempts = 0
        self.constraints = constraints  # per bundle: label constraints its node must meet


def _units(resources: Mapping[str, float], what: str, clamp: bool = False) -> dict:
    """Resource amounts as integer units, so that sums over nodes are exact.

    With ``clamp``, a negative amount counts as 0: a node lending the CPU of workers blocked in
    ``get`` may be overcommitted, and its debt must not hide other nodes' free CPUs.
    """
    if not isinstance(resources, Mapping):
        raise TypeError(f"{what} must be a dict of resource name to amount, got "
                        f"{type(resources).__name__}")
    units = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(
                amount, (int, float)) or not math.isfinite(amount) or (amount < 0 and not clamp):
            raise ValueError(f"{what} must map resource names (str) to finite amounts >= 0, got "
                             f"{name!r}: {amount!r}")
        units[name] = max(0, round(amount * RESOURCE_UNIT))
    return units


def _load(load) -> dict:
    if not isinstance(load, Mapping):
        raise TypeError(f"load must be a dict of counts, got {type(load).__name__}")
    counts = {}
    for name, count in load.items():
        if name not in NODE_LOAD:
            raise ValueError(f"load reports {name!r}, which is not one of "
                             f"{', '.join(NODE_LOAD)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"load[{name!r}] must be an int >= 0, got {count!r}")
        counts[name] = count
    return counts


def _kv_bytes(value, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes):
        raise TypeError(f"KV {what} must be bytes or str, got {type(value).__name__}")
    return value


def _kv_key(key, what: str = "key") -> bytes:
    key = _kv_bytes(key, what)
    if key.startswith(KV_RESERVED_PREFIX):
        raise ValueError(f"KV {what} can't start with {KV_RESERVED_PREFIX.decode()}, got {key!r}")
    return key


def _kv_namespace(namespace) -> bytes:
    # None and the empty namespace are one and the same, as in Ray.
    return b"" if namespace is None else _kv_bytes(namespace, "namespace")


class ControlStore:
    """The cluster-wide tables, served by a lone node or by the head (see the module docstring).

    Args:
        clock: monotonic seconds, read for heartbeats (default ``time.monotonic``).
        wall_clock: seconds since the epoch, read for job start and end times
            (default ``time.time``).
        node_death_timeout_s: how long a node may stay silent before ``check_nodes`` declares
            it dead (default ``NODE_DEATH_TIMEOUT_S``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 node_death_timeout_s: float = NODE_DEATH_TIMEOUT_S):
        self._clock = clock
        self._wall_clock = wall_clock
        self._node_death_timeout_s = node_death_timeout_s
        #: the number of the next job id to issue; ids are never reused
        self._next_job = 1
        #: job id -> _Job, every job since the store started, in start order (Ray's job table)
        self._jobs: dict[bytes, _Job] = {}
        #: job id -> namespace the driver chose; a job with none uses "anonymous:<job hex>"
        self._job_namespaces: dict[bytes, str] = {}
        #: KV namespace (b"" for none) -> {key: value}; invariant: no inner dict is empty
        self._kv: dict[bytes, dict[bytes, bytes]] = {}
        #: function key -> pickled function, as first exported
        self._functions: dict[Any, bytes] = {}
        #: actor id -> _Actor, every registered actor not dead
        self._actors: dict[bytes, _Actor] = {}
        #: (namespace, name) -> id of the actor holding that name;
        #: invariant: that actor is in _actors, with this name and namespace
        self._names: dict[tuple[str, str], bytes] = {}
        #: node id -> _Node: alive nodes and the last MAX_DEAD_NODES_KEPT dead ones,
        #: in registration order
        self._nodes: dict[bytes, _Node] = {}
        #: ids of the dead nodes still in _nodes, oldest death first
        self._dead_nodes: collections.deque[bytes] = collections.deque()
        #: the number the next new node gets (for worker ids); never reused
        self._next_node_number = 1
        #: object id -> ids of the nodes holding a copy;
        #: invariant: never an empty set, and every node in it is alive
        self._locations: dict[bytes, set[bytes]] = {}
        #: node id -> ids of the objects with a copy there; invariant: the mirror of _locations
        self._objects_on: dict[bytes, set[bytes]] = {}
        #: group id -> _Group, every placement group not removed, in creation order
        self._groups: dict[bytes, _Group] = {}
        #: (namespace, name) -> id of the group holding that name
        self._group_names: dict[tuple[str, str], bytes] = {}
        #: the last MAX_REMOVED_GROUPS_KEPT removed groups, for placement_group_table
        self._removed_groups: collections.OrderedDict[bytes, _Group] = collections.OrderedDict()

    # ── jobs ────────────────────────────────────────────────────────────────────────────────

    def new_job_id(self, driver_ip: str = "", driver_pid: int = 0,
                   node_id: Optional[bytes] = None, entrypoint: str = "") -> bytes:
        """Start a job: issue its id and enter it in the job table.

        Args:
            driver_ip: the driver's IP address.
            driver_pid: the driver's process id.
            node_id: the node the driver is attached to; when that node dies, the job ends.
            entrypoint: the driver's command line, for display.

        Returns:
            The job id: ``JOB_ID_SIZE`` bytes, little-endian, 1 for the first job. Unique in
            the cluster, never reused.
        """
        job_id = self._next_job.to_bytes(JOB_ID_SIZE, "little")
        self._next_job += 1
        self._jobs[job_id] = _Job(job_id, self._now_ms(), driver_ip, driver_pid, node_id,
                                  entrypoint)
        return job_id

    def set_job_metadata(self, job_id: bytes, metadata: Mapping[str, str]) -> None:
        """Record a job's metadata (its ``JobConfig(metadata=...)``), replacing any before.

        Raises:
            TypeError: metadata is not a dict of str to str.
            ValueError: the store never issued ``job_id``.
        """
        if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("job metadata must be a dict of str to str")
        job = self._jobs.get(job_id)
        if job is None:
            raise ValueError(f"no job {job_id.hex()}")
        job.metadata = dict(metadata)

    def job_finished(self, job_id: bytes) -> list[bytes]:
        """Record that a job's driver has gone (exited, disconnected or lost with its node).

        The job stays in the table, dead, with its end time. Its detached actors live on.

        Returns:
            The ids of the job's actors that are not detached and not dead, which the caller
            must now end (and then report DEAD with ``actor_state``). Empty if the job is
            unknown or had already finished.
        """
        job = self._jobs.get(job_id)
        if job is None or job.is_dead:
            return []
        job.is_dead = True
        job.end_ms = self._now_ms()
        for group in [g for g in self._groups.values()
                      if g.job_id == job_id and not g.detached]:
            self.remove_placement_group(group.group_id)
        return [actor.actor_id for actor in self._actors.values()
                if actor.job_id == job_id and not actor.detached]

    def jobs(self) -> list[dict]:
        """Every job, in start order, in the shape of Ray's job table.

        Returns:
            One dict per job: ``JobID`` (hex), ``DriverIPAddress``, ``DriverPid``,
            ``DriverNodeID`` (hex, "" if unknown), ``StartTime`` and ``EndTime`` (milliseconds
            since the epoch; ``EndTime`` is 0 while the job runs), ``IsDead``, ``Entrypoint``,
            ``Metadata`` (str to str).
        """
        return [self._job_dict(job) for job in self._jobs.values()]

    def job_info(self, job_id: bytes) -> Optional[dict]:
        """One job's entry, as in ``jobs()``, or None if the store never issued that id."""
        job = self._jobs.get(job_id)
        return None if job is None else self._job_dict(job)

    def _job_dict(self, job: _Job) -> dict:
        return {"JobID": job.job_id.hex(), "DriverIPAddress": job.driver_ip,
                "DriverPid": job.driver_pid,
                "DriverNodeID": job.node_id.hex() if job.node_id is not None else "",
                "StartTime": job.start_ms, "EndTime": job.end_ms, "IsDead": job.is_dead,
                "Entrypoint": job.entrypoint, "Metadata": dict(job.metadata)}

    def _now_ms(self) -> int:
        return int(self._wall_clock() * 1000)

    # ── namespaces ──────────────────────────────────────────────────────────────────────────

    def set_job_namespace(self, job_id: bytes, namespace: Optional[str]) -> None:
        """Set the namespace a job's named actors go to (``init(namespace=...)``).

        Args:
            job_id: the job.
            namespace: a name, or None for the job's own anonymous namespace.

        Raises:
            TypeError: ``namespace`` is neither None nor a str.
        """
        if namespace is None:
            self._job_namespaces.pop(job_id, None)
            return
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be None or a string, got {type(namespace).__name__}")
        self._job_namespaces[job_id] = namespace

    def namespace_of(self, namespace: Optional[str], job_id: bytes) -> str:
        """The namespace a name given by job ``job_id`` refers to.

        Returns:
            ``namespace`` itself if given; else the job's namespace (``set_job_namespace``);
            else the job's anonymous namespace ``anonymous:<job id hex>``, which no other job
            sees.
        """
        if namespace is not None:
            return namespace
        return self._job_namespaces.get(job_id) or f"anonymous:{job_id.hex()}"

    # ── KV (Ray's internal KV) ──────────────────────────────────────────────────────────────

    def kv_put(self, key, value, overwrite: bool = True, namespace=None) -> bool:
        """Associate ``value`` with ``key`` in ``namespace``.

        Args:
            key: bytes, or a str (encoded as UTF-8).
            value: bytes, or a str (encoded as UTF-8).
            overwrite: replace the value of a key that already has one; if False, such a key
                keeps its value.
            namespace: bytes, str or None (the default namespace). Namespaces do not see each
                other's keys.

        Returns:
            True if the key was newly added, False if it already existed (whether or not its
            value was replaced).

        Raises:
            TypeError: a key, value or namespace that is not bytes or str.
            ValueError: a key starting with ``@namespace_`` (reserved, as in Ray).
        """
        key = _kv_key(key)
        value = _kv_bytes(value, "value")
        table = self._kv.setdefault(_kv_namespace(namespace), {})
        if key in table:
            if overwrite:
                table[key] = value
            return False
        table[key] = value
        return True

    def kv_get(self, key, namespace=None) -> Optional[bytes]:
        """The value of ``key`` in ``namespace``, or None if it has none."""
        table = self._kv.get(_kv_namespace(namespace))
        key = _kv_key(key)
        return None if table is None else table.get(key)

    def kv_exists(self, key, namespace=None) -> bool:
        """Whether ``key`` has a value in ``namespace``."""
        table = self._kv.get(_kv_namespace(namespace))
        key = _kv_key(key)
        return table is not None and key in table

    def kv_del(self, key, del_by_prefix: bool = False, namespace=None) -> int:
        """Delete ``key`` (or, with ``del_by_prefix``, every key starting with it).

        Returns:
            How many keys were deleted.
        """
        ns = _kv_namespace(namespace)
        key = _kv_key(key)
        table = self._kv.get(ns)
        if table is None:
            return 0
        if del_by_prefix:
            doomed = [k for k in table if k.startswith(key)]
        else:
            doomed = [key] if key in table else []
        for k in doomed:
            del table[k]
        if not table:
            del self._kv[ns]
        return len(doomed)

    def kv_keys(self, prefix, namespace=None) -> list[bytes]:
        """Every key in ``namespace`` starting with ``prefix`` (b"" for all), sorted."""
        table = self._kv.get(_kv_namespace(namespace))
        prefix = _kv_key(prefix, "prefix")
        if table is None:
            return []
        # A scan: prefix queries are rare (listing, cleanup), puts and gets are the hot path.
        return sorted(k for k in table if k.startswith(prefix))

    # ── function table ──────────────────────────────────────────────────────────────────────

    def export_function(self, key, pickled: bytes) -> bool:
        """Enter a pickled function or class under ``key``.

        A key names its bytes (it includes a hash of them), so a second export of a key is a
        no-op.

        Returns:
            True if the key was new.
        """
        if key in self._functions:
            return False
        self._functions[key] = pickled
        return True

    def get_function(self, key) -> Optional[bytes]:
        """The pickled function exported under ``key``, or None."""
        return self._functions.get(key)

    # ── actors ──────────────────────────────────────────────────────────────────────────────

    def register_actor(self, name: Optional[str], namespace: Optional[str], job_id: bytes,
                       actor_id: bytes, meta: Any, get_if_exists: bool = False,
                       detached: bool = False) -> Optional[tuple[bytes, Any]]:
        """Enter an actor (state PENDING), and claim its name if it has one.

        Called before the actor's creation is submitted, so that a taken name fails in the
        caller.

        Args:
            name: the actor's name, or None for an actor without one.
            namespace: the namespace given with the name, or None for the job's (see
                ``namespace_of``).
            job_id: the job creating the actor.
            actor_id: the new actor's id.
            meta: whatever the caller needs to make a handle; kept and returned as is.
            get_if_exists: if the name is taken, answer with the actor holding it instead of
                failing.
            detached: the actor outlives its job.

        Returns:
            None if the actor was entered (or already was: a repeated request), or
            ``(actor_id, meta)`` of the live actor already holding the name when
            ``get_if_exists``.

        Raises:
            ValueError: the name is taken by a live actor and not ``get_if_exists``; or
                ``actor_id`` is already entered under another name.
            TypeError: a name that is neither None nor a str.
        """
        if name is not None and not isinstance(name, str):
            raise TypeError(f"actor name must be None or a string, got {type(name).__name__}")
        namespace = self.namespace_of(namespace, job_id)
        known = self._actors.get(actor_id)
        if known is not None:
            if known.name == name and known.namespace == namespace:
                return None
            raise ValueError(f"actor {actor_id.hex()} is already registered as "
                             f"{known.name!r} (namespace={known.namespace})")
        if name is not None:
            holder_id = self._names.get((namespace, name))
            if holder_id is not None:
                if not get_if_exists:
                    raise ValueError(f"The name {name} (namespace={namespace}) is already "
                                     "taken. Please use a different name or get the existing "
                                     f"actor using purerun.get_actor('{name}', "
                                     f"namespace='{namespace}').")
                return holder_id, self._actors[holder_id].meta
            self._names[(namespace, name)] = actor_id
        self._actors[actor_id] = _Actor(actor_id, name, namespace, job_id, meta, detached)
        return None

    def get_named_actor(self, name: str, namespace: Optional[str],
                        job_id: bytes) -> Optional[tuple[bytes, Any]]:
        """The live actor named ``name``, as job ``job_id`` sees it.

        Returns:
            ``(actor_id, meta)``, or None if no live actor has that name in that namespace.
        """
        actor_id = self._names.get((self.namespace_of(namespace, job_id), name))
        if actor_id is None:
            return None
        return actor_id, self._actors[actor_id].meta

    def actor_state(self, actor_id: bytes, state: str, node_id: Optional[bytes] = None) -> bool:
        """Record an actor's new state, and where it lives.

        Args:
            actor_id: a registered actor.
            state: one of ``ACTOR_STATES``. DEAD is final: the actor is forgotten and its name
                is free for a new actor.
            node_id: the node it lives on (or is being placed on) now; None leaves the last
                one recorded.

        Returns:
            True if recorded; False if the actor is unknown (never registered, or already dead).

        Raises:
            ValueError: an unknown state.
        """
        if state not in ACTOR_STATES:
            raise ValueError(f"actor state must be one of {', '.join(ACTOR_STATES)}, "
                             f"got {state!r}")
        actor = self._actors.get(actor_id)
        if actor is None:
            return False
        if state == "DEAD":
            del self._actors[actor_id]
            if actor.name is not None:
                self._names.pop((actor.namespace, actor.name), None)
            return True
        actor.state = state
        if node_id is not None:
            actor.node_id = node_id
        return True

    def actor_info(self, actor_id: bytes) -> Optional[dict]:
        """What the store knows of a live actor, or None if it is unknown or dead.

        Returns:
            ``{"actor_id", "name", "namespace", "job_id", "detached", "state", "node_id"}``
            (ids as bytes; ``name`` and ``node_id`` may be None). Not ``meta``.
        """
        actor = self._actors.get(actor_id)
        if actor is None:
            return None
        return {"actor_id": actor.actor_id, "name": actor.name, "namespace": actor.namespace,
                "job_id": actor.job_id, "detached": actor.detached, "state": actor.state,
                "node_id": actor.node_id}

    def actor_table(self) -> list[dict]:
        """Every live actor the store knows, named or not, in registration order.

        Returns:
            One dict per actor, as ``actor_info`` gives it.
        """
        return [self.actor_info(actor_id) for actor_id in self._actors]

    def list_named_actors(self, all_namespaces: bool = False, namespace: Optional[str] = None,
                          job_id: Optional[bytes] = None) -> list:
        """The names of the live named actors, like ``ray.util.list_named_actors``.

        Args:
            all_namespaces: list every namespace's actors.
            namespace: otherwise, the namespace to list (None: job ``job_id``'s).
            job_id: the asking job, to resolve its namespace when ``namespace`` is None.

        Returns:
            Sorted names (str) in that namespace; with ``all_namespaces``, dicts
            ``{"name": ..., "namespace": ...}`` sorted by namespace, then name.

        Raises:
            ValueError: neither ``all_namespaces``, a namespace nor a job id.
        """
        if all_namespaces:
            return [{"name": name, "namespace": ns} for ns, name in sorted(self._names)]
        if namespace is None:
            if job_id is None:
                raise ValueError("list_named_actors needs a namespace or a job id, "
                                 "or all_namespaces=True")
            namespace = self.namespace_of(None, job_id)
        return sorted(name for ns, name in self._names if ns == namespace)

    # ── nodes ───────────────────────────────────────────────────────────────────────────────

    def register_node(self, node_id: bytes, address: str, resources: Mapping[str, float],
                      labels: Optional[Mapping[str, str]] = None,
                      hostname: Optional[str] = None, node_ip: str = "127.0.0.1") -> int:
        """Enter a node (or refresh a live node's entry); this counts as its first heartbeat.

        Args:
            node_id: the node's id (bytes).
            address: where the node listens (a unix socket path, or ``host:port``).
            resources: its total resources, name to amount.
            labels: its labels (str to str).
            hostname: its host's name (default: ``node_ip``).
            node_ip: its IP address.

        Returns:
            The node's number, ≥ 1: unique in the cluster, never reused, the same when a live
            node registers again. Its worker ids are ``worker_id(number, ...)``.

        Raises:
            ValueError: the node was declared dead (a node that comes back must register
                under a new id), or bad resources.
        """
        units = _units(resources, "resources")
        node = self._nodes.get(node_id)
        if node is not None and not node.alive:
            raise ValueError(f"node {node_id.hex()} was declared dead; a node that comes back "
                             "must register under a new node id")
        if node is None:
            node = self._nodes[node_id] = _Node(node_id, self._next_node_number)
            self._next_node_number += 1
        node.address = address
        node.node_ip = node_ip
        node.hostname = hostname if hostname is not None else node_ip
        node.resources = units
        node.available = dict(units)
        node.labels = dict(labels or {})
        node.load = {}
        node.last_heartbeat = self._clock()
        self._place_groups()   # a node that joins may fit groups that waited
        return node.number

    def heartbeat(self, node_id: bytes,
                  available_resources: Optional[Mapping[str, float]] = None,
                  load: Optional[Mapping[str, int]] = None) -> bool:
        """A node says it is alive, and optionally what it has free and how busy it is.

        Args:
            node_id: the node.
            available_resources: its free resources (name to amount; a resource left out has
                none free), or None to keep the last report.
            load: counts of what it holds now, keys from ``NODE_LOAD`` (``tasks``,
                ``actors``, ``objects``, ``object_store_bytes``; a key left out counts 0),
                or None to keep the last report. ``stats()`` sums them over the live nodes.

        Returns:
            True; False if the node is unknown or was declared dead, in which case it should
            stop (and a new node may register under a new id).

        Raises:
            ValueError: a load key not in ``NODE_LOAD``, or a count that is not an int >= 0;
                bad available resources.
            TypeError: ``load`` or ``available_resources`` is not a dict.
        """
        node = self._nodes.get(node_id)
        if node is None or not node.alive:
            return False
        # Both checked before either is kept: a bad report changes nothing.
        available = (None if available_resources is None
                     else _units(available_resources, "available_resources", clamp=True))
        counts = None if load is None else _load(load)
        if available is not None:
            node.available = available
        if counts is not None:
            node.load = counts
        node.last_heartbeat = self._clock()
        return True

    def check_nodes(self) -> list[bytes]:
        """Declare dead every live node silent for more than the death timeout.

        To be called every ``HEARTBEAT_INTERVAL_S`` or so by whoever serves the store to
        several nodes. ``node_dead(node_id)`` then tells what died with each.

        Returns:
            The ids of the nodes declared dead by this call, in registration order.
        """
        now = self._clock()
        silent = [node for node in self._nodes.values()
                  if node.alive and now - node.last_heartbeat > self._node_death_timeout_s]
        for node in silent:
            self._declare_dead(node)
        return [node.node_id for node in silent]

    def node_dead(self, node_id: bytes) -> Optional[dict]:
        """Declare a node dead (if it is not yet), and tell what died with it.

        Asking again about a dead node gives the same answer, as long as it is listed.

        Returns:
            None if the node is unknown, else::

                {"node_id": node_id,
                 "objects_lost": [object ids whose last copy was there],
                 "actors": [ids of live actors recorded there: restart or end them],
                 "jobs_finished": [jobs whose driver was attached there, now finished],
                 "job_actors": [actors of those jobs to end, as job_finished returns]}

            Lost objects are gone from the object directory. The actors are not changed:
            the caller reports what becomes of them with ``actor_state``.
        """
        node = self._nodes.get(node_id)
        if node is None:
            return None
        if node.alive:
            self._declare_dead(node)
        return node.fallout

    def _declare_dead(self, node: _Node) -> None:
        node_id = node.node_id
        node.alive = False
        lost = []
        for object_id in self._objects_on.pop(node_id, ()):
            where = self._locations[object_id]
            where.discard(node_id)
            if not where:
                del self._locations[object_id]
                lost.append(object_id)
        # Scans of the actor and job tables: a node's death is rare, and indexes would have
        # to be kept right on every actor move and job start.
        actors = [actor.actor_id for actor in self._actors.values() if actor.node_id == node_id]
        jobs = [job.job_id for job in self._jobs.values()
                if job.node_id == node_id and not job.is_dead]
        job_actors = []
        for job_id in jobs:
            job_actors += self.job_finished(job_id)
        node.fallout = {"node_id": node_id, "objects_lost": sorted(lost), "actors": actors,
                        "jobs_finished": jobs, "job_actors": job_actors}
        # Its bundles are placed again, on the nodes left (Ray reschedules them too).
        for group in self._groups.values():
            for i, where in enumerate(group.nodes):
                if where == node_id:
                    group.nodes[i] = None
                    group.reserved[i] = False
                    group.state = "RESCHEDULING"
        self._place_groups()
        self._dead_nodes.append(node_id)
        while len(self._dead_nodes) > MAX_DEAD_NODES_KEPT:
            del self._nodes[self._dead_nodes.popleft()]

    def nodes(self) -> list[dict]:
        """Every node, live and recently dead, in registration order, as ``ray.nodes()``.

        Returns:
            One dict per node: ``NodeID`` (hex), ``Alive`` and ``alive``,
            ``NodeManagerAddress`` and ``NodeName`` (its IP), ``NodeManagerHostname``,
            ``Resources`` (its totals; ``{}`` once dead, as Ray), ``ObjectStoreSocketName`` and
            ``RayletSocketName`` (its address), ``MetricsExportPort`` (0), ``Labels``.
        """
        return [{
            "NodeID": node.node_id.hex(), "Alive": node.alive,
            "NodeManagerAddress": node.node_ip, "NodeManagerHostname": node.hostname,
            "NodeName": node.node_ip,
            "Resources": _amounts(node.resources) if node.alive else {},
            "alive": node.alive,
            "ObjectStoreSocketName": node.address, "RayletSocketName": node.address,
            "MetricsExportPort": 0, "Labels": dict(node.labels),
        } for node in self._nodes.values()]

    def node_table(self) -> list[dict]:
        """Every node, live and recently dead, in registration order, compactly: what nodes
        read to decide where work goes (``nodes()`` is the same table in Ray's shape).

        Returns:
            One dict per node::

                {"node_id": bytes, "number": int, "address": str, "node_ip": str,
                 "hostname": str, "alive": bool,
                 "resources": {name: total}, "available": {name: free at its last report},
                 "labels": {str: str}, "load": {NODE_LOAD key: count at its last report},
                 "bundles_version": int}

            ``bundles_version`` changes whenever the placement-group bundles assigned to
            the node change: the node then reads them with ``bundles_on``.

            Unlike ``nodes()``, a dead node keeps its resources (read ``alive``). A resource
            with nothing free is left out of ``available``.
        """
        return [{
            "node_id": node.node_id, "number": node.number, "address": node.address,
            "node_ip": node.node_ip, "hostname": node.hostname, "alive": node.alive,
            "resources": _amounts(node.resources),
            "available": _amounts({name: units for name, units in node.available.items()
                                   if units > 0}),
            "labels": dict(node.labels), "load": dict(node.load),
            "bundles_version": node.bundles_version,
        } for node in self._nodes.values()]

    def cluster_resources(self) -> dict[str, float]:
        """The total resources of the live nodes, summed, as ``ray.cluster_resources()``;
        with, as in Ray, the resources reserved placement-group bundles offer
        (``CPU_group_<id>``, ``CPU_group_<index>_<id>``, ...)."""
        tables = [node.resources for node in self._nodes.values() if node.alive]
        for group in self._groups.values():
            group_hex = group.group_id.hex()
            for i, bundle in enumerate(group.bundles):
                if group.reserved[i]:
                    tables.append(_units(pgs.bundle_resources(group_hex, i, bundle), "bundle"))
        return _amounts(_sum(tables))

    def available_resources(self) -> dict[str, float]:
        """The free resources last reported by the live nodes, summed.

        As ``ray.available_resources()``, a resource with nothing free is left out.
        """
        total = _sum(node.available for node in self._nodes.values() if node.alive)
        return _amounts({name: units for name, units in total.items() if units > 0})

    # ── placement groups ────────────────────────────────────────────────────────────────────

    def create_placement_group(self, group_id: bytes, bundles: list, strategy: str,
                               name: str = "", job_id: bytes = b"", detached: bool = False,
                               bundle_labels: Optional[list] = None) -> dict:
        """Enter a placement group and place its bundles on nodes if they fit.

        Bundles are placed against what each live node has left once the bundles of other
        groups are taken off its totals (see ``placement_groups.place_bundles``), nodes with
        the most CPU free at their last heartbeat first; each node then reserves its bundles
        as soon as their resources are free, and tells the store with ``bundle_reserved``. A group that does not fit stays PENDING and is tried again
        whenever a node joins, a group is removed or a node dies.

        Args:
            group_id: the new group's id (bytes).
            bundles: the bundles, each a dict of resource name to amount.
            strategy: "PACK", "SPREAD", "STRICT_PACK" or "STRICT_SPREAD".
            name: "" for a group without a name; else unique in the job's namespace.
            job_id: the job creating it; the group is removed when that job finishes,
                unless ``detached``.
            detached: the group outlives its job.
            bundle_labels: None, or per bundle the label constraints ``(key, operator,
                values)`` its node must meet (see core/placement_groups.py).

        Returns:
            ``{"state": "PENDING" | "CREATED", "nodes": [node id or None per bundle],
            "infeasible": bool}``; ``infeasible`` says that no set of live nodes could hold
            the group even if every other group were removed.

        Raises:
            ValueError: an unknown strategy, no bundles, bad amounts, the id already in
                use, or the name taken.
        """
        if strategy not in pgs.STRATEGIES:
            raise ValueError(f"Invalid placement group strategy {strategy!r}; it must be "
                             f"one of {', '.join(pgs.STRATEGIES)}")
        if not bundles:
            raise ValueError("A placement group needs at least one bundle")
        bundles = [_amounts(_units(bundle, "a bundle")) for bundle in bundles]
        constraints = [tuple(tuple(c) for c in b) for b in bundle_labels or [()] * len(bundles)]
        if len(constraints) != len(bundles):
            raise ValueError("bundle_labels must give one set of constraints per bundle")
        if group_id in self._groups or group_id in self._removed_groups:
            raise ValueError(f"placement group {group_id.hex()} already exists")
        namespace = self.namespace_of(None, job_id) if job_id else ""
        if name:
            if (namespace, name) in self._group_names:
                raise ValueError(f"Failed to create placement group '{group_id.hex()}' "
                                 f"because name '{name}' already exists.")
            self._group_names[(namespace, name)] = group_id
        group = self._groups[group_id] = _Group(group_id, name, namespace, job_id, detached,
                                                bundles, strategy, self._clock(), constraints)
        self._place_groups()
        live = [node for node in self._nodes.values() if node.alive]
        infeasible = None in group.nodes and pgs.place_bundles(
            bundles, strategy, {node.node_id: _amounts(node.resources) for node in live},
            {node.node_id: node.labels for node in live}, constraints) is None
        return {"state": group.state, "nodes": list(group.nodes), "infeasible": infeasible}

    def remove_placement_group(self, group_id: bytes) -> list[bytes]:
        """Remove a group: its bundles are to be returned by the nodes that hold them.

        Returns:
            The ids of the nodes that had bundles of it (they read ``bundles_on`` again);
            empty if the group is unknown or already removed.
        """
        group = self._groups.pop(group_id, None)
        if group is None:
            return []
        group.state = "REMOVED"
        if group.name:
            self._group_names.pop((group.namespace, group.name), None)
        self._removed_groups[group_id] = group
        while len(self._removed_groups) > MAX_REMOVED_GROUPS_KEPT:
            self._removed_groups.popitem(last=False)
        nodes = []
        for node_id in group.nodes:
            if node_id is not None and node_id not in nodes:
                nodes.append(node_id)
                self._bump(node_id)
        self._place_groups()   # what it held may fit groups that waited
        return nodes

    def bundle_reserved(self, group_id: bytes, index: int, node_id: bytes) -> bool:
        """A node has reserved bundle ``index`` of the group, as assigned to it.

        Returns:
            True if this made the group CREATED (every bundle reserved).
        """
        group = self._groups.get(group_id)
        if group is None or not 0 <= index < len(group.nodes) or \
                group.nodes[index] != node_id or group.reserved[index]:
            return False
        group.reserved[index] = True
        if all(group.reserved):
            group.state = "CREATED"
            group.placed_at = self._clock()
            return True
        return False

    def bundles_on(self, node_id: bytes) -> list[tuple]:
        """The bundles assigned to a node: ``[(group id, index, bundle), ...]``, for the
        groups not removed, in creation order."""
        return [(group.group_id, i, dict(group.bundles[i]))
                for group in self._groups.values()
                for i, where in enumerate(group.nodes) if where == node_id]

    def placement_group_info(self, group_id: bytes) -> Optional[dict]:
        """What a node needs to place work in a group.

        Returns:
            None if the group is unknown, else ``{"state": "PENDING" | "RESCHEDULING" |
            "CREATED" | "REMOVED", "nodes": [node id or None per bundle],
            "bundles": [bundle dicts], "strategy": str}``.
        """
        group = self._groups.get(group_id) or self._removed_groups.get(group_id)
        if group is None:
            return None
        return {"state": group.state, "nodes": list(group.nodes),
                "bundles": [dict(b) for b in group.bundles], "strategy": group.strategy}

    def get_placement_group(self, name: str, job_id: bytes = b"") -> Optional[tuple]:
        """The live group named ``name`` in job ``job_id``'s namespace.

        Returns:
            ``(group id, bundles, strategy)``, or None if no group has that name there.
        """
        namespace = self.namespace_of(None, job_id) if job_id else ""
        group_id = self._group_names.get((namespace, name))
        if group_id is None:
            return None
        group = self._groups[group_id]
        return group_id, [dict(b) for b in group.bundles], group.strategy

    def placement_group_table(self, group_id: Optional[bytes] = None) -> dict:
        """Placement groups in the shape of ``ray.util.placement_group_table()``.

        Args:
            group_id: one group, or None for every group (removed ones included, as long
                as they are kept).

        Returns:
            For one group: ``{"placement_group_id": hex, "name", "bundles": {index:
            bundle}, "bundles_to_node_id": {index: node hex} (placed bundles), "strategy",
            "state", "stats": {"end_to_end_creation_latency_ms", "scheduling_latency_ms",
            "scheduling_attempt", "highest_retry_delay_ms", "scheduling_state"}}``; an
            unknown id gives the same keys with empty values and state "". For all: group
            id hex -> that dict.
        """
        if group_id is not None:
            group = self._groups.get(group_id) or self._removed_groups.get(group_id)
            if group is None:
                return {"placement_group_id": group_id.hex(), "name": "", "bundles": {},
                        "bundles_to_node_id": {}, "strategy": "", "state": "", "stats": {}}
            return self._group_dict(group)
        groups = list(self._removed_groups.values()) + list(self._groups.values())
        return {group.group_id.hex(): self._group_dict(group) for group in groups}

    def _group_dict(self, group: _Group) -> dict:
        latency = 0.0 if group.placed_at is None else \
            (group.placed_at - group.created_at) * 1000.0
        if group.state == "CREATED":
            scheduling_state = "FINISHED"
        elif group.state == "REMOVED":
            scheduling_state = "REMOVED"
        else:
            scheduling_state = "NO_RESOURCES" if group.attempts else "QUEUED"
        return {
            "placement_group_id": group.group_id.hex(), "name": group.name,
            "bundles": {i: dict(b) for i, b in enumerate(group.bundles)},
            "bundles_to_node_id": {i: node_id.hex() for i, node_id in enumerate(group.nodes)
                                   if node_id is not None},
            "strategy": group.strategy, "state": group.state,
            "stats": {"end_to_end_creation_latency_ms": latency,
                      "scheduling_latency_ms": latency,
                      "scheduling_attempt": group.attempts,
                      "highest_retry_delay_ms": 0.0,
                      "scheduling_state": scheduling_state},
        }

    def _bump(self, node_id: bytes) -> None:
        node = self._nodes.get(node_id)
        if node is not None:
            node.bundles_version += 1

    def _place_groups(self) -> None:
        """Place the bundles not placed yet, group by group in creation order."""
        waiting = [g for g in self._groups.values() if None in g.nodes]
        if not waiting:
            return
        # Nodes with the most CPU free at their last report come first: a group then goes
        # where it can be reserved soonest, among the nodes that can hold it.
        live = sorted((node for node in self._nodes.values() if node.alive),
                      key=lambda node: -node.available.get("CPU", 0))
        left = {node.node_id: dict(node.resources) for node in live}
        labels = {node.node_id: node.labels for node in live}
        for group in self._groups.values():
            for node_id, bundle in zip(group.nodes, group.bundles):
                if node_id in left:
                    _take_units(left[node_id], bundle)
        for group in waiting:
            group.attempts += 1
            missing = [i for i, node_id in enumerate(group.nodes) if node_id is None]
            placed = set(n for n in group.nodes if n is not None)
            if group.strategy == "STRICT_SPREAD":
                candidates = {n: have for n, have in left.items() if n not in placed}
            elif group.strategy == "STRICT_PACK" and placed:
                candidates = {n: have for n, have in left.items() if n in placed}
            else:
                candidates = left
            chosen = pgs.place_bundles([group.bundles[i] for i in missing], group.strategy,
                                       {n: _amounts(have) for n, have in candidates.items()},
                                       labels, [group.constraints[i] for i in missing])
            if chosen is None:
                continue
            for i, node_id in zip(missing, chosen):
                group.nodes[i] = node_id
                _take_units(left[node_id], group.bundles[i])
                self._bump(node_id)

    # ── object directory ────────────────────────────────────────────────────────────────────

    def add_location(self, object_id: bytes, node_id: bytes) -> bool:
        """Record that ``node_id`` holds a copy of the object.

        Returns:
            True; False (and nothing recorded) if the node is unknown or dead, e.g. a late
            message from a node already declared dead.
        """
        node = self._nodes.get(node_id)
        if node is None or not node.alive:
            return False
        self._locations.setdefault(object_id, set()).add(node_id)
        self._objects_on.setdefault(node_id, set()).add(object_id)
        return True

    def remove_location(self, object_id: bytes, node_id: bytes) -> None:
        """Record that ``node_id`` no longer holds a copy (freed, or evicted and not spilled)."""
        where = self._locations.get(object_id)
        if where is None or node_id not in where:
            return
        where.discard(node_id)
        if not where:
            del self._locations[object_id]
        on_node = self._objects_on[node_id]
        on_node.discard(object_id)
        if not on_node:
            del self._objects_on[node_id]

    def locations(self, object_id: bytes) -> set[bytes]:
        """The ids of the live nodes holding a copy of the object (empty if none)."""
        return set(self._locations.get(object_id, ()))

    def forget(self, object_id: bytes) -> None:
        """Drop every location of the object (it was freed cluster-wide)."""
        for node_id in self._locations.pop(object_id, ()):
            on_node = self._objects_on[node_id]
            on_node.discard(object_id)
            if not on_node:
                del self._objects_on[node_id]

    # ── all of it ───────────────────────────────────────────────────────────────────────────

    def stats(self) -> dict[str, int]:
        """How many entries each table holds, and the live nodes' load summed, for
        ``purerun status`` and tests.

        Returns:
            ``jobs``, ``jobs_running``, ``kv_keys``, ``functions``, ``actors`` (registered,
            not dead), ``named_actors``, ``nodes_alive``, ``nodes_dead``, ``objects`` (with
            a known location); then each ``NODE_LOAD`` count summed over the live nodes'
            last heartbeats, under its key there (``tasks``, ``actors_on_nodes``,
            ``objects_on_nodes``, ``object_store_bytes``).
        """
        counts = {"jobs": len(self._jobs),
                  "jobs_running": sum(not job.is_dead for job in self._jobs.values()),
                  "kv_keys": sum(len(table) for table in self._kv.values()),
                  "functions": len(self._functions), "actors": len(self._actors),
                  "named_actors": len(self._names),
                  "nodes_alive": sum(node.alive for node in self._nodes.values()),
                  "nodes_dead": len(self._dead_nodes), "objects": len(self._locations)}
        live = [node.load for node in self._nodes.values() if node.alive]
        for name, key in NODE_LOAD.items():
            counts[key] = sum(load.get(name, 0) for load in live)
        return counts


def _sum(tables) -> dict[str, int]:
    total: dict[str, int] = {}
    for table in tables:
        for name, units in table.items():
            total[name] = total.get(name, 0) + units
    return total


def _take_units(have: dict, amounts: Mapping[str, float]) -> None:
    for name, amount in amounts.items():
        have[name] = have.get(name, 0) - round(amount * RESOURCE_UNIT)


def _amounts(units: Mapping[str, int]) -> dict[str, float]:
    return {name: amount / RESOURCE_UNIT for name, amount in units.items()}


#: The methods a head serves over TCP: every public method of ControlStore, and nothing else
#: (a request naming anything else is refused before any attribute is looked up).
REMOTE_METHODS = frozenset(name for name, value in vars(ControlStore).items()
                           if callable(value) and not name.startswith("_"))
