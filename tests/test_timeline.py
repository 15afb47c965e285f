"""purerun.timeline(): finished tasks and actor calls as Chrome trace events."""

import json

import pytest

import purerun


@pytest.mark.parametrize("local_mode", [False, True])
def test_timeline_lists_tasks_and_actor_calls(local_mode, tmp_path):
    purerun.init(num_cpus=2, local_mode=local_mode)
    try:
        @purerun.remote
        def work(x):
            return x

        @purerun.remote
        class Counter:
            def add(self, x):
                return x

        purerun.get([work.remote(i) for i in range(5)])
        counter = Counter.remote()
        purerun.get(counter.add.remote(1))
        events = purerun.timeline()
        names = [e["name"] for e in events]
        assert names.count("test_timeline_lists_tasks_and_actor_calls.<locals>.work") == 5
        assert "Counter.add" in names and "Counter.__init__" in names
        for event in events:
            assert event["ph"] == "X" and event["dur"] >= 0 and event["ts"] > 0
            assert len(event["args"]["task_id"]) == 32
        path = tmp_path / "trace.json"
        assert purerun.timeline(str(path)) is None
        assert len(json.loads(path.read_text())) == len(events)
    finally:
        purerun.shutdown()


def test_timeline_needs_a_running_runtime():
    with pytest.raises(RuntimeError, match="init"):
        purerun.timeline()
