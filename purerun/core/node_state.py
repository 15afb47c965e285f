"""NodeState: every rule of a node, as one pure state machine.

::

    core/node.py (sockets, processes)              NodeState (this module, no I/O)
    ─────────────────────────────────              ────────────────────────────────
    a frame from a driver or worker  ─(token, msg)─▶  handle()  ─┬─▶ Scheduler     resources, workers
    a driver connected / a worker    ─(token, event)▶            ├─▶ TaskTable     retries, cancel
      started / a connection closed                              ├─▶ Actor         lifecycle, call queues
    a worker's output line           ─(token, event)▶            ├─▶ ObjectTable   holds, pins, spill
                                                                 └─▶ ControlStore  jobs, names, KV,
                                     ◀── actions ───                               functions, nodes
    Send(token, msg), StartWorker(worker_id), KillWorker(worker_id),
    InterruptWorker(worker_id), Stop()

Every stimulus is a pair ``(token, msg)``: ``token`` is the connection it came from (an opaque
value chosen by the node: NodeState only compares and stores it), ``msg`` a wire message of
core/protocol.py or one of the node-internal events below. ``handle`` applies it and returns
the actions to carry out, in order. Nothing here touches a socket, a process or a clock —
except through the ObjectTable's byte store, which tests replace by a fake — so every rule
(retry, restart, cancel, per-caller order, reference counting) is tested event by event
without a process (tests/test_node_state.py).

In a cluster (joined to a head), a node is also a client of every other node it talks to:
the token of that talk is a ``RemoteNode``, and the other node sees this one as a peer of
kind "node". What crosses, all of it rules here, none of it I/O::

    placement   SUBMIT here ─▶ _place: here if it fits now (the submitter's node first),
                else a node with room, else one that can ever run it; SPREAD; node
                affinity (hard: TaskUnschedulableError when that node is gone)
                ─▶ SUBMIT to that node; its RESULTS come back (small values whole, large
                ones as REMOTE: where to FETCH them), and the task finishes here
    borrowing   a ref this node has no entry for, owned by node N (the number in its id):
                ADD_REFS + SUBSCRIBE to N; N answers OBJECT; DROP_REFS when it is gone here
    pulls       a REMOTE value a reader here needs: allocate, FETCH from its holder, which
                answers with PushObject (DATA raw frames into the block), then localize
    death       NODE_DIED (head) or a lost connection: tasks placed there run again while
                retries allow, owned actors are placed anew while restarts allow, values
                only it held are made again (lineage) or raise ObjectLostError
    heartbeat   TICK: report free resources and load, refresh the node table, move work
                queued here for want of room to nodes that have room (_rebalance)

Those rules live in core/cluster_rules.py (``ClusterRules``, which NodeState takes its
methods from); the events, actions and records both speak are in core/node_vocabulary.py.

The node process is the only caller, from its one thread.
"""

import collections

from purerun import exceptions
from purerun.core import ids, protocol, serialization, timeline
from purerun.core import scheduler as sched
from purerun.core.control_store import worker_id as worker_id_bytes
from purerun.core.actors import ALIVE, DEAD, PENDING, RESTARTING, Actor, actor_died_error
from purerun.core.cluster_rules import ClusterRules
from purerun.core.generators import GeneratorRules
from purerun.core.lease_rules import LeaseRules
from purerun.core.group_rules import PARKED, GroupRules, group_of
from purerun.core.placement_groups import group_demand
from purerun.core.object_table import ObjectTable, error_payload
from purerun.core.protocol import ARENA, ERROR, ON_DISK, REMOTE
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD, LEASE_NAME
from purerun.core.node_vocabulary import (
    DEFERRED, DISCONNECTED, DRIVER_CONNECTED, HEAD_LOST, HEARTBEAT_ANSWER, IDLE_CHECK,
    MEMORY_READING, NODE_ADDED, NODE_DIED, TICK, WORKER_OUTPUT, WORKER_STARTED, DrainOutput,
    InterruptWorker, KillWorker, Peer, PushObject, RemoteNode, Send, StartWorker, Stop, Worker)
from purerun.core.memory_monitor import Candidate, MemoryMonitor
from purerun.core.state_rules import StateRules
from purerun.core.tasks import TaskTable, retries_left

# The vocabulary is re-exported: the node process and tests take it from here.
__all__ = ["NodeState", "RemoteNode", "Send", "StartWorker", "KillWorker", "InterruptWorker",
           "PushObject", "Stop", "DrainOutput", "DRIVER_CONNECTED", "WORKER_STARTED",
           "DISCONNECTED", "WORKER_OUTPUT", "TICK", "NODE_DIED", "HEAD_LOST", "NODE_ADDED",
           "HEARTBEAT_ANSWER", "IDLE_CHECK", "MEMORY_READING", "DEFERRED", "WORKER_IDLE_CHECK_S",
           "WORKER_IDLE_CHECKS"]

# Events still shown by purerun.timeline(): the most recent ones, a bounded amount of memory.
TIMELINE_MAX_EVENTS = timeline.TIMELINE_MAX_EVENTS
# The node sends IDLE_CHECK this often; a pool worker beyond the CPU count that stays idle
# through WORKER_IDLE_CHECKS of them (5 s) exits. Long enough that waves of tasks a few
# seconds apart keep their warm workers (a fork costs ~10 ms and the first imports more),
# short enough that a burst of blocked tasks does not keep hundreds of idle processes.
WORKER_IDLE_CHECK_S = 1.0
WORKER_IDLE_CHECKS = 5


