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
"""

import collections

from purerun import exceptions
from purerun.core.object_table import error_payload
from purerun.core.protocol import ARENA, ERROR, ON_DISK
from purerun.core import protocol
from purerun.core.task_spec import NORMAL

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
    ``scheduler``, ``task_history``, ``timeline``, ``_seal`` and ``_send``."""

    def _init_leases(self):
        self.leases = {}          #: lease task id -> Lease
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
        for task_id, attempt, name, job_id, lease_id, span, error, resources in msg[1]:
            worker_id, pid = self._lease_worker(lease_id)
            history.append((task_id, attempt, name, NORMAL, job_id, None, None, worker_id, pid,
                            span, error, resources, node_id))
            timeline.append((name, pid, span, task_id))

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
        for task_id, attempt, name, job_id, lease_id, resources in live:
            if lease_id is None:
                worker_id = pid = None
                state = "PENDING_NODE_ASSIGNMENT"
            else:
                worker_id, pid = self._lease_worker(lease_id)
                state = "RUNNING"
            records.append(self._task_record(task_id, attempt, name, NORMAL, job_id, None,
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

    def _request_direct_put(self, token, results):
        peer = self.peers[token]
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
