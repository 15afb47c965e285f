"""The cluster rules of NodeState (placement, results that cross nodes, borrowing, pulls,
node death), with several NodeStates sharing one ControlStore and no process or socket.

A ``Net`` carries each node's actions to the others, as the node processes and their TCP
connections would: ``Send`` to a ``RemoteNode`` arrives at that node from a token naming
the sender, answers to that token arrive back at the sender from its ``RemoteNode``, and a
``PushObject`` arrives as one DATA message followed by the holder's UNPIN.
"""

import collections
import os

from helpers import FakeStore

from purerun import exceptions
from purerun.core import protocol, serialization
from purerun.core.control_store import ControlStore
from purerun.core.node_state import (DISCONNECTED, DRIVER_CONNECTED, NODE_DIED, TICK,
                                     WORKER_STARTED, KillWorker, NodeState, PushObject,
                                     RemoteNode, Send, StartWorker)
from purerun.core.protocol import ARENA, ERROR, INLINE, ON_DISK, REMOTE, STORED
from purerun.core.generators import END_PAYLOAD
from purerun.core.task_spec import ACTOR_CREATION, ACTOR_METHOD, NODE_AFFINITY, ActorSpec, TaskSpec
from purerun.core.task_spec import STREAMING, item_id


class Incoming:
    """The token a node sees for another node's connection to it."""

    def __init__(self, sender):
        self.sender = sender

    def __repr__(self):
        return f"Incoming({self.sender.name})"


class ClusterNode:
    def __init__(self, net, name, resources, store_size=1 << 24, session_dir=None):
        self.net = net
        self.name = name
        self.store = FakeStore(store_size)
        node_id = name.encode().ljust(16, b".")
        self.state = NodeState({"node_id": node_id, "resources": resources, "head": "test",
                                "tcp_address": f"{name}:1", "session_dir": session_dir},
                               self.store, net.control, max_workers=8, max_starting_workers=8)
        self.node_id = node_id
        self.number = self.state.node_number
        self.sent = []          # (token, msg) to local peers
        self.effects = []
        self.incoming = {}      # sender name -> Incoming token
        self.pushed = []        # PushObject actions, in order
        self.workers = 0

    def feed(self, token, msg):
        self.net.queue.append((self, token, msg))
        self.net.settle()

    def tid(self):
        """A task id owned by this node (its number in the prefix)."""
        return self.number.to_bytes(4, "little") + os.urandom(12)

    def take(self, kind=None, token=None):
        got = [(t, m) for t, m in self.sent
               if (kind is None or m[0] == kind) and (token is None or t == token)]
        self.sent = [x for x in self.sent if x not in got]
        return got

    def executes(self):
        return [(t, m[1], m[2]) for t, m in self.take(protocol.EXECUTE)]


class Net:
    def __init__(self):
        self.control = ControlStore()
        self.nodes = {}
        self.queue = collections.deque()
        self.down = set()

    def add(self, name, store_size=1 << 24, session_dir=None, **resources):
        node = self.nodes[name] = ClusterNode(self, name, resources, store_size, session_dir)
        for other in self.nodes.values():   # as the head's node_added would
            other.state._refresh_nodes()
        return node

    def by_id(self, node_id):
        return next(n for n in self.nodes.values() if n.node_id == node_id)

    def settle(self):
        while self.queue:
            node, token, msg = self.queue.popleft()
            if node.name in self.down:
                continue
            self.apply(node, node.state.handle(token, msg))

    def apply(self, node, actions):
        for action in actions:
            if isinstance(action, Send):
                self.route(node, action.token, action.msg)
            elif isinstance(action, StartWorker):
                wid = action.worker_id
                self.queue.append((node, f"w{wid}", (WORKER_STARTED, wid, 1000 + wid)))
            elif isinstance(action, PushObject):
                holder_token = action.token
                puller = holder_token.sender
                remote = puller.state.remote[node.node_id]
                node.pushed.append(action)
                self.queue.append((puller, remote, (protocol.DATA, action.object_id, 0,
                                                    action.length, action.length)))
                self.queue.append((node, holder_token, (protocol.UNPIN, [action.object_id])))
            else:
                node.effects.append(action)

    def route(self, node, token, msg):
        if isinstance(token, RemoteNode):
            target = self.by_id(token.node_id)
            if target.name in self.down:
                return
            incoming = target.incoming.get(node.name)
            if incoming is None:
                incoming = target.incoming[node.name] = Incoming(node)
                self.queue.append((target, incoming, (protocol.NODE_HELLO, node.node_id)))
            self.queue.append((target, incoming, msg))
        elif isinstance(token, Incoming):
            sender = token.sender
            if sender.name not in self.down:
                self.queue.append((sender, sender.state.remote[node.node_id], msg))
        else:
            node.sent.append((token, msg))

    def kill(self, node):
        """The node dies: the head declares it dead, every other node is told."""
        self.down.add(node.name)
        self.control.node_dead(node.node_id)
        for other in self.nodes.values():
            if other is not node:
                self.queue.append((other, None, (NODE_DIED, node.node_id)))
        self.settle()


