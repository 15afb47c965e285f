"""The direct call path (core/direct.py) on real processes: a driver's plain tasks run on
workers it leased, and everything a Ray program does with them still holds."""

import os
import pickle
import socket

import pytest

import purerun
from purerun import exceptions
from purerun.core import context, direct, protocol

from helpers import touch, wait_for


@pytest.fixture(scope="module", autouse=True)
def cluster():
    purerun.init(num_cpus=2)
    yield
    purerun.shutdown()


def submitter():
    return context.client._direct


def wait_path(path):
    wait_for(lambda: os.path.exists(path), timeout=60, message=path)


@purerun.remote
def echo(x):
    return x


@purerun.remote
def pid():
    return os.getpid()


@purerun.remote
def plus_one(x):
    return x + 1


@purerun.remote
def gated(path, value=None):
    wait_path(path)
    return value


def test_plain_tasks_run_on_leases_and_appear_in_the_state_api_and_timeline():
    from purerun.util.state import list_tasks
    refs = [echo.remote(i) for i in range(200)]
    assert purerun.get(refs) == list(range(200))
    assert submitter(), "the driver's tasks took the direct path"
    names = [t["name"] for t in list_tasks(limit=100000)]
    assert not any(name == "purerun.lease" for name in names)
    done = [t for t in list_tasks(filters=[("name", "=", "echo")], limit=100000)]
    assert len(done) >= 200
    assert all(t["state"] == "FINISHED" and t["worker_pid"] for t in done)
    trace = purerun.timeline()
    assert any(event.get("name") == "echo" for event in trace)


def test_a_return_handed_on_before_and_after_it_is_back():
    path = f"/tmp/purerun-direct-gate-{os.getpid()}"
    try:
        pending = gated.remote(path, 41)
        later = plus_one.remote(pending)        # promised to the node, sealed on arrival
        inside = echo.remote([pending])         # inside a value: held by it
        stored = purerun.put({"ref": pending})
        touch(path)
        assert purerun.get(later) == 42
        assert purerun.get(purerun.get(inside)[0]) == 41
        assert purerun.get(purerun.get(stored)["ref"]) == 41
        ready = echo.remote(7)
        assert purerun.get(ready) == 7
        assert purerun.get(plus_one.remote(ready)) == 8     # back already: PUT
    finally:
        os.unlink(path)


def test_a_return_pickled_outside_purerun_reaches_another_process():
    ref = echo.remote("far")
    blob = pickle.dumps(ref)

    @purerun.remote
    def load(data):
        return purerun.get(pickle.loads(data))

    assert purerun.get(load.remote(blob)) == "far"


def test_large_results_and_results_holding_refs():
    np = pytest.importorskip("numpy")

    @purerun.remote
    def big(n):
        return np.arange(n)

    @purerun.remote
    def holds():
        return [purerun.put("inner")]

    array = purerun.get(big.remote(1 << 20))
    assert array.sum() == (1 << 20) * ((1 << 20) - 1) // 2
    assert not array.flags.writeable        # zero-copy, from the arena
    del array
    [inner] = purerun.get(holds.remote())
    assert purerun.get(inner) == "inner"
    # a large result nobody kept is freed
    def used():
        return context.client.request("stats")["arena_used"]

    before = used()
    big.remote(1 << 20)
    wait_for(lambda: purerun.get(echo.remote(0)) == 0 and used() <= before, timeout=30,
             message="the unread result to be freed")


def test_a_worker_dying_retries_its_tasks_then_fails_them(tmp_path):
    marker = str(tmp_path / "died-once")

    @purerun.remote(max_retries=1)
    def die_once(path):
        if not os.path.exists(path):
            touch(path)
            os._exit(1)
        return "second run"

    @purerun.remote(max_retries=0)
    def die():
        os._exit(1)

    assert purerun.get(die_once.remote(marker)) == "second run"
    with pytest.raises(exceptions.WorkerCrashedError):
        purerun.get(die.remote())
    assert purerun.get(echo.remote("still fine")) == "still fine"


