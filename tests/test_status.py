"""core.status: the ``purerun status`` text, from plain values (no cluster)."""

import pytest

from purerun.core.control_store import ControlStore
from purerun.core.status import NODE_ID_SHOWN, format_bytes, format_status

N1 = bytes.fromhex("3f2a1b4c5d6e7f80" * 2)
N2 = bytes.fromhex("a1b2c3d4e5f60718" * 2)
GIB = 1 << 30


@pytest.mark.parametrize("amount, text", [
    (0, "0B"), (1, "1B"), (1023, "1023B"), (1024, "1.00KiB"), (1536, "1.50KiB"),
    (5 * (1 << 20), "5.00MiB"), (2 * GIB, "2.00GiB"), (10.39 * GIB, "10.39GiB"),
    (3 << 40, "3.00TiB"), (1 << 60, "1024.00PiB"),
])
def test_format_bytes(amount, text):
    assert format_bytes(amount) == text


def test_the_whole_text_from_a_store():
    store = ControlStore()
    store.register_node(N1, "10.0.0.1:7000", {"CPU": 4, "GPU": 1, "memory": 8 * GIB,
                                              "object_store_memory": 2 * GIB, "disk": 2,
                                              "node:10.0.0.1": 1}, node_ip="10.0.0.1")
    store.register_node(N2, "10.0.0.2:7000", {"CPU": 2}, node_ip="10.0.0.2")
    store.heartbeat(N1, {"CPU": 3, "GPU": 1, "memory": 6.5 * GIB, "object_store_memory": 2 * GIB,
                         "disk": 2, "node:10.0.0.1": 1},
                    {"tasks": 5, "actors": 1, "objects": 3, "object_store_bytes": 1536})
    store.node_dead(N2)
    job = store.new_job_id()
    store.new_job_id()
    store.job_finished(job)
    store.register_actor("named", None, job, b"a" * 16, None)
    store.register_actor(None, None, job, b"b" * 16, None)
    store.add_location(b"o" * 20, N1)
    text = format_status(store.node_table(), store.cluster_resources(),
                         store.available_resources(), store.stats())
    rule = "-" * 63
    assert text == "\n".join([
        "======== Cluster status ========",
        "Node status", rule,
        "Active:",
        " node_3f2a1b4c5d6e 10.0.0.1",
        "Dead:",
        " node_a1b2c3d4e5f6 10.0.0.2",
        "",
        "Resources", rule,
        "Usage:",
        " 1.0/4.0 CPU",
        " 0.0/1.0 GPU",
        " 1.50GiB/8.00GiB memory",
        " 1.50KiB/2.00GiB object_store_memory",   # what the stores hold
        " 0.0/2.0 disk",
        "",
        "Workload", rule,
        " 1 job running (2 in all)",
        " 5 tasks queued or running",
        " 2 actors (1 named)",
        " 1 object",
    ])


def test_ray_shaped_node_records_work_too():
    store = ControlStore()
    store.register_node(N1, "a", {"CPU": 1}, node_ip="10.0.0.1")
    store.register_node(N2, "b", {"CPU": 1}, node_ip="10.0.0.2")
    store.node_dead(N2)
    from_ray = format_status(store.nodes(), {}, {}, {})
    from_table = format_status(store.node_table(), {}, {}, {})
    assert from_ray == from_table
    assert " node_3f2a1b4c5d6e 10.0.0.1" in from_ray and len("3f2a1b4c5d6e") == NODE_ID_SHOWN


def test_an_empty_cluster():
    text = format_status([], {}, {}, {})
    for line in (" (no active nodes)", " (no dead nodes)", " (no resources)",
                 " (nothing reported)"):
        assert line in text.splitlines()


def test_fractional_amounts_keep_their_decimals_and_usage_never_goes_negative():
    text = format_status([], {"CPU": 2.5, "custom": 1}, {"CPU": 2.25, "custom": 3}, {})
    assert " 0.25/2.5 CPU" in text.splitlines()
    assert " 0.0/1.0 custom" in text.splitlines()


def test_object_store_usage_falls_back_to_available_without_a_byte_count():
    text = format_status([], {"object_store_memory": 4 * GIB},
                         {"object_store_memory": 3 * GIB}, {"jobs": 0})
    assert " 1.00GiB/4.00GiB object_store_memory" in text.splitlines()
    assert " 0 jobs running (0 in all)" in text.splitlines()


def test_resources_are_ordered_cpu_gpu_memory_then_by_name():
    text = format_status([], {"zeta": 1, "alpha": 1, "memory": 1024, "GPU": 1, "CPU": 1}, {},
                         {})
    usage = text.split("Usage:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[-1] for line in usage] == ["CPU", "GPU", "memory", "alpha", "zeta"]
