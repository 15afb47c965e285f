"""A worker process: runs tasks the node sends it, one at a time.

The node forks workers from its own single-threaded process (a fork server: a worker is
ready in a few milliseconds instead of the ~100 ms a fresh interpreter takes here), so a
worker starts with the node's modules imported, in the driver's working directory with the
driver's ``sys.path``. ``run_worker`` is the whole life of the child after the fork.

The reader thread of the worker's Client receives EXECUTE messages and hands them to the
main thread through a queue; the main thread runs the task, stores its results (large ones
straight into the arena) and reports TASK_DONE.
"""

import asyncio
import atexit
import concurrent.futures
import inspect
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
import traceback

from purerun import exceptions
from purerun.core import context, ids, protocol, serialization
from purerun.core.client import Client
from purerun.core.protocol import ARENA, ERROR
from purerun.exceptions import _ActorExit
from purerun.core.task_spec import (ACTOR_CREATION, ACTOR_METHOD, Dep, apply_env_vars,
                                    restore_env, retryable, split_returns)

_PR_SET_PDEATHSIG = 1


def run_worker(sock: socket.socket, arena_fd: int, info: dict, stdout_fd: int,
               stderr_fd: int, keep_fds) -> None:
    """Entry point of a freshly forked worker; never returns."""
    code = 1
    try:
        _become_worker(stdout_fd, stderr_fd, keep_fds)
        tasks = queue.SimpleQueue()
        client = Client(sock, "worker", info=info, arena_fd=arena_fd, on_execute=tasks.put,
                        inline=True)
        context.client = client
        worker = Worker(client, tasks)
        profile_dir = os.environ.get("PURERUN_WORKER_PROFILE")
        if profile_dir:  # for tuning: one cProfile dump per worker, in this directory
            import cProfile
            tasks_done = cProfile.Profile()
            tasks_done.runcall(worker.run)
            tasks_done.dump_stats(os.path.join(profile_dir, f"worker-{os.getpid()}.prof"))
        else:
            worker.run()
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
        client = context.client
        if client is not None and client.pumping:
            client.interrupt_pending = True  # raised once the message in hand is handled
        else:
            raise KeyboardInterrupt


