"""RuntimeContext: what the current driver, task or actor can learn about itself.

As in Ray, the id properties (``job_id``, ``node_id``, ``task_id``, ``actor_id``,
``current_placement_group_id``), ``get()`` and ``get_resource_ids()`` still work but warn
(DeprecationWarning) in favour of the ``get_*`` methods, which return hex strings.
"""

import functools
import json
import warnings

from purerun.actor import ActorHandle
from purerun.core import job_setup
from purerun.core.ids import (ActorID, JobID, NodeID, PlacementGroupID, TaskID, WorkerID,
                              object_id)

_DEPRECATION = ("This API is deprecated and may be removed in future releases. You could "
                "suppress this warning by setting env variable "
                'PYTHONWARNINGS="ignore::DeprecationWarning"')


def _deprecated(instead):
    """Make a method warn, as Ray's ``@Deprecated(message=..., warning=True)`` does."""
    message = f"{_DEPRECATION}\n{instead}"

    def decorate(method):
        @functools.wraps(method)
        def warning(*args, **kwargs):
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            return method(*args, **kwargs)
        return warning
    return decorate


class RuntimeContext:
    """Ids and resources of the current process, as ``purerun.get_runtime_context()``."""

    def __init__(self, client):
        self._client = client

    def _info(self):
        client = self._client
        return client.info if client.info is not None else client.wait_welcome()

    def get_job_id(self) -> str:
        """The id of the job (driver) this code runs for.

        Returns:
            The JobID as a hex string.
        """
        return self._job_id().hex()

    def get_node_id(self) -> str:
        """The id of the node this process belongs to.

        Returns:
            The NodeID as a hex string.
        """
        return self._node_id().hex()

    def get_task_id(self):
        """The id of the task or actor call running in this thread.

        Returns:
            The TaskID as a hex string; None in a driver.
        """
        task = getattr(self._client, "current_task", None)
        return task.task_id.hex() if task is not None else None

    def get_worker_id(self) -> str:
        """The id of this worker process.

        Returns:
            The WorkerID as a hex string (all zeros in a driver).
        """
        info = self._info()
        return WorkerID(info.get("worker_id") or b"\0" * 16).hex()

    def get_actor_id(self):
        """The id of the actor this code runs in.

        Returns:
            The ActorID as a hex string; None outside an actor.
        """
        actor_id = getattr(self._client, "actor_id", None)
        return actor_id.hex() if actor_id is not None else None

    def get_actor_name(self):
        """The name of the actor this code runs in.

        Returns:
            The name it was given, or None (outside an actor, or an anonymous one).
        """
        return getattr(self._client, "actor_name", None)

    def get_task_name(self):
        """The name of the task or actor call running in this thread.

        Returns:
            The function's qualified name (``Class.method`` for actor calls); None in a
            driver.
        """
        task = getattr(self._client, "current_task", None)
        return task.name if task is not None else None

    def get_task_function_name(self):
        return self.get_task_name()

    def get_placement_group_id(self):
        """The id (hex) of the placement group this task or actor runs in, or None (always
        None in a driver)."""
        client = self._client
        if getattr(client, "current_task", None) is None and \
                getattr(client, "actor_id", None) is None:
            return None
        group_id = client.request("pg_current")
        return None if group_id is None else group_id.hex()

    def get_assigned_resources(self) -> dict:
        """The resources held for the running task, or for the actor this code runs in.

        Returns:
            Resource name -> amount; empty in a driver.
        """
        client = self._client
        if getattr(client, "actor_id", None) is not None:
            return dict(getattr(client, "actor_resources", None) or {})
        task = getattr(client, "current_task", None)
        return dict(task.resources or {}) if task is not None else {}

    def get_accelerator_ids(self) -> dict:
        """The accelerators assigned to this task or actor.

        Returns:
            ``{"GPU": [ids as strings]}``.
        """
        return {"GPU": [str(g) for g in (getattr(self._client, "gpu_ids", ()) or ())]}

    @_deprecated("Use get_accelerator_ids() instead")
    def get_resource_ids(self) -> dict:
        """Deprecated: use ``get_accelerator_ids()``."""
        return self.get_accelerator_ids()

    def get_node_labels(self) -> dict:
        return {}

    def get_runtime_env_string(self) -> str:
        """The runtime_env of the current job, task or actor, as a JSON string.

        Returns:
            The job's runtime_env (``init(runtime_env=...)`` or its JobConfig's) with the
            current task's or actor's own env_vars on top; "{}" when there is none. A
            setup hook function is shown by its qualified name.
        """
        client = self._client
        env = dict(getattr(client, "job_runtime_env", None) or {})
        own = client.inherited_env_vars() if hasattr(client, "inherited_env_vars") else None
        if own:
            env["env_vars"] = {**env.get("env_vars", {}), **own}
        if env.get("env_vars"):  # without the variables purerun carries its job setup in
            env["env_vars"] = {k: v for k, v in env["env_vars"].items()
                               if k not in job_setup.RESERVED}
        hook = env.get("worker_process_setup_hook")
        if hook is not None and not isinstance(hook, str):
            env["worker_process_setup_hook"] = getattr(hook, "__qualname__", repr(hook))
        return json.dumps(env, sort_keys=True, default=repr)

    @property
    def runtime_env(self):
        """The current runtime_env, as ``purerun.runtime_env.RuntimeEnv``."""
        from purerun.runtime_env import RuntimeEnv
        return RuntimeEnv(**json.loads(self.get_runtime_env_string()))

    def get_session_name(self) -> str:
        import os
        return os.path.basename(self._info().get("session_dir", "") or "")

    @_deprecated("Use get_xxx_id() methods to get relevant ids instead")
    def get(self) -> dict:
        """The current context as a dict (deprecated: use the ``get_*`` methods).

        Returns:
            ``job_id``, ``node_id`` and ``namespace``; in a task or actor call also
            ``task_id``, and in an actor also ``actor_id``. As in Ray, an id the caller
            does not have is left out rather than given as None.
        """
        context = {"job_id": self._job_id(), "node_id": self._node_id(),
                   "namespace": self.namespace}
        task_id = self._task_id()
        if task_id is not None:
            context["task_id"] = task_id
        actor_id = self._actor_id()
        if actor_id is not None:
            context["actor_id"] = actor_id
        return context

    @property
    @_deprecated("Use get_job_id() instead")
    def job_id(self):
        """Deprecated: the JobID (use ``get_job_id()``, a hex string)."""
        return self._job_id()

    @property
    @_deprecated("Use get_node_id() instead")
    def node_id(self):
        """Deprecated: the NodeID (use ``get_node_id()``, a hex string)."""
        return self._node_id()

    @property
    @_deprecated("Use get_task_id() instead")
    def task_id(self):
        """Deprecated: the TaskID, None in a driver (use ``get_task_id()``)."""
        return self._task_id()

    @property
    @_deprecated("Use get_actor_id() instead")
    def actor_id(self):
        """Deprecated: the ActorID, None outside an actor (use ``get_actor_id()``)."""
        return self._actor_id()

    @property
    @_deprecated("Use get_placement_group_id() instead")
    def current_placement_group_id(self):
        """Deprecated: the PlacementGroupID (use ``get_placement_group_id()``)."""
        pg = self.get_placement_group_id()
        return PlacementGroupID(bytes.fromhex(pg)) if pg else PlacementGroupID.nil()

    def _job_id(self):
        return JobID(self._client.job_id)

    def _node_id(self):
        return NodeID(self._info()["node_id"])

    def _task_id(self):
        task = getattr(self._client, "current_task", None)
        return TaskID(task.task_id) if task is not None else None

    def _actor_id(self):
        actor_id = getattr(self._client, "actor_id", None)
        return ActorID(actor_id) if actor_id is not None else None

    @property
    def namespace(self):
        return getattr(self._client, "namespace", None)

    @property
    def current_actor(self):
        """A handle to the actor this code runs in.

        Raises:
            RuntimeError: not called from inside an actor.
        """
        client = self._client
        meta = getattr(client, "actor_meta", None)
        actor_id = getattr(client, "actor_id", None)
        if actor_id is None or meta is None:
            raise RuntimeError("This method is only available in an actor.")
        return ActorHandle(actor_id, meta, client.borrow_ref(object_id(actor_id, 0)))

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether the current actor has been restarted (False in its first life)."""
        return bool(getattr(self._client, "actor_restarted", False))

    @property
    def gcs_address(self):
        return self._info().get("address")

    def is_canceled(self) -> bool:
        """Check whether the current task or actor call has been cancelled.

        A cancelled task is interrupted (KeyboardInterrupt) and a cancelled call of an
        asyncio actor gets asyncio.CancelledError; a cancelled call of any other actor goes
        on, and can poll this to stop early and clean up.

        Returns:
            True if ``purerun.cancel()`` was called on the current task or actor call.

        Raises:
            RuntimeError: called from a driver, or from an asyncio actor.
        """
        client = self._client
        task = getattr(client, "current_task", None)
        if task is None:
            raise RuntimeError("is_canceled() is only available inside a task or an actor "
                               "call, not in a driver.")
        if getattr(client, "actor_is_async", False):
            raise RuntimeError("is_canceled() is not available in an asyncio actor: a "
                               "cancelled call gets asyncio.CancelledError instead.")
        cancelled = getattr(client, "task_cancelled", None)  # set by core.worker
        return bool(cancelled is not None and cancelled(task.task_id))
