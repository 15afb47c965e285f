"""Tests of NodeState, the node's rules, driven event by event with no process started.

Tokens are plain strings ("driver", "w1", ...); the byte store is a fake on the real
allocator. Each test feeds wire messages and node-internal events and reads the actions.
"""

import pickle

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from helpers import FakeStore
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from purerun import exceptions
from purerun.core import ids, protocol, serialization
from purerun.core.actors import ACTOR_PIPELINE_DEPTH, ALIVE, DEAD, RESTARTING
from purerun.core.control_store import ControlStore
from purerun.core.node_state import (DISCONNECTED, DRIVER_CONNECTED, WORKER_OUTPUT,
                                     WORKER_STARTED, DrainOutput, InterruptWorker, KillWorker,
                                     NodeState, Send, StartWorker, Stop)
from purerun.core.protocol import ARENA, ERROR, INLINE
from purerun.core.task_spec import (ACTOR_CREATION, ACTOR_METHOD, NODE_AFFINITY, ActorSpec,
                                     TaskSpec)

def value(x):
    """An INLINE payload for ``x``."""
    return INLINE, serialization.to_inline(serialization.serialize(x))


class Node:
    """A NodeState with a driver connected; workers start when asked."""

    def __init__(self, cpus=1, store_size=1 << 20, driver="driver"):
        self.store = FakeStore(store_size)
        self.control = ControlStore()
        self.state = NodeState({"node_id": b"N" * 16, "resources": {"CPU": cpus},
                                "session_dir": "/nonexistent"}, self.store, self.control,
                               max_workers=8, max_starting_workers=8)
        self.sent = []        # (token, msg)
        self.effects = []     # other actions
        self.pids = {}
        self.connect(driver, owner=True)

    def connect(self, token, owner=False):
        self.feed(token, (DRIVER_CONNECTED, owner))

    def feed(self, token, msg):
        self.run(self.state.handle(token, msg))

    def run(self, actions):
        for action in actions:
            if isinstance(action, Send):
                self.sent.append((action.token, action.msg))
            elif isinstance(action, StartWorker):
                wid = action.worker_id
                self.pids[wid] = 1000 + wid
                self.run(self.state.handle(f"w{wid}", (WORKER_STARTED, wid, 1000 + wid)))
            else:
                self.effects.append(action)

    def take(self, kind=None, token=None):
        """Sent messages (of ``kind``, to ``token``) since the last take."""
        got = [(t, m) for t, m in self.sent
               if (kind is None or m[0] == kind) and (token is None or t == token)]
        self.sent = [x for x in self.sent if x not in got]
        return got

    def executes(self):
        """(worker token, spec) of every EXECUTE sent since the last call."""
        return [(t, m[1]) for t, m in self.take(protocol.EXECUTE)]

    def objects_to(self, token="driver"):
        """{object id: (kind, payload)} of the OBJECT messages sent to ``token``."""
        return {m[1]: (m[2], m[3]) for _t, m in self.take(protocol.OBJECT, token)}

    def done(self, worker, spec, result=None, retry=False, exiting=False):
        kind, payload = value(result)
        results = [(oid, kind, payload, ()) for oid in spec.return_ids()]
        self.feed(worker, (protocol.TASK_DONE, spec.task_id, results, retry, exiting, (0, 1)))

    def raised(self, worker, spec, error, retry=False):
        payload = serialization.dumps(error)
        results = [(oid, ERROR, payload, ()) for oid in spec.return_ids()]
        self.feed(worker, (protocol.TASK_DONE, spec.task_id, results, retry, False, (0, 1)))


def task(name="f", deps=(), max_retries=0, cpus=1, job=b"\1\0\0\0", **kw):
    return TaskSpec(task_id=ids.new_task_id(), name=name, function_key=b"k" * 16, args=None,
                    args_in_store=False, deps=list(deps), contained=[],
                    resources={"CPU": cpus}, max_retries=max_retries, job_id=job, **kw)


