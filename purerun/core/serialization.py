"""Turning values into bytes and back: cloudpickle with protocol-5 out-of-band buffers.

``serialize`` returns the pickle stream ("meta") and the out-of-band buffers separately, so a
numpy array's data is copied exactly once — into a message when small, into the shared-memory
arena when large — and ``deserialize`` rebuilds it over those buffers without copying. Those
buffers are read-only (bytes, or views of the arena), so a numpy array passed to a call or
got from the store is read-only, as in Ray; a bytearray is copied, and stays writable.

ObjectRefs met while pickling are recorded: a stored object keeps the objects it refers to
alive (the node counts them as held by the containing object).
"""

import collections
import io
import os
import pickle
import threading
import types
import weakref

import cloudpickle

from purerun.core.allocator import ALIGNMENT


_local = threading.local()

# Exact types whose pickle is the same from the C pickler as from cloudpickle: skipping
# cloudpickle's Python-level pickler saves about a microsecond per tiny value.
_PLAIN_TYPES = frozenset({bytes, str, int, float, bool, type(None)})



def _find_code_reduce():
    for module_name in ("cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast"):
        module = __import__(module_name, fromlist=["_code_reduce"])
        reduce = getattr(module, "_code_reduce", None)
        if reduce is not None:
            return reduce
    return None


_cloudpickle_code_reduce = _find_code_reduce()


def _code_reduce_keeping_filename(code):
    # cloudpickle >= 3.1 writes "<dynamic-code>" as the file name of functions it pickles by
    # value; keeping the real one lets a task's traceback show its source lines.
    rebuild, args = _cloudpickle_code_reduce(code)
    return rebuild, tuple(code.co_filename if a == "<dynamic-code>" and type(a) is str else a
                          for a in args)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, keeping code objects' file names."""

    if _cloudpickle_code_reduce is not None:
        dispatch_table = collections.ChainMap({types.CodeType: _code_reduce_keeping_filename},
                                              cloudpickle.Pickler.dispatch_table)


def _cloudpickle_dumps(value, buffer_callback=None):
    with io.BytesIO() as out:
        _Pickler(out, protocol=5, buffer_callback=buffer_callback).dump(value)
        return out.getvalue()


class SerializedValue:
    """A value ready to store: pickle stream, out-of-band buffers, refs found inside."""

    __slots__ = ("meta", "buffers", "contained", "size")

    def __init__(self, meta, buffers, contained):
        self.meta = meta
        self.buffers = buffers
        self.contained = contained
        self.size = len(meta) + sum(b.nbytes for b in buffers)


# A container of at most this many items, each plain (or a plain container in turn), is
# pickled by plain pickle: a call's arguments ``((1, "a"), {})`` or a result ``(True, b"x")``
# need nothing cloudpickle adds, and cloudpickle's pickler costs microseconds to make.
_PLAIN_ITEMS = 8


def _plain(value, depth):
    kind = type(value)
    if kind is tuple or kind is list:
        if len(value) > _PLAIN_ITEMS:
            return False
        for item in value:
            if type(item) not in _PLAIN_TYPES and not (depth > 1 and _plain(item, depth - 1)):
                return False
        return True
    if kind is dict:
        if len(value) > _PLAIN_ITEMS:
            return False
        for key, item in value.items():
            if type(key) is not str or type(item) not in _PLAIN_TYPES and not (
                    depth > 1 and _plain(item, depth - 1)):
                return False
        return True
    return False


def recording_refs():
    """The list that ObjectRef.__reduce__ appends to while ``serialize`` runs, else None."""
    return getattr(_local, "contained", None)


def serialize(value) -> SerializedValue:
    """Pickle ``value`` with its large buffers kept out of band.

    Raises:
        TypeError: the value (or something inside it) cannot be pickled; the message names
            the offending type.
    """
    if type(value) in _PLAIN_TYPES or _plain(value, 2):
        return SerializedValue(pickle.dumps(value, 5), [], [])
    buffers = []

    def keep(buf):
        # Every buffer goes out of band, the smallest too (as in Ray): rebuilt over a
        # read-only buffer (bytes inline, the arena), a numpy array comes back read-only,
        # wherever it was stored. In band, a small one would come back writable.
        buffers.append(buf.raw())
        return False

    outer = getattr(_local, "contained", None)
    contained = _local.contained = []
    try:
        meta = _cloudpickle_dumps(value, buffer_callback=keep)
    except (TypeError, pickle.PicklingError) as exc:
        # What pickling says of a value it cannot handle; anything else the value's own
        # __reduce__ (or __getstate__) raised is the caller's error, and goes up as it is,
        # as in Ray.
        raise _unpicklable(value, exc) from exc
    finally:
        _local.contained = outer
    return SerializedValue(meta, buffers, contained)


def dumps(value) -> bytes:
    """Plain in-band cloudpickle (functions, errors, small control data)."""
    return _cloudpickle_dumps(value)


def deserialize(meta, buffers=()):
    return pickle.loads(meta, buffers=buffers)


def to_inline(sv: SerializedValue):
    """The INLINE payload of a serialized value: (meta, buffers as bytes)."""
    return (sv.meta, tuple(bytes(b) for b in sv.buffers))