def value(x):
    return INLINE, serialization.to_inline(serialization.serialize(x))


def arena_result(node, worker, spec, size=1000):
    """The worker stores a large result in ``node``'s arena and reports it."""
    offset = node.state.objects.alloc(size)
    node.state.peers[worker].reservations.add(offset)
    results = [(oid, ARENA, (offset, 10, ((10, size - 10),)), ()) for oid in spec.return_ids()]
    node.feed(worker, (protocol.TASK_DONE, spec.task_id, results, False, False, (0, 1)))


def done(node, worker, spec, result=None):
    kind, payload = value(result)
    node.feed(worker, (protocol.TASK_DONE, spec.task_id,
                       [(oid, kind, payload, ()) for oid in spec.return_ids()],
                       False, False, (0, 1)))


def task(node, deps=(), resources=None, max_retries=0, strategy=None):
    return TaskSpec(task_id=node.tid(), name="f", function_key=b"k" * 16, args=None,
                    args_in_store=False, deps=list(deps), contained=[],
                    resources=resources or {"CPU": 1}, max_retries=max_retries,
                    job_id=b"\1\0\0\0", strategy=strategy)


def make_net(**second):
    net = Net()
    a = net.add("a", CPU=1)
    b = net.add("b", CPU=2, **second)
    net.control.export_function(b"k" * 16, b"pickled")
    a.feed("driver", (DRIVER_CONNECTED, True))
    return net, a, b


def test_a_task_only_another_node_can_run_goes_there_and_its_small_result_comes_back():
    net, a, b = make_net(gpu_box=1)
    spec = task(a, resources={"CPU": 1, "gpu_box": 1})
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, sent, _deps)] = b.executes()
    assert sent.task_id == spec.task_id and a.executes() == []
    done(b, worker, spec, "hello")
    [(_, msg)] = a.take(protocol.OBJECT, "driver")
    assert msg[2] == INLINE and serialization.deserialize(*msg[3]) == "hello"
    assert spec.return_ids()[0] not in b.state.objects.entries   # the holder forgot it
    assert spec.task_id not in a.state.tasks.tasks


def test_a_large_result_stays_on_its_node_until_pulled_and_is_freed_there_when_dropped():
    net, a, b = make_net(gpu_box=1)
    spec = task(a, resources={"CPU": 1, "gpu_box": 1})
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _sent, _deps)] = b.executes()
    used_before = b.store.used
    arena_result(b, worker, spec)
    [oid] = spec.return_ids()
    assert a.state.objects.get(oid).kind == REMOTE
    [(_, announced)] = a.take(protocol.OBJECT, "driver")
    assert announced[2] == STORED   # ready for wait(); the bytes are still on b
    assert b.store.used > used_before
    # The driver asks where it is: answered once pulled into a's arena.
    a.feed("driver", (protocol.REQUEST, 7, "locate", ([oid],)))
    [(_, reply)] = a.take(protocol.REPLY, "driver")
    assert reply[1] == 7 and reply[2] is True and reply[3][0][0] == ARENA
    assert a.state.objects.get(oid).kind == ARENA
    # Every pin given back and the driver's ref dropped: a forgets it, then so does b.
    a.feed("driver", (protocol.UNPIN, [oid]))
    a.feed("driver", (protocol.DROP_REFS, [oid]))
    assert oid not in a.state.objects.entries and a.store.used == 0
    assert oid not in b.state.objects.entries and b.store.used == used_before