def actor_spec(max_restarts=0, max_task_retries=0, max_concurrency=1, name=None,
               detached=False):
    actor_id = ids.new_task_id()
    return TaskSpec(task_id=actor_id, name="A.__init__", function_key=b"c" * 16, args=None,
                    args_in_store=False, deps=[], contained=[], resources={"CPU": 1},
                    kind=ACTOR_CREATION, actor_id=actor_id, job_id=b"\1\0\0\0",
                    actor=ActorSpec(class_name="A", name=name, detached=detached,
                                    max_restarts=max_restarts, max_task_retries=max_task_retries,
                                    max_concurrency=max_concurrency, hold={}))


def call(actor, method="m", deps=(), max_retries=None):
    return TaskSpec(task_id=ids.new_task_id(), name=f"A.{method}", function_key=None,
                    args=None, args_in_store=False, deps=list(deps), contained=[],
                    max_retries=max_retries, kind=ACTOR_METHOD, actor_id=actor.actor_id,
                    method=method, job_id=b"\1\0\0\0")


def error_of(entry):
    kind, payload = entry
    assert kind == ERROR
    return pickle.loads(payload)


def start_actor(node, spec, owner="driver"):
    node.feed(owner, (protocol.SUBMIT, spec))
    [(worker, creation)] = node.executes()
    assert creation.task_id == spec.task_id
    node.done(worker, spec)
    assert node.state.actors[spec.actor_id].state == ALIVE
    node.take()
    return worker


# ─── tasks ───────────────────────────────────────────────────────────────────────────────


def test_a_task_runs_on_a_started_worker_and_its_result_goes_to_its_owner():
    node = Node()
    spec = task()
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, sent)] = node.executes()
    assert sent is spec and worker == "w1"
    node.done(worker, spec, 42)
    objects = node.objects_to()
    kind, payload = objects[spec.return_ids()[0]]
    assert kind == INLINE and serialization.deserialize(*payload) == 42
    assert len(node.state.tasks) == 0


def test_hard_node_affinity_to_a_node_not_in_a_one_node_cluster_fails_and_soft_runs_here():
    node = Node()
    missing = b"M" * 16
    hard = task(strategy=(NODE_AFFINITY, missing, False))
    node.feed("driver", (protocol.SUBMIT, hard))
    [entry] = node.objects_to().values()
    error = error_of(entry)
    assert isinstance(error, exceptions.TaskUnschedulableError)
    assert "not in the cluster" in str(error)
    assert node.executes() == []
    soft = task(strategy=(NODE_AFFINITY, missing, True))
    here = task(strategy=(NODE_AFFINITY, b"N" * 16, False))
    node.feed("driver", (protocol.SUBMIT, soft))
    node.feed("driver", (protocol.SUBMIT, here))
    assert [spec.task_id for _w, spec in node.executes()] == [soft.task_id]


def test_a_task_whose_worker_dies_is_retried_until_its_budget_is_spent():
    node = Node()
    spec = task(max_retries=1)
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    node.feed(worker, (DISCONNECTED,))
    [(worker2, again)] = node.executes()
    assert again.task_id == spec.task_id and again.attempt == 1 and worker2 != worker
    node.feed(worker2, (DISCONNECTED,))
    error = error_of(node.objects_to()[spec.return_ids()[0]])
    assert isinstance(error, exceptions.WorkerCrashedError)
    assert "tried 2 time(s)" in str(error)


def test_max_retries_minus_one_retries_without_end():
    node = Node()
    spec = task(max_retries=-1)
    node.feed("driver", (protocol.SUBMIT, spec))
    for attempt in range(1, 6):
        [(worker, _)] = node.executes()
        node.feed(worker, (DISCONNECTED,))
        assert spec.attempt == attempt
    assert node.executes()  # still going


def test_an_error_allowed_by_retry_exceptions_runs_the_task_again():
    node = Node()
    spec = task(max_retries=2, retry_exceptions=True)
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    node.raised(worker, spec, ValueError("x"), retry=True)
    assert node.objects_to() == {}
    [(worker, again)] = node.executes()
    assert again.attempt == 1
    node.done(worker, spec, "ok")
    assert spec.return_ids()[0] in node.objects_to()


