"""A job's settings reach its workers: JobConfig and init(job_config=...), the
worker_process_setup_hook, and actors with ``async def __init__``, against Ray's
documented behaviour.

Every test starts its own node with the job settings it checks (``shutdown_only`` stops
it), since those settings belong to one job.
"""

import asyncio
import logging
import os
import sys
import textwrap
import threading

import psutil
import pytest

import purerun
from helpers import wait_for
from purerun.job_config import JobConfig
from purerun.runtime_env import RuntimeEnv


@purerun.remote
def echo(x):
    return x


@purerun.remote
def worker_state():
    return (os.getpid(), logging.getLogger("").getEffectiveLevel(), os.environ.get("HOOK_RUNS"),
            os.environ.get("ABC"))


@pytest.fixture
def shutdown_only():
    yield
    purerun.shutdown()


def _write_module(directory, name, source):
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_job_config_code_search_path_namespace_and_runtime_env(tmp_path, shutdown_only):
    _write_module(tmp_path, "only_on_search_path", """
        def where():
            return "search path"
    """)

    @purerun.remote
    def import_it():
        import only_on_search_path
        return only_on_search_path.where()

    @purerun.remote
    class Named:
        def ping(self):
            return "pong"

    config = JobConfig(code_search_path=[str(tmp_path)], ray_namespace="team",
                       runtime_env={"env_vars": {"ABC": "job"}}, metadata={"k": "v"})
    purerun.init(num_cpus=1, job_config=config)
    # The worker imports from the search path; the driver's sys.path is unchanged.
    assert purerun.get(import_it.remote()) == "search path"
    assert str(tmp_path) not in sys.path
    assert purerun.get(worker_state.remote())[3] == "job"
    assert purerun.get_runtime_context().namespace == "team"
    keeper = Named.options(name="keeper").remote()
    assert purerun.get(purerun.get_actor("keeper", namespace="team").ping.remote()) == "pong"
    purerun.kill(keeper)
    env = purerun.get_runtime_context().runtime_env
    assert env["env_vars"] == {"ABC": "job"}  # without purerun's own variables
    from purerun.util.state import list_jobs
    job_hex = purerun.get_runtime_context().get_job_id()
    [job] = [j for j in list_jobs() if j.job_id == job_hex]
    assert job.metadata == {"k": "v"}


def test_init_runtime_env_replaces_the_job_configs(shutdown_only):
    config = JobConfig(runtime_env={"env_vars": {"ABC": "config"}})
    purerun.init(num_cpus=1, job_config=config, runtime_env={"env_vars": {"ABC": "init"}})
    assert purerun.get(worker_state.remote())[3] == "init"


def test_default_actor_lifetime_detached(shutdown_only):
    @purerun.remote
    class Pid:
        def pid(self):
            return os.getpid()

    purerun.init(num_cpus=2, job_config=JobConfig(default_actor_lifetime="detached"))
    detached = Pid.remote()
    attached = Pid.options(lifetime="non_detached").remote()  # its own lifetime wins
    detached_pid = purerun.get(detached.pid.remote())
    attached_pid = purerun.get(attached.pid.remote())
    del detached, attached
    # Without handles a non-detached actor is stopped; the detached one stays.
    wait_for(lambda: not psutil.pid_exists(attached_pid) or
             psutil.Process(attached_pid).status() == psutil.STATUS_ZOMBIE,
             message="the non-detached actor to stop once its handle is gone")
    assert psutil.pid_exists(detached_pid)
    assert psutil.Process(detached_pid).status() != psutil.STATUS_ZOMBIE


def _count_and_debug():
    os.environ["HOOK_RUNS"] = str(int(os.environ.get("HOOK_RUNS", "0")) + 1)
    logging.getLogger("").setLevel(logging.DEBUG)


def test_setup_hook_function_runs_once_per_worker(shutdown_only):
    purerun.init(num_cpus=2, runtime_env={"worker_process_setup_hook": _count_and_debug,
                                          "env_vars": {"ABC": "123"}})

    @purerun.remote
    class Actor:
        def __init__(self):
            self.level = logging.getLogger("").getEffectiveLevel()

        def state(self):
            return self.level, os.environ.get("HOOK_RUNS"), os.environ.get("ABC")

    states = purerun.get([worker_state.remote() for _ in range(6)])
    for _pid, level, runs, abc in states:
        assert (level, runs, abc) == (logging.DEBUG, "1", "123")
    actor = Actor.remote()
    assert purerun.get(actor.__ray_ready__.remote()) is True
    assert purerun.get(actor.state.remote()) == (logging.DEBUG, "1", "123")
    # The driver's own process is not a worker: the hook does not run here.
    assert "HOOK_RUNS" not in os.environ


def test_setup_hook_by_module_name(tmp_path, shutdown_only):
    _write_module(tmp_path, "hook_module", """
        import os
        def setup():
            os.environ["HOOK_RUNS"] = "module"
    """)
    purerun.init(num_cpus=1, job_config=JobConfig(code_search_path=[str(tmp_path)]),
                 runtime_env={"worker_process_setup_hook": "hook_module.setup"})
    assert purerun.get(worker_state.remote())[2] == "module"


