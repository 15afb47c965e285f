"""The node's object table: who holds, reads and waits for each object, and where it is.

::

    NodeState (handlers)                 ObjectTable (this module)          ObjectStore (bytes)
    ────────────────────                 ─────────────────────────          ───────────────────
    a task will make X   ── expect ──▶   entry: pending                     arena blocks
    X's value arrived    ── seal ────▶   entry: INLINE / ARENA / ERROR /    spill files
                                                ON_DISK
    a ref is taken/gone  ── hold/release ▶ holds                 ── free_block, drop_spill ─▶
    a view is made/dies  ── pin/unpin ─▶ pins                    ── allocate, spill, restore ▶
    room is needed       ── reserve ───▶ spills the least recently used unpinned value,
                                         or names a file (larger than the arena) ── new_file ▶
    readers need values  ── hand_out_all ▶ pins, reads back what finds room

The table decides; the store moves bytes. The table never touches a file, a socket or a
clock: it calls its store through the seven methods of ``ObjectStore`` (``allocate``,
``free_block``, ``block_size``, ``spill``, ``read_back``, ``drop_spill``, ``new_file``), and
tests give it a fake store built on the real (pure) allocator.

Entry lifecycle::

    (none) ──expect──▶ pending ──seal──▶ ready (INLINE | ARENA | ERROR | REMOTE | ON_DISK)
                                           │  ARENA ──spill──▶ ON_DISK ──restore──▶ ARENA
                                           │  REMOTE ──localize (pulled)──▶ ARENA | ON_DISK
                                           │  any ──free_early──▶ ERROR (ObjectFreedError)
                                           ▼
                     deleted when holds == 0 and pins == 0 (never earlier)

Lifetime. An entry counts its *holds*: one per process holding an ObjectRef to it, one per
pending task taking it as an argument, one per stored object containing a ref to it, one for
a named or detached actor's object. Zero-copy views of the arena are counted apart, as *pins*:
an arena location is only ever handed out with a pin, so a value being read is never moved,
spilled or freed. A file handed out is pinned too, until its reader has mapped it: meanwhile
it is neither read back nor removed. ``locations`` names the nodes holding a copy; on one node
it is this node.

Deletions are reported, not acted on: ``deleted`` collects the ids of *watched* objects
(actor objects: the last handle going stops the actor) for NodeState to take, and
``dropped_remote`` the ``(object_id, node_id)`` of deleted entries that held a reference on
another node (``remote_hold``), which NodeState gives back there with DROP_REFS.

Capacity. A new value gets an arena block, made by spilling the least recently used unpinned
values when needed (``reserve``); one larger than the whole arena could never have one, and
is written straight to a file of its own instead, an ON_DISK value from the start. A reader of
a spilled value is given it back in the arena when room can be made there without touching a
pinned value, and otherwise the file itself (a pin keeps the file until the reader has opened
it). A batch of readers (a ``get`` of many refs, a task's arguments) pins the values already
in the arena before reading any back (``hand_out_all``), so that restoring one never pushes
out another of the same batch. Hence only pinned values — zero-copy views alive, locations
handed out and not returned — and blocks being written can make the store refuse a value
(ObjectStoreFullError), and only a value that fits the arena.

Other nodes' values. A REMOTE entry's bytes are in another node's store; it is *ready* (its
subscribers are told so) but not *local*: a task here cannot read it until it has been pulled
into this arena (``localize``). ``not_local`` is the test for "a reader here must wait".
"""

import collections

from purerun import exceptions
from purerun.core import serialization
from purerun.core.protocol import ARENA, ERROR, ON_DISK, REMOTE, STORED

__all__ = ["ObjectEntry", "ObjectTable"]