def test_a_value_pulled_into_an_arena_too_small_for_it_goes_to_a_file_and_back_out():
    net = Net()
    a = net.add("a", store_size=4096, session_dir="/nonexistent", CPU=1)
    b = net.add("b", store_size=4096, session_dir="/nonexistent", CPU=2, gpu_box=1)
    net.control.export_function(b"k" * 16, b"pickled")
    a.feed("driver", (DRIVER_CONNECTED, True))
    spec = task(a, resources={"CPU": 1, "gpu_box": 1})
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _sent, _deps)] = b.executes()
    # Larger than b's arena: the worker wrote it to the file alloc named.
    b.feed(worker, (protocol.REQUEST, 1, "alloc", (8000,)))
    [(_, (_, _, ok, (kind, path)))] = b.take(protocol.REPLY, worker)
    assert ok and kind == ON_DISK
    [oid] = spec.return_ids()
    b.feed(worker, (protocol.TASK_DONE, spec.task_id,
                    [(oid, ON_DISK, (path, 8000, 10, ((64, 7936),)), ())], False, False, (0, 1)))
    assert b.state.objects.get(oid).kind == ON_DISK and b.state.peers[worker].reservations == set()
    a.feed("driver", (protocol.REQUEST, 7, "locate", ([oid],)))
    # b sends it from its file; a, with no room for it, pulls it into a file of its own.
    [push] = b.pushed
    assert push.path == path and push.length == 8000
    [(_, reply)] = a.take(protocol.REPLY, "driver")
    [(kind, payload)] = reply[3]
    assert kind == ON_DISK and payload[1:] == (8000, 10, ((64, 7936),))
    assert payload[0] in a.store.files and a.store.used == 0
    a.feed("driver", (protocol.UNPIN, [oid]))
    a.feed("driver", (protocol.DROP_REFS, [oid]))
    assert a.store.files == {} and oid not in a.state.objects.entries
    assert b.store.files == {} and oid not in b.state.objects.entries


def test_a_node_borrows_an_argument_from_the_node_that_owns_it():
    net, a, b = make_net(gpu_box=1)
    put_id = a.tid() + b"\0\0\0\0"
    kind, payload = value([1, 2, 3])
    a.feed("driver", (protocol.PUT, put_id, kind, payload, ()))
    spec = task(a, deps=[put_id], resources={"CPU": 1, "gpu_box": 1})
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, sent, deps)] = b.executes()
    assert deps == [(kind, payload)]
    # b holds a ref at a while its copy lives; the task over, it gives it back.
    borrower = a.incoming["b"]
    assert put_id in a.state.peers[borrower].refs
    done(b, worker, spec)
    assert put_id not in b.state.objects.entries
    assert put_id not in a.state.peers[borrower].refs
    assert put_id in a.state.objects.entries   # the driver still holds it


def test_node_affinity_hard_to_a_dead_node_fails_and_soft_runs_elsewhere():
    net, a, b = make_net()
    net.kill(b)
    hard = task(a, strategy=(NODE_AFFINITY, b.node_id, False))
    a.feed("driver", (protocol.SUBMIT, hard))
    [(_, msg)] = a.take(protocol.OBJECT, "driver")
    assert msg[2] == ERROR
    error = serialization.deserialize(msg[3])
    assert isinstance(error, exceptions.TaskUnschedulableError) and "dead" in str(error)
    soft = task(a, strategy=(NODE_AFFINITY, b.node_id, True))
    a.feed("driver", (protocol.SUBMIT, soft))
    assert [s.task_id for _w, s, _d in a.executes()] == [soft.task_id]


def test_spread_alternates_between_the_nodes():
    net, a, b = make_net()
    specs = [task(a, strategy="SPREAD") for _ in range(2)]
    for spec in specs:
        a.feed("driver", (protocol.SUBMIT, spec))
    assert len(a.executes()) == 1 and len(b.executes()) == 1


def test_when_a_node_dies_its_task_is_retried_here_and_its_values_are_lost():
    net, a, b = make_net(gpu_box=1)
    pinned = task(a, strategy=(NODE_AFFINITY, b.node_id, True), max_retries=1)
    once = task(a, strategy=(NODE_AFFINITY, b.node_id, True), max_retries=0)
    for spec in (pinned, once):
        a.feed("driver", (protocol.SUBMIT, spec))
    assert {s.task_id for _w, s, _d in b.executes()} == {pinned.task_id, once.task_id}
    net.kill(b)
    assert [s.task_id for _w, s, _d in a.executes()] == [pinned.task_id]
    objects = dict((m[1], m) for _t, m in a.take(protocol.OBJECT, "driver"))
    failed = objects[once.return_ids()[0]]
    assert failed[2] == ERROR
    assert isinstance(serialization.deserialize(failed[3]), exceptions.NodeDiedError)
    assert a.state.remote[b.node_id].alive is False