def test_retryable_exceptions_run_again(tmp_path):
    marker = str(tmp_path / "raised")

    @purerun.remote(max_retries=2, retry_exceptions=True)
    def flaky(path):
        if not os.path.exists(path):
            touch(path)
            raise ValueError("first time")
        return "ok"

    assert purerun.get(flaky.remote(marker)) == "ok"

    @purerun.remote(max_retries=1, retry_exceptions=[KeyError])
    def wrong_kind():
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        purerun.get(wrong_kind.remote())


def test_cancelling_a_running_task_does_not_touch_the_next_one(tmp_path):
    started = str(tmp_path / "started")

    @purerun.remote
    def spin(path):
        touch(path)
        while True:
            pass

    running = spin.remote(started)
    wait_path(started)
    purerun.cancel(running)
    with pytest.raises(exceptions.TaskCancelledError):
        purerun.get(running, timeout=60)
    # the same workers run what comes next
    assert purerun.get([echo.remote(i) for i in range(20)]) == list(range(20))


def test_force_cancel_kills_the_worker_and_the_task_fails(tmp_path):
    started = str(tmp_path / "started")

    @purerun.remote
    def marked_pid(path):
        touch(path)
        wait_path(path + ".never")

    ref = marked_pid.remote(started)
    wait_path(started)
    leased = [lease.pid for lease in submitter().leases.values() if lease.inflight]
    purerun.cancel(ref, force=True)
    with pytest.raises(exceptions.WorkerCrashedError):
        purerun.get(ref, timeout=60)
    import psutil
    wait_for(lambda: not any(psutil.pid_exists(p) for p in leased), timeout=30,
             message="the killed worker to be gone")
    assert purerun.get(echo.remote(1)) == 1


def test_nested_tasks_from_leased_workers_go_through_the_node():
    @purerun.remote
    def parent(n):
        return sum(purerun.get([plus_one.remote(i) for i in range(n)]))

    # more parents than CPUs: each waits for children, which need the CPUs it gave back
    assert purerun.get([parent.remote(3) for _ in range(4)]) == [6] * 4


def test_available_resources_count_idle_leases_as_free():
    purerun.get([echo.remote(i) for i in range(50)])
    assert purerun.available_resources().get("CPU") == 2


def test_other_work_gets_the_cpus_an_idle_lease_holds(monkeypatch):
    monkeypatch.setattr(direct, "LINGER_S", 3600.0)   # only a REVOKE can end them now
    purerun.get([echo.remote(i) for i in range(50)])

    @purerun.remote(num_cpus=2)
    def both():
        return "ran"

    assert purerun.get(both.remote(), timeout=60) == "ran"


def test_a_connection_without_the_nonce_is_never_unpickled(tmp_path):
    purerun.get(echo.remote(0))
    evidence = tmp_path / "unpickled"
    payload = protocol.encode((protocol.LEASE_HELLO, _Touch(str(evidence))))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(submitter().address)
    sock.sendall(b"x" * direct.NONCE_SIZE + payload)
    sock.settimeout(30)
    try:
        assert sock.recv(1) == b""      # closed on us
    except ConnectionResetError:        # (with our bytes unread)
        pass
    sock.close()
    assert not evidence.exists()
    assert purerun.get(echo.remote(1)) == 1


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return touch, (self.path,)


def test_without_the_direct_path_tasks_go_through_the_node(tmp_path):
    from helpers import run_fresh_script
    done = run_fresh_script(tmp_path / "script.py", """
import os
os.environ["PURERUN_DIRECT"] = "0"
import purerun
from purerun.core import context
purerun.init(num_cpus=1)

@purerun.remote
def f(x):
    return x * 2

print(purerun.get([f.remote(i) for i in range(5)]), context.client._direct)
purerun.shutdown()
""")
    assert "[0, 2, 4, 6, 8] False" in done.stdout, done.stderr


