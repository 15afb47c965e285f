"""Generator calls placed on another node of a cluster: items are relayed to the caller's
node as they are yielded, large ones pulled from where they were made."""

import os

import pytest

import purerun
from cluster_common import on

from helpers import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster(two_nodes):
    return two_nodes


@purerun.remote
def where_and_what(n, path=None):
    for i in range(n):
        if path is not None:
            with open(path, "a") as f:
                f.write("x")
        yield purerun.get_runtime_context().get_node_id(), i, bytes(300_000 if i == 1 else 0)


@purerun.remote
def fails_after_one():
    yield 1
    raise ValueError("failed there")


def test_a_stream_made_on_the_other_node_arrives_here_in_order(cluster):
    gen = where_and_what.options(scheduling_strategy=on(cluster.second)).remote(3)
    values = [purerun.get(ref) for ref in gen]
    assert [(node, i, len(data)) for node, i, data in values] == [
        (cluster.second.node_id, 0, 0), (cluster.second.node_id, 1, 300_000),
        (cluster.second.node_id, 2, 0)]
    assert purerun.get(gen.completed()) is None


def test_an_error_there_ends_the_stream_here(cluster):
    gen = fails_after_one.options(scheduling_strategy=on(cluster.second)).remote()
    assert purerun.get(next(gen)) == 1
    with pytest.raises(ValueError, match="failed there"):
        purerun.get(next(gen))
    assert list(gen) == []


def test_backpressure_reaches_the_other_node(cluster, tmp_path):
    path = str(tmp_path / "produced")
    gen = where_and_what.options(scheduling_strategy=on(cluster.second),
                                 _generator_backpressure_num_objects=1).remote(3, path)

    def produced():
        return len(open(path).read()) if os.path.exists(path) else 0

    wait_for(lambda: gen.next_ready())
    assert produced() == 1
    assert purerun.get(next(gen))[1] == 0
    wait_for(lambda: produced() == 2)
    assert [purerun.get(r)[1] for r in gen] == [1, 2]


def test_a_dynamic_call_there_returns_its_refs_here(cluster):
    ref = where_and_what.options(scheduling_strategy=on(cluster.second),
                                 num_returns="dynamic").remote(2)
    assert [purerun.get(r)[1] for r in purerun.get(ref)] == [0, 1]