def test_a_remote_value_whose_holder_died_is_lost():
    net, a, b = make_net(gpu_box=1)
    spec = task(a, resources={"CPU": 1, "gpu_box": 1})
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _s, _d)] = b.executes()
    arena_result(b, worker, spec)
    [oid] = spec.return_ids()
    net.kill(b)
    a.feed("driver", (protocol.REQUEST, 3, "locate", ([oid],)))
    [(_, reply)] = a.take(protocol.REPLY, "driver")
    kind, payload = reply[3][0]
    assert kind == ERROR
    assert isinstance(serialization.deserialize(payload), exceptions.ObjectLostError)


def actor(a, strategy):
    actor_id = a.tid()
    return TaskSpec(task_id=actor_id, name="A.__init__", function_key=b"k" * 16, args=None,
                    args_in_store=False, deps=[], contained=[], resources={"CPU": 1},
                    kind=ACTOR_CREATION, actor_id=actor_id, job_id=b"\1\0\0\0",
                    actor=ActorSpec(class_name="A", hold={}, strategy=strategy),
                    strategy=strategy)


def call(a, creation, n=0):
    return TaskSpec(task_id=a.tid(), name="A.m", function_key=None, args=None,
                    args_in_store=False, deps=[], contained=[], kind=ACTOR_METHOD,
                    actor_id=creation.actor_id, method="m", job_id=b"\1\0\0\0")


def test_an_actor_placed_on_another_node_gets_its_calls_and_ends_with_its_handles():
    net, a, b = make_net()
    creation = actor(a, (NODE_AFFINITY, b.node_id, False))
    a.feed("driver", (protocol.SUBMIT, creation))
    [(worker, sent, _d)] = b.executes()
    assert sent.task_id == creation.task_id
    done(b, worker, creation)
    calls = [call(a, creation) for _ in range(3)]
    for spec in calls:
        a.feed("driver", (protocol.SUBMIT, spec))
    assert [s.task_id for _w, s, _d in b.executes()] == [c.task_id for c in calls]
    for spec in calls:
        done(b, worker, spec, 1)
    results = {m[1] for _t, m in a.take(protocol.OBJECT, "driver")}
    assert {c.return_ids()[0] for c in calls} <= results
    # The driver drops its last handle: b is told, and stops the actor's worker.
    a.feed("driver", (protocol.DROP_REFS, [creation.return_ids()[0]]))
    assert any(isinstance(e, KillWorker) for e in b.effects)


def test_an_actor_whose_argument_is_stored_on_another_node_starts_once_it_is_pulled():
    net, a, b = make_net(gpu_box=1)
    maker = task(a, resources={"CPU": 1, "gpu_box": 1})
    a.feed("driver", (protocol.SUBMIT, maker))
    [(worker, _sent, _deps)] = b.executes()
    arena_result(b, worker, maker)
    [oid] = maker.return_ids()
    assert a.state.objects.get(oid).kind == REMOTE
    creation = actor(a, None)
    creation.deps = [oid]
    a.feed("driver", (protocol.SUBMIT, creation))
    # The actor is placed here, on a: its argument is pulled from b, then __init__ runs.
    [push] = b.pushed
    assert push.object_id == oid
    [(_worker, sent, deps)] = a.executes()
    assert sent.task_id == creation.task_id and deps[0][0] == ARENA


def test_work_queued_for_want_of_room_moves_at_the_next_tick_to_a_node_with_room():
    net, a, b = make_net()
    first, second = task(a), task(a)
    for node in (a, b):
        for remote in node.state.remote.values():
            remote.available = {}                         # every view stale: nothing free
    a.feed("driver", (protocol.SUBMIT, first))
    a.feed("driver", (protocol.SUBMIT, second))
    assert len(a.executes()) == 1 and b.executes() == []
    a.feed(None, (TICK,))                                 # b reports 2 CPUs free
    assert [s.task_id for _w, s, _d in b.executes()] == [second.task_id]


def test_a_lost_connection_to_a_node_counts_as_its_death():
    net, a, b = make_net(gpu_box=1)
    spec = task(a, resources={"CPU": 1, "gpu_box": 1})
    a.feed("driver", (protocol.SUBMIT, spec))
    assert len(b.executes()) == 1
    a.feed(a.state.remote[b.node_id], (DISCONNECTED,))
    [(_, msg)] = a.take(protocol.OBJECT, "driver")
    assert msg[2] == ERROR


def test_a_value_lost_with_its_node_is_made_again_when_its_task_has_retries_left():
    net, a, b = make_net()
    spec = task(a, strategy=(NODE_AFFINITY, b.node_id, True), max_retries=1)
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _s, _d)] = b.executes()
    arena_result(b, worker, spec)
    [oid] = spec.return_ids()
    net.kill(b)
    [(worker, again, _d)] = a.executes()
    a.feed("driver", (protocol.REQUEST, 5, "locate", ([oid],)))   # waits for the re-run
    assert a.take(protocol.REPLY, "driver") == []
    assert again.task_id == spec.task_id and again.attempt == 1
    done(a, worker, again, "made again")
    [(_, reply)] = a.take(protocol.REPLY, "driver")
    kind, payload = reply[3][0]
    assert kind == INLINE and serialization.deserialize(*payload) == "made again"


