"""Best-fit allocator for a node's shared-memory arena.

Each node's object store maps one large shared-memory segment (the *arena*)
and places every object it holds inside it. This module decides *where*: it
hands out and takes back byte ranges of ``[0, capacity)``. It is pure
bookkeeping over integer offsets. It never touches the memory, knows nothing of
mmap, processes or clocks, and so its tests run in microseconds.

Data structures::

    arena   0                                                      capacity
            | alloc A |  free F1  |   alloc B   |     free F2      | alloc C |
            ^a        ^f1         ^b            ^f2                ^c

    _free_by_size   SortedList of (size, offset)  [(|F1|, f1), (|F2|, f2)]
                    -> best fit: bisect for the first entry >= (need,)
    _free_by_start  dict offset -> size           {f1: |F1|, f2: |F2|}
                    -> freeing B finds its right neighbour F2 at b + |B|
    _free_by_end    dict end -> offset            {f1 + |F1|: f1, ...}
                    -> freeing B finds its left neighbour F1 ending at b
    _allocated      dict offset -> size           {a: |A|, b: |B|, c: |C|}

The three free-block structures always describe the same set of blocks. Every
operation touches a constant number of entries in each, so ``allocate`` and
``free`` cost O(log n) in the number of free blocks. ``SortedList`` stores
its items in a list of short sorted lists, which in pure Python beats a
balanced tree by a wide margin. It is also already a runtime dependency.

Why best fit: objects range from a few bytes to gigabytes. Best fit takes a
request from the smallest hole that holds it, which keeps large holes whole
for large objects. Measurements of real allocators (Wilson et al., "Dynamic
Storage Allocation: A Survey and Critical Review", 1995) show low
fragmentation under most workloads. Ties go to the lowest offset, which packs
objects towards the start of the arena and leaves the end free to coalesce
into one big hole. A buddy allocator would be simpler. It wastes up to half of
every block, though, and the large objects that fill the arena suffer most.

Why coalescing happens eagerly on ``free``: the allocator must never report a
request as unsatisfiable while two adjacent holes together would satisfy it.
Merging on ``free`` costs two dict lookups. Merging lazily would need a
sweep.

The allocator is not thread-safe. Its owner (the object store) serializes
calls under its own lock. The allocator then stays free of any locking policy.
"""

import operator
from typing import Dict, Optional

from sortedcontainers import SortedList

__all__ = ["Allocator", "ALIGNMENT"]

# 64 bytes is a cache line on x86-64 and most ARM cores, and the alignment
# Arrow and NumPy SIMD kernels want for buffers. Objects deserialized zero-copy
# from the arena can therefore be used in place. serialization.arena_layout places buffers
# within a block on the same boundary.
ALIGNMENT = 64