def test_a_task_waits_for_its_argument_then_runs():
    node = Node()
    first, second = task(), None
    node.feed("driver", (protocol.SUBMIT, first))
    second = task(deps=first.return_ids())
    node.feed("driver", (protocol.SUBMIT, second))
    [(worker, spec)] = node.executes()
    assert spec is first
    node.done(worker, first, 1)
    [(_, spec)] = node.executes()
    assert spec is second


def test_an_argument_that_no_longer_exists_fails_the_task_with_object_lost():
    node = Node()
    gone = ids.object_id(ids.new_task_id(), 0)
    spec = task(deps=[gone])
    node.feed("driver", (protocol.SUBMIT, spec))
    [(_t, (_, sent, dep_payloads, _fn, _gpus))] = node.take(protocol.EXECUTE)
    assert sent is spec
    [(kind, payload)] = dep_payloads
    assert kind == ERROR
    assert isinstance(pickle.loads(payload), exceptions.ObjectLostError)


def test_cancel_of_a_pending_task_fails_it_with_task_cancelled():
    node = Node(cpus=1)
    running, queued = task(), task()
    node.feed("driver", (protocol.SUBMIT, running))
    node.feed("driver", (protocol.SUBMIT, queued))
    node.executes()
    node.feed("driver", (protocol.CANCEL, queued.return_ids()[0], False, False))
    error = error_of(node.objects_to()[queued.return_ids()[0]])
    assert isinstance(error, exceptions.TaskCancelledError)
    assert node.effects == []


def test_cancel_of_a_running_task_interrupts_or_kills_its_worker():
    node = Node(cpus=2)
    soft, hard = task(), task()
    node.feed("driver", (protocol.SUBMIT, soft))
    node.feed("driver", (protocol.SUBMIT, hard))
    workers = {spec.task_id: w for w, spec in node.executes()}
    node.feed("driver", (protocol.CANCEL, soft.return_ids()[0], False, False))
    node.feed("driver", (protocol.CANCEL, hard.return_ids()[0], True, False))
    soft_id = int(workers[soft.task_id][1:])
    hard_id = int(workers[hard.task_id][1:])
    assert node.effects == [InterruptWorker(soft_id), KillWorker(hard_id)]
    # The killed worker's task fails with WorkerCrashedError, never retried.
    node.feed(workers[hard.task_id], (DISCONNECTED,))
    error = error_of(node.objects_to()[hard.return_ids()[0]])
    assert isinstance(error, exceptions.WorkerCrashedError)


def test_a_cancel_is_idempotent_and_reaches_children_when_recursive():
    node = Node(cpus=1)
    parent = task()
    node.feed("driver", (protocol.SUBMIT, parent))
    [(worker, _)] = node.executes()
    child = task()
    node.feed(worker, (protocol.SUBMIT, child))  # queued: the only CPU is taken
    node.feed("driver", (protocol.CANCEL, parent.return_ids()[0], False, True))
    node.feed("driver", (protocol.CANCEL, parent.return_ids()[0], False, True))
    assert node.effects == [InterruptWorker(1)]
    error = error_of(node.objects_to(worker)[child.return_ids()[0]])
    assert isinstance(error, exceptions.TaskCancelledError)


def test_a_cancelled_task_whose_worker_dies_is_not_retried():
    node = Node()
    spec = task(max_retries=3)
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    node.feed("driver", (protocol.CANCEL, spec.return_ids()[0], False, False))
    node.feed(worker, (DISCONNECTED,))
    error = error_of(node.objects_to()[spec.return_ids()[0]])
    assert isinstance(error, exceptions.TaskCancelledError)
    assert node.executes() == []


