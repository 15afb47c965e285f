"""Generator calls in the node's rules, event by event, with no process started: the
Stream record, and NodeState routing each yielded item to the caller."""

from purerun import exceptions
from purerun.core import protocol
from purerun.core.generators import (ALL_READ, DISCARD, END_PAYLOAD, REPEAT, SEAL, Stream)
from purerun.core.node_state import DISCONNECTED
from purerun.core.protocol import INLINE
from purerun.core.task_spec import DYNAMIC, STREAMING, item_id

from test_node_state import Node, error_of, task, value


# -- the Stream record -----------------------------------------------------------------------------

def test_a_stream_seals_items_in_order_and_repeats_are_not_sealed_again():
    stream = Stream("driver")
    assert [stream.report(0, i) for i in range(3)] == [SEAL, SEAL, SEAL]
    # A retry (attempt 1) yields 0, 1, 2 again before anything new.
    assert [stream.report(1, i) for i in range(4)] == [REPEAT, REPEAT, REPEAT, SEAL]
    assert stream.report(0, 4) == DISCARD        # the dead attempt's: stale
    assert stream.report(1, 9) == DISCARD        # never sealed over a gap
    assert stream.sealed == 4


def test_a_dropped_stream_releases_what_was_not_handed_out_and_discards_the_rest():
    stream = Stream("driver")
    for i in range(3):
        stream.report(0, i)
    assert list(stream.drop(1)) == [1, 2]
    assert stream.report(0, 3) == DISCARD
    assert stream.end() is None                   # nobody reads its end


def test_the_end_is_sealed_after_the_last_item_and_counts_as_held():
    stream = Stream("driver")
    stream.report(0, 0)
    assert stream.end() == 1 and stream.sealed == 2
    assert stream.report(0, 1) == DISCARD         # nothing comes after the end
    assert list(stream.drop(1)) == [1]            # the marker goes with the generator


def test_items_read_only_grow():
    stream = Stream("driver")
    assert stream.took(2) and not stream.took(1) and not stream.took(2)
    assert stream.read == 2


# -- NodeState ---------------------------------------------------------------------------------------

def streaming(**kw):
    return task(generator=STREAMING, **kw)


def start(node, spec):
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, sent)] = node.executes()
    assert sent.task_id == spec.task_id
    return worker


def item(node, worker, spec, index, x, attempt=0):
    kind, payload = value(x)
    node.feed(worker, (protocol.GENERATOR_ITEM, spec.task_id, attempt, index, kind, payload,
                       ()))


def test_each_item_goes_to_the_caller_as_it_is_yielded_and_the_end_after_the_last():
    node = Node()
    spec = streaming()
    worker = start(node, spec)
    item(node, worker, spec, 0, "a")
    assert list(node.objects_to()) == [item_id(spec.task_id, 0)]
    assert item_id(spec.task_id, 0) in node.state.peers["driver"].refs   # held for it
    item(node, worker, spec, 1, "b")
    node.done(worker, spec)
    got = node.objects_to()
    assert got[item_id(spec.task_id, 2)] == (INLINE, END_PAYLOAD)
    assert spec.return_ids()[0] in got
    assert spec.task_id not in node.state.streams or not node.state.streams[spec.task_id].dropped


def test_an_error_in_the_generator_is_sealed_at_the_next_item():
    node = Node()
    spec = streaming()
    worker = start(node, spec)
    item(node, worker, spec, 0, "a")
    node.raised(worker, spec, ValueError("bad"))
    got = node.objects_to()
    assert isinstance(error_of(got[item_id(spec.task_id, 1)]), ValueError)


def test_a_crash_without_retries_fails_the_next_item_with_worker_crashed():
    node = Node()
    spec = streaming()
    worker = start(node, spec)
    item(node, worker, spec, 0, "a")
    node.objects_to()
    node.feed(worker, (DISCONNECTED,))
    got = node.objects_to()
    assert isinstance(error_of(got[item_id(spec.task_id, 1)]), exceptions.WorkerCrashedError)