class Allocator:
    """Best-fit allocator over ``[0, capacity)`` with coalescing of free neighbours.

    Offsets handed out are multiples of ``alignment``. Block sizes are request
    sizes rounded up to a multiple of ``alignment``. If ``capacity`` is not a
    multiple of ``alignment``, the last ``capacity % alignment`` bytes can
    never be handed out. They still count as free, so ``used + free_bytes ==
    capacity`` always holds.

    The allocator only keeps the books. It does not touch memory and is not
    thread-safe. See the module docstring for the data structures.

    Args:
        capacity: Size of the arena in bytes. Must be positive.
        alignment: Alignment of every block in bytes. Must be a power of two.

    Raises:
        ValueError: If ``capacity`` is not positive or ``alignment`` is not a
            positive power of two.
    """

    def __init__(self, capacity: int, alignment: int = ALIGNMENT):
        capacity = operator.index(capacity)
        alignment = operator.index(alignment)
        if capacity <= 0:
            raise ValueError(
                f"Allocator capacity must be a positive number of bytes, got {capacity}."
            )
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(
                f"Allocator alignment must be a positive power of two, got {alignment}."
            )
        self._capacity = capacity
        self._alignment = alignment
        # Rounding up is `(size + mask) & ~mask`, which relies on the
        # power-of-two check above.
        self._mask = alignment - 1

        # invariant: _free_by_size, _free_by_start and _free_by_end describe
        #   the same set of free blocks.
        # invariant: no two free blocks are adjacent. free() merges them, so a
        #   hole is always as large as it can be.
        # invariant: free and allocated blocks tile [0, capacity) exactly. They
        #   neither overlap nor leave gaps.
        # invariant: every block starts at a multiple of alignment. Every
        #   allocated size is a multiple of alignment.
        self._free_by_size: SortedList = SortedList([(capacity, 0)])
        self._free_by_start: Dict[int, int] = {0: capacity}
        self._free_by_end: Dict[int, int] = {capacity: 0}
        self._allocated: Dict[int, int] = {}
        # invariant: _used == sum(_allocated.values()). It is kept as a
        # running total so that `used` and `free_bytes` cost O(1).
        self._used = 0

    # ------------------------------------------------------------------ API

    def allocate(self, size: int) -> Optional[int]:
        """Reserve a block of at least ``size`` bytes.

        The size is rounded up to a multiple of ``alignment``. A size of 0
        still gets a block of ``alignment`` bytes, so every live block has a
        distinct offset. The block comes from the smallest free block that
        fits (ties go to the lowest offset). Whatever that block has left over
        stays free.

        Args:
            size: Number of bytes requested. Must be non-negative.

        Returns:
            The offset of the block within the arena. Returns ``None`` if no
            single free block is large enough. This can happen even when
            ``free_bytes >= size``, if the free space is fragmented.

        Raises:
            TypeError: If ``size`` is not an integer.
            ValueError: If ``size`` is negative.
        """
        if size.__class__ is not int:
            size = operator.index(size)
        if size < 0:
            raise ValueError(f"Cannot allocate a negative number of bytes ({size}).")
        need = (size + self._mask) & ~self._mask or self._alignment
        if need > self._capacity:
            return None

        by_size = self._free_by_size
        # (need,) sorts before every (need, offset). The first entry at or
        # after it is therefore the smallest block that fits, at the lowest
        # offset among blocks of that size.
        index = by_size.bisect_left((need,))
        if index == len(by_size):
            return None
        block_size, offset = by_size.pop(index)
        del self._free_by_start[offset]
        end = offset + block_size

        remainder = block_size - need
        if remainder:
            # The remainder keeps the old block's end. Only its start moves,
            # so _free_by_end keeps its key and gets a new value. Its
            # neighbours are the new allocation on the left and, on the right,
            # whatever bounded the old free block, which was not free. The
            # no-adjacent-free-blocks invariant therefore still holds.
            rest = offset + need
            by_size.add((remainder, rest))
            self._free_by_start[rest] = remainder
            self._free_by_end[end] = rest
        else:
            del self._free_by_end[end]

        self._allocated[offset] = need
        self._used += need
        return offset

    def free(self, offset: int) -> None:
        """Return a block obtained from :meth:`allocate`.

        The block is merged with any free block directly before or after it.

        Args:
            offset: The offset that :meth:`allocate` returned.

        Raises:
            ValueError: If ``offset`` is not the start of a live block, because
                it was never allocated or has already been freed. The
                allocator is left unchanged.
        """
        size = self._allocated.pop(offset, None)
        if size is None:
            raise ValueError(self._unknown_block_message(offset, "free"))
        self._used -= size
        start = offset
        end = offset + size
        by_size = self._free_by_size

        left_start = self._free_by_end.pop(start, None)
        if left_start is not None:
            left_size = self._free_by_start.pop(left_start)
            by_size.remove((left_size, left_start))
            start = left_start

        right_size = self._free_by_start.pop(end, None)
        if right_size is not None:
            del self._free_by_end[end + right_size]
            by_size.remove((right_size, end))
            end += right_size

        by_size.add((end - start, start))
        self._free_by_start[start] = end - start
        self._free_by_end[end] = start

    def block_size(self, offset: int) -> int:
        """Return the rounded size of a live block.

        Args:
            offset: The offset that :meth:`allocate` returned.

        Returns:
            The block's size in bytes, a multiple of ``alignment``. This is at
            least the size that was requested.

        Raises:
            ValueError: If ``offset`` is not the start of a live block.
        """
        size = self._allocated.get(offset)
        if size is None:
            raise ValueError(self._unknown_block_message(offset, "look up"))
        return size

    @property
    def capacity(self) -> int:
        """Size of the arena in bytes."""
        return self._capacity

    @property
    def alignment(self) -> int:
        """Alignment of every block's offset and size, in bytes."""
        return self._alignment

    @property
    def used(self) -> int:
        """Bytes in allocated blocks, counted at their rounded sizes."""
        return self._used

    @property
    def free_bytes(self) -> int:
        """Bytes not in any allocated block (``capacity - used``)."""
        return self._capacity - self._used

    @property
    def largest_free(self) -> int:
        """Size of the largest free block, or 0 if the arena is full.

        The largest request that can succeed is this rounded down to a
        multiple of ``alignment``.
        """
        by_size = self._free_by_size
        return by_size[-1][0] if by_size else 0

    @property
    def num_allocated(self) -> int:
        """Number of live blocks."""
        return len(self._allocated)

    @property
    def num_free_blocks(self) -> int:
        """Number of free blocks. Free neighbours are merged, so each one is a maximal hole."""
        return len(self._free_by_start)

    def fragmentation(self) -> float:
        """Return how scattered the free space is.

        Returns:
            ``1 - largest_free / free_bytes``. The value is 0.0 when all free
            space is one block or when nothing is free. It approaches 1.0 as
            the free space splits into many small holes.
        """
        free_bytes = self._capacity - self._used
        if free_bytes == 0:
            return 0.0
        return 1.0 - self.largest_free / free_bytes

    def __repr__(self) -> str:
        return (
            f"Allocator(capacity={self._capacity}, alignment={self._alignment}, "
            f"used={self._used}, num_allocated={len(self._allocated)}, "
            f"num_free_blocks={len(self._free_by_start)})"
        )

    # ------------------------------------------------------------ internals

    def _unknown_block_message(self, offset: object, action: str) -> str:
        # This runs only on the error path, so it can afford an O(n) search to
        # tell a double free from a stray offset.
        if isinstance(offset, int):
            for start, size in self._free_by_start.items():
                if start <= offset < start + size:
                    return (
                        f"Cannot {action} offset {offset}: it lies in free space "
                        f"[{start}, {start + size}). It was already freed or never "
                        f"allocated. Pass an offset returned by allocate() that has "
                        f"not been freed yet."
                    )
            for start, size in self._allocated.items():
                if start < offset < start + size:
                    return (
                        f"Cannot {action} offset {offset}: it lies inside the block "
                        f"allocated at offset {start} (size {size}), not at its "
                        f"start. Pass the offset returned by allocate()."
                    )
        return (
            f"Cannot {action} offset {offset!r}: no block was allocated there. "
            f"Pass an offset returned by allocate() that has not been freed yet."
        )

    def _check_invariants(self) -> None:
        """Check every invariant against the full state. Costs O(n log n).

        Tests call this after each operation. It raises AssertionError rather
        than using ``assert``, so that ``python -O`` does not skip it.
        """

        def fail(message: str) -> None:
            raise AssertionError(f"allocator invariant broken: {message}; {self!r}")

        by_size = list(self._free_by_size)
        by_start = self._free_by_start
        by_end = self._free_by_end

        if sorted((off, size) for size, off in by_size) != sorted(by_start.items()):
            fail("_free_by_size and _free_by_start disagree")
        if sorted((off + size, off) for off, size in by_start.items()) != sorted(
            by_end.items()
        ):
            fail("_free_by_end does not match _free_by_start")
        if sum(self._allocated.values()) != self._used:
            fail(f"_used={self._used} != sum of allocated sizes")

        blocks = sorted(
            [(off, size, "free") for off, size in by_start.items()]
            + [(off, size, "allocated") for off, size in self._allocated.items()]
        )
        position = 0
        previous_kind = None
        for off, size, kind in blocks:
            if size <= 0:
                fail(f"{kind} block at {off} has size {size}")
            if off % self._alignment:
                fail(f"{kind} block at {off} is not aligned to {self._alignment}")
            if kind == "allocated" and size % self._alignment:
                fail(f"allocated block at {off} has unaligned size {size}")
            if off < position:
                fail(f"{kind} block at {off} overlaps the block ending at {position}")
            if off > position:
                fail(f"gap [{position}, {off}) belongs to no block")
            if kind == "free" and previous_kind == "free":
                fail(f"free block at {off} is adjacent to the free block before it")
            position = off + size
            previous_kind = kind
        if position != self._capacity:
            fail(f"blocks end at {position}, not at capacity {self._capacity}")
