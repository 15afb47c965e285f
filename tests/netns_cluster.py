"""A purerun cluster spread over Linux network namespaces on this host, for tests and
benchmarks (needs root and ``ip``): each node listens on an address of its own on a private
network, as on separate hosts, yet all of them run here.

::

    root namespace                          namespace prn<pid>-1     namespace prn<pid>-2
    ──────────────                          ────────────────────     ────────────────────
    bridge prb<pid>, 10.213.S.1/24          lo up                    lo up
      ├─ prv<pid>h1 ════════ veth ═══════▶  prv<pid>n1 10.213.S.2
      └─ prv<pid>h2 ════════ veth ════════════════════════════════▶  prv<pid>n2 10.213.S.3

    head    python -m purerun.head          node B, listens on       node C, listens on
            --host 10.213.S.1               10.213.S.2               10.213.S.3
    node A  listens on 10.213.S.1
    driver  this process, attached to A by A's unix socket

**The network.** The bridge lives in the root namespace and the veth pairs plug each
namespace into it: the bridge switches frames between its ports, so no IP forwarding (a
host-wide setting) is turned on, and the root namespace is on the same /24 through the
bridge's own address. Traffic only ever goes to these addresses. ``S`` is a third octet no
address or route of this host uses yet. Every name carries this process's pid, so a run
that crashed (and left its namespaces behind) cannot collide with the next one, which
removes such leftovers once their pid is gone (``remove_stale``).

**The processes.** A node in a namespace must be started from inside it, so that its TCP
listener binds the namespace's address and its workers (forked from it) run there too:
``ip netns exec NS python netns_cluster.py node CONFIG`` (``ip netns exec`` execs, so this
is a child of ours) runs ``_bootstrap`` below, which calls ``launcher.spawn_node``, prints
the node's id, socket and pid as one JSON line once it listens, and waits. It stops its
node (SIGTERM, then SIGKILL) and reaps it when its stdin closes, which happens when we stop
it and also when we die, however we die; it exits when its node does. The head and node A
run under the same bootstrap, without ``ip netns exec``: nothing this module starts can
outlive the process that started it, and no namespace is kept alive by a stray process.

**The driver** sits in the root namespace with node A, as a driver sits on its node's host.
(It reaches its node only by the node's unix socket, and unix sockets named by a path are
not namespaced; all TCP is between the head and the nodes.)
"""

import atexit
import glob
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil

from purerun.core import auth, launcher

__all__ = ["NetnsUnavailable", "unavailable_reason", "remove_stale", "Network",
           "Supervised", "NetnsCluster"]

PREFIX_NAMESPACE = "prn"     # prn<pid>-<i>
PREFIX_BRIDGE = "prb"        # prb<pid>
PREFIX_VETH = "prv"          # prv<pid>h<i> (root side), prv<pid>n<i> (namespace side)
HEAD_DIR_PREFIX = "head_netns"   # head_netns<pid>_*, in launcher.temp_root()
SUBNET = "10.213"            # 10.213.S.0/24, S chosen free
# A node or the head starts in ~0.1-0.5 s: this only bounds a broken start on a busy machine.
START_TIMEOUT_S = 30.0
# How long a node, the head, or a bootstrap gets to exit when told before it is killed.
STOP_TIMEOUT_S = 10.0
# Each `ip` command is quick; this bounds one stuck on a wedged kernel lock.
IP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.01


class NetnsUnavailable(RuntimeError):
    """This process may not create network namespaces here."""


def unavailable_reason():
    """Why namespaces cannot be used here (a sentence), or None if they may be.

    Cheap (nothing is created): whether namespaces can really be made shows when
    ``Network`` makes the first one, which raises ``NetnsUnavailable`` if it cannot.
    """
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def _ip(*args, check=True):
    result = subprocess.run(["ip", *args], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=IP_TIMEOUT_S)
    if check and result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _pid_alive(pid):
    return psutil.pid_exists(pid)


