"""The cluster rules of a node: what it does with the other nodes of a cluster.

Part of NodeState (core/node_state.py), kept apart because it is a subject of its own:
``ClusterRules`` holds the methods, NodeState the tables they share (tasks, actors, objects,
peers, the scheduler) and the entry point that calls them. Pure, like all of NodeState: no
socket, clock or process; a node talks to another only through ``Send`` to a ``RemoteNode``
and ``PushObject``. See node_state's module docstring for the map (placement, borrowing,
pulls, death, heartbeat), and tests/test_node_state_cluster.py for the rules event by event.
"""

from purerun import exceptions
from purerun.core import ids, protocol, serialization
from purerun.core import scheduler as sched
from purerun.core.actors import ALIVE, DEAD, PENDING, RESTARTING, actor_died_error
from purerun.core.node_vocabulary import (HEARTBEAT_ANSWER, Peer, PushObject, RemoteNode, Stop,
                                          fits)
from purerun.core.group_rules import PARKED
from purerun.core.object_table import block_length, error_payload
from purerun.core.placement_groups import LABELS, PLACEMENT_GROUP
from purerun.core.protocol import ARENA, ERROR, ON_DISK, REMOTE
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD, NORMAL
from purerun.core.tasks import TaskTable, retries_left

__all__ = ["ClusterRules"]