def arena_layout(sv: SerializedValue, alignment: int = ALIGNMENT):
    """Where the parts of ``sv`` go in an arena block: (total_size, meta_len, spans).

    The pickle stream comes first; every buffer starts on an ``alignment`` boundary so that
    numpy gets aligned data.
    """
    pos = len(sv.meta)
    spans = []
    for buf in sv.buffers:
        pos = (pos + alignment - 1) // alignment * alignment
        spans.append((pos, buf.nbytes))
        pos += buf.nbytes
    return max(pos, 1), len(sv.meta), tuple(spans)


def write_to_arena(arena_view, offset, sv: SerializedValue, layout, pages=None):
    """Copy the serialized value into the arena at ``offset`` (the one copy a put makes).

    Buffers of ``LARGE_WRITE`` bytes or more are written as ``pages`` (an ArenaPages of
    this process) says is quickest; without it, all is copied into the mapping.
    """
    _total, meta_len, spans = layout
    arena_view[offset:offset + meta_len] = sv.meta
    for (start, length), buf in zip(spans, sv.buffers):
        if buf.format != "B" or buf.ndim != 1:
            buf = buf.cast("B")
        if pages is not None and length >= LARGE_WRITE:
            pages.write(arena_view, offset + start, buf)
        else:
            arena_view[offset + start:offset + start + length] = buf


# A buffer at least this large is written the quickest way ArenaPages knows; below it, a
# copy into the mapping always is.
LARGE_WRITE = 4 << 20


class ArenaPages:
    """How one process writes large buffers into the arena, and what it knows of its pages.

    Copying into pages of the mapping this process has not touched yet costs a page fault
    per 4 KiB, and for a page the arena never had, the kernel allocates and zeroes it
    first. ``pwrite`` on the arena's file fills new pages with no fault and no zeroing
    (GIL released), but into pages this process has mapped already, a plain copy is 2-3x
    quicker than pwrite. Measured on a 2-core VM, 512 MiB::

                                          copy into the mapping   pwrite
        pages the arena never had                 0.91 s           0.47 s
        pages it has, not mapped here             0.52 s           0.35 s
        pages mapped here                         0.10 s           0.26 s

    (MADV_POPULATE_WRITE before the copy: 0.88 s on new pages, no gain.) So a region of
    ``CHUNK`` bytes this process never wrote a large buffer over is written with pwrite
    (its pages are then the arena's), and any later large write over it is a copy (which
    maps them here for good). A region written by small copies only, or by other
    processes, counts as never written: pwrite is the better guess there too.

    Args:
        fd: the arena's file descriptor, which this object owns from now on.
        size: the arena's size in bytes.
        chunk: the size of the regions it keeps a flag for.
    """

    CHUNK = 2 << 20
    # pwrite moves at most this much per call (Linux caps one write at 2 GiB - 4 KiB).
    WRITE_CALL = 64 << 20

    def __init__(self, fd, size, chunk=CHUNK):
        self.fd = fd
        self.chunk = chunk
        # Closed with this object, never under a write in flight (the writer holds it).
        weakref.finalize(self, os.close, fd)
        # One flag per CHUNK: 1 once this process wrote a large buffer over all of it.
        self.written = bytearray(-(-size // chunk))

    def write(self, arena_view, position, buf):
        """Write the byte buffer ``buf`` at ``position`` of the arena."""
        end = position + buf.nbytes
        chunk = self.chunk
        first = -(-position // chunk)     # the chunks wholly inside [position, end)
        last = end // chunk
        written = self.written
        runs = []                         # [start, stop, copy?], alternating
        at = position
        while at < end:
            index = at // chunk
            stop = min(end, (index + 1) * chunk)
            copy = first <= index < last and written[index] == 1
            if runs and runs[-1][2] == copy:
                runs[-1][1] = stop
            else:
                runs.append([at, stop, copy])
            at = stop
        for start, stop, copy in runs:
            part = buf[start - position:stop - position]
            if copy:
                arena_view[start:stop] = part
            else:
                self._pwrite(start, part)
        if first < last:
            written[first:last] = b"\x01" * (last - first)

    def _pwrite(self, position, buf):
        done = 0
        size = buf.nbytes
        step = self.WRITE_CALL
        while done < size:
            done += os.pwrite(self.fd, buf[done:done + step], position + done)


def write_to_file(path, sv: SerializedValue, layout):
    """Write the serialized value to a new file at ``path``, laid out as in an arena block."""
    total, meta_len, spans = layout
    with open(path, "wb") as f:
        f.write(sv.meta)
        for (start, _length), buf in zip(spans, sv.buffers):
            if buf.format != "B" or buf.ndim != 1:
                buf = buf.cast("B")
            f.seek(start)
            f.write(buf)
        f.truncate(total)


def _unpicklable(value, exc) -> TypeError:
    path = _find_unpicklable(value, "value", depth=0)
    where = f" at {path}" if path else ""
    return TypeError(
        f"Could not serialize the {type(value).__name__} object{where}: {exc}. "
        "Values passed to or returned from remote functions, and put in the object store, "
        "must be picklable by cloudpickle (open files, locks, sockets and generators are not).")


def _find_unpicklable(value, path, depth):
    """Best-effort search for the innermost unpicklable part of a container."""
    if depth > 6:
        return None
    items = ()
    if isinstance(value, dict):
        items = ((f"{path}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        items = ((f"{path}.{k}", v) for k, v in vars(value).items())
    for sub_path, sub in items:
        try:
            cloudpickle.dumps(sub, protocol=5, buffer_callback=lambda b: False)
        except Exception:
            deeper = _find_unpicklable(sub, sub_path, depth + 1)
            return deeper or f"{sub_path} (type {type(sub).__name__})"
    return None
