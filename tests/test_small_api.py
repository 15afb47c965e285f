"""The small names Ray programs reach for, each against Ray's documented behaviour.

purerun.cloudpickle; RuntimeEnv / RuntimeEnvConfig field checks; ``__ray_ready__``;
ObjectRefs in asyncio.wait / gather / wait_for / as_completed; the RuntimeContext
deprecation warnings. The tests that need a node share one (``shared``); job settings,
setup hooks and ``async def __init__`` are in test_job_setup.py.
"""

import asyncio
import os
import warnings

import pytest

import purerun
from purerun.runtime_env import RuntimeEnv, RuntimeEnvConfig


@pytest.fixture(scope="module")
def shared():
    """One node for the tests that need no job settings of their own."""
    purerun.init(num_cpus=2)
    try:
        yield
    finally:
        purerun.shutdown()


@purerun.remote
def echo(x):
    return x


@purerun.remote
def worker_state():
    import logging as log
    return (os.getpid(), log.getLogger("").getEffectiveLevel(), os.environ.get("HOOK_RUNS"),
            os.environ.get("ABC"))


# --- purerun.cloudpickle --------------------------------------------------------------------


def test_cloudpickle_is_importable_as_a_module():
    import purerun.cloudpickle as cp
    offset = 3
    fn = cp.loads(cp.dumps(lambda x: x + offset))
    assert fn(1) == 4
    assert cp.CloudPickler and cp.Pickler and cp.dump and cp.load
    assert cp.PicklingError is __import__("pickle").PicklingError
    from purerun import cloudpickle
    assert cloudpickle is cp


# --- RuntimeEnv -------------------------------------------------------------------------------


def test_runtime_env_is_a_checked_dict():
    env = RuntimeEnv(env_vars={"A": "1"}, pip=["requests"], working_dir="/tmp",
                     config={"setup_timeout_seconds": 10}, my_plugin={"x": 1})
    assert isinstance(env, dict)
    assert env["env_vars"] == {"A": "1"} and env.env_vars() == {"A": "1"}
    assert env["pip"] == ["requests"] and env.has_pip() and not env.has_conda()
    assert isinstance(env["config"], RuntimeEnvConfig)
    assert env["config"]["setup_timeout_seconds"] == 10
    assert env.plugins() == [("my_plugin", {"x": 1})]
    assert env.to_dict()["config"] == {"setup_timeout_seconds": 10, "eager_install": True}
    assert RuntimeEnv() == {}
    assert RuntimeEnv(worker_process_setup_hook="m.f")["worker_process_setup_hook"] == "m.f"


@pytest.mark.parametrize("fields, error, match", [
    ({"env_vars": {"A": 1}}, TypeError, "env_vars"),
    ({"env_vars": "A=1"}, TypeError, "env_vars"),
    ({"working_dir": 3}, TypeError, "working_dir"),
    ({"py_modules": "mod"}, TypeError, "py_modules"),
    ({"pip": 3}, TypeError, "pip"),
    ({"pip": {"pip_check": True}}, ValueError, "packages"),
    ({"conda": ["x"]}, TypeError, "conda"),
    ({"container": "image"}, TypeError, "container"),
    ({"pip": ["a"], "conda": "env"}, ValueError, "cannot both be specified"),
    ({"worker_process_setup_hook": 3}, TypeError, "worker_process_setup_hook"),
    ({"worker_process_setup_hook": "nodots"}, ValueError, "module.function"),
    ({"config": {"setup_timeout_seconds": "10"}}, TypeError, "setup_timeout_seconds"),
    ({"config": {"setup_timeout_seconds": 0}}, ValueError, "setup_timeout_seconds"),
    ({"config": {"nope": 1}}, ValueError, "nope"),
    ({"env_vars": {"PURERUN_WORKER_PROCESS_SETUP_HOOK": "x"}}, ValueError, "reserved"),
])
def test_runtime_env_rejects_bad_fields(fields, error, match):
    with pytest.raises(error, match=match):
        RuntimeEnv(**fields)
    # A plain dict gets the same checks where a runtime_env is accepted, in the caller.
    with pytest.raises(error, match=match):
        echo.options(runtime_env=fields)
    env = RuntimeEnv()
    name, value = next(iter(fields.items()))
    if len(fields) == 1:
        with pytest.raises(error, match=match):
            env[name] = value


def test_runtime_env_config_arguments():
    assert RuntimeEnvConfig() == {"setup_timeout_seconds": 600, "eager_install": True}
    assert RuntimeEnvConfig(setup_timeout_seconds=-1, log_files=["a"])["log_files"] == ["a"]
    with pytest.raises(TypeError):
        RuntimeEnvConfig(eager_install="yes")
    with pytest.raises(TypeError):
        RuntimeEnvConfig(log_files="a.log")