def test_a_signal_without_a_cancel_naming_the_task_stops_nothing(tmp_path):
    # What a cancel's SIGINT that arrives after its task ended looks like to the next task.
    started = str(tmp_path / "started")
    go = str(tmp_path / "go")

    @purerun.remote
    def marked(path, gate):
        touch(path)
        wait_path(gate)
        return "finished"

    ref = marked.remote(started, go)
    wait_path(started)
    [lease] = [lease for lease in submitter().leases.values() if lease.inflight]
    import signal
    os.kill(lease.pid, signal.SIGINT)
    touch(go)
    assert purerun.get(ref, timeout=60) == "finished"


def test_wait_over_tasks_on_two_leases_returns_the_first_done(tmp_path):
    gate = str(tmp_path / "gate")
    slow = gated.remote(gate, "slow")
    quick = echo.remote("quick")
    ready, not_ready = purerun.wait([slow, quick], num_returns=1, timeout=60)
    assert ready == [quick] and not_ready == [slow]
    touch(gate)
    assert purerun.get(slow, timeout=60) == "slow"


def test_awaiting_a_direct_result_and_its_future():
    import asyncio

    async def main():
        return await echo.remote("awaited"), await asyncio.gather(echo.remote(1),
                                                                   echo.remote(2))

    assert asyncio.run(main()) == ("awaited", [1, 2])
    assert echo.remote("future").future().result(timeout=60) == "future"


@purerun.remote
def unwatched(path):
    touch(path)


def test_results_nobody_waits_for_are_taken_in(tmp_path):
    from purerun.util.state import list_tasks
    marker = tmp_path / "ran"
    unwatched.remote(str(marker))     # its ref is dropped at once
    wait_for(marker.exists, timeout=60, message="the task to run")
    wait_for(lambda: list_tasks(filters=[("name", "=", "unwatched"),
                                         ("state", "=", "FINISHED")]),
             timeout=60, message="its end to be recorded")


def test_a_waiting_thread_polls_while_its_leases_waits_are_short():
    # The spin's rule, on a socket pair: a wait longer than SPIN_S that polled makes the
    # next wait skip polling; a short one has the next wait poll again.
    import threading

    ours, theirs = socket.socketpair()
    try:
        lease = direct.Lease()
        lease.sock, lease.frames = ours, protocol.FrameReader()
        lease.polling = direct.PollRule(0.0003)
        reader = direct.DirectSubmitter.__new__(direct.DirectSubmitter)
        later = threading.Timer(0.05, theirs.sendall, [protocol.encode((protocol.LEASE_END,))])
        later.start()
        assert reader._read_once(lease, None, spin=True)
        later.join()
        assert lease.polling.skip == 1       # it waited 50 ms: no polling next time
        lease.polling.window = 30.0          # (any wait here is shorter)
        theirs.sendall(protocol.encode((protocol.LEASE_END,)))
        assert reader._read_once(lease, None, spin=True)
        assert lease.polling.skip == 0 and lease.polling.backoff == 1
        theirs.close()
        assert reader._read_once(lease, None, spin=True) is False   # closed: said so
    finally:
        ours.close()
        theirs.close()


def test_polling_backs_off_while_replies_are_slow_and_always_tries_again():
    # Event by event: a wait that did not poll includes the sleeping thread's wake-up, so a
    # long one says nothing about the replies; only a poll that timed out backs off, by
    # 1, 2, 4 ... waits up to SPIN_BACKOFF_MAX, and polling always comes back to try.
    rule = direct.PollRule(0.0003)
    slow, fast = 0.01, 0.0001
    skipped = []
    for _ in range(9):
        assert rule.will_poll()
        rule.waited(slow, True)
        skips = 0
        while not rule.will_poll():
            skips += 1
            rule.waited(slow, False)     # slow without polling: no further backoff
        skipped.append(skips)             # (the will_poll that ended it was the poll)
    assert skipped == [1, 2, 4, 8, 16, 32, 64, 64, 64]
    assert rule.will_poll()
    rule.waited(fast, True)              # replies come in time again: poll every wait
    assert rule.skip == 0 and rule.backoff == 1
    rule.waited(slow, True)
    assert not rule.will_poll()
    rule.waited(fast, False)             # a short wait even without polling: poll next
    assert rule.will_poll()
    assert not direct.PollRule(0).will_poll()   # a window of 0 (one core): never
