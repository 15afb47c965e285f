"""Starting, finding and reaching node processes and heads: what ``purerun.init`` and the
``purerun`` command do once their arguments are checked.

::

    purerun.init()                          purerun.init(address=…)
    ──────────────                          ───────────────────────
    start_owned_node()                      resolve_address(): the argument, $PURERUN_ADDRESS,
      socketpair                              $RAY_ADDRESS; for "auto" also the recorded
      spawn_node(fd) ─▶ node                  head, else the recorded node
      the node lives as long as the         attach(address):
      driver's end of the pair                a node's socket ─▶ connect()
      Client.close ─▶ NodeProcess.reap        a head's host:port ─▶ connect() to a recorded
                                                node joined to it, else check_head() and
                                                start_owned_node(head=host:port)

    purerun start --head                    purerun start [--address H:P]
    ────────────────────                    ─────────────────────────────
    start_head(): python -m purerun.head    start_standalone(head=H:P or None)
      ─▶ head; wait for its address file      spawn_node() ─▶ node; wait for its socket
    start_standalone(head=its address)        record it ─▶ records/node-<pid>.json
    each recorded ─▶ records/<kind>-<pid>.json

    purerun stop: stop_recorded(): the recorded nodes, then the heads: SIGTERM, SIGKILL after
    the grace period; then their records and directories go

Every node gets a fresh session directory under ``temp_root()``, listens on
``SOCKET_NAME`` in it, and removes it when it exits. A node that dies before it can (killed,
crashed) leaves it behind; whoever started the node removes it then: the driver that owns
it (``NodeProcess.reap``), ``purerun start`` when its node never came up, ``purerun stop``
when it had to kill the node. A head started here gets a ``head_*`` directory holding its
address file and its stderr; ``purerun stop`` removes it.

**Records.** Every process ``purerun start`` leaves running is recorded in ``RECORDS_DIR``
under ``temp_root()``, one JSON file per process (``ProcessRecord``: its kind, pid, address,
the head it joined, its session directory). That is where ``address="auto"``, an
``address="host:port"`` of a head with a node here, ``purerun status`` and ``purerun stop``
find them. A record whose process is gone (its pid is dead, or now belongs to a process
started later) is stale: whoever reads it removes it.
"""

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from purerun.core import forkserver, memory_monitor
from purerun.core.ids import random_id

# The socket a node listens on, in its session directory (core/node.py binds it).
SOCKET_NAME = "node.sock"
# A standalone node's stderr, in its session directory.
NODE_ERRORS_FILE = "node.err"
# A head started by start_head(): its directory (under temp_root()), and in it the file the
# head writes its address to once it listens, and its stderr.
HEAD_DIR_PREFIX = "head_"
HEAD_ADDRESS_FILE = "address"
HEAD_ERRORS_FILE = "head.err"
# Where a head serving the status page writes its "host:port", in its KV (Ray's key), and
# the page's default port (core/dashboard.py serves it; kept here, which is light to import).
DASHBOARD_URL_KEY = "webui:url"
DASHBOARD_NAMESPACE = "dashboard"
DASHBOARD_PORT = 8265
# Where `purerun start` records the processes it leaves running, in temp_root().
RECORDS_DIR = "records"
HEAD = "head"
NODE = "node"
# Where an address to connect to may be given, first one set wins. RAY_ADDRESS too, so that
# a program written for Ray finds a running purerun cluster the way it would find a Ray one.
ADDRESS_ENV_VARS = ("PURERUN_ADDRESS", "RAY_ADDRESS")
# How often the waits below look again: short next to a node's start-up (~100 ms).
POLL_INTERVAL_S = 0.01
# How long a node started to join a head for a driver gets to come up: the join itself is
# bounded by transport.CONNECT_TIMEOUT (10 s); this only bounds a broken start.
JOIN_TIMEOUT_S = 30.0
# How long a process killed with SIGKILL gets to disappear: the kernel takes microseconds.
KILL_WAIT_S = 5.0
# Two readings of one process's start time may differ by a clock tick or an NTP adjustment
# of the boot time they are computed from; a recycled pid starts seconds later at least.
CREATE_TIME_TOLERANCE_S = 1.0

