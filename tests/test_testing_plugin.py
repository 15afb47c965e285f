"""``pytest -p purerun.testing --purerun N``: a test run spread over purerun workers.

Each run test writes a small test suite into pytester's directory and runs pytest on it
in a subprocess, serially and spread, and compares what pytest reports: outcomes per test,
the summary line, the exit code, failures with their output. The batching rules
(``Schedule``) and timeout rules (``item_timeout``) are checked directly, without a process.
"""

import json
import re
import textwrap
from xml.etree import ElementTree

import pytest

from purerun import testing
from purerun.testing import Schedule

import test_cli_cluster
from test_cli_cluster import stop_everything

# A private head and nodes made with `purerun start`, and removed after the test.
cli = test_cli_cluster.cli

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(240)

# A run here takes a few seconds; this bounds a stuck one.
RUN_TIMEOUT_S = 180
# Every outcome pytest has, and output that a failing test's report must show.
MIXED_SUITE = {
    "test_mixed.py": """
        import pytest

        @pytest.fixture(scope="module")
        def shared():
            return object()

        def test_passes(shared):
            assert shared is not None

        def test_fails():
            print("output of the failing test")
            assert 1 + 1 == 3

        @pytest.mark.skip(reason="not today")
        def test_skipped():
            pass

        @pytest.mark.xfail(reason="known")
        def test_xfails():
            assert False

        @pytest.mark.xfail(reason="fixed")
        def test_xpasses():
            pass

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture cannot start")

        def test_errors(broken):
            pass

        @pytest.mark.parametrize("n", range(6))
        def test_many(n):
            assert n >= 0
    """,
    "test_other.py": """
        def test_elsewhere():
            pass

        class TestGroup:
            def test_method(self):
                pass
    """,
}
OUTCOME_LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)")


def write_suite(pytester, files):
    for name, source in files.items():
        pytester.path.joinpath(name).write_text(textwrap.dedent(source))


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "purerun.testing", "-rA", "-p", "no:cacheprovider",
                                         *args, timeout=RUN_TIMEOUT_S)


def spread(pytester, *args, workers=2):
    return run(pytester, "--purerun", str(workers), *args)


