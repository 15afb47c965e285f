"""RuntimeEnv and RuntimeEnvConfig, as ``ray.runtime_env``.

A RuntimeEnv is a dict (usable wherever a ``runtime_env`` dict is) built from Ray's
keywords and checked field by field. Of its fields purerun acts on ``env_vars`` (set for
the job, task or actor) and ``worker_process_setup_hook`` (run once in each worker process
before its first task of the job, or in an actor's process before ``__init__``); the fields
that install things (``pip``, ``conda``, ``uv``, ``working_dir``, ``py_modules``,
``container``, ...) are checked and kept but not acted on: what they provide must already
be there, which on one machine or a uniform cluster it is.

Fields Ray does not know are kept as plugin fields, as Ray keeps them.

A setup hook given to one task (``f.options(runtime_env=...)``) runs in the worker that
runs it, once, before it; workers are shared by the tasks of a node, so what the hook
changes stays for the tasks that worker runs next (Ray starts a separate worker for each
distinct runtime_env instead). Given to an actor, it runs in the actor's own process. In
``local_mode`` no worker process exists and no hook runs.
"""

from purerun.core import job_setup

_MISSING = object()


class RuntimeEnvConfig(dict):
    """How a runtime environment is set up (``runtime_env={"config": ...}``).

    Args:
        setup_timeout_seconds: seconds the setup may take; a positive int, or -1 for no
            limit.
        eager_install: install the job's environment when the job starts (True) or when
            its first task does.
        log_files: worker log files to show on setup failure.

    Raises:
        TypeError / ValueError: a value of the wrong type, or out of range.
    """

    known_fields = frozenset({"setup_timeout_seconds", "eager_install", "log_files"})

    def __init__(self, setup_timeout_seconds=600, eager_install=True, log_files=None):
        super().__init__()
        if isinstance(setup_timeout_seconds, bool) or not isinstance(setup_timeout_seconds,
                                                                     int):
            raise TypeError("setup_timeout_seconds must be of type int, got "
                            f"{type(setup_timeout_seconds).__name__}")
        if setup_timeout_seconds <= 0 and setup_timeout_seconds != -1:
            raise ValueError("setup_timeout_seconds must be a positive integer or -1, got "
                             f"{setup_timeout_seconds}")
        if not isinstance(eager_install, bool):
            raise TypeError("eager_install must be a boolean, got "
                            f"{type(eager_install).__name__}")
        if log_files is not None and (not isinstance(log_files, list) or not all(
                isinstance(f, str) for f in log_files)):
            raise TypeError(f"log_files must be a list of strings, got {log_files!r}")
        self["setup_timeout_seconds"] = setup_timeout_seconds
        self["eager_install"] = eager_install
        if log_files is not None:
            self["log_files"] = log_files

    @classmethod
    def parse_and_validate_runtime_env_config(cls, config):
        """A RuntimeEnvConfig from a dict of its fields (or a RuntimeEnvConfig).

        Raises:
            TypeError: not a dict, or a field of the wrong type.
            ValueError: an unknown field.
        """
        if isinstance(config, RuntimeEnvConfig):
            return config
        if not isinstance(config, dict):
            raise TypeError("runtime_env['config'] must be of type dict or RuntimeEnvConfig, "
                            f"got: {type(config).__name__}")
        unknown = sorted(set(config) - cls.known_fields)
        if unknown:
            raise ValueError(f"Unknown field(s) {unknown} in runtime_env['config']; the "
                             f"fields are {sorted(cls.known_fields)}.")
        return cls(**config)

    def to_dict(self):
        """The config as a plain dict."""
        return dict(self)