# The node runs site, like the driver, so that import hooks installed by .pth files (editable
# installs of purerun or of the user's own packages) work in it and in the workers it forks;
# then it takes the driver's sys.path, so both import the same modules.
_NODE_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
              "from purerun.core.node import main; main(sys.argv[2], sys.argv[3])")


class NodeStartError(RuntimeError):
    """A node (or head) process exited, or did not listen in time, at start-up.

    Attributes:
        errors: the end of what it wrote to stderr, "" if nothing (or not known).
        reason: the last error it reported (the exception line of a traceback), else "".
        exit_code: its exit code if it exited, None if it was killed for being too slow.
    """

    def __init__(self, message, errors="", exit_code=None):
        super().__init__(message + (f" It said:\n{errors}" if errors else ""))
        self.errors = errors
        self.reason = last_error(errors)
        self.exit_code = exit_code


def last_error(text):
    """The error a crashed process reported last, from the end of its stderr.

    Returns:
        The message of the exception its last traceback ends with (its type too if it has
        no message), else its last non-empty line, else "".
    """
    lines = text.strip().splitlines()
    if not lines:
        return ""
    marker = "Traceback (most recent call last):"
    if any(line.startswith(marker) for line in lines):
        start = max(i for i, line in enumerate(lines) if line.startswith(marker))
        tail = lines[start + 1:]
        # The frames are indented; the exception starts at the first line after them.
        frames_end = max((i for i, line in enumerate(tail) if line.startswith(" ")), default=-1)
        error = "\n".join(tail[frames_end + 1:]).strip()
        name, sep, message = error.partition(":")
        if sep and name.replace(".", "").replace("_", "").isalnum() and message.strip():
            return message.strip()
        return error
    return lines[-1].strip()


# -- where sessions live, what a node offers -------------------------------------------------------

def temp_root():
    """The directory that holds every session directory (and the records of what
    ``purerun start`` left running), made if missing.

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
            (the address in the environment, else the head ``purerun start --head``
            recorded, else the node ``purerun start`` recorded), a head's "host:port", or
            the path of a node's socket or session directory.

    Returns:
        The address to connect to (see ``is_head_address``), or None to start a new node.

    Raises:
        ConnectionError: "auto", and no running head or node was found.
    """
    if address is None:
        address = _address_from_env()
    elif address == "auto":
        address = _address_from_env() or recorded_address()
        if not address:
            raise ConnectionError("Could not find any running purerun cluster or node: start "
                                  "one with 'purerun start' (or 'purerun start --head'), or "
                                  "set PURERUN_ADDRESS to its address.")
    if address == "local":
        return None
    return address


def _address_from_env():
    for name in ADDRESS_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return recorded_address() if value == "auto" else value
    return None


def is_head_address(address):
    """Whether ``address`` names a head (``"host:port"``) rather than a node on this host.

    A path is anything that exists on this machine or contains a "/"; a head's address is
    ``host:port`` with a port from 1 to 65535, an IPv6 host in brackets (``"[::1]:6380"``).
    """
    if not isinstance(address, str) or "/" in address or os.path.exists(address):
        return False
    from purerun.core.head import parse_address
    try:
        host, _port = parse_address(address)
    except ValueError:
        return False
    return not any(c.isspace() for c in host)


def same_head(a, b):
    """Whether two head addresses name the same head: same port, and the same host (by name
    or by what the names resolve to)."""
    from purerun.core.head import parse_address
    try:
        (host_a, port_a), (host_b, port_b) = parse_address(a), parse_address(b)
    except ValueError:
        return False
    if port_a != port_b:
        return False
    if host_a == host_b:
        return True
    return bool(_resolved(host_a) & _resolved(host_b))


def _resolved(host):
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()


def connect(address):
    """A socket connected to the node at ``address`` (its socket, or its session directory).

    Raises:
        ConnectionError: nothing listens there.
    """
    path = address
    if os.path.isdir(path):
        path = os.path.join(path, SOCKET_NAME)
    from purerun.core.transport import unix_path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_path(path) as short:
            sock.connect(short)
    except OSError as exc:
        sock.close()
        raise ConnectionError(f"Could not connect to a purerun node at {address!r}: {exc}")
    return sock


