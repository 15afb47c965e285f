"""The object table's capacity rules, event by event, over a fake store on the real allocator:
what is spilled to make room, what is read back, what a reader is given (an arena location or
the file), and that only pinned values ever make the store refuse a value."""

import pytest

from purerun import exceptions
from purerun.core import ids
from purerun.core.object_table import ObjectTable
from purerun.core.protocol import ARENA, ERROR, ON_DISK, REMOTE

from helpers import FakeStore

BLOCK = 1000          # bytes of each test value; the allocator rounds blocks up to 64
ROOM = 4 * 1024       # an arena of four such blocks


def make_table(size=ROOM, can_spill=True):
    return ObjectTable(FakeStore(size), node_id=b"N" * 16, can_spill=can_spill)


def put(table, size=BLOCK):
    """A value stored as a put does it: reserved, sealed as ARENA, one hold."""
    kind, offset = table.reserve(size)
    assert kind == ARENA
    oid = ids.new_put_id()
    table.expect(oid).holds += 1
    table.seal(oid, ARENA, (offset, 10, ((64, size - 64),)), ())
    return oid


def put_direct(table, size):
    """A value larger than the arena, written by its maker to the file ``reserve`` named."""
    kind, path = table.reserve(size)
    assert kind == ON_DISK
    oid = ids.new_put_id()
    table.expect(oid).holds += 1
    table.seal(oid, ON_DISK, (path, size, 10, ((64, size - 64),)), ())
    return oid


def kinds(table, oids):
    return [table.get(o).kind for o in oids]


# ── making room ────────────────────────────────────────────────────────────────────────────


def test_a_new_value_spills_the_least_recently_used_unpinned_one():
    table = make_table()
    a, b, c, d = (put(table) for _ in range(4))
    table.hand_out(a)            # a is read (pinned, and recently used)
    e = put(table)
    assert kinds(table, [a, b, c, d, e]) == [ARENA, ON_DISK, ARENA, ARENA, ARENA]
    assert table.num_spilled == 1 and table.store.files == {b: 1024}


def test_pinned_values_are_never_spilled_and_alone_make_the_store_full():
    table = make_table()
    oids = [put(table) for _ in range(4)]
    for oid in oids:
        table.hand_out(oid)
    with pytest.raises(exceptions.ObjectStoreFullError, match="in use"):
        table.reserve(BLOCK)
    assert table.num_spilled == 0
    table.unpin(oids[0])
    assert table.reserve(BLOCK)[0] == ARENA
    assert kinds(table, oids) == [ON_DISK, ARENA, ARENA, ARENA]


def test_nothing_is_spilled_when_even_spilling_everything_would_not_make_room():
    table = make_table()
    pinned = put(table, 2048)
    table.hand_out(pinned)
    loose = put(table)
    with pytest.raises(exceptions.ObjectStoreFullError):
        table.reserve(3000)      # fits the arena, but the pinned value leaves only 2 KiB
    assert table.get(loose).kind == ARENA and table.num_spilled == 0


def test_a_value_larger_than_the_arena_goes_to_a_file_of_its_own():
    table = make_table()
    resident = put(table)
    big = put_direct(table, 3 * ROOM)
    assert table.get(big).kind == ON_DISK and table.get(resident).kind == ARENA
    assert table.num_spilled == 0 and table.stats()["spilled_bytes"] == 3 * ROOM
    # It is never read back (it cannot fit): the reader gets the file, with a pin.
    assert table.hand_out(big) == (ON_DISK, table.get(big).payload)
    assert table.get(big).pins == 1 and table.num_restored == 0
    table.unpin(big)
    path = table.get(big).payload[0]
    table.release(big)
    assert path not in table.store.files and table.stats()["spilled_bytes"] == 0
    assert table.get(resident).kind == ARENA


def test_without_spilling_a_value_larger_than_the_arena_is_refused():
    table = make_table(can_spill=False)
    with pytest.raises(exceptions.ObjectStoreFullError):
        table.reserve(2 * ROOM)
    assert table.store.files == {}


# ── reading spilled values ─────────────────────────────────────────────────────────────────


def test_a_spilled_value_is_read_back_spilling_an_unpinned_one():
    table = make_table()
    oids = [put(table) for _ in range(5)]        # the first was spilled for the fifth
    assert kinds(table, oids)[0] == ON_DISK
    kind, payload = table.hand_out(oids[0])
    assert kind == ARENA and table.get(oids[0]).pins == 1
    assert kinds(table, oids) == [ARENA, ON_DISK, ARENA, ARENA, ARENA]
    assert table.num_restored == 1 and set(table.store.files) == {oids[1]}


def test_a_spilled_value_is_read_from_its_file_when_pinned_values_fill_the_arena():
    table = make_table()
    oids = [put(table) for _ in range(5)]
    for oid in oids[1:]:
        table.hand_out(oid)                      # four pinned: the arena is full
    kind, payload = table.hand_out(oids[0])
    assert kind == ON_DISK and payload[0] == oids[0]   # the file, not an error
    assert table.num_restored == 0 and table.num_spilled == 1
    # A second reader while the first is still opening the file gets the file too.
    for oid in oids[1:]:
        table.unpin(oid)
    assert table.hand_out(oids[0])[0] == ON_DISK
    # Once both readers have opened it, the next one has it back in the arena.
    table.unpin(oids[0])
    table.unpin(oids[0])
    assert table.hand_out(oids[0])[0] == ARENA and table.num_restored == 1


