"""A multi-node cluster on one host, for tests: ``purerun.cluster_utils.Cluster``, as Ray's.

::

    Cluster()
      ├─ head:  python -m purerun.head --port 0      (the control store, over TCP)
      ├─ add_node(num_cpus=2)  ─▶ node process ─┐
      ├─ add_node(resources=…) ─▶ node process ─┼─ each joined to the head, with its own
      │                                         │  arena and workers
      └─ connect() ─▶ purerun.init(...)  attaches this process to the first node

Every node is a real node process, joined through a real head over loopback TCP with a fresh
cluster token, exactly as on separate hosts: multi-node programs (placement, objects that
cross nodes, a node that dies) are testable anywhere. ``remove_node`` stops one (gracefully,
or with SIGKILL as a crash would); ``shutdown`` stops everything it started.
"""

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from purerun.core import auth, launcher

__all__ = ["Cluster", "ClusterNode"]

# How long a node or the head gets to come up: a node starts in ~0.1 s, so this only bounds
# a broken start on a loaded CI machine.
START_TIMEOUT_S = 30.0
# How long a removed node gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.01


class ClusterNode:
    """One node of a ``Cluster``.

    Attributes:
        node_id: its id, in hex (as ``nodes()`` and ``get_runtime_context().get_node_id()``).
        address: its socket on this host (``purerun.init(address=...)`` attaches to it).
        process: its ``subprocess.Popen``.
    """

    def __init__(self, process):
        self._process = process
        self.node_id = process.node_id
        self.address = process.address
        self.process = process.process

    @property
    def unique_id(self):
        return self.node_id

    def __repr__(self):
        return f"ClusterNode({self.node_id[:12]}, pid {self.process.pid})"


class Cluster:
    """Several nodes on this host joined through one head, as Ray's test ``Cluster``.

    Args:
        initialize_head: add the first node (the "head node") at once.
        connect: with ``initialize_head``, also ``connect()`` this process to it.
        head_node_args: keyword arguments of ``add_node`` for the head node.
        shutdown_at_exit: stop everything when this interpreter exits.
    """

    def __init__(self, initialize_head=False, connect=False, head_node_args=None,
                 shutdown_at_exit=True):
        if connect and not initialize_head:
            raise ValueError("connect=True needs initialize_head=True: there is no node to "
                             "connect to yet.")
        self.head_node = None
        self.worker_nodes = []
        self.connected = False
        self._token = secrets.token_hex(32)
        self._env = dict(os.environ, PURERUN_AUTH_TOKEN=self._token)
        for name in (auth.TOKEN_PATH_ENV, auth.RAY_TOKEN_ENV, auth.RAY_TOKEN_PATH_ENV):
            self._env.pop(name, None)
        self._head_dir = tempfile.mkdtemp(prefix="head_", dir=launcher.temp_root())
        self._head = self._start_head()
        self._control = None
        if shutdown_at_exit:
            atexit.register(self.shutdown)
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()

    # -- the head ---------------------------------------------------------------------------------

    def _start_head(self):
        address_file = os.path.join(self._head_dir, "address")
        with open(os.path.join(self._head_dir, "head.err"), "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "purerun.head", "--host", "127.0.0.1", "--port", "0",
                 "--address-file", address_file],
                env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True,
                preexec_fn=launcher.terminate_with_parent)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not os.path.exists(address_file):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise launcher.NodeStartError(f"The head did not start: {self._head_errors()}")
            time.sleep(POLL_INTERVAL_S)
        with open(address_file) as f:
            self.address = f.read().strip()
        return process

    def _head_errors(self):
        try:
            with open(os.path.join(self._head_dir, "head.err"), "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def control(self):
        """A connection to the head's control store (``nodes()``, ``kv_get()``, ...)."""
        if self._control is None or self._control.closed:
            from purerun.core.remote_control import RemoteControlStore
            self._control = RemoteControlStore.connect(self.address, self._token.encode())
        return self._control

    # -- nodes ------------------------------------------------------------------------------------

    def add_node(self, wait=True, **node_args):
        """Start a node joined to this cluster.

        Args:
            wait: return only once it listens.
            node_args: ``num_cpus``, ``num_gpus``, ``resources``, ``object_store_memory``,
                ``labels``, as for ``purerun start``.

        Returns:
            Its ``ClusterNode``.

        Raises:
            TypeError: an argument that is not one of those.
            NodeStartError: it did not come up.
        """
        unknown = set(node_args) - {"num_cpus", "num_gpus", "resources", "object_store_memory",
                                    "labels"}
        if unknown:
            raise TypeError(f"add_node() got unexpected arguments: {', '.join(sorted(unknown))}")
        resources = launcher.node_resources(node_args.get("num_cpus"),
                                            node_args.get("num_gpus"),
                                            node_args.get("resources"))
        process = launcher.spawn_node(resources, node_args.get("object_store_memory"),
                                      head=self.address, node_host="127.0.0.1",
                                      labels=node_args.get("labels"), env=self._env,
                                      die_with_parent=True)
        if wait:
            process.wait_listening(START_TIMEOUT_S)
        node = ClusterNode(process)
        if self.head_node is None:
            self.head_node = node
        else:
            self.worker_nodes.append(node)
        return node

    def remove_node(self, node, allow_graceful=True):
        """Stop a node: SIGTERM and wait (``allow_graceful``), else SIGKILL, as a crash.

        The head sees the node's connection close and declares it dead at once.
        """
        process = node._process
        _stop(process.process, allow_graceful)
        shutil.rmtree(process.session_dir, ignore_errors=True)
        if node is self.head_node:
            self.head_node = None
        elif node in self.worker_nodes:
            self.worker_nodes.remove(node)

    def list_all_nodes(self):
        """The nodes still running, the head node first."""
        return ([self.head_node] if self.head_node is not None else []) + self.worker_nodes

    def wait_for_nodes(self, timeout=30):
        """Wait until the head lists every node of this cluster as alive (and no other).

        Raises:
            TimeoutError: they are not all there within ``timeout`` seconds.
        """
        wanted = {node.node_id for node in self.list_all_nodes()}
        deadline = time.monotonic() + timeout
        while True:
            alive = {record["node_id"].hex() for record in self.control.node_table()
                     if record["alive"]}
            if alive == wanted:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Timed out after {timeout} s waiting for {len(wanted)} "
                                   f"nodes; the head lists {len(alive)} alive.")
            time.sleep(POLL_INTERVAL_S)

    # -- this process -----------------------------------------------------------------------------

    def connect(self, namespace=None):
        """Attach this process to the head node (``purerun.init``)."""
        import purerun
        if self.head_node is None:
            raise RuntimeError("The cluster has no head node to connect to: add_node() first.")
        info = purerun.init(address=self.head_node.address, namespace=namespace)
        self.connected = True
        return info

    def shutdown(self):
        """Disconnect this process (if ``connect`` attached it) and stop every node and the
        head. Safe to call more than once."""
        if self.connected:
            import purerun
            purerun.shutdown()
            self.connected = False
        for node in reversed(self.list_all_nodes()):
            self.remove_node(node, allow_graceful=False)
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._head is not None:
            _stop(self._head, graceful=True)
            self._head = None
        shutil.rmtree(self._head_dir, ignore_errors=True)
        atexit.unregister(self.shutdown)


def _stop(process, graceful):
    """SIGTERM and wait (SIGKILL after ``STOP_TIMEOUT_S``), or SIGKILL at once; then reap."""
    if graceful:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait()