def outcomes_per_test(result):
    """{test id: outcome} from the -rA short summary."""
    found = {}
    for line in result.outlines:
        match = OUTCOME_LINE.match(line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    """The runs here are not inside a worker, whatever runs this suite."""
    for name in (testing.WORKER_ENV, testing.NODE_ENV, "PURERUN_ADDRESS", "RAY_ADDRESS",
                 "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)


# -- runs ----------------------------------------------------------------------------------------

def test_spread_run_reports_like_a_serial_run(pytester):
    write_suite(pytester, MIXED_SUITE)
    serial = run(pytester)
    spread_run = spread(pytester, "--junitxml=spread.xml")

    assert spread_run.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    assert spread_run.parseoutcomes() == serial.parseoutcomes() == {
        "passed": 9, "failed": 1, "skipped": 1, "xfailed": 1, "xpassed": 1, "errors": 1}
    assert outcomes_per_test(spread_run) == outcomes_per_test(serial)
    assert len(outcomes_per_test(serial)) == 14
    assert "purerun: 14 tests on 2 workers of a local node" in spread_run.stdout.str()
    # The failure with its traceback and its captured output; the error with its cause.
    spread_run.stdout.fnmatch_lines([
        "*_ test_fails _*", ">*assert 1 + 1 == 3", "*- Captured stdout call -*",
        "output of the failing test"])
    spread_run.stdout.fnmatch_lines(["*ERROR at setup of test_errors*",
                                     "*RuntimeError: fixture cannot start"])
    # The controller writes the XML report (test processes do not), from the same reports.
    suite = ElementTree.parse(pytester.path / "spread.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("14", "1", "1", "2")


def test_keyword_selection_and_empty_runs(pytester):
    write_suite(pytester, MIXED_SUITE)
    selected = spread(pytester, "-k", "many or elsewhere")
    assert selected.ret == pytest.ExitCode.OK
    assert selected.parseoutcomes() == {"passed": 7, "deselected": 7}
    assert set(outcomes_per_test(selected)) == (
        {f"test_mixed.py::test_many[{n}]" for n in range(6)} | {"test_other.py::test_elsewhere"})

    nothing = spread(pytester, "-k", "no_such_test")
    assert nothing.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_exitfirst_stops_handing_out_tests(pytester):
    # One worker, so the order is the serial order: the run ends at the first failure.
    write_suite(pytester, {"test_stop.py": (
        "def test_one():\n    pass\n\n"
        "def test_two():\n    assert False, 'the first failure'\n\n"
        + "".join(f"def test_after_{n}():\n    pass\n\n" for n in range(40)))})
    serial = run(pytester, "-x")
    stopped = spread(pytester, "-x", workers=1)
    assert stopped.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    assert stopped.parseoutcomes() == serial.parseoutcomes() == {"passed": 1, "failed": 1}
    stopped.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_a_crash_and_a_hang_fail_their_tests_and_the_rest_runs(pytester):
    write_suite(pytester, {"test_bad.py": """
        import os
        import time

        import pytest

        def test_before():
            pass

        def test_exits():
            os._exit(3)

        def test_middle():
            pass

        def test_hangs():
            time.sleep(300)

        @pytest.mark.timeout(1)
        def test_marked_hang():
            time.sleep(300)

        def test_after():
            pass
        """, "test_good.py": "".join(f"def test_{n}():\n    pass\n\n" for n in range(10))})
    result = spread(pytester, "--purerun-timeout", "3")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = outcomes_per_test(result)
    assert {k for k, v in outcomes.items() if v == "FAILED"} == {
        "test_bad.py::test_exits", "test_bad.py::test_hangs", "test_bad.py::test_marked_hang"}
    assert result.parseoutcomes() == {"passed": 13, "failed": 3}
    text = result.stdout.str()
    assert re.search(r"crashed while running this test: exit code 3", text), text
    assert "took longer than 3 s" in text and "took longer than 1 s" in text
    # The stack of the hanging test, from faulthandler in its process.
    assert re.search(r'File ".*test_bad.py", line \d+ in test_hangs', text), text


def test_a_segfault_is_a_failure_with_its_traceback(pytester):
    write_suite(pytester, {"test_segv.py": """
        import ctypes

        def test_segfaults():
            ctypes.string_at(0)

        def test_fine():
            pass
        """})
    result = spread(pytester, workers=1)
    assert result.parseoutcomes() == {"passed": 1, "failed": 1}
    result.stdout.fnmatch_lines(["*crashed while running this test: killed by SIGSEGV*",
                                 "*Fatal Python error: Segmentation fault*"])


def test_tests_that_start_purerun_themselves(pytester):
    # The purerun_cluster fixture (and purerun.init) in a test process: a node of its own.
    write_suite(pytester, {"test_nested.py": """
        import purerun

        def test_a_task(purerun_cluster):
            @purerun.remote
            def double(x):
                return 2 * x
            assert purerun.get(double.remote(21)) == 42

        def test_init_and_shutdown():
            purerun.init(num_cpus=1)
            try:
                assert purerun.cluster_resources()["CPU"] == 1
            finally:
                purerun.shutdown()
        """})
    result = spread(pytester)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert result.parseoutcomes() == {"passed": 2}


def test_collections_that_differ_and_workers_that_cannot_start(pytester):
    write_suite(pytester, {"test_differs.py": """
        import os

        if os.environ.get("PURERUN_TESTING_WORKER"):
            def test_only_in_workers():
                pass
        else:
            def test_only_here():
                pass

        def test_everywhere():
            pass
        """})
    differs = spread(pytester, workers=1)
    assert differs.parseoutcomes() == {"passed": 1, "failed": 1}
    differs.stdout.fnmatch_lines([
        "*test_differs.py::test_only_here was collected by the controller but not by "
        "purerun worker pr0*"])

    pytester.path.joinpath("conftest.py").write_text(textwrap.dedent("""
        import os

        if os.environ.get("PURERUN_TESTING_WORKER"):
            raise ImportError("this conftest cannot be imported in a worker")
        """))
    broken = spread(pytester)
    assert broken.ret == pytest.ExitCode.TESTS_FAILED
    assert broken.parseoutcomes() == {"failed": 2}
    broken.stdout.fnmatch_lines(["*Not run: The test process of purerun worker pr* exited "
                                 "before its collection ended: exit code 4*",
                                 "*ImportError: this conftest cannot be imported in a worker*"])


def test_options_that_cannot_be_combined(pytester, monkeypatch):
    write_suite(pytester, {"test_one.py": "def test_one():\n    pass\n"})
    with_xdist = spread(pytester, "-n", "2")
    assert with_xdist.ret == pytest.ExitCode.USAGE_ERROR
    assert "--purerun and pytest-xdist" in with_xdist.stderr.str()
    zero = run(pytester, "--purerun", "0")
    assert zero.ret == pytest.ExitCode.USAGE_ERROR
    assert "at least 1 worker" in zero.stderr.str()
    # Inside a worker (as when --purerun comes from addopts), it does not spread again.
    monkeypatch.setenv(testing.WORKER_ENV, "pr0")
    inside = spread(pytester)
    assert inside.ret == pytest.ExitCode.OK
    assert inside.parseoutcomes() == {"passed": 1}
    assert "purerun:" not in inside.stdout.str()


def test_a_cluster_of_two_nodes_by_its_address(pytester, cli, monkeypatch):
    """``--purerun HOST:PORT`` with a head and two nodes started by ``purerun start``: one
    worker per CPU, and tests run on both nodes."""
    address, _ = cli.start_head()
    joined = cli.run("start", "--address", address, "--num-cpus", "1")
    assert joined.returncode == 0, joined.stderr
    record = pytester.path / "ran"
    record.mkdir()
    write_suite(pytester, {"test_where.py": f"""
        import json
        import os

        import pytest

        @pytest.mark.parametrize("n", range(12))
        def test_records_its_node(n):
            with open(os.path.join({str(record)!r}, str(n)), "w") as f:
                json.dump([os.environ["{testing.NODE_ENV}"], os.getpid()], f)
        """})
    # Its TMPDIR (where purerun start recorded the nodes) and HOME (the token).
    for name in ("TMPDIR", "HOME"):
        monkeypatch.setenv(name, cli.env[name])
    result = run(pytester, "--purerun", address)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    assert result.parseoutcomes() == {"passed": 12}, result.stdout.str()
    assert "12 tests on 2 workers of the cluster" in result.stdout.str()
    ran = [json.loads(p.read_text()) for p in record.iterdir()]
    assert len(ran) == 12
    assert len({node for node, _ in ran}) == 2, ran
    assert len({pid for _, pid in ran}) == 2, ran
    stop_everything(cli, 3)


# -- rules ---------------------------------------------------------------------------------------

def test_batches_keep_to_one_module_per_worker_and_shrink_at_the_end():
    ids = [f"a.py::t{n}" for n in range(40)] + [f"b.py::t{n}" for n in range(40)]
    schedule = Schedule(ids, workers=2)
    first = schedule.next_batch(0)
    second = schedule.next_batch(1)
    def size(remaining):
        return max(1, min(testing.MAX_BATCH, remaining // (testing.BATCHES_PER_WORKER * 2)))
    assert len(first) == size(80) and len(second) == size(80 - len(first))
    assert {testing.module_of(i) for i in first} == {"a.py"}
    assert {testing.module_of(i) for i in second} == {"b.py"}
    handed = first + second
    while schedule.remaining:
        batch = schedule.next_batch(len(handed) % 2)
        assert len({testing.module_of(i) for i in batch}) == 1
        handed += batch
    assert sorted(handed) == sorted(ids) and len(handed) == len(set(handed))
    assert len(batch) == 1
    assert schedule.next_batch(0) == []


def test_tests_given_back_go_out_first_in_their_order():
    schedule = Schedule(["a.py::1", "a.py::2", "a.py::3", "b.py::1"], workers=1)
    batch = schedule.next_batch(0) + schedule.next_batch(0)
    assert batch == ["a.py::1", "a.py::2"]
    schedule.give_back(batch)
    assert schedule.remaining == 4
    assert [schedule.next_batch(0)[0] for _ in range(4)] == [
        "a.py::1", "a.py::2", "a.py::3", "b.py::1"]


def test_a_worker_shares_the_largest_module_when_every_module_has_one():
    ids = [f"a.py::{n}" for n in range(30)] + ["b.py::1"]
    schedule = Schedule(ids, workers=3)
    assert testing.module_of(schedule.next_batch(0)[0]) == "a.py"
    assert schedule.next_batch(1) == ["b.py::1"]
    assert testing.module_of(schedule.next_batch(2)[0]) == "a.py"
    # b.py is used up: worker 1 moves on to a.py too.
    assert testing.module_of(schedule.next_batch(1)[0]) == "a.py"


class _Item:
    def __init__(self, marker=None, option=None, ini="0", has_timeout_plugin=True):
        self._marker = marker
        self.config = self

        class _Plugins:
            @staticmethod
            def hasplugin(name):
                return has_timeout_plugin and name == "timeout"
        self.pluginmanager = _Plugins()
        self._option, self._ini = option, ini

    def get_closest_marker(self, name):
        return self._marker if name == "timeout" else None

    def getoption(self, name, default=None):
        return self._option if name == "timeout" else default

    def getini(self, name):
        return self._ini


def test_a_tests_timeout_marker_then_the_option_then_pytest_timeouts(monkeypatch):
    monkeypatch.delenv("PYTEST_TIMEOUT", raising=False)
    marker = pytest.mark.timeout(5).mark
    assert testing.item_timeout(_Item(marker=marker), 30) == 5
    assert testing.item_timeout(_Item(marker=pytest.mark.timeout(0).mark), 30) is None
    assert testing.item_timeout(_Item(marker=pytest.mark.timeout(timeout=2).mark), None) == 2
    assert testing.item_timeout(_Item(option=7), 30) == 30
    assert testing.item_timeout(_Item(option=7), None) == 7
    assert testing.item_timeout(_Item(ini="9"), None) == 9
    assert testing.item_timeout(_Item(), None) is None
    monkeypatch.setenv("PYTEST_TIMEOUT", "11")
    assert testing.item_timeout(_Item(), None) == 11
    assert testing.item_timeout(_Item(option=4, has_timeout_plugin=False), None) is None
