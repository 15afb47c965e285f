"""The exception classes: names, bases and what their str says (no process needed)."""

import ray
import ray.exceptions as rex

NAMES = ["RayError", "RayTaskError", "RayActorError", "ActorDiedError", "TaskCancelledError",
         "GetTimeoutError", "WorkerCrashedError", "ObjectLostError", "OwnerDiedError",
         "ObjectStoreFullError", "OutOfMemoryError", "ActorUnavailableError",
         "ObjectFetchTimedOutError", "TaskUnschedulableError", "ActorUnschedulableError",
         "PendingCallsLimitExceeded", "NodeDiedError", "LocalRayletDiedError",
         "RaySystemError", "ObjectReconstructionFailedError", "RuntimeEnvSetupError",
         "CrossLanguageError", "TaskPlacementGroupRemoved", "ActorPlacementGroupRemoved"]


def main():
    for name in NAMES:
        cls = getattr(rex, name)
        bases = sorted(b.__name__ for b in cls.__mro__[1:] if b.__name__ not in ("object",))
        print(f"{name}: {bases}")
    print("GetTimeoutError is TimeoutError:", issubclass(rex.GetTimeoutError, TimeoutError))
    print("str(GetTimeoutError('x')):", str(rex.GetTimeoutError("x")))
    print("str(TaskCancelledError('t1')):", str(rex.TaskCancelledError("t1")))
    print("str(RaySystemError('boom')):", str(rex.RaySystemError("boom")))
    print("ray.exceptions is reachable as an attribute:", ray.exceptions is rex)


if __name__ == "__main__":
    main()