def test_a_value_lost_with_its_node_and_no_retries_left_raises_object_lost():
    net, a, b = make_net()
    spec = task(a, strategy=(NODE_AFFINITY, b.node_id, True), max_retries=0)
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _s, _d)] = b.executes()
    arena_result(b, worker, spec)
    net.kill(b)
    assert a.executes() == []
    a.feed("driver", (protocol.REQUEST, 5, "locate", (spec.return_ids(),)))
    [(_, reply)] = a.take(protocol.REPLY, "driver")
    assert reply[3][0][0] == ERROR


# -- streaming generator calls placed on another node -------------------------------------------

def _streaming(node, **kw):
    return TaskSpec(task_id=node.tid(), name="g", function_key=b"k" * 16, args=None,
                    args_in_store=False, deps=[], contained=[],
                    resources={"CPU": 1, "gpu_box": 1}, job_id=b"\1\0\0\0",
                    generator=STREAMING, **kw)


def test_a_stream_made_on_another_node_is_relayed_item_by_item_and_ends_here():
    net, a, b = make_net(gpu_box=1)
    spec = _streaming(a)
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _sent, _deps)] = b.executes()
    b.feed(worker, (protocol.GENERATOR_ITEM, spec.task_id, 0, 0, *value("small"), ()))
    first = item_id(spec.task_id, 0)
    [(_, msg)] = a.take(protocol.OBJECT, "driver")
    assert msg[1] == first and serialization.deserialize(*msg[3]) == "small"
    assert first not in b.state.objects.entries          # small: b forgot it
    # A large one stays on b, held for a, until a's caller drops it.
    offset = b.state.objects.alloc(1000)
    b.state.peers[worker].reservations.add(offset)
    b.feed(worker, (protocol.GENERATOR_ITEM, spec.task_id, 0, 1, ARENA,
                    (offset, 10, ((10, 990),)), ()))
    second = item_id(spec.task_id, 1)
    assert a.state.objects.get(second).kind == REMOTE
    assert b.state.objects.get(second) is not None
    done(b, worker, spec)
    got = {m[1]: m for _t, m in a.take(protocol.OBJECT, "driver")}
    assert got[item_id(spec.task_id, 2)][2:] == (INLINE, END_PAYLOAD)
    assert spec.task_id not in b.state.streams           # b's part is over
    a.feed("driver", (protocol.DROP_REFS, [second]))
    assert second not in b.state.objects.entries and b.store.used == 0


def test_items_read_here_reach_the_worker_on_the_other_node():
    net, a, b = make_net(gpu_box=1)
    spec = _streaming(a, backpressure=1)
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _sent, _deps)] = b.executes()
    b.feed(worker, (protocol.GENERATOR_ITEM, spec.task_id, 0, 0, *value(0), ()))
    a.feed("driver", (protocol.ITEM_READ, spec.task_id, 1))
    assert b.take(protocol.ITEM_READ, worker) == [
        (worker, (protocol.ITEM_READ, spec.task_id, 1))]


def test_a_stream_whose_node_died_runs_again_elsewhere_without_repeating_items():
    net, a, b = make_net(gpu_box=1)
    c = net.add("c", CPU=1, gpu_box=1)
    spec = _streaming(a, max_retries=1)
    a.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _sent, _deps)] = b.executes() or c.executes()
    runner = b if b.state.tasks.get(spec.task_id) else c
    other = c if runner is b else b
    runner.feed(worker, (protocol.GENERATOR_ITEM, spec.task_id, 0, 0, *value(0), ()))
    assert len(a.take(protocol.OBJECT, "driver")) == 1
    net.kill(runner)
    [(worker2, again, _deps)] = other.executes()
    other.feed(worker2, (protocol.GENERATOR_ITEM, spec.task_id, again.attempt, 0,
                         *value(0), ()))
    assert a.take(protocol.OBJECT, "driver") == []       # item 0 came already
    other.feed(worker2, (protocol.GENERATOR_ITEM, spec.task_id, again.attempt, 1,
                         *value(1), ()))
    [(_, msg)] = a.take(protocol.OBJECT, "driver")
    assert msg[1] == item_id(spec.task_id, 1)
