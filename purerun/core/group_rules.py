"""The placement-group and label rules of a node: part of NodeState (core/node_state.py).

``GroupRules`` holds the methods, NodeState the tables they share. Pure, like all of
NodeState. The map::

    pg_create   a driver's request: the control store enters the group and assigns its
                bundles to nodes; every node concerned reads its bundles (_sync_bundles)
    _sync_bundles   bundles assigned here and not held: ReserveBundle to the scheduler;
                bundles held and no longer assigned (the group was removed): its tasks
                fail (TaskPlacementGroupRemoved), its actors die, ReturnBundle
    BundleReserved  the scheduler took the bundle's resources: tell the store; when the
                group is complete, every node hears (pg_sync) and retries parked work
    placement   a task in a group runs where one of its bundles is (the one it names, or
                any); while the group is not CREATED it is *parked* here, and placed once
                it is. A task with label constraints runs on a node whose labels match;
                with none, it is parked (Ray keeps it pending, infeasible) until one joins.
    capture     a task submitted from a task or actor running in a group with
                ``placement_group_capture_child_tasks`` goes into the same group

The rules about bundles and labels themselves are in core/placement_groups.py.
"""

from purerun import exceptions
from purerun.core import placement_groups as pgs
from purerun.core import protocol
from purerun.core import scheduler as sched
from purerun.core.actors import DEAD, PENDING, actor_died_error
from purerun.core.node_vocabulary import KillWorker, RemoteNode, fits
from purerun.core.task_spec import ACTOR_CREATION

__all__ = ["GroupRules", "PARKED"]


class _Parked:
    def __repr__(self):
        return "PARKED"


#: What placement answers for work that cannot be placed yet: it waits in ``parked``.
PARKED = _Parked()

GROUP_REMOVED_MESSAGE = "The actor died because its placement group was removed."


def group_of(spec):
    """The group id a task is scheduled in, or None."""
    strategy = spec.strategy
    if type(strategy) is tuple and strategy[0] == pgs.PLACEMENT_GROUP:
        return strategy[1]
    return None


