"""The node's object table and shared-memory arena.

Every object of a node has an entry here: pending (a task will produce it) or ready, with
its payload — small values inline, large ones as a block of the arena. The arena is one
memfd (an anonymous shared-memory file, so the kernel frees it when the last process holding
it exits: a killed session cannot leak a segment); processes get its descriptor when they
connect and map it.

Capacity. When a new value does not fit, values nobody is reading (no pin: no zero-copy
view alive, no location handed out and not yet returned) are spilled to files in the session
directory, least recently used first, and read back into the arena when someone asks for
them. Only when pinned values alone leave no room does storing fail, with
ObjectStoreFullError.

Lifetime. An entry counts its holds: one per process holding an ObjectRef to it, one per
pending task that takes it as an argument, one per stored object that contains a ref to it.
Zero-copy views of the arena are counted apart, as pins. The data is freed when both counts
are zero — never earlier — and the entry with it.

The table knows nothing of sockets: subscribers are opaque tokens the node gives it.
"""

import collections
import mmap
import os

from purerun import exceptions
from purerun.core import protocol, serialization
from purerun.core.allocator import Allocator

# Share of total RAM the arena may use when object_store_memory is not given (Ray: 30%).
DEFAULT_STORE_FRACTION = 0.3
# Pages are only touched when written, so a large default costs nothing until used.
MIN_STORE_BYTES = 64 * 1024 * 1024

# Node-internal payload kind: the value was spilled to a file.
# payload: (path, total_size, meta_len, spans), spans relative to the start of the value.
STORED_ON_DISK = 4


class ObjectEntry:
    """One object. ``kind`` is None while pending, else a payload kind (protocol.INLINE...)."""

    __slots__ = ("kind", "payload", "holds", "pins", "contained", "block", "subscribers",
                 "freed")

    def __init__(self):
        self.kind = None
        self.payload = None
        self.holds = 0
        self.pins = 0
        self.contained = ()
        self.block = None          # arena offset while the data lives in the arena
        self.subscribers = None    # tokens waiting for the value (set), or None
        self.freed = False


class Arena:
    """The shared-memory segment: a memfd of ``size`` bytes, with a best-fit allocator."""

    def __init__(self, size):
        self.size = size
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("purerun-arena", os.MFD_CLOEXEC)
        else:  # pragma: no cover - no memfd (not Linux)
            self.fd = _unlinked_file(size)
        os.ftruncate(self.fd, size)
        self.allocator = Allocator(size)
        # The node maps the arena too, but only touches it to spill and restore.
        self.map = mmap.mmap(self.fd, size)

    def close(self):
        if self.fd is not None:
            try:
                self.map.close()
            except BufferError:  # a view is still exported somewhere; the fd close suffices
                pass
            os.close(self.fd)
            self.fd = None


def _unlinked_file(size):
    """A shared file of ``size`` bytes, unlinked at once so that it cannot outlive us.

    In /dev/shm when it has room, else (Docker's 64 MB /dev/shm, or none) in the temp dir,
    which is slower: the page cache may write it back to disk.
    """
    import logging
    import tempfile
    directory = "/dev/shm"
    try:
        st = os.statvfs(directory)
        roomy = st.f_bavail * st.f_frsize >= size
    except OSError:
        roomy = False
    if not roomy:
        directory = tempfile.gettempdir()
        logging.getLogger("purerun").warning(
            "/dev/shm is missing or smaller than the object store (%d bytes): using a file "
            "in %s instead, which may be slower.", size, directory)
    fd, path = tempfile.mkstemp(prefix="purerun-arena-", dir=directory)
    os.unlink(path)
    return fd


def default_store_size(total_memory, available_memory=None):
    """Default arena size: a share of RAM, no more than what is free.

    The arena is a memfd, which lives in the kernel's own shared-memory mount, not in
    /dev/shm, so a small /dev/shm (Docker's 64 MB) does not limit it; only where memfd is
    missing does the free space of /dev/shm cap it as well.
    """
    size = total_memory * DEFAULT_STORE_FRACTION
    if available_memory is not None:
        size = min(size, available_memory)
    if not hasattr(os, "memfd_create"):
        try:
            st = os.statvfs("/dev/shm")
            size = min(size, st.f_bavail * st.f_frsize)
        except OSError:
            pass
    return max(MIN_STORE_BYTES, int(size))


