"""The portability suite's purerun leg: every program of tests/portability/ (and every
example) runs unchanged on purerun, with ``import ray`` resolved to purerun, and prints
exactly its expected output, the output it prints on Ray.

The Ray leg runs the same programs against Ray from a virtual environment with Ray
installed (``.ci/run``; by hand: ``python tests/portability/runner.py --backend ray``).
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "portability"))
import runner  # noqa: E402

PROGRAMS = runner.discover()


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_program_on_purerun(program):
    result = runner.run(program, "purerun")
    assert result.status == "passed", f"{program.name} on purerun: {result.detail}"


def test_every_program_has_expected_output():
    missing = [p.name for p in PROGRAMS if not os.path.exists(p.expected_path)]
    assert not missing, f"programs without expected/<name>.out: {missing}"
    names = {p.name + ".out" for p in PROGRAMS}
    stale = sorted(set(os.listdir(runner.EXPECTED_DIR)) - names)
    assert not stale, f"expected outputs of no program: {stale}"


def test_purerun_only_programs_say_why():
    marked = [p for p in PROGRAMS if p.purerun_only]
    assert marked, "the suite has programs Ray cannot run (local_mode, 2020 option names)"
    skipped = runner.run(marked[0], "ray")
    assert skipped.status == "skipped" and marked[0].purerun_only in skipped.detail


def test_markers_are_parsed_and_checked(tmp_path):
    source = ("# portability: args 10 20\n"
              "# portability: scrub \\d+ ms\n"
              "    # portability: purerun-only, a reason\n")
    program = runner.parse_markers(runner.Program("p", "p.py"), source)
    assert program.args == ["10", "20"]
    assert program.purerun_only == "a reason"
    assert runner.normalize(program, "took 15 ms  \n\n") == "took <scrubbed>\n"
    needs = runner.parse_markers(runner.Program("p", "p.py"),
                                 "# portability: ray-needs no_such_module_xyz, a reason\n")
    assert needs.ray_needs == ("no_such_module_xyz", "a reason")
    skipped = runner.run(needs, "ray")
    assert skipped.status == "skipped" and "a reason" in skipped.detail
    with pytest.raises(ValueError, match="needs a module and a reason"):
        runner.parse_markers(runner.Program("p", "p.py"), "# portability: ray-needs aiohttp\n")
    with pytest.raises(ValueError, match="unknown portability marker"):
        runner.parse_markers(runner.Program("p", "p.py"), "# portability: ray-only\n")
    with pytest.raises(ValueError, match="needs a reason"):
        runner.parse_markers(runner.Program("p", "p.py"), "# portability: purerun-only\n")


def test_a_wrong_output_fails_with_a_diff(tmp_path, monkeypatch):
    path = tmp_path / "prints.py"
    path.write_text("print('one')\nprint('two')\n")
    (tmp_path / "prints.out").write_text("one\nthree\n")
    monkeypatch.setattr(runner, "EXPECTED_DIR", str(tmp_path))
    result = runner.run(runner.Program("prints", str(path)), "purerun")
    assert result.status == "failed"
    assert "-three" in result.detail and "+two" in result.detail


def test_shim_resolves_ray_and_its_submodules_to_purerun():
    code = ("import ray, ray.util.queue, ray.exceptions, purerun, purerun.util.queue\n"
            "from ray.cluster_utils import Cluster\n"
            "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as N\n"
            "import purerun.cluster_utils, purerun.util.scheduling_strategies as s\n"
            "assert ray is purerun and ray.util.queue is purerun.util.queue\n"
            "assert Cluster is purerun.cluster_utils.Cluster and N is s.NodeAffinitySchedulingStrategy\n"
            "assert ray.util.queue.__spec__.name == 'purerun.util.queue'\n"
            "try:\n"
            "    import ray.no_such_module\n"
            "except ModuleNotFoundError as e:\n"
            "    print('missing:', e.name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=runner.environment("purerun"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "missing: ray.no_such_module\n"