class RuntimeEnv(dict):
    """A runtime environment for a job, task or actor: a dict of checked fields.

    Args:
        py_modules: local directories, files or modules, or URIs, to import from.
        working_dir: a local directory or a URI.
        pip: a list of requirement strings, a requirements file, or
            ``{"packages": [...], "pip_check": bool, "pip_version": str}``.
        conda: an environment name, an environment.yaml path, or its contents as a dict.
        container: ``{"image": ..., "worker_path": ..., "run_options": [...]}``.
        env_vars: environment variables, str to str.
        worker_process_setup_hook: a callable, or the "module.function" name of one, run in
            each worker process before its first task (or an actor's process before
            ``__init__``).
        nsight: an Nsight profiling config name or dict.
        config: a RuntimeEnvConfig, or a dict of its fields.
        uv, py_executable, image_uri, excludes, ...: further Ray fields, and plugin fields,
            as keyword arguments.

    Raises:
        TypeError: a field of the wrong type (the message names it).
        ValueError: both ``pip`` and ``conda``, or an invalid value.
    """

    known_fields = frozenset({
        "py_modules", "py_executable", "java_jars", "working_dir", "conda", "pip", "uv",
        "container", "excludes", "env_vars", "_ray_release", "_ray_commit",
        "_inject_current_ray", "config", "docker", "worker_process_setup_hook", "_nsight",
        "image_uri", "mpi"})

    def __init__(self, *, py_modules=None, working_dir=None, pip=None, conda=None,
                 container=None, env_vars=None, worker_process_setup_hook=None, nsight=None,
                 config=None, _validate=True, **kwargs):
        super().__init__()
        given = dict(kwargs)
        for name, value in (("py_modules", py_modules), ("working_dir", working_dir),
                            ("pip", pip), ("conda", conda), ("container", container),
                            ("env_vars", env_vars), ("_nsight", nsight),
                            ("config", config),
                            ("worker_process_setup_hook", worker_process_setup_hook)):
            if value is not None:
                given[name] = value
        if _validate:
            validate_runtime_env(given)
            if given.get("config") is not None:
                given["config"] = RuntimeEnvConfig.parse_and_validate_runtime_env_config(
                    given["config"])
        dict.update(self, {k: v for k, v in given.items() if v is not None})

    def __setitem__(self, key, value):
        validate_runtime_env({key: value})
        if key == "config" and value is not None:
            value = RuntimeEnvConfig.parse_and_validate_runtime_env_config(value)
        super().__setitem__(key, value)

    def set(self, name, value):
        """Set field ``name``, checking its value as the constructor does."""
        self[name] = value

    def get(self, name, default=None, data_class=None):
        """The value of field ``name`` (``default`` if unset)."""
        value = super().get(name, _MISSING)
        if value is _MISSING:
            return default
        return data_class(**value) if data_class is not None else value

    def to_dict(self):
        """The runtime env as a plain dict (``config`` as a plain dict too)."""
        result = dict(self)
        if isinstance(result.get("config"), RuntimeEnvConfig):
            result["config"] = result["config"].to_dict()
        return result

    def env_vars(self):
        """The ``env_vars`` field, {} when unset."""
        return self.get("env_vars", {})

    def working_dir(self):
        """The ``working_dir`` field, "" when unset."""
        return self.get("working_dir", "")

    def py_modules(self):
        """The ``py_modules`` field as a list, [] when unset."""
        return list(self.get("py_modules", []))

    def has_working_dir(self):
        return self.get("working_dir") is not None

    def has_conda(self):
        return bool(self.get("conda"))

    def has_pip(self):
        return bool(self.get("pip"))

    def plugins(self):
        """``(name, value)`` of every field that is not one of Ray's own."""
        return [(k, v) for k, v in self.items() if k not in self.known_fields]


def _list_of_str(name, value, allow_modules=False):
    import types
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, str) or (allow_modules and isinstance(v, types.ModuleType))
        for v in value)
    if not ok:
        what = "strings or modules" if allow_modules else "strings"
        raise TypeError(f"runtime_env['{name}'] must be a list of {what}, got "
                        f"{type(value).__name__}: {value!r}")