def test_flush_output_drains_the_worker_pipes_before_it_answers():
    node = Node()
    actions = node.state.handle("driver", (protocol.REQUEST, 7, "flush_output", ()))
    assert actions == [DrainOutput(), Send("driver", (protocol.REPLY, 7, True, None))]
    # What the drain reads is relayed as it is read: ahead of the REPLY, on the same socket.
    relayed = node.state.handle(None, (WORKER_OUTPUT, 1234, 1, "last words"))
    assert relayed == [Send("driver", (protocol.LOG, 1234, 1, "last words"))]


def test_the_owner_leaving_stops_the_node():
    node = Node()
    node.connect("other")
    node.feed("other", (DISCONNECTED,))
    assert Stop() not in node.effects
    node.feed("driver", (DISCONNECTED,))
    assert node.effects[-1] == Stop()


def test_every_driver_gets_its_own_job():
    node = Node()
    node.connect("second")
    first = node.state.welcome_info("driver")["job_id"]
    second = node.state.welcome_info("second")["job_id"]
    assert first != second and len(first) == 4


def test_a_departed_drivers_tasks_calls_and_actors_end_with_it():
    node = Node(cpus=2)
    node.connect("other")
    job = node.state.welcome_info("other")["job_id"]
    running, queued = task(job=job), task(job=job)
    mine = task()   # the first driver's: it stays
    node.feed("other", (protocol.SUBMIT, running))
    node.feed("driver", (protocol.SUBMIT, mine))
    node.feed("other", (protocol.SUBMIT, queued))
    started = dict((spec.task_id, worker) for worker, spec in node.executes())
    assert set(started) == {running.task_id, mine.task_id}
    keeper = actor_spec(detached=True)
    keeper.job_id = job
    node.feed("other", (protocol.SUBMIT, keeper))
    node.effects.clear()
    node.feed("other", (DISCONNECTED,))
    # The running task's worker is killed, the queued one never runs, the other job's runs on.
    assert KillWorker(int(started[running.task_id][1:])) in node.effects
    assert node.state.tasks.get(queued.task_id) is None
    assert node.state.tasks.get(mine.task_id) is not None
    assert not [spec for _w, spec in node.executes() if spec.task_id == queued.task_id]
    # A detached actor of that job lives on (it is created, not killed).
    assert node.state.actors[keeper.actor_id].state != DEAD


def test_a_departed_drivers_actor_that_is_not_detached_dies_though_others_hold_it():
    # As in Ray, an actor shares its owner's fate: a handle another job holds does not
    # keep it alive.
    node = Node(cpus=2)
    node.connect("other")
    spec = actor_spec()
    spec.job_id = node.state.welcome_info("other")["job_id"]
    start_actor(node, spec, owner="other")
    node.feed("driver", (protocol.ADD_REFS, [ids.object_id(spec.actor_id, 0)]))
    assert node.state.actors[spec.actor_id].state == ALIVE
    node.feed("other", (DISCONNECTED,))
    actor = node.state.actors.get(spec.actor_id)
    assert actor is None or actor.state == DEAD


# ─── objects ─────────────────────────────────────────────────────────────────────────────


def test_a_put_value_is_freed_when_its_last_holder_drops_it():
    node = Node()
    oid = ids.new_put_id()
    node.feed("driver", (protocol.PUT, oid, *value("v"), ()))
    assert node.state.objects.get(oid) is not None
    node.feed("driver", (protocol.DROP_REFS, [oid]))
    assert node.state.objects.get(oid) is None


def test_refs_inside_a_stored_value_live_as_long_as_it():
    node = Node()
    inner, outer = ids.new_put_id(), ids.new_put_id()
    node.feed("driver", (protocol.PUT, inner, *value(1), ()))
    node.feed("driver", (protocol.PUT, outer, *value(2), (inner,)))
    node.feed("driver", (protocol.DROP_REFS, [inner]))
    assert node.state.objects.get(inner) is not None
    node.feed("driver", (protocol.DROP_REFS, [outer]))
    assert node.state.objects.get(inner) is None