def test_a_retry_after_a_crash_does_not_send_the_items_again():
    node = Node()
    spec = streaming(max_retries=1)
    worker = start(node, spec)
    item(node, worker, spec, 0, "a")
    node.objects_to()
    node.feed(worker, (DISCONNECTED,))
    [(worker2, again)] = node.executes()
    assert again.attempt == 1
    item(node, worker2, again, 0, "a", attempt=1)
    assert node.objects_to() == {}                     # item 0 was sent already
    item(node, worker2, again, 1, "b", attempt=1)
    assert list(node.objects_to()) == [item_id(spec.task_id, 1)]


def test_items_read_reach_the_worker_only_with_backpressure():
    node = Node(cpus=2)
    plain = streaming()
    paced = streaming(backpressure=2)
    plain_worker = start(node, plain)
    paced_worker = start(node, paced)
    node.feed("driver", (protocol.ITEM_READ, plain.task_id, 1))
    node.feed("driver", (protocol.ITEM_READ, paced.task_id, 1))
    assert node.take(protocol.ITEM_READ, plain_worker) == []
    assert node.take(protocol.ITEM_READ, paced_worker) == [
        (paced_worker, (protocol.ITEM_READ, paced.task_id, 1))]
    # Dropping the generator lets a paused one run on.
    node.feed("driver", (protocol.STREAM_DROPPED, paced.task_id, 1))
    assert node.take(protocol.ITEM_READ, paced_worker) == [
        (paced_worker, (protocol.ITEM_READ, paced.task_id, ALL_READ))]


def test_a_dropped_stream_frees_its_unread_items_and_those_still_to_come():
    node = Node()
    spec = streaming()
    worker = start(node, spec)
    for i in range(3):
        item(node, worker, spec, i, i)
    objects = node.state.objects
    assert all(objects.get(item_id(spec.task_id, i)) for i in range(3))
    # The caller took item 0 (its ref holds it now) and dropped the generator.
    node.feed("driver", (protocol.STREAM_DROPPED, spec.task_id, 1))
    assert objects.get(item_id(spec.task_id, 0)) is not None
    assert objects.get(item_id(spec.task_id, 1)) is None
    assert objects.get(item_id(spec.task_id, 2)) is None
    item(node, worker, spec, 3, 3)
    assert objects.get(item_id(spec.task_id, 3)) is None
    node.done(worker, spec)
    assert spec.task_id not in node.state.streams
    node.feed("driver", (protocol.DROP_REFS, [item_id(spec.task_id, 0), spec.return_ids()[0]]))
    assert len(objects.entries) == 0


def test_a_dynamic_calls_items_live_as_long_as_its_ref():
    node = Node()
    spec = task(generator=DYNAMIC)
    worker = start(node, spec)
    items = [item_id(spec.task_id, i) for i in range(2)]
    results = [(object_id, *value(i), ()) for i, object_id in enumerate(items)]
    results.append((spec.return_ids()[0], *value("refs"), tuple(items)))
    node.feed(worker, (protocol.TASK_DONE, spec.task_id, results, False, False, (0, 1)))
    objects = node.state.objects
    assert all(objects.get(object_id).holds == 1 for object_id in items)   # by return 0
    node.feed("driver", (protocol.DROP_REFS, spec.return_ids()))
    assert len(objects.entries) == 0


def test_a_failed_dynamic_call_is_one_error_ref():
    node = Node()
    spec = task(generator=DYNAMIC)
    worker = start(node, spec)
    node.raised(worker, spec, ValueError("bad"))
    assert isinstance(error_of(node.objects_to()[spec.return_ids()[0]]), ValueError)


def test_the_caller_going_away_releases_a_paused_generator_and_its_items():
    node = Node(cpus=2)
    node.connect("other")
    spec = streaming(backpressure=1)
    node.feed("other", (protocol.SUBMIT, spec))
    [(worker, _sent)] = node.executes()
    item(node, worker, spec, 0, "a")
    node.feed("other", (DISCONNECTED,))
    assert node.take(protocol.ITEM_READ, worker) == [
        (worker, (protocol.ITEM_READ, spec.task_id, ALL_READ))]
    item(node, worker, spec, 1, "b")
    node.done(worker, spec)
    assert spec.task_id not in node.state.streams
    assert len(node.state.objects.entries) == 0
