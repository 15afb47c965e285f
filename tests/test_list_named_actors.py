"""purerun.util.list_named_actors, in this job's namespace and across namespaces, on a node
and in local mode."""

import pytest

import purerun
import purerun.util
from helpers import wait_for

CALL_TIMEOUT_S = 60


@purerun.remote
class Named:
    def ping(self):
        return "pong"


@pytest.mark.parametrize("local_mode", [False, True])
def test_list_named_actors_lists_this_namespace_or_every_one(local_mode):
    purerun.init(num_cpus=1, namespace="mine", local_mode=local_mode,
                 object_store_memory=32 << 20)
    try:
        assert purerun.util.list_named_actors() == []
        a = Named.options(name="b-actor").remote()
        c = Named.options(name="a-actor").remote()
        other = Named.options(name="x", namespace="theirs").remote()
        Named.remote()   # unnamed: not listed
        assert purerun.get([a.ping.remote(), c.ping.remote(), other.ping.remote()]) == \
            ["pong"] * 3
        assert purerun.util.list_named_actors() == ["a-actor", "b-actor"]
        assert purerun.util.list_named_actors(all_namespaces=True) == [
            {"name": "a-actor", "namespace": "mine"}, {"name": "b-actor", "namespace": "mine"},
            {"name": "x", "namespace": "theirs"}]
        purerun.kill(a)
        wait_for(lambda: "b-actor" not in purerun.util.list_named_actors(),
                 timeout=CALL_TIMEOUT_S, message="the killed actor to leave the list")
        assert purerun.util.list_named_actors() == ["a-actor"]
    finally:
        purerun.shutdown()