def ask_node(address, requests, timeout):
    """Send REQUESTs to the node at ``address`` over a fresh connection, as a driver does,
    and wait for their REPLYs (for tools that are not drivers: ``purerun status``, the
    state API).

    Args:
        address: The node's socket, or its session directory.
        requests: ``[(op, args), ...]``, ops of ``protocol.REQUESTS``.
        timeout: Seconds to wait for the connection and the answers.

    Returns:
        ``[(ok, value), ...]`` in the order of ``requests``: the value, or the exception the
        node answered with when ``ok`` is false.

    Raises:
        ConnectionError: the node could not be reached, closed the connection, or did not
            answer within ``timeout``.
    """
    from purerun.core import protocol
    sock = connect(address)
    try:
        sock.settimeout(timeout)
        reader = protocol.FrameReader()
        data, fds = protocol.recv_with_fds(sock)   # the WELCOME carries the arena's fd
        for fd in fds:
            os.close(fd)
        messages = reader.feed(data)
        sock.sendall(protocol.encode_many([(protocol.REQUEST, i, op, tuple(args))
                                           for i, (op, args) in enumerate(requests, 1)]))
        replies = {}
        while True:
            for msg in messages:
                if msg[0] == protocol.REPLY and 1 <= msg[1] <= len(requests):
                    replies[msg[1]] = (msg[2], msg[3])
            if len(replies) == len(requests):
                return [replies[i] for i in range(1, len(requests) + 1)]
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError(f"The node at {address} closed the connection")
            messages = reader.feed(data)
    except socket.timeout:
        raise ConnectionError(f"The node at {address} did not answer within "
                              f"{timeout:g} s") from None
    except OSError as exc:
        raise ConnectionError(f"Asking the node at {address} failed: {exc}") from None
    finally:
        sock.close()


def no_token_message(head):
    """What to say when there is no cluster token to join the head at ``head`` with."""
    from purerun.core import auth
    return (f"No cluster token was found to join the head at {head}: set ${auth.TOKEN_ENV} to "
            f"the head's token, or ${auth.TOKEN_PATH_ENV} to a file holding it, or copy the "
            f"head's token file to {auth.default_token_path()}.")


def check_head(address, timeout=None):
    """Make sure the head at ``address`` answers and accepts this process's cluster token.

    Raises:
        ConnectionError: there is no token, the token file cannot be read, nobody answers,
            or the head refused the token; the message names the address and what to do.
    """
    from purerun.core import auth
    from purerun.core.remote_control import RemoteControlStore
    from purerun.core.transport import CONNECT_TIMEOUT
    try:
        token = auth.load_token()
    except (ValueError, OSError) as exc:
        raise ConnectionError(f"Cannot join the head at {address}: {exc}") from None
    if token is None:
        raise ConnectionError(no_token_message(address))
    RemoteControlStore.connect(address, token, CONNECT_TIMEOUT if timeout is None
                               else timeout).close()