class ClusterRules:
    """NodeState's methods for other nodes (a mixin: NodeState holds the state)."""

    # ── the cluster: other nodes ──────────────────────────────────────────────────────────

    def _on_node_hello(self, token, msg):
        peer = self.peers[token] = Peer("node")
        peer.node_id = msg[1]

    def _node_by_number(self, number):
        remote = self.by_number.get(number)
        if remote is None:
            self._refresh_nodes()
            remote = self.by_number.get(number)
        return remote

    def _refresh_nodes(self):
        """Take the control store's node table: new nodes, deaths, free resources."""
        self._take_node_table(self.control.node_table())

    def _take_node_table(self, records):
        for record in records:
            node_id = record["node_id"]
            if node_id == self.node_id:
                version = record.get("bundles_version")
                if version != self.bundles_version:   # its placement-group bundles changed
                    self.bundles_version = version
                    self.group_cache.clear()
                    self._sync_bundles()
                continue
            remote = self.remote.get(node_id)
            if remote is None:
                if not record["alive"]:
                    continue
                remote = self.remote[node_id] = RemoteNode(node_id, record["number"],
                                                           record["address"])
                self.by_number[remote.number] = remote
            if not record["alive"]:
                if remote.alive:
                    self._node_died(remote, f"node {node_id.hex()} was declared dead")
                continue
            remote.resources = record["resources"]
            remote.available = record["available"]
            remote.labels = record["labels"]

    def heartbeat_report(self):
        """What this node tells the head every tick: ``heartbeat``'s arguments."""
        return (self.node_id, self.scheduler.available_resources(),
                {"tasks": len(self.tasks), "actors": len(self.actors),
                 "objects": len(self.objects.entries),
                 "object_store_bytes": self.objects.store.used})

    def _on_tick(self, token, msg):
        """A tick with a store answering at once (embedded, tests): heartbeat and node table.
        (The node process sends those to its head without waiting, and feeds the answers
        back as HEARTBEAT_ANSWER.)"""
        if self.head_lost is not None:
            return
        alive = self.control.heartbeat(*self.heartbeat_report())
        self._on_heartbeat_answer(None, (HEARTBEAT_ANSWER, alive,
                                         None if not alive else self.control.node_table()))

    def _on_heartbeat_answer(self, token, msg):
        _, alive, records = msg
        if not alive:
            # Declared dead while silent (stopped, or cut off): the cluster has re-placed its
            # work already, so this node must not go on as if nothing happened.
            self._out.append(Stop())
            return
        self._take_node_table(records)
        self._rebalance()
        self._retry_parked()

    def _rebalance(self):
        """Work queued here for want of room moves to nodes that have room now."""
        free = [r for r in self.remote.values() if r.alive and r.available.get("CPU", 0) >= 1]
        if not free:
            return
        budget = int(sum(r.available.get("CPU", 0) for r in free))
        self._moving = True
        try:
            for task_id in self.scheduler.queued(budget):
                task = self.tasks.get(task_id)
                if task is None or task.spec.strategy is not None:
                    continue   # pinned or spread on purpose: stays where it was placed
                demand = task.spec.resources or {}
                target = next((r for r in free if fits(demand, r.available)), None)
                if target is None:
                    continue
                self._schedule(sched.CancelTask(task_id))   # answered by TaskCancelled
                self._take(target, demand)
                self._forward(task, target)
        finally:
            self._moving = False

    def _on_head_lost(self, token, msg):
        self.head_lost = msg[1]

    def _on_node_died(self, token, msg):
        remote = self.remote.get(msg[1])
        if remote is not None:
            self._node_died(remote, f"node {remote.node_id.hex()} at {remote.address} died")

    def _node_died(self, remote, why):
        """``remote`` is gone: re-place or fail what was there, lose what only it held."""
        if not remote.alive:
            return
        remote.alive = False
        node_id = remote.node_id
        self.group_cache.clear()
        self._state_node_gone(remote)
        error = exceptions.NodeDiedError(f"The node running this work is gone: {why}.")
        for actor_id, where in list(self.actor_nodes.items()):
            if where is remote:
                del self.actor_nodes[actor_id]
        actors = [a for a in self.actors.values() if a.node is remote and a.state != DEAD]
        for task in [t for t in self.tasks.tasks.values() if t.node is remote]:
            task.node = None
            kind = task.spec.kind
            if kind == ACTOR_CREATION:
                continue   # with its actor, below
            if kind == ACTOR_METHOD:
                actor = self.actors.get(task.spec.actor_id)
                if actor is not None and actor.can_restart() and task.can_retry():
                    task.retry()
                    actor.enqueue(task)   # sent again once it is placed anew
                else:
                    self._fail(task, exceptions.ActorDiedError(None) if actor is None
                               else actor_died_error(actor.actor_id, actor.class_name,
                                                     f"The actor's node died: {why}."))
            elif TaskTable.retried_after_loss(task):
                task.retry()
                self._place_again(task)
            else:
                self._fail(task, error)
        for actor in actors:
            self._remote_actor_lost(actor, why)
        # Values that were only there, and values borrowed from there.
        objects = self.objects
        for object_id, entry in list(objects.entries.items()):
            if entry.remote_hold == node_id and entry.kind != REMOTE:
                entry.remote_hold = None
                if entry.kind is None:   # borrowed from it, never answered: its owner died
                    self._seal(object_id, ERROR, error_payload(exceptions.OwnerDiedError(
                        object_id.hex())), ())
            elif entry.kind == REMOTE and entry.payload[0] == node_id:
                entry.remote_hold = None
                if not self._reconstruct(object_id):
                    self._lose(object_id, exceptions.ObjectLostError(object_id.hex()))

    def _reconstruct(self, object_id):
        """Run again the task that made a value lost with its node, if its retries allow.

        Returns:
            True if the task was submitted again (every one of its lost values waits for
            it now), False if the value is lost for good.
        """
        spec = self.lineage.pop(object_id, None)
        if spec is None or retries_left(spec) == 0:
            return False
        if spec.task_id in self.tasks.tasks:
            return True   # already re-running, for another of its values
        objects = self.objects
        held = []
        for dep in list(spec.deps) + list(spec.contained):
            if not self._hold_object(dep):
                for object_id in held:
                    objects.release(object_id)
                return False
            held.append(dep)
        for return_id in spec.return_ids():
            entry = objects.get(return_id)
            if entry is not None and entry.kind == REMOTE:
                pull = self.pulls.pop(return_id, None)
                if pull is not None:
                    objects.discard_reserved(pull[1])
                entry.kind = entry.payload = entry.locations = None
            self.lineage.pop(return_id, None)
        task = self.tasks.add(spec, None)
        task.retry()
        self._place_again(task)
        return True

    def _remote_actor_lost(self, actor, why):
        """An actor this node owns lived on a node that died: place it anew, or it is dead."""
        actor.node = None
        self.control.actor_state(actor.actor_id, RESTARTING if actor.can_restart() else DEAD,
                                 self.node_id)
        if not actor.can_restart():
            actor.cause = actor_died_error(actor.actor_id, actor.class_name,
                                           f"The actor's node died: {why}.")
            self._actor_dead(actor)
            return
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
        actor.num_restarts += 1
        actor.state = PENDING
        creation = actor.creation
        creation.attempt = actor.num_restarts
        task = self.tasks.get(creation.task_id) or self.tasks.add(creation, actor.owner)
        target = self._place(creation) if self.clustered else None
        if target is PARKED:
            self.parked[creation.task_id] = task
        elif target is not None:
            actor.node = target
            self._forward(task, target)
        else:
            self._schedule(sched.SubmitTask(creation.task_id, self._demand(creation),
                                            self.objects.missing(creation.deps),
                                            dedicated=True, hold=self._hold(creation)))
        queued = [t for q in actor.queues.values() for t in q]
        actor.queues.clear()
        for call in queued:
            if actor.node is not None:
                self._forward(call, actor.node)
            else:
                actor.enqueue(call)

    def _place_again(self, task):
        spec = task.spec
        try:
            target = self._place(spec) if self.clustered else None
        except (exceptions.TaskUnschedulableError, exceptions.ActorUnschedulableError,
                exceptions.TaskPlacementGroupRemoved) as exc:
            self._fail(task, exc)
            return
        if target is PARKED:
            self.parked[spec.task_id] = task
        elif target is not None:
            self._forward(task, target)
        else:
            self._resubmit(task)

    # placement

    def _place(self, spec):
        """Where a task submitted here runs: None for this node, else a RemoteNode.

        Raises:
            TaskUnschedulableError, ActorUnschedulableError: a hard node affinity names a
                node that is dead, unknown, or too small for it.
        """
        demand = spec.resources or {}
        strategy = spec.strategy
        if type(strategy) is tuple and strategy[0] in (PLACEMENT_GROUP, LABELS):
            return self._place_special(spec)   # core/group_rules.py
        if strategy == "SPREAD":
            return self._spread(demand)
        if strategy is not None:
            _, node_id, soft = strategy
            if node_id == self.node_id and fits(demand, self.resources):
                return None
            remote = self.remote.get(node_id)
            if remote is None and node_id != self.node_id:
                self._refresh_nodes()
                remote = self.remote.get(node_id)
            if remote is not None and remote.alive and fits(demand, remote.resources):
                return remote
            if not soft:
                if node_id != self.node_id and (remote is None or not remote.alive):
                    why = (f"the node {node_id.hex()} it must run on (NodeAffinity"
                           f"SchedulingStrategy with soft=False) is "
                           f"{'dead' if remote is not None else 'not in the cluster'}")
                else:
                    why = (f"the node {node_id.hex()} it must run on (soft=False) does not "
                           f"have the resources it asks for: {demand}")
                error = (exceptions.ActorUnschedulableError if spec.kind == ACTOR_CREATION
                         else exceptions.TaskUnschedulableError)
                raise error(why)
        if (fits(demand, self.resources) and self.scheduler.num_pending == 0
                and fits(demand, self.scheduler.available_resources())):
            return None   # the submitter's node, when it has room now
        best = None
        for remote in self.remote.values():
            if remote.alive and fits(demand, remote.available) and (
                    best is None or remote.available.get("CPU", 0)
                    > best.available.get("CPU", 0)):
                best = remote
        if best is not None:
            self._take(best, demand)
            return best
        if fits(demand, self.resources):
            return None   # wait here for room
        for attempt in range(2):
            for remote in self.remote.values():
                if remote.alive and fits(demand, remote.resources):
                    return remote   # only that node can ever run it
            if attempt == 0:
                self._refresh_nodes()   # a node that joined since the last tick, maybe
        return None       # nobody can: it waits here, with a warning

    def _spread(self, demand):
        candidates = [None] if fits(demand, self.resources) else []
        candidates += [r for r in self.remote.values() if r.alive and fits(demand, r.resources)]
        if not candidates:
            return None
        target = candidates[self.spread_next % len(candidates)]
        self.spread_next += 1
        if target is not None:
            self._take(target, demand)
        return target

    @staticmethod
    def _take(remote, demand):
        available = remote.available
        for name, amount in demand.items():
            if amount > 0:
                available[name] = available.get(name, 0) - amount

    def _forward(self, task, target):
        """Place ``task`` on ``target``: it runs there; its RESULTS come back here."""
        task.node = target
        self._send(target, (protocol.SUBMIT, task.spec))

    def _actor_node(self, actor_id):
        """The RemoteNode an actor this node does not host lives on, from the control store;
        None if it is dead, unknown, or not placed on another node."""
        remote = self.actor_nodes.get(actor_id)
        if remote is not None and remote.alive:
            return remote
        info = self.control.actor_info(actor_id)
        if info is None or info["state"] == DEAD or info["node_id"] in (None, self.node_id):
            return None
        remote = self.remote.get(info["node_id"])
        if remote is None:
            self._refresh_nodes()
            remote = self.remote.get(info["node_id"])
        if remote is None or not remote.alive:
            return None
        self.actor_nodes[actor_id] = remote
        return remote

    # results of work placed elsewhere

    def _send_results(self, owner, owner_peer, spec, object_ids=None):
        """Tell the node that placed ``spec`` here its results (``object_ids``: all the
        call's results, a dynamic generator's items too; default its return ids). Small
        values travel whole and this node forgets them; stored ones (and any holding refs,
        or an actor's handle) stay here, held for that node until it sends DROP_REFS."""
        objects = self.objects
        items = []
        keep_all = spec.kind == ACTOR_CREATION   # its object is the actor's lifetime
        for object_id in object_ids or spec.return_ids():
            entry = objects.get(object_id)
            if entry is None or entry.kind is None:
                continue
            kind, payload = objects.remote_form(entry, self.node_id)
            held = keep_all or kind == REMOTE or bool(entry.contained)
            items.append((object_id, kind, payload, held))
            if not held and object_id in owner_peer.refs:
                owner_peer.refs.discard(object_id)
                objects.release(object_id)
        self._send(owner, (protocol.RESULTS, spec.task_id, items))

    def _on_results(self, token, msg):
        _, task_id, items = msg
        task = self.tasks.get(task_id)
        if task is None or task.node is not token:   # failed or re-placed meanwhile
            back = [item[0] for item in items if item[3]]
            if back:
                self._send(token, (protocol.DROP_REFS, back))
            return
        objects = self.objects
        spec = task.spec
        for object_id, kind, _payload, held in items:
            if held:
                objects.expect(object_id).remote_hold = token.node_id
            if kind == REMOTE and spec.kind == NORMAL:
                self.lineage[object_id] = spec
        results = [(object_id, kind, payload, ()) for object_id, kind, payload, _ in items]
        # Finished while still placed there: its history entry names the node that ran it
        # (core/state_rules.py), which the status page's counts rely on.
        if spec.kind == ACTOR_CREATION:
            self._finish(task, results)
            task.node = None
            actor = self.actors.get(spec.actor_id)
            if actor is not None and actor.state != DEAD:
                if results and results[0][1] == ERROR:
                    actor.node = None   # it failed there, and its node reported it
                    cause = serialization.deserialize(results[0][2])
                    actor.cause = exceptions.ActorDiedError(cause if isinstance(
                        cause, exceptions.RayTaskError) else None)
                    self._actor_dead(actor)
                else:
                    actor.state = ALIVE
            return
        self._finish(task, results)
        task.node = None

    def _give_back(self, dropped):
        """Entries deleted here that held refs on other nodes: DROP_REFS there."""
        by_node = {}
        lineage = self.lineage
        for object_id, node_id in dropped:
            by_node.setdefault(node_id, []).append(object_id)
            lineage.pop(object_id, None)
        dropped.clear()
        for node_id, object_ids in by_node.items():
            remote = self.remote.get(node_id)
            if remote is not None and remote.alive:
                self._send(remote, (protocol.DROP_REFS, object_ids))

    # borrowing: refs to objects other nodes own

    def _borrow(self, object_id):
        """Enter an object another node owns (pending) and borrow it: that node holds it for
        this one and says when it is ready. False if it is owned here or by nobody alive."""
        number = ids.owner_number(object_id)
        if number == self.node_number or number == ids.UNNUMBERED:
            return False
        owner = self._node_by_number(number)
        if owner is None or not owner.alive:
            return False
        self.objects.expect(object_id).remote_hold = owner.node_id
        self._send(owner, (protocol.ADD_REFS, [object_id]))
        self._send(owner, (protocol.SUBSCRIBE, [object_id]))
        return True

    def _on_object(self, token, msg):
        """A borrowed object's value (or where it is), from its owner."""
        _, object_id, kind, payload = msg
        entry = self.objects.get(object_id)
        if entry is not None and entry.kind is None:
            self._seal(object_id, kind, payload, ())

    def _on_remote_reply(self, token, msg):
        # Of the requests this node makes of others, only "state" wants its answer (kill_actor
        # and pg_sync, sent with id 0, do not).
        _, request_id, ok, value = msg
        if request_id:
            self._state_answer(token, request_id, ok, value)

    def _on_remote_warn(self, token, msg):
        for peer_token, peer in self.peers.items():
            if peer.kind == "driver":
                self._send(peer_token, msg)

    # pulling values from other nodes, and serving such pulls

    def pull_destination(self, object_id):
        """Where the node process writes the DATA of a pull: an arena offset, a file path
        (the file is the node process's to create), or None."""
        pull = self.pulls.get(object_id)
        return pull[1] if pull is not None else None

    def _pull(self, object_id):
        if object_id in self.pulls:
            return
        entry = self.objects.get(object_id)
        holder_id, total, _meta_len, _spans = entry.payload
        holder = self.remote.get(holder_id)
        if holder is None or not holder.alive:
            self._lose(object_id, exceptions.ObjectLostError(object_id.hex()))
            return
        try:
            where = self.objects.pull_destination(total)
        except exceptions.ObjectStoreFullError as exc:
            self._lose(object_id, exc)
            return
        self.pulls[object_id] = [holder, where, total, 0]
        self._send(holder, (protocol.FETCH, object_id))

    def _on_data(self, token, msg):
        _, object_id, _offset, length, total = msg
        pull = self.pulls.get(object_id)
        if pull is None:
            return
        pull[3] += length
        if pull[3] < total:
            return
        del self.pulls[object_id]
        if self.objects.localize(object_id, pull[1]):
            self._became_local(object_id)
        else:
            self.objects.discard_reserved(pull[1])

    def _on_fetch_failed(self, token, msg):
        _, object_id, payload = msg
        self._lose(object_id, payload=payload)

    def _lose(self, object_id, error=None, payload=None):
        """A REMOTE value cannot be had: it is an error here now, for whoever waits."""
        pull = self.pulls.pop(object_id, None)
        if pull is not None:
            self.objects.discard_reserved(pull[1])
        if payload is None:
            payload = error_payload(error)
        if self.objects.lose_remote(object_id, payload):
            self._became_local(object_id)

    def _on_fetch(self, token, msg):
        object_id = msg[1]
        peer = self.peers[token]
        kind, payload = self._hand_out(peer, object_id)
        if kind == ON_DISK:   # no room to read it back here: sent from its file
            path, total, _meta_len, _spans = payload
            self._out.append(PushObject(token, object_id, 0, total, path))
            return
        if kind != ARENA:
            if kind != ERROR:
                payload = error_payload(exceptions.ObjectLostError(object_id.hex()))
            self._send(token, (protocol.FETCH_FAILED, object_id, payload))
            return
        offset, meta_len, spans = payload
        self._out.append(PushObject(token, object_id, offset, block_length(meta_len, spans)))
