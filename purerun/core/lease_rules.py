"""The node's part of the direct call path (core/direct.py): leases, and what crosses them.

A driver runs its plain tasks on workers it leased: a lease is a task of the driver's
(``LEASE_NAME``, one CPU) whose body serves the driver over a socket of their own. The node
schedules, accounts and ends a lease as any task; it never sees the tasks run on it, only:

* ``DIRECT_DONE``: the driver's records of them, for the task history and the timeline;
* ``PROMISE`` / ``SEAL``: a return value the driver handed on before it came back is a
  pending entry here, which the driver seals when it comes (failed, if the driver leaves);
* ``direct_put``: a leased worker's results the node must hold (arena values, values holding
  refs), sealed for the driver that leased the worker;
* ``REVOKE``: other work waits for the room leases hold: their drivers give them back once
  the tasks sent on them are done (a driver keeps an idle lease a little while otherwise).

Leases are left out of the state API's and the timeline's view of tasks: the tasks run on
them are there instead, from the drivers' records.

A driver also calls asyncio and threaded actors of this node directly, on a channel to the
actor's worker (which Ray's rules allow: such actors promise no order among a caller's
calls). The node passes the driver's ask on (``ACTOR_DIRECT`` → ``ACTOR_CHANNEL``) once the
actor is alive, and settles the calls a channel had in flight when it closed
(``ACTOR_LOST``) as calls in flight on that incarnation of the actor: retried on its next
one while max_task_retries allow, else failed with why it died. A call on a channel that
ends the actor (exit_actor) says so first (``ACTOR_EXITING``).
"""

import collections

from purerun import exceptions
from purerun.core.actors import ALIVE, DEAD
from purerun.core.object_table import error_payload
from purerun.core.protocol import ARENA, ERROR, ON_DISK
from purerun.core import protocol
from purerun.core.task_spec import ACTOR_METHOD, NORMAL
from purerun.core.tasks import retries_left

__all__ = ["LeaseRules", "Lease"]

ENDED_LEASES_KEPT = 256   # ended leases whose worker a late record may still name


class Lease:
    """One lease task this node runs or queues."""

    __slots__ = ("owner", "revoked")

    def __init__(self, owner):
        self.owner = owner       #: the driver's token
        self.revoked = False     #: REVOKE was sent