def attach(address, resources):
    """A driver's connection for ``address`` (not None; see ``resolve_address``).

    A node's socket or session directory: that node. A head's "host:port": a node on this
    host recorded as joined to that head, else a new node joined to it that lives as long
    as the connection (``start_owned_node``), once the head was seen to accept this
    process's token.

    Args:
        address: where to connect.
        resources: what a new node offers (see ``node_resources``).

    Returns:
        (socket, NodeProcess or None): the driver's end, and the node if it started one.

    Raises:
        ConnectionError: nothing listens at a node's address; the head is unreachable,
            refuses the token, or the node started for it could not join it.
    """
    if not is_head_address(address):
        return connect(address), None
    local = node_for_head(address)
    if local is not None:
        return connect(local.address), None
    check_head(address)
    sock, node = start_owned_node(resources, None, head=address)
    try:
        node.wait_listening(JOIN_TIMEOUT_S)
    except NodeStartError as exc:
        sock.close()
        what = ("did not start in time" if exc.exit_code is None else
                f"exited at start-up with code {exc.exit_code} (its error is printed above)")
        raise ConnectionError(f"The purerun node started to join the head at {address} "
                              f"{what}.") from exc
    return sock, node


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
            code = self.process.poll()
            if code is not None:
                errors = self.errors()
                self._remove_session_dir()
                raise NodeStartError(f"The purerun node exited at start-up (code {code}).",
                                     errors, exit_code=code)
            if time.monotonic() >= deadline:
                self.process.kill()
                self.process.wait()
                self._remove_session_dir()
                raise NodeStartError(f"The purerun node did not start within {timeout:g} s.")
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
               labels=None, env=None, errors_file=None, die_with_parent=False,
               dashboard=None):
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
        errors_file: True: its stderr goes to ``NODE_ERRORS_FILE`` in its session directory
            (read with ``NodeProcess.errors``); False: it shares this process's stderr.
            Default: True for a standalone node, which must not hold on to the terminal or
            pipe of whoever started it; False for an owned node, which reports crashes on
            its driver's stderr.
        die_with_parent: the node gets SIGTERM when this process dies, however it dies
            (Linux; test clusters use it, so a killed test run leaves no node behind).
        dashboard: ``{"host": ..., "port": ...}`` for the node to serve the status page
            there (core/dashboard.py; port None: 8265 or the next free one), or None.

    Returns:
        The NodeProcess, at once (the node listens a little later).

    Raises:
        ValueError: object_store_memory is not a positive number of bytes, or a memory
            monitor setting in the environment is out of range (core/memory_monitor.py).
    """
    # The node reads them; a wrong one is reported here, to whoever starts it.
    memory_monitor.settings_from_env(os.environ if env is None else env)
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
              "node_host": node_host, "labels": labels or {}, "dashboard": dashboard}
    if errors_file is None:
        errors_file = owner_fd is None
    errors_path = os.path.join(session_dir, NODE_ERRORS_FILE)
    server = _forkserver() if owner_fd is not None or die_with_parent else None
    if server is not None:
        try:
            process = server.fork_node(json.dumps(config), owner_fd,
                                       errors_path if errors_file else None,
                                       os.environ if env is None else env, die_with_parent)
            return NodeProcess(process, session_dir, config["node_id"])
        except forkserver.ForkServerError:
            stop_forkserver()  # it went away: spawn this node, and start a new one next time
    err = open(errors_path, "wb") if errors_file else None
    process = subprocess.Popen(
        [sys.executable, "-c", _NODE_BOOT, json.dumps(sys.path), json.dumps(config),
         "none" if owner_fd is None else str(owner_fd)],
        pass_fds=[] if owner_fd is None else [owner_fd], cwd=os.getcwd(),
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=err, close_fds=True, env=env,
        preexec_fn=terminate_with_parent if die_with_parent else None)
    if err is not None:
        err.close()
    return NodeProcess(process, session_dir, config["node_id"])


_PR_SET_PDEATHSIG = 1

# The fork server nodes are forked from when use_forkserver() turned it on (core/forkserver.py).
_forkserver_wanted = False
_forkserver_process = None


def use_forkserver(enabled=True):
    """Fork the nodes this process owns (and test nodes that die with it) from a fork server.

    A forked node listens in milliseconds instead of the ~0.1 s a fresh interpreter takes to
    import purerun; the fork server starts with the first node, and stays until
    ``stop_forkserver()`` or until this process exits. Standalone nodes (``purerun start``)
    are always spawned: they outlive this process.
    """
    global _forkserver_wanted
    if enabled and not _forkserver_wanted:
        atexit.register(stop_forkserver)
    _forkserver_wanted = enabled
    if not enabled:
        stop_forkserver()


@contextlib.contextmanager
def forked_nodes(enabled=True):
    """``use_forkserver(enabled)`` inside the block, the previous setting after it (the fork
    server itself stays up for the next node)."""
    global _forkserver_wanted
    before = _forkserver_wanted
    if enabled and not before:
        atexit.register(stop_forkserver)
    _forkserver_wanted = enabled
    try:
        yield
    finally:
        _forkserver_wanted = before


def forkserver_pid():
    """The fork server's pid, or None when none runs."""
    server = _forkserver_process
    return server.pid if server is not None and server.alive() else None