def test_an_arena_value_is_not_freed_while_a_reader_holds_its_pin():
    node = Node()
    node.feed("driver", (protocol.REQUEST, 1, "alloc", (1000,)))
    [(_t, (_, _, ok, (kind, offset)))] = node.take(protocol.REPLY)
    assert ok and kind == ARENA
    oid = ids.new_put_id()
    node.feed("driver", (protocol.PUT, oid, ARENA, (offset, 10, ((64, 900),)), ()))
    node.feed("driver", (protocol.REQUEST, 2, "locate", ([oid],)))
    [(_t, (_, _, ok, located))] = node.take(protocol.REPLY)
    assert located == [(ARENA, (offset, 10, ((64, 900),)))]
    used = node.store.used
    node.feed("driver", (protocol.DROP_REFS, [oid]))
    assert node.store.used == used  # pinned
    node.feed("driver", (protocol.UNPIN, [oid]))
    assert node.store.used == 0


def test_unpinned_values_spill_to_make_room_and_come_back_when_read():
    node = Node(store_size=4096)
    oids = []
    for _ in range(3):
        node.feed("driver", (protocol.REQUEST, 1, "alloc", (2000,)))
        [(_t, (_, _, ok, (_kind, offset)))] = node.take(protocol.REPLY)
        assert ok, offset
        oid = ids.new_put_id()
        node.feed("driver", (protocol.PUT, oid, ARENA, (offset, 10, ((64, 1900),)), ()))
        oids.append(oid)
    assert node.state.objects.num_spilled >= 1
    node.feed("driver", (protocol.REQUEST, 2, "locate", ([oids[0]],)))
    [(_t, (_, _, ok, [(kind, _payload)]))] = node.take(protocol.REPLY)
    assert ok and kind == ARENA and node.state.objects.num_restored == 1


def test_a_store_full_of_pinned_values_refuses_with_object_store_full():
    node = Node(store_size=4096)
    node.feed("driver", (protocol.REQUEST, 1, "alloc", (3000,)))
    node.feed("driver", (protocol.REQUEST, 2, "alloc", (3000,)))  # the first is unsealed
    replies = node.take(protocol.REPLY)
    assert replies[0][1][2] is True
    assert replies[1][1][2] is False
    assert isinstance(replies[1][1][3], exceptions.ObjectStoreFullError)


def test_a_disconnecting_process_releases_everything_it_held():
    node = Node()
    node.connect("other")
    oid = ids.new_put_id()
    node.feed("other", (protocol.PUT, oid, *value(1), ()))
    node.feed("other", (protocol.REQUEST, 1, "alloc", (500,)))
    node.feed("other", (DISCONNECTED,))
    assert node.state.objects.get(oid) is None and node.store.used == 0


# ─── actors ──────────────────────────────────────────────────────────────────────────────


def test_actor_calls_from_one_caller_are_sent_in_order():
    node = Node()
    spec = actor_spec()
    start_actor(node, spec)
    calls = [call(spec) for _ in range(5)]
    for c in calls:
        node.feed("driver", (protocol.SUBMIT, c))
    assert [s for _w, s in node.executes()] == calls


def test_only_a_window_of_calls_is_sent_the_rest_stay_queued():
    node = Node()
    spec = actor_spec(max_concurrency=1)
    worker = start_actor(node, spec)
    calls = [call(spec) for _ in range(ACTOR_PIPELINE_DEPTH + 5)]
    for c in calls:
        node.feed("driver", (protocol.SUBMIT, c))
    sent = node.executes()
    assert len(sent) == ACTOR_PIPELINE_DEPTH + 1
    node.done(worker, calls[0])
    assert [s for _w, s in node.executes()] == [calls[ACTOR_PIPELINE_DEPTH + 1]]


def test_cancel_of_a_queued_actor_call_drops_it_and_it_never_runs():
    node = Node()
    spec = actor_spec()
    worker = start_actor(node, spec)
    calls = [call(spec) for _ in range(ACTOR_PIPELINE_DEPTH + 2)]
    for c in calls:
        node.feed("driver", (protocol.SUBMIT, c))
    node.executes()
    last = calls[-1]
    node.feed("driver", (protocol.CANCEL, last.return_ids()[0], False, False))
    error = error_of(node.objects_to()[last.return_ids()[0]])
    assert isinstance(error, exceptions.TaskCancelledError)
    for c in calls[:-1]:
        node.done(worker, c)
    assert last not in [s for _w, s in node.executes()]