def _failing_hook():
    raise ValueError("Setup Failed")


def test_setup_hook_failure_fails_tasks_and_actors(shutdown_only):
    purerun.init(num_cpus=1, runtime_env={"worker_process_setup_hook": _failing_hook})

    @purerun.remote
    class Actor:
        pass

    with pytest.raises(purerun.exceptions.RuntimeEnvSetupError) as info:
        purerun.get(echo.remote(1))
    assert "Failed to execute the setup hook method." in str(info.value)
    assert "Setup Failed" in str(info.value)
    actor = Actor.remote()
    with pytest.raises(purerun.exceptions.RayActorError) as info:
        purerun.get(actor.__ray_ready__.remote())
    assert "Failed to execute the setup hook method." in str(info.value)
    assert "Setup Failed" in str(info.value)


def test_setup_hook_missing_module_fails(shutdown_only):
    purerun.init(num_cpus=1, runtime_env={"worker_process_setup_hook": "no_such_mod.setup"})
    with pytest.raises(purerun.exceptions.RuntimeEnvSetupError,
                       match="Failed to execute the setup hook method"):
        purerun.get(echo.remote(1))


@pytest.mark.parametrize("local_mode", [False, True], ids=["runtime", "local_mode"])
def test_async_init_runs_before_any_call(local_mode, shutdown_only):
    purerun.init(num_cpus=1, local_mode=local_mode)
    actor = AsyncInit.remote(7)
    assert purerun.get(actor.__ray_ready__.remote()) is True
    value, _ = purerun.get(actor.state.remote())
    assert value == 7
    wait_for(lambda: purerun.get(actor.state.remote())[1] > 1,
             message="the task started in async __init__ to keep ticking")
    assert purerun.get(actor.loop_running.remote())
    broken = BrokenAsyncInit.remote()
    with pytest.raises(purerun.exceptions.RayActorError, match="async init failed"):
        purerun.get(broken.__ray_ready__.remote())
    with pytest.raises(purerun.exceptions.RayActorError, match="async init failed"):
        purerun.get(broken.ping.remote())


def test_job_metadata_that_is_not_str_to_str_is_refused_by_init(shutdown_only):
    with pytest.raises(TypeError, match="metadata must map str to str"):
        purerun.init(num_cpus=1, job_config=JobConfig(metadata={"epochs": 3}))
    assert not purerun.is_initialized()


def test_job_config_constructor_as_ray():
    config = JobConfig()
    assert config.code_search_path == [] and config.metadata == {}
    assert config.runtime_env is None and config.ray_namespace is None
    assert config.default_actor_lifetime == "non_detached"
    config.set_metadata("team", "ml")
    config.set_ray_namespace("ns")
    config.set_runtime_env({"env_vars": {"A": "1"}})
    config.set_default_actor_lifetime("detached")
    assert config.metadata == {"team": "ml"} and config.ray_namespace == "ns"
    assert isinstance(config.runtime_env, RuntimeEnv)
    assert config.default_actor_lifetime == "detached"
    assert JobConfig.from_json({"metadata": {"a": "b"}}).metadata == {"a": "b"}
    with pytest.raises(ValueError, match="Default actor lifetime"):
        JobConfig(default_actor_lifetime="forever")
    with pytest.raises(TypeError, match="code_search_path"):
        JobConfig(code_search_path="/one/path")
    with pytest.raises(TypeError, match="env_vars"):
        JobConfig(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(TypeError, match="job_config"):
        purerun.init(job_config={"metadata": {}})
    assert not purerun.is_initialized()


def test_setup_hook_for_one_actor(shutdown_only):
    purerun.init(num_cpus=1)
    @purerun.remote
    class Actor:
        def runs(self):
            return os.environ.get("HOOK_RUNS")

    actor = Actor.options(runtime_env={"worker_process_setup_hook": _count_and_debug}).remote()
    assert purerun.get(actor.runs.remote()) == "1"
    purerun.kill(actor)


def test_setup_hook_that_cannot_be_exported_fails_init():
    lock = threading.Lock()
    with pytest.raises(purerun.exceptions.RuntimeEnvSetupError,
                       match="Failed to export the setup function."):
        purerun.init(num_cpus=1, runtime_env={"worker_process_setup_hook":
                                               lambda: print(lock)})
    assert not purerun.is_initialized()


@purerun.remote
class AsyncInit:
    async def __init__(self, value):
        await asyncio.sleep(0)
        self.value = value
        self.ticks = 0
        # A task started in __init__ keeps running on the actor's loop.
        self.ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self):
        while True:
            self.ticks += 1
            await asyncio.sleep(0.001)

    async def state(self):
        return self.value, self.ticks

    def loop_running(self):
        return asyncio.get_running_loop() is not None


@purerun.remote
class BrokenAsyncInit:
    async def __init__(self):
        raise ValueError("async init failed")

    def ping(self):
        return "pong"
