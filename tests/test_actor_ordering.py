"""Actor call order on real processes: per caller, as Ray orders it."""

import os

import pytest

import purerun

from helpers import wait_for


@pytest.fixture(scope="module", autouse=True)
def cluster():
    purerun.init(num_cpus=2)
    yield
    purerun.shutdown()


@purerun.remote
def wait_for_file(path):
    wait_for(lambda: os.path.exists(path), timeout=60, interval=0.005, message=path)
    return "released"


@purerun.remote
class Log:
    def __init__(self):
        self.calls = []

    def add(self, item):
        self.calls.append(item)
        return item

    def seen(self):
        return list(self.calls)


@purerun.remote
def call_from_a_task(log, item):
    return purerun.get(log.add.remote(item))


def test_a_call_waiting_for_its_argument_does_not_hold_back_other_callers(tmp_path):
    gate = str(tmp_path / "gate")
    log = Log.remote()
    pending = wait_for_file.remote(gate)
    waiting = log.add.remote(pending)             # the driver's call waits for its argument
    assert purerun.get(call_from_a_task.remote(log, "other"), timeout=30) == "other"
    ready, _ = purerun.wait([waiting], timeout=0)
    assert ready == []
    open(gate, "w").close()
    assert purerun.get(waiting, timeout=30) == "released"
    assert purerun.get(log.seen.remote(), timeout=30) == ["other", "released"]


def test_one_callers_calls_keep_their_order_behind_a_waiting_argument(tmp_path):
    gate = str(tmp_path / "gate")
    log = Log.remote()
    pending = wait_for_file.remote(gate)
    first = log.add.remote(pending)
    second = log.add.remote("second")             # ready, but made after ``first``
    ready, _ = purerun.wait([second], timeout=0.3)
    assert ready == []
    open(gate, "w").close()
    assert purerun.get([first, second], timeout=30) == ["released", "second"]
    assert purerun.get(log.seen.remote(), timeout=30) == ["released", "second"]


def test_many_calls_from_several_callers_each_arrive_in_their_callers_order():
    log = Log.remote()
    refs = [call_from_a_task.remote(log, ("task", i)) for i in range(3)]
    mine = [log.add.remote(("driver", i)) for i in range(200)]
    purerun.get(mine + refs, timeout=60)
    seen = purerun.get(log.seen.remote(), timeout=30)
    assert [x for x in seen if x[0] == "driver"] == [("driver", i) for i in range(200)]
    assert len(seen) == 203