class ObjectEntry:
    """One object. ``kind`` is None while pending, else a payload kind (protocol.INLINE...)."""

    __slots__ = ("kind", "payload", "holds", "pins", "contained", "block", "subscribers",
                 "freed", "locations", "remote_hold", "freed_file")

    def __init__(self):
        self.kind = None           #: None while pending; INLINE, ARENA, ERROR or ON_DISK
        self.payload = None        #: the value's payload for ``kind`` (see core/protocol.py)
        self.holds = 0             #: refs, pending tasks, containing objects holding it
        self.pins = 0              #: arena locations handed out and not yet returned
        self.contained = ()        #: ids of refs inside the value, held while it lives
        self.block = None          #: arena offset while its bytes occupy the arena
        self.subscribers = None    #: tokens to tell when it is ready (a set), or None
        self.freed = False         #: purerun.internal.free ran: the value is gone early
        self.locations = None      #: node ids holding a copy, once ready
        self.remote_hold = None    #: the node where this node holds a ref to it, if any
        self.freed_file = None     #: ON_DISK payload of a freed value a reader is opening


class ObjectTable:
    """Bookkeeping of every object a node knows. See the module docstring.

    Args:
        store: the byte store (``core.object_store.ObjectStore`` or a test fake).
        node_id: this node, recorded as the location of every value sealed here.
        can_spill: whether unpinned values may move to disk to make room.
    """

    def __init__(self, store, node_id=None, can_spill=True):
        self.store = store
        self.node_id = node_id
        self.can_spill = can_spill
        self.entries = {}          #: object id -> ObjectEntry
        # Values whose bytes sit in the arena, least recently used first: the spill order.
        self.in_arena = collections.OrderedDict()
        self.watched = set()       #: ids whose deletion NodeState wants to hear of
        self.deleted = []          #: watched ids deleted since NodeState last took them
        self.dropped_remote = []   #: (object id, node id) of deleted entries held elsewhere
        self.spilled_bytes = 0
        self.num_spilled = 0
        self.num_restored = 0

    # ── creation ───────────────────────────────────────────────────────────────────────────

    def expect(self, object_id):
        """A task will produce ``object_id``: its pending entry (the caller adds holds)."""
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry()
        return entry

    def seal(self, object_id, kind, payload, contained):
        """The value of ``object_id`` is known now.

        Returns:
            (entry, subscribers): the entry, and the tokens waiting for it (they are
            forgotten here: the caller tells them). A value arriving for an object that
            already has one (a retried task finishing twice) is dropped: the first stays.
        """
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry()
        elif entry.kind is not None:
            self.discard(kind, payload)
            return entry, None
        entry.kind = kind
        entry.payload = payload
        if kind == REMOTE:
            entry.locations = {payload[0]}
        elif self.node_id is not None:
            entry.locations = {self.node_id}
        if kind == ARENA:
            entry.block = payload[0]
            self.in_arena[object_id] = None
        elif kind == ON_DISK:
            self.spilled_bytes += payload[1]
        if contained:
            entry.contained = tuple(contained)
            for inner in contained:
                self.hold(inner)
        subscribers = entry.subscribers
        entry.subscribers = None
        return entry, subscribers

    def after_seal(self, object_id):
        """Free an object that was sealed while nobody held it."""
        entry = self.entries.get(object_id)
        if entry is not None and entry.holds <= 0 and entry.pins <= 0:
            self._delete(object_id, entry)

    def subscribe(self, object_id, token):
        """Tell ``token`` when the pending ``object_id`` is ready. False if it is unknown."""
        entry = self.entries.get(object_id)
        if entry is None:
            return False
        if entry.subscribers is None:
            entry.subscribers = set()
        entry.subscribers.add(token)
        return True

    # ── holds and pins ─────────────────────────────────────────────────────────────────────

    def hold(self, object_id):
        """One more holder. False if the object is unknown (freed, or never existed here)."""
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
        # invariant: holds >= 0. A pending entry stays until its task reports, so a result
        # nobody wants is still received and then freed in after_seal.
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
            elif entry.freed:
                self._drop_freed(entry)

    def hand_out(self, object_id):
        """The payload to give a reader: (kind, payload); an ARENA or ON_DISK one with a pin.

        A value on disk is read back into the arena when room can be made there by spilling
        unpinned values; otherwise the reader gets the file. The caller records the pin
        against the reader, who returns it with UNPIN (for a file, once it has opened it).

        Raises:
            ObjectLostError: the object is unknown or still pending.
        """
        entry = self.entries.get(object_id)
        if entry is None or entry.kind is None or entry.kind == REMOTE:
            # invariant: NodeState pulls a REMOTE value before anyone here is handed it
            raise exceptions.ObjectLostError(object_id.hex())
        if entry.kind == ON_DISK and entry.pins <= 0:
            # A pinned file is being opened by a reader: it stays where it is meanwhile.
            try:
                self.restore(object_id, entry)
            except exceptions.ObjectStoreFullError:
                pass  # pinned values fill the arena, or it is larger than the arena
        if entry.kind == ARENA or entry.kind == ON_DISK:
            self.pin(object_id)
        return entry.kind, entry.payload

    def hand_out_all(self, object_ids):
        """Payloads for a batch of reads (a ``get``, a task's arguments), in order.

        Values already in the arena are pinned first: reading the spilled ones back then
        spills no value of the batch, and those that find no room are read from their files.
        An object that cannot be handed out (unknown or pending) gets an ERROR payload.
        """
        entries = self.entries
        payloads = [None] * len(object_ids)
        for i, object_id in enumerate(object_ids):
            entry = entries.get(object_id)
            if entry is not None and entry.kind == ARENA:
                self.pin(object_id)
                payloads[i] = (ARENA, entry.payload)
        for i, object_id in enumerate(object_ids):
            if payloads[i] is None:
                try:
                    payloads[i] = self.hand_out(object_id)
                except exceptions.ObjectLostError as exc:
                    payloads[i] = (ERROR, error_payload(exc))
        return payloads

    def pull_destination(self, size):
        """Where a value of ``size`` bytes pulled from another node is written: an arena
        offset when room can be made there, else (pinned values fill the arena, or it is
        larger) a file path. A pulled value is only read, so, unlike a new value, it never
        makes the store full. Given back with ``discard_reserved`` if the pull fails.

        Raises:
            ObjectStoreFullError: no room in the arena, and no spilling to a file.
        """
        try:
            return self.alloc(max(size, 1))
        except exceptions.ObjectStoreFullError:
            if not self.can_spill:
                raise
            return self.store.new_file()

    def localize(self, object_id, where):
        """A REMOTE value's bytes were pulled to ``where`` (from ``pull_destination``): it is
        ARENA (an offset) or ON_DISK (a path) now.

        Returns:
            True; False if the entry is gone or not REMOTE any more (``where`` is then the
            caller's to give back).
        """
        entry = self.entries.get(object_id)
        if entry is None or entry.kind != REMOTE:
            return False
        _node, total, meta_len, spans = entry.payload
        if self.node_id is not None:
            entry.locations = {self.node_id}
        if isinstance(where, str):
            entry.kind = ON_DISK
            entry.payload = (where, total, meta_len, spans)
            self.spilled_bytes += total
            return True
        entry.kind = ARENA
        entry.payload = (where, meta_len, spans)
        entry.block = where
        self.in_arena[object_id] = None
        return True

    def lose_remote(self, object_id, payload):
        """A REMOTE value cannot be fetched (its holder died, or lost it): it is the ERROR
        ``payload`` now. False if the entry is gone or not REMOTE."""
        entry = self.entries.get(object_id)
        if entry is None or entry.kind != REMOTE:
            return False
        entry.kind = ERROR
        entry.payload = payload
        entry.locations = {self.node_id} if self.node_id is not None else None
        return True

    def not_local(self, object_id):
        """True while a reader here must wait for ``object_id``: pending, or on another node."""
        entry = self.entries.get(object_id)
        return entry is not None and (entry.kind is None or entry.kind == REMOTE)

    def remote_form(self, entry, node_id):
        """How a ready value is described to another node: small ones whole, stored ones as
        REMOTE (where to FETCH the block from: this node, ``node_id``, or the holder)."""
        kind = entry.kind
        if kind == ARENA:
            offset, meta_len, spans = entry.payload
            return REMOTE, (node_id, block_length(meta_len, spans), meta_len, spans)
        if kind == ON_DISK:
            _path, total, meta_len, spans = entry.payload
            return REMOTE, (node_id, total, meta_len, spans)
        return kind, entry.payload

    # ── capacity ───────────────────────────────────────────────────────────────────────────

    def reserve(self, size):
        """Where a value of ``size`` bytes about to be written goes: ``(ARENA, offset)``, or
        ``(ON_DISK, path)`` for one larger than the whole arena (when spilling is on).

        The reservation is the writer's until it seals the value or gives it back with
        ``discard``.

        Raises:
            ObjectStoreFullError: the value fits the arena but pinned values leave no room.
        """
        if size > self.store.capacity and self.can_spill:
            return ON_DISK, self.store.new_file()
        return ARENA, self.alloc(size)

    def alloc(self, size):
        """Reserve an arena block for a value about to be written; returns its offset.

        Spills unpinned values (least recently used first) until the block fits; none is
        spilled when even all of them would leave too little room.

        Raises:
            ObjectStoreFullError: pinned values alone leave no block large enough.
        """
        store = self.store
        offset = store.allocate(size)
        if offset is None and store.capacity - store.used + self._spillable() < size:
            raise self._full_error(size)
        while offset is None:
            if not self._spill_one():
                raise self._full_error(size)
            offset = store.allocate(size)
        return offset

    def _spillable(self):
        """Bytes of the arena that spilling could free."""
        if not self.can_spill:
            return 0
        block_size = self.store.block_size
        spillable = 0
        for object_id in self.in_arena:
            entry = self.entries.get(object_id)
            if entry is not None and entry.pins <= 0 and entry.block is not None:
                spillable += block_size(entry.block)
        return spillable

    def discard(self, kind, payload):
        """Give back the storage of a payload that will not be sealed (its writer left, the
        task runs again, or the value came twice): an ARENA block or an ON_DISK file."""
        if kind == ARENA:
            self.store.free_block(payload[0])
        elif kind == ON_DISK:
            self.store.drop_spill(payload)

    def discard_reserved(self, where):
        """Give back what ``reserve`` returned (an offset or a path), never sealed."""
        self.discard(ON_DISK if isinstance(where, str) else ARENA, (where,))

    def _full_error(self, size):
        store = self.store
        pinned = resident = 0
        for entry in self.entries.values():
            if entry.block is not None:
                if entry.pins > 0:
                    pinned += store.block_size(entry.block)
                else:
                    resident += store.block_size(entry.block)
        why = "spilling them would not make room enough" if self.can_spill else "spilling is off"
        return exceptions.ObjectStoreFullError(
            f"Cannot store an object of {size} bytes: the object store's "
            f"{store.capacity} bytes hold {pinned} bytes of objects in use "
            f"(zero-copy views alive), {resident} bytes of other objects ({why}) and "
            f"{store.used - pinned - resident} bytes being written, and the largest free "
            f"block is {store.largest_free} bytes. "
            "Drop references to arrays you got from purerun.get() that you no longer "
            "need, or start purerun with a larger object_store_memory.")

    def _spill_one(self):
        """Move the least recently used unpinned value to disk; False if there is none."""
        if not self.can_spill:
            return False
        entries = self.entries
        for object_id in self.in_arena:
            entry = entries.get(object_id)
            if entry is not None and entry.pins <= 0 and entry.kind == ARENA:
                self._spill(object_id, entry)
                return True
        return False

    def _spill(self, object_id, entry):
        disk = self.store.spill(object_id, entry.payload)  # frees the block
        del self.in_arena[object_id]
        entry.block = None
        entry.kind = ON_DISK
        entry.payload = disk
        self.spilled_bytes += disk[1]
        self.num_spilled += 1

    def restore(self, object_id, entry):
        """Read a spilled value back into the arena (it is an ARENA entry again).

        Raises:
            ObjectStoreFullError: no room can be made (pinned values, or it is larger than
                the arena); the value stays on disk.
        """
        disk = entry.payload
        if disk[1] > self.store.capacity:
            raise self._full_error(disk[1])
        offset = self.alloc(max(disk[1], 1))
        entry.kind = ARENA
        entry.payload = self.store.read_back(disk, offset)
        entry.block = offset
        self.in_arena[object_id] = None
        self.spilled_bytes -= disk[1]
        self.num_restored += 1

    # ── early free and deletion ────────────────────────────────────────────────────────────

    def free_early(self, object_id):
        """purerun.internal.free: drop the value now; later gets raise ObjectFreedError."""
        entry = self.entries.get(object_id)
        if entry is None or entry.kind is None or entry.freed:
            return
        contained = entry.contained
        entry.contained = ()
        entry.freed = True
        if entry.kind == ON_DISK and entry.pins > 0:
            entry.freed_file = entry.payload   # a reader is opening it: dropped on UNPIN
            self.spilled_bytes -= entry.payload[1]
        else:
            self._drop_spill(entry)
        entry.kind = ERROR
        entry.payload = serialization.dumps(exceptions.ObjectFreedError(object_id.hex()))
        self.in_arena.pop(object_id, None)
        if entry.block is not None and entry.pins <= 0:
            self.store.free_block(entry.block)
            entry.block = None
        for inner in contained:
            self.release(inner)

    def _drop_freed(self, entry):
        """The last reader of a freed value is done: give back what it still occupies."""
        if entry.block is not None:
            self.store.free_block(entry.block)
            entry.block = None
        if entry.freed_file is not None:
            self.store.drop_spill(entry.freed_file)
            entry.freed_file = None

    def _drop_spill(self, entry):
        if entry.kind == ON_DISK:
            self.store.drop_spill(entry.payload)
            self.spilled_bytes -= entry.payload[1]

    def _delete(self, object_id, entry):
        del self.entries[object_id]
        self.in_arena.pop(object_id, None)
        self._drop_spill(entry)
        if object_id in self.watched:
            self.watched.discard(object_id)
            self.deleted.append(object_id)
        self._drop_freed(entry)
        if entry.remote_hold is not None:
            self.dropped_remote.append((object_id, entry.remote_hold))
        for inner in entry.contained:
            self.release(inner)

    # ── queries ────────────────────────────────────────────────────────────────────────────

    def get(self, object_id):
        return self.entries.get(object_id)

    def is_pending(self, object_id):
        """True while a task is still to produce ``object_id``."""
        entry = self.entries.get(object_id)
        return entry is not None and entry.kind is None

    def missing(self, object_ids):
        """The ids among ``object_ids`` a task here must wait for: pending, unknown, or on
        another node."""
        entries = self.entries
        return {d for d in object_ids
                if entries.get(d) is None or entries[d].kind is None or entries[d].kind == REMOTE}

    @staticmethod
    def announced(entry):
        """How a ready value is announced to its subscribers: small ones whole, stored ones
        as STORED (the reader asks for a location)."""
        kind = entry.kind
        if kind == ARENA or kind == ON_DISK or kind == REMOTE:
            return (STORED, None)
        return (kind, entry.payload)

    def stats(self):
        store = self.store
        return {"num_objects": len(self.entries), "arena_capacity": store.capacity,
                "arena_used": store.used, "arena_largest_free": store.largest_free,
                "spilled_bytes": self.spilled_bytes, "num_spilled": self.num_spilled,
                "num_restored": self.num_restored}


def block_length(meta_len, spans):
    """Bytes of an object's block: its metadata, then its buffers (spans relative to it)."""
    return (spans[-1][0] + spans[-1][1]) if spans else meta_len


def error_payload(error):
    """The ERROR payload for an exception."""
    return serialization.dumps(error)

