"""The public API: init, shutdown, remote, get, put, wait and friends, as in Ray 2.x.

Each call checks its arguments and delegates: to the client of this process, or, to start
or reach a node, to ``purerun.core.launcher``. Runtime state lives in
``purerun.core.context``; nothing here keeps any.
"""

import atexit
import inspect
import json
import logging
import operator
import os
from collections.abc import Mapping

from purerun import options as _options
from purerun.actor import ActorHandle, make_actor_class
from purerun.core import context, job_setup, launcher, protocol
from purerun.core.client import Client
from purerun.object_ref import ObjectRef, ObjectRefGenerator
from purerun.remote_function import RemoteFunction
from purerun.runtime_context import RuntimeContext

logger = logging.getLogger("purerun")

# init() keyword arguments Ray accepts (hidden, underscored or deprecated) that purerun takes
# and ignores: they tune parts of Ray that purerun does not have.
_IGNORED_INIT_KWARGS = frozenset({
    "_system_config", "_temp_dir", "_plasma_directory", "object_spilling_directory",
    "_node_ip_address", "_memory", "_redis_username", "_redis_password",
    "_metrics_export_port", "_tracing_startup_hook", "_node_name",
    "_enable_object_reconstruction", "_driver_object_store_memory", "_cgroup_path",
    "_skip_env_hook", "cgroup_path", "proxy_server_url", "_redis_max_memory",
    "_include_java", "_java_worker_options", "_lru_evict", "_load_code_from_local",
})

_atexit_registered = False


class RuntimeContextInfo(Mapping):
    """What init() returns: the session's addresses (a read-only mapping), usable in ``with``.

    Exiting the ``with`` block calls shutdown(). The information is read from the node when
    first looked at, so init() itself does not wait for the node to come up.
    """

    def __init__(self, client):
        self._client = client
        self._info = None

    def _load(self):
        if self._info is None:
            self._info = _session_info(self._client)
        return self._info

    def __getitem__(self, key):
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self):
        return len(self._load())

    def __repr__(self):
        return f"RuntimeContextInfo({self._load()!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()

    @property
    def address_info(self):
        return dict(self._load())

    @property
    def dashboard_url(self):
        """The status page's address, "host:port" (as Ray's), or None if there is none."""
        return self._load()["webui_url"]

    def disconnect(self):
        shutdown()


