"""The status page: a small web page of the cluster, served by the head or a lone node.

::

    browser ──HTTP──▶ DashboardServer (ThreadingHTTPServer, its own threads, in the node's
      GET /               the page (no data in it)          or the head's process)
      POST /login         token ─▶ HttpOnly cookie                │ snapshot(), at most
      GET /api/snapshot   JSON, with the cookie or                 │ once per SNAPSHOT_MAX_AGE_S
                          "Authorization: Bearer <token>"          ▼
                                                  NodeSource ──unix socket──▶ the node's loop
                                                    REQUEST dashboard, task_summary,
                                                    state actors
                                                  HeadSource: the same, of a node of this host
                                                    joined to the head; else the head's node
                                                    table, over TCP like any other peer

**No shared state.** The node and the head are single-threaded by rule: their state is
touched by their loop only. The server's threads never reach into it; they ask the node over
its own socket as any outside tool does (the head: over TCP, with the cluster token), and
the loop answers between two other messages. In the node, which forks its workers, the
server's threads hold no lock a worker could need and write nothing to stdout or stderr
(a forked worker would inherit a stream lock held half-way); a worker closes every
descriptor it inherits (core/worker.py), the server's sockets too.

**The token.** Every data endpoint answers 401 without the cluster token (core/auth.py):
either ``Authorization: Bearer <token>``, or the cookie that ``POST /login`` sets after
checking the token (HttpOnly, SameSite=Strict; its value is an HMAC of the token, not the
token). Comparisons use ``hmac.compare_digest``. The page itself holds no data; it accepts
``#token=...`` in its address, so that a link (or a headless browser) can log in without
the form. The server binds 127.0.0.1 unless told otherwise.

**Cost.** No process is added; the threads are idle until a browser asks, and the snapshot
asked of the node is bounded: ``_request_dashboard`` and ``_request_task_summary`` in
core/state_rules.py (which counts the tasks without building a record of each), and the
state API's actors; the JSON sent out is cut to what the page shows (``TASKS_SHOWN``,
``ACTORS_SHOWN``).
"""

import hashlib
import hmac
import http.server
import json
import os
import socket
import socketserver
import threading
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from purerun.core import protocol
from purerun.core.launcher import DASHBOARD_PORT
from purerun.core.transport import LOOPBACK

__all__ = ["DashboardServer", "NodeSource", "HeadSource", "build_snapshot", "DEFAULT_PORT",
           "DEFAULT_HOST", "check_settings", "port_free", "session_value", "COOKIE_NAME"]

# Ray's default dashboard port; when it is taken and no port was asked for, the next free
# one of the PORT_TRIES after it is used (as Ray does).
DEFAULT_PORT = DASHBOARD_PORT
PORT_TRIES = 50
DEFAULT_HOST = LOOPBACK
COOKIE_NAME = "purerun_dashboard"
# The page polls once a second; several tabs (or a reload storm) share one snapshot.
SNAPSHOT_MAX_AGE_S = 0.5
# How long a snapshot may take: a node answers in milliseconds; a cluster-wide state
# request waits for every node, bounded by the node's own rules.
ASK_TIMEOUT_S = 10.0
# Connections served at once, each on its own thread; beyond that a new one is closed at
# once, so a flood cannot pile up threads (and their stacks) in the node.
MAX_CONNECTIONS = 16
# A connection silent this long is dropped (a slow or idle client holds a thread).
CONNECTION_TIMEOUT_S = 10.0
# A login form is a token and little else.
LOGIN_BODY_MAX = 4096
# What the page shows, at most: the latest tasks, the actors.
TASKS_SHOWN = 50
ACTORS_SHOWN = 200
FUNCTIONS_SHOWN = 50


# -- settings ---------------------------------------------------------------------------------------

def check_settings(host, port):
    """Check the address the status page is asked to listen on (in the caller's process).

    Args:
        host: the interface, a str ("0.0.0.0" for every one).
        port: the TCP port: None for ``DEFAULT_PORT`` (or the next free one), 0 for any
            free one, else 1 to 65535.

    Raises:
        TypeError: ``host`` is not a str, or ``port`` not an int.
        ValueError: ``host`` is empty, or ``port`` out of range.
    """
    if not isinstance(host, str):
        raise TypeError(f"dashboard_host must be a str, got {type(host).__name__}")
    if not host.strip():
        raise ValueError("dashboard_host must not be empty (use '127.0.0.1', or '0.0.0.0' "
                         "for every interface)")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"dashboard_port must be an int, got {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise ValueError(f"dashboard_port must be from 0 to 65535, got {port}")


def port_free(host, port):
    """Whether a TCP server could bind ``host:port`` now ("" if so, else why not)."""
    try:
        family = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)[0][0]
        probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return str(exc)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return ""
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        probe.close()


