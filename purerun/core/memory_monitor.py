"""The memory monitor's rule: which worker the node kills when the host runs low on memory.

::

    core/node.py, every refresh interval          MemoryMonitor (this module, no I/O)
    ─────────────────────────────────────         ─────────────────────────────────────
    read (used, total): the cgroup's, else ─────▶ over_threshold(used, total)?
      the host's                                    no: nothing to do
    over: read each worker's own memory      ─▶   NodeState (MEMORY_READING): the running
                                                    tasks and actors, as Candidates
                                                  choose(used, total, candidates) ─▶ victim
                                                    ─▶ KillWorker; its task runs again while
                                                    retries allow, else OutOfMemoryError

The node acts before the kernel's OOM killer picks a victim of its own (the node, the
driver, or some other process of the host): it kills one worker of a task or actor, the
one whose loss costs least, and waits for that worker to be gone before it kills another,
so that memory freed by one kill is seen before the next.

Who is killed (Ray's group-by-owner policy):

1. Retriable work first: a task with retries left, an actor with restarts left. Only when
   none runs is a task or actor that cannot run again killed.
2. Among those, the running work is grouped by owner (the process that submitted it), and
   the group with the most running is picked: every owner keeps making progress, the one
   that asked for the most gives back first. Of two groups of one size, the one whose
   earliest work started later.
3. In that group, the work that started last: it has lost the least.

The driver is never a victim: only workers run tasks and actors.

Settings (Ray's names; the ``PURERUN_`` name wins over the ``RAY_`` one):

- ``memory_usage_threshold`` (default 0.95): the fraction of memory in use above which
  workers are killed. 0 turns the monitor off.
- ``memory_monitor_refresh_ms`` (default 250): how often memory is read. 0 turns the monitor
  off, as in Ray.
- ``min_memory_free_bytes`` (default -1, unused): when set, the threshold rises to leave at
  most this many bytes free (``max(total * threshold, total - min_free)``), as in Ray.

Pure: no process, clock or file here. The node reads memory and kills; this decides.
"""

__all__ = ["MemoryMonitor", "Candidate", "choose_victim", "threshold_bytes",
           "settings_from_env", "DEFAULT_USAGE_THRESHOLD", "DEFAULT_REFRESH_MS"]

# Ray's defaults: kill before the last 5% go, and look four times a second: a task that
# allocates fast gains at most a few hundred MB between two looks.
DEFAULT_USAGE_THRESHOLD = 0.95
DEFAULT_REFRESH_MS = 250
DEFAULT_MIN_FREE_BYTES = -1
# Where each setting may be given, first one set wins.
THRESHOLD_ENV_VARS = ("PURERUN_memory_usage_threshold", "RAY_memory_usage_threshold")
REFRESH_ENV_VARS = ("PURERUN_memory_monitor_refresh_ms", "RAY_memory_monitor_refresh_ms")
MIN_FREE_ENV_VARS = ("PURERUN_min_memory_free_bytes", "RAY_min_memory_free_bytes")

_GB = 1024 ** 3


def _setting(environ, names, parse, default, check, expected):
    for name in names:
        text = environ.get(name)
        if text is None or not text.strip():
            continue
        try:
            value = parse(text.strip())
        except ValueError:
            value = None
        if value is None or not check(value):
            raise ValueError(f"${name} must be {expected}, got {text!r}")
        return value
    return default


def settings_from_env(environ):
    """The memory monitor's settings from an environment mapping.

    Args:
        environ: the environment (``os.environ``, or the node's ``env``).

    Returns:
        ``(usage_threshold, refresh_ms, min_free_bytes)``.

    Raises:
        ValueError: a setting is not a number in its range; the message names the variable.
    """
    threshold = _setting(environ, THRESHOLD_ENV_VARS, float, DEFAULT_USAGE_THRESHOLD,
                         lambda v: 0 <= v <= 1, "a fraction from 0 to 1 (0: off)")
    refresh_ms = _setting(environ, REFRESH_ENV_VARS, int, DEFAULT_REFRESH_MS,
                          lambda v: v >= 0, "a whole number of milliseconds, 0 or more (0: off)")
    min_free = _setting(environ, MIN_FREE_ENV_VARS, int, DEFAULT_MIN_FREE_BYTES,
                        lambda v: v >= -1, "a whole number of bytes, or -1 (unused)")
    return threshold, refresh_ms, min_free


def threshold_bytes(total, usage_threshold, min_free_bytes=DEFAULT_MIN_FREE_BYTES):
    """The bytes in use above which workers are killed, of ``total``."""
    limit = total * usage_threshold
    if min_free_bytes >= 0:
        limit = max(limit, total - min_free_bytes)
    return limit


