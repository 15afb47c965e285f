"""Tests of the control store, with no process, socket or sleep: time is a fake clock.

Most tests run twice: on a ``ControlStore`` called directly (as a node embeds it) and through
``OverTheWire``, which pickles every argument, result and error on the way as the head's TCP
link will, and checks that each result is plain data.
"""

import pickle

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from purerun.core.control_store import (
    ACTOR_STATES,
    HEARTBEAT_INTERVAL_S,
    JOB_ID_SIZE,
    MAX_DEAD_NODES_KEPT,
    NODE_DEATH_TIMEOUT_S,
    NODE_LOAD,
    REMOTE_METHODS,
    ControlStore,
    worker_id,
)

EPSILON = 1e-6
START_WALL = 1_700_000_000.0

N1, N2, N3 = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
JOB1 = (1).to_bytes(4, "little")
A1, A2, A3 = b"a1" * 8, b"a2" * 8, b"a3" * 8
META = {"class_name": "Counter", "methods": ["incr"]}  # stands in for the opaque ActorMeta

PLAIN_SCALARS = (bytes, str, int, float, bool, type(None))


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def assert_plain(value, path="result"):
    """Only data that any peer can unpickle: no class of ours, no function."""
    if isinstance(value, PLAIN_SCALARS):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            assert_plain(key, f"{path} key")
            assert_plain(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            assert_plain(item, f"{path}[{i}]")
    else:
        raise AssertionError(f"{path} is a {type(value).__name__}, not plain data: {value!r}")


def over_pickle(value):
    return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


class OverTheWire:
    """The store as a node will reach a head's: only REMOTE_METHODS, everything pickled."""

    def __init__(self, store):
        self._store = store
        self.called = set()

    def __getattr__(self, name):
        if name not in REMOTE_METHODS:
            raise AttributeError(f"{name} is not served over the wire")
        method = getattr(self._store, name)

        def call(*args, **kwargs):
            self.called.add(name)
            assert_plain((args, kwargs), f"{name} arguments")
            args, kwargs = over_pickle((args, kwargs))
            try:
                result = method(*args, **kwargs)
            except Exception as exc:
                raise over_pickle(exc) from None
            assert_plain(result, f"{name} result")
            copy = over_pickle(result)
            assert copy == result
            return copy

        return call


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def wall():
    return FakeClock(START_WALL)


@pytest.fixture(params=["direct", "over_the_wire"])
def store(request, clock, wall):
    s = ControlStore(clock=clock, wall_clock=wall)
    return s if request.param == "direct" else OverTheWire(s)


def job(store, **kwargs):
    return store.new_job_id(**kwargs)


# ─── jobs ────────────────────────────────────────────────────────────────────────────────────


def test_job_ids_count_from_one_as_4_little_endian_bytes(store):
    ids = [store.new_job_id() for _ in range(3)]
    assert ids == [i.to_bytes(JOB_ID_SIZE, "little") for i in (1, 2, 3)]
    assert ids[0] == (1).to_bytes(4, "little") == b"\x01\x00\x00\x00"


def test_two_nodes_sharing_a_store_never_get_the_same_job_id(clock, wall):
    # Both nodes' drivers ask the one store: the ids interleave, never repeat.
    s = ControlStore(clock=clock, wall_clock=wall)
    from_n1 = [s.new_job_id(node_id=N1) for _ in range(5)]
    from_n2 = [s.new_job_id(node_id=N2) for _ in range(5)]
    assert len(set(from_n1) | set(from_n2)) == 10


def test_job_table_records_start_driver_end_and_death(store, wall):
    job_id = store.new_job_id(driver_ip="10.0.0.5", driver_pid=4242, node_id=N1,
                              entrypoint="python train.py")
    assert store.job_info(job_id) == {
        "JobID": "01000000", "DriverIPAddress": "10.0.0.5", "DriverPid": 4242,
        "DriverNodeID": N1.hex(), "StartTime": int(START_WALL * 1000), "EndTime": 0,
        "IsDead": False, "Entrypoint": "python train.py", "Metadata": {}}
    wall.advance(2.5)
    assert store.job_finished(job_id) == []
    info = store.job_info(job_id)
    assert info["IsDead"] is True
    assert info["EndTime"] == int((START_WALL + 2.5) * 1000)
    assert store.jobs() == [info]


def test_job_metadata_is_recorded_and_checked(store):
    job_id = store.new_job_id()
    store.set_job_metadata(job_id, {"team": "ml"})
    assert store.job_info(job_id)["Metadata"] == {"team": "ml"}
    store.set_job_metadata(job_id, {"owner": "me"})   # replaces
    assert store.jobs()[0]["Metadata"] == {"owner": "me"}
    with pytest.raises(TypeError, match="str to str"):
        store.set_job_metadata(job_id, {"n": 1})
    with pytest.raises(ValueError, match="no job"):
        store.set_job_metadata(b"\x09\x00\x00\x00", {})
    assert store.jobs()[0]["Metadata"] == {"owner": "me"}


def test_job_info_of_an_unknown_job_is_none(store):
    assert store.job_info(b"\x09\x00\x00\x00") is None
    assert store.jobs() == []


def test_job_finished_returns_its_live_non_detached_actors_once(store):
    j1, j2 = store.new_job_id(), store.new_job_id()
    store.register_actor("kept", None, j1, A1, META, detached=True)
    store.register_actor(None, None, j1, A2, META)
    store.register_actor("other_job", None, j2, A3, META)
    store.register_actor("named", None, j1, b"a4" * 8, META)
    assert store.job_finished(j1) == [A2, b"a4" * 8]
    assert store.job_finished(j1) == []          # already finished
    assert store.job_finished(b"\x63\x00\x00\x00") == []  # unknown job
    # The store does not end them itself: the caller reports DEAD when they are gone.
    assert store.actor_info(A2)["state"] == "PENDING"
    assert store.get_named_actor("kept", None, j1) == (A1, META)


# ─── namespaces ──────────────────────────────────────────────────────────────────────────────


def test_namespace_rules(store):
    j1, j2 = store.new_job_id(), store.new_job_id()
    assert store.namespace_of(None, j1) == f"anonymous:{j1.hex()}" == "anonymous:01000000"
    assert store.namespace_of("given", j1) == "given"
    store.set_job_namespace(j1, "team")
    assert store.namespace_of(None, j1) == "team"
    assert store.namespace_of(None, j2) == "anonymous:02000000"
    assert store.namespace_of("", j1) == ""      # an explicit empty name is a name
    store.set_job_namespace(j1, None)
    assert store.namespace_of(None, j1) == "anonymous:01000000"


def test_set_job_namespace_rejects_a_non_string(store):
    with pytest.raises(TypeError, match="namespace must be None or a string, got int"):
        store.set_job_namespace(JOB1, 3)


def test_jobs_in_one_namespace_share_named_actors_anonymous_jobs_do_not(store):
    j1, j2, j3 = store.new_job_id(), store.new_job_id(), store.new_job_id()
    store.set_job_namespace(j1, "shared")
    store.set_job_namespace(j2, "shared")
    assert store.register_actor("svc", None, j1, A1, META) is None
    assert store.get_named_actor("svc", None, j2) == (A1, META)
    assert store.get_named_actor("svc", None, j3) is None
    assert store.get_named_actor("svc", "shared", j3) == (A1, META)
    # An anonymous job's actors are its own.
    store.register_actor("mine", None, j3, A2, META)
    assert store.get_named_actor("mine", None, j1) is None
    assert store.get_named_actor("mine", f"anonymous:{j3.hex()}", j1) == (A2, META)


# ─── KV ──────────────────────────────────────────────────────────────────────────────────────


def test_kv_put_reports_whether_the_key_was_new_and_overwrite_replaces(store):
    assert store.kv_put(b"k", b"v1") is True
    assert store.kv_put(b"k", b"v2") is False           # existed; replaced
    assert store.kv_get(b"k") == b"v2"
    assert store.kv_put(b"k", b"v3", overwrite=False) is False  # existed; kept
    assert store.kv_get(b"k") == b"v2"
    assert store.kv_put(b"new", b"x", overwrite=False) is True
    assert store.kv_get(b"new") == b"x"


def test_kv_str_keys_values_and_namespaces_are_utf8_bytes(store):
    assert store.kv_put("clé", "valeur", namespace="ns") is True
    assert store.kv_get("clé".encode(), namespace=b"ns") == "valeur".encode()
    assert store.kv_exists("clé", namespace="ns") is True
    assert store.kv_keys("", namespace="ns") == ["clé".encode()]


def test_kv_namespaces_are_separate_and_none_is_the_empty_namespace(store):
    store.kv_put(b"k", b"default")
    store.kv_put(b"k", b"in a", namespace="a")
    assert store.kv_get(b"k") == b"default"
    assert store.kv_get(b"k", namespace=b"") == b"default"
    assert store.kv_get(b"k", namespace="a") == b"in a"
    assert store.kv_get(b"k", namespace="b") is None
    assert store.kv_exists(b"k", namespace="b") is False
    assert store.kv_del(b"k", namespace="a") == 1
    assert store.kv_get(b"k") == b"default"


def test_kv_get_exists_and_del_of_a_missing_key(store):
    assert store.kv_get(b"nope") is None
    assert store.kv_exists(b"nope") is False
    assert store.kv_del(b"nope") == 0
    assert store.kv_del(b"nope", del_by_prefix=True) == 0


def test_kv_del_by_prefix_counts_what_it_deleted(store):
    for key in (b"job:1", b"job:2", b"job:10", b"jobs", b"other"):
        store.kv_put(key, b"x")
    store.kv_put(b"job:3", b"x", namespace="elsewhere")
    assert store.kv_del(b"job:", del_by_prefix=True) == 3
    assert store.kv_keys(b"") == [b"jobs", b"other"]
    assert store.kv_keys(b"", namespace="elsewhere") == [b"job:3"]
    # Without del_by_prefix the key is exact.
    assert store.kv_del(b"job") == 0
    assert store.kv_del(b"jobs") == 1
    assert store.kv_del(b"", del_by_prefix=True) == 1  # the empty prefix matches everything
    assert store.kv_keys(b"") == []


def test_kv_keys_lists_a_prefix_sorted(store):
    for key in (b"b/2", b"a/1", b"b/1", b"c"):
        store.kv_put(key, b"x")
    assert store.kv_keys(b"b/") == [b"b/1", b"b/2"]
    assert store.kv_keys("") == [b"a/1", b"b/1", b"b/2", b"c"]
    assert store.kv_keys(b"z") == []
    assert store.kv_keys(b"", namespace="empty") == []


@pytest.mark.parametrize("call", [
    lambda s: s.kv_put(b"@namespace_x:k", b"v"),
    lambda s: s.kv_get("@namespace_"),
    lambda s: s.kv_exists(b"@namespace_k"),
    lambda s: s.kv_del(b"@namespace_", del_by_prefix=True),
    lambda s: s.kv_keys(b"@namespace_"),
])
def test_kv_keys_may_not_start_with_the_reserved_prefix(store, call):
    with pytest.raises(ValueError, match="can't start with @namespace_"):
        call(store)


@pytest.mark.parametrize("call, message", [
    (lambda s: s.kv_put(1, b"v"), "KV key must be bytes or str, got int"),
    (lambda s: s.kv_put(b"k", 1.5), "KV value must be bytes or str, got float"),
    (lambda s: s.kv_get(b"k", namespace=7), "KV namespace must be bytes or str, got int"),
    (lambda s: s.kv_keys(None), "KV prefix must be bytes or str, got NoneType"),
])
def test_kv_rejects_what_is_not_bytes_or_str(store, call, message):
    with pytest.raises(TypeError, match=message):
        call(store)


# ─── function table ──────────────────────────────────────────────────────────────────────────


def test_function_table_is_idempotent(store):
    assert store.get_function(b"key") is None
    assert store.export_function(b"key", b"pickled f") is True
    assert store.export_function(b"key", b"pickled f") is False
    assert store.export_function(b"key", b"something else") is False  # the first one stays
    assert store.get_function(b"key") == b"pickled f"
    assert store.stats()["functions"] == 1


# ─── named actors ────────────────────────────────────────────────────────────────────────────


def test_register_then_get_a_named_actor(store):
    job_id = store.new_job_id()
    assert store.register_actor("counter", None, job_id, A1, META, False, False) is None
    assert store.get_named_actor("counter", None, job_id) == (A1, META)
    assert store.get_named_actor("counter", "elsewhere", job_id) is None
    assert store.get_named_actor("absent", None, job_id) is None
    assert store.actor_info(A1) == {
        "actor_id": A1, "name": "counter", "namespace": "anonymous:01000000",
        "job_id": job_id, "detached": False, "state": "PENDING", "node_id": None}


def test_a_taken_name_raises_the_error_users_see(store):
    job_id = store.new_job_id()
    store.set_job_namespace(job_id, "ns")
    store.register_actor("counter", None, job_id, A1, META)
    with pytest.raises(ValueError) as info:
        store.register_actor("counter", None, job_id, A2, META)
    assert str(info.value) == (
        "The name counter (namespace=ns) is already taken. Please use a different name or "
        "get the existing actor using purerun.get_actor('counter', namespace='ns').")
    assert store.actor_info(A2) is None  # the loser was not entered
    assert store.get_named_actor("counter", None, job_id) == (A1, META)


def test_a_pending_actor_already_holds_its_name(store):
    # Registration comes before submission: a second creator must not slip in meanwhile.
    job_id = store.new_job_id()
    store.register_actor("svc", "ns", job_id, A1, META)
    with pytest.raises(ValueError, match="already taken"):
        store.register_actor("svc", "ns", job_id, A2, META)


def test_get_if_exists_answers_with_the_holder(store):
    job_id = store.new_job_id()
    store.register_actor("svc", "ns", job_id, A1, META)
    other_meta = {"class_name": "Other"}
    assert store.register_actor("svc", "ns", job_id, A2, other_meta,
                                get_if_exists=True) == (A1, META)
    assert store.actor_info(A2) is None
    # With a free name, get_if_exists simply registers.
    assert store.register_actor("fresh", "ns", job_id, A3, META, get_if_exists=True) is None
    assert store.get_named_actor("fresh", "ns", job_id) == (A3, META)


def test_a_dead_actor_frees_its_name_for_a_new_one(store):
    job_id = store.new_job_id()
    store.register_actor("svc", "ns", job_id, A1, META)
    assert store.actor_state(A1, "ALIVE", N1) is True
    assert store.actor_state(A1, "DEAD") is True
    assert store.get_named_actor("svc", "ns", job_id) is None
    assert store.actor_info(A1) is None
    assert store.register_actor("svc", "ns", job_id, A2, META) is None
    assert store.get_named_actor("svc", "ns", job_id) == (A2, META)
    # A late report about the dead one changes nothing.
    assert store.actor_state(A1, "ALIVE", N1) is False
    assert store.actor_state(A1, "DEAD") is False
    assert store.get_named_actor("svc", "ns", job_id) == (A2, META)


def test_a_restarting_actor_keeps_its_name(store):
    job_id = store.new_job_id()
    store.register_actor("svc", "ns", job_id, A1, META)
    store.actor_state(A1, "ALIVE", N1)
    store.actor_state(A1, "RESTARTING")
    assert store.actor_info(A1)["node_id"] == N1  # None keeps the last node
    with pytest.raises(ValueError, match="already taken"):
        store.register_actor("svc", "ns", job_id, A2, META)
    store.actor_state(A1, "ALIVE", N2)
    assert store.actor_info(A1)["state"] == "ALIVE"
    assert store.actor_info(A1)["node_id"] == N2


def test_actor_state_rejects_an_unknown_state(store):
    store.register_actor(None, None, JOB1, A1, META)
    with pytest.raises(ValueError, match="actor state must be one of PENDING, ALIVE, "
                                         "RESTARTING, DEAD, got 'RUNNING'"):
        store.actor_state(A1, "RUNNING")
    assert ACTOR_STATES == ("PENDING", "ALIVE", "RESTARTING", "DEAD")


def test_registering_the_same_actor_twice(store):
    job_id = store.new_job_id()
    assert store.register_actor("svc", "ns", job_id, A1, META) is None
    assert store.register_actor("svc", "ns", job_id, A1, META) is None  # a repeated request
    with pytest.raises(ValueError, match="already registered as 'svc'"):
        store.register_actor("other", "ns", job_id, A1, META)
    assert store.register_actor(None, None, job_id, A2, META) is None
    assert store.register_actor(None, None, job_id, A2, META) is None


def test_an_actor_name_must_be_a_string(store):
    with pytest.raises(TypeError, match="actor name must be None or a string, got int"):
        store.register_actor(5, None, JOB1, A1, META)


def test_list_named_actors(store):
    j1, j2 = store.new_job_id(), store.new_job_id()
    store.set_job_namespace(j1, "team")
    store.register_actor("b", None, j1, A1, META)
    store.register_actor("a", None, j1, A2, META)
    store.register_actor("c", None, j2, A3, META)
    store.register_actor(None, None, j1, b"a4" * 8, META)   # no name: not listed
    store.register_actor("dead", None, j1, b"a5" * 8, META)
    store.actor_state(b"a5" * 8, "DEAD")
    assert store.list_named_actors(False, None, j1) == ["a", "b"]
    assert store.list_named_actors(namespace="team") == ["a", "b"]
    assert store.list_named_actors(namespace=None, job_id=j2) == ["c"]
    assert store.list_named_actors(namespace="nobody") == []
    assert store.list_named_actors(all_namespaces=True) == [
        {"name": "c", "namespace": "anonymous:02000000"},
        {"name": "a", "namespace": "team"},
        {"name": "b", "namespace": "team"},
    ]
    with pytest.raises(ValueError, match="needs a namespace or a job id"):
        store.list_named_actors()


# ─── nodes and heartbeats ────────────────────────────────────────────────────────────────────


def test_nodes_has_the_shape_of_ray_nodes(store):
    assert store.register_node(N1, "/tmp/s/node.sock", {"CPU": 4, "GPU": 1},
                               labels={"zone": "a"}, hostname="box1", node_ip="10.0.0.1") == 1
    assert store.nodes() == [{
        "NodeID": N1.hex(), "Alive": True, "NodeManagerAddress": "10.0.0.1",
        "NodeManagerHostname": "box1", "NodeName": "10.0.0.1",
        "Resources": {"CPU": 4.0, "GPU": 1.0}, "alive": True,
        "ObjectStoreSocketName": "/tmp/s/node.sock", "RayletSocketName": "/tmp/s/node.sock",
        "MetricsExportPort": 0, "Labels": {"zone": "a"},
    }]


def test_node_defaults_hostname_to_its_ip(store):
    store.register_node(N1, "10.0.0.2:6380", {"CPU": 1})
    (node,) = store.nodes()
    assert node["NodeManagerAddress"] == node["NodeManagerHostname"] == "127.0.0.1"
    assert node["Labels"] == {}


def test_node_numbers_are_unique_and_stable(store):
    assert store.register_node(N1, "a", {"CPU": 1}) == 1
    assert store.register_node(N2, "b", {"CPU": 1}) == 2
    assert store.register_node(N1, "a2", {"CPU": 2}) == 1   # a live node registering again
    assert store.nodes()[0]["ObjectStoreSocketName"] == "a2"
    store.node_dead(N2)
    assert store.register_node(N3, "c", {"CPU": 1}) == 3     # numbers are never reused


def test_a_dead_node_may_not_register_again_under_its_id(store):
    store.register_node(N1, "a", {"CPU": 1})
    store.node_dead(N1)
    with pytest.raises(ValueError, match=f"node {N1.hex()} was declared dead"):
        store.register_node(N1, "a", {"CPU": 1})


@pytest.mark.parametrize("resources", [{"CPU": -1}, {"CPU": "4"}, {3: 1}, {"CPU": True},
                                       {"CPU": float("nan")}, {"CPU": float("inf")}])
def test_register_node_rejects_bad_resources(store, resources):
    with pytest.raises(ValueError, match="resources must map resource names"):
        store.register_node(N1, "a", resources)


def test_register_node_rejects_resources_that_are_not_a_dict(store):
    with pytest.raises(TypeError, match="resources must be a dict"):
        store.register_node(N1, "a", [("CPU", 1)])


def test_a_silent_node_is_alive_until_the_timeout_and_dead_after(store, clock):
    store.register_node(N1, "a", {"CPU": 1})
    clock.advance(NODE_DEATH_TIMEOUT_S - EPSILON)
    assert store.check_nodes() == []
    assert store.nodes()[0]["Alive"] is True
    clock.advance(2 * EPSILON)
    assert store.check_nodes() == [N1]
    assert store.nodes()[0]["Alive"] is False
    assert store.nodes()[0]["alive"] is False
    assert store.nodes()[0]["Resources"] == {}        # as Ray shows a dead node
    assert store.check_nodes() == []                  # declared once


def test_heartbeats_keep_a_node_alive(store, clock):
    store.register_node(N1, "a", {"CPU": 1})
    store.register_node(N2, "b", {"CPU": 1})
    for _ in range(20):   # 10 s of beats every HEARTBEAT_INTERVAL_S from N1 only
        clock.advance(HEARTBEAT_INTERVAL_S)
        assert store.heartbeat(N1) is True
        dead = store.check_nodes()
        assert N1 not in dead
    assert [n["Alive"] for n in store.nodes()] == [True, False]
    assert store.heartbeat(N2) is False               # declared dead: it should stop
    assert store.heartbeat(N3) is False               # never registered


def test_the_timeout_meets_the_five_second_spec():
    # Silence, plus at most one check interval before someone notices.
    assert NODE_DEATH_TIMEOUT_S + HEARTBEAT_INTERVAL_S <= 5.0
    assert NODE_DEATH_TIMEOUT_S >= 4 * HEARTBEAT_INTERVAL_S  # a few missed beats are no death


def test_the_death_timeout_is_a_constructor_argument(clock):
    s = ControlStore(clock=clock, node_death_timeout_s=10.0)
    s.register_node(N1, "a", {"CPU": 1})
    clock.advance(9.0)
    assert s.check_nodes() == []
    clock.advance(1.5)
    assert s.check_nodes() == [N1]


def test_cluster_resources_sum_the_live_nodes_exactly(store):
    store.register_node(N1, "a", {"CPU": 0.1, "GPU": 1})
    store.register_node(N2, "b", {"CPU": 0.2, "custom": 3})
    # Summed in integer units: 0.3, not 0.1 + 0.2 == 0.30000000000000004.
    assert store.cluster_resources() == {"CPU": 0.3, "GPU": 1.0, "custom": 3.0}
    store.node_dead(N2)
    assert store.cluster_resources() == {"CPU": 0.1, "GPU": 1.0}


def test_available_resources_are_the_last_reports_of_live_nodes(store, clock):
    store.register_node(N1, "a", {"CPU": 4, "GPU": 1})
    store.register_node(N2, "b", {"CPU": 2})
    assert store.available_resources() == {"CPU": 6.0, "GPU": 1.0}  # nothing reported yet
    store.heartbeat(N1, {"CPU": 1.5})                     # GPU left out: none free
    store.heartbeat(N2, {"CPU": -1})                      # overcommitted: counts as none
    assert store.available_resources() == {"CPU": 1.5}
    store.heartbeat(N1)                                   # no report: keep the last one
    assert store.available_resources() == {"CPU": 1.5}
    store.heartbeat(N2, {"CPU": 2})
    clock.advance(NODE_DEATH_TIMEOUT_S + 1)
    store.heartbeat(N2)
    assert store.check_nodes() == [N1]
    assert store.available_resources() == {"CPU": 2.0}
    assert store.cluster_resources() == {"CPU": 2.0}


def test_node_table_lists_live_and_dead_nodes_compactly(store):
    store.register_node(N1, "10.0.0.1:7000", {"CPU": 4, "GPU": 1}, labels={"zone": "a"},
                        hostname="box1", node_ip="10.0.0.1")
    store.register_node(N2, "10.0.0.2:7000", {"CPU": 2}, node_ip="10.0.0.2")
    store.heartbeat(N1, {"CPU": 2.5}, {"tasks": 3, "actors": 1})
    store.node_dead(N2)
    assert store.node_table() == [
        {"node_id": N1, "number": 1, "address": "10.0.0.1:7000", "node_ip": "10.0.0.1",
         "hostname": "box1", "alive": True, "resources": {"CPU": 4.0, "GPU": 1.0},
         "available": {"CPU": 2.5}, "labels": {"zone": "a"},
         "load": {"tasks": 3, "actors": 1}, "bundles_version": 0},
        # A dead node keeps its resources here (nodes() shows {} for it, as Ray does).
        {"node_id": N2, "number": 2, "address": "10.0.0.2:7000", "node_ip": "10.0.0.2",
         "hostname": "10.0.0.2", "alive": False, "resources": {"CPU": 2.0},
         "available": {"CPU": 2.0}, "labels": {}, "load": {}, "bundles_version": 0},
    ]


def test_node_table_is_a_copy(clock):
    s = ControlStore(clock=clock)
    s.register_node(N1, "a", {"CPU": 1}, labels={"zone": "a"})
    (row,) = s.node_table()
    row["labels"]["zone"] = "b"
    row["resources"]["CPU"] = 9
    assert s.node_table()[0]["labels"] == {"zone": "a"}
    assert s.node_table()[0]["resources"] == {"CPU": 1.0}


def test_heartbeat_load_is_kept_per_node_and_summed_over_live_nodes(store):
    store.register_node(N1, "a", {"CPU": 1})
    store.register_node(N2, "b", {"CPU": 1})
    store.register_node(N3, "c", {"CPU": 1})
    store.heartbeat(N1, None, {"tasks": 2, "actors": 1, "objects": 5,
                               "object_store_bytes": 1000})
    store.heartbeat(N2, load={"tasks": 1, "objects": 1})
    store.heartbeat(N3, load={"tasks": 100})
    store.node_dead(N3)                          # a dead node's load no longer counts
    stats = store.stats()
    assert (stats["tasks"], stats["actors_on_nodes"], stats["objects_on_nodes"],
            stats["object_store_bytes"]) == (3, 1, 6, 1000)
    store.heartbeat(N1)                          # no report: keep the last one
    assert store.stats()["tasks"] == 3
    store.heartbeat(N1, load={})                 # an empty report: nothing there now
    assert store.stats()["tasks"] == 1


@pytest.mark.parametrize("load, error, message", [
    ({"task": 1}, ValueError, "not one of tasks"),
    ({"tasks": -1}, ValueError, "int >= 0"),
    ({"tasks": 1.5}, ValueError, "int >= 0"),
    ({"tasks": True}, ValueError, "int >= 0"),
    ([("tasks", 1)], TypeError, "dict of counts"),
])
def test_heartbeat_rejects_a_bad_load_and_keeps_the_last_report(store, load, error, message):
    store.register_node(N1, "a", {"CPU": 2})
    store.heartbeat(N1, {"CPU": 2}, {"tasks": 4})
    with pytest.raises(error, match=message):
        store.heartbeat(N1, {"CPU": 1}, load)
    (row,) = store.node_table()
    assert row["load"] == {"tasks": 4} and row["available"] == {"CPU": 2.0}


def test_a_reregistered_node_starts_with_no_load(store):
    store.register_node(N1, "a", {"CPU": 1})
    store.heartbeat(N1, load={"tasks": 4})
    store.register_node(N1, "a", {"CPU": 1})
    assert store.node_table()[0]["load"] == {} and store.stats()["tasks"] == 0


def test_every_load_key_has_a_stats_key_of_its_own():
    assert len(set(NODE_LOAD.values())) == len(NODE_LOAD)
    stats = ControlStore().stats()
    base = {"jobs", "jobs_running", "kv_keys", "functions", "actors", "named_actors",
            "nodes_alive", "nodes_dead", "objects"}
    assert set(stats) == base | set(NODE_LOAD.values())
    assert not base & set(NODE_LOAD.values())


def test_node_dead_of_an_unknown_node_is_none(store):
    assert store.node_dead(N1) is None


def test_old_dead_nodes_are_forgotten(clock):
    s = ControlStore(clock=clock)
    for i in range(MAX_DEAD_NODES_KEPT + 5):
        node_id = i.to_bytes(16, "little")
        s.register_node(node_id, "x", {"CPU": 1})
        s.node_dead(node_id)
    s.register_node(N1, "alive", {"CPU": 1})
    nodes = s.nodes()
    assert len(nodes) == MAX_DEAD_NODES_KEPT + 1
    assert nodes[0]["NodeID"] == (5).to_bytes(16, "little").hex()
    assert s.stats()["nodes_dead"] == MAX_DEAD_NODES_KEPT


# ─── what dies with a node ───────────────────────────────────────────────────────────────────


def test_objects_whose_last_copy_was_on_a_dead_node_are_lost(store, clock):
    store.register_node(N1, "a", {"CPU": 1})
    store.register_node(N2, "b", {"CPU": 1})
    only_n1, both, only_n2 = b"o1" * 10, b"o2" * 10, b"o3" * 10
    assert store.add_location(only_n1, N1) is True
    store.add_location(both, N1)
    store.add_location(both, N2)
    store.add_location(only_n2, N2)
    fallout = store.node_dead(N1)
    assert fallout["node_id"] == N1
    assert fallout["objects_lost"] == [only_n1]
    assert store.locations(only_n1) == set()
    assert store.locations(both) == {N2}
    assert store.locations(only_n2) == {N2}
    assert store.node_dead(N1) == fallout               # asking again gives the same answer


def test_a_node_declared_dead_by_check_nodes_tells_its_fallout(store, clock):
    store.register_node(N1, "a", {"CPU": 1})
    store.register_node(N2, "b", {"CPU": 1})
    store.add_location(b"o" * 20, N1)
    clock.advance(NODE_DEATH_TIMEOUT_S + 1)
    store.heartbeat(N2)
    assert store.check_nodes() == [N1]
    assert store.node_dead(N1)["objects_lost"] == [b"o" * 20]


def test_actors_and_jobs_on_a_dead_node_are_reported(store):
    store.register_node(N1, "a", {"CPU": 1})
    store.register_node(N2, "b", {"CPU": 1})
    j_on_n1 = store.new_job_id(node_id=N1)
    j_on_n2 = store.new_job_id(node_id=N2)
    store.register_actor("there", None, j_on_n2, A1, META)
    store.actor_state(A1, "ALIVE", N1)
    store.register_actor(None, None, j_on_n1, A2, META)     # its driver dies with N1
    store.actor_state(A2, "ALIVE", N2)
    store.register_actor("kept", None, j_on_n1, A3, META, detached=True)
    store.actor_state(A3, "ALIVE", N2)
    fallout = store.node_dead(N1)
    assert fallout == {"node_id": N1, "objects_lost": [], "actors": [A1],
                       "jobs_finished": [j_on_n1], "job_actors": [A2]}
    assert store.job_info(j_on_n1)["IsDead"] is True
    assert store.job_info(j_on_n2)["IsDead"] is False
    # The caller decides: A1 is restarted elsewhere, A2 ended.
    store.actor_state(A1, "RESTARTING")
    store.actor_state(A1, "ALIVE", N2)
    store.actor_state(A2, "DEAD")
    assert store.get_named_actor("there", None, j_on_n2) == (A1, META)


def test_no_location_is_recorded_on_a_dead_or_unknown_node(store):
    store.register_node(N1, "a", {"CPU": 1})
    store.node_dead(N1)
    assert store.add_location(b"o" * 20, N1) is False    # a late message from a dead node
    assert store.add_location(b"o" * 20, N2) is False    # never registered
    assert store.locations(b"o" * 20) == set()


def test_remove_location_and_forget(store):
    store.register_node(N1, "a", {"CPU": 1})
    store.register_node(N2, "b", {"CPU": 1})
    obj = b"o" * 20
    store.add_location(obj, N1)
    store.add_location(obj, N1)                           # idempotent
    store.add_location(obj, N2)
    assert store.locations(obj) == {N1, N2}
    store.remove_location(obj, N1)
    store.remove_location(obj, N1)                        # idempotent
    store.remove_location(b"x" * 20, N1)                  # never there
    assert store.locations(obj) == {N2}
    store.forget(obj)
    assert store.locations(obj) == set()
    store.forget(obj)
    assert store.stats()["objects"] == 0
    # A removed copy is not reported lost when its node dies later.
    store.add_location(obj, N1)
    store.remove_location(obj, N1)
    assert store.node_dead(N1)["objects_lost"] == []


def test_locations_is_a_copy(clock):
    s = ControlStore(clock=clock)
    s.register_node(N1, "a", {"CPU": 1})
    s.add_location(b"o" * 20, N1)
    s.locations(b"o" * 20).clear()
    assert s.locations(b"o" * 20) == {N1}


# ─── worker ids ──────────────────────────────────────────────────────────────────────────────


def test_worker_ids_of_two_nodes_never_collide(store):
    n1 = store.register_node(N1, "a", {"CPU": 1})
    n2 = store.register_node(N2, "b", {"CPU": 1})
    from_n1 = {worker_id(n1, i) for i in range(100)}
    from_n2 = {worker_id(n2, i) for i in range(100)}
    assert not from_n1 & from_n2
    assert all(len(w) == 16 for w in from_n1 | from_n2)
    assert worker_id(1, 2) == b"\x01\x00\x00\x00" + b"\x02" + b"\x00" * 11


@pytest.mark.parametrize("node_number, local_id", [(-1, 0), (2 ** 32, 0), (1, 2 ** 96)])
def test_worker_id_refuses_numbers_that_do_not_fit(node_number, local_id):
    with pytest.raises(OverflowError):
        worker_id(node_number, local_id)


# ─── over the wire ───────────────────────────────────────────────────────────────────────────


def test_remote_methods_are_exactly_the_public_methods():
    public = {name for name in dir(ControlStore)
              if not name.startswith("_") and callable(getattr(ControlStore, name))}
    assert REMOTE_METHODS == public
    assert "register_actor" in REMOTE_METHODS and "_declare_dead" not in REMOTE_METHODS


def test_every_public_method_crosses_pickle(clock, wall):
    wire = OverTheWire(ControlStore(clock=clock, wall_clock=wall))
    j = wire.new_job_id("10.0.0.1", 7, N1, "python x.py")
    wire.set_job_metadata(j, {"team": "ml"})
    wire.job_info(j)
    wire.jobs()
    wire.set_job_namespace(j, "ns")
    wire.namespace_of(None, j)
    wire.kv_put(b"k", b"v", True, None)
    wire.kv_get(b"k")
    wire.kv_exists("k", namespace="x")
    wire.kv_keys(b"")
    wire.kv_del(b"k", True, None)
    wire.export_function(b"f", b"pickled")
    wire.get_function(b"f")
    wire.register_node(N1, "addr", {"CPU": 2}, {"l": "v"}, "host", "10.0.0.1")
    wire.register_node(N2, "addr2", {"CPU": 2})
    wire.heartbeat(N1, {"CPU": 1})
    wire.heartbeat(N1, None, {"tasks": 1})
    wire.register_actor("a", None, j, A1, META, False, False)
    assert wire.register_actor("a", None, j, A2, META, True, False) == (A1, META)
    wire.get_named_actor("a", None, j)
    wire.actor_state(A1, "ALIVE", N1)
    wire.actor_info(A1)
    assert [info["actor_id"] for info in wire.actor_table()] == [A1]
    wire.list_named_actors(True)
    wire.list_named_actors(False, "ns")
    wire.add_location(b"o" * 20, N1)
    wire.locations(b"o" * 20)
    wire.remove_location(b"o" * 20, N1)
    wire.add_location(b"o" * 20, N1)
    wire.forget(b"o" * 20)
    wire.add_location(b"p" * 20, N1)
    wire.nodes()
    wire.node_table()
    wire.cluster_resources()
    wire.available_resources()
    [where] = wire.create_placement_group(b"g" * 18, [{"CPU": 1}], "PACK", "pg", j, False,
                                          None)["nodes"]
    assert wire.bundles_on(where) == [(b"g" * 18, 0, {"CPU": 1.0})]
    assert wire.bundle_reserved(b"g" * 18, 0, where) is True
    assert wire.placement_group_info(b"g" * 18)["state"] == "CREATED"
    assert wire.get_placement_group("pg", j)[0] == b"g" * 18
    assert wire.placement_group_table()[(b"g" * 18).hex()]["state"] == "CREATED"
    assert wire.remove_placement_group(b"g" * 18) == [where]
    clock.advance(NODE_DEATH_TIMEOUT_S + 1)
    wire.heartbeat(N2)
    assert wire.check_nodes() == [N1]
    fallout = wire.node_dead(N1)
    assert fallout["objects_lost"] == [b"p" * 20] and fallout["actors"] == [A1]
    wire.job_finished(j)
    wire.stats()
    with pytest.raises(ValueError, match="already taken"):
        wire.register_actor("a", None, j, A3, META)
    assert wire.called == REMOTE_METHODS


def test_stats_counts_every_table(store):
    store.new_job_id()
    store.kv_put(b"a", b"1")
    store.kv_put(b"a", b"1", namespace="x")
    store.register_node(N1, "a", {"CPU": 1})
    store.add_location(b"o" * 20, N1)
    store.register_actor("n", None, JOB1, A1, META)
    store.register_actor(None, None, JOB1, A2, META)
    assert store.stats() == {"jobs": 1, "jobs_running": 1, "kv_keys": 2, "functions": 0,
                             "actors": 2, "named_actors": 1, "nodes_alive": 1,
                             "nodes_dead": 0, "objects": 1, "tasks": 0, "actors_on_nodes": 0,
                             "objects_on_nodes": 0, "object_store_bytes": 0}


# ─── random sequences ────────────────────────────────────────────────────────────────────────

KV_KEYS = st.text(alphabet="ab", max_size=3)
KV_NAMESPACES = st.sampled_from([None, "", "x", b"y"])


def _ns(namespace):
    return b"" if namespace in (None, "") else (
        namespace.encode() if isinstance(namespace, str) else namespace)


class KVMachine(RuleBasedStateMachine):
    """Random puts and deletes against a dict of dicts."""

    def __init__(self):
        super().__init__()
        self.s = ControlStore()
        self.model = {}

    @rule(key=KV_KEYS, value=st.binary(max_size=2), overwrite=st.booleans(), ns=KV_NAMESPACES,
          as_str=st.booleans())
    def put(self, key, value, overwrite, ns, as_str):
        table = self.model.setdefault(_ns(ns), {})
        raw = key.encode()
        new = raw not in table
        if new or overwrite:
            table[raw] = value
        assert self.s.kv_put(key if as_str else raw, value, overwrite, ns) is new

    @rule(key=KV_KEYS, by_prefix=st.booleans(), ns=KV_NAMESPACES)
    def delete(self, key, by_prefix, ns):
        table = self.model.setdefault(_ns(ns), {})
        raw = key.encode()
        doomed = [k for k in table if (k.startswith(raw) if by_prefix else k == raw)]
        for k in doomed:
            del table[k]
        assert self.s.kv_del(raw, by_prefix, ns) == len(doomed)

    @invariant()
    def matches_the_model(self):
        for ns in (None, "x", b"y"):
            table = self.model.get(_ns(ns), {})
            for prefix in ("", "a", "b", "ab", "ba"):
                expected = sorted(k for k in table if k.startswith(prefix.encode()))
                assert self.s.kv_keys(prefix, ns) == expected
            for key, value in table.items():
                assert self.s.kv_get(key, ns) == value
                assert self.s.kv_exists(key, ns)


class ClusterMachine(RuleBasedStateMachine):
    """Nodes join, beat, fall silent and die; objects are copied and dropped; time moves.

    The model: which nodes are alive and when each last beat, and the set of nodes holding
    each object. Every node death must report exactly the objects whose last copy it held.
    """

    NODES = [bytes([i]) * 16 for i in range(1, 5)]
    OBJECTS = [bytes([i]) * 20 for i in range(1, 7)]

    def __init__(self):
        super().__init__()
        self.clock = FakeClock()
        self.s = ControlStore(clock=self.clock)
        self.alive = {}         # node id -> last heartbeat
        self.dead = set()
        self.cpus = {}          # node id -> CPU total
        self.where = {}         # object id -> set of node ids

    def _died(self, node_id):
        del self.alive[node_id]
        self.dead.add(node_id)
        lost = []
        for object_id, nodes in list(self.where.items()):
            if node_id in nodes:
                nodes.discard(node_id)
                if not nodes:
                    del self.where[object_id]
                    lost.append(object_id)
        assert self.s.node_dead(node_id)["objects_lost"] == sorted(lost)

    @rule(node=st.sampled_from(NODES), cpus=st.integers(0, 8))
    def register(self, node, cpus):
        if node in self.dead:
            with pytest.raises(ValueError):
                self.s.register_node(node, "addr", {"CPU": cpus})
            return
        self.s.register_node(node, "addr", {"CPU": cpus})
        self.alive[node] = self.clock.now
        self.cpus[node] = cpus

    @rule(node=st.sampled_from(NODES))
    def heartbeat(self, node):
        ok = self.s.heartbeat(node)
        assert ok is (node in self.alive)
        if ok:
            self.alive[node] = self.clock.now

    @rule(seconds=st.sampled_from([HEARTBEAT_INTERVAL_S, 1.0, NODE_DEATH_TIMEOUT_S]))
    def tick(self, seconds):
        self.clock.advance(seconds)
        expected = [n for n, last in self.alive.items()
                    if self.clock.now - last > NODE_DEATH_TIMEOUT_S]
        got = self.s.check_nodes()
        assert sorted(got) == sorted(expected)
        for node_id in got:
            self._died(node_id)

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def kill(self, data):
        self._died(data.draw(st.sampled_from(sorted(self.alive))))

    @rule(obj=st.sampled_from(OBJECTS), node=st.sampled_from(NODES))
    def add(self, obj, node):
        assert self.s.add_location(obj, node) is (node in self.alive)
        if node in self.alive:
            self.where.setdefault(obj, set()).add(node)

    @rule(obj=st.sampled_from(OBJECTS), node=st.sampled_from(NODES))
    def remove(self, obj, node):
        self.s.remove_location(obj, node)
        nodes = self.where.get(obj, set())
        nodes.discard(node)
        if not nodes:
            self.where.pop(obj, None)

    @rule(obj=st.sampled_from(OBJECTS))
    def forget(self, obj):
        self.s.forget(obj)
        self.where.pop(obj, None)

    @invariant()
    def matches_the_model(self):
        for obj in self.OBJECTS:
            assert self.s.locations(obj) == self.where.get(obj, set())
            assert self.s.locations(obj) <= set(self.alive)
        assert {bytes.fromhex(n["NodeID"]): n["Alive"] for n in self.s.nodes()} == {
            **{n: True for n in self.alive}, **{n: False for n in self.dead}}
        assert {row["node_id"]: row["alive"] for row in self.s.node_table()} == {
            **{n: True for n in self.alive}, **{n: False for n in self.dead}}
        total = sum(self.cpus[n] for n in self.alive)
        assert self.s.cluster_resources() == ({"CPU": float(total)} if self.alive else {})


class NameMachine(RuleBasedStateMachine):
    """Actors are registered, change state and die; a name has at most one live holder."""

    NAMES = ["a", "b"]
    NAMESPACES = [None, "ns"]

    def __init__(self):
        super().__init__()
        self.s = ControlStore()
        self.jobs = [self.s.new_job_id(), self.s.new_job_id()]
        self.s.set_job_namespace(self.jobs[1], "ns")
        self.holders = {}       # (namespace, name) -> actor id
        self.live = {}          # actor id -> (namespace, name) or None
        self.next_actor = 0

    @rule(name=st.sampled_from(NAMES + [None]), namespace=st.sampled_from(NAMESPACES),
          job=st.integers(0, 1), get_if_exists=st.booleans())
    def register(self, name, namespace, job, get_if_exists):
        job_id = self.jobs[job]
        actor_id = self.next_actor.to_bytes(16, "little")
        self.next_actor += 1
        key = (self.s.namespace_of(namespace, job_id), name)
        holder = self.holders.get(key) if name is not None else None
        if holder is not None and not get_if_exists:
            with pytest.raises(ValueError, match="already taken"):
                self.s.register_actor(name, namespace, job_id, actor_id, actor_id,
                                      get_if_exists)
            return
        result = self.s.register_actor(name, namespace, job_id, actor_id, actor_id,
                                       get_if_exists)
        if holder is not None:
            assert result == (holder, holder)   # meta is the actor id here
            return
        assert result is None
        if name is not None:
            self.holders[key] = actor_id
        self.live[actor_id] = key if name is not None else None

    @precondition(lambda self: self.live)
    @rule(data=st.data(), state=st.sampled_from(ACTOR_STATES))
    def change(self, data, state):
        actor_id = data.draw(st.sampled_from(sorted(self.live)))
        assert self.s.actor_state(actor_id, state, b"n" * 16) is True
        if state == "DEAD":
            key = self.live.pop(actor_id)
            if key is not None:
                del self.holders[key]

    @invariant()
    def matches_the_model(self):
        for job_id in self.jobs:
            for namespace in self.NAMESPACES:
                for name in self.NAMES:
                    key = (self.s.namespace_of(namespace, job_id), name)
                    holder = self.holders.get(key)
                    found = self.s.get_named_actor(name, namespace, job_id)
                    assert found == (None if holder is None else (holder, holder))
        listed = {(d["namespace"], d["name"]) for d in self.s.list_named_actors(True)}
        assert listed == set(self.holders)
        assert self.s.stats()["actors"] == len(self.live)


MACHINE_SETTINGS = settings(max_examples=150, stateful_step_count=40, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
KVMachine.TestCase.settings = MACHINE_SETTINGS
ClusterMachine.TestCase.settings = MACHINE_SETTINGS
NameMachine.TestCase.settings = MACHINE_SETTINGS
test_random_kv_sequences = KVMachine.TestCase
test_random_cluster_sequences = ClusterMachine.TestCase
test_random_actor_name_sequences = NameMachine.TestCase