def session_value(token):
    """The cookie's value for ``token`` (bytes): proves the token was given, is not it."""
    return hmac.new(token, b"purerun status page session", hashlib.sha256).hexdigest()


def url_of(address):
    """Ray's form of a dashboard address: ``host:port``, no scheme."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- asking the node --------------------------------------------------------------------------------

class NodeLink:
    """One connection to a node's socket, kept open between snapshots and re-opened after a
    failure; the node takes it for a driver's. Used by one thread at a time."""

    def __init__(self, address):
        self.address = address
        self.sock = None
        self.reader = None
        self.next_id = 1

    def ask(self, requests, timeout):
        """``[(ok, value)]`` for ``[(op, args)]`` (see ``launcher.ask_node``).

        Raises:
            ConnectionError: the node could not be reached or did not answer in time.
        """
        try:
            if self.sock is None:
                self._connect(timeout)
            return self._ask(requests, timeout)
        except (OSError, ValueError) as exc:   # ProtocolError, socket.timeout too
            self.close()
            if isinstance(exc, socket.timeout):
                raise ConnectionError(f"The node did not answer within {timeout:g} s") \
                    from None
            raise ConnectionError(f"Cannot ask the node at {self.address}: {exc}") from None

    def _connect(self, timeout):
        from purerun.core import launcher
        sock = launcher.connect(self.address)
        try:
            sock.settimeout(timeout)
            data, fds = protocol.recv_with_fds(sock)   # the WELCOME carries the arena's fd
            for fd in fds:
                os.close(fd)
        except BaseException:
            sock.close()
            raise
        self.sock, self.reader = sock, protocol.FrameReader()
        self.reader.feed(data)
        # Worker output would pile up on this connection between two snapshots.
        self.sock.sendall(protocol.encode((protocol.REQUEST, 0, "log_to_driver", (False,))))

    def _ask(self, requests, timeout):
        self.sock.settimeout(timeout)
        first = self.next_id
        self.next_id += len(requests)
        self.sock.sendall(protocol.encode_many([
            (protocol.REQUEST, first + i, op, tuple(args)) for i, (op, args) in
            enumerate(requests)]))
        replies = {}
        deadline = time.monotonic() + timeout
        while len(replies) < len(requests):
            if time.monotonic() > deadline:
                raise socket.timeout()
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the node closed the connection")
            for msg in self.reader.feed(data):
                if msg[0] == protocol.REPLY and first <= msg[1] < first + len(requests):
                    replies[msg[1]] = (msg[2], msg[3])
        return [replies[first + i] for i in range(len(requests))]

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = self.reader = None


_REQUESTS = [("dashboard", ()), ("task_summary", (True,)),
             ("state", ("actors", [], None, True))]


def _answers(replies):
    values = []
    for ok, value in replies:
        if not ok:
            raise ConnectionError(f"The node could not answer: {value}")
        values.append(value)
    return values


class NodeSource:
    """The snapshot of the node at ``address`` (a lone node's own socket)."""

    def __init__(self, address):
        self.link = NodeLink(address)

    def snapshot(self):
        dashboard, tasks, actors = _answers(self.link.ask(_REQUESTS, ASK_TIMEOUT_S))
        return build_snapshot(dashboard, tasks, actors[0], host_usage())

    def close(self):
        self.link.close()


class HeadSource:
    """The snapshot a head shows: that of a node of this host joined to it (which reads the
    head's tables and asks the other nodes); with none, the head's node table alone."""

    def __init__(self, head_address, token):
        self.head_address = head_address   # as nodes joined it: "host:port"
        self.token = token
        self.link = None
        self.store = None

    def snapshot(self):
        from purerun.core import launcher
        record = launcher.node_for_head(self.head_address)
        if record is not None:
            if self.link is None or self.link.address != record.address:
                self.close()
                self.link = NodeLink(record.address)
            try:
                dashboard, tasks, actors = _answers(self.link.ask(_REQUESTS, ASK_TIMEOUT_S))
                return build_snapshot(dashboard, tasks, actors[0], host_usage())
            except ConnectionError:
                pass   # it is going: the head's own table still says what is there
        return build_snapshot(self._head_tables(), ({"counts": {}, "latest": []}, 0), [],
                              host_usage(),
                              note="No node of this host is joined to this head: tasks, "
                                   "actors and logs are read from one.")

    def _head_tables(self):
        from purerun.core.head import parse_address
        from purerun.core.remote_control import RemoteControlStore
        if self.store is None or self.store.closed:
            host, port = parse_address(self.head_address)
            self.store = RemoteControlStore.connect((host, port), self.token, ASK_TIMEOUT_S)
        nodes = self.store.node_table(timeout=ASK_TIMEOUT_S)
        for row in nodes:
            row["node_id"] = row["node_id"].hex()
            row["this_node"] = False
        return {"node_id": None, "nodes": nodes, "store": None, "timeline": [], "logs": []}

    def close(self):
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.store is not None:
            self.store.close()
            self.store = None