class LeaseRules:
    """Mixed into NodeState: expects ``peers``, ``tasks``, ``workers``, ``objects``,
    ``actors``, ``scheduler``, ``task_history``, ``timeline``, ``_seal``, ``_send``,
    ``_fail``, ``_enter_task`` and ``_on_submit``."""

    def _init_leases(self):
        self.leases = {}          #: lease task id -> Lease
        self.actor_channels = {}  #: nonce of a channel asked for -> the asking driver's token
        #: lease task id -> (worker id, pid) of ended leases, newest last
        self.ended_leases = collections.OrderedDict()

    def _lease_submitted(self, task, token):
        self.leases[task.spec.task_id] = Lease(token)

    def _lease_finished(self, task):
        if self.leases.pop(task.spec.task_id, None) is not None:
            worker = self.workers.get(task.worker_id) if task.worker_id is not None else None
            if worker is not None:
                ended = self.ended_leases
                ended[task.spec.task_id] = (worker.worker_id, worker.pid)
                while len(ended) > ENDED_LEASES_KEPT:
                    ended.popitem(last=False)

    def _lease_worker(self, lease_id):
        """(worker id, pid) of the worker lease ``lease_id`` ran on, or (None, None)."""
        task = self.tasks.get(lease_id)
        if task is not None and task.worker_id is not None:
            worker = self.workers.get(task.worker_id)
            if worker is not None:
                return worker.worker_id, worker.pid
        return self.ended_leases.get(lease_id, (None, None))

    def _check_leases(self):
        """Revoke the running leases when other work waits for the CPUs they hold."""
        waiting = self.scheduler.num_waiting_for("CPU")
        if not waiting:
            return
        tasks = self.tasks
        running = []
        holders = set()
        queued = []
        for lease_id, lease in self.leases.items():
            task = tasks.get(lease_id)
            if task is None or task.worker_id is None:
                queued.append(lease.owner)
            else:
                holders.add(lease.owner)
                if not lease.revoked:
                    running.append((lease_id, lease))
        # A driver asking for more leases than it has is no reason to take its own back;
        # another driver's first lease is work that waits like any other.
        waiting -= sum(1 for owner in queued if owner in holders)
        if waiting <= 0 or not running:
            return
        for lease_id, lease in running:
            lease.revoked = True
            self._send(lease.owner, (protocol.REVOKE, lease_id))

    # ── message handlers ───────────────────────────────────────────────────────────────────

    def _on_direct_done(self, token, msg):
        history = self.task_history
        timeline = self.timeline
        node_id = self.node_id
        for task_id, attempt, name, job_id, where, span, error, resources in msg[1]:
            kind, actor_id, worker_id, pid = self._direct_where(where)
            history.append((task_id, attempt, name, kind, job_id, actor_id, None, worker_id,
                            pid, span, error, resources, node_id))
            timeline.append((name, pid, span, task_id))

    def _direct_where(self, where):
        """(kind, actor id, worker id, pid) of a direct call run ``where``: on the lease of
        that task id, or on a channel to the actor of that id."""
        actor = self.actors.get(where)
        if actor is None:
            worker_id, pid = self._lease_worker(where)
            return NORMAL, None, worker_id, pid
        worker = self.workers.get(actor.worker_id) if actor.worker_id is not None else None
        if worker is None:
            return ACTOR_METHOD, where, None, None
        return ACTOR_METHOD, where, worker.worker_id, worker.pid

    # ── actor channels ─────────────────────────────────────────────────────────────────────

    def _on_actor_direct(self, token, msg):
        _, actor_id, address, nonce = msg
        actor = self.actors.get(actor_id)
        if actor is None or actor.node is not None or actor.state == DEAD:
            return   # not here, or gone: the driver's calls go through the node
        self.actor_channels[nonce] = token
        actor.channel_asks.append((address, nonce))
        actor.channel_nonces.append(nonce)
        if actor.state == ALIVE:
            self._open_channels(actor)

    def _open_channels(self, actor):
        """Pass the drivers' asks on to the actor's worker (it is alive)."""
        asks, actor.channel_asks = actor.channel_asks, []
        worker = self.workers.get(actor.worker_id)
        if worker is None:
            return
        for address, nonce in asks:
            if nonce in self.actor_channels:   # (its driver is still here)
                self._send(worker.token, (protocol.ACTOR_CHANNEL, address, nonce))

    def _channels_of_dead(self, actor):
        """The actor is dead: its channels (and asks for them) with it."""
        for nonce in actor.channel_nonces:
            self.actor_channels.pop(nonce, None)
        actor.channel_asks = []
        actor.channel_nonces = []

    def _channels_of_gone(self, token):
        for nonce in [n for n, t in self.actor_channels.items() if t == token]:
            del self.actor_channels[nonce]

    def _on_actor_lost(self, token, msg):
        """Calls a channel had in flight when it closed. Unless the node has seen that
        incarnation end, its worker is dying: the calls are entered as sent to it, and its
        end settles them with the rest. Otherwise they are settled here."""
        _, actor_id, incarnation, specs = msg
        actor = self.actors.get(actor_id)
        current = actor is not None and actor.state == ALIVE and \
            actor.num_restarts == incarnation
        peer = self.peers[token]
        for spec in specs:
            if current or actor is None or actor.state == DEAD:
                self._on_submit(token, (protocol.SUBMIT, spec))   # (fails, if dead)
                continue
            if spec.max_retries is None:
                spec.max_retries = actor.default_max_retries()
            if retries_left(spec) != 0:
                spec.attempt += 1
                self._on_submit(token, (protocol.SUBMIT, spec))
            else:
                self._fail(self._enter_task(token, peer, spec), actor.died_error())

    def _on_actor_exiting(self, token, msg):
        worker = self.peers[token].worker
        actor = self.actors.get(worker.actor_id) if worker is not None else None
        if actor is None or actor.state == DEAD:
            return
        actor.terminating = True   # an intended exit: no restart
        if type(msg[1]) is str:
            actor.cause = actor.died_error(msg[1])
        self._actor_dead(actor)

    def _on_direct_live(self, token, msg):
        self.peers[token].direct_live = msg[1]

    def _live_direct(self, token):
        """The records of the direct tasks ``token`` said it has now (once: taken)."""
        peer = self.peers.get(token)
        live = peer.direct_live if peer is not None else None
        if not live:
            return []
        peer.direct_live = None
        records = []
        for task_id, attempt, name, job_id, where, resources in live:
            if where is None:
                kind, actor_id, worker_id, pid = NORMAL, None, None, None
                state = "PENDING_NODE_ASSIGNMENT"
            else:
                kind, actor_id, worker_id, pid = self._direct_where(where)
                state = "RUNNING"
            records.append(self._task_record(task_id, attempt, name, kind, job_id, actor_id,
                                             None, worker_id, pid, None, state, None,
                                             resources, self.node_id))
        return records

    def _on_promise(self, token, msg):
        peer = self.peers[token]
        refs = peer.refs
        objects = self.objects
        if peer.promised is None:
            peer.promised = set()
        for object_id in msg[1]:
            if object_id in refs:
                continue
            objects.expect(object_id).holds += 1
            refs.add(object_id)
            peer.promised.add(object_id)

    def _on_seal(self, token, msg):
        _, object_id, kind, payload = msg
        promised = self.peers[token].promised
        if promised is None or object_id not in promised:
            return
        promised.discard(object_id)
        entry = self.objects.get(object_id)
        if entry is not None and entry.kind is None:
            self._seal(object_id, kind, payload, ())

    def _request_direct_put(self, token, results, channel):
        peer = self.peers[token]
        if channel is not None:   # an actor's results, for the driver of that channel
            owner = self.peers.get(self.actor_channels.get(channel))
        else:
            lease = peer.worker.task if peer.worker is not None else None
            owner = self.peers.get(lease.owner) if lease is not None else None
        objects = self.objects
        for object_id, kind, payload, contained in results:
            if kind == ARENA or kind == ON_DISK:
                peer.reservations.discard(payload[0])
            if owner is None:   # the driver is gone: nobody will read it
                if kind == ARENA or kind == ON_DISK:
                    objects.discard(kind, payload)
                continue
            entry = objects.expect(object_id)
            if object_id not in owner.refs:
                entry.holds += 1
                owner.refs.add(object_id)
            if owner.promised:
                owner.promised.discard(object_id)
            if entry.kind is None:
                self._seal(object_id, kind, payload, contained)
            elif kind == ARENA or kind == ON_DISK:
                objects.discard(kind, payload)
        return None

    def _promises_of_gone(self, peer):
        """A driver left with values it promised still pending: they never come."""
        for object_id in peer.promised:
            entry = self.objects.get(object_id)
            if entry is not None and entry.kind is None:
                self._seal(object_id, ERROR, error_payload(exceptions.OwnerDiedError(
                    object_id.hex())), ())
        peer.promised = None