def init(address=None, *, num_cpus=None, num_gpus=None, resources=None, labels=None,
         object_store_memory=None, local_mode=False, ignore_reinit_error=False,
         include_dashboard=None, dashboard_host="127.0.0.1", dashboard_port=None,
         job_config=None, configure_logging=True, logging_level=logging.INFO,
         logging_format=None, logging_config=None, log_to_driver=None, namespace=None,
         runtime_env=None, storage=None, enable_resource_isolation=False,
         system_reserved_cpu=None, system_reserved_memory=None, **kwargs):
    """Start purerun on this machine, or connect to a running cluster or node.

    Args:
        address: Where to connect:

            - None: the address in ``PURERUN_ADDRESS``, else in ``RAY_ADDRESS``; if neither
              is set, start a new node on this host, which lives as long as this driver.
            - "local": start a new node, whatever the environment says.
            - "auto": the address in those variables, else the head that
              ``purerun start --head`` left running on this host, else the node that
              ``purerun start`` left running; ConnectionError if there is none.
            - "host:port" (``"[::1]:6380"`` for IPv6): the head of a cluster. This driver
              attaches to a node on this host that ``purerun start --address`` (or
              ``--head``) joined to that head, or, if there is none, starts a node joined
              to it that lives as long as this driver (with this machine's resources). The
              cluster token must be this process's too (see ``purerun.core.auth``).
            - the path of a running node's socket (or its session directory): that node.

            Tasks, actors and objects then spread over every node of the cluster.
        num_cpus: CPUs the node offers to tasks (default: this machine's count).
        num_gpus: GPUs the node offers (default: the GPUs found on this machine).
        resources: custom resources, e.g. ``{"accelerator": 2}``.
        object_store_memory: bytes of shared memory for large objects (default: 30% of RAM,
            capped by free space in /dev/shm).
        local_mode: run every task serially in this process, for debugging.
        ignore_reinit_error: return quietly if purerun is already running.
        log_to_driver: show the output of workers here, prefixed with their pid (default True).
        namespace: the namespace for named actors made by this job (default: the
            job_config's ``ray_namespace``).
        runtime_env: the job's runtime_env, a dict or a ``purerun.runtime_env.RuntimeEnv``
            (it replaces the job_config's): its ``env_vars`` are set for every task and
            actor of the job, and its ``worker_process_setup_hook`` (a function or a
            "module.function" name) runs once in each worker process before its first task
            of the job; a hook that raises fails those tasks (RuntimeEnvSetupError) and
            actors (RayActorError).
        job_config: a ``purerun.job_config.JobConfig``: its ``code_search_path`` is added
            to the ``sys.path`` of the job's workers, its ``runtime_env`` and
            ``ray_namespace`` are the job's unless given here, and
            ``default_actor_lifetime="detached"`` makes the job's actors detached unless
            they choose a lifetime.
        include_dashboard: serve the status page from the node this call starts (off by
            default; None turns it on when ``dashboard_port`` is given). Its address is
            the returned context's ``dashboard_url``; it asks for the cluster token (see
            ``purerun.core.auth``; made in ``~/.purerun/auth_token`` if there is none).
            Ignored when connecting to a running cluster: its head serves the page.
        dashboard_host: the interface the status page listens on (default 127.0.0.1;
            "0.0.0.0" for every one).
        dashboard_port: its TCP port (default 8265, or the next free one; 0 for any free
            one).
        The logging, storage and resource-isolation arguments are accepted for
        compatibility with Ray and ignored.

    Returns:
        A dict of session information (with ``webui_url``, also ``dashboard_url``: the
        status page's "host:port", None without one), usable as a context manager that
        calls shutdown().

    Raises:
        RuntimeError: purerun is already running (unless ignore_reinit_error), or an
            unknown keyword argument was given.
        ValueError: an invalid resource specification, or resources given while connecting
            to an existing cluster or node; a ``dashboard_port`` out of range or in use.
        TypeError: ``resources`` is not a dict of str to numbers, ``job_config`` is not a
            JobConfig, a runtime_env field has the wrong type, or a dashboard argument
            has the wrong type.
        RuntimeEnvSetupError: the setup hook cannot be pickled ("Failed to export the
            setup function.").
        ConnectionError: address="auto" but no running node was found; nothing listens at
            the address given; the head is unreachable, refuses this process's cluster
            token, or there is no token (the message names the address and the reason).

    ``shutdown()`` of a driver that attached to a node it did not start only disconnects:
    the node and the cluster keep running.
    """
    unknown = sorted(set(kwargs) - _IGNORED_INIT_KWARGS)
    if unknown:
        raise RuntimeError(f"Unknown keyword argument(s): {', '.join(unknown)}")
    with context.lifecycle_lock:
        if context.client is not None:
            if ignore_reinit_error:
                logger.info("Calling purerun.init() again after it has already been called.")
                return RuntimeContextInfo(context.client)
            raise RuntimeError("Maybe you called purerun.init twice by accident? This error "
                               "can be suppressed by passing in 'ignore_reinit_error=True' or "
                               "by calling 'purerun.shutdown()' prior to 'purerun.init()'.")
        # Everything about the job is checked before anything is started.
        runtime_env, namespace, job_env_vars = _job_settings(job_config, runtime_env,
                                                             namespace)
        log_to_driver = True if log_to_driver is None else bool(log_to_driver)
        dashboard = _dashboard_settings(include_dashboard, dashboard_host, dashboard_port)
        address = launcher.resolve_address(address)
        node_resources = launcher.node_resources(num_cpus, num_gpus, resources)
        if local_mode:
            from purerun.core.local_mode import LocalClient
            client = LocalClient(node_resources, namespace=namespace)
        elif address is None:
            sock, node = launcher.start_owned_node(node_resources, object_store_memory,
                                                   labels=_options.check_labels(labels),
                                                   dashboard=dashboard)
            client = Client(sock, "driver", log_to_driver=log_to_driver, node=node)
        else:
            if any(v is not None for v in (num_cpus, num_gpus, resources, labels,
                                           object_store_memory)):
                raise ValueError("When connecting to an existing cluster, num_cpus, num_gpus, "
                                 "resources, labels and object_store_memory must not be "
                                 "provided.")
            sock, node = launcher.attach(address, node_resources)
            client = Client(sock, "driver", log_to_driver=log_to_driver, node=node)
            client.wait_welcome()
        client.namespace = namespace
        client.job_env_vars = job_env_vars
        client.job_runtime_env = runtime_env
        client.job_config = job_config
        if not local_mode:
            client.send((protocol.REQUEST, 0, "set_namespace", (namespace,)))
            if job_config is not None and job_config.metadata:
                client.send((protocol.REQUEST, 0, "set_job_metadata",
                             (dict(job_config.metadata),)))
        context.client = client
        _register_atexit()
        return RuntimeContextInfo(client)


