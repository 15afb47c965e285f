"""Generator calls on a node: where each yielded value goes, and when a stream ends.

::

    worker (Executor)            node (GeneratorRules, this module)          owner (Client)
    ─────────────────            ──────────────────────────────────          ──────────────
    yield v  ── GENERATOR_ITEM ─▶ Stream.report: the next index of the
              (task, attempt, k)   current attempt is sealed as item_id(k),  ── OBJECT ──▶
                                   held for the owner; a repeat (a retry       ObjectRefGenerator
                                   yielding again) or a stale one is freed     hands out item k
    paused  ◀── ITEM_READ ────── ITEM_READ from the owner: how many it took ◀── ITEM_READ
              (backpressure)       (only for streams with backpressure)
    TASK_DONE ────────────────▶  _finish: the end marker (or the call's error) is sealed as
                                   the item after the last one: the owner stops there
                                 STREAM_DROPPED from the owner: items it never took are
                                   released; later ones are freed on arrival  ◀── __del__

In a cluster the node that placed the call (A) is the owner's node and the one running it
(B) relays: B seals each item, holds it for A, and sends it on as GENERATOR_ITEM with its
remote form (as RESULTS carries a result); A seals it for its client. ITEM_READ goes the
other way. A alone writes the end marker; B forgets its stream when the call ends.

The rules of one stream (``Stream``) are a pure record, tested event by event; the node
hooks (``GeneratorRules``, a mixin of NodeState) apply them to the object table.

Dynamic calls (num_returns="dynamic") need no stream: the worker stores every item with
TASK_DONE, and return 0, a DynamicObjectRefGenerator, holds them (``_seal_dynamic``).
"""

from purerun.core import protocol
from purerun.core.protocol import ARENA, ERROR, INLINE, ON_DISK, REMOTE
from purerun.core.node_vocabulary import RemoteNode
from purerun.core.task_spec import DYNAMIC, STREAMING, item_id

__all__ = ["END_PAYLOAD", "Stream", "GeneratorRules", "SEAL", "REPEAT", "DISCARD"]

# The end marker: an INLINE payload no serialized value can equal (every pickle starts with
# its protocol byte), sealed as the item after a stream's last. Nobody ever deserializes it:
# the owner's generator stops when it meets it.
END_PAYLOAD = (b"purerun:end-of-stream", ())

# What to do with a reported item (Stream.report).
SEAL = "seal"          #: the next item of the current attempt: store it
REPEAT = "repeat"      #: sealed already (a retry yields its items again): free it
DISCARD = "discard"    #: a stale attempt's, or the owner dropped the stream: free it

# ITEM_READ count that releases a paused generator for good (the owner dropped the stream).
ALL_READ = 1 << 62


class Stream:
    """The node's record of one streaming call, from submit until it ended and is dropped.

    Invariant: items ``0 .. sealed - 1`` are in the object table, each held for the owner
    until the owner's generator hands it out (then its ObjectRef holds it) or is dropped.
    """

    __slots__ = ("owner", "attempt", "sealed", "read", "dropped", "ended")

    def __init__(self, owner, attempt=0):
        self.owner = owner      #: token of the caller (a client, or the node that placed it)
        self.attempt = attempt  #: items of other attempts are stale
        self.sealed = 0         #: how many items are stored
        self.read = 0           #: how many the owner has taken (backpressure)
        self.dropped = False    #: the owner's generator is gone
        self.ended = False      #: the call finished: its end (or error) is sealed

    def report(self, attempt, index):
        """A worker yielded item ``index`` in run ``attempt``: SEAL, REPEAT or DISCARD."""
        if attempt < self.attempt or self.dropped or self.ended:
            return DISCARD
        # A later run (a retry, here or on another node) yields the earlier items again.
        self.attempt = attempt
        if index < self.sealed:
            return REPEAT
        if index > self.sealed:
            # Items of one run arrive in order and a retry repeats the earlier ones first,
            # so this never happens; were it to, a gap must not be sealed over.
            return DISCARD
        self.sealed += 1
        return SEAL

    def took(self, count):
        """The owner has taken ``count`` items; True if that is news."""
        if count <= self.read:
            return False
        self.read = count
        return True

    def drop(self, next_index):
        """The owner's generator is gone, having taken ``next_index`` items.

        Returns:
            The indices of the items still held for the owner, to release.
        """
        self.dropped = True
        return range(min(next_index, self.sealed), self.sealed)

    def end(self):
        """The call finished; return the index its end marker (or error) is sealed at,
        or None when nobody will read it (dropped)."""
        self.ended = True
        if self.dropped:
            return None
        self.sealed += 1   # the marker is held for the owner like an item
        return self.sealed - 1