def test_cancel_of_a_sent_actor_call_asks_the_worker_to_interrupt_it():
    node = Node()
    spec = actor_spec()
    worker = start_actor(node, spec)
    running, behind = call(spec), call(spec)
    node.feed("driver", (protocol.SUBMIT, running))
    node.feed("driver", (protocol.SUBMIT, behind))
    node.executes()
    node.feed("driver", (protocol.CANCEL, behind.return_ids()[0], False, False))
    assert node.take(protocol.INTERRUPT) == [(worker, (protocol.INTERRUPT, behind.task_id))]


def test_a_call_waiting_for_its_argument_holds_back_only_its_own_callers_calls():
    node = Node(cpus=2)
    spec = actor_spec()
    start_actor(node, spec)
    node.connect("other")
    pending = task()
    node.feed("driver", (protocol.SUBMIT, pending))
    node.executes()
    waiting = call(spec, deps=pending.return_ids())
    after = call(spec)
    node.feed("driver", (protocol.SUBMIT, waiting))
    node.feed("driver", (protocol.SUBMIT, after))
    others = call(spec)
    node.feed("other", (protocol.SUBMIT, others))
    assert [s for _w, s in node.executes()] == [others]
    node.done("w2", pending, 1)  # the task ran on the second worker
    assert [s for _w, s in node.executes()] == [waiting, after]


def test_an_actor_whose_worker_dies_restarts_and_retries_its_calls():
    node = Node()
    spec = actor_spec(max_restarts=1, max_task_retries=1)
    worker = start_actor(node, spec)
    c = call(spec)
    node.feed("driver", (protocol.SUBMIT, c))
    node.executes()
    node.feed(worker, (DISCONNECTED,))
    actor = node.state.actors[spec.actor_id]
    assert actor.state == RESTARTING
    [(worker2, creation)] = node.executes()
    assert creation is spec and spec.attempt == 1
    node.done(worker2, spec)
    assert actor.state == ALIVE
    [(w, again)] = node.executes()
    assert again is c and c.attempt == 1 and w == worker2
    node.feed(worker2, (DISCONNECTED,))
    assert actor.state == DEAD
    error = error_of(node.objects_to()[c.return_ids()[0]])
    assert isinstance(error, exceptions.ActorDiedError)


def test_calls_of_a_dead_actor_fail_with_actor_died():
    node = Node()
    spec = actor_spec()
    worker = start_actor(node, spec)
    node.feed(worker, (DISCONNECTED,))
    late = call(spec)
    node.feed("driver", (protocol.SUBMIT, late))
    assert isinstance(error_of(node.objects_to()[late.return_ids()[0]]),
                      exceptions.ActorDiedError)


def test_kill_without_restart_ends_the_actor_at_once_and_fails_its_calls():
    node = Node()
    spec = actor_spec(max_restarts=5)
    worker = start_actor(node, spec)
    calls = [call(spec) for _ in range(3)]
    for c in calls:
        node.feed("driver", (protocol.SUBMIT, c))
    node.feed("driver", (protocol.REQUEST, 7, "kill_actor", (spec.actor_id, True)))
    assert node.state.actors[spec.actor_id].state == DEAD
    assert KillWorker(int(worker[1:])) in node.effects
    objects = node.objects_to()
    for c in calls:
        assert isinstance(error_of(objects[c.return_ids()[0]]), exceptions.ActorDiedError)


def test_kill_with_restart_starts_a_new_worker():
    node = Node(cpus=2)
    spec = actor_spec(max_restarts=1)
    worker = start_actor(node, spec)
    node.feed("driver", (protocol.REQUEST, 7, "kill_actor", (spec.actor_id, False)))
    assert node.state.actors[spec.actor_id].state == RESTARTING
    [(worker2, creation)] = node.executes()
    assert worker2 != worker and creation.attempt == 1


