"""Starting, finding and reaching node processes: what ``purerun.init`` and the ``purerun``
command do once their arguments are checked.

::

    purerun.init()                   purerun start                 purerun.init(address="auto")
    ──────────────                   ─────────────                 ────────────────────────────
    start_owned_node()               start_standalone()            resolve_address("auto"):
      socketpair                       spawn_node()  ─▶ node           $PURERUN_ADDRESS,
      spawn_node(fd)  ─▶ node          wait for its socket              $RAY_ADDRESS, or the
      the node lives as long as        record it ─▶ current_node.json   recorded node
      the driver's end of the pair                                   connect(address) ─▶ node
      Client.close ─▶ NodeProcess.reap
                                     purerun stop: stop_recorded() SIGTERMs the recorded node

Every node gets a fresh session directory under ``temp_root()``, listens on
``SOCKET_NAME`` in it, and removes it when it exits. A node that dies before it can (killed,
crashed) leaves it behind; whoever started the node removes it then: the driver that owns
it (``NodeProcess.reap``), ``purerun start`` when its node never came up, ``purerun stop``
when it had to kill the node.

A node started by ``purerun start`` outlives that command; it is recorded in
``CURRENT_NODE_FILE`` (its address, pid and session directory), where ``address="auto"``
and ``purerun stop`` find it.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from purerun.core.ids import random_id

# The socket a node listens on, in its session directory (core/node.py binds it).
SOCKET_NAME = "node.sock"
# A standalone node's stderr, in its session directory.
NODE_ERRORS_FILE = "node.err"
# Where `purerun start` records its node, in temp_root().
CURRENT_NODE_FILE = "current_node.json"
# Where an address to connect to may be given, first one set wins. RAY_ADDRESS too, so that
# a program written for Ray finds a running purerun node the way it would find a Ray one.
ADDRESS_ENV_VARS = ("PURERUN_ADDRESS", "RAY_ADDRESS")
# How often the waits below look again: short next to a node's start-up (~100 ms).
POLL_INTERVAL_S = 0.01

# The node runs site, like the driver, so that import hooks installed by .pth files (editable
# installs of purerun or of the user's own packages) work in it and in the workers it forks;
# then it takes the driver's sys.path, so both import the same modules.
_NODE_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
              "from purerun.core.node import main; main(sys.argv[2], sys.argv[3])")


class NodeStartError(RuntimeError):
    """A node process exited, or did not listen in time, at start-up."""


# -- where sessions live, what a node offers -------------------------------------------------------

def temp_root():
    """The directory that holds every session directory (and the recorded node), made if
    missing.

    Returns:
        ``<tempdir>/purerun-sessions``; ``TMPDIR`` moves it.
    """
    # Not "purerun": a script run from the temp dir would import that folder as the package.
    root = os.path.join(tempfile.gettempdir(), "purerun-sessions")
    os.makedirs(root, exist_ok=True)
    return root


def detect_gpus():
    """The number of GPUs this process may use.

    Returns:
        The devices listed in ``CUDA_VISIBLE_DEVICES`` if it is set, else the NVIDIA GPUs
        the driver shows in /proc, else 0.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def node_resources(num_cpus, num_gpus, resources):
    """The resources a new node offers: what was asked for, else what this machine has.

    Args:
        num_cpus: CPUs (default: this machine's count).
        num_gpus: GPUs (default: ``detect_gpus()``).
        resources: custom resources, e.g. ``{"accelerator": 2}``, or None.

    Returns:
        Resource name -> amount (floats), with "memory": 70% of the memory available now.

    Raises:
        TypeError: ``resources`` is not a dict, or has a name that is not a string.
        ValueError: a negative or non-numeric amount, or "CPU"/"GPU" in ``resources``.
    """
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"resources must be a dict, got {type(resources).__name__}")
        for name, amount in resources.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"Use the num_cpus and num_gpus arguments of init() instead "
                                 f"of resources={{'{name}': ...}}.")
            if not isinstance(name, str):
                raise TypeError(f"Resource names must be strings, got {name!r}")
            _check_amount(f"resources[{name!r}]", amount)
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None:
            _check_amount(name, value)
    cpus = (os.cpu_count() or 1) if num_cpus is None else num_cpus
    gpus = detect_gpus() if num_gpus is None else num_gpus
    import psutil
    total = {"CPU": float(cpus), "memory": float(int(psutil.virtual_memory().available * 0.7))}
    if gpus:
        total["GPU"] = float(gpus)
    for name, amount in (resources or {}).items():
        total[name] = float(amount)
    return total