def _dashboard_settings(include_dashboard, host, port):
    """Where the node init starts serves the status page ({"host", "port"}), or None."""
    if include_dashboard is not None and not isinstance(include_dashboard, bool):
        raise TypeError(f"include_dashboard must be True, False or None, got "
                        f"{include_dashboard!r}")
    if not (include_dashboard or (include_dashboard is None and port is not None)):
        return None
    from purerun.core import dashboard
    dashboard.check_settings(host, port)
    if port:   # a port asked for must be free: say so here rather than from the node
        problem = dashboard.port_free(host, port)
        if problem:
            raise ValueError(f"Cannot serve the dashboard on {host}:{port}: {problem}. "
                             "Choose another dashboard_port (0 takes any free one).")
    return {"host": host, "port": port}


def _job_settings(job_config, runtime_env, namespace):
    """The job's runtime_env, namespace and env_vars, from init's arguments.

    ``runtime_env`` and ``namespace`` given to init take precedence over the JobConfig's,
    as in Ray. The env_vars carry the JobConfig's code search path and default actor
    lifetime and the runtime_env's setup hook to every task (see core.job_setup).
    """
    from purerun.job_config import JobConfig
    if job_config is not None:
        if not isinstance(job_config, JobConfig):
            raise TypeError(f"job_config must be a purerun.job_config.JobConfig, got "
                            f"{type(job_config).__name__}")
        if runtime_env is not None:
            job_config.set_runtime_env(runtime_env)
        runtime_env = job_config.runtime_env
        if namespace is None:
            namespace = job_config.ray_namespace
        if not all(isinstance(k, str) and isinstance(v, str)
                   for k, v in job_config.metadata.items()):
            raise TypeError(f"job_config.metadata must map str to str, got "
                            f"{job_config.metadata!r}")
    _options.check_runtime_env(runtime_env)
    env_vars = dict(_options.env_vars_of(runtime_env) or {})
    if job_config is not None:
        if job_config.code_search_path:
            env_vars[job_setup.CODE_SEARCH_PATH_ENV] = os.pathsep.join(
                os.path.abspath(p) for p in job_config.code_search_path)
        if job_config.default_actor_lifetime == "detached":
            env_vars[job_setup.DEFAULT_ACTOR_LIFETIME_ENV] = "detached"
    return runtime_env, namespace, env_vars or None


# f.remote(), put(), get(), ... before any init() start the default runtime, as in Ray.
context.set_starter(init)


def _session_info(client):
    info = client.wait_welcome() if hasattr(client, "wait_welcome") else client.info
    return {"node_id": info.get("node_id", b"").hex() if info else None,
            "session_dir": info.get("session_dir"), "address": info.get("address"),
            "node_ip_address": info.get("node_ip", "127.0.0.1"),
            "webui_url": info.get("dashboard_url") if info else None}


def _register_atexit():
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(shutdown, _exiting_interpreter=True)
        _atexit_registered = True


def _require_client(what):
    client = context.client
    if client is None:
        raise RuntimeError(f"purerun has not been started yet; call purerun.init() before "
                           f"{what}().")
    return client