class Worker:
    def __init__(self, client: Client, tasks: queue.SimpleQueue):
        self.client = client
        self.functions = {}          # function key -> callable
        self.calls = {}              # function key -> number of calls run (for max_calls)
        self.tasks = tasks
        self.actor = None            # the instance, in a worker that hosts an actor
        self.loop = None             # asyncio actors: the event loop (on its own thread)
        self.semaphores = None       # ... bounding coroutines in flight, per concurrency group
        self.pools = None            # threaded actors: a thread pool per concurrency group
        self.method_groups = {}      # method name -> its concurrency group
        self.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpu_ids_set = None      # what CUDA_VISIBLE_DEVICES was last set for

    def run(self):
        if self.client.inline and self.client.serve(self.execute):
            return
        # A reader thread now receives the tasks (threaded or asyncio actor, or a task that
        # needed background reading): take them from the queue it fills.
        get = self.tasks.get
        while True:
            msg = get()
            if msg is None:
                return
            if self.execute(msg):
                return

    def execute(self, msg) -> bool:
        """Run one task, or hand an actor call to the actor's threads or event loop.

        Returns True if this worker must exit afterwards (max_calls, or the actor ended).
        """
        _, spec, dep_payloads, pickled_fn, gpu_ids = msg
        if spec.kind == ACTOR_METHOD:
            if self.loop is not None:
                asyncio.run_coroutine_threadsafe(self._run_async(spec, dep_payloads), self.loop)
                return False
            if self.pools is not None:
                pool = self.pools.get(self._group_of(spec)) or self.pools[None]
                pool.submit(self._run_in_thread, spec, dep_payloads)
                return False
        return self._run_and_report(spec, dep_payloads, pickled_fn, gpu_ids)

    def _group_of(self, spec):
        """The concurrency group of an actor call: the call's option, else the method's."""
        if spec.concurrency_group:
            return spec.concurrency_group
        return self.method_groups.get(spec.method)

    def _run_in_thread(self, spec, dep_payloads):
        if self._run_and_report(spec, dep_payloads, None, ()):
            self.tasks.put(None)  # wake the main thread so the process can exit

    def _run_and_report(self, spec, dep_payloads, pickled_fn, gpu_ids):
        global _running
        client = self.client
        client.current_task = spec
        if spec.kind != ACTOR_METHOD:
            client.gpu_ids = gpu_ids
            self._set_gpus(gpu_ids)
        main_thread = threading.current_thread() is threading.main_thread()
        started = time.time()
        result = None
        if spec.kind == ACTOR_CREATION:
            self._set_actor_identity(spec)
        env_vars = spec.env_vars
        saved_env = apply_env_vars(env_vars) if env_vars and spec.kind != ACTOR_CREATION else None
        if env_vars and spec.kind == ACTOR_CREATION:
            os.environ.update(env_vars)  # for the actor's whole life
        try:
            _running = main_thread
            try:
                fn = self._callable(spec, pickled_fn)
                args, kwargs = self._arguments(spec, dep_payloads)
                result = fn(*args, **kwargs)
                # Drop our references to the arguments now, so zero-copy views of them die
                # and their pins go back to the node ahead of TASK_DONE.
                del args, kwargs
                if spec.kind == ACTOR_CREATION:
                    self._become_actor(spec, result)
                    result = None
            finally:
                _running = False
            # ``result`` stays alive until TASK_DONE is sent: refs inside it must not be
            # dropped before the node has recorded that the stored result holds them.
            outcome = (self._store_results(spec, result), False,
                       spec.method == "__ray_terminate__")
        except BaseException as exc:  # the user's error is the task's result
            outcome = self._failure(spec, exc)
        finally:
            client.current_task = None
            if saved_env is not None:
                restore_env(saved_env)
            _flush_output()
        return self._report(spec, *outcome, started)

    async def _run_async(self, spec, dep_payloads):
        semaphore = self.semaphores.get(self._group_of(spec)) or self.semaphores[None]
        async with semaphore:
            started = time.time()
            self.client.current_task = spec
            try:
                fn = self._callable(spec, None)
                args, kwargs = self._arguments(spec, dep_payloads)
                result = fn(*args, **kwargs)
                del args, kwargs
                if inspect.isawaitable(result):
                    result = await result
                outcome = (self._store_results(spec, result), False,
                           spec.method == "__ray_terminate__")
            except BaseException as exc:
                outcome = self._failure(spec, exc)
            finally:
                _flush_output()
            if self._report(spec, *outcome, started):
                self.tasks.put(None)

    def _report(self, spec, results, retry, exiting, started):
        if spec.max_calls and not exiting:
            count = self.calls.get(spec.function_key, 0) + 1
            self.calls[spec.function_key] = count
            exiting = count >= spec.max_calls
        if exiting and self.actor is not None:
            _graceful_exit_hooks()
        self.client.send((protocol.TASK_DONE, spec.task_id, results, retry, exiting,
                          (started, time.time())))
        return exiting

    def _failure(self, spec, exc):
        """(results, retry, exiting) for a task that raised ``exc``."""
        if isinstance(exc, _DependencyFailed):
            return [(oid, ERROR, exc.payload, ()) for oid in spec.return_ids()], False, False
        if isinstance(exc, (_ActorExit, exceptions.AsyncioActorExit)) and self.actor is not None:
            return self._store_results(spec, None), False, True
        retry = False
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            error = exceptions.TaskCancelledError(spec.task_id.hex())
        else:
            error = self._task_error(spec, exc)
            retry = retryable(spec, exc)
        payload = _dump_error(error, spec)
        return [(oid, ERROR, payload, ()) for oid in spec.return_ids()], retry, False

    def _callable(self, spec, pickled_fn):
        if spec.kind == ACTOR_METHOD:
            if spec.method == "__ray_terminate__":
                return _no_op
            return getattr(self.actor, spec.method)
        return self._function(spec.function_key, pickled_fn)

    def _set_actor_identity(self, spec):
        # Set before __init__ runs, so it can use get_runtime_context() and exit_actor().
        client = self.client
        client.actor_id = spec.actor_id
        actor = spec.actor
        client.actor_name = actor.name
        client.actor_is_async = actor.is_async
        client.actor_resources = dict(actor.hold or {})
        client.actor_meta = actor.meta
        client.actor_env_vars = spec.env_vars

    def _become_actor(self, spec, instance):
        actor = spec.actor
        self.actor = instance
        # Concurrency groups: each has its own limit; calls outside any group share the
        # default one (key None), max_concurrency.
        limits = dict(actor.concurrency_groups)
        limits[None] = actor.max_concurrency
        meta = actor.meta
        if meta is not None:
            self.method_groups = {name: opts["concurrency_group"]
                                  for name, opts in meta.methods.items()
                                  if opts.get("concurrency_group")}
        if actor.is_async:
            self.loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run_loop():
                asyncio.set_event_loop(self.loop)
                self.semaphores = {group: asyncio.Semaphore(limit)
                                   for group, limit in limits.items()}
                ready.set()
                self.loop.run_forever()
            threading.Thread(target=run_loop, name="purerun-actor-loop", daemon=True).start()
            ready.wait()
        elif len(limits) > 1 or limits[None] > 1:
            self.pools = {group: concurrent.futures.ThreadPoolExecutor(
                limit, thread_name_prefix=f"purerun-actor-{group or 'default'}")
                for group, limit in limits.items()}
        if self.loop is not None or self.pools is not None:
            # Calls now run on other threads while this one reads: a reader thread it is.
            self.client.start_reader()

    def _set_gpus(self, gpu_ids):
        if gpu_ids == self.gpu_ids_set:
            return  # the environment already says so: skip the os.environ writes
        self.gpu_ids_set = gpu_ids
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
        for kind, payload in dep_payloads:
            if kind == ERROR:
                # Return the pins the node gave us with the locations we will not read.
                for object_id, (other, _) in zip(spec.deps, dep_payloads):
                    if other == ARENA:
                        client._unpin(object_id)
                raise _DependencyFailed(payload)
        values = [client._value_of(object_id, entry)
                  for object_id, entry in zip(spec.deps, dep_payloads)]
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
        values = split_returns(spec, result)
        store = self.client.store_payload
        results = []
        for object_id, value in zip(spec.return_ids(), values):
            sv = serialization.serialize(value)
            kind, payload = store(sv)
            results.append((object_id, kind, payload, sv.contained))
        return results

    def _task_error(self, spec, exc):
        actor_id = spec.actor_id.hex() if spec.actor_id is not None else None
        return exceptions.RayTaskError.from_exception(
            exc, spec.name, proctitle="purerun::" + spec.name, pid=os.getpid(),
            ip=self.client.info.get("node_ip"), actor_id=actor_id,
            actor_repr=repr(self.actor) if self.actor is not None else None)



def _no_op():
    return None



def _graceful_exit_hooks():
    """An actor ending on purpose (exit_actor, __ray_terminate__) runs its atexit handlers."""
    try:
        atexit._run_exitfuncs()
    except Exception:
        pass


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
