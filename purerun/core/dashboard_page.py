"""The status page's one HTML document (core/dashboard.py serves it at ``/``).

It holds no data: its script polls ``/api/snapshot`` once a second and draws what comes
back with DOM calls (``textContent``, never markup), so no value from the cluster is read as
HTML. Without the token (a 401) it shows the login form only. ``#token=...`` in its address
logs in without the form: the script sends it as ``Authorization: Bearer``, posts it once to
``/login`` for the cookie, and takes it out of the address. No external asset is loaded;
the Content-Security-Policy lets only this script run (``SCRIPT_HASH``).
"""

import base64
import hashlib

__all__ = ["PAGE", "SCRIPT_HASH", "POLL_INTERVAL_MS"]

# How often the page asks for a snapshot.
POLL_INTERVAL_MS = 1000

_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       background: #f4f5f7; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex;
         align-items: baseline; gap: 16px; }
header h1 { font-size: 18px; margin: 0; }
header span { color: #b8c0d0; font-size: 13px; }
main { padding: 12px 20px; display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
section { background: #fff; border-radius: 6px; padding: 10px 14px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid #eceef2;
         white-space: nowrap; }
th { color: #5a6274; font-weight: 600; }
.bar { position: relative; background: #e6e9ef; border-radius: 3px; height: 16px;
       min-width: 120px; }
.bar div { background: #4c8bf5; height: 100%; border-radius: 3px; }
.bar span { position: absolute; left: 6px; top: 0; font-size: 11px; line-height: 16px; }
.chip { display: inline-block; padding: 2px 8px; margin: 0 6px 6px 0; border-radius: 10px;
        background: #e6e9ef; font-size: 12px; }
.FINISHED, .ALIVE { background: #d7f0dc; } .FAILED, .DEAD { background: #f8d7d7; }
.RUNNING, .RESTARTING { background: #fff0c2; }
.muted { color: #7a8294; }
.lane { position: relative; height: 18px; background: #f4f5f7; margin-bottom: 3px; }
.lane div { position: absolute; top: 2px; height: 14px; background: #4c8bf5;
            min-width: 2px; border-radius: 2px; }
.lanes { display: grid; grid-template-columns: 130px 1fr; gap: 0 8px; font-size: 12px; }
pre { background: #1d2330; color: #dfe4ee; padding: 6px 8px; border-radius: 4px;
      font-size: 12px; max-height: 180px; overflow: auto; margin: 4px 0 10px; }
pre .err { color: #ff9d9d; }
#login { max-width: 420px; margin: 60px auto; }
#login input { width: 100%; padding: 6px; margin: 8px 0; box-sizing: border-box; }
.error { color: #b00020; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var bearer = null;
  var hash = location.hash;
  var given = /(?:^#|&)token=([^&]*)/.exec(hash);
  var wrong = /(?:^#|&)error=token/.test(hash);
  if (given || wrong) history.replaceState(null, "", location.pathname);
  if (given) {
    bearer = decodeURIComponent(given[1]);
    fetch("/login", {method: "POST", credentials: "same-origin", redirect: "manual",
                     headers: {"Content-Type": "application/x-www-form-urlencoded"},
                     body: "token=" + encodeURIComponent(bearer)}).catch(function () {});
  }

  function h(tag, props) {
    var node = document.createElement(tag);
    for (var key in props || {}) {
      if (key === "text") node.textContent = props[key];
      else if (key === "style") node.style.cssText = props[key];
      else node.setAttribute(key, props[key]);
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(child));
    }
    return node;
  }
  function bytes(n) {
    if (n === null || n === undefined) return "?";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }
  function amount(x) { return Math.round(x * 100) / 100; }
  function bar(used, total, label) {
    var share = total > 0 ? Math.min(100, 100 * used / total) : 0;
    return h("div", {"class": "bar", title: label},
             h("div", {style: "width:" + share.toFixed(1) + "%"}), h("span", {text: label}));
  }
  function table(columns, rows) {
    var head = h("tr");
    columns.forEach(function (c) { head.appendChild(h("th", {text: c})); });
    var t = h("table", {}, h("thead", {}, head)), body = h("tbody");
    rows.forEach(function (cells) {
      var tr = h("tr");
      cells.forEach(function (c) {
        tr.appendChild(typeof c === "object" && c !== null ? h("td", {}, c)
                                                            : h("td", {text: c === null ? "" : c}));
      });
      body.appendChild(tr);
    });
    t.appendChild(body);
    return t;
  }
  function chips(counts) {
    var box = h("div");
    Object.keys(counts).sort().forEach(function (state) {
      box.appendChild(h("span", {"class": "chip " + state, text: state + " " + counts[state]}));
    });
    if (!box.firstChild) box.appendChild(h("span", {"class": "muted", text: "none"}));
    return box;
  }
  function short(id) { return id ? id.slice(0, 12) : ""; }
  function section(title, wide) {
    var s = h("section", wide ? {"class": "wide"} : {}, h("h2", {text: title}));
    return s;
  }

  function nodes(data) {
    var s = section("Nodes", true);
    s.appendChild(table(["Node", "IP", "State", "CPU", "Memory", "Object store", "Tasks",
                         "Actors", "Objects"], data.nodes.map(function (n) {
      var cpu = n.resources.CPU || {used: 0, total: 0};
      var mem = n.resources.memory || {used: 0, total: 0};
      var store = n.object_store_capacity === null
        ? bytes(n.object_store_used) + " used"
        : bar(n.object_store_used, n.object_store_capacity,
              bytes(n.object_store_used) + " / " + bytes(n.object_store_capacity));
      return [h("span", {"class": "node-id", text: short(n.node_id) + (n.this_node ? " (this)" : "")}),
              n.ip, n.alive ? "ALIVE" : "DEAD",
              bar(cpu.used, cpu.total, amount(cpu.used) + " / " + amount(cpu.total) + " CPU"),
              bar(mem.used, mem.total, bytes(mem.used) + " / " + bytes(mem.total)),
              store, n.tasks, n.actors, n.objects];
    })));
    if (data.host) {
      s.appendChild(h("p", {"class": "muted", text: "This host: CPU " +
        data.host.cpu_percent.toFixed(0) + "% of " + data.host.cpus + " cores, memory " +
        bytes(data.host.memory_used) + " / " + bytes(data.host.memory_total) + " in use."}));
    }
    return s;
  }
  function tasks(data) {
    var s = section("Tasks (" + data.tasks.total + ")");
    s.appendChild(chips(data.tasks.by_state));
    var states = Object.keys(data.tasks.by_state).sort();
    s.appendChild(table(["Function", "Total"].concat(states), data.tasks.by_function.map(
      function (f) {
        return [h("span", {"class": "function", text: f.name}), f.total].concat(
          states.map(function (st) { return f.states[st] || 0; }));
      })));
    return s;
  }
  function actors(data) {
    var s = section("Actors (" + data.actors.total + ")");
    s.appendChild(chips(data.actors.by_state));
    s.appendChild(table(["Class", "Name", "State", "Restarts", "PID", "Node"],
      data.actors.list.map(function (a) {
        return [a.class_name, a.name, h("span", {"class": "chip " + a.state, text: a.state}),
                a.num_restarts, a.pid, short(a.node_id)];
      })));
    return s;
  }
  function store(data) {
    var s = section("Object store (this node)");
    var st = data.object_store;
    if (!st) { s.appendChild(h("p", {"class": "muted", text: "Not known here."})); return s; }
    s.appendChild(bar(st.arena_used, st.arena_capacity, bytes(st.arena_used) + " / " +
                      bytes(st.arena_capacity) + " in memory"));
    s.appendChild(table(["Objects", "Spilled now", "Spilled (times)", "Restored (times)",
                         "Largest free block"],
                        [[st.num_objects, bytes(st.spilled_bytes), st.num_spilled,
                          st.num_restored, bytes(st.arena_largest_free)]]));
    return s;
  }
  function recent(data) {
    var s = section("Latest tasks");
    s.appendChild(table(["Function", "State", "Node", "Worker PID", "Took"],
      data.tasks.recent.map(function (t) {
        var took = t.end_time_ms && t.start_time_ms ? (t.end_time_ms - t.start_time_ms) + " ms" : "";
        return [t.name, h("span", {"class": "chip " + t.state, text: t.state}),
                short(t.node_id), t.worker_pid, took];
      })));
    return s;
  }
  function timeline(data) {
    var s = section("Timeline (latest task spans, this node)", true);
    var events = data.timeline;
    if (!events.length) { s.appendChild(h("p", {"class": "muted", text: "No task ran yet."})); return s; }
    var start = Math.min.apply(null, events.map(function (e) { return e.ts; }));
    var end = Math.max.apply(null, events.map(function (e) { return e.ts + e.dur; }));
    var span = Math.max(end - start, 1), lanes = {}, box = h("div", {"class": "lanes"});
    events.forEach(function (e) { (lanes[e.worker] = lanes[e.worker] || []).push(e); });
    Object.keys(lanes).sort().forEach(function (worker) {
      var lane = h("div", {"class": "lane"});
      lanes[worker].forEach(function (e) {
        lane.appendChild(h("div", {title: e.name + ": " + (e.dur / 1000).toFixed(1) + " ms",
          style: "left:" + (100 * (e.ts - start) / span).toFixed(2) + "%;width:" +
                 (100 * e.dur / span).toFixed(2) + "%"}));
      });
      box.appendChild(h("div", {text: worker}));
      box.appendChild(lane);
    });
    s.appendChild(box);
    s.appendChild(h("p", {"class": "muted", text: "Spanning " + (span / 1e6).toFixed(2) + " s."}));
    return s;
  }
  function logs(data) {
    var s = section("Worker output (latest lines)", true);
    if (!data.logs.length) { s.appendChild(h("p", {"class": "muted", text: "No output yet."})); return s; }
    data.logs.slice().reverse().forEach(function (log) {
      s.appendChild(h("div", {text: "worker pid " + log.pid + (log.alive ? "" : " (exited)")}));
      var pre = h("pre");
      log.lines.slice(-20).forEach(function (l) {
        pre.appendChild(h("span", l[0] === 2 ? {"class": "err", text: l[1] + "\n"} : {text: l[1] + "\n"}));
      });
      s.appendChild(pre);
    });
    return s;
  }

  var main = document.getElementById("data"), status = document.getElementById("status");
  var login = document.getElementById("login");
  if (wrong) document.getElementById("wrong").hidden = false;

  function render(data) {
    login.hidden = true;
    var alive = data.nodes.filter(function (n) { return n.alive; }).length;
    status.textContent = alive + " node(s) alive, updated " + new Date(data.time * 1000).toLocaleTimeString();
    var parts = [nodes(data), tasks(data), actors(data), recent(data), store(data),
                 timeline(data), logs(data)];
    if (data.note) parts.unshift(h("section", {"class": "wide muted", text: data.note}));
    main.replaceChildren.apply(main, parts);
  }
  function refused() {
    main.replaceChildren();
    status.textContent = "not logged in";
    login.hidden = false;
  }
  function poll() {
    var headers = {};
    if (bearer) headers.Authorization = "Bearer " + bearer;
    fetch("/api/snapshot", {headers: headers, credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 401) { bearer = null; refused(); return null; }
        return r.json().then(function (body) {
          if (!r.ok) { status.textContent = body.error || ("error " + r.status); return; }
          render(body);
        });
      })
      .catch(function (e) { status.textContent = "cannot reach the cluster (" + e + ")"; })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
"""

_SCRIPT = _SCRIPT.replace("POLL_MS", str(POLL_INTERVAL_MS))

#: What the Content-Security-Policy allows to run: this script, and nothing else.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()

PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>purerun status</title>
<style>{_STYLE}</style></head>
<body>
<header><h1>purerun</h1><span id="status">loading…</span></header>
<form id="login" method="post" action="/login" hidden>
  <h2>Log in</h2>
  <p>This page needs the cluster token: the one in <code>$PURERUN_AUTH_TOKEN</code>, or in
  <code>~/.purerun/auth_token</code> on the host that started the cluster.</p>
  <p id="wrong" class="error" hidden>That token is not the cluster's.</p>
  <input type="password" name="token" autocomplete="current-password" placeholder="token"
         required>
  <button type="submit">Log in</button>
</form>
<main id="data"></main>
<script>{_SCRIPT}</script>
</body></html>
""".encode()