def host_usage():
    """This host's CPU and memory in use now (psutil)."""
    import psutil
    memory = psutil.virtual_memory()
    return {"cpu_percent": psutil.cpu_percent(interval=None), "cpus": os.cpu_count(),
            "memory_used": memory.total - memory.available, "memory_total": memory.total}


# -- the snapshot -----------------------------------------------------------------------------------

_DONE = ("FINISHED", "FAILED")


def build_snapshot(dashboard, tasks, actors, host=None, note=None):
    """What ``/api/snapshot`` returns, from the node's answers (a pure function).

    Args:
        dashboard: the answer to REQUEST "dashboard".
        tasks: the answer to REQUEST "task_summary": (summary, how many tasks).
        actors: the state API's records of actors (REQUEST "state").
        host: ``host_usage()`` of the host serving the page, or None.
        note: a sentence the page shows above the data, or None.

    Returns:
        A dict of plain JSON values: ``nodes``, ``tasks`` (``total``, ``by_state``,
        ``by_function``, ``recent``), ``actors``, ``object_store``, ``timeline``, ``logs``.
    """
    nodes = []
    for row in dashboard["nodes"]:
        total, free = row.get("resources", {}), row.get("available", {})
        usage = {name: {"total": amount, "used": max(amount - free.get(name, 0), 0)}
                 for name, amount in total.items() if not name.startswith("node:")}
        load = row.get("load") or {}
        store = dashboard["store"] if row.get("this_node") else None
        nodes.append({
            "node_id": row["node_id"], "ip": row.get("node_ip"),
            "hostname": row.get("hostname"), "alive": bool(row.get("alive")),
            "this_node": bool(row.get("this_node")), "resources": usage,
            "tasks": load.get("tasks", 0), "actors": load.get("actors", 0),
            "objects": load.get("objects", 0),
            "object_store_used": (store["arena_used"] if store
                                  else load.get("object_store_bytes", 0)),
            "object_store_capacity": store["arena_capacity"] if store else None,
        })
    summary, total = tasks
    by_state = {}
    for counts in summary["counts"].values():
        for state, n in counts.items():
            by_state[state] = by_state.get(state, 0) + n
    functions = sorted(({"name": name, "total": sum(counts.values()), "states": counts}
                        for name, counts in summary["counts"].items()),
                       key=lambda f: (-f["total"], f["name"]))[:FUNCTIONS_SHOWN]
    latest = summary["latest"]
    live = [r for r in latest if r.get("state") not in _DONE]
    done = sorted((r for r in latest if r.get("state") in _DONE),
                  key=lambda r: r.get("end_time_ms") or 0, reverse=True)
    recent = [{"task_id": r.get("task_id"), "name": r.get("func_or_class_name"),
               "state": r.get("state"), "node_id": r.get("node_id"),
               "worker_pid": r.get("worker_pid"), "start_time_ms": r.get("start_time_ms"),
               "end_time_ms": r.get("end_time_ms"), "error_type": r.get("error_type")}
              for r in (live + done)[:TASKS_SHOWN]]
    actor_states = {}
    for record in actors:
        actor_states[record.get("state")] = actor_states.get(record.get("state"), 0) + 1
    shown = sorted(actors, key=lambda r: r.get("state") == "DEAD")[:ACTORS_SHOWN]
    return {
        "time": time.time(), "note": note, "node_id": dashboard.get("node_id"),
        "nodes": nodes, "host": host,
        "tasks": {"total": total, "by_state": by_state, "by_function": functions,
                  "recent": recent},
        "actors": {"total": len(actors), "by_state": actor_states, "list": [
            {"actor_id": r.get("actor_id"), "class_name": r.get("class_name"),
             "name": r.get("name"), "state": r.get("state"),
             "num_restarts": r.get("num_restarts"), "pid": r.get("pid"),
             "node_id": r.get("node_id")} for r in shown]},
        "object_store": dashboard.get("store"),
        "timeline": [{"name": e["name"], "worker": e["tid"], "ts": e["ts"], "dur": e["dur"]}
                     for e in dashboard.get("timeline", ())],
        "logs": [{"pid": log["pid"], "alive": log["alive"],
                  "lines": [[stream, line] for stream, line in log["lines"]]}
                 for log in dashboard.get("logs", ())],
    }


# -- the server -------------------------------------------------------------------------------------