def _check_pip(name, value):
    if isinstance(value, str):
        return
    if isinstance(value, dict):
        if "packages" not in value:
            raise ValueError(f"runtime_env['{name}'] as a dict must have a 'packages' field, "
                             f"got {value!r}")
        packages = value["packages"]
        if not isinstance(packages, str):
            _list_of_str(f"{name}']['packages", packages)
        return
    _list_of_str(name, value)


def _check_str(name, value):
    import os
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"runtime_env['{name}'] must be a string, got "
                        f"{type(value).__name__}")


def _check_conda(name, value):
    if not isinstance(value, (str, dict)):
        raise TypeError(f"runtime_env['{name}'] must be of type str or dict, got "
                        f"{type(value).__name__}")


def _check_dict(name, value):
    if not isinstance(value, dict):
        raise TypeError(f"runtime_env['{name}'] must be of type dict, got "
                        f"{type(value).__name__}")


def _check_env_vars(name, value):
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError(f"runtime_env['{name}'] must be of type Dict[str, str], got "
                        f"{value!r}")
    reserved = sorted(set(value) & job_setup.RESERVED)
    if reserved:
        raise ValueError(f"The env var(s) {reserved} are reserved for purerun's own use; "
                         "set them through JobConfig / worker_process_setup_hook instead.")


def _check_hook(name, value):
    if isinstance(value, str):
        module, _, func = value.rpartition(".")
        if not module or not func:
            raise ValueError(f"runtime_env['{name}'] must be a callable or the "
                             f"'module.function' name of one, got {value!r}")
    elif not callable(value):
        raise TypeError(f"runtime_env['{name}'] must be a callable or a str, got "
                        f"{type(value).__name__}")


def _check_config(name, value):
    RuntimeEnvConfig.parse_and_validate_runtime_env_config(value)


_CHECKS = {
    "py_modules": lambda n, v: _list_of_str(n, v, allow_modules=True),
    "excludes": _list_of_str,
    "java_jars": _list_of_str,
    "working_dir": _check_str,
    "py_executable": _check_str,
    "image_uri": _check_str,
    "pip": _check_pip,
    "uv": _check_pip,
    "conda": _check_conda,
    "container": _check_dict,
    "env_vars": _check_env_vars,
    "worker_process_setup_hook": _check_hook,
    "config": _check_config,
}


def validate_runtime_env(runtime_env):
    """Check every field of a runtime_env dict (Ray's rules of types and combinations).

    Raises:
        TypeError: a field of the wrong type.
        ValueError: both ``pip`` and ``conda``, or a value out of its range.
    """
    for name, value in runtime_env.items():
        check = _CHECKS.get(name)
        if check is not None and value is not None:
            check(name, value)
    if runtime_env.get("pip") and runtime_env.get("conda"):
        raise ValueError("The 'pip' field and 'conda' field of runtime_env cannot both be "
                         f"specified.\nspecified pip field: {runtime_env['pip']}\nspecified "
                         f"conda field: {runtime_env['conda']}\nTo use pip with conda, "
                         "please only set the 'conda' field, and specify your pip "
                         "dependencies within the conda YAML config dict.")
    if runtime_env.get("pip") and runtime_env.get("uv"):
        raise ValueError("The 'pip' field and 'uv' field of runtime_env cannot both be "
                         "specified.")


def setup_env_vars(runtime_env):
    """The reserved env_vars that carry a runtime_env's setup hook to the workers.

    Raises:
        RuntimeEnvSetupError: the hook cannot be pickled ("Failed to export the setup
            function.").
    """
    hook = runtime_env.get("worker_process_setup_hook") if runtime_env else None
    if hook is None:
        return {}
    from purerun.exceptions import RuntimeEnvSetupError
    try:
        return {job_setup.SETUP_HOOK_ENV: job_setup.encode_hook(hook)}
    except RuntimeError as exc:
        raise RuntimeEnvSetupError(str(exc)) from exc


__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]
