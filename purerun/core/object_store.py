"""The node's object bytes: the shared-memory arena and the spill files.

What each object is, who holds it and when it goes is decided by core/object_table.py; this
module only moves bytes. The arena is one memfd (an anonymous shared-memory file, so the
kernel frees it when the last process holding it exits: a killed session cannot leak a
segment); processes get its descriptor when they connect and map it.

Capacity. When a new value does not fit, values nobody is reading (no pin: no zero-copy
view alive, no location handed out and not yet returned) are spilled to files in the session
directory, least recently used first, and read back into the arena when someone asks for
them. Only when pinned values alone leave no room does storing fail, with
ObjectStoreFullError. A value larger than the whole arena is written by its maker straight to
a file of its own (``new_file``), and read from there.
"""

import mmap
import os

from purerun.core.allocator import Allocator

# Share of total RAM the arena may use when object_store_memory is not given (Ray: 30%).
DEFAULT_STORE_FRACTION = 0.3
# Pages are only touched when written, so a large default costs nothing until used.
MIN_STORE_BYTES = 64 * 1024 * 1024


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
    """A node's bytes: the arena and the spill files. It keeps no table: ObjectTable decides
    what goes where and calls these methods (see core/object_table.py).

    Args:
        arena_size: bytes of shared memory.
        spill_dir: where spilled values go (created on first spill), or None for no spilling.
    """

    def __init__(self, arena_size, spill_dir=None):
        self.arena = Arena(arena_size)
        self.allocator = self.arena.allocator
        self.spill_dir = spill_dir
        self._files_made = 0

    # -- arena blocks ------------------------------------------------------------------------------

    def allocate(self, size):
        """An arena block of ``size`` bytes (its offset), or None if none is free."""
        return self.allocator.allocate(size)

    def free_block(self, offset):
        self.allocator.free(offset)

    def block_size(self, offset):
        return self.allocator.block_size(offset)

    @property
    def capacity(self):
        return self.allocator.capacity

    @property
    def used(self):
        return self.allocator.used

    @property
    def largest_free(self):
        return self.allocator.largest_free

    # -- spill files -------------------------------------------------------------------------------

    def spill(self, object_id, payload):
        """Write an ARENA value to a file and free its block; returns its ON_DISK payload."""
        offset, meta_len, spans = payload
        total = (spans[-1][0] + spans[-1][1]) if spans else meta_len
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, object_id.hex())
        with open(path, "wb") as f:
            f.write(memoryview(self.arena.map)[offset:offset + total])
        self.free_block(offset)
        return (path, total, meta_len, spans)

    def new_file(self):
        """A path in the spill directory for a value written straight to disk. The writer
        creates the file; ``drop_spill`` removes it."""
        os.makedirs(self.spill_dir, exist_ok=True)
        self._files_made += 1
        return os.path.join(self.spill_dir, f"direct-{self._files_made}")

    def read_back(self, disk_payload, offset):
        """Read a spilled value into the block at ``offset``; returns its ARENA payload."""
        path, total, meta_len, spans = disk_payload
        with open(path, "rb") as f:
            f.readinto(memoryview(self.arena.map)[offset:offset + total])
        os.unlink(path)
        return (offset, meta_len, spans)

    def map_for_writing(self, path, size):
        """A new file of ``size`` bytes at ``path``, mapped writable: where a value pulled
        from another node is written when the arena has no room for it."""
        with open(path, "w+b") as f:
            f.truncate(size)
            return mmap.mmap(f.fileno(), size)

    def map_for_reading(self, path, size):
        """The first ``size`` bytes of the file at ``path``, mapped read-only."""
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)

    def drop_spill(self, disk_payload):
        try:
            os.unlink(disk_payload[0])
        except OSError:
            pass

    def close(self):
        self.arena.close()