def shutdown(_exiting_interpreter=False):
    """Disconnect and stop the node this process started (and all its workers).

    Safe to call more than once; also called at interpreter exit.
    """
    with context.lifecycle_lock:
        client = context.client
        context.client = None
    if client is not None:
        client.close()


def is_initialized():
    """True if purerun.init() has been called (or a task auto-started it) in this process."""
    return context.client is not None


def remote(*args, **kwargs):
    """Make a function a remote function (or a class an actor class).

    Use as ``@purerun.remote`` or ``@purerun.remote(num_cpus=2, ...)``.

    Args:
        *args: the function or class, when used without parentheses.
        **kwargs: task options for a function, actor options for a class (see
            ``purerun.options.OPTIONS``).

    Returns:
        A RemoteFunction or an ActorClass (or, given options, a decorator making one).

    Raises:
        TypeError: used on something that is not a function or class, or given positional
            arguments.
        ValueError: an unknown option, an invalid value for one, or an ``async def``
            function (a task must return its result, not a coroutine).
    """
    if len(args) == 1 and not kwargs and (inspect.isfunction(args[0]) or inspect.isclass(args[0])
                                          or callable(args[0])):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("The @purerun.remote decorator must be applied either with no "
                        "arguments and no parentheses, for example '@purerun.remote', or it "
                        "must be applied using some of the arguments in the list ['num_returns',"
                        " 'num_cpus', 'num_gpus', 'memory', 'resources', 'max_calls', "
                        "'max_retries', 'retry_exceptions', 'max_restarts', "
                        "'max_task_retries', ...], for example "
                        "'@purerun.remote(num_returns=2, resources={\"CustomResource\": 1})'.")

    def decorator(target):
        return _make_remote(target, kwargs)
    return decorator


def _make_remote(target, task_options):
    if inspect.isclass(target):
        checked = _options.validate_options("actor", task_options)
        return make_actor_class(target, checked)
    if not callable(target):
        raise TypeError("The @purerun.remote decorator must be applied to a function or to "
                        f"a class, not to {type(target).__name__}.")
    checked = _options.validate_options("task", task_options)
    return RemoteFunction(target, checked)


def method(*args, **kwargs):
    """Set the options of an actor method: ``@purerun.method(num_returns=2)``.

    Args:
        **kwargs: ``num_returns``, ``max_task_retries`` (default: the actor's),
            ``retry_exceptions``, ``concurrency_group``, ``name``, and, accepted for
            compatibility with Ray, ``enable_task_events``, ``tensor_transport`` and
            ``_generator_backpressure_num_objects``.

    Returns:
        A decorator for a method of an actor class.

    Raises:
        ValueError: no keyword arguments or some positional ones, an unknown option, or
            an invalid value for one.
        TypeError: a value of the wrong type.
    """
    if args or not kwargs:
        raise ValueError("The @purerun.method decorator takes keyword arguments only, for "
                         "example '@purerun.method(num_returns=2)'.")
    checked = _options.validate_options("method", kwargs)

    def decorator(fn):
        fn.__purerun_method_options__ = checked
        return fn
    return decorator


def get(object_refs, *, timeout=None):
    """Get the value of an ObjectRef, or of each ObjectRef in a list, waiting if needed.

    Args:
        object_refs: an ObjectRef or a list of them.
        timeout: seconds to wait at most; None waits for ever, 0 returns at once.

    Returns:
        The value, or a list of the values in the same order.

    Raises:
        GetTimeoutError: (a TimeoutError) not ready within timeout.
        RayTaskError: the task failed; the raised error is also an instance of the task's
            own exception type.
        WorkerCrashedError, TaskCancelledError, ObjectLostError, ...: as named.
        ValueError: object_refs is neither an ObjectRef nor a list.
        TypeError: object_refs is a list holding something that is not an ObjectRef.
    """
    client = context.get_or_start()
    if timeout is not None and (isinstance(timeout, bool) or
                                not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"'timeout' must be a non-negative number or None, got {timeout!r}")
    if isinstance(object_refs, ObjectRef):
        return client.get_one(object_refs, timeout)
    if not isinstance(object_refs, list):
        hint = (" Get the refs an ObjectRefGenerator yields one by one: "
                "'for ref in gen: purerun.get(ref)'."
                if isinstance(object_refs, ObjectRefGenerator) else "")
        raise ValueError(f"Invalid type of object refs, {type(object_refs)}, is given. "
                         "'object_refs' must either be an ObjectRef or a list of ObjectRefs."
                         + hint)
    for ref in object_refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"Attempting to call `get` on the value {ref!r}, which is not "
                            "an ObjectRef.")
    if not object_refs:
        return []
    return client.get(object_refs, timeout)