class DashboardServer(http.server.ThreadingHTTPServer):
    """Serves the status page of ``source`` (``NodeSource`` or ``HeadSource``).

    Binds in the constructor (``url`` is known at once); ``start()`` serves on a daemon
    thread until ``stop()``.

    Args:
        source: what the snapshots come from (``snapshot()``, ``close()``).
        token: the cluster token (bytes).
        host: the interface to listen on (loopback unless told otherwise).
        port: the TCP port; None: ``DEFAULT_PORT`` or the next free one; 0: any free one.

    Raises:
        OSError: the port cannot be had (the message names the address).
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, source, token, host=DEFAULT_HOST, port=None):
        check_settings(host, port)
        self.source = source
        self.token = token
        self.session = session_value(token)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.snapshot_lock = threading.Lock()
        self.cached = (0.0, None)   # (monotonic time, JSON bytes) of the last snapshot
        self.thread = None
        if ":" in host:
            self.address_family = socket.AF_INET6
        ports = [port] if port is not None else range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES)
        for i, candidate in enumerate(ports):
            try:
                super().__init__((host, candidate), _Handler)
                break
            except OSError as exc:
                if i == len(ports) - 1:
                    raise OSError(exc.errno, f"Cannot serve the status page on "
                                             f"{url_of((host, candidate))}: "
                                             f"{exc.strerror or exc}") from None
        self.url = url_of(self.server_address)

    def server_bind(self):
        # HTTPServer's own also looks up the host's full name (socket.getfqdn): a DNS query,
        # which on a host without DNS only waits for its timeout. The name is never used.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def start(self):
        """Serve on a daemon thread (the loop checks for ``stop()`` ten times a second)."""
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="purerun-dashboard", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stop serving, close the socket and the source's connection."""
        if self.thread is not None:
            self.shutdown()
            self.thread.join()
            self.thread = None
        self.server_close()
        # A request may still be asking the source; the process is going anyway then.
        if self.snapshot_lock.acquire(timeout=1.0):
            try:
                self.source.close()
            finally:
                self.snapshot_lock.release()

    # Connections beyond MAX_CONNECTIONS are closed at once.
    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        pass   # nothing goes to stderr (see the top); the client sees its connection close

    def authorized(self, headers):
        """Whether a request carries the token, or the cookie that the login set."""
        given = headers.get("Authorization", "")
        if given[:7].lower() == "bearer ":
            return hmac.compare_digest(given[7:].strip().encode("utf-8", "replace"),
                                       self.token)
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("Cookie", ""))
        except Exception:   # http.cookies.CookieError, or worse from a hostile header
            return False
        morsel = cookie.get(COOKIE_NAME)
        return morsel is not None and hmac.compare_digest(
            morsel.value.encode("utf-8", "replace"), self.session.encode())

    def snapshot_json(self):
        """The latest snapshot as JSON bytes, asked of the source at most once per
        ``SNAPSHOT_MAX_AGE_S``."""
        with self.snapshot_lock:
            taken, data = self.cached
            if data is None or time.monotonic() - taken > SNAPSHOT_MAX_AGE_S:
                data = json.dumps(self.source.snapshot(), default=str).encode()
                self.cached = (time.monotonic(), data)
            return data


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "purerun"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT_S

    def log_message(self, format, *args):
        pass   # nothing goes to stderr (see the top)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            from purerun.core.dashboard_page import PAGE, SCRIPT_HASH
            self._send(200, "text/html; charset=utf-8", PAGE, script_hash=SCRIPT_HASH)
        elif path == "/api/snapshot":
            if not self.server.authorized(self.headers):
                return self._json(401, {"error": "The cluster token is needed: log in, or "
                                                 "send 'Authorization: Bearer <token>'."})
            try:
                data = self.server.snapshot_json()
            except (ConnectionError, OSError) as exc:
                return self._json(503, {"error": f"The cluster did not answer: {exc}"})
            self._send(200, "application/json", data)
        else:
            self._json(404, {"error": f"Nothing here: {path}"})

    def do_POST(self):
        path = urlsplit(self.path).path
        if path != "/login":
            return self._json(404, {"error": f"Nothing here: {path}"})
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= LOGIN_BODY_MAX:
            return self._json(400, {"error": "A login is a form with the token, and short."})
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0].strip()
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.server.token):
            self.send_response(303)
            self.send_header("Location", "/#error=token")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(303)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", f"{COOKIE_NAME}={self.server.session}; HttpOnly; "
                                       "SameSite=Strict; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, code, value):
        self._send(code, "application/json", json.dumps(value).encode())

    def _send(self, code, content_type, body, script_hash=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        script = f"'{script_hash}'" if script_hash else "'none'"
        self.send_header("Content-Security-Policy",
                         f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; "
                         "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                         "base-uri 'none'")
        self.end_headers()
        self.wfile.write(body)