def remove_stale():
    """Delete the namespaces, bridges and head directories that an earlier run left behind
    (its pid is gone). Called by ``Network`` before it makes its own.

    A namespace or bridge named with this process's own pid is stale too: a process of
    ours that had this pid before crashed, as only one ``Network`` at a time may exist here.

    Returns:
        The names removed.
    """
    def stale(pid):
        return pid == os.getpid() or not _pid_alive(pid)

    if _network_open:
        raise RuntimeError("remove_stale() while this process has a Network open would "
                           "remove that one too")
    removed = []
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(PREFIX_NAMESPACE + r"(\d+)-\d+", name)
        if match and stale(int(match.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        match = re.search(r"^\d+: (" + PREFIX_BRIDGE + r"(\d+))[:@]", line)
        if match and stale(int(match.group(2))):
            _ip("link", "del", match.group(1), check=False)
            removed.append(match.group(1))
    for path in glob.glob(os.path.join(launcher.temp_root(), HEAD_DIR_PREFIX + "*_*")):
        match = re.fullmatch(HEAD_DIR_PREFIX + r"(\d+)_.*", os.path.basename(path))
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _free_third_octet():
    """A third octet S such that no address or route of this host is in 10.213.S.0/24."""
    used = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    start = os.getpid() % 254
    for k in range(254):
        octet = (start + k) % 254 + 1
        if f"{SUBNET}.{octet}." not in used:
            return octet
    raise RuntimeError(f"every {SUBNET}.x.0/24 is in use on this host")


class Namespace:
    """One network namespace of a ``Network``: its ``name`` and its address ``ip``."""

    def __init__(self, name, ip):
        self.name = name
        self.ip = ip

    def command(self, argv):
        """``argv`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def __repr__(self):
        return f"Namespace({self.name}, {self.ip})"


_network_open = False   # one Network per process at a time: its names carry only the pid


class Network:
    """A bridge in the root namespace and ``count`` namespaces plugged into it; one per
    process at a time.

    Attributes:
        host_ip: the bridge's address: the root namespace's address on this network.
        namespaces: the ``Namespace`` objects, each with its address.

    Raises:
        NetnsUnavailable: the first namespace cannot be created (no privilege for it).
        RuntimeError: this process has a Network open already; or a later step failed
            (what was made is removed first).
    """

    def __init__(self, count):
        global _network_open
        pid = os.getpid()
        self.bridge = f"{PREFIX_BRIDGE}{pid}"
        self.namespaces = []
        self._veths = []
        self._open = False
        if _network_open:
            raise RuntimeError("this process has a Network open already (their names would "
                               "collide): close it first")
        remove_stale()
        octet = _free_third_octet()
        self.host_ip = f"{SUBNET}.{octet}.1"
        first = _ip("netns", "add", f"{PREFIX_NAMESPACE}{pid}-1", check=False)
        if first.returncode != 0:
            raise NetnsUnavailable(f"cannot create a network namespace: "
                                   f"{first.stderr.strip()}")
        self._open = _network_open = True
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(1, count + 1):
                name = f"{PREFIX_NAMESPACE}{pid}-{i}"
                if i > 1:
                    _ip("netns", "add", name)
                namespace = Namespace(name, f"{SUBNET}.{octet}.{i + 1}")
                self.namespaces.append(namespace)
                outside, inside = f"{PREFIX_VETH}{pid}h{i}", f"{PREFIX_VETH}{pid}n{i}"
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                self._veths.append(outside)
                _ip("link", "set", outside, "master", self.bridge, "up")
                _ip("link", "set", inside, "netns", name)
                _ip("-n", name, "addr", "add", f"{namespace.ip}/24", "dev", inside)
                _ip("-n", name, "link", "set", inside, "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            if not self.namespaces:   # the first namespace exists, with no object for it yet
                _ip("netns", "del", f"{PREFIX_NAMESPACE}{pid}-1", check=False)
            self.close()
            raise

    def names(self):
        """Every namespace and link this network made."""
        return [ns.name for ns in self.namespaces] + [self.bridge] + self._veths

    def leftovers(self):
        """The names of ``names()`` that still exist (a veth goes shortly after its
        namespace: the kernel removes it asynchronously)."""
        namespaces = {line.split()[0] for line in _ip("netns", "list").stdout.splitlines()
                      if line.strip()}
        links = set(re.findall(r"^\d+: ([^:@]+)", _ip("-o", "link", "show").stdout, re.M))
        return [name for name in self.names() if name in namespaces or name in links]

    def close(self):
        """Delete the namespaces (which takes their veths along) and the bridge. Processes
        still inside a namespace keep it alive, unnamed: stop them first."""
        global _network_open
        for namespace in self.namespaces:
            _ip("netns", "del", namespace.name, check=False)
        for veth in self._veths:   # normally gone with its peer already
            _ip("link", "del", veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        if self._open:
            self._open = _network_open = False


def _kill_tree(proc):
    """SIGKILL a process and all its descendants; reap what is ours."""
    try:
        victims = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for victim in victims:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=STOP_TIMEOUT_S)


class Supervised:
    """A head or a node run by a bootstrap process (``python netns_cluster.py KIND CONFIG``),
    inside a namespace or not; see the module docstring.

    The bootstrap prints one JSON line once its process is up: for a node its ``node_id``,
    ``address`` (unix socket), ``session_dir`` and ``pid``; for the head its ``address``
    (host:port) and ``pid``. They become attributes of this object.

    Attributes:
        ip: the address it listens on for other nodes.
        pid: the head's or node's own pid (a grandchild of this process).
        bootstrap: the bootstrap's ``subprocess.Popen``.
    """

    def __init__(self, kind, config, env, namespace=None, ip=None):
        self.kind = kind
        self.namespace = namespace
        self.ip = namespace.ip if namespace is not None else ip
        self.where = namespace.name if namespace is not None else "the root namespace"
        argv = [sys.executable, os.path.abspath(__file__), kind, json.dumps(config)]
        self.bootstrap = subprocess.Popen(
            namespace.command(argv) if namespace is not None else argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=os.getcwd())
        self.process = None
        self.session_dir = None

    def wait_started(self):
        """Wait for the bootstrap's line (at most ``START_TIMEOUT_S``); returns self.

        Raises:
            NodeStartError: it did not come up (``stop()`` cleans up).
        """
        info = self._read_info()
        self.__dict__.update(info)
        self.process = psutil.Process(self.pid)   # is_running() is safe from pid reuse
        return self

    def _read_info(self):
        selector = selectors.DefaultSelector()
        selector.register(self.bootstrap.stdout, selectors.EVENT_READ)
        try:
            if not selector.select(START_TIMEOUT_S):
                raise launcher.NodeStartError(f"no {self.kind} up in {self.where} within "
                                              f"{START_TIMEOUT_S} s")
        finally:
            selector.close()
        line = self.bootstrap.stdout.readline()
        try:
            info = json.loads(line)
        except ValueError:
            said = f"said {line!r}" if line else "its traceback, if any, is on stderr"
            raise launcher.NodeStartError(f"the {self.kind} bootstrap in {self.where} exited "
                                          f"at start-up ({said})") from None
        if "error" in info:
            raise launcher.NodeStartError(f"the {self.kind} in {self.where}: {info['error']}")
        return info

    def send_signal(self, signum):
        """Signal the head or node process itself (SIGKILL, SIGSTOP, SIGCONT...)."""
        if self.process.is_running():
            self.process.send_signal(signum)

    def begin_stop(self):
        """Tell the bootstrap to stop (``stop()`` waits for it): several can stop at once."""
        if self.bootstrap.poll() is None and self.process is None:
            self.bootstrap.send_signal(signal.SIGTERM)   # still starting: interrupt it
        try:
            self.bootstrap.stdin.close()   # the bootstrap stops what it runs
        except OSError:
            pass

    def stop(self):
        """Stop it and its bootstrap, reap both; kill them if they do not go. Safe to call
        more than once."""
        self.begin_stop()
        if self.bootstrap.poll() is None:
            try:
                self.bootstrap.wait(STOP_TIMEOUT_S + 5)
            except subprocess.TimeoutExpired:
                _kill_tree(psutil.Process(self.bootstrap.pid))
                self.bootstrap.wait()
        if self.process is not None and self.process.is_running():
            _kill_tree(self.process)
        self.bootstrap.stdout.close()
        if self.session_dir is not None:
            shutil.rmtree(self.session_dir, ignore_errors=True)

    def __repr__(self):
        name = getattr(self, "node_id", self.kind)[:12]
        return f"Supervised({name} in {self.where} at {self.ip})"


# -- the bootstrap: python netns_cluster.py node|head CONFIG --------------------------------------

def _bootstrap(kind, config):
    """Start a node or the head, say where it is, stop it when told; see above."""
    def on_term(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    node = process = None
    try:
        if kind == "node":
            sys.path[:] = config["sys_path"]   # what spawn_node hands on to the node
            node = launcher.spawn_node(config["resources"], config["object_store_memory"],
                                       head=config["head"], node_host=config["node_host"])
            process = node.process
            node.wait_listening(START_TIMEOUT_S)
            info = {"node_id": node.node_id, "address": node.address,
                    "session_dir": node.session_dir, "pid": node.pid}
        else:
            address_file = os.path.join(config["dir"], "address")
            process = _spawn_head(config["host"], address_file)
            info = {"address": _wait_for_head(process, address_file), "pid": process.pid}
        pidfd = os.pidfd_open(process.pid)
        selector = selectors.DefaultSelector()
        selector.register(sys.stdin, selectors.EVENT_READ)
        selector.register(pidfd, selectors.EVENT_READ)
        print(json.dumps(info), flush=True)
        # Either stdin is readable (it closed: stop) or the process exited (killed, or it
        # stopped by itself): one of the two always comes, so no timeout.
        selector.select()
    except launcher.NodeStartError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    finally:
        if process is not None:
            _stop_popen(process)
        if node is not None:
            node.reap(0)   # removes the session directory of a node that did not exit cleanly
    return 0


def _spawn_head(host, address_file):
    """``python -m purerun.head`` on ``host``, any port, writing its address to
    ``address_file``; its errors go to ``head.err`` next to it."""
    errors = os.path.join(os.path.dirname(address_file), "head.err")
    with open(errors, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "purerun.head", "--host", host, "--port", "0",
             "--address-file", address_file],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True)


def _wait_for_head(process, address_file):
    """The head's "host:port" once it listens.

    Raises:
        NodeStartError: it exited first, or did not listen within ``START_TIMEOUT_S``.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while not os.path.exists(address_file):
        if process.poll() is not None or time.monotonic() > deadline:
            with open(os.path.join(os.path.dirname(address_file), "head.err"), "rb") as f:
                said = f.read()[-4000:].decode("utf-8", "replace")
            raise launcher.NodeStartError(f"the head did not start: {said}")
        time.sleep(POLL_INTERVAL_S)
    with open(address_file) as f:
        return f.read().strip()


def _stop_popen(process):
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; reaped either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class NetnsCluster:
    """The head and node A in the root namespace, one node in each of ``len(node_args)``
    namespaces, all joined with a fresh cluster token; every one of them a ``Supervised``.

    Args:
        root_node_args: ``num_cpus``, ``resources``, ``object_store_memory`` of node A.
        node_args: one such dict per namespaced node.

    Attributes:
        network: the ``Network``.
        host_ip: the root namespace's address on it (the head's and node A's).
        head: the head (``.address`` is ``"10.213.S.1:port"``).
        root_node: node A (``.node_id``, ``.address``: its unix socket).
        nodes: the nodes in namespaces, in the order of ``node_args``.

    Raises:
        NetnsUnavailable: namespaces cannot be created here.
        NodeStartError: the head or a node did not come up (all is torn down first).
    """

    def __init__(self, root_node_args, node_args):
        self.network = None
        self.head = None
        self.root_node = None
        self.nodes = []
        self.connected = False
        self._head_dir = tempfile.mkdtemp(prefix=f"{HEAD_DIR_PREFIX}{os.getpid()}_",
                                          dir=launcher.temp_root())
        self.env = dict(os.environ, **{auth.TOKEN_ENV: secrets.token_hex(32)})
        for name in (auth.TOKEN_PATH_ENV, auth.RAY_TOKEN_ENV, auth.RAY_TOKEN_PATH_ENV):
            self.env.pop(name, None)
        atexit.register(self.shutdown)
        try:
            self.network = Network(len(node_args))
            self.host_ip = self.network.host_ip
            self.head = Supervised("head", {"host": self.host_ip, "dir": self._head_dir},
                                   self.env, ip=self.host_ip).wait_started()
            # The nodes start side by side: each is a few python start-ups.
            self.root_node = self._node(root_node_args, None)
            for namespace, args in zip(self.network.namespaces, node_args):
                self.nodes.append(self._node(args, namespace))
            for node in self.all_nodes():
                node.wait_started()
        except BaseException:
            self.shutdown()
            raise

    def _node(self, args, namespace):
        ip = namespace.ip if namespace is not None else self.host_ip
        config = {"resources": launcher.node_resources(args.get("num_cpus"), 0,
                                                       args.get("resources")),
                  "object_store_memory": args.get("object_store_memory"),
                  "head": self.head.address, "node_host": ip,
                  # As launcher does for a driver's node: its workers import what we import.
                  "sys_path": sys.path}
        return Supervised("node", config, self.env, namespace=namespace, ip=ip)

    def all_nodes(self):
        """Node A, then the namespaced nodes."""
        return ([self.root_node] if self.root_node is not None else []) + self.nodes

    def connect(self):
        """Attach this process to node A (``purerun.init``)."""
        import purerun
        info = purerun.init(address=self.root_node.address)
        self.connected = True
        return info

    def wait_for_nodes(self, timeout=START_TIMEOUT_S):
        """Wait until the driver's ``nodes()`` shows every node alive.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        import purerun
        wanted = {node.node_id for node in self.all_nodes()}
        deadline = time.monotonic() + timeout
        while {n["NodeID"] for n in purerun.nodes() if n["Alive"]} != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not all of {len(wanted)} nodes alive after {timeout} s")
            time.sleep(POLL_INTERVAL_S)

    def shutdown(self):
        """Detach, stop every node and the head, delete the network. Each step runs even
        if an earlier one failed; safe to call more than once."""
        steps = []
        if self.connected:
            import purerun
            steps.append(purerun.shutdown)
            self.connected = False
        nodes = self.all_nodes()
        steps += [node.begin_stop for node in nodes] + [node.stop for node in nodes]
        self.nodes, self.root_node = [], None
        if self.head is not None:
            steps.append(self.head.stop)
            self.head = None
        if self.network is not None:
            steps.append(self.network.close)
            self.network = None
        steps.append(lambda: shutil.rmtree(self._head_dir, ignore_errors=True))
        atexit.unregister(self.shutdown)
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # the rest must still be torn down
                errors.append(exc)
        if errors:
            raise errors[0]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("node", "head"):
        sys.exit(_bootstrap(sys.argv[1], json.loads(sys.argv[2])))
    sys.exit(f"usage: {sys.argv[0]} node|head CONFIG_JSON   (see the module docstring)")
