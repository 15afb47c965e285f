"""The actor lifecycle and each actor's call queues.

::

                   creation returned                       worker died, restarts left
    PENDING ─────────────────────────────▶ ALIVE ─────────────────────────────────▶ RESTARTING
       │                                    │  ▲                                        │
       │ __init__ raised, exit_actor() in   │  └──────────── creation returned ─────────┘
       │ __init__, killed with no restart   │
       │                                    │ exit_actor(), kill(no_restart=True), the last
       ▼                                    ▼ handle gone and no call left, worker died and
     DEAD ◀─────────────────────────────── DEAD   no restart left (from RESTARTING too)

Transitions are the ``_transition_<from>_<to>`` methods of ``Actor``; each checks where it
starts. DEAD is final: the record stays (so later calls fail with the right error) until
the actor object is deleted.

Calls. Ray orders an actor's calls per caller only: calls from one caller run in the order
they were made, and a call waiting for its arguments holds back only that caller's later
calls. Each caller therefore has its own queue of calls *not yet sent* to the actor's
worker; a call is sent once the actor is ALIVE, its arguments exist, it heads its caller's
queue, and fewer than ``window`` calls are in flight. Sent calls are ``inflight``, in send
order, until the worker reports them done. A queued call can be cancelled by dropping it; an
in-flight one only by asking the worker (asyncio actors cancel the coroutine).

Pure: no socket, process or clock. NodeState drives it and carries out the consequences
(failing calls, resubmitting the creation, releasing resources).
"""

import collections

from purerun import exceptions
from purerun.core import ids

__all__ = ["PENDING", "ALIVE", "RESTARTING", "DEAD", "Actor", "ACTOR_PIPELINE_DEPTH"]

PENDING = "PENDING"
ALIVE = "ALIVE"
RESTARTING = "RESTARTING"
DEAD = "DEAD"

# Calls sent to an actor's worker beyond those it can run at once (max_concurrency): a worker
# finishing a call finds the next ones already in its socket instead of idling for a round
# trip through the node, and a burst goes out in one write. Measured with the microbenchmark's
# "1:1 actor calls" rows: 128 cost a threaded actor (max_concurrency=16) about a third of its
# calls per second against 1024 (14-15k/s vs 19-21k/s), since each finished call then wakes its
# reader thread for a single new one. Past the window, calls wait here and a cancel just drops
# them; inside it, the worker drops a cancelled call it has not started (INTERRUPT).
ACTOR_PIPELINE_DEPTH = 1024