def put(value, *, _owner=None):
    """Store a value in the object store.

    The value is serialized now: changing it afterwards does not change the stored copy.

    Args:
        value: any value cloudpickle can serialize, except an ObjectRef. ObjectRefs inside
            it stay references, and keep their objects alive as long as this one lives.
        _owner: accepted for compatibility with Ray and ignored: the caller owns it.

    Returns:
        An ObjectRef to it.

    Raises:
        ObjectStoreFullError: the value does not fit even after spilling.
        TypeError: the value cannot be serialized, or is itself an ObjectRef.
    """
    return context.get_or_start().put(value)


def wait(ray_waitables, *, num_returns=1, timeout=None, fetch_local=True):
    """Wait until ``num_returns`` of the given ObjectRefs are ready, or the timeout passes.

    An object whose task failed counts as ready (``get`` raises its error).

    Args:
        ray_waitables: a list of distinct ObjectRefs and ObjectRefGenerators; a generator
            is ready when its next ref is (or it has ended).
        num_returns: how many must be ready (1 to their number).
        timeout: seconds to wait at most; None waits for ever, 0 returns at once.
        fetch_local: accepted for compatibility with Ray. An object counts as ready once
            its value exists on any node; a value held by another node is pulled to this
            one by the get (or the task) that reads it, not by wait.

    Returns:
        (ready, not_ready): two lists of the given ObjectRefs (and generators), each in the
        order given; ``ready`` holds at most ``num_returns`` of them.

    Raises:
        TypeError: not a list of ObjectRefs.
        ValueError: duplicates, num_returns out of range, or a negative timeout.
    """
    if isinstance(ray_waitables, ObjectRef):
        raise TypeError("wait() expected a list of ObjectRef, got a single ObjectRef")
    if not isinstance(ray_waitables, list):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(ray_waitables)}")
    # The not-ready list the last wait() returned, handed back unchanged, was checked then.
    running = context.current()
    remainder = running.wait_remainder(ray_waitables) if running is not None else None
    if remainder is None:
        _check_waitables(ray_waitables)
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"The 'timeout' argument must be a non-negative number or None, "
                         f"got {timeout!r}")
    client = context.get_or_start()
    if not ray_waitables:
        # As in Ray: nothing to wait for is not an error, whatever num_returns says.
        return [], []
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}.")
    if num_returns > len(ray_waitables):
        raise ValueError("num_returns cannot be greater than the number of objects provided"
                         f" to wait(): {num_returns} > {len(ray_waitables)}.")
    return client.wait(ray_waitables, num_returns, timeout, remainder)


_REF_TYPES = frozenset({ObjectRef})
_get_id = operator.attrgetter("_id")


def _check_waitables(waitables):
    """wait()'s checks of a list's items: each an ObjectRef or ObjectRefGenerator, none
    twice. Plain ObjectRefs, the usual case, are checked without a Python call per item."""
    types = set(map(type, waitables))
    if not types <= _REF_TYPES:
        for ref in waitables:
            if not isinstance(ref, (ObjectRef, ObjectRefGenerator)):
                raise TypeError(f"wait() expected a list of ObjectRef, got list containing "
                                f"{type(ref)}")
        unique = len(set(waitables))
    else:
        unique = len(set(map(_get_id, waitables)))
    if unique != len(waitables):
        raise ValueError("Wait requires a list of unique object refs.")


