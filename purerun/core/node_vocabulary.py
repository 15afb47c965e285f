"""The words NodeState speaks: its node-internal events, its actions, and its records of the
processes and nodes it talks to (core/node_state.py; the node process and tests use them too).
"""

__all__ = ["Action", "Send", "StartWorker", "KillWorker", "InterruptWorker", "PushObject",
           "Stop", "DrainOutput", "Peer", "Worker", "RemoteNode", "DRIVER_CONNECTED",
           "WORKER_STARTED", "DISCONNECTED", "WORKER_OUTPUT", "TICK", "NODE_DIED", "HEAD_LOST",
           "NODE_ADDED", "HEARTBEAT_ANSWER", "MEMORY_READING", "IDLE_CHECK", "DEFERRED", "fits"]

# ── node-internal events (never on the wire) ──────────────────────────────────────────────
DRIVER_CONNECTED = -1  # (DRIVER_CONNECTED, owner: bool)   answer: welcome_info(token)
WORKER_STARTED = -2    # (WORKER_STARTED, worker_id, pid)  the process of a StartWorker is up
DISCONNECTED = -3      # (DISCONNECTED,)                   the token's connection closed
WORKER_OUTPUT = -4     # (WORKER_OUTPUT, pid, stream, text) lines a worker printed
TICK = -5              # (TICK,)                           every HEARTBEAT_INTERVAL_S, with a head
NODE_DIED = -6         # (NODE_DIED, node_id)              the head declared another node dead
HEAD_LOST = -7         # (HEAD_LOST, reason)               the head's connection closed
NODE_ADDED = -8        # (NODE_ADDED,)                     the head says a node joined
HEARTBEAT_ANSWER = -9  # (HEARTBEAT_ANSWER, alive, node_table records)  the head's answer
# (MEMORY_READING, used, total, {worker id: bytes})  memory in use is over the monitor's
# threshold (core/memory_monitor.py); the workers' own memory, where it could be read
MEMORY_READING = -10
IDLE_CHECK = -11       # (IDLE_CHECK,)                     every WORKER_IDLE_CHECK_S

# A request method returns this when it answers later, itself (with _reply).
DEFERRED = object()

# ── actions ───────────────────────────────────────────────────────────────────────────────

class Action:
    __slots__ = ()

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other):
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None


class Send(Action):
    """Send ``msg`` to the connection ``token`` (dropped if it has closed)."""
    __slots__ = ("token", "msg")

    def __init__(self, token, msg):
        self.token = token
        self.msg = msg


class StartWorker(Action):
    """Start a worker process with this id; answer with WORKER_STARTED from its token, or
    DISCONNECTED if it never came up."""
    __slots__ = ("worker_id",)

    def __init__(self, worker_id):
        self.worker_id = worker_id


class KillWorker(Action):
    """Kill this worker's process (SIGKILL); its DISCONNECTED follows."""
    __slots__ = ("worker_id",)

    def __init__(self, worker_id):
        self.worker_id = worker_id


class InterruptWorker(Action):
    """Interrupt the task running on this worker (SIGINT: KeyboardInterrupt in the task)."""
    __slots__ = ("worker_id",)

    def __init__(self, worker_id):
        self.worker_id = worker_id


class PushObject(Action):
    """Stream the arena block ``(offset, length)`` of ``object_id`` (or those bytes of the
    file ``path``) to the node connected as ``token``, as DATA raw frames; then feed back
    ``(UNPIN, [object_id])`` from ``token``."""
    __slots__ = ("token", "object_id", "offset", "length", "path")

    def __init__(self, token, object_id, offset, length, path=None):
        self.token = token
        self.object_id = object_id
        self.offset = offset
        self.length = length
        self.path = path


class DrainOutput(Action):
    """Read what the workers' stdout and stderr pipes hold now, the last unfinished line too,
    and feed it as WORKER_OUTPUT before the actions after this one."""
    __slots__ = ()


class Stop(Action):
    """The node's work is over (its owner left, or shutdown was asked): stop serving."""
    __slots__ = ()


# ── per-connection records ────────────────────────────────────────────────────────────────

class Peer:
    """A connected process (driver or worker) and what it holds in the object table."""

    __slots__ = ("kind", "refs", "pins", "reservations", "worker", "job_id", "log_to_driver",
                 "node_id", "promised", "direct_live")

    def __init__(self, kind, job_id=None):
        self.kind = kind             #: "driver", "worker", or "node" (another node, connected)
        self.node_id = None          #: for a node
        self.refs = set()            #: object ids this process holds ObjectRefs to
        self.pins = {}               #: object id -> arena locations handed out, not returned
        self.reservations = set()    #: arena offsets and files reserved for it, not yet sealed
        self.worker = None           #: its Worker, for a worker
        self.job_id = job_id         #: 4 bytes, for a driver
        self.log_to_driver = True
        self.promised = None         #: a driver's PROMISEd ids not sealed yet (a set), or None
        self.direct_live = None      #: its direct tasks now, for its next state request


class Worker:
    __slots__ = ("worker_id", "pid", "token", "functions", "task", "actor_id", "started")

    def __init__(self, worker_id, pid, token):
        self.worker_id = worker_id
        self.pid = pid
        self.token = token
        self.functions = set()       #: function keys this worker has received
        self.task = None             #: the Task running here (tasks and actor creations)
        self.actor_id = None         #: the actor it hosts, from its creation's dispatch
        self.started = 0             #: when its task (actor creation) was sent, as an order


class RemoteNode:
    """Another node of the cluster, as this one sees it; also the token of the connection
    this node opens to it (the node process connects on the first Send to it).

    Every node talks to another as one of its clients (see protocol.py, node -> node): what
    this node places there, borrows from there or fetches from there goes out through this
    token, and the answers come back from it.
    """

    __slots__ = ("node_id", "number", "address", "alive", "resources", "available", "labels")

    def __init__(self, node_id, number, address):
        self.node_id = node_id
        self.number = number
        self.address = address       #: "host:port" of its TCP listener
        self.alive = True
        self.resources = {}          #: totals
        self.available = {}          #: free at its last report, less what was placed since
        self.labels = {}             #: its labels, from the node table

    def __repr__(self):
        return f"RemoteNode({self.node_id.hex()[:12]}, {self.address})"


def fits(demand, have):
    """Whether resources ``have`` cover ``demand`` (name to amount)."""
    return all(have.get(name, 0) + 1e-9 >= amount for name, amount in demand.items()
               if amount > 0)