def test_runtime_env_object_works_where_dicts_do(shared):
    env = RuntimeEnv(env_vars={"ABC": "from RuntimeEnv"})
    assert purerun.get(worker_state.options(runtime_env=env).remote())[3] == "from RuntimeEnv"


# --- JobConfig --------------------------------------------------------------------------------


# --- worker_process_setup_hook ------------------------------------------------------------------


# --- __ray_ready__ and async __init__ ----------------------------------------------------------


@purerun.remote
class SlowInit:
    def __init__(self, gate):
        self.gate = gate
        while not os.path.exists(gate):
            __import__("time").sleep(0.005)


def test_ray_ready_waits_for_construction(shared, tmp_path):
    gate = str(tmp_path / "gate")
    actor = SlowInit.remote(gate)
    ready = actor.__ray_ready__.remote()
    done, _ = purerun.wait([ready], timeout=0.1)
    assert done == []  # __init__ is still waiting for the gate
    open(gate, "w").close()
    assert purerun.get(ready, timeout=30) is True
    purerun.kill(actor)


# --- ObjectRefs in asyncio ----------------------------------------------------------------------


@purerun.remote
def fail():
    raise KeyError("boom")


def test_refs_in_asyncio_wait_gather_wait_for(shared):
    async def main():
        assert await echo.remote(1) == 1
        assert await asyncio.gather(*[echo.remote(i) for i in range(4)]) == [0, 1, 2, 3]
        refs = [echo.remote("a"), echo.remote("b")]
        done, pending = await asyncio.wait(refs)
        assert pending == set() and done == set(refs)  # the refs themselves come back
        assert sorted(purerun.get(list(done))) == ["a", "b"]
        assert sorted(r.result() for r in done) == ["a", "b"]
        assert await asyncio.wait_for(echo.remote(5), timeout=30) == 5
        assert sorted([await f for f in asyncio.as_completed([echo.remote(2),
                                                               echo.remote(3)])]) == [2, 3]
        results = await asyncio.gather(fail.remote(), echo.remote(9), return_exceptions=True)
        assert isinstance(results[0], KeyError) and results[1] == 9
        with pytest.raises(KeyError):
            await fail.remote()
        assert await echo.remote(4).as_future() == 4
        assert asyncio.isfuture(echo.remote(1))

    asyncio.run(main())
    assert echo.remote(6).future().result(timeout=30) == 6


def test_wait_for_timeout_leaves_the_task_running(shared, tmp_path):
    gate = str(tmp_path / "gate")
    actor = SlowInit.remote(gate)

    async def main():
        ref = actor.__ray_ready__.remote()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ref, timeout=0.05)
        return ref

    ref = asyncio.run(main())
    open(gate, "w").close()
    # Only the wait was cancelled: the call still completes and its value is there.
    assert purerun.get(ref, timeout=30) is True
    purerun.kill(actor)


def test_ref_as_future_outside_a_loop_says_what_to_do(shared):
    with pytest.raises(RuntimeError, match="outside a running event loop"):
        echo.remote(1).done()


def test_ref_outside_a_loop_is_a_plain_awaitable(shared):
    # Not a future before a loop runs, so that a loop given the ref wraps it in its own task.
    ref = echo.remote(3)
    assert not asyncio.isfuture(ref)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(ref) == 3
        assert loop.run_until_complete(asyncio.ensure_future(echo.remote(4), loop=loop)) == 4
    finally:
        loop.close()


# --- RuntimeContext deprecations ----------------------------------------------------------------


@pytest.mark.parametrize("name, instead", [
    ("job_id", "get_job_id()"), ("node_id", "get_node_id()"), ("task_id", "get_task_id()"),
    ("actor_id", "get_actor_id()"), ("current_placement_group_id", "get_placement_group_id()"),
])
def test_deprecated_context_properties_warn(shared, name, instead):
    context = purerun.get_runtime_context()
    with pytest.warns(DeprecationWarning, match=rf"Use {re_escape(instead)} instead"):
        getattr(context, name)


def test_deprecated_context_methods_warn_and_getters_do_not(shared):
    context = purerun.get_runtime_context()
    with pytest.warns(DeprecationWarning, match="get_xxx_id"):
        assert set(context.get()) == {"job_id", "node_id", "namespace"}
    with pytest.warns(DeprecationWarning, match="get_accelerator_ids"):
        context.get_resource_ids()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert context.get_job_id() == context._job_id().hex()
        context.get_node_id()
        context.get_task_id()
        context.get_actor_id()
        context.get_accelerator_ids()
        context.get_runtime_env_string()


def re_escape(text):
    import re
    return re.escape(text)
