"""The status page (core/dashboard.py): its rules event by event on a NodeState (the worker
output ring, the "dashboard" REQUEST), the snapshot it builds, the HTTP server of a real node
started with ``init(include_dashboard=True)`` (the token refused and accepted, the JSON, 404s,
the loopback bind), a head serving it, and a headless Chromium rendering it (with and
without the token), which leaves a screenshot in ``artifacts/dashboard.png``.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import psutil
import pytest

import purerun
from purerun import api
from purerun.core import context, dashboard, protocol, state_rules
from purerun.core.node_state import WORKER_OUTPUT

from helpers import wait_for
from test_node_state import Node, task

TOKEN = "dashboard-test-token-" + "7" * 32
# The browser gets this long to start, load the page and run its script; it takes 1-3 s.
BROWSER_TIMEOUT_S = 90
# Installing Chromium with apt-get: a download of ~100 MB on a slow mirror.
INSTALL_TIMEOUT_S = 300
CHROMIUM = "/usr/bin/chromium"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the rules, event by event --------------------------------------------------------------------

def dashboard_reply(node, request_id=7):
    node.feed("driver", (protocol.REQUEST, request_id, "dashboard", ()))
    [(_token, reply)] = [(t, m) for t, m in node.take(protocol.REPLY, "driver")
                         if m[1] == request_id]
    assert reply[2], reply[3]
    return reply[3]


def test_worker_output_is_kept_per_worker_in_a_bounded_ring():
    node = Node(cpus=1)
    for i in range(state_rules.LOG_LINES_PER_WORKER + 5):
        node.feed(None, (WORKER_OUTPUT, 4242, 1, f"line {i}"))
    node.feed(None, (WORKER_OUTPUT, 4243, 2, "two\nlines"))
    node.feed(None, (WORKER_OUTPUT, 4243, 1, "x" * (state_rules.LOG_LINE_MAX + 50)))
    logs = {log["pid"]: log for log in dashboard_reply(node)["logs"]}
    first = logs[4242]["lines"]
    assert len(first) == state_rules.LOG_LINES_PER_WORKER
    assert first[0] == (1, "line 5") and first[-1] == (1, f"line {len(first) + 4}")
    assert logs[4243]["lines"][:2] == [(2, "two"), (2, "lines")]
    assert len(logs[4243]["lines"][2][1]) == state_rules.LOG_LINE_MAX
    assert not logs[4242]["alive"]   # no worker of this node has that pid


def test_only_the_workers_seen_last_keep_their_output():
    node = Node(cpus=1)
    for pid in range(state_rules.LOG_WORKERS_KEPT + 3):
        node.feed(None, (WORKER_OUTPUT, pid, 1, "hello"))
    node.feed(None, (WORKER_OUTPUT, 3, 1, "again"))   # 3 is now the latest
    pids = [log["pid"] for log in dashboard_reply(node)["logs"]]
    assert len(pids) == state_rules.LOG_WORKERS_KEPT
    assert pids[-1] == 3 and 0 not in pids and 4 in pids


def test_the_dashboard_request_gives_this_nodes_live_row_store_and_spans():
    node = Node(cpus=2)
    spec = task("busy")
    node.feed("driver", (protocol.SUBMIT, spec))
    [(worker, _spec)] = node.executes()
    reply = dashboard_reply(node)
    [row] = reply["nodes"]
    assert row["node_id"] == (b"N" * 16).hex() == reply["node_id"] and row["this_node"]
    assert row["resources"]["CPU"] == 2 and row["available"]["CPU"] == 1   # one task runs
    assert row["load"]["tasks"] == 1
    assert reply["store"]["arena_capacity"] == node.store.capacity
    assert reply["timeline"] == []
    node.done(worker, spec)
    [span] = dashboard_reply(node, 8)["timeline"]
    assert span["name"] == "busy" and span["dur"] == 1e6   # the worker's span: (0, 1) s
    assert dashboard_reply(node, 9)["nodes"][0]["available"]["CPU"] == 2


def task_summary(node, request_id=11):
    node.feed("driver", (protocol.REQUEST, request_id, "task_summary", (True,)))
    [(_token, reply)] = [(t, m) for t, m in node.take(protocol.REPLY, "driver")
                         if m[1] == request_id]
    assert reply[2], reply[3]
    return reply[3]


def test_the_task_summary_counts_every_task_and_keeps_records_of_the_latest_only():
    node = Node(cpus=1)
    count = state_rules.TASK_SUMMARY_LATEST + 10
    for i in range(count):
        spec = task("many")
        node.feed("driver", (protocol.SUBMIT, spec))
        [(worker, _spec)] = node.executes()
        node.done(worker, spec)
    running, queued = task("slow"), task("slow")
    node.feed("driver", (protocol.SUBMIT, running))
    node.feed("driver", (protocol.SUBMIT, queued))
    summary, total = task_summary(node)
    assert total == count + 2
    assert summary["counts"] == {"many": {"FINISHED": count},
                                 "slow": {"RUNNING": 1, "PENDING_NODE_ASSIGNMENT": 1}}
    latest = summary["latest"]
    assert len(latest) == state_rules.TASK_SUMMARY_LATEST + 2
    assert [r["state"] for r in latest[:2]] == ["RUNNING", "PENDING_NODE_ASSIGNMENT"]
    assert latest[2]["state"] == "FINISHED" and latest[2]["name"] == "many"


def test_summaries_of_several_nodes_add_up():
    gather = state_rules.SummaryGather("driver", 1, {"b"}, {
        "counts": {"f": {"FINISHED": 2}}, "latest": [{"task_id": "1"}]}, 2)
    gather.add(({"counts": {"f": {"FINISHED": 1, "RUNNING": 1}, "g": {"FAILED": 1}},
                 "latest": [{"task_id": "2"}]}, 3))
    summary, total = gather.merged()
    assert total == 5
    assert summary["counts"] == {"f": {"FINISHED": 3, "RUNNING": 1}, "g": {"FAILED": 1}}
    assert summary["latest"] == [{"task_id": "1"}, {"task_id": "2"}]


def test_log_to_driver_false_stops_the_relay_to_that_connection_only():
    node = Node(cpus=1)
    node.connect("tool")
    node.feed("tool", (protocol.REQUEST, 1, "log_to_driver", (False,)))
    node.take()
    node.feed(None, (WORKER_OUTPUT, 4242, 1, "printed"))
    assert [t for t, _m in node.take(protocol.LOG)] == ["driver"]


# -- the snapshot ----------------------------------------------------------------------------------

def test_the_snapshot_counts_tasks_by_state_and_function_and_lists_the_latest_first():
    reply = {"node_id": "aa", "store": {"arena_used": 10, "arena_capacity": 100},
             "timeline": [{"name": "f", "tid": "worker 1", "ts": 1.0, "dur": 2.0}],
             "logs": [{"pid": 1, "alive": True, "lines": [(1, "hi")]}],
             "nodes": [{"node_id": "aa", "node_ip": "127.0.0.1", "alive": True,
                        "this_node": True, "resources": {"CPU": 4.0, "node:x": 1.0},
                        "available": {"CPU": 1.0}, "load": {"tasks": 3}},
                       {"node_id": "bb", "node_ip": "10.0.0.2", "alive": False,
                        "this_node": False, "resources": {"CPU": 2.0}, "available": {},
                        "load": {"object_store_bytes": 5}}]}
    latest = ([{"func_or_class_name": "f", "state": "FINISHED", "end_time_ms": t}
               for t in (5, 9, 7)]
              + [{"func_or_class_name": "g", "state": "RUNNING"},
                 {"func_or_class_name": "f", "state": "FAILED", "end_time_ms": 1}])
    counts = {"f": {"FINISHED": 3, "FAILED": 1}, "g": {"RUNNING": 1}}
    tasks = ({"counts": counts, "latest": latest}, 5)
    actors = [{"class_name": "A", "state": "DEAD", "num_restarts": 2},
              {"class_name": "B", "state": "ALIVE", "num_restarts": 0}]
    snap = dashboard.build_snapshot(reply, tasks, actors)
    json.dumps(snap)   # plain JSON values only
    this, other = snap["nodes"]
    assert this["resources"] == {"CPU": {"total": 4.0, "used": 3.0}}   # no "node:" resource
    assert (this["object_store_used"], this["object_store_capacity"]) == (10, 100)
    assert (other["alive"], other["object_store_used"], other["object_store_capacity"]) == \
        (False, 5, None)
    assert other["resources"]["CPU"]["used"] == 2.0
    assert snap["tasks"]["by_state"] == {"FINISHED": 3, "RUNNING": 1, "FAILED": 1}
    assert snap["tasks"]["total"] == 5
    assert snap["tasks"]["by_function"] == [
        {"name": "f", "total": 4, "states": {"FINISHED": 3, "FAILED": 1}},
        {"name": "g", "total": 1, "states": {"RUNNING": 1}}]
    assert [(t["name"], t["state"], t["end_time_ms"]) for t in snap["tasks"]["recent"]] == [
        ("g", "RUNNING", None), ("f", "FINISHED", 9), ("f", "FINISHED", 7),
        ("f", "FINISHED", 5), ("f", "FAILED", 1)]
    assert [a["class_name"] for a in snap["actors"]["list"]] == ["B", "A"]   # live first
    assert snap["actors"]["by_state"] == {"DEAD": 1, "ALIVE": 1}
    assert snap["timeline"] == [{"name": "f", "worker": "worker 1", "ts": 1.0, "dur": 2.0}]
    assert snap["logs"] == [{"pid": 1, "alive": True, "lines": [[1, "hi"]]}]


# -- init's arguments (checked in the caller, before any node starts) --------------------------

@pytest.mark.parametrize("kwargs, error, words", [
    ({"include_dashboard": "yes"}, TypeError, "include_dashboard"),
    ({"include_dashboard": True, "dashboard_port": -1}, ValueError, "dashboard_port"),
    ({"include_dashboard": True, "dashboard_port": 70000}, ValueError, "dashboard_port"),
    ({"include_dashboard": True, "dashboard_port": "8265"}, TypeError, "dashboard_port"),
    ({"include_dashboard": True, "dashboard_host": 127}, TypeError, "dashboard_host"),
    ({"include_dashboard": True, "dashboard_host": " "}, ValueError, "dashboard_host"),
])
def test_bad_dashboard_arguments_are_refused_by_init(kwargs, error, words):
    settings = {"include_dashboard": None, "dashboard_host": "127.0.0.1",
                "dashboard_port": None}
    settings.update(kwargs)
    with pytest.raises(error, match=words):
        api._dashboard_settings(settings["include_dashboard"], settings["dashboard_host"],
                                settings["dashboard_port"])


def test_a_dashboard_port_in_use_is_refused_by_init():
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"127.0.0.1:{port}.*dashboard_port"):
            api._dashboard_settings(True, "127.0.0.1", port)
    finally:
        taken.close()


def test_the_dashboard_is_off_unless_asked_for():
    assert api._dashboard_settings(None, "127.0.0.1", None) is None
    assert api._dashboard_settings(False, "127.0.0.1", 0) is None
    assert api._dashboard_settings(None, "127.0.0.1", 0) == {"host": "127.0.0.1", "port": 0}


# -- a real node serving it ------------------------------------------------------------------------

@purerun.remote
def dashboard_distinctive_square(x):
    print(f"squaring {x} for the status page")
    return x * x


@purerun.remote(max_restarts=1)
class DashboardCounter:
    def pid(self):
        return os.getpid()


@pytest.fixture(scope="module")
def page():
    """A node serving the status page on a free port, after a few tasks and an actor."""
    saved = {name: os.environ.pop(name, None) for name in
             ("PURERUN_AUTH_TOKEN", "PURERUN_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN",
              "RAY_AUTH_TOKEN_PATH")}
    os.environ["PURERUN_AUTH_TOKEN"] = TOKEN
    try:
        info = purerun.init(num_cpus=2, include_dashboard=True, dashboard_port=0)
        try:
            assert purerun.get([dashboard_distinctive_square.remote(i) for i in range(3)]) \
                == [0, 1, 4]
            counter = DashboardCounter.remote()
            purerun.get(counter.pid.remote())
            info.counter = counter
            yield info
        finally:
            purerun.shutdown()
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def request(info, method, path, headers=None, body=None):
    """(status, headers, body) of one request to the status page."""
    host, port = info.dashboard_url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def snapshot(info, **headers):
    status, _headers, body = request(info, "GET", "/api/snapshot", dict(
        {"Authorization": f"Bearer {TOKEN}"}, **headers))
    assert status == 200, body
    return json.loads(body)


def test_the_url_is_the_context_dashboard_url_on_loopback(page):
    assert re.fullmatch(r"127\.0\.0\.1:\d+", page.dashboard_url)
    assert page["webui_url"] == page.dashboard_url
    port = int(page.dashboard_url.rsplit(":", 1)[1])
    node = psutil.Process(context.client.node.pid)
    [listening] = [c for c in node.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening.laddr.ip == "127.0.0.1"
    # No process of its own: the node's children are its workers.
    workers = set(context.client.request("stats")["workers"].values())
    assert {child.pid for child in node.children()} <= workers


def test_without_the_token_every_data_endpoint_refuses(page):
    for headers in ({}, {"Authorization": "Bearer wrong-token"},
                    {"Authorization": f"Basic {TOKEN}"},
                    {"Cookie": f"{dashboard.COOKIE_NAME}={TOKEN}"},
                    {"Cookie": f"{dashboard.COOKIE_NAME}=deadbeef"}):
        status, reply_headers, body = request(page, "GET", "/api/snapshot", headers)
        assert status == 401, headers
        assert reply_headers["Content-Type"] == "application/json"
        assert "token" in json.loads(body)["error"]
        assert b"dashboard_distinctive_square" not in body
        assert page["node_id"].encode() not in body


def test_with_the_token_the_snapshot_shows_the_live_cluster(page):
    data = snapshot(page)
    [node] = data["nodes"]
    assert node["node_id"] == page["node_id"] and node["alive"] and node["this_node"]
    assert node["resources"]["CPU"]["total"] == 2
    assert node["object_store_capacity"] > 0
    [square] = [f for f in data["tasks"]["by_function"]
                if f["name"] == "dashboard_distinctive_square"]
    assert square["states"] == {"FINISHED": 3}
    [actor] = [a for a in data["actors"]["list"] if a["class_name"] == "DashboardCounter"]
    assert actor["state"] == "ALIVE" and actor["num_restarts"] == 0
    assert data["object_store"]["arena_capacity"] == node["object_store_capacity"]
    assert "dashboard_distinctive_square" in {e["name"] for e in data["timeline"]}
    assert data["host"]["memory_total"] > 0

    def printed():
        lines = [line for log in snapshot(page)["logs"] for _stream, line in log["lines"]]
        return "squaring 2 for the status page" in lines
    wait_for(printed, timeout=10, interval=0.2, message="the task's output on the page")


def test_an_actor_restart_is_counted(page):
    pid = purerun.get(page.counter.pid.remote())
    os.kill(pid, signal.SIGKILL)

    def restarted():
        actors = [a for a in snapshot(page)["actors"]["list"]
                  if a["class_name"] == "DashboardCounter"]
        return actors and actors[0]["num_restarts"] == 1 and actors[0]["state"] == "ALIVE"
    wait_for(restarted, timeout=20, interval=0.2, message="the restart on the page")


def test_the_login_sets_an_httponly_cookie_that_opens_the_data(page):
    body = f"token={TOKEN}".encode()
    status, headers, _ = request(page, "POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded"}, body)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    value = cookie.split(";", 1)[0]
    status, _, body = request(page, "GET", "/api/snapshot", {"Cookie": value})
    assert status == 200 and json.loads(body)["nodes"][0]["node_id"] == page["node_id"]


def test_a_wrong_login_sets_no_cookie(page):
    status, headers, _ = request(page, "POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded"}, b"token=guess")
    assert status == 303 and headers["Location"] == "/#error=token"
    assert "Set-Cookie" not in headers
    status, _, _ = request(page, "POST", "/login", {"Content-Length": "999999"})
    assert status == 400


def test_unknown_paths_are_404(page):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path in (("GET", "/nothing"), ("GET", "/api/snapshot/more"),
                         ("GET", "/api"), ("POST", "/api/snapshot"), ("GET", "/login")):
        status, headers, body = request(page, method, path, auth)
        assert status == 404, (method, path)
        assert "error" in json.loads(body)


def test_the_page_holds_no_data_and_loads_nothing_from_elsewhere(page):
    status, headers, body = request(page, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    text = body.decode()
    assert page["node_id"] not in text and "dashboard_distinctive_square" not in text
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy


# -- a head serving it -----------------------------------------------------------------------------

def test_a_head_serves_the_page_of_its_nodes(tmp_path):
    from purerun.core import launcher
    env = dict(os.environ, PURERUN_AUTH_TOKEN=TOKEN)
    env.pop("PURERUN_AUTH_TOKEN_PATH", None)
    address_file = tmp_path / "address"
    head = subprocess.Popen(
        [sys.executable, "-m", "purerun.head", "--port", "0", "--dashboard-port", "0",
         "--address-file", str(address_file)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    node = None
    try:
        wait_for(address_file.exists, timeout=30, message="the head's address file")
        address = address_file.read_text().strip()
        os.environ["PURERUN_AUTH_TOKEN"], saved = TOKEN, os.environ.get("PURERUN_AUTH_TOKEN")
        try:
            url = launcher.dashboard_url(address)
        finally:
            os.environ.pop("PURERUN_AUTH_TOKEN")
            if saved is not None:
                os.environ["PURERUN_AUTH_TOKEN"] = saved
        assert re.fullmatch(r"127\.0\.0\.1:\d+", url)

        class Info:
            dashboard_url = url
        data = snapshot(Info)
        assert data["nodes"] == [] and "No node of this host" in data["note"]
        assert request(Info, "GET", "/api/snapshot")[0] == 401
        node = launcher.spawn_node({"CPU": 1.0}, 32 << 20, head=address, env=env,
                                   die_with_parent=True)

        def joined():
            rows = snapshot(Info)["nodes"]
            return rows and rows[0]["alive"] and rows[0]["node_id"] == node.node_id
        wait_for(joined, timeout=30, interval=0.2, message="the node on the head's page")
    finally:
        if node is not None:
            node.process.terminate()
            node.reap(10)
        head.terminate()
        out, _err = head.communicate(timeout=30)
    assert f"Status page:       http://{url}" in out


def test_purerun_start_head_serves_the_page_and_drivers_learn_its_address(tmp_path):
    from test_cli_cluster import CommandLine, gone, stop_everything
    cli = CommandLine(tmp_path)
    try:
        _address, banner = cli.start_head("--dashboard-port", "0")
        url = re.search(r"http://(\S+) \(log in with the cluster token\)", banner).group(1)
        token = (cli.home / ".purerun" / "auth_token").read_text().strip()

        class Info:
            dashboard_url = url
        status, _headers, body = request(Info, "GET", "/api/snapshot",
                                         {"Authorization": f"Bearer {token}"})
        assert status == 200 and [n["alive"] for n in json.loads(body)["nodes"]] == [True]
        assert request(Info, "GET", "/api/snapshot")[0] == 401
        driver = cli.driver("""
            import purerun
            print("url", purerun.init(address="auto").dashboard_url)
        """)
        assert driver.returncode == 0, driver.stderr
        assert f"url {url}" in driver.stdout
        refused = cli.run("start", "--dashboard-port", "0")
        assert refused.returncode == 2 and "--head" in refused.stderr
        stop_everything(cli, 2)
    finally:
        for record in cli.records():
            if not gone(record["pid"]):
                psutil.Process(record["pid"]).kill()
        shutil.rmtree(cli.tmp, ignore_errors=True)


# -- a real browser --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium: installed with apt-get when missing and this is root, else the
    browser tests are skipped."""
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y",
                   "--no-install-recommends", "chromium"]
        try:
            if subprocess.run(install, env=env, capture_output=True,
                              timeout=INSTALL_TIMEOUT_S).returncode != 0:
                subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update"],
                               env=env, capture_output=True, timeout=INSTALL_TIMEOUT_S)
                subprocess.run(install, env=env, capture_output=True,
                               timeout=INSTALL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            pass
        path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        pytest.skip("Chromium is not installed (/usr/bin/chromium) and could not be "
                    "installed with 'apt-get install -y chromium' (needs root and apt-get)")
    return path


def browse(chromium, url, *flags):
    """Run headless Chromium on ``url``; returns its stdout. Chromium and every process it
    started are killed and reaped before this returns."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", *flags, url]
    browser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        out, _err = browser.communicate(timeout=BROWSER_TIMEOUT_S)
    finally:
        family = _family(browser.pid)
        for proc in family:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        browser.wait()
        psutil.wait_procs(family, timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    return out.decode("utf-8", "replace")


def _family(pid):
    """``pid``'s descendants, and the other processes of its session (those that left it)."""
    found = {}
    try:
        for child in psutil.Process(pid).children(recursive=True):
            found[child.pid] = child
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter():
        try:
            if proc.pid != pid and os.getsid(proc.pid) == pid:
                found[proc.pid] = proc
        except (OSError, psutil.Error):
            pass
    return list(found.values())


def artifacts_dir():
    path = os.environ.get("PURERUN_ARTIFACTS_DIR") or os.path.join(REPO, "artifacts")
    os.makedirs(path, exist_ok=True)
    return path


# The first one to run may install Chromium (the session fixture): time for that too.
@pytest.mark.timeout(INSTALL_TIMEOUT_S * 3 + 120)
def test_a_browser_without_the_token_sees_the_login_and_no_data(page, chromium):
    dom = browse(chromium, f"http://{page.dashboard_url}/", "--dump-dom",
                 "--virtual-time-budget=3000")
    assert 'id="login"' in dom and "Log in" in dom
    assert re.search(r'<form id="login"[^>]*>', dom) and \
        "hidden" not in re.search(r'<form id="login"[^>]*>', dom).group(0)
    assert "dashboard_distinctive_square" not in dom
    assert page["node_id"][:12] not in dom
    assert "not logged in" in dom


# The first one to run may install Chromium (the session fixture): time for that too.
@pytest.mark.timeout(INSTALL_TIMEOUT_S * 3 + 120)
def test_a_browser_with_the_token_shows_the_nodes_and_the_task(page, chromium):
    url = f"http://{page.dashboard_url}/#token={TOKEN}"
    dom = browse(chromium, url, "--dump-dom", "--virtual-time-budget=5000")
    assert page["node_id"][:12] in dom
    assert "dashboard_distinctive_square" in dom
    assert "DashboardCounter" in dom and "squaring" in dom
    assert re.search(r"1 node\(s\) alive", dom)
    path = os.path.join(artifacts_dir(), "dashboard.png")
    if os.path.exists(path):
        os.unlink(path)
    browse(chromium, url, f"--screenshot={path}", "--window-size=1280,1000",
           "--virtual-time-budget=5000", "--hide-scrollbars")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000
    print(f"status page screenshot: {path}")
