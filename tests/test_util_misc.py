"""purerun.util's smaller pieces: as_completed and map_unordered (on a real node),
inspect_serializability, metrics (in the driver, in tasks and in actors), and what
``import purerun.util`` costs.

A task that must stay unfinished waits for a marker file the test creates afterwards.
"""

import io
import os
import subprocess
import sys
import threading
import time

import pytest
import tqdm
from hypothesis import given
from hypothesis import strategies as st

import purerun
from helpers import touch
import purerun.util
from purerun.exceptions import RayTaskError
from purerun.object_ref import ObjectRef
from purerun.util import as_completed, inspect_serializability, map_unordered
from purerun.util import metrics
from purerun.util.check_serialize import FailureTuple

CALL_TIMEOUT_S = 60
MARKER_TIMEOUT_S = 60
# A wait() timeout that must expire: the ref it waits for is blocked on a marker file.
SHORT_TIMEOUT_S = 0.2


@purerun.remote
def square(x):
    return x * x


@purerun.remote
def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad value {x}")
    return x


@purerun.remote(max_retries=0)
def reject_two(x):
    if x == 2:
        raise ValueError("bad value 2")
    return x


@purerun.remote
def wait_for(path, value):
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never created")
        time.sleep(0.005)
    return value


@purerun.remote
def count_in_task(n):
    requests = metrics.Counter("task_requests", "requests seen by a task", tag_keys=("kind",))
    for _ in range(n):
        requests.inc(tags={"kind": "task"})
    return metrics.snapshot()


@purerun.remote
def use_metric(counter):
    counter.inc(5)
    return metrics.snapshot()


@purerun.remote
class Meter:
    def __init__(self):
        self.depth = metrics.Gauge("meter_depth", "items waiting")
        self.latency = metrics.Histogram("meter_latency_s", boundaries=[0.1, 1.0])

    def record(self, depth, latencies):
        self.depth.set(depth)
        for latency in latencies:
            self.latency.observe(latency)
        return metrics.snapshot()


# -- as_completed ---------------------------------------------------------------------------------

def test_as_completed_yields_every_value_once(node):
    refs = [square.remote(i) for i in range(25)]
    assert sorted(as_completed(refs, chunk_size=4)) == sorted(i * i for i in range(25))


def test_as_completed_yields_ready_values_before_blocked_ones(node, tmp_path):
    marker = str(tmp_path / "go")
    refs = [wait_for.remote(marker, "slow"), square.remote(3), square.remote(4)]
    results = as_completed(refs, chunk_size=1)
    assert {next(results), next(results)} == {9, 16}
    touch(marker)
    assert next(results) == "slow"
    assert list(results) == []


def test_as_completed_can_yield_the_refs(node):
    refs = [square.remote(i) for i in range(5)]
    got = list(as_completed(refs, yield_obj_refs=True))
    assert all(isinstance(ref, ObjectRef) for ref in got)
    assert set(got) == set(refs)


def test_as_completed_passes_timeout_to_wait(node, tmp_path):
    marker = str(tmp_path / "go")
    refs = [wait_for.remote(marker, "slow"), square.remote(2)]
    # With a timeout, each wait returns what is ready when it expires, not chunk_size.
    results = as_completed(refs, chunk_size=2, timeout=SHORT_TIMEOUT_S)
    assert next(results) == 4
    touch(marker)
    assert next(results) == "slow"


def test_as_completed_raises_a_task_error_when_it_comes_up(node):
    refs = [fail_on.remote(i, 3) for i in range(5)]
    with pytest.raises(ValueError, match="bad value 3") as info:
        list(as_completed(refs, chunk_size=1))
    assert isinstance(info.value, RayTaskError)


def test_as_completed_of_nothing_yields_nothing(node):
    assert list(as_completed([])) == []


