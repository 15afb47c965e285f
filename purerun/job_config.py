"""JobConfig: a job's settings, given to ``purerun.init(job_config=...)``, as Ray's."""

import os

_LIFETIMES = ("detached", "non_detached")


class JobConfig:
    """The settings of one job (one driver and everything it starts).

    Args:
        jvm_options: options of Java workers; kept for compatibility (purerun runs
            Python only).
        code_search_path: directories added to ``sys.path`` of every worker process
            running the job's tasks and actors (before its first one), so that they
            import modules from there; as Ray adds them to the workers' PYTHONPATH.
        runtime_env: the job's runtime_env (a dict or a RuntimeEnv): the default of all
            its tasks and actors. ``init(runtime_env=...)`` replaces it.
        _client_job: for Ray Client; kept for compatibility.
        metadata: str to str, describing the job.
        ray_namespace: the job's namespace for named actors (``init(namespace=...)``
            takes precedence).
        default_actor_lifetime: "non_detached" (actors end with the job) or "detached"
            (actors created by the job without a ``lifetime`` option outlive it).
        _py_driver_sys_path: the driver's ``sys.path``; kept for compatibility (workers
            already start with it).

    Raises:
        TypeError: code_search_path is not a list of str, or metadata not a dict.
        ValueError: default_actor_lifetime is neither "detached" nor "non_detached".
    """

    def __init__(self, jvm_options=None, code_search_path=None, runtime_env=None,
                 _client_job=False, metadata=None, ray_namespace=None,
                 default_actor_lifetime="non_detached", _py_driver_sys_path=None):
        if code_search_path is None:
            code_search_path = []
        if isinstance(code_search_path, (str, os.PathLike)) or not all(
                isinstance(p, (str, os.PathLike)) for p in code_search_path):
            raise TypeError("code_search_path must be a list of paths, got "
                            f"{code_search_path!r}")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        self.jvm_options = list(jvm_options or [])
        self.code_search_path = [os.fspath(p) for p in code_search_path]
        self._client_job = _client_job
        self.metadata = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self._py_driver_sys_path = list(_py_driver_sys_path or [])
        self.runtime_env = None
        self.set_runtime_env(runtime_env)
        self.default_actor_lifetime = None
        self.set_default_actor_lifetime(default_actor_lifetime)

    def set_metadata(self, key, value):
        """Set one metadata entry of the job."""
        self.metadata[key] = value

    def set_ray_namespace(self, ray_namespace):
        """Set the job's namespace."""
        self.ray_namespace = ray_namespace

    def set_runtime_env(self, runtime_env, validate=False):
        """Set the job's runtime_env.

        Args:
            runtime_env: a dict, a RuntimeEnv, or None.
            validate: kept for compatibility; the fields are always checked.

        Raises:
            TypeError / ValueError: an invalid runtime_env (as ``RuntimeEnv(...)``).
        """
        from purerun.runtime_env import RuntimeEnv
        if runtime_env is None:
            self.runtime_env = None
            return
        if not isinstance(runtime_env, dict):
            raise TypeError(f"runtime_env must be a dict or a RuntimeEnv, got "
                            f"{type(runtime_env).__name__}")
        self.runtime_env = runtime_env if isinstance(runtime_env, RuntimeEnv) else \
            RuntimeEnv(**runtime_env)

    def set_default_actor_lifetime(self, default_actor_lifetime):
        """Set the lifetime of the job's actors that do not choose one.

        Raises:
            ValueError: neither "detached" nor "non_detached".
        """
        if default_actor_lifetime not in _LIFETIMES:
            raise ValueError("Default actor lifetime must be one of `detached`, "
                             f"`non_detached`, got {default_actor_lifetime!r}")
        self.default_actor_lifetime = default_actor_lifetime

    def _validate_runtime_env(self):
        return self.runtime_env

    @classmethod
    def from_json(cls, job_config_json):
        """A JobConfig from a dict of its constructor's arguments (as Ray's).

        Raises:
            TypeError: an unknown key.
        """
        return cls(**job_config_json)

    def __repr__(self):
        return (f"JobConfig(code_search_path={self.code_search_path!r}, "
                f"runtime_env={self.runtime_env!r}, metadata={self.metadata!r}, "
                f"ray_namespace={self.ray_namespace!r}, "
                f"default_actor_lifetime={self.default_actor_lifetime!r})")
