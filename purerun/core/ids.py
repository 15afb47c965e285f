"""Identifiers: task, object, worker, node and job ids.

An id is raw bytes on the wire and in every table (cheap to hash and compare); the public
``*ID`` classes wrap them only where users see them.

A task id is a per-process prefix plus a counter, so making one costs a few hundred
nanoseconds and two processes never collide. The prefix is the number of the node the process
is attached to (4 bytes, issued by the control store, unique in the cluster) and 4 random
bytes: any node can tell from an id which node *owns* the object, that is, knows where its
value is (see core/node_state.py, "borrowing"). An object id is the id of the task that made it
plus a 4-byte index (return value ``i`` of that task); a ``put`` takes a fresh task id with index 0.
"""

import itertools
import os
import threading

TASK_ID_SIZE = 16
OBJECT_ID_SIZE = TASK_ID_SIZE + 4

NODE_NUMBER_SIZE = 4
# Node number 0: not attached to a node yet (no id this process makes should carry it).
UNNUMBERED = 0

_node_number = UNNUMBERED
_prefix = UNNUMBERED.to_bytes(NODE_NUMBER_SIZE, "little") + os.urandom(4)
_counter = itertools.count(1)
_pid = os.getpid()
_lock = threading.Lock()
# Called (once) by the first new_task_id of a process that does not know its node's number
# yet: a driver whose node has not said hello. It sets the number (see set_node_number).
_await_number = None


def set_node_number(number: int, await_number=None) -> None:
    """Make the ids of this process carry ``number``, its node's number (fresh prefix).

    Args:
        number: what the control store issued to the node this process is attached to.
        await_number: with ``number`` 0, a function that blocks until the number is known
            (and calls this function with it); the first id made waits for it.
    """
    global _node_number, _prefix, _await_number
    with _lock:
        _node_number = number
        _prefix = number.to_bytes(NODE_NUMBER_SIZE, "little") + os.urandom(4)
        _await_number = await_number if number == UNNUMBERED else None


def reseed():
    """Give this process a fresh id prefix (called in a freshly forked child)."""
    global _prefix, _counter, _pid
    with _lock:
        _prefix = _node_number.to_bytes(NODE_NUMBER_SIZE, "little") + os.urandom(4)
        _counter = itertools.count(1)
        _pid = os.getpid()


def _forked():
    global _pid
    _pid = None   # the next id made here reseeds


# A fork we did not make (user code forking a worker or a driver) must not repeat our ids;
# noticed at the fork, not by a getpid() per id.
os.register_at_fork(after_in_child=_forked)


def new_task_id() -> bytes:
    # next() on itertools.count is atomic under the GIL: no lock on the hot path.
    if _pid is None:
        reseed()
    if _await_number is not None:
        _await_number()
    return _prefix + next(_counter).to_bytes(8, "little")


def owner_number(object_or_task_id: bytes) -> int:
    """The number of the node that owns an object (or task): where it was submitted or put."""
    return int.from_bytes(object_or_task_id[:NODE_NUMBER_SIZE], "little")


def object_id(task_id: bytes, index: int) -> bytes:
    """The id of return value ``index`` (0-based) of task ``task_id``."""
    return task_id + index.to_bytes(4, "little")


def task_id_of(object_id: bytes) -> bytes:
    """The task that made ``object_id`` (for a put: the put's own id)."""
    return object_id[:TASK_ID_SIZE]


def job_id_bytes(job_number: int) -> bytes:
    """A job's 4-byte id from its number (the control store counts jobs from 1)."""
    return job_number.to_bytes(4, "little")


def new_put_id() -> bytes:
    return object_id(new_task_id(), 0)


def random_id(size: int = 16) -> bytes:
    return os.urandom(size)


class BaseID:
    """A public id: wraps bytes, hashable, with ``hex()`` and ``binary()`` as in Ray."""

    __slots__ = ("_id",)
    size = 16

    def __init__(self, id_bytes: bytes):
        if not isinstance(id_bytes, bytes):
            raise TypeError(f"{type(self).__name__} takes bytes, got {type(id_bytes).__name__}")
        self._id = id_bytes

    @classmethod
    def from_hex(cls, hex_id: str):
        return cls(bytes.fromhex(hex_id))

    @classmethod
    def from_random(cls):
        return cls(os.urandom(cls.size))

    @classmethod
    def nil(cls):
        return cls(b"\xff" * cls.size)

    def is_nil(self) -> bool:
        return self._id == b"\xff" * len(self._id)

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        return type(self) is type(other) and self._id == other._id

    def __reduce__(self):
        return type(self), (self._id,)

    def __repr__(self):
        return f"{type(self).__name__}({self.hex()})"


class JobID(BaseID):
    __slots__ = ()
    size = 4


class NodeID(BaseID):
    __slots__ = ()


class WorkerID(BaseID):
    __slots__ = ()


class TaskID(BaseID):
    __slots__ = ()


class ActorID(BaseID):
    __slots__ = ()


class ActorClassID(BaseID):
    __slots__ = ()


class FunctionID(BaseID):
    __slots__ = ()


class UniqueID(BaseID):
    __slots__ = ()


class PlacementGroupID(BaseID):
    __slots__ = ()


class ObjectID(BaseID):
    __slots__ = ()
    size = OBJECT_ID_SIZE
