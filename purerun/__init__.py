"""purerun: a Ray-compatible task and actor runtime in pure Python.

``import purerun as ray`` runs ordinary Ray core programs: remote functions, actors,
``get``/``put``/``wait``, resources and retries.
"""

from purerun import actor, cloudpickle, dag, exceptions, internal, job_config, runtime_env
from purerun.api import (available_resources, cancel, cluster_resources, get, get_actor,
                         get_gpu_ids, get_runtime_context, init, is_initialized, kill, method,
                         nodes, put, remote, shutdown, timeline, wait)
from purerun.core.ids import (ActorClassID, ActorID, FunctionID, JobID, NodeID, ObjectID,
                              PlacementGroupID, TaskID, UniqueID, WorkerID)
from purerun.object_ref import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator

__version__ = "0.1.0"

SCRIPT_MODE = 0
WORKER_MODE = 1
LOCAL_MODE = 2

__all__ = [
    "__version__", "actor", "cloudpickle", "dag", "internal", "job_config", "runtime_env", "available_resources", "cancel", "cluster_resources", "exceptions",
    "get", "get_actor", "get_gpu_ids", "kill", "get_runtime_context", "init", "is_initialized", "method", "nodes", "put",
    "remote", "shutdown", "timeline", "wait", "ObjectRef", "ObjectRefGenerator",
    "DynamicObjectRefGenerator", "ObjectID", "ActorClassID",
    "ActorID", "FunctionID", "JobID", "NodeID", "PlacementGroupID", "TaskID", "UniqueID",
    "WorkerID", "SCRIPT_MODE", "WORKER_MODE", "LOCAL_MODE",
]