def test_a_batch_pins_what_is_in_the_arena_before_reading_anything_back():
    table = make_table()
    oids = [put(table) for _ in range(6)]        # two spilled, four in the arena
    assert kinds(table, oids) == [ON_DISK, ON_DISK, ARENA, ARENA, ARENA, ARENA]
    payloads = table.hand_out_all(oids)
    # Nothing moved: the four resident ones are read in place, the two others from disk.
    assert [k for k, _p in payloads] == [ON_DISK, ON_DISK, ARENA, ARENA, ARENA, ARENA]
    assert table.num_spilled == 2 and table.num_restored == 0
    assert all(table.get(o).pins == 1 for o in oids)


def test_a_batch_reads_back_what_finds_room_and_the_rest_from_disk():
    table = make_table()
    oids = [put(table) for _ in range(6)]
    for oid in oids[2:]:
        table.release(oid)                       # the four resident ones are gone
    assert table.store.used == 0
    payloads = table.hand_out_all(oids[:2] + oids[:2])
    assert [k for k, _p in payloads] == [ARENA, ARENA, ARENA, ARENA]
    assert table.get(oids[0]).pins == 2 and table.num_restored == 2


def test_a_batch_with_an_unknown_object_gets_an_error_for_it_alone():
    table = make_table()
    good = put(table)
    payloads = table.hand_out_all([good, ids.new_put_id()])
    assert payloads[0][0] == ARENA and payloads[1][0] == ERROR
    assert table.get(good).pins == 1


# ── giving storage back ────────────────────────────────────────────────────────────────────


def test_a_freed_value_keeps_its_file_until_its_reader_has_opened_it():
    table = make_table()
    oids = [put(table) for _ in range(5)]
    for oid in oids[1:]:
        table.hand_out(oid)
    table.hand_out(oids[0])                      # from disk, pinned
    table.free_early(oids[0])
    assert oids[0] in table.store.files and table.get(oids[0]).kind == ERROR
    table.unpin(oids[0])
    assert oids[0] not in table.store.files and table.stats()["spilled_bytes"] == 0


def test_deleting_a_spilled_value_removes_its_file_and_space_comes_back():
    table = make_table()
    oids = [put(table) for _ in range(6)]
    for oid in oids:
        table.release(oid)
    assert table.store.files == {} and table.store.used == 0 and table.entries == {}
    assert table.stats()["spilled_bytes"] == 0


def test_reservations_given_back_free_their_block_or_file():
    table = make_table()
    _kind, offset = table.reserve(BLOCK)
    _kind, path = table.reserve(2 * ROOM)
    assert table.store.used > 0 and path in table.store.files
    table.discard_reserved(offset)
    table.discard_reserved(path)
    assert table.store.used == 0 and table.store.files == {}


def test_a_second_value_for_an_object_is_dropped_with_its_file():
    table = make_table()
    oid = put_direct(table, 2 * ROOM)
    _kind, path = table.reserve(2 * ROOM)
    entry, subscribers = table.seal(oid, ON_DISK, (path, 2 * ROOM, 10, ()), ())
    assert subscribers is None and path not in table.store.files
    assert entry.payload[0] in table.store.files


# ── values pulled from other nodes ─────────────────────────────────────────────────────────


def test_a_pulled_value_goes_to_the_arena_when_room_can_be_made_else_to_a_file():
    table = make_table()
    oids = [put(table) for _ in range(4)]
    assert isinstance(table.pull_destination(BLOCK), int)     # by spilling an unpinned one
    assert table.num_spilled == 1
    for oid in oids[1:]:
        table.hand_out(oid)
    # Pinned values fill the arena: a pull (a read, not a new value) is not refused.
    path = table.pull_destination(BLOCK)
    assert isinstance(path, str) and table.num_spilled == 1
    assert isinstance(table.pull_destination(2 * ROOM), str)  # larger than the arena


def test_a_value_pulled_into_a_file_is_on_disk_here_and_read_from_it():
    table = make_table()
    oid = ids.new_put_id()
    table.expect(oid).holds += 1
    table.seal(oid, REMOTE, (b"M" * 16, 2 * ROOM, 10, ((64, 2 * ROOM - 64),)), ())
    path = table.pull_destination(2 * ROOM)
    assert table.localize(oid, path)
    assert table.get(oid).kind == ON_DISK and table.get(oid).locations == {b"N" * 16}
    assert table.hand_out(oid) == (ON_DISK, (path, 2 * ROOM, 10, ((64, 2 * ROOM - 64),)))
    table.unpin(oid)
    table.release(oid)
    assert table.store.files == {} and table.stats()["spilled_bytes"] == 0


def test_without_spilling_a_pull_that_finds_no_room_is_refused():
    table = make_table(can_spill=False)
    with pytest.raises(exceptions.ObjectStoreFullError):
        table.pull_destination(2 * ROOM)