def _check_amount(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


# -- addresses ---------------------------------------------------------------------------------------

def resolve_address(address):
    """Where ``purerun.init(address=...)`` connects to.

    Args:
        address: None (the address in the environment, if any), "local" (none), "auto"
            (the address in the environment, else the node ``purerun start`` recorded), or
            the path of a node's socket or session directory.

    Returns:
        The address to connect to, or None to start a new node.

    Raises:
        ConnectionError: "auto", and no running node was found.
    """
    if address is None:
        address = _address_from_env()
    elif address == "auto":
        address = _address_from_env() or recorded_address()
        if not address:
            raise ConnectionError("Could not find any running purerun node: start one with "
                                  "'purerun start', or set PURERUN_ADDRESS to its address.")
    if address == "local":
        return None
    return address


def _address_from_env():
    for name in ADDRESS_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return recorded_address() if value == "auto" else value
    return None


def connect(address):
    """A socket connected to the node at ``address`` (its socket, or its session directory).

    Raises:
        ConnectionError: nothing listens there.
    """
    path = address
    if os.path.isdir(path):
        path = os.path.join(path, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ConnectionError(f"Could not connect to a purerun node at {address!r}: {exc}")
    return sock


# -- node processes ----------------------------------------------------------------------------------

class NodeProcess:
    """A node process this process started, and its session directory."""

    def __init__(self, process, session_dir, node_id=None):
        self.process = process        # subprocess.Popen
        self.session_dir = session_dir
        self.node_id = node_id        # hex

    @property
    def pid(self):
        return self.process.pid

    @property
    def address(self):
        """The node's socket (it exists once the node listens)."""
        return os.path.join(self.session_dir, SOCKET_NAME)

    def wait_listening(self, timeout):
        """Wait until the node listens.

        Raises:
            NodeStartError: it exited first, or did not listen within ``timeout`` s (it is
                then killed, and its session directory removed).
        """
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.address):
            if self.process.poll() is not None:
                errors = self.errors()
                self._remove_session_dir()
                raise NodeStartError("The purerun node exited at start-up." + (
                    f" It said:\n{errors}" if errors else ""))
            if time.monotonic() >= deadline:
                self.process.kill()
                self.process.wait()
                self._remove_session_dir()
                raise NodeStartError("The purerun node did not start in time.")
            time.sleep(POLL_INTERVAL_S)

    def errors(self, limit=4000):
        """The end of what a standalone node wrote to stderr ("" if nothing)."""
        try:
            with open(os.path.join(self.session_dir, NODE_ERRORS_FILE), "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def reap(self, timeout):
        """Wait for the node to exit (told to, or its owner's connection closed); kill it if
        it has not within ``timeout`` s. A node that did not exit cleanly did not remove its
        session directory: it is removed here."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code != 0:
            self._remove_session_dir()

    def _remove_session_dir(self):
        shutil.rmtree(self.session_dir, ignore_errors=True)


def spawn_node(resources, object_store_memory, owner_fd=None, head=None, node_host=None,
               labels=None, env=None):
    """Start a node process in a new session directory.

    Args:
        resources: what it offers (see ``node_resources``).
        object_store_memory: bytes of shared memory for large objects, or None (30% of RAM,
            capped by what /dev/shm has free).
        owner_fd: a socket the node serves as its owning driver's connection: the node
            stops when it closes. None: a standalone node, which runs until SIGTERM.
        head: "host:port" of a head to join (the node then needs the cluster token, see
            core/auth.py), or None for a node on its own.
        node_host: the address it listens on for other nodes (default: the one its head
            connection leaves from).
        labels: its labels (str to str).
        env: the node's environment (default: this process's).

    Returns:
        The NodeProcess, at once (the node listens a little later).

    Raises:
        ValueError: object_store_memory is not a positive number of bytes.
    """
    if object_store_memory is None:
        import psutil
        from purerun.core.object_store import default_store_size  # the node's module, heavy
        memory = psutil.virtual_memory()
        object_store_memory = default_store_size(memory.total, memory.available)
    elif (isinstance(object_store_memory, bool) or not isinstance(object_store_memory, int)
          or object_store_memory <= 0):
        raise ValueError("object_store_memory must be a positive number of bytes, got "
                         f"{object_store_memory!r}")
    session_dir = tempfile.mkdtemp(prefix="session_", dir=temp_root())
    config = {"session_dir": session_dir, "node_id": random_id().hex(),
              "resources": resources, "object_store_memory": object_store_memory,
              "gpu_ids": list(range(int(resources.get("GPU", 0)))), "head": head,
              "node_host": node_host, "labels": labels or {}}
    # A standalone node writes its errors to a file in its session directory (shown if it
    # fails to start); it must not hold on to the terminal or pipe of whoever started it.
    err = None
    if owner_fd is None:
        err = open(os.path.join(session_dir, NODE_ERRORS_FILE), "wb")
    process = subprocess.Popen(
        [sys.executable, "-c", _NODE_BOOT, json.dumps(sys.path), json.dumps(config),
         "none" if owner_fd is None else str(owner_fd)],
        pass_fds=[] if owner_fd is None else [owner_fd], cwd=os.getcwd(),
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        # An owned node reports crashes on its driver's stderr.
        stderr=err, close_fds=True, env=env)
    if err is not None:
        err.close()
    return NodeProcess(process, session_dir, config["node_id"])


def start_owned_node(resources, object_store_memory, head=None):
    """Start a node that lives as long as the returned connection to it.

    Args:
        head: "host:port" of a head for it to join, or None.

    Returns:
        (socket, NodeProcess): the driver's end of its connection, and the process.
    """
    driver_sock, node_sock = socket.socketpair()
    try:
        node = spawn_node(resources, object_store_memory, node_sock.fileno(), head=head)
    except BaseException:
        driver_sock.close()
        raise
    finally:
        node_sock.close()
    return driver_sock, node


# -- the standalone node (purerun start / stop) ------------------------------------------------------

def start_standalone(resources, object_store_memory, timeout):
    """Start a node that outlives this process, wait until it listens, and record it.

    Raises:
        NodeStartError: it did not come up (see ``NodeProcess.wait_listening``).
    """
    node = spawn_node(resources, object_store_memory)
    node.wait_listening(timeout)
    with open(_record_path(), "w") as f:
        json.dump({"address": node.address, "pid": node.pid, "session_dir": node.session_dir},
                  f)
    return node


def recorded_address():
    """The address of the node ``purerun start`` recorded, or None."""
    record = _read_record()
    return record.get("address") if record is not None else None


def running_standalone_address():
    """The address of the recorded node if it still listens there, else None."""
    address = recorded_address()
    return address if address and os.path.exists(address) else None


def stop_recorded(timeout):
    """Stop the recorded node (SIGTERM; SIGKILL after ``timeout`` s) and forget it.

    Returns:
        Its pid, or None if no node is recorded.
    """
    record = _read_record()
    if record is None or "pid" not in record:
        return None
    pid = record["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(POLL_INTERVAL_S)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        if record.get("session_dir"):
            shutil.rmtree(record["session_dir"], ignore_errors=True)
    os.unlink(_record_path())
    return pid


def _record_path():
    return os.path.join(temp_root(), CURRENT_NODE_FILE)


def _read_record():
    try:
        with open(_record_path()) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # our own child (this process started it) may linger as a zombie
        done, _ = os.waitpid(pid, os.WNOHANG)
        return not done
    except ChildProcessError:
        import psutil
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
