"""runtime_env={"env_vars": ...} on init, tasks and actors, inherited by nested calls; other
runtime_env fields are accepted with a warning; bad values fail in the caller."""

import logging
import os

import pytest

import purerun


@pytest.fixture(params=[False, True], ids=["runtime", "local_mode"])
def cluster(request):
    purerun.init(num_cpus=2, local_mode=request.param,
                 runtime_env={"env_vars": {"JOB_VAR": "job"}})
    yield
    purerun.shutdown()


@purerun.remote
def read(*names):
    return [os.environ.get(n) for n in names]


@purerun.remote
def nested(*names):
    return purerun.get(read.remote(*names))


@purerun.remote
class Reader:
    def read(self, *names):
        return [os.environ.get(n) for n in names]

    def nested(self, *names):
        return purerun.get(read.remote(*names))


def test_env_vars_for_tasks_actors_and_nested_calls(cluster):
    assert purerun.get(read.remote("JOB_VAR", "TASK_VAR")) == ["job", None]
    with_env = read.options(runtime_env={"env_vars": {"TASK_VAR": "task", "JOB_VAR": "mine"}})
    assert purerun.get(with_env.remote("JOB_VAR", "TASK_VAR")) == ["mine", "task"]
    # The variables are the task's own: the next task does not see them.
    assert purerun.get(read.remote("TASK_VAR")) == [None]
    nested_env = nested.options(runtime_env={"env_vars": {"TASK_VAR": "parent"}})
    assert purerun.get(nested_env.remote("TASK_VAR", "JOB_VAR")) == ["parent", "job"]
    actor = Reader.options(runtime_env={"env_vars": {"ACTOR_VAR": "actor"}}).remote()
    assert purerun.get(actor.read.remote("ACTOR_VAR", "JOB_VAR")) == ["actor", "job"]
    assert purerun.get(actor.nested.remote("ACTOR_VAR")) == ["actor"]
    assert os.environ.get("TASK_VAR") is None  # the driver's environment is untouched


def test_bad_env_vars_fail_in_the_caller(cluster):
    with pytest.raises(TypeError, match="env_vars"):
        read.options(runtime_env={"env_vars": {"X": 1}})
    with pytest.raises(TypeError, match="runtime_env"):
        read.options(runtime_env=["not", "a", "dict"])


def test_unsupported_fields_warn(cluster, caplog):
    from purerun import options
    options._warned_runtime_env.discard("pip")
    with caplog.at_level(logging.WARNING, logger="purerun"):
        f = read.options(runtime_env={"pip": ["requests"]})
    assert purerun.get(f.remote("JOB_VAR")) == ["job"]
    assert any("pip" in r.getMessage() for r in caplog.records)
