"""What a job asks of every worker process that runs its work, before the first of it.

A job's JobConfig ``code_search_path`` and its runtime_env ``worker_process_setup_hook``
apply to worker processes, which the node shares among jobs and forks long before any job
is known. They travel as two reserved runtime_env variables (as Ray carries the setup hook
in ``RAY_WORKER_PROCESS_SETUP_HOOK``): the driver puts them among the job's env_vars, every
task and actor of the job inherits them with the rest, nested calls included, and a worker
acts on them (``prepare``) before it runs such a task or creates such an actor, once per
process for each distinct value. No node, message or table is involved.

::

    driver: init(job_config=..., runtime_env=...) ─▶ job env_vars (+ the two variables)
    f.remote() ─▶ TaskSpec.env_vars ─▶ node ─▶ worker: prepare(env_vars) ─▶ run the task

The hook is a "module.function" name, imported in the worker, or a function, pickled by
value (cloudpickle) and carried base64-encoded.
"""

import base64
import importlib
import os
import sys
import traceback

from purerun.core import serialization

SETUP_HOOK_ENV = "PURERUN_WORKER_PROCESS_SETUP_HOOK"
CODE_SEARCH_PATH_ENV = "PURERUN_JOB_CODE_SEARCH_PATH"
# Actors made by the job without a lifetime of their own get this one (JobConfig).
DEFAULT_ACTOR_LIFETIME_ENV = "PURERUN_DEFAULT_ACTOR_LIFETIME"
RESERVED = frozenset({SETUP_HOOK_ENV, CODE_SEARCH_PATH_ENV, DEFAULT_ACTOR_LIFETIME_ENV})

_PICKLED = "pickled:"
HOOK_FAILED = "Failed to execute the setup hook method."

# This process's outcome of each setup hook value it met: None (ran) or the error text.
_hooks_run = {}
_paths_added = set()


class SetupHookError(Exception):
    """A job's setup hook could not run in this worker; its text says why."""


def encode_hook(hook):
    """The env var value that carries ``hook`` to the workers.

    Args:
        hook: a callable, or the "module.function" name of one.

    Raises:
        TypeError: neither a str nor a callable.
        ValueError: a str that is not a dotted name.
        RuntimeError ("Failed to export the setup function."): the callable cannot be
            pickled.
    """
    if isinstance(hook, str):
        module, _, name = hook.rpartition(".")
        if not module or not name:
            raise ValueError("runtime_env['worker_process_setup_hook'] must be a callable or "
                             f"the 'module.function' name of one, got {hook!r}")
        return hook
    if not callable(hook):
        raise TypeError("runtime_env['worker_process_setup_hook'] must be a callable or a "
                        f"'module.function' string, got {type(hook).__name__}")
    try:
        pickled = serialization.dumps(hook)
    except Exception as exc:
        raise RuntimeError(f"Failed to export the setup function. {exc}") from exc
    return _PICKLED + base64.b64encode(pickled).decode("ascii")


def hook_name(value):
    """What to show for an encoded hook: the name, or "<function>" for a pickled one."""
    return "<function>" if value.startswith(_PICKLED) else value


def prepare(env_vars):
    """Make this worker ready for a task or actor creation with these env_vars.

    Adds the job's code search path to ``sys.path`` and runs its setup hook, each once per
    process.

    Raises:
        SetupHookError: the hook failed, now or on an earlier task of this process (its
            message says how, with the hook's traceback).
    """
    paths = env_vars.get(CODE_SEARCH_PATH_ENV)
    if paths and paths not in _paths_added:
        _paths_added.add(paths)
        for path in reversed(paths.split(os.pathsep)):
            if path and path not in sys.path:
                sys.path.insert(0, path)
    hook = env_vars.get(SETUP_HOOK_ENV)
    if hook:
        if hook not in _hooks_run:
            _hooks_run[hook] = _run_hook(hook, env_vars)
        error = _hooks_run[hook]
        if error is not None:
            raise SetupHookError(error)


def _run_hook(value, env_vars):
    saved = {k: os.environ.get(k) for k in env_vars}
    os.environ.update(env_vars)  # the hook sees the job's variables, as its tasks do
    try:
        if value.startswith(_PICKLED):
            fn = serialization.deserialize(base64.b64decode(value[len(_PICKLED):]))
        else:
            module, _, name = value.rpartition(".")
            fn = getattr(importlib.import_module(module), name)
        fn()
        return None
    except BaseException:
        return f"{HOOK_FAILED}\n{traceback.format_exc()}"
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