class ObjectStore:
    """The object table of one node."""

    def __init__(self, arena_size, spill_dir=None):
        self.arena = Arena(arena_size)
        self.spill_dir = spill_dir
        self.entries = {}
        # Values in the arena, least recently used first: the spill order.
        self.in_arena = collections.OrderedDict()
        self.spilled_bytes = 0
        self.num_spilled = 0
        self.num_restored = 0
        # Objects whose deletion the owner of the store wants to hear about (actor objects:
        # when the last handle goes, the actor stops), and the callback that hears it.
        self.watched = set()
        self.on_delete = None

    # -- creation ----------------------------------------------------------------------------------

    def expect(self, object_id):
        """A task will produce ``object_id``: a pending entry (holds are added by the caller)."""
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry()
        return entry

    def alloc(self, size):
        """Reserve an arena block for a value about to be written; returns its offset.

        Spills unpinned values to disk (least recently used first) to make room.

        Raises:
            ObjectStoreFullError: pinned values alone leave no block large enough.
        """
        allocator = self.arena.allocator
        offset = allocator.allocate(size)
        while offset is None:
            if not self._spill_one():
                pinned = sum(allocator.block_size(e.block) for e in self.entries.values()
                             if e.block is not None and e.pins > 0)
                raise exceptions.ObjectStoreFullError(
                    f"Cannot store an object of {size} bytes: the object store's "
                    f"{allocator.capacity} bytes hold {pinned} bytes of objects in use "
                    f"(zero-copy views alive) and {allocator.used - pinned} bytes being "
                    f"written, and the largest free block is {allocator.largest_free} bytes. "
                    "Drop references to arrays you got from purerun.get() that you no longer "
                    "need, or start purerun with a larger object_store_memory.")
            offset = allocator.allocate(size)
        return offset

    def _spill_one(self):
        """Move the least recently used unpinned value to disk; False if there is none."""
        if self.spill_dir is None:
            return False
        for object_id in self.in_arena:
            entry = self.entries.get(object_id)
            if entry is not None and entry.pins <= 0 and entry.kind == protocol.ARENA:
                self.spill(object_id, entry)
                return True
        return False

    def spill(self, object_id, entry):
        offset, meta_len, spans = entry.payload
        total = (spans[-1][0] + spans[-1][1]) if spans else meta_len
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, object_id.hex())
        with open(path, "wb") as f:
            f.write(memoryview(self.arena.map)[offset:offset + total])
        self.release_block(offset)
        del self.in_arena[object_id]
        entry.block = None
        entry.kind = STORED_ON_DISK
        entry.payload = (path, total, meta_len, spans)
        self.spilled_bytes += total
        self.num_spilled += 1

    def restore(self, object_id, entry):
        """Read a spilled value back into the arena (it becomes an ARENA entry again)."""
        path, total, meta_len, spans = entry.payload
        offset = self.alloc(max(total, 1))
        with open(path, "rb") as f:
            f.readinto(memoryview(self.arena.map)[offset:offset + total])
        os.unlink(path)
        entry.kind = protocol.ARENA
        entry.payload = (offset, meta_len, spans)
        entry.block = offset
        self.in_arena[object_id] = None
        self.spilled_bytes -= total
        self.num_restored += 1

    def release_block(self, offset):
        self.arena.allocator.free(offset)

    def seal(self, object_id, kind, payload, contained):
        """The value of ``object_id`` is now known. Returns the entry, or None if nobody
        holds it any more (then it is freed at once)."""
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry()
        elif entry.kind is not None:
            # Already has a value (a retried task finishing twice): keep the first, drop this.
            if kind == protocol.ARENA:
                self.release_block(payload[0])
            return entry
        entry.kind = kind
        entry.payload = payload
        if kind == protocol.ARENA:
            entry.block = payload[0]
            self.in_arena[object_id] = None
        if contained:
            entry.contained = tuple(contained)
            for inner in contained:
                self.hold(inner)
        return entry

    # -- holds -------------------------------------------------------------------------------------

    def hold(self, object_id):
        entry = self.entries.get(object_id)
        if entry is None:
            return False
        entry.holds += 1
        return True

    def release(self, object_id):
        entry = self.entries.get(object_id)
        if entry is None:
            return
        entry.holds -= 1
        # invariant: holds >= 0; a pending entry stays until its task reports, so a result
        # nobody wants is still received and then freed here.
        if entry.holds <= 0 and entry.pins <= 0 and entry.kind is not None:
            self._delete(object_id, entry)

    def pin(self, object_id):
        entry = self.entries.get(object_id)
        if entry is not None:
            entry.pins += 1
            if object_id in self.in_arena:
                self.in_arena.move_to_end(object_id)  # recently used: spilled last

    def unpin(self, object_id):
        entry = self.entries.get(object_id)
        if entry is None:
            return
        entry.pins -= 1
        if entry.pins <= 0:
            if entry.holds <= 0 and entry.kind is not None:
                self._delete(object_id, entry)
            elif entry.freed and entry.block is not None:
                self.release_block(entry.block)
                entry.block = None

    def after_seal(self, object_id, entry):
        """Free an object that was sealed while nobody held it."""
        if entry.holds <= 0 and entry.pins <= 0:
            self._delete(object_id, entry)

    def free_early(self, object_id):
        """purerun.internal.free: drop the value now; later gets raise ObjectFreedError."""
        entry = self.entries.get(object_id)
        if entry is None or entry.kind is None or entry.freed:
            return
        contained = entry.contained
        entry.contained = ()
        entry.freed = True
        self._drop_spill_file(entry)
        entry.kind = protocol.ERROR
        entry.payload = serialization.dumps(exceptions.ObjectFreedError(object_id.hex()))
        self.in_arena.pop(object_id, None)
        if entry.block is not None and entry.pins <= 0:
            self.release_block(entry.block)
            entry.block = None
        for inner in contained:
            self.release(inner)

    def _drop_spill_file(self, entry):
        if entry.kind == STORED_ON_DISK:
            try:
                os.unlink(entry.payload[0])
            except OSError:
                pass
            self.spilled_bytes -= entry.payload[1]

    def _delete(self, object_id, entry):
        del self.entries[object_id]
        self.in_arena.pop(object_id, None)
        self._drop_spill_file(entry)
        if object_id in self.watched:
            self.watched.discard(object_id)
            self.on_delete(object_id)
        if entry.block is not None:
            self.release_block(entry.block)
            entry.block = None
        for inner in entry.contained:
            self.release(inner)

    # -- queries -----------------------------------------------------------------------------------

    def get(self, object_id):
        return self.entries.get(object_id)

    def stats(self):
        alloc = self.arena.allocator
        return {"num_objects": len(self.entries), "arena_capacity": alloc.capacity,
                "arena_used": alloc.used, "arena_largest_free": alloc.largest_free,
                "spilled_bytes": self.spilled_bytes, "num_spilled": self.num_spilled,
                "num_restored": self.num_restored}

    def close(self):
        self.arena.close()


def error_payload(error):
    """The ERROR payload for an exception."""
    return serialization.dumps(error)

