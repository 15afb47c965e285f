"""The joblib backend (purerun.util.joblib): joblib.Parallel running on purerun.

scikit-learn style workloads without scikit-learn: ``Parallel`` over ``delayed`` calls
that take the same numpy arrays, results as a list or a generator, errors surfacing with
their own type, ``n_jobs=-1`` meaning every CPU of the cluster. The module shares one node
(``cluster``: 2 CPUs); one test starts from a fresh interpreter to show the backend starts
purerun itself.
"""

import os

import numpy as np
import pytest

import purerun
from helpers import run_fresh_script

joblib = pytest.importorskip("joblib")

from purerun.util.joblib import register_purerun, register_ray  # noqa: E402
from purerun.util.joblib.backend import STORE_THRESHOLD_BYTES, PurerunBackend  # noqa: E402



# --- functions the pool workers run (workers import this module) ----------------------------


def ridge_score(X, y, alpha):
    """A small least-squares fit, the kind of call a grid search makes per parameter."""
    coef = np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ y)
    return float(((X @ coef - y) ** 2).mean())


def describe(X, scale):
    return os.getpid(), X.flags.writeable, float(X.sum() * scale)


def fail_on(x):
    if x == 5:
        raise ZeroDivisionError(f"item {x} divides by zero")
    return x


def pid_of(_):
    return os.getpid()


def free_cpus(_):
    return purerun.available_resources().get("CPU", 0)


@pytest.fixture(scope="module")
def cluster():
    info = purerun.init(num_cpus=2)
    register_ray()
    register_purerun()
    try:
        yield info
    finally:
        purerun.shutdown()


def test_both_names_are_registered(cluster):
    from joblib.parallel import BACKENDS
    assert BACKENDS["ray"] is PurerunBackend and BACKENDS["purerun"] is PurerunBackend


def scored(X, y, alpha):
    return os.getpid(), ridge_score(X, y, alpha)


def test_a_grid_of_fits_runs_in_pool_workers(cluster):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 5)), rng.standard_normal(200)
    alphas = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    with joblib.parallel_backend("ray"):
        out = joblib.Parallel(n_jobs=2, batch_size=1)(
            joblib.delayed(scored)(X, y, a) for a in alphas)
    assert [score for _pid, score in out] == pytest.approx([ridge_score(X, y, a)
                                                            for a in alphas])
    assert os.getpid() not in {pid for pid, _score in out}


def test_big_arrays_are_shared_through_the_object_store(cluster):
    X = np.arange(STORE_THRESHOLD_BYTES // 8 * 2, dtype=np.float64)  # above the threshold
    small = np.arange(10, dtype=np.float64)
    with joblib.parallel_backend("ray"):
        big_out = joblib.Parallel(n_jobs=2)(joblib.delayed(describe)(X, s) for s in range(6))
        small_out = joblib.Parallel(n_jobs=2)(joblib.delayed(describe)(small, 1) for _ in range(2))
    assert [total for _pid, _w, total in big_out] == [float(X.sum() * s) for s in range(6)]
    # The big array arrives as a read-only view of the store (as joblib's own memmapping
    # backend hands out read-only memmaps); a small one travels with the call, writable.
    assert {writeable for _pid, writeable, _t in big_out} == {False}
    assert {writeable for _pid, writeable, _t in small_out} == {True}


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_results_as_a_generator(cluster, return_as):
    with joblib.parallel_backend("ray"):
        results = joblib.Parallel(n_jobs=2, return_as=return_as)(
            joblib.delayed(pid_of)(i) for i in range(10))
        assert not isinstance(results, list)
        results = list(results)
    assert len(results) == 10 and os.getpid() not in results


def test_errors_surface_with_their_own_type(cluster):
    with joblib.parallel_backend("ray"):
        with pytest.raises(ZeroDivisionError, match="item 5 divides by zero"):
            joblib.Parallel(n_jobs=2)(joblib.delayed(fail_on)(i) for i in range(10))
        # The backend recovers: the next run works.
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(fail_on)(i) for i in range(4)) == [
            0, 1, 2, 3]


def test_n_jobs_minus_one_means_every_cluster_cpu(cluster):
    with joblib.parallel_backend("purerun", n_jobs=-1):
        assert joblib.effective_n_jobs() == 2
        assert joblib.effective_n_jobs(-2) == 1
        pids = joblib.Parallel()(joblib.delayed(pid_of)(i) for i in range(4))
    assert len(pids) == 4 and os.getpid() not in pids
    with pytest.raises(ValueError, match="n_jobs == 0"):
        PurerunBackend().effective_n_jobs(0)


def test_n_jobs_one_runs_in_this_process(cluster):
    with joblib.parallel_backend("ray"):
        assert joblib.Parallel(n_jobs=1)(joblib.delayed(pid_of)(i) for i in range(3)) == [
            os.getpid()] * 3


def test_ray_remote_args_reach_the_pool_workers(cluster):
    with joblib.parallel_backend("ray", ray_remote_args={"num_cpus": 1}):
        free = joblib.Parallel(n_jobs=2)(joblib.delayed(free_cpus)(i) for i in range(2))
    assert free == [0, 0]  # both 1-CPU workers alive while the calls ran


def test_the_backend_starts_purerun_when_it_is_not_running(tmp_path):
    script = ("import joblib, purerun\n"
              "from purerun.util.joblib import register_ray\n"
              "def sq(x): return x * x\n"
              "if __name__ == '__main__':\n"
              "    register_ray()\n"
              "    with joblib.parallel_backend('ray'):\n"
              "        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(sq)(i) for i in range(5))\n"
              "    print(out, purerun.is_initialized())\n")
    out = run_fresh_script(tmp_path / "start.py", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "[0, 1, 4, 9, 16] True"