def test_an_actor_ends_when_its_last_handle_goes_after_its_calls_are_done():
    node = Node()
    spec = actor_spec()
    worker = start_actor(node, spec)
    c = call(spec)
    node.feed("driver", (protocol.SUBMIT, c))
    node.executes()
    node.feed("driver", (protocol.DROP_REFS, [ids.object_id(spec.actor_id, 0)]))
    actor = node.state.actors[spec.actor_id]
    assert actor.state == ALIVE and actor.terminating
    node.done(worker, c)
    assert spec.actor_id not in node.state.actors
    assert KillWorker(int(worker[1:])) in node.effects


def test_exit_actor_in_a_method_ends_the_actor_without_restart():
    node = Node()
    spec = actor_spec(max_restarts=3)
    worker = start_actor(node, spec)
    c = call(spec)
    node.feed("driver", (protocol.SUBMIT, c))
    node.executes()
    node.done(worker, c, exiting=True)
    assert node.state.actors[spec.actor_id].state == DEAD
    error = error_of(node.objects_to()[c.return_ids()[0]])
    assert "exit_actor" in str(error)


def test_an_intended_exit_ends_the_actor_without_restart_and_says_why():
    # sys.exit(0) in a method: the worker reports the call as the actor's end, with why.
    node = Node()
    spec = actor_spec(max_restarts=3)
    worker = start_actor(node, spec)
    leaving, queued = call(spec), call(spec)
    node.feed("driver", (protocol.SUBMIT, leaving))
    node.feed("driver", (protocol.SUBMIT, queued))
    node.executes()
    node.done(worker, leaving, exiting="Worker exits with an exit code 0.")
    assert node.state.actors[spec.actor_id].state == DEAD
    sent = node.objects_to()
    for c in (leaving, queued):
        error = error_of(sent[c.return_ids()[0]])
        assert isinstance(error, exceptions.ActorDiedError)
        assert "Worker exits with an exit code 0." in str(error)
    assert KillWorker(int(worker[1:])) in node.effects
    later = call(spec)
    node.feed("driver", (protocol.SUBMIT, later))
    assert "exit code 0" in str(error_of(node.objects_to()[later.return_ids()[0]]))
    assert node.executes() == []


def test_an_intended_exit_in_init_ends_the_actor_without_restart():
    node = Node()
    spec = actor_spec(max_restarts=3)
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    node.done(worker, spec, exiting="Worker exits with an exit code 0.")
    assert node.state.actors[spec.actor_id].state == DEAD
    c = call(spec)
    node.feed("driver", (protocol.SUBMIT, c))
    assert "exit code 0" in str(error_of(node.objects_to()[c.return_ids()[0]]))
    assert node.executes() == []


def test_an_actor_whose_worker_exits_otherwise_is_restarted():
    # sys.exit(3) or another BaseException: the worker process ends, no TASK_DONE.
    node = Node()
    spec = actor_spec(max_restarts=1)
    worker = start_actor(node, spec)
    c = call(spec)
    node.feed("driver", (protocol.SUBMIT, c))
    node.executes()
    node.feed(worker, (DISCONNECTED,))
    assert isinstance(error_of(node.objects_to()[c.return_ids()[0]]), exceptions.ActorDiedError)
    [(worker2, again)] = node.executes()
    assert again.task_id == spec.task_id and again.attempt == 1 and worker2 != worker


def test_an_actor_whose_init_raises_is_dead_with_that_cause():
    node = Node()
    spec = actor_spec(max_restarts=2)
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _)] = node.executes()
    cause = exceptions.RayTaskError("A.__init__", "Traceback...", ValueError("bad"))
    node.raised(worker, spec, cause)
    actor = node.state.actors[spec.actor_id]
    assert actor.state == DEAD
    late = call(spec)
    node.feed("driver", (protocol.SUBMIT, late))
    error = error_of(node.objects_to()[late.return_ids()[0]])
    assert isinstance(error, exceptions.ActorDiedError)