def test_as_completed_checks_its_arguments_at_the_call(node):
    refs = [square.remote(1)]
    with pytest.raises(ValueError, match="chunk_size"):
        as_completed(refs, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        as_completed(refs, chunk_size=1.5)
    with pytest.raises(ValueError, match="chunk_size instead of num_returns"):
        as_completed(refs, num_returns=2)
    with pytest.raises(TypeError, match="colour"):
        as_completed(refs, colour="red")


def test_as_completed_works_under_a_tqdm_progress_bar(node):
    refs = [square.remote(i) for i in range(10)]
    out = io.StringIO()
    # No len(): the bar counts without a total, or takes one given explicitly.
    assert sorted(tqdm.tqdm(as_completed(refs), file=out)) == sorted(i * i for i in range(10))
    refs = [square.remote(i) for i in range(10)]
    bar = tqdm.tqdm(as_completed(refs, chunk_size=3), total=len(refs), file=out)
    assert len(list(bar)) == 10
    assert bar.n == 10


# -- map_unordered --------------------------------------------------------------------------------

def test_map_unordered_runs_the_function_on_every_item(node):
    assert sorted(map_unordered(square, range(30), backpressure_size=8, chunk_size=3)) == \
        sorted(i * i for i in range(30))


def test_map_unordered_reads_items_lazily_under_backpressure(node):
    consumed = []

    def items():
        for i in range(10):
            consumed.append(i)
            yield i
    results = map_unordered(square, items(), backpressure_size=3, chunk_size=1)
    first = next(results)
    # It stops reading items once 3 tasks are in flight and yields before reading more.
    assert len(consumed) == 3
    assert first in {0, 1, 4}
    rest = list(results)
    assert sorted([first] + rest) == sorted(i * i for i in range(10))


def test_map_unordered_without_backpressure_submits_everything_first(node):
    consumed = []

    def items():
        for i in range(6):
            consumed.append(i)
            yield i
    results = map_unordered(square, items(), backpressure_size=None)
    next(results)
    assert len(consumed) == 6
    assert len(list(results)) == 5


def test_map_unordered_takes_a_function_with_options(node):
    results = map_unordered(square.options(num_cpus=0.5), [1, 2, 3], yield_obj_refs=True)
    refs = list(results)
    assert all(isinstance(ref, ObjectRef) for ref in refs)
    assert sorted(purerun.get(refs, timeout=CALL_TIMEOUT_S)) == [1, 4, 9]


def test_map_unordered_raises_a_task_error(node):
    with pytest.raises(ValueError, match="bad value 2"):
        list(map_unordered(reject_two, [1, 2, 3], chunk_size=1))


def test_map_unordered_checks_its_arguments_at_the_call(node):
    with pytest.raises(ValueError, match="backpressure_size"):
        map_unordered(square, [1], backpressure_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        map_unordered(square, [1], chunk_size=0)
    with pytest.raises(ValueError, match="num_returns"):
        map_unordered(square, [1], num_returns=3)
    with pytest.raises(TypeError, match="remote function"):
        map_unordered(lambda x: x, [1])


# -- inspect_serializability ----------------------------------------------------------------------

_LOCK = threading.Lock()


class _Outer:
    def __init__(self):
        self.number = 1
        self.inner = _Inner()


class _Inner:
    def __init__(self):
        self.lock = threading.Lock()


def test_a_serializable_object_passes():
    out = io.StringIO()
    assert inspect_serializability({"a": [1, 2]}, name="data", print_file=out) == (True, set())
    assert "Checking Serializability" in out.getvalue()


def test_a_lock_in_a_functions_globals_is_found():
    def uses_a_lock():   # defined here, it is pickled by value, with the globals it uses
        return _LOCK
    out = io.StringIO()
    ok, failures = inspect_serializability(uses_a_lock, name="fn", print_file=out)
    assert not ok
    (failure,) = failures
    assert isinstance(failure, FailureTuple)
    assert failure.obj is _LOCK
    assert failure.name == "_LOCK"
    assert failure.parent is uses_a_lock
    assert failure.path == ("fn", "_LOCK")
    assert "FAIL" in out.getvalue()


def test_a_lock_in_a_closure_is_found():
    lock = threading.Lock()

    def closure():
        return lock
    ok, failures = inspect_serializability(closure, print_file=io.StringIO())
    assert not ok
    assert [f.obj for f in failures] == [lock]


def test_the_innermost_attribute_is_found():
    outer = _Outer()
    ok, failures = inspect_serializability(outer, name="outer", print_file=io.StringIO())
    assert not ok
    (failure,) = failures
    assert failure.obj is outer.inner.lock
    assert failure.parent is outer.inner
    assert failure.path == ("outer", "inner", "lock")


def test_depth_limits_the_walk():
    outer = _Outer()
    ok, failures = inspect_serializability(outer, depth=1, print_file=io.StringIO())
    assert not ok
    assert [f.obj for f in failures] == [outer.inner]
    ok, failures = inspect_serializability(outer, depth=0, print_file=io.StringIO())
    assert [f.obj for f in failures] == [outer]


def test_inspect_serializability_checks_depth():
    with pytest.raises(TypeError, match="depth"):
        inspect_serializability(1, depth="3")


# -- metrics --------------------------------------------------------------------------------------

def _series(name, tags=None):
    found = [s for s in metrics.snapshot() if s["name"] == name
             and (tags is None or s["tags"] == tags)]
    assert len(found) == 1, found
    return found[0]


def test_counter_sums_per_tag_set():
    counter = metrics.Counter("misc_counter", "a counter", tag_keys=("route",))
    counter.set_default_tags({"route": "/"})
    counter.inc()
    counter.inc(2.5)
    counter.inc(tags={"route": "/a"})
    assert _series("misc_counter", {"route": "/"}) == {
        "name": "misc_counter", "kind": "counter", "description": "a counter",
        "tags": {"route": "/"}, "value": 3.5}
    assert _series("misc_counter", {"route": "/a"})["value"] == 1.0


def test_gauge_keeps_the_last_value():
    gauge = metrics.Gauge("misc_gauge", tag_keys=("host",))
    gauge.set(3, tags={"host": "a"})
    gauge.set(-1.5, tags={"host": "a"})
    gauge.set(None, tags={"host": "a"})   # None does nothing
    assert _series("misc_gauge")["value"] == -1.5


def test_histogram_counts_values_in_buckets():
    histogram = metrics.Histogram("misc_histogram", boundaries=[1, 10])
    for value in (0.5, 1, 5, 10, 50):
        histogram.observe(value)
    series = _series("misc_histogram")
    assert series["boundaries"] == [1, 10]
    assert series["bucket_counts"] == [1, 2, 2]
    assert (series["count"], series["sum"]) == (5, 66.5)
    assert histogram.info["boundaries"] == [1, 10]


_histogram_names = iter(f"misc_property_histogram_{i}" for i in range(10 ** 6))


@given(boundaries=st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1,
                           max_size=8, unique=True).map(sorted),
       values=st.lists(st.floats(min_value=-1e7, max_value=1e7), max_size=30))
def test_histogram_buckets_match_a_plain_count(boundaries, values):
    histogram = metrics.Histogram(next(_histogram_names), boundaries=boundaries)
    for value in values:
        histogram.observe(value)
    expected = [0] * (len(boundaries) + 1)
    for value in values:
        # Bucket i holds boundaries[i-1] <= v < boundaries[i]; the last one everything above.
        expected[sum(1 for bound in boundaries if bound <= value)] += 1
    if not values:
        assert not [s for s in metrics.snapshot() if s["name"] == histogram.info["name"]]
        return
    series = _series(histogram.info["name"])
    assert series["bucket_counts"] == expected
    assert series["count"] == len(values)
    assert series["sum"] == pytest.approx(sum(values))


def test_set_default_tags_returns_the_metric():
    counter = metrics.Counter("misc_defaults", tag_keys=("a",))
    assert counter.set_default_tags({"a": "b"}) is counter
    assert counter.info == {"name": "misc_defaults", "description": "", "tag_keys": ("a",),
                            "default_tags": {"a": "b"}}


@pytest.mark.parametrize("make, error, match", [
    (lambda: metrics.Counter(""), ValueError, "Empty name"),
    (lambda: metrics.Counter(5), TypeError, "name"),
    (lambda: metrics.Counter("c", tag_keys=["a"]), TypeError, "tuple"),
    (lambda: metrics.Counter("c", tag_keys=("a", 1)), TypeError, "Tag keys must be str"),
    (lambda: metrics.Histogram("h"), ValueError, "boundaries argument should be provided"),
    (lambda: metrics.Histogram("h", boundaries=[]), ValueError, "boundaries argument"),
    (lambda: metrics.Histogram("h", boundaries=[0, 1]), ValueError, "positive"),
    (lambda: metrics.Histogram("h", boundaries=[2, 1]), ValueError, "strictly increasing"),
    (lambda: metrics.Histogram("h", boundaries=[1, 1]), ValueError, "strictly increasing"),
])
def test_bad_definitions_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_recordings_are_refused():
    counter = metrics.Counter("misc_checked", tag_keys=("a",))
    with pytest.raises(ValueError, match="must be >0"):
        counter.inc(-1, tags={"a": "x"})
    with pytest.raises(ValueError, match="must be >0"):
        counter.inc(0, tags={"a": "x"})
    with pytest.raises(TypeError, match="int or float"):
        counter.inc("1", tags={"a": "x"})
    with pytest.raises(ValueError, match="Missing value for tag key"):
        counter.inc()
    with pytest.raises(ValueError, match="Unrecognized tag key b"):
        counter.inc(tags={"a": "x", "b": "y"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        counter.inc(tags={"a": 1})
    with pytest.raises(ValueError, match="Unrecognized tag key z"):
        counter.set_default_tags({"z": "1"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        counter.set_default_tags({"a": 2})
    with pytest.raises(TypeError, match="int or float"):
        metrics.Gauge("misc_checked_gauge").set("high")
    assert not [s for s in metrics.snapshot() if s["name"] == "misc_checked"]


def test_one_name_cannot_be_two_kinds():
    metrics.Counter("misc_kind")
    with pytest.raises(ValueError, match="already exists"):
        metrics.Gauge("misc_kind")
    metrics.Histogram("misc_bounds", boundaries=[1])
    with pytest.raises(ValueError, match="boundaries"):
        metrics.Histogram("misc_bounds", boundaries=[2])


def test_an_invalid_name_warns_and_records_nothing():
    with pytest.warns(UserWarning, match="Invalid metric name"):
        counter = metrics.Counter("9lives")
    counter.inc()
    assert not [s for s in metrics.snapshot() if s["name"] == "9lives"]


def test_metrics_recorded_in_a_task_are_in_its_process(node):
    series = [s for s in purerun.get(count_in_task.remote(3), timeout=CALL_TIMEOUT_S)
              if s["name"] == "task_requests"]
    assert len(series) == 1
    assert series[0]["tags"] == {"kind": "task"}
    assert series[0]["value"] >= 3   # a reused worker keeps its earlier counts
    assert not [s for s in metrics.snapshot() if s["name"] == "task_requests"]


def test_a_metric_passed_to_a_task_keeps_its_definition(node):
    counter = metrics.Counter("passed_counter", "from the driver", tag_keys=("who",))
    counter.set_default_tags({"who": "driver"})
    (series,) = [s for s in purerun.get(use_metric.remote(counter), timeout=CALL_TIMEOUT_S)
                 if s["name"] == "passed_counter"]
    assert series["tags"] == {"who": "driver"}
    assert series["description"] == "from the driver"
    assert series["value"] >= 5


def test_metrics_recorded_in_an_actor(node):
    meter = Meter.remote()
    try:
        recorded = purerun.get(meter.record.remote(7, [0.05, 0.5, 5]), timeout=CALL_TIMEOUT_S)
    finally:
        purerun.kill(meter)
    by_name = {s["name"]: s for s in recorded}
    assert by_name["meter_depth"]["value"] == 7
    assert by_name["meter_latency_s"]["bucket_counts"] == [1, 1, 1]


def test_snapshot_is_a_copy():
    metrics.Gauge("misc_copy").set(1)
    _series("misc_copy")["value"] = 99
    assert _series("misc_copy")["value"] == 1


# -- the package --------------------------------------------------------------------------------

def test_util_exports_rays_names():
    for name in ("ActorPool", "as_completed", "map_unordered", "inspect_serializability",
                 "get_node_ip_address"):
        assert name in purerun.util.__all__
        assert callable(getattr(purerun.util, name))
    assert purerun.util.queue.Queue is not None   # submodules without an import
    with pytest.raises(AttributeError):
        purerun.util.no_such_thing


@purerun.remote
def node_ip_in_task():
    return purerun.util.get_node_ip_address()


def test_get_node_ip_address_is_the_nodes_address(node):
    (only,) = purerun.nodes()
    assert purerun.util.get_node_ip_address() == only["NodeManagerAddress"]
    assert purerun.get(node_ip_in_task.remote(), timeout=CALL_TIMEOUT_S) == \
        only["NodeManagerAddress"]


def test_get_node_ip_address_without_purerun_running():
    code = "import purerun.util; print(purerun.util.get_node_ip_address('127.0.0.1:9'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=CALL_TIMEOUT_S, check=True).stdout
    assert out.strip() == "127.0.0.1"


def test_importing_util_loads_none_of_the_utilities():
    # ``import purerun`` imports purerun.util (for the scheduling strategies): the package
    # must stay cheap, each utility loading on first use.
    code = ("import sys, purerun.util; "
            "print(sorted(m for m in sys.modules if m.startswith('purerun.util')), "
            "'asyncio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=CALL_TIMEOUT_S, check=True).stdout
    assert out.strip() == ("['purerun.util', 'purerun.util.placement_group', "
                           "'purerun.util.scheduling_strategies'] False")
