"""A real test suite run serially, with pytest-xdist ``-n 2``, and spread by purerun.

Run: python benchmarks/bench_test_spreading.py [--rounds 3]
 or: python -m pytest benchmarks/bench_test_spreading.py --benchmark-only

The suite is more-itertools' own (its sdist ships ``tests/``): about 750 tests, most of
them milliseconds, a few of one to four seconds. Its one 34-second test
(``test_primes``) is deselected in every run: a single test that long bounds any parallel
run at its own length, which would measure nothing but that test.

The sdist is downloaded once with ``pip download --no-binary :all: --no-deps`` into
``$PURERUN_BENCH_CACHE`` (default: ``<temp dir>/purerun-bench-cache``) and unpacked there;
nothing of it belongs in the repository. Each run is a fresh ``python -m pytest`` in that
directory, timed from start to exit, with the same arguments plus:

    serial          (nothing)
    xdist -n 2      -n 2
    purerun 2       -p purerun.testing --purerun 2
    purerun 2 nodes -p purerun.testing --purerun SOCKET   (a Cluster: head and two nodes of
                                                            1 CPU each, on this host)

Every run must pass and fail the same test ids as the serial run, or the script stops.
The script prints each mode's median wall time and purerun's ratio to xdist's, and the CPU
time of each run's processes (which a loaded machine changes less than wall time; for the
two-node run, without the nodes' own processes).
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

PACKAGE = "more-itertools"
VERSION = "11.2.1"
# The one test that alone outlasts any parallel run of the rest (see above).
DESELECT = "not test_primes"
# A run of the suite takes well under a minute on two cores; this bounds a stuck one.
RUN_TIMEOUT_S = 600
OUTCOME_LINE = re.compile(r"^(PASSED|FAILED|ERROR|XPASS|XFAIL|SKIPPED) (\S+)")
MODES = {
    "serial": [],
    "xdist -n 2": ["-n", "2"],
    "purerun 2": ["-p", "purerun.testing", "--purerun", "2"],
}
TWO_NODES = "purerun 2 nodes"


def cache_dir():
    return os.environ.get("PURERUN_BENCH_CACHE",
                          os.path.join(tempfile.gettempdir(), "purerun-bench-cache"))


def suite_dir():
    """The unpacked sdist (downloaded and unpacked the first time)."""
    root = cache_dir()
    unpacked = os.path.join(root, f"{PACKAGE.replace('-', '_')}-{VERSION}")
    if os.path.isdir(os.path.join(unpacked, "tests")):
        return unpacked
    os.makedirs(root, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                    "--no-deps", "--dest", root, f"{PACKAGE}=={VERSION}"], check=True,
                   stdout=subprocess.DEVNULL)
    archive = os.path.join(root, f"{PACKAGE.replace('-', '_')}-{VERSION}.tar.gz")
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.12+, and the 3.9-3.11 backports
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)
    return unpacked


def run_suite(extra_args, directory):
    """One ``python -m pytest`` of the suite: (wall seconds, {test id: outcome}, exit code,
    CPU seconds of the run's processes)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PURERUN_ADDRESS", "RAY_ADDRESS", "PYTEST_ADDOPTS",
                        "PURERUN_TESTING_WORKER")}
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
               "-k", DESELECT, "tests", *extra_args]
    # CPU time counts every process of the run that its parent waited for: pytest, its
    # purerun node and workers, the test processes (not the nodes of a TwoNodes cluster,
    # which this process started).
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    outcomes = {}
    for line in done.stdout.splitlines():
        match = OUTCOME_LINE.match(line)
        if match:
            outcomes[match.group(2)] = match.group(1)
    if not outcomes:
        raise RuntimeError(f"{' '.join(command)} reported no test:\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return wall, outcomes, done.returncode, cpu


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class TwoNodes:
    """A head and two nodes of one CPU each on this host (``purerun.cluster_utils``)."""

    def __enter__(self):
        from purerun.cluster_utils import Cluster
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()
        return ["-p", "purerun.testing", "--purerun", self.cluster.head_node.address]

    def __exit__(self, *exc):
        self.cluster.shutdown()


def check_same(reference, outcomes, mode):
    if outcomes != reference:
        differ = sorted(k for k in set(reference) | set(outcomes)
                        if reference.get(k) != outcomes.get(k))
        raise AssertionError(f"{mode}: {len(differ)} test(s) differ from the serial run, "
                             f"e.g. {differ[:5]}")


# -- pytest-benchmark rows -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def suite():
    directory = suite_dir()
    _, reference, code, _ = run_suite([], directory)
    return directory, reference, code


@pytest.mark.parametrize("mode", list(MODES))
def test_spreading(benchmark, suite, mode):
    directory, reference, code = suite
    results = []

    def once():
        results.append(run_suite(MODES[mode], directory))
    benchmark.pedantic(once, rounds=3, warmup_rounds=0)
    for _, outcomes, returncode, _ in results:
        check_same(reference, outcomes, mode)
        assert returncode == code


def test_spreading_over_two_nodes(benchmark, suite):
    directory, reference, code = suite
    results = []
    with TwoNodes() as args:
        benchmark.pedantic(lambda: results.append(run_suite(args, directory)), rounds=3,
                           warmup_rounds=0)
    for _, outcomes, returncode, _ in results:
        check_same(reference, outcomes, TWO_NODES)
        assert returncode == code


# -- the script ----------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    directory = suite_dir()
    times = {mode: [] for mode in [*MODES, TWO_NODES]}
    cpus = {mode: [] for mode in times}
    reference = None
    for _ in range(args.rounds):
        # Modes alternate within a round, so that a change in the machine's load falls on
        # every mode alike.
        for mode, extra in MODES.items():
            wall, outcomes, _, cpu = run_suite(extra, directory)
            if reference is None:
                reference = outcomes
            check_same(reference, outcomes, mode)
            times[mode].append(wall)
            cpus[mode].append(cpu)
        with TwoNodes() as extra:
            wall, outcomes, _, cpu = run_suite(extra, directory)
        check_same(reference, outcomes, TWO_NODES)
        times[TWO_NODES].append(wall)
        cpus[TWO_NODES].append(cpu)
    passed = sum(1 for v in reference.values() if v == "PASSED")
    print(f"{PACKAGE} {VERSION}: {len(reference)} tests ({passed} passed), -k '{DESELECT}', "
          f"median of {args.rounds} runs, wall time:")
    medians = {mode: statistics.median(samples) for mode, samples in times.items()}
    for mode, median in medians.items():
        print(f"  {mode:<18} {median:7.2f} s   CPU {statistics.median(cpus[mode]):6.1f} s"
              "   (runs: " + ", ".join(f"{t:.2f}" for t in times[mode]) + ")")
    print(f"  purerun 2 / xdist -n 2: {medians['purerun 2'] / medians['xdist -n 2']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