def test_a_named_actor_is_found_by_name_and_its_name_is_freed_when_it_dies():
    node = Node()
    spec = actor_spec(name="svc")
    job = node.state.welcome_info("driver")["job_id"]
    spec.job_id = job
    node.feed("driver", (protocol.REQUEST, 1, "register_actor",
                         ("svc", None, job, spec.actor_id, None, False)))
    start_actor(node, spec)
    node.feed("driver", (protocol.REQUEST, 2, "get_actor", ("svc", None, job)))
    [(_t, (_, _, ok, found))] = node.take(protocol.REPLY)
    assert ok and found[0] == spec.actor_id
    node.feed("driver", (protocol.REQUEST, 3, "kill_actor", (spec.actor_id, True)))
    node.feed("driver", (protocol.REQUEST, 4, "get_actor", ("svc", None, job)))
    [_killed, (_t, (_, _, ok, found))] = node.take(protocol.REPLY)
    assert ok and found is None


def test_an_unknown_request_is_answered_with_an_error():
    node = Node()
    node.feed("driver", (protocol.REQUEST, 9, "no_such_op", ()))
    [(_t, (_, request_id, ok, error))] = node.take(protocol.REPLY)
    assert request_id == 9 and not ok and "no_such_op" in str(error)


# ─── a model check: whatever happens, nothing is left held ───────────────────────────────


class NodeModel(RuleBasedStateMachine):
    """Random submits, finishes, deaths and cancels; at the end every task is answered and,
    once the driver drops everything, no object and no resource is held."""

    def __init__(self):
        super().__init__()
        self.node = Node(cpus=2)
        self.submitted = []

    @rule(retries=st.integers(0, 2), on_first=st.booleans())
    def submit(self, retries, on_first):
        deps = self.submitted[-1].return_ids() if on_first and self.submitted else ()
        spec = task(max_retries=retries, deps=deps)
        self.submitted.append(spec)
        self.node.feed("driver", (protocol.SUBMIT, spec))

    def running(self):
        return [(w.token, w.task.spec) for w in self.node.state.workers.values()
                if w.task is not None]

    @rule(index=st.integers(0, 10), ok=st.booleans())
    def finish(self, index, ok):
        running = self.running()
        if running:
            worker, spec = running[index % len(running)]
            if ok:
                self.node.done(worker, spec, 1)
            else:
                self.node.raised(worker, spec, ValueError("x"))

    @rule(index=st.integers(0, 10))
    def kill(self, index):
        running = self.running()
        if running:
            self.node.feed(running[index % len(running)][0], (DISCONNECTED,))

    @rule(index=st.integers(0, 30), force=st.booleans())
    def cancel(self, index, force):
        if self.submitted:
            spec = self.submitted[index % len(self.submitted)]
            self.node.feed("driver", (protocol.CANCEL, spec.return_ids()[0], force, False))
            if force:  # the node asked for the kill: the worker goes
                for action in self.node.effects:
                    if isinstance(action, KillWorker):
                        token = f"w{action.worker_id}"
                        if token in self.node.state.peers:
                            self.node.feed(token, (DISCONNECTED,))
                self.node.effects.clear()

    @invariant()
    def resources_never_go_negative(self):
        available = self.node.state.scheduler.available_resources()
        assert available.get("CPU", 0) <= 2

    def teardown(self):
        node = self.node
        for _ in range(200):  # run everything left to completion
            running = self.running()
            if not running:
                break
            worker, spec = running[0]
            node.done(worker, spec, 1)
        answered = {oid for _t, m in node.sent if m[0] == protocol.OBJECT for oid in [m[1]]}
        for spec in self.submitted:
            assert spec.return_ids()[0] in answered, spec
        node.feed("driver", (protocol.DROP_REFS, [s.return_ids()[0] for s in self.submitted]))
        assert node.state.objects.entries == {}
        assert len(node.state.tasks) == 0
        assert node.state.scheduler.available_resources() == {"CPU": 2}


TestNodeModel = NodeModel.TestCase
TestNodeModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])