def cancel(ray_waitable, *, force=False, recursive=True):
    """Cancel the task that makes ``ray_waitable``.

    A pending task is dropped; a running one gets KeyboardInterrupt (or, with force=True,
    its worker is killed). get() on it then raises TaskCancelledError (WorkerCrashedError
    when forced). Cancelled tasks are not retried. A task that has finished is left alone.

    Args:
        ray_waitable: an ObjectRef returned by the task (or actor call) to cancel, or the
            ObjectRefGenerator of a streaming call: its next ref then raises
            TaskCancelledError, and iteration stops.
        force: kill the worker running the task instead of interrupting it.
        recursive: also cancel the tasks that this task submitted.

    Raises:
        TypeError: ``ray_waitable`` is not an ObjectRef.
        ValueError: ``force=True`` for an actor call (use ``purerun.kill`` on the actor).
    """
    if isinstance(ray_waitable, ObjectRefGenerator):
        ray_waitable = ray_waitable.completed()
    if not isinstance(ray_waitable, ObjectRef):
        raise TypeError("purerun.cancel() only supported for object refs. "
                        f"For actors, try purerun.kill(). Got: {type(ray_waitable)}.")
    context.get_or_start().cancel(ray_waitable, force, recursive)


def get_gpu_ids():
    """The GPU ids assigned to the current task or actor.

    Returns:
        A list of ints, empty in the driver and in tasks that asked for no GPU.
    """
    client = context.get_or_start()
    return list(getattr(client, "gpu_ids", ()) or ())


def nodes():
    """Describe each node of the cluster.

    Returns:
        A list with one dict per node, with Ray's keys: ``NodeID``, ``Alive``,
        ``NodeManagerAddress``, ``NodeManagerHostname``, ``Resources`` (its total
        resources), ...

    Raises:
        RuntimeError: purerun has not been started (this call does not start it).
    """
    return _require_client("nodes").request("nodes")


def cluster_resources():
    """The total resources of the cluster.

    Returns:
        Resource name -> amount, e.g. ``{"CPU": 8.0, "memory": ...}``.

    Raises:
        RuntimeError: purerun has not been started (this call does not start it).
    """
    return _require_client("cluster_resources").request("cluster_resources")


def available_resources():
    """The resources not in use right now.

    Returns:
        Resource name -> amount; a resource with nothing available is left out.

    Raises:
        RuntimeError: purerun has not been started (this call does not start it).
    """
    return _require_client("available_resources").request("available_resources")


def get_runtime_context():
    """Information about the current driver, task or actor.

    Returns:
        A RuntimeContext: ids (job, node, task, actor, worker), the namespace and the
        resources assigned to the running task or actor.
    """
    return RuntimeContext(context.get_or_start())


def timeline(filename=None):
    """The tasks and actor calls run so far, as Chrome trace events.

    Args:
        filename: if given, write the events there as JSON (open it in chrome://tracing or
            Perfetto) and return None.

    Returns:
        A list of events (dicts with name, ts and dur in microseconds, pid, tid, args).
    """
    events = _require_client("timeline").request("timeline")
    if filename is not None:
        with open(filename, "w") as f:
            json.dump(events, f)
        return None
    return events


def kill(actor, *, no_restart=True):
    """Kill an actor at once: calls in flight fail, atexit handlers do not run.

    Args:
        actor: the ActorHandle.
        no_restart: if False, the actor is restarted when it has restarts left.

    Raises:
        ValueError: ``actor`` is not an ActorHandle.
    """
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"purerun.kill() only supported for actors. For tasks, try "
                         f"purerun.cancel(). Got: {type(actor)}.")
    context.get_or_start().kill_actor(actor, no_restart)


def get_actor(name, namespace=None):
    """The handle of the live actor named ``name``.

    Args:
        name: the name the actor was given with ``.options(name=...)``.
        namespace: the namespace it was named in (default: this job's).

    Returns:
        A new ActorHandle to it.

    Raises:
        ValueError: no such actor, or an empty name.
        TypeError: ``namespace`` is not a string.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("Please supply a non-empty value to get_actor")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be None or a string, got {type(namespace).__name__}")
    actor_id, meta, actor_ref = context.get_or_start().get_actor(name, namespace)
    return ActorHandle(actor_id, meta, actor_ref)