class Candidate:
    """A worker the monitor may kill: it runs one task, or hosts one actor.

    Attributes:
        worker_id: the node's id of the worker.
        owner: the token of the process that submitted the task (created the actor).
        started: when the task (the actor's creation) was sent to the worker, as an order:
            a later one is larger.
        retriable: it runs again if killed (retries or restarts left).
        name: the task's (the actor's creation's) name, for messages.
        task_id: the task's id (the actor's id), 16 bytes.
        pid: the worker's pid.
        memory: the bytes the worker uses by itself (shared pages left out), None if not
            known.
        actor_id: the actor it hosts, else None.
    """

    __slots__ = ("worker_id", "owner", "started", "retriable", "name", "task_id", "pid",
                 "memory", "actor_id")

    def __init__(self, worker_id, owner, started, retriable, name="", task_id=b"", pid=None,
                 memory=None, actor_id=None):
        self.worker_id = worker_id
        self.owner = owner
        self.started = started
        self.retriable = retriable
        self.name = name
        self.task_id = task_id
        self.pid = pid
        self.memory = memory
        self.actor_id = actor_id

    def __repr__(self):
        return (f"Candidate(worker {self.worker_id}, {self.name}, started {self.started}, "
                f"{'retriable' if self.retriable else 'not retriable'})")


def choose_victim(candidates):
    """The worker to kill first of ``candidates`` (see the module docstring), or None."""
    pool = [c for c in candidates if c.retriable] or list(candidates)
    if not pool:
        return None
    groups = {}
    for candidate in pool:
        groups.setdefault(candidate.owner, []).append(candidate)
    # Most running first; of equal groups, the one whose earliest work started last.
    group = max(groups.values(), key=lambda g: (len(g), min(c.started for c in g)))
    return max(group, key=lambda c: c.started)


class MemoryMonitor:
    """The monitor's state: its settings, and the kill it waits on.

    Args:
        usage_threshold: the fraction of memory in use above which a worker is killed
            (0: never).
        min_free_bytes: see ``threshold_bytes``.
    """

    def __init__(self, usage_threshold=DEFAULT_USAGE_THRESHOLD,
                 min_free_bytes=DEFAULT_MIN_FREE_BYTES):
        self.usage_threshold = usage_threshold
        self.min_free_bytes = min_free_bytes
        #: the worker killed last, until it is gone: no other is killed meanwhile
        self.pending = None
        #: worker id -> why it was killed (the OutOfMemoryError's message), until it is gone
        self.killed = {}

    @property
    def enabled(self):
        return self.usage_threshold > 0

    def over_threshold(self, used, total):
        """Whether ``used`` bytes of ``total`` call for a kill."""
        return (self.enabled and total > 0
                and used > threshold_bytes(total, self.usage_threshold, self.min_free_bytes))

    def choose(self, used, total, candidates):
        """The Candidate to kill for this reading, or None: under the threshold, a kill
        still waits for its worker to go, or nothing runs. The one chosen is pending from
        now on, until ``worker_gone`` for it."""
        if self.pending is not None or not self.over_threshold(used, total):
            return None
        victim = choose_victim(candidates)
        if victim is not None:
            self.pending = victim.worker_id
        return victim

    def record_kill(self, worker_id, message):
        self.killed[worker_id] = message

    def kill_message(self, worker_id):
        """Why ``worker_id`` was killed, if the monitor killed it, else None."""
        return self.killed.get(worker_id)

    def worker_gone(self, worker_id):
        """The worker's process is gone: the next reading may kill again."""
        self.killed.pop(worker_id, None)
        if self.pending == worker_id:
            self.pending = None

    def describe(self, victim, used, total, node_ip, node_id):
        """The message of the OutOfMemoryError a killed task raises (and of the warning
        its owner gets)."""
        what = "actor" if victim.actor_id is not None else "task"
        own = ("unknown" if victim.memory is None else f"{victim.memory / _GB:.2f}GB")
        return (
            f"Task was killed due to the node running low on memory.\n"
            f"Memory on the node (IP: {node_ip}, ID: {node_id.hex()}) where the {what} "
            f"({what} ID: {victim.task_id.hex()}, name={victim.name}, pid={victim.pid}, "
            f"memory used={own}) was running was {used / _GB:.2f}GB / {total / _GB:.2f}GB "
            f"({used / total:.6f}), which exceeds the memory usage threshold of "
            f"{self.usage_threshold:g}. purerun killed this worker because it was the most "
            f"recently started {'retriable ' if victim.retriable else ''}{what} of the "
            f"owner with the most work running here. Consider giving this node more memory, or running fewer tasks at once "
            f"by asking more CPUs (or memory=...) per task. To change the threshold, set "
            f"$PURERUN_memory_usage_threshold (or $RAY_memory_usage_threshold) when starting "
            f"the node; to turn the monitor off, set $PURERUN_memory_monitor_refresh_ms "
            f"(or $RAY_memory_monitor_refresh_ms) to 0.")