class NodeState(ClusterRules, GeneratorRules, GroupRules, StateRules, LeaseRules):
    """The rules of one node. See the module docstring.

    Args:
        config: ``node_id``, ``node_ip``, ``resources``, optional ``gpu_ids``, ``address``,
            ``session_dir``, ``hostname``, ``arena_size``.
        store: the byte store behind the object table (core.object_store.ObjectStore).
        control: the ControlStore (embedded on a lone node).
        max_workers, max_starting_workers: the scheduler's caps.
        keep_log: keep the last this many stimuli in ``log`` (0: none), for debugging.
        enforce_resources: False (local mode) to place every task at once, whatever it asks
            for; resources are then only counted, for ``available_resources``.
    """

    def __init__(self, config, store, control, *, max_workers, max_starting_workers,
                 keep_log=0, enforce_resources=True):
        self.config = config
        self.node_id = config["node_id"]
        self.resources = config["resources"]
        self.control = control
        self.enforce_resources = enforce_resources
        gpu_ids = tuple(config.get("gpu_ids") or range(int(self.resources.get("GPU", 0))))
        self.scheduler = sched.Scheduler(self.resources, gpu_ids, max_workers=max_workers,
                                         max_starting_workers=max_starting_workers,
                                         retire_idle_after=WORKER_IDLE_CHECKS)
        self.objects = ObjectTable(store, self.node_id,
                                   can_spill=config.get("session_dir") is not None)
        self.tasks = TaskTable()
        self.actors = {}             #: actor id -> Actor
        self.actor_waits = {}        #: object id -> ids of actors whose next call waits on it
        self.streams = {}            #: task id -> generators.Stream, for streaming calls
        self.peers = {}              #: token -> Peer
        self.workers = {}            #: worker id -> Worker
        self.owner = None            #: token of the driver that started the node, if any
        self.next_worker_id = 1
        self.dispatched = 0          #: tasks and actor creations sent to workers so far
        #: which worker goes when memory runs low (core/memory_monitor.py)
        self.memory = MemoryMonitor(config.get("memory_usage_threshold", 0),
                                    config.get("min_memory_free_bytes", -1))
        self.timeline = collections.deque(maxlen=TIMELINE_MAX_EVENTS)
        self.log = collections.deque(maxlen=keep_log) if keep_log else None
        self._out = []
        self._request_id = None      #: the REQUEST being answered, for DEFERRED ones
        # -- the cluster: other nodes, and what crosses to them --
        self.remote = {}             #: node id -> RemoteNode, every other node seen
        self.by_number = {}          #: node number -> RemoteNode
        self.pulls = {}              #: object id -> [RemoteNode, offset, total, received]
        self.awaited = set()         #: ids local tasks wait for: pull them when REMOTE
        self.locates = {}            #: object id -> [[token, request_id, object_ids], ...]
        self.actor_nodes = {}        #: actor id -> RemoteNode, for actors owned elsewhere
        self.head_lost = None        #: why the head is gone, once it is
        #: joined to a head: other nodes may come, so placement and borrowing are on
        self.clustered = bool(config.get("head"))
        self.spread_next = 0
        self.function_cache = {}     #: function key -> pickled function
        self._moving = False         #: taking queued tasks back to place them elsewhere
        #: object id -> the TaskSpec that made it, for values only another node holds: if
        #: that node dies, the task runs again (lineage reconstruction) while retries allow
        self.lineage = {}
        self._init_groups()   # placement groups and labels (core/group_rules.py)
        self._init_state()    # finished tasks and dead actors (core/state_rules.py)
        self._init_leases()   # the direct call path's leases (core/lease_rules.py)
        #: this node's number in the cluster: worker ids are unique across nodes with it
        self.node_number = control.register_node(
            self.node_id, config.get("tcp_address") or config.get("address"), self.resources,
            labels=self.labels, hostname=config.get("hostname"),
            node_ip=config.get("node_ip", "127.0.0.1"))
        self._handlers = {
            protocol.SUBMIT: self._on_submit,
            protocol.EXPORT: self._on_export,
            protocol.PUT: self._on_put,
            protocol.SUBSCRIBE: self._on_subscribe,
            protocol.ADD_REFS: self._on_add_refs,
            protocol.DROP_REFS: self._on_drop_refs,
            protocol.UNPIN: self._on_unpin,
            protocol.BLOCKED: self._on_blocked,
            protocol.UNBLOCKED: self._on_unblocked,
            protocol.TASK_DONE: self._on_task_done,
            protocol.GENERATOR_ITEM: self._on_generator_item,
            protocol.ITEM_READ: self._on_item_read,
            protocol.STREAM_DROPPED: self._on_stream_dropped,
            protocol.REQUEST: self._on_request,
            protocol.CANCEL: self._on_cancel,
            protocol.FREE: self._on_free,
            protocol.DIRECT_DONE: self._on_direct_done,
            protocol.PROMISE: self._on_promise,
            protocol.SEAL: self._on_seal,
            protocol.DIRECT_LIVE: self._on_direct_live,
            protocol.ACTOR_DIRECT: self._on_actor_direct,
            protocol.ACTOR_LOST: self._on_actor_lost,
            protocol.ACTOR_EXITING: self._on_actor_exiting,
            DRIVER_CONNECTED: self._on_driver_connected,
            WORKER_STARTED: self._on_worker_started,
            DISCONNECTED: self._on_disconnected,
            WORKER_OUTPUT: self._on_worker_output,
            protocol.NODE_HELLO: self._on_node_hello,
            protocol.RESULTS: self._on_results,
            protocol.FETCH: self._on_fetch,
            protocol.DATA: self._on_data,
            protocol.FETCH_FAILED: self._on_fetch_failed,
            protocol.OBJECT: self._on_object,
            protocol.REPLY: self._on_remote_reply,
            protocol.WARN: self._on_remote_warn,
            TICK: self._on_tick,
            NODE_DIED: self._on_node_died,
            HEAD_LOST: self._on_head_lost,
            NODE_ADDED: lambda token, msg: self._refresh_nodes(),
            HEARTBEAT_ANSWER: self._on_heartbeat_answer,
            IDLE_CHECK: lambda token, msg: self._schedule(sched.IdleTick()),
            MEMORY_READING: self._on_memory_reading,
        }
        self.requests = {
            "alloc": self._request_alloc,
            "locate": self._request_locate,
            "shutdown": self._request_shutdown,
            "flush_output": self._request_flush_output,
            "cluster_resources": self._request_cluster_resources,
            "available_resources": self._request_available_resources,
            "nodes": self._request_nodes,
            "stats": self._request_stats,
            "set_namespace": self._request_set_namespace,
            "set_job_metadata": self._request_set_job_metadata,
            "register_actor": self._request_register_actor,
            "get_actor": self._request_get_actor,
            "list_named_actors": self._request_list_named_actors,
            "kill_actor": self._request_kill_actor,
            "timeline": self._request_timeline,
            "direct_put": self._request_direct_put,
            "state": self._request_state,
            "dashboard": self._request_dashboard,
            "task_summary": self._request_task_summary,
            "log_to_driver": self._request_log_to_driver,
            "pg_create": self._request_pg_create,
            "pg_remove": self._request_pg_remove,
            "pg_info": self._request_pg_info,
            "pg_table": self._request_pg_table,
            "pg_get": self._request_pg_get,
            "pg_sync": self._request_pg_sync,
            "pg_current": self._request_pg_current,
        }

    # ── entry point ────────────────────────────────────────────────────────────────────────

    def handle(self, token, msg):
        """Apply one stimulus from ``token``; return the actions to carry out, in order.

        Raises:
            KeyError: ``msg`` is of a kind no handler takes (the node logs and drops it).
        """
        if self.log is not None:
            self.log.append((token, msg))
        try:
            self._handlers[msg[0]](token, msg)
            deleted = self.objects.deleted
            while deleted:
                self._actor_object_deleted(deleted.pop())
            dropped = self.objects.dropped_remote
            if dropped:
                self._give_back(dropped)
            if self.leases:
                self._check_leases()
        finally:
            out = self._out
            self._out = []
        return out

    def prestart(self, count):
        """Actions to start ``count`` warm workers now, so the first tasks need no fork."""
        for _ in range(count):
            self._start_worker()
        out = self._out
        self._out = []
        return out

    def welcome_info(self, token=None):
        """What a connecting process is told first (WELCOME); ``token`` None: a worker."""
        config = self.config
        peer = self.peers.get(token) if token is not None else None
        return {"node_id": self.node_id, "node_number": self.node_number,
                "job_id": peer.job_id if peer is not None else ids.job_id_bytes(0),
                "session_dir": config.get("session_dir"),
                "arena_size": config.get("arena_size"), "address": config.get("address"),
                "node_ip": config.get("node_ip", "127.0.0.1"), "resources": dict(self.resources),
                "dashboard_url": config.get("dashboard_url"), "clustered": self.clustered}

    def worker_info(self, worker_id):
        """What a new worker is told: the welcome, and its cluster-unique id (16 bytes)."""
        return dict(self.welcome_info(), worker_id=worker_id_bytes(self.node_number, worker_id))

    def _send(self, token, msg):
        self._out.append(Send(token, msg))

    # ── connections ────────────────────────────────────────────────────────────────────────

    def _on_driver_connected(self, token, msg):
        try:
            job_id = self.control.new_job_id()
        except ConnectionError as exc:
            # The head is gone: the driver still connects, and its first task fails with
            # the reason (see _on_submit) rather than its init waiting for a welcome.
            self.head_lost = self.head_lost or str(exc)
            job_id = ids.job_id_bytes(0)
        self.peers[token] = Peer("driver", job_id)
        if msg[1]:
            self.owner = token

    def _start_worker(self):
        worker_id = self.next_worker_id
        self.next_worker_id += 1
        self._out.append(StartWorker(worker_id))

    def _on_worker_started(self, token, msg):
        _, worker_id, pid = msg
        peer = self.peers[token] = Peer("worker")
        worker = peer.worker = self.workers[worker_id] = Worker(worker_id, pid, token)
        self._schedule(sched.WorkerStarted(worker.worker_id))

    def _on_disconnected(self, token, msg):
        if type(token) is RemoteNode:
            # What was placed or pulled there was to come back on this connection: lost with
            # it. A node's own connections do not break while it lives, so this is its death.
            self._node_died(token, f"the connection to node {token.node_id.hex()} at "
                                   f"{token.address} closed")
            return
        peer = self.peers.pop(token, None)
        if peer is None:
            return
        objects = self.objects
        for object_id, count in peer.pins.items():
            for _ in range(count):
                objects.unpin(object_id)
        for where in peer.reservations:
            objects.discard_reserved(where)
        if peer.promised:
            self._promises_of_gone(peer)
        if self.actor_channels and peer.kind == "driver":
            self._channels_of_gone(token)
        for object_id in peer.refs:
            objects.release(object_id)
        if self.streams:
            self._streams_of_gone(token)
        if peer.worker is not None:
            self._worker_gone(peer.worker)
        elif peer.kind == "driver":
            self.control.job_finished(peer.job_id)
            if self.bundles or self.parked or self.clustered:   # its groups went with it
                self._groups_changed([r.node_id for r in self.remote.values() if r.alive])
            if token == self.owner:
                self._out.append(Stop())
            else:
                self._end_job(peer.job_id)
        # Named (not detached) actors live as long as the process that made them.
        for actor in list(self.actors.values()):
            if actor.owner == token and actor.node_hold and not actor.detached:
                actor.node_hold = False
                objects.release(actor.object_id)

    def _end_job(self, job_id):
        """A job's driver is gone: as in Ray, what the job started ends with it — its tasks,
        queued or running (a running one's worker is killed: no one is left to take its
        result, and the CPU goes to the drivers still here), its calls, and its actors that
        are not detached. Detached actors, and everything of other jobs, live on."""
        for actor in list(self.actors.values()):
            if (actor.creation.job_id == job_id and not actor.detached
                    and actor.state != DEAD):
                self._request_kill_actor(None, actor.actor_id, True)
        for task in self.tasks.of_job(job_id):
            for marked in self.tasks.cancel(task.spec.task_id, True, False):
                self._cancel(marked)

    def _on_worker_output(self, token, msg):
        _, pid, stream, text = msg
        self._keep_output(pid, stream, text)
        for peer_token, peer in self.peers.items():
            if peer.kind == "driver" and peer.log_to_driver:
                self._send(peer_token, (protocol.LOG, pid, stream, text))

    # ── the scheduler ──────────────────────────────────────────────────────────────────────

    def _schedule(self, event):
        """Feed the scheduler one event and carry out what it asks, which may feed it more."""
        actions = self.scheduler.handle(event)
        while actions:
            more = []
            for action in actions:
                kind = type(action)
                if kind is sched.Dispatch:
                    more += self._dispatch(action)
                elif kind is sched.StartWorker:
                    self._start_worker()
                elif kind is sched.RetireWorker:
                    self._out.append(KillWorker(action.worker_id))
                elif kind is sched.TaskLost:
                    self._task_lost(action.task_id)
                elif kind is sched.TaskCancelled:
                    task = self.tasks.get(action.task_id)
                    if task is not None and not self._moving:
                        self._fail(task, exceptions.TaskCancelledError(action.task_id.hex()))
                elif kind is sched.Infeasible:
                    self._report_infeasible(action.task_id, action.resources)
                elif kind is sched.BundleReserved:
                    self._bundle_reserved(action.key)
            actions = more

    def _dispatch(self, action):
        task = self.tasks.get(action.task_id)
        if task is None:  # cancelled and failed meanwhile: the worker is free again
            return self.scheduler.handle(sched.TaskFinished(action.worker_id))
        self._execute(task, self.workers[action.worker_id], action.gpu_ids)
        return ()

    def _execute(self, task, worker, gpu_ids):
        """Send ``task`` to ``worker`` with its arguments' values (and the function, once)."""
        spec = task.spec
        peer = self.peers[worker.token]
        dep_payloads = self._hand_out_all(peer, spec.deps)
        key = spec.function_key
        pickled = None
        if key is not None and key not in worker.functions:
            pickled = self._function(key)
            worker.functions.add(key)
        task.worker_id = worker.worker_id
        if spec.kind != ACTOR_METHOD:
            worker.started = self.dispatched
            self.dispatched += 1
        if spec.kind == ACTOR_CREATION:
            worker.actor_id = spec.actor_id
            worker.task = task
            gpu_ids = tuple(gpu_ids)
            self.actors[spec.actor_id].worker_id = worker.worker_id
        elif spec.kind != ACTOR_METHOD:
            worker.task = task
        self._send(worker.token, (protocol.EXECUTE, spec, dep_payloads, pickled, gpu_ids))
        if spec.generator is not None:
            self._stream_executing(task, worker.token)

    def _hand_out(self, peer, object_id):
        """A payload for ``peer`` to read; an ARENA or ON_DISK location is pinned for it."""
        try:
            kind, payload = self.objects.hand_out(object_id)
        except exceptions.ObjectLostError as exc:
            return ERROR, error_payload(exc)
        if kind == ARENA or kind == ON_DISK:
            peer.pins[object_id] = peer.pins.get(object_id, 0) + 1
        return kind, payload

    def _hand_out_all(self, peer, object_ids):
        """Payloads for ``peer`` to read, as ``_hand_out``, read back as one batch."""
        payloads = self.objects.hand_out_all(object_ids)
        pins = peer.pins
        for object_id, (kind, _payload) in zip(object_ids, payloads):
            if kind == ARENA or kind == ON_DISK:
                pins[object_id] = pins.get(object_id, 0) + 1
        return payloads

    def _report_infeasible(self, task_id, resources):
        task = self.tasks.get(task_id)
        if task is None:
            return
        demand = ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items()))
        have = ", ".join(f"{k}: {v:g}" for k, v in sorted(self.resources.items()))
        self._send(task.owner, (protocol.WARN,
                                f"Task {task.spec.name} cannot be scheduled: it asks for "
                                f"{{{demand}}} but no node has that much (this node: "
                                f"{{{have}}}). It stays pending until it is cancelled or a "
                                "node with those resources joins the cluster."))

    # ── workers ────────────────────────────────────────────────────────────────────────────

    def _worker_gone(self, worker):
        """The worker's connection closed: it exited, crashed or was killed."""
        self.workers.pop(worker.worker_id, None)
        self._schedule(sched.WorkerDied(worker.worker_id))
        self.memory.worker_gone(worker.worker_id)

    def _task_lost(self, task_id):
        """The worker running ``task_id`` died without being released."""
        task = self.tasks.get(task_id)
        if task is not None and task.spec.kind != ACTOR_CREATION:
            out_of_memory = self.memory.kill_message(task.worker_id)
            task.worker_id = None
            if TaskTable.retried_after_loss(task):
                task.retry()
                self._resubmit(task)
            elif out_of_memory and not task.cancelled:
                self._fail(task, exceptions.OutOfMemoryError(out_of_memory))
            else:
                self._fail(task, TaskTable.lost_error(task))
            return
        # A dedicated worker: the actor's creation was running, or the actor lived there.
        if task is not None:
            self.tasks.remove(task_id)
        actor = self.actors.get(task_id)
        if actor is not None:
            self._actor_worker_lost(actor)

    def _on_memory_reading(self, token, msg):
        """Memory in use passed the threshold: kill the worker the monitor's rule picks."""
        _, used, total, worker_memory = msg
        candidates = self._memory_candidates(worker_memory)
        victim = self.memory.choose(used, total, candidates)
        if victim is None:
            return
        message = self.memory.describe(victim, used, total, self.config.get("node_ip",
                                                                            "127.0.0.1"),
                                       self.node_id)
        self.memory.record_kill(victim.worker_id, message)
        if victim.actor_id is not None:
            actor = self.actors.get(victim.actor_id)
            if actor is not None and not actor.can_restart():
                actor.cause = actor_died_error(actor.actor_id, actor.class_name, message)
        self._out.append(KillWorker(victim.worker_id))
        then = ("it will run again" if victim.retriable else
                "it cannot run again: it fails with OutOfMemoryError")
        self._send(victim.owner, (protocol.WARN, (
            f"The worker running {victim.name} (pid {victim.pid}) was killed because the "
            f"node's memory use, {used / total:.1%}, passed its threshold of "
            f"{self.memory.usage_threshold:.1%}; {then}.")))

    def _memory_candidates(self, worker_memory):
        """The workers the memory monitor may kill: those running a task or an actor."""
        candidates = []
        for worker in self.workers.values():
            if worker.actor_id is not None:
                actor = self.actors.get(worker.actor_id)
                if actor is None or actor.state == DEAD:
                    continue
                candidates.append(Candidate(
                    worker.worker_id, actor.owner, worker.started, actor.can_restart(),
                    actor.creation.name, actor.actor_id, worker.pid,
                    worker_memory.get(worker.worker_id), actor.actor_id))
                continue
            task = worker.task
            if task is None or task.worker_id != worker.worker_id:
                continue
            candidates.append(Candidate(
                worker.worker_id, task.owner, worker.started,
                not task.cancelled and retries_left(task.spec) != 0, task.spec.name,
                task.spec.task_id, worker.pid, worker_memory.get(worker.worker_id)))
        return candidates

    def _resubmit(self, task):
        spec = task.spec
        if group_of(spec) is not None:   # its bundle may be gone, or elsewhere now
            self.parked[spec.task_id] = task
            self._retry_parked()
            return
        missing = self.objects.missing(spec.deps)
        if missing:
            self._want(missing)
        self._schedule(sched.SubmitTask(spec.task_id, self._demand(spec), missing))

    def _release_worker(self, worker_id):
        """An actor's worker is done on purpose: free its resources and stop the process."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        worker.actor_id = None
        self._schedule(sched.WorkerReleased(worker_id))
        self._out.append(KillWorker(worker_id))

    # ── results ────────────────────────────────────────────────────────────────────────────

    def _seal(self, object_id, kind, payload, contained):
        """Store a value and tell whoever waits for it."""
        objects = self.objects
        if contained and self.clustered:
            for inner in contained:
                if objects.get(inner) is None:
                    self._borrow(inner)   # the value holds it: so must this node
        entry, subscribers = objects.seal(object_id, kind, payload, contained)
        if subscribers:
            self._announce(object_id, entry, subscribers)
        if entry.kind == REMOTE:
            # Ready, but not here: a reader here waits until it is pulled.
            if (object_id in self.awaited or object_id in self.actor_waits
                    or object_id in self.locates):
                self._pull(object_id)
        else:
            self._became_local(object_id)
        objects.after_seal(object_id)

    def _announce(self, object_id, entry, tokens):
        """Tell ``tokens`` that ``object_id`` is ready: clients as ``announced``, nodes as
        ``remote_form`` (where to fetch it)."""
        msg = None
        peers = self.peers
        for token in tokens:
            peer = peers.get(token)
            if peer is not None and peer.kind == "node":
                self._send(token, (protocol.OBJECT, object_id)
                           + self.objects.remote_form(entry, self.node_id))
            else:
                if msg is None:
                    msg = (protocol.OBJECT, object_id) + self.objects.announced(entry)
                self._send(token, msg)

    def _became_local(self, object_id):
        """``object_id`` can be read here now: run what waited for it."""
        self._schedule(sched.ObjectReady(object_id))
        self.awaited.discard(object_id)
        waiting = self.actor_waits.pop(object_id, None)
        if waiting:
            for actor_id in waiting:
                actor = self.actors.get(actor_id)
                if actor is not None:
                    self._pump(actor)
        locates = self.locates.pop(object_id, None)
        if locates:
            for record in locates:
                self._locate_progress(record)

    def _fail(self, task, error):
        payload = error_payload(error)
        self._finish(task, [(oid, ERROR, payload, ()) for oid in task.spec.return_ids()])

    def _finish(self, task, results):
        spec = task.spec
        self.tasks.remove(spec.task_id)
        if self.leases:
            self._lease_finished(task)
        owner = task.owner
        owner_peer = self.peers.get(owner)
        worker = self.workers.get(task.worker_id) if task.worker_id is not None else None
        objects = self.objects
        to_node = owner_peer is not None and owner_peer.kind == "node"
        held = ()
        if spec.generator is not None:
            results, held = self._generator_finished(task, results)
        error = None
        for object_id, kind, payload, contained in results:
            if kind == ERROR:
                error = payload
            if (kind == ARENA or kind == ON_DISK) and worker is not None:
                self.peers[worker.token].reservations.discard(payload[0])
            if owner_peer is not None and object_id in owner_peer.refs and not to_node:
                # The owner always hears about its results; no SUBSCRIBE needed.
                objects.subscribe(object_id, owner)
            self._seal(object_id, kind, payload, contained)
        for object_id in held:
            objects.release(object_id)
        if to_node:
            self._send_results(owner, owner_peer, spec, [result[0] for result in results])
        self._record_finished(task, worker, error)
        if spec.kind == ACTOR_CREATION:
            return  # an actor keeps its creation arguments: a restart needs them again
        for object_id in spec.deps:
            objects.release(object_id)
        for object_id in spec.contained:
            objects.release(object_id)

    def _drop_results(self, token, results):
        """A run's results that will not be kept (the task runs again): free their storage."""
        reservations = self.peers[token].reservations
        for _oid, kind, payload, _contained in results:
            if kind == ARENA or kind == ON_DISK:
                reservations.discard(payload[0])
                self.objects.discard(kind, payload)

    # ── message handlers ───────────────────────────────────────────────────────────────────

    def _enter_task(self, token, peer, spec):
        """A task of ``token``'s in the task table, its returns held for it."""
        parent = peer.worker.task if peer.worker is not None else None
        task = self.tasks.add(spec, token, parent)
        objects = self.objects
        refs = peer.refs
        for object_id in spec.return_ids():
            if object_id not in refs:   # (a direct task handed back may have promised it)
                objects.expect(object_id).holds += 1
                refs.add(object_id)
        if peer.promised:
            peer.promised.difference_update(spec.return_ids())
        return task

    def _on_submit(self, token, msg):
        spec = msg[1]
        peer = self.peers[token]
        task = self._enter_task(token, peer, spec)
        objects = self.objects
        if spec.name == LEASE_NAME and peer.kind == "driver":
            self._lease_submitted(task, token)
        if spec.generator is not None:
            self._stream_submitted(task)
        if self.head_lost is not None and peer.kind != "node":
            self._fail(task, exceptions.RaySystemError(
                f"The cluster's head is gone ({self.head_lost}): no new task can be "
                "scheduled. Restart the head and the nodes, then the driver."))
            return
        for object_id in spec.deps:
            if not self._hold_object(object_id):
                # Unknown: freed, or never existed. The task fails with ObjectLostError.
                objects.expect(object_id).holds += 1
                self._seal(object_id, ERROR, error_payload(exceptions.ObjectLostError(
                    object_id.hex())), ())
        for object_id in spec.contained:
            self._hold_object(object_id)
        if spec.kind == ACTOR_METHOD:
            self._submit_actor_call(task)
            return
        missing = objects.missing(spec.deps)
        target = None
        if self._special_strategy(spec, peer):   # a placement group or labels
            try:
                target = self._place_special(spec, peer.kind == "node")
            except (exceptions.TaskPlacementGroupRemoved, exceptions.ActorPlacementGroupRemoved,
                    exceptions.TaskUnschedulableError,
                    exceptions.ActorUnschedulableError) as exc:
                self._fail(task, exc)
                return
        elif (self.clustered or spec.strategy is not None) and peer.kind != "node":
            # (from a node: placed here by it, runs here; alone, a hard node affinity to
            # another node fails as in a cluster)
            try:
                target = self._place(spec)
            except (exceptions.TaskUnschedulableError,
                    exceptions.ActorUnschedulableError) as exc:
                self._fail(task, exc)
                return
        if spec.kind == ACTOR_CREATION:
            self._create_actor(task, missing, target)
        elif target is PARKED:
            self._park(task)
        elif target is not None:
            self._forward(task, target)
        else:
            self._want(missing)
            self._schedule(sched.SubmitTask(spec.task_id, self._demand(spec), missing))

    def _hold_object(self, object_id):
        """One more hold on ``object_id``, borrowing it from its owner if this node has no
        entry for it. False if it is unknown here and cannot be borrowed."""
        objects = self.objects
        return objects.hold(object_id) or (self._borrow(object_id) and objects.hold(object_id))

    def _want(self, missing):
        """Local tasks wait for ``missing``: pull what is on another node, note the rest."""
        objects = self.objects
        for object_id in missing:
            entry = objects.get(object_id)
            if entry is not None and entry.kind == REMOTE:
                self._pull(object_id)
            else:
                self.awaited.add(object_id)

    def _demand(self, spec):
        """What the scheduler places ``spec`` by: its resources, unless they are not enforced;
        in a placement group, its group's resources (see core/placement_groups.py)."""
        if not self.enforce_resources:
            return {}
        group_id = group_of(spec)
        if group_id is not None:
            return group_demand(spec.resources or {}, group_id.hex(), spec.strategy[2])
        return spec.resources

    def _hold(self, creation):
        if not self.enforce_resources:
            return None
        group_id = group_of(creation)
        if group_id is not None:
            return group_demand(creation.actor.hold or {}, group_id.hex(),
                                creation.strategy[2])
        return creation.actor.hold

    def _on_export(self, token, msg):
        # Kept here too: tasks of this node's own clients never need to ask the store.
        self.function_cache.setdefault(msg[1], msg[2])
        self.control.export_function(msg[1], msg[2])

    def _function(self, key):
        """A pickled function, from the control store (once per node: they never change)."""
        cache = self.function_cache
        pickled = cache.get(key)
        if pickled is None:
            pickled = cache[key] = self.control.get_function(key)
        return pickled

    def _on_put(self, token, msg):
        _, object_id, kind, payload, contained = msg
        peer = self.peers[token]
        if kind == ARENA or kind == ON_DISK:
            peer.reservations.discard(payload[0])
        self.objects.expect(object_id).holds += 1
        peer.refs.add(object_id)
        self._seal(object_id, kind, payload, contained)

    def _on_subscribe(self, token, msg):
        objects = self.objects
        for object_id in msg[1]:
            entry = objects.get(object_id)
            if entry is None:
                self._send(token, (protocol.OBJECT, object_id, ERROR, error_payload(
                    exceptions.ObjectLostError(object_id.hex()))))
            elif entry.kind is not None:
                self._announce(object_id, entry, (token,))
            else:
                objects.subscribe(object_id, token)

    def _on_add_refs(self, token, msg):
        peer = self.peers[token]
        refs = peer.refs
        hold = self.objects.hold if peer.kind == "node" or not self.clustered else self._hold_object
        for object_id in msg[1]:
            if object_id not in refs and hold(object_id):
                refs.add(object_id)

    def _on_drop_refs(self, token, msg):
        refs = self.peers[token].refs
        release = self.objects.release
        for object_id in msg[1]:
            if object_id in refs:
                refs.discard(object_id)
                release(object_id)

    def _on_unpin(self, token, msg):
        pins = self.peers[token].pins
        for object_id in msg[1]:
            count = pins.get(object_id, 0)
            if count:
                if count == 1:
                    del pins[object_id]
                else:
                    pins[object_id] = count - 1
                self.objects.unpin(object_id)

    def _on_blocked(self, token, msg):
        self._schedule(sched.WorkerBlocked(self.peers[token].worker.worker_id))

    def _on_unblocked(self, token, msg):
        self._schedule(sched.WorkerUnblocked(self.peers[token].worker.worker_id))

    def _on_task_done(self, token, msg):
        _, task_id, results, retry, exiting, span = msg
        worker = self.peers[token].worker
        task = self.tasks.get(task_id)
        if task is not None:
            task.span = span
            if task.spec.name != LEASE_NAME:
                self.timeline.append((task.spec.name, worker.pid, span, task_id))
        if worker.actor_id is not None:
            self._actor_task_done(worker, task_id, task, results, retry, exiting)
            return
        worker.task = None
        if exiting:
            self._schedule(sched.WorkerRetiring(worker.worker_id))
        if task is not None:
            if TaskTable.retried_after_error(task, retry):
                self._drop_results(token, results)
                task.retry()
                self._schedule(sched.TaskFinished(worker.worker_id))
                self._resubmit(task)
                return
            self._finish(task, results)
        self._schedule(sched.TaskFinished(worker.worker_id))

    def _on_cancel(self, token, msg):
        _, object_id, force, recursive = msg
        for task in self.tasks.cancel(ids.task_id_of(object_id), force, recursive):
            self._cancel(task)

    def _cancel(self, task):
        """Stop one task marked cancelled: drop it if pending, interrupt it if running."""
        spec = task.spec
        if spec.kind == ACTOR_METHOD:
            if task.node is not None:   # the actor lives on another node
                self._send(task.node, (protocol.CANCEL, ids.object_id(spec.task_id, 0),
                                       False, False))
                return
            actor = self.actors.get(spec.actor_id)
            if actor is None:
                return
            if actor.drop_queued(task):
                self._fail(task, exceptions.TaskCancelledError(spec.task_id.hex()))
            elif spec.task_id in actor.inflight and actor.worker_id is not None:
                # Sent already: the worker drops it if it has not started, and cancels the
                # coroutine of an asyncio actor; a running sync call finishes (as in Ray).
                self._send(self.workers[actor.worker_id].token,
                           (protocol.INTERRUPT, spec.task_id))
            return
        if spec.kind == ACTOR_CREATION:
            return  # actors end through kill(), not cancel()
        if task.node is not None:   # placed on another node: it cancels it there
            self._send(task.node, (protocol.CANCEL, spec.return_ids()[0] if spec.num_returns
                                   else ids.object_id(spec.task_id, 0),
                                   task.force_cancelled, False))
            return
        if self.parked.pop(spec.task_id, None) is not None:   # waiting for a group or node
            self._fail(task, exceptions.TaskCancelledError(spec.task_id.hex()))
        elif task.worker_id is None:
            self._schedule(sched.CancelTask(spec.task_id))
        elif task.force_cancelled:
            self._out.append(KillWorker(task.worker_id))
        else:
            # The INTERRUPT names the task, for a worker the signal reaches before the task
            # has started (it then does not start); the signal stops a running one.
            self._send(self.workers[task.worker_id].token, (protocol.INTERRUPT, spec.task_id))
            self._out.append(InterruptWorker(task.worker_id))

    def _on_free(self, token, msg):
        for object_id in msg[1]:
            self.objects.free_early(object_id)

    def _on_request(self, token, msg):
        _, request_id, op, args = msg
        method = self.requests.get(op)
        self._request_id = request_id
        try:
            if method is None:
                raise ValueError(f"unknown request {op!r}")
            result = method(token, *args)
        except Exception as exc:
            self._send(token, (protocol.REPLY, request_id, False, exc))
        else:
            if result is not DEFERRED:
                self._send(token, (protocol.REPLY, request_id, True, result))

    # ── actors ─────────────────────────────────────────────────────────────────────────────

    def _create_actor(self, task, missing, target=None):
        spec = task.spec
        actor = Actor(spec, task.owner)
        placed_here = self.peers[task.owner].kind == "node"  # by its owner, which entered it
        self.actors[actor.actor_id] = actor
        self.objects.watched.add(actor.object_id)
        actor.namespace = self.control.namespace_of(spec.actor.namespace, spec.job_id)
        if actor.name is not None or actor.detached:
            # Named and detached actors do not end with their handles.
            self.objects.hold(actor.object_id)
            actor.node_hold = True
        if actor.name is None and not placed_here:
            # (a named one was entered by the client, before submitting)
            self.control.register_actor(None, spec.actor.namespace, spec.job_id,
                                        actor.actor_id, actor.meta, detached=actor.detached)
        if target is PARKED:
            self.control.actor_state(actor.actor_id, PENDING, self.node_id)
            self._park(task)
            return
        if target is not None:
            actor.node = target
            self.control.actor_state(actor.actor_id, PENDING, target.node_id)
            self._forward(task, target)
            return
        self.control.actor_state(actor.actor_id, PENDING, self.node_id)
        self._want(missing)     # as for a task: pull arguments stored on another node
        self._schedule(sched.SubmitTask(spec.task_id, self._demand(spec), missing,
                                        dedicated=True, hold=self._hold(spec)))

    def _submit_actor_call(self, task):
        spec = task.spec
        actor = self.actors.get(spec.actor_id)
        if actor is None and self.clustered:
            remote = self._actor_node(spec.actor_id)
            if remote is not None:
                self._forward(task, remote)
                return
        elif actor is not None and actor.node is not None and actor.state != DEAD:
            self._forward(task, actor.node)   # it lives there; that node queues and orders
            return
        if actor is None or actor.state == DEAD:
            self._fail(task, actor.died_error() if actor is not None else actor_died_error(
                spec.actor_id, None, "The actor is dead: it was killed, exited, or its "
                "process died and it has no restarts left."))
            return
        if spec.method == "__ray_terminate__":
            spec.max_retries = 0
        elif spec.max_retries is None:
            spec.max_retries = actor.default_max_retries()
        actor.enqueue(task)
        self._pump(actor)

    def _pump(self, actor):
        """Send the actor the calls it may have now (see Actor.take_sendable)."""
        calls, waits = actor.take_sendable(self.objects.is_pending)
        for object_id in waits:
            self.actor_waits.setdefault(object_id, set()).add(actor.actor_id)
        if calls:
            worker = self.workers[actor.worker_id]
            for task in calls:
                self._execute(task, worker, ())

    def _actor_started(self, actor, worker, results):
        """The creation task returned: the actor is alive, or failed in __init__."""
        if results and results[0][1] == ERROR:
            cause = serialization.deserialize(results[0][2])
            actor.cause = exceptions.ActorDiedError(cause if isinstance(
                cause, exceptions.RayTaskError) else None)
            self._actor_dead(actor)
            return
        actor._transition_pending_alive(worker.worker_id)
        self.control.actor_state(actor.actor_id, ALIVE, self.node_id)
        if actor.channel_asks:
            self._open_channels(actor)
        if actor.terminating and not actor.has_calls():
            self._actor_dead(actor)  # every handle went before it even started
            return
        self._pump(actor)  # calls queued meanwhile still run; the last one ends the actor

    def _actor_worker_lost(self, actor):
        """The actor's process died (crash, kill -9, or kill(no_restart=False))."""
        if actor.state == DEAD:
            return
        if not actor.can_restart():
            self._actor_dead(actor)
            return
        retry = []
        for task in actor._transition_alive_restarting():
            if task.can_retry():
                task.retry()
                retry.append(task)
            else:
                self._fail(task, actor.died_error())
        actor.requeue_front(retry)
        self.control.actor_state(actor.actor_id, RESTARTING, self.node_id)
        creation = actor.creation
        creation.attempt = actor.num_restarts  # the worker tells __init__ it is a restart
        self.tasks.add(creation, actor.owner)
        missing = self.objects.missing(creation.deps)
        self._want(missing)
        self._schedule(sched.SubmitTask(creation.task_id, self._demand(creation), missing,
                                        dedicated=True, hold=self._hold(creation)))

    def _actor_dead(self, actor):
        """The actor is gone for good: fail what waits for it, free what it held."""
        if actor.state == DEAD:
            return
        worker_id = actor.worker_id
        error = actor.died_error()
        for task in actor._transition_any_dead():
            self._fail(task, error)
        if actor.channel_nonces:
            self._channels_of_dead(actor)
        if actor.node is None or not actor.node.alive:  # else its node reports that
            self.control.actor_state(actor.actor_id, DEAD, self.node_id)
        self._record_dead_actor(actor, worker_id)
        if worker_id is not None:
            self._release_worker(worker_id)
        objects = self.objects
        for object_id in actor.creation.deps:
            objects.release(object_id)
        for object_id in actor.creation.contained:
            objects.release(object_id)
        if actor.node_hold:
            actor.node_hold = False
            objects.release(actor.object_id)
        if actor.unreferenced:
            del self.actors[actor.actor_id]
        # Otherwise the record stays (state DEAD) so later calls fail with the right error;
        # it goes when the actor object does.

    def _actor_object_deleted(self, object_id):
        """No handle to the actor is left anywhere: stop it once its calls are done."""
        actor = self.actors.get(ids.task_id_of(object_id))
        if actor is None:
            return
        if actor.state == DEAD:
            del self.actors[actor.actor_id]
            return
        actor.terminating = True
        actor.unreferenced = True
        if actor.state == ALIVE and not actor.has_calls():
            self._actor_dead(actor)

    def _actor_task_done(self, worker, task_id, task, results, retry, exiting):
        actor = self.actors.get(worker.actor_id)
        if task is not None and task.spec.kind == ACTOR_CREATION:
            worker.task = None
            self._finish(task, results)
            self._schedule(sched.TaskFinished(worker.worker_id))
            if actor is not None:
                if exiting:  # sys.exit(0) in __init__: an intended exit, no restart
                    actor.terminating = True
                    if type(exiting) is str:
                        actor.cause = actor.died_error(exiting)
                    self._actor_dead(actor)
                else:
                    self._actor_started(actor, worker, results)
            return
        if actor is None:
            if task is not None:
                self._finish(task, results)
            return
        actor.inflight.pop(task_id, None)
        if task is not None:
            if exiting:
                # exit_actor(), __ray_terminate__ or sys.exit(0) (``exiting`` then says so):
                # this call ends the actor, which is not restarted.
                actor.terminating = True
                if task.spec.method == "__ray_terminate__":
                    self._finish(task, results)
                else:
                    if type(exiting) is str:  # later calls say why, too
                        actor.cause = actor.died_error(exiting)
                    self._fail(task, actor.cause or actor.died_error(
                        "The actor exited via exit_actor()."))
            elif TaskTable.retried_after_error(task, retry):
                self._drop_results(worker.token, results)
                task.retry()
                actor.requeue_front([task])
            else:
                self._finish(task, results)
        if exiting or (actor.terminating and not actor.has_calls()):
            self._actor_dead(actor)
        else:
            self._pump(actor)

    # ── requests ───────────────────────────────────────────────────────────────────────────

    def _request_alloc(self, token, size):
        kind, where = self.objects.reserve(size)
        self.peers[token].reservations.add(where)
        return kind, where

    def _request_locate(self, token, object_ids):
        peer = self.peers[token]
        objects = self.objects
        elsewhere = [oid for oid in object_ids if objects.not_local(oid)]
        if not elsewhere:
            return self._hand_out_all(peer, object_ids)
        # On another node: answered once pulled here (or failed).
        record = [token, self._request_id, object_ids]
        for object_id in elsewhere:
            self.locates.setdefault(object_id, []).append(record)
            entry = objects.get(object_id)
            if entry.kind == REMOTE:
                self._pull(object_id)
        return DEFERRED

    def _locate_progress(self, record):
        token, request_id, object_ids = record
        if request_id is None or any(self.objects.not_local(oid) for oid in object_ids):
            return
        record[1] = None
        peer = self.peers.get(token)
        if peer is not None:
            self._send(token, (protocol.REPLY, request_id, True,
                               self._hand_out_all(peer, object_ids)))

    def _request_shutdown(self, token):
        self._out.append(Stop())

    def _request_flush_output(self, token):
        # The REPLY (sent after this action) follows the LOGs the drain relays.
        self._out.append(DrainOutput())

    def _request_cluster_resources(self, token):
        return self.control.cluster_resources()

    def _request_available_resources(self, token):
        if self.remote:
            total = self.scheduler.available_resources()
            for remote in self.remote.values():
                if remote.alive:
                    for name, amount in remote.available.items():
                        total[name] = total.get(name, 0) + amount
            return {name: amount for name, amount in total.items() if amount > 0}
        if self.enforce_resources:
            return self.scheduler.available_resources()
        # Not enforced: what is left of the totals after what runs and what actors hold.
        free = {name: sched.units(amount) for name, amount in self.resources.items()}
        used = [t.spec.resources for t in self.tasks.tasks.values()
                if t.worker_id is not None and t.spec.kind != ACTOR_METHOD]
        used += [a.creation.actor.hold or {} for a in self.actors.values() if a.state == ALIVE]
        for demand in used:
            for name, amount in (demand or {}).items():
                free[name] = free.get(name, 0) - sched.units(amount)
        return {name: units / sched.RESOURCE_UNIT for name, units in free.items() if units > 0}

    def _request_nodes(self, token):
        return self.control.nodes()

    def _request_stats(self, token):
        return {"workers": {w.worker_id: w.pid for w in self.workers.values()},
                "tasks": len(self.tasks), "functions": self.control.stats()["functions"],
                **self.objects.stats()}

    def _request_set_namespace(self, token, namespace):
        self.control.set_job_namespace(self.peers[token].job_id, namespace)

    def _request_set_job_metadata(self, token, metadata):
        self.control.set_job_metadata(self.peers[token].job_id, metadata)

    def _request_register_actor(self, token, name, namespace, job_id, actor_id, meta,
                                get_if_exists):
        existing = self.control.register_actor(name, namespace, job_id, actor_id, meta,
                                               get_if_exists)
        if existing is not None:
            self._add_hold(token, ids.object_id(existing[0], 0))
        return existing

    def _request_get_actor(self, token, name, namespace, job_id):
        found = self.control.get_named_actor(name, namespace, job_id)
        if found is None:
            return None
        actor = self.actors.get(found[0])
        if actor is None and self.clustered:   # it lives on another node, maybe
            if self._actor_node(found[0]) is None:
                return None
        elif actor is None or actor.state == DEAD:
            return None
        self._add_hold(token, ids.object_id(found[0], 0))
        return found

    def _request_list_named_actors(self, token, all_namespaces, namespace, job_id):
        return self.control.list_named_actors(all_namespaces, namespace, job_id)

    def _add_hold(self, token, object_id):
        refs = self.peers[token].refs
        if object_id not in refs and self._hold_object(object_id):
            refs.add(object_id)

    def _request_kill_actor(self, token, actor_id, no_restart):
        actor = self.actors.get(actor_id)
        remote = actor.node if actor is not None else (
            self._actor_node(actor_id) if self.clustered else None)
        if remote is not None:   # where it lives decides
            if actor is not None and no_restart:
                actor.restarts_left = 0
                actor.terminating = True
            self._send(remote, (protocol.REQUEST, 0, "kill_actor", (actor_id, no_restart)))
            return
        if actor is None or actor.state == DEAD:
            return
        if no_restart:
            actor.restarts_left = 0
            actor.terminating = True
        worker_id = actor.worker_id
        if worker_id is not None and actor.state == ALIVE:
            # Act on the death now rather than when the socket closes, so that calls made
            # after kill() returns already see a dead (or restarting) actor.
            self._release_worker(worker_id)
            actor.worker_id = None
            self._actor_worker_lost(actor)
        elif worker_id is not None:  # still constructing: its death is handled as TaskLost
            self._out.append(KillWorker(worker_id))
        elif no_restart:
            task = self.tasks.get(actor.creation.task_id)
            if task is not None and task.worker_id is None:
                self._schedule(sched.CancelTask(task.spec.task_id))
                self.tasks.remove(task.spec.task_id)
            elif task is not None:
                self._out.append(KillWorker(task.worker_id))
                return
            self._actor_dead(actor)

    def _request_timeline(self, token):
        return timeline.chrome_trace(self.timeline, self.config.get("node_ip", "127.0.0.1"))