class GeneratorRules:
    """NodeState's handlers and hooks for generator calls (a mixin; see the module doc).

    Uses NodeState's ``streams`` (task id -> Stream), ``tasks``, ``peers``, ``objects``,
    ``workers``, ``_seal`` and ``_send``.
    """

    # ── hooks NodeState calls ──────────────────────────────────────────────────────────

    def _stream_submitted(self, task):
        spec = task.spec
        if spec.generator == STREAMING and spec.task_id not in self.streams:
            self.streams[spec.task_id] = Stream(task.owner, spec.attempt)

    def _stream_executing(self, task, worker_token):
        """A streaming call goes to a worker: tell it what the owner has read already."""
        stream = self.streams.get(task.spec.task_id)
        if stream is not None:
            if stream.read and task.spec.backpressure > 0:
                self._send(worker_token, (protocol.ITEM_READ, task.spec.task_id, stream.read))

    def _generator_finished(self, task, results):
        """The call ended with ``results`` (return 0, and a dynamic call's items first).

        Returns:
            ``(results, held)``: the results to seal, and ids held until they are sealed
            (NodeState releases them then).
        """
        spec = task.spec
        if spec.generator == DYNAMIC:
            return self._seal_dynamic(results)
        stream = self.streams.get(spec.task_id)
        if stream is None:
            return results, ()
        owner_peer = self.peers.get(stream.owner)
        index = stream.end()
        if owner_peer is None or owner_peer.kind == "node":
            # The placing node writes its own end; nothing here will read this stream.
            index = None
        if index is not None:
            ok = not results or results[0][1] != ERROR
            payload = END_PAYLOAD if ok else results[0][2]
            self._seal_item(stream, item_id(spec.task_id, index), INLINE if ok else ERROR,
                            payload, ())
        if index is None or stream.dropped:
            del self.streams[spec.task_id]
        return results, ()

    def _seal_dynamic(self, results):
        """Store a dynamic call's items before return 0, which holds them."""
        objects = self.objects
        first = results[-1:]
        items = results[:-1]
        if not items:
            return results, ()
        for object_id, _kind, _payload, _contained in items:
            objects.expect(object_id).holds += 1   # until return 0 holds them
        object_id, kind, payload, contained = first[0]
        if kind != ERROR and not contained:
            # Relayed from another node, which keeps what return 0 refers to: here too.
            contained = tuple(item[0] for item in items)
        return items + [(object_id, kind, payload, contained)], [item[0] for item in items]

    def _streams_of_gone(self, token):
        """The owner ``token`` disconnected: its streams end here (its holds go with it)."""
        for task_id in [t for t, s in self.streams.items() if s.owner == token]:
            stream = self.streams[task_id]
            stream.dropped = True
            if stream.ended:
                del self.streams[task_id]
            else:
                self._tell_executor(task_id, ALL_READ)   # nobody will read: run on

    # ── handlers ───────────────────────────────────────────────────────────────────────

    def _on_generator_item(self, token, msg):
        _, task_id, attempt, index, kind, payload, contained = msg
        from_node = type(token) is RemoteNode
        peer = None if from_node else self.peers.get(token)
        if (kind == ARENA or kind == ON_DISK) and peer is not None:
            peer.reservations.discard(payload[0])
        task = self.tasks.get(task_id)
        stream = self.streams.get(task_id)
        if task is None or stream is None or (from_node and task.node is not token):
            verdict = DISCARD   # over, or (from another node) placed elsewhere since
        else:
            verdict = stream.report(attempt, index)
        if verdict != SEAL:
            if kind == ARENA or kind == ON_DISK:
                self.objects.discard(kind, payload)
            elif from_node and contained:   # ``contained``: held there for us; give it back
                self._send(token, (protocol.DROP_REFS, [item_id(task_id, index)]))
            return
        held = from_node and bool(contained)
        self._seal_item(stream, item_id(task_id, index), kind, payload,
                        () if from_node else contained, remote_holder=token if held else None)

    def _seal_item(self, stream, object_id, kind, payload, contained, remote_holder=None):
        """Store one item, held for the stream's owner, and tell the owner."""
        objects = self.objects
        owner = stream.owner
        owner_peer = self.peers.get(owner)
        entry = objects.expect(object_id)
        if remote_holder is not None:
            entry.remote_hold = remote_holder.node_id
        if owner_peer is None:
            self._seal(object_id, kind, payload, contained)   # freed again: nobody holds it
            return
        entry.holds += 1
        owner_peer.refs.add(object_id)
        to_node = owner_peer.kind == "node"
        if not to_node:
            objects.subscribe(object_id, owner)
        self._seal(object_id, kind, payload, contained)
        if to_node:
            self._relay_item(stream, owner, owner_peer, object_id)

    def _relay_item(self, stream, owner, owner_peer, object_id):
        """Send an item sealed here to the node that placed the call (its owner's node)."""
        objects = self.objects
        entry = objects.get(object_id)
        kind, payload = objects.remote_form(entry, self.node_id)
        held = kind == REMOTE or bool(entry.contained)
        if not held:
            owner_peer.refs.discard(object_id)
            objects.release(object_id)
        task_id = object_id[:-4]
        index = stream.sealed - 1
        self._send(owner, (protocol.GENERATOR_ITEM, task_id, stream.attempt, index, kind,
                           payload, held))

    def _on_item_read(self, token, msg):
        _, task_id, count = msg
        stream = self.streams.get(task_id)
        if stream is not None and stream.took(count):
            self._tell_executor(task_id, count)

    def _tell_executor(self, task_id, count):
        task = self.tasks.get(task_id)
        if task is None or not task.spec.backpressure > 0:
            return
        if task.node is not None:
            self._send(task.node, (protocol.ITEM_READ, task_id, count))
            return
        worker = self.workers.get(task.worker_id) if task.worker_id is not None else None
        if worker is not None:
            self._send(worker.token, (protocol.ITEM_READ, task_id, count))

    def _on_stream_dropped(self, token, msg):
        _, task_id, next_index = msg
        stream = self.streams.get(task_id)
        if stream is None:
            return
        refs = self.peers[token].refs if token in self.peers else set()
        release = self.objects.release
        for index in stream.drop(next_index):
            object_id = item_id(task_id, index)
            if object_id in refs:
                refs.discard(object_id)
                release(object_id)
        if stream.ended:
            del self.streams[task_id]
        else:
            self._tell_executor(task_id, ALL_READ)   # a paused generator runs on, unread