class GroupRules:
    """NodeState's methods for placement groups and labels (a mixin)."""

    def _init_groups(self):
        #: (group id, bundle index) -> True once reserved here, False while pending
        self.bundles = {}
        #: group id -> placement_group_info of a CREATED group, as last read
        self.group_cache = {}
        #: task id -> Task waiting for its group to be created, or for a matching node
        self.parked = {}
        self.bundles_version = None
        labels = dict(self.config.get("labels") or {})
        labels.setdefault(pgs.NODE_ID_LABEL, self.node_id.hex())
        self.labels = labels

    # ── requests from clients ─────────────────────────────────────────────────────────────

    def _request_pg_create(self, token, group_id, bundles, strategy, name, job_id, detached,
                           bundle_labels):
        answer = self.control.create_placement_group(group_id, bundles, strategy, name,
                                                     job_id, detached, bundle_labels)
        if answer["infeasible"]:
            self._send(token, (protocol.WARN,
                               f"The placement group {name or group_id.hex()} cannot be "
                               f"created yet: no node set of this cluster can hold its "
                               f"bundles {bundles} with strategy {strategy}. It stays "
                               "PENDING until nodes with those resources join."))
        self._groups_changed(answer["nodes"])
        return self.control.placement_group_info(group_id)["state"]

    def _request_pg_remove(self, token, group_id):
        self._groups_changed(self.control.remove_placement_group(group_id))
        self.group_cache.pop(group_id, None)
        self._fail_parked(group_id)

    def _request_pg_info(self, token, group_id):
        return self.control.placement_group_info(group_id)

    def _request_pg_table(self, token, group_id):
        return self.control.placement_group_table(group_id)

    def _request_pg_get(self, token, name, job_id):
        return self.control.get_placement_group(name, job_id)

    def _request_pg_current(self, token):
        """The group the task or actor on the asking worker runs in (None: none)."""
        peer = self.peers.get(token)
        if peer is None or peer.worker is None:
            return None
        strategy = self._parent_strategy(peer.worker)
        if type(strategy) is tuple and strategy[0] == pgs.PLACEMENT_GROUP:
            return strategy[1]
        return None

    def _request_pg_sync(self, token):
        """Another node says groups changed: read this node's bundles, retry parked work."""
        self.group_cache.clear()
        self._sync_bundles()

    def _groups_changed(self, node_ids):
        """The bundles of ``node_ids`` changed: this node syncs, the others are told to."""
        self._sync_bundles()
        for node_id in node_ids:
            if node_id is None or node_id == self.node_id:
                continue
            remote = self.remote.get(node_id)
            if remote is None:
                self._refresh_nodes()
                remote = self.remote.get(node_id)
            if remote is not None and remote.alive:
                self._send(remote, (protocol.REQUEST, 0, "pg_sync", ()))

    # ── bundles held here ─────────────────────────────────────────────────────────────────

    def _sync_bundles(self):
        assigned = {(group_id, index): bundle
                    for group_id, index, bundle in self.control.bundles_on(self.node_id)}
        for key in [k for k in self.bundles if k not in assigned]:
            self._return_bundle(key)
        for key, bundle in assigned.items():
            if key not in self.bundles:
                self.bundles[key] = False
                self._schedule(sched.ReserveBundle(
                    key, bundle, pgs.bundle_resources(key[0].hex(), key[1], bundle)))
        self._retry_parked()

    def _bundle_reserved(self, key):
        if key not in self.bundles:
            return
        self.bundles[key] = True
        if self.control.bundle_reserved(key[0], key[1], self.node_id):
            # The group is complete: work parked for it anywhere can go now.
            for remote in list(self.remote.values()):
                if remote.alive:
                    self._send(remote, (protocol.REQUEST, 0, "pg_sync", ()))
        self._retry_parked()

    def _return_bundle(self, key):
        """The group of this bundle was removed: end its work here, free what it held."""
        group_id = key[0]
        del self.bundles[key]
        self.group_cache.pop(group_id, None)
        for task in [t for t in self.tasks.tasks.values()
                     if group_of(t.spec) == group_id and t.node is None]:
            self._end_in_removed_group(task)
        for actor in [a for a in self.actors.values()
                      if group_of(a.creation) == group_id and a.node is None
                      and a.state != DEAD]:
            actor.cause = actor_died_error(actor.actor_id, actor.class_name,
                                           GROUP_REMOVED_MESSAGE)
            self._request_kill_actor(None, actor.actor_id, True)
        self._fail_parked(group_id)
        self._schedule(sched.ReturnBundle(key))

    def _end_in_removed_group(self, task):
        spec = task.spec
        if spec.kind == ACTOR_CREATION:
            actor = self.actors.get(spec.actor_id)
            if actor is not None and actor.state != DEAD:
                actor.cause = actor_died_error(actor.actor_id, actor.class_name,
                                               GROUP_REMOVED_MESSAGE)
                self._request_kill_actor(None, actor.actor_id, True)
            return
        if task.worker_id is None:
            self._moving = True   # the scheduler's TaskCancelled is not the error here
            try:
                self._schedule(sched.CancelTask(spec.task_id))
            finally:
                self._moving = False
        else:
            self._out.append(KillWorker(task.worker_id))
        self._fail(task, exceptions.TaskPlacementGroupRemoved())

    # ── placement ─────────────────────────────────────────────────────────────────────────

    def _special_strategy(self, spec, peer):
        """Whether ``spec`` is placed by these rules; first, a child of a task or actor in a
        group that captures its children goes into that group."""
        strategy = spec.strategy
        if strategy is None and peer.worker is not None:
            parent = self._parent_strategy(peer.worker)
            if type(parent) is tuple and parent[0] == pgs.PLACEMENT_GROUP and parent[3]:
                strategy = spec.strategy = (pgs.PLACEMENT_GROUP, parent[1], -1, True)
                if spec.kind == ACTOR_CREATION:
                    spec.actor.strategy = strategy
        return type(strategy) is tuple and strategy[0] in (pgs.PLACEMENT_GROUP, pgs.LABELS)

    def _parent_strategy(self, worker):
        if worker.task is not None:
            return worker.task.spec.strategy
        if worker.actor_id is not None:
            actor = self.actors.get(worker.actor_id)
            if actor is not None:
                return actor.creation.strategy
        return None

    def _place_special(self, spec, from_node=False):
        """Where a task in a group or with label constraints runs.

        Returns:
            None for this node, a RemoteNode, or PARKED (not placeable yet).

        Raises:
            TaskPlacementGroupRemoved, ActorPlacementGroupRemoved: its group was removed.
            TaskUnschedulableError, ActorUnschedulableError: it names a bundle the group
                does not have.
        """
        if spec.strategy[0] == pgs.LABELS:
            if from_node and pgs.labels_match(self.labels, spec.strategy[1]):
                return None   # placed here by another node that saw it match: it runs here
            return self._place_by_labels(spec)
        _, group_id, index, _capture = spec.strategy
        bundles = self.bundles
        if index >= 0:
            if bundles.get((group_id, index)):
                return None
        elif any(held and key[0] == group_id for key, held in bundles.items()):
            return None
        info = None if from_node else self.group_cache.get(group_id)
        if info is None:
            info = self.control.placement_group_info(group_id)
        if info is None or info["state"] == "REMOVED":
            raise (exceptions.ActorPlacementGroupRemoved if spec.kind == ACTOR_CREATION
                   else exceptions.TaskPlacementGroupRemoved)()
        nodes = info["nodes"]
        if index >= len(nodes):
            error = (exceptions.ActorUnschedulableError if spec.kind == ACTOR_CREATION
                     else exceptions.TaskUnschedulableError)
            raise error(f"placement group {group_id.hex()} has {len(nodes)} bundles, so "
                        f"bundle index {index} does not exist")
        if info["state"] != "CREATED":
            return PARKED
        self.group_cache[group_id] = info
        candidates = [nodes[index]] if index >= 0 else nodes
        if self.node_id in candidates:
            return PARKED   # its bundle here is not reserved yet: wait for it
        remotes = []
        for node_id in candidates:
            remote = self.remote.get(node_id)
            if remote is None:
                self._refresh_nodes()
                remote = self.remote.get(node_id)
            if remote is not None and remote.alive and remote not in remotes:
                remotes.append(remote)
        if not remotes:
            return PARKED
        target = remotes[self.spread_next % len(remotes)]
        self.spread_next += 1
        return target

    def _place_by_labels(self, spec):
        _, hard, soft = spec.strategy
        demand = spec.resources or {}
        here = [None] if pgs.labels_match(self.labels, hard) else []
        there = [r for r in self.remote.values()
                 if r.alive and pgs.labels_match(r.labels, hard)]
        matching = here + there
        if not matching:
            return PARKED
        if soft:
            preferred = [n for n in matching if pgs.labels_match(
                self.labels if n is None else n.labels, soft)]
            matching = preferred or matching
        if None in matching and fits(demand, self.resources) and (
                fits(demand, self.scheduler.available_resources()) or len(matching) == 1):
            return None
        remotes = [r for r in matching if r is not None]
        for remote in remotes:
            if fits(demand, remote.available):
                self._take(remote, demand)
                return remote
        if None in matching and fits(demand, self.resources):
            return None
        for remote in remotes:
            if fits(demand, remote.resources):
                return remote
        # Nodes match but none could ever fit it: one of them reports it infeasible, as for
        # any task too big for every node.
        return None if None in matching else remotes[0]

    # ── parked work ───────────────────────────────────────────────────────────────────────

    def _park(self, task):
        self.parked[task.spec.task_id] = task
        spec = task.spec
        if spec.strategy[0] == pgs.LABELS:
            self._send(task.owner, (protocol.WARN,
                                    f"Task {spec.name} cannot be scheduled: no node has labels "
                                    f"that match {_describe_labels(spec.strategy[1])}. It "
                                    "stays pending until such a node joins the cluster."))

    def _retry_parked(self):
        if not self.parked:
            return
        waiting = set()   # groups found not placeable in this pass: one store read each
        for task_id, task in list(self.parked.items()):
            if self.parked.get(task_id) is not task:
                continue
            if self.tasks.get(task_id) is not task:
                del self.parked[task_id]   # failed or cancelled meanwhile
                continue
            group_id = group_of(task.spec)
            if group_id is not None and group_id in waiting:
                continue
            try:
                target = self._place_special(task.spec)
            except (exceptions.TaskPlacementGroupRemoved, exceptions.ActorPlacementGroupRemoved,
                    exceptions.TaskUnschedulableError,
                    exceptions.ActorUnschedulableError) as exc:
                del self.parked[task_id]
                self._fail_placement(task, exc)
                continue
            if target is PARKED:
                if group_id is not None and group_id not in self.group_cache:
                    waiting.add(group_id)   # not created: the group's other work waits too
                continue
            del self.parked[task_id]
            self._run_placed(task, target)

    def _fail_parked(self, group_id):
        for task_id, task in list(self.parked.items()):
            if group_of(task.spec) == group_id:
                del self.parked[task_id]
                if self.tasks.get(task_id) is task:
                    self._fail_placement(task, exceptions.TaskPlacementGroupRemoved())

    def _fail_placement(self, task, error):
        spec = task.spec
        if spec.kind == ACTOR_CREATION:
            actor = self.actors.get(spec.actor_id)
            if isinstance(error, exceptions.TaskPlacementGroupRemoved):
                error = exceptions.ActorPlacementGroupRemoved()
            if actor is not None:
                actor.cause = actor_died_error(actor.actor_id, actor.class_name,
                                               GROUP_REMOVED_MESSAGE if isinstance(
                                                   error, exceptions.ActorPlacementGroupRemoved)
                                               else str(error))
                self.tasks.remove(spec.task_id)
                self._actor_dead(actor)
                return
        self._fail(task, error)

    def _run_placed(self, task, target):
        """Start parked work where it was placed: here (the scheduler) or on ``target``."""
        spec = task.spec
        if spec.kind == ACTOR_CREATION:
            actor = self.actors.get(spec.actor_id)
            if actor is None or actor.state == DEAD:
                return
            if type(target) is RemoteNode:
                actor.node = target
                self.control.actor_state(actor.actor_id, PENDING, target.node_id)
                self._forward(task, target)
                return
            self._schedule(sched.SubmitTask(spec.task_id, self._demand(spec),
                                            self.objects.missing(spec.deps),
                                            dedicated=True, hold=self._hold(spec)))
            return
        if type(target) is RemoteNode:
            self._forward(task, target)
            return
        missing = self.objects.missing(spec.deps)
        self._want(missing)
        self._schedule(sched.SubmitTask(spec.task_id, self._demand(spec), missing))


def _describe_labels(constraints):
    words = {pgs.IN: "in", pgs.NOT_IN: "not in", pgs.EXISTS: "exists",
             pgs.DOES_NOT_EXIST: "does not exist"}
    return ", ".join(f"{key} {words[op]}" + (f" {list(values)}" if values else "")
                     for key, op, values in constraints)
