"""A worker process: runs tasks the node sends it, one at a time.

The node forks workers from its own single-threaded process (a fork server: a worker is
ready in a few milliseconds instead of the ~100 ms a fresh interpreter takes here), so a
worker starts with the node's modules imported, in the driver's working directory with the
driver's ``sys.path``. ``run_worker`` is the whole life of the child after the fork.

The reader thread of the worker's Client receives EXECUTE messages and hands them to the
main thread through a queue; the main thread runs the task, stores its results (large ones
straight into the arena) and reports TASK_DONE.
"""

import os
import queue
import random
import signal
import socket
import sys
import traceback

from purerun import exceptions
from purerun.core import context, ids, protocol, serialization
from purerun.core.client import Client
from purerun.core.protocol import ERROR
from purerun.core.task_spec import Dep

_PR_SET_PDEATHSIG = 1


def run_worker(sock: socket.socket, arena_fd: int, info: dict, stdout_fd: int,
               stderr_fd: int, keep_fds) -> None:
    """Entry point of a freshly forked worker; never returns."""
    code = 1
    try:
        _become_worker(stdout_fd, stderr_fd, keep_fds)
        tasks = queue.SimpleQueue()
        client = Client(sock, "worker", info=info, arena_fd=arena_fd, on_execute=tasks.put)
        context.client = client
        Worker(client, tasks).run()
        code = 0
    except BaseException:  # last words before the process goes
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except Exception:
            pass
    finally:
        os._exit(code)


def _become_worker(stdout_fd, stderr_fd, keep_fds):
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    keep = set(keep_fds) | {0, 1, 2}
    # Close every descriptor inherited from the node (other workers' sockets, the listening
    # socket, pipes) except ours. The node's objects that wrap them stay referenced by the
    # frames below us and are never collected, so no stale close can hit a reused number.
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, _on_sigint)
    ids.reseed()
    random.seed()
    try:  # die with the node even if a task never returns to read the closed socket
        import ctypes
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


_running = False


def _on_sigint(signum, frame):
    # The node sends SIGINT to cancel the running task (purerun.cancel without force).
    if _running:
        raise KeyboardInterrupt


class Worker:
    def __init__(self, client: Client, tasks: queue.SimpleQueue):
        self.client = client
        self.functions = {}          # function key -> callable
        self.calls = {}              # function key -> number of calls run (for max_calls)
        self.tasks = tasks
        self.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")

    def run(self):
        get = self.tasks.get
        while True:
            msg = get()
            if msg is None:
                return
            if self.execute(msg):
                return

    def execute(self, msg) -> bool:
        """Run one task; return True if this worker must exit afterwards (max_calls)."""
        global _running
        _, spec, dep_payloads, pickled_fn, gpu_ids = msg
        client = self.client
        client.current_task = spec
        client.gpu_ids = gpu_ids
        self._set_gpus(gpu_ids)
        retry = False
        try:
            _running = True
            try:
                fn = self._function(spec.function_key, pickled_fn)
                args, kwargs = self._arguments(spec, dep_payloads)
                result = fn(*args, **kwargs)
            finally:
                _running = False
            results = self._store_results(spec, result)
        except _DependencyFailed as failed:
            results = [(oid, ERROR, failed.payload, ()) for oid in spec.return_ids()]
        except BaseException as exc:  # the user's error is the task's result
            if isinstance(exc, KeyboardInterrupt):
                error = exceptions.TaskCancelledError(spec.task_id.hex())
            else:
                error = self._task_error(spec, exc)
                retry = self._retryable(spec, exc)
            payload = _dump_error(error, spec)
            results = [(oid, ERROR, payload, ()) for oid in spec.return_ids()]
        finally:
            client.current_task = None
            _flush_output()
        exiting = False
        if spec.max_calls:
            count = self.calls.get(spec.function_key, 0) + 1
            self.calls[spec.function_key] = count
            exiting = count >= spec.max_calls
        client.send((protocol.TASK_DONE, spec.task_id, results, retry, exiting))
        return exiting

    def _set_gpus(self, gpu_ids):
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
        elif self.cuda_visible_devices is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices

    def _function(self, key, pickled):
        fn = self.functions.get(key)
        if fn is None:
            if pickled is None:
                raise exceptions.RaySystemError("the node sent a task for a function this "
                                                "worker has never received")
            fn = self.functions[key] = serialization.deserialize(pickled)
        return fn

    def _arguments(self, spec, dep_payloads):
        client = self.client
        values = []
        for object_id, (kind, payload) in zip(spec.deps, dep_payloads):
            if kind == ERROR:
                raise _DependencyFailed(payload)
            client._values.setdefault(object_id, (kind, payload))
            values.append(client._value_of(object_id, (kind, payload)))
        if spec.args_in_store:
            args, kwargs = values.pop()
        elif spec.args is None:
            return (), {}
        else:
            meta, buffers = spec.args
            args, kwargs = serialization.deserialize(meta, buffers)
        if values:
            args = [values[a.index] if type(a) is Dep else a for a in args]
            if kwargs:
                kwargs = {k: values[v.index] if type(v) is Dep else v
                          for k, v in kwargs.items()}
        return args, kwargs

    def _store_results(self, spec, result):
        n = spec.num_returns
        if n == 1:
            values = (result,)
        elif n == 0:
            if result is not None:
                raise ValueError(f"Task {spec.name} has num_returns=0 but returned "
                                 f"{type(result).__name__}, not None.")
            return []
        else:
            try:
                values = tuple(result)
            except TypeError:
                raise ValueError(f"Task {spec.name} has num_returns={n} but returned a "
                                 f"non-iterable {type(result).__name__}.") from None
            if len(values) != n:
                raise ValueError(f"Task {spec.name} has num_returns={n} but returned "
                                 f"{len(values)} values.")
        store = self.client.store_payload
        results = []
        for object_id, value in zip(spec.return_ids(), values):
            sv = serialization.serialize(value)
            kind, payload = store(sv)
            results.append((object_id, kind, payload, sv.contained))
        return results

    def _task_error(self, spec, exc):
        if isinstance(exc, exceptions.RayTaskError):
            # An error from a task this one waited on: pass it up unchanged, as Ray does.
            return exc
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return exceptions.RayTaskError(spec.name, tb, exc, proctitle="purerun::" + spec.name,
                                       pid=os.getpid(), ip=self.client.info.get("node_ip"))

    def _retryable(self, spec, exc):
        policy = spec.retry_exceptions
        if not policy or spec.max_retries == 0 or not isinstance(exc, Exception):
            return False
        if policy is True:
            return True
        try:
            classes = serialization.deserialize(policy)
        except Exception:
            return False
        return isinstance(exc, tuple(classes))


class _DependencyFailed(Exception):
    """An argument's task failed: this task fails with that same error."""

    def __init__(self, payload):
        super().__init__()
        self.payload = payload


def _dump_error(error, spec):
    try:
        return serialization.dumps(error)
    except Exception:
        # The exception itself cannot be pickled: keep its type name and text.
        cause = getattr(error, "cause", None)
        text = f"{type(cause or error).__name__}: {cause or error}"
        plain = exceptions.RayTaskError(spec.name, getattr(error, "traceback_str", text),
                                        exceptions.UnserializableException(text)
                                        if hasattr(exceptions, "UnserializableException")
                                        else RuntimeError(text), pid=os.getpid())
        return serialization.dumps(plain)


def _flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