class Actor:
    """One actor's life on this node: its state, where it runs, and the calls waiting for it.

    invariant: every call of ``queues`` and ``inflight`` is a live task of the TaskTable;
    a caller key is in ``queues`` exactly when its queue is non-empty.
    """

    __slots__ = ("actor_id", "creation", "owner", "state", "worker_id", "queues", "inflight",
                 "window", "restarts_left", "cause", "namespace", "terminating", "node_hold",
                 "meta", "num_restarts", "unreferenced", "node", "channel_asks", "channel_nonces")

    def __init__(self, creation, owner):
        spec = creation.actor
        self.actor_id = creation.actor_id
        self.node = None                #: the RemoteNode hosting it, if not this node
        self.creation = creation        #: the creation TaskSpec, re-run on each restart
        self.owner = owner              #: token of the process that created it
        self.state = PENDING
        self.worker_id = None           #: the worker hosting it (also while constructing)
        self.queues = {}                #: caller token -> deque of calls not sent yet
        self.inflight = {}              #: task id -> Task, sent and not finished, in order
        self.window = spec.max_concurrency + ACTOR_PIPELINE_DEPTH
        self.restarts_left = spec.max_restarts  #: -1: without end
        self.cause = None               #: the ActorDiedError later calls fail with, if known
        self.namespace = None           #: the namespace its name is registered in
        self.terminating = False        #: ends once no call is left (no handle, or no restart)
        self.node_hold = False          #: the node holds its actor object (named/detached)
        self.meta = spec.meta
        self.num_restarts = 0
        self.unreferenced = False       #: its actor object is deleted: no handle is left
        #: drivers' asks for a direct channel, (address, nonce), passed on once it is alive
        self.channel_asks = []
        self.channel_nonces = []        #: every ask's nonce (forgotten when it dies)

    @property
    def name(self):
        return self.creation.actor.name

    @property
    def detached(self):
        return self.creation.actor.detached

    @property
    def class_name(self):
        return self.creation.actor.class_name

    @property
    def object_id(self):
        """The actor object: the creation's return, which every handle holds."""
        return ids.object_id(self.creation.task_id, 0)

    # ── calls ──────────────────────────────────────────────────────────────────────────────

    def default_max_retries(self):
        return self.creation.actor.max_task_retries

    def enqueue(self, task):
        queue = self.queues.get(task.owner)
        if queue is None:
            queue = self.queues[task.owner] = collections.deque()
        queue.append(task)

    def requeue_front(self, tasks):
        """Put calls back at the head of their callers' queues, keeping their order."""
        for task in reversed(tasks):
            queue = self.queues.get(task.owner)
            if queue is None:
                queue = self.queues[task.owner] = collections.deque()
            queue.appendleft(task)

    def has_calls(self):
        return bool(self.queues) or bool(self.inflight)

    def take_sendable(self, is_missing):
        """The queued calls to send now, in send order; they become in flight.

        ``is_missing(object_id)`` says whether an argument does not exist yet. Callers are
        served round-robin, one call at a time, so one caller's burst cannot hold back
        another's; a caller whose head waits for an argument is skipped.

        Returns:
            (calls, waits): the calls to send, and for each caller skipped, the id its head
            waits for (the caller of ``take_sendable`` calls again once it exists).
        """
        sent = []
        waits = []
        if self.state != ALIVE:
            return sent, waits
        queues = self.queues
        inflight = self.inflight
        room = self.window - len(inflight)
        while room > 0 and queues:
            progress = False
            for caller in list(queues):
                queue = queues[caller]
                task = queue[0]
                waiting = _first_missing(task.spec.deps, is_missing)
                if waiting is not None:
                    if (caller, waiting) not in waits:
                        waits.append((caller, waiting))
                    continue
                queue.popleft()
                if not queue:
                    del queues[caller]
                inflight[task.spec.task_id] = task
                sent.append(task)
                progress = True
                room -= 1
                if room == 0:
                    break
            if not progress:
                break
        return sent, [w for _, w in waits]

    def drop_queued(self, task):
        """Remove a call not yet sent. Returns False if it is not queued here."""
        queue = self.queues.get(task.owner)
        if queue is None:
            return False
        try:
            queue.remove(task)
        except ValueError:
            return False
        if not queue:
            del self.queues[task.owner]
        return True

    def drain(self):
        """Every call queued or in flight, removed: the actor is ending."""
        calls = []
        for queue in self.queues.values():
            calls.extend(queue)
        self.queues.clear()
        calls.extend(self.inflight.values())
        self.inflight.clear()
        return calls

    # ── transitions ────────────────────────────────────────────────────────────────────────

    def _transition_pending_alive(self, worker_id):
        assert self.state in (PENDING, RESTARTING), self.state
        self.state = ALIVE
        self.worker_id = worker_id

    _transition_restarting_alive = _transition_pending_alive

    def _transition_alive_restarting(self):
        """The worker died and a restart is left: in-flight calls are returned for retry."""
        assert self.state in (ALIVE, PENDING, RESTARTING), self.state
        if self.restarts_left > 0:
            self.restarts_left -= 1
        self.num_restarts += 1
        self.state = RESTARTING
        self.worker_id = None
        calls = list(self.inflight.values())
        self.inflight.clear()
        return calls

    def _transition_any_dead(self):
        """The actor is gone for good; returns every call still waiting for it."""
        assert self.state != DEAD
        self.state = DEAD
        self.worker_id = None
        return self.drain()

    def can_restart(self):
        return not self.terminating and self.restarts_left != 0

    def died_error(self, message=None):
        """What calls of this (dead) actor fail with."""
        if self.cause is not None and message is None:
            return self.cause
        return actor_died_error(self.actor_id, self.class_name, message or (
            "The actor is dead: it was killed, exited, or its process died and it has no "
            "restarts left."))


def actor_died_error(actor_id, class_name, message):
    return exceptions.ActorDiedError({"actor_id": actor_id.hex(), "class_name": class_name,
                                      "error_message": message})


def _first_missing(deps, is_missing):
    for object_id in deps:
        if is_missing(object_id):
            return object_id
    return None