def stop_forkserver():
    """Stop the fork server, if one runs (it waits for the nodes it forked to exit)."""
    global _forkserver_process
    server, _forkserver_process = _forkserver_process, None
    if server is not None:
        server.stop()


def _forkserver():
    global _forkserver_process
    if not _forkserver_wanted:
        return None
    server = _forkserver_process
    if server is None or not server.alive():
        if server is not None:
            server.stop()
        server = _forkserver_process = forkserver.ForkServer()
    return server


def terminate_with_parent():
    """In a child about to exec (``preexec_fn``): have the kernel send it SIGTERM when the
    process that started it dies. Does nothing where prctl is missing (not Linux)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def start_owned_node(resources, object_store_memory, head=None, labels=None, dashboard=None):
    """Start a node that lives as long as the returned connection to it.

    Args:
        head: "host:port" of a head for it to join, or None.
        labels: its labels (str to str), or None.
        dashboard: where it serves the status page (see ``spawn_node``), or None.

    Returns:
        (socket, NodeProcess): the driver's end of its connection, and the process.
    """
    driver_sock, node_sock = socket.socketpair()
    try:
        node = spawn_node(resources, object_store_memory, node_sock.fileno(), head=head,
                          labels=labels, dashboard=dashboard)
    except BaseException:
        driver_sock.close()
        raise
    finally:
        node_sock.close()
    return driver_sock, node


# -- the head ----------------------------------------------------------------------------------------

class HeadProcess:
    """A head process this process started (``python -m purerun.head``), and its directory."""

    def __init__(self, process, head_dir):
        self.process = process        # subprocess.Popen
        self.head_dir = head_dir
        self.address = None           # "host:port", once it listens
        self.record = None            # its ProcessRecord, once recorded

    @property
    def pid(self):
        return self.process.pid

    def wait_listening(self, timeout):
        """Wait until the head listens, and read its address.

        Raises:
            NodeStartError: it exited first, or did not listen within ``timeout`` s (it is
                then killed); its directory is removed either way.
        """
        address_file = os.path.join(self.head_dir, HEAD_ADDRESS_FILE)
        deadline = time.monotonic() + timeout
        while not os.path.exists(address_file):
            code = self.process.poll()
            if code is not None:
                errors = self.errors()
                shutil.rmtree(self.head_dir, ignore_errors=True)
                raise NodeStartError(f"The purerun head exited at start-up (code {code}).",
                                     errors, exit_code=code)
            if time.monotonic() >= deadline:
                self.process.kill()
                self.process.wait()
                shutil.rmtree(self.head_dir, ignore_errors=True)
                raise NodeStartError(f"The purerun head did not start within {timeout:g} s.")
            time.sleep(POLL_INTERVAL_S)
        with open(address_file) as f:   # written atomically: all of it, or no file
            self.address = f.read().strip()
        return self.address

    def errors(self, limit=4000):
        """The end of what the head wrote to stderr ("" if nothing)."""
        try:
            with open(os.path.join(self.head_dir, HEAD_ERRORS_FILE), "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace").strip()
        except OSError:
            return ""


def start_head(host, port, timeout, token_path=None, dashboard=None):
    """Start a head that outlives this process, wait until it listens, and record it.

    Args:
        host: the interface it listens on ("0.0.0.0" for all).
        port: its TCP port, 0 for any free one.
        timeout: seconds it gets to listen.
        token_path: the token file it should use (default: what its environment says).
        dashboard: ``{"host": ..., "port": ...}`` for it to serve the status page there
            (port None: 8265 or the next free one), or None.

    Returns:
        The HeadProcess; ``address`` is where nodes and drivers reach it (the real port).

    Raises:
        NodeStartError: it did not come up (the port is taken, say): ``errors`` says why.
    """
    head_dir = tempfile.mkdtemp(prefix=HEAD_DIR_PREFIX, dir=temp_root())
    command = [sys.executable, "-m", "purerun.head", "--host", host, "--port", str(port),
               "--address-file", os.path.join(head_dir, HEAD_ADDRESS_FILE)]
    if token_path is not None:
        command += ["--token-path", token_path]
    if dashboard is not None:
        command += ["--include-dashboard", "true", "--dashboard-host", dashboard["host"]]
        if dashboard["port"] is not None:
            command += ["--dashboard-port", str(dashboard["port"])]
    # Its banner goes nowhere (`purerun start` prints its own); its stderr, a file in its
    # directory, says why it stopped or did not start.
    with open(os.path.join(head_dir, HEAD_ERRORS_FILE), "wb") as err:
        process = subprocess.Popen(command, cwd=os.getcwd(), start_new_session=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=err, close_fds=True)
    head = HeadProcess(process, head_dir)
    head.wait_listening(timeout)
    head.record = _write_record(ProcessRecord(HEAD, head.pid, head.address,
                                              session_dir=head_dir))
    return head


def dashboard_url(head_address, timeout=None):
    """The "host:port" of the status page the head at ``head_address`` serves, or None.

    Raises:
        ConnectionError: the head cannot be reached with this process's token.
    """
    from purerun.core import auth
    from purerun.core.remote_control import RemoteControlStore
    from purerun.core.transport import CONNECT_TIMEOUT
    token = auth.load_token()
    if token is None:
        raise ConnectionError(no_token_message(head_address))
    store = RemoteControlStore.connect(head_address, token,
                                       CONNECT_TIMEOUT if timeout is None else timeout)
    try:
        url = store.kv_get(DASHBOARD_URL_KEY, DASHBOARD_NAMESPACE)
    finally:
        store.close()
    return url.decode() if url else None


# -- the processes `purerun start` leaves running ----------------------------------------------------

class ProcessRecord:
    """What ``purerun start`` wrote down about a head or node it left running on this host.

    Attributes:
        kind: ``HEAD`` or ``NODE``.
        pid: its process id.
        create_time: when it started (psutil's reading, seconds since the epoch): a pid
            recycled for a later process does not pass for it.
        address: a head's "host:port", a node's socket path.
        head: for a node, the "host:port" of the head it joined, else None.
        session_dir: the node's session directory, the head's directory.
        node_id: a node's id (hex), else None.
        started: when it was recorded (seconds since the epoch).
    """

    __slots__ = ("kind", "pid", "create_time", "address", "head", "session_dir", "node_id",
                 "started")
    FIELDS = __slots__

    def __init__(self, kind, pid, address, head=None, session_dir=None, node_id=None,
                 create_time=None, started=None):
        self.kind = kind
        self.pid = pid
        self.address = address
        self.head = head
        self.session_dir = session_dir
        self.node_id = node_id
        self.create_time = _create_time(pid) if create_time is None else create_time
        self.started = time.time() if started is None else started

    @property
    def path(self):
        """Its file."""
        return os.path.join(records_dir(), f"{self.kind}-{self.pid}.json")

    def to_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data):
        """Raises ValueError: not a record's fields."""
        if not isinstance(data, dict) or data.get("kind") not in (HEAD, NODE) \
                or type(data.get("pid")) is not int or not isinstance(data.get("address"), str):
            raise ValueError(f"not a process record: {data!r}")
        return cls(**{name: data.get(name) for name in cls.FIELDS})

    def alive(self):
        """Whether its process still runs (and is the one recorded, not a recycled pid)."""
        if not _alive(self.pid):
            return False
        now = _create_time(self.pid)
        return (now is None or self.create_time is None
                or abs(now - self.create_time) <= CREATE_TIME_TOLERANCE_S)

    def forget(self):
        """Remove its file (gone already is fine)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def describe(self):
        """One line for ``purerun stop``: which process it was."""
        if self.kind == HEAD:
            return f"the purerun head at {self.address} (pid {self.pid})"
        joined = f", joined to the head at {self.head}" if self.head else ""
        return f"the purerun node {(self.node_id or '')[:12]} (pid {self.pid}{joined})"

    def __repr__(self):
        return f"ProcessRecord({self.to_dict()!r})"


def records_dir():
    """The directory of the records (made if missing)."""
    path = os.path.join(temp_root(), RECORDS_DIR)
    os.makedirs(path, exist_ok=True)
    return path


def _write_record(record):
    """Write ``record`` so that a reader sees all of it or no file."""
    path = record.path
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump(record.to_dict(), f)
    os.replace(temporary, path)
    return record


def record_node(node, head=None):
    """Record a node that this process started and that listens now (``python -m
    purerun.node`` does, for its node); returns the ProcessRecord."""
    return _write_record(ProcessRecord(NODE, node.pid, node.address, head=head,
                                       session_dir=node.session_dir, node_id=node.node_id))


def running_records(kind=None):
    """The recorded processes that still run, oldest first; stale records are removed.

    Args:
        kind: ``HEAD`` or ``NODE`` for those only; None for both.
    """
    found = []
    directory = os.path.join(temp_root(), RECORDS_DIR)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:   # nothing was ever recorded here
        return found
    for name in names:
        if not name.endswith(".json"):
            continue   # a record being written
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                record = ProcessRecord.from_dict(json.load(f))
        except FileNotFoundError:
            continue   # forgotten meanwhile
        except (OSError, ValueError, TypeError):
            record = None
        if record is None or not record.alive():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        if kind is None or record.kind == kind:
            found.append(record)
    found.sort(key=lambda r: (r.started or 0, r.pid))
    return found


def recorded_head():
    """The head ``purerun start --head`` left running on this host, or None."""
    heads = running_records(HEAD)
    return heads[0] if heads else None


def recorded_address():
    """Where ``address="auto"`` goes: the recorded head's "host:port", else the socket of a
    recorded node, else None."""
    for kind in (HEAD, NODE):
        for record in running_records(kind):
            if kind == HEAD or os.path.exists(record.address):
                return record.address
    return None


def node_for_head(address):
    """A recorded node of this host joined to the head at ``address`` that listens, or
    None."""
    for record in running_records(NODE):
        if record.head and same_head(record.head, address) and os.path.exists(record.address):
            return record
    return None


def start_standalone(resources, object_store_memory, timeout, head=None, node_host=None,
                     labels=None):
    """Start a node that outlives this process, wait until it listens, and record it.

    Args:
        resources, object_store_memory, head, node_host, labels: as for ``spawn_node``.
        timeout: seconds it gets to listen.

    Raises:
        NodeStartError: it did not come up (see ``NodeProcess.wait_listening``).
    """
    node = spawn_node(resources, object_store_memory, head=head, node_host=node_host,
                      labels=labels)
    node.wait_listening(timeout)
    record_node(node, head)
    return node


def stop_recorded(grace_period, force=False):
    """Stop every recorded process of this host: the nodes first, then the heads.

    Each is sent SIGTERM (SIGKILL at once with ``force``) and gets ``grace_period`` s to
    exit before it is killed; then its record and whatever is left of its directory go.

    Returns:
        ``[(ProcessRecord, killed)]`` of the processes stopped, in that order; ``killed``
        says SIGKILL ended it.
    """
    records = running_records()
    stopped = []
    for kind in (NODE, HEAD):
        stopped += stop_processes([r for r in records if r.kind == kind], grace_period, force)
    return stopped


def stop_processes(records, grace_period, force=False):
    """Stop these recorded processes together (see ``stop_recorded``)."""
    for record in records:
        _signal(record.pid, signal.SIGKILL if force else signal.SIGTERM)
    deadline = time.monotonic() + (0 if force else grace_period)
    _wait_gone(records, deadline)
    killed = {record.pid for record in records if _alive(record.pid)}
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    if force:
        killed = {record.pid for record in records}
    _wait_gone(records, time.monotonic() + KILL_WAIT_S)
    for record in records:
        record.forget()
        # A node that exited cleanly removed its session directory; one killed did not.
        if record.session_dir and os.path.dirname(record.session_dir) == temp_root():
            shutil.rmtree(record.session_dir, ignore_errors=True)
    return [(record, record.pid in killed) for record in records]


def _wait_gone(records, deadline):
    while any(_alive(record.pid) for record in records) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _create_time(pid):
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # another user's process: alive, and not ours to signal
    try:  # our own child (this process started it) may linger as a zombie
        done, _ = os.waitpid(pid, os.WNOHANG)
        return not done
    except ChildProcessError:
        import psutil
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
