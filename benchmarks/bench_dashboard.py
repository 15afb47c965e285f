"""Benchmarks for the status page (core/dashboard.py): what it costs the node.

Run with::

    python -m pytest benchmarks/bench_dashboard.py --benchmark-only -s

* ``test_node_memory_with_and_without_the_dashboard``: the node's resident memory (RSS and
  USS, psutil) after the same work, on a node started without the status page and on one
  started with it — idle, then after a browser-like run of snapshot requests. The figures
  are in ``extra_info`` (MiB) and printed; the row itself times one snapshot request over
  HTTP (served from the half-second cache or made anew).
* ``test_snapshot_of_a_busy_node``: one snapshot as the server's thread asks it of the node
  (the "dashboard" request plus the cluster's tasks and actors), with
  ``HISTORY_TASKS`` finished tasks in the node's history: the work a polling browser causes
  at most every ``SNAPSHOT_MAX_AGE_S``.

No timing or size is asserted.
"""

import http.client
import json
import os
import time

import psutil
import pytest

import purerun
from purerun.core import context, dashboard

TOKEN = "bench-dashboard-token-" + "5" * 32
# Snapshot requests made "with the page open": one per cache period, as a browser polling
# every second would cause at most twice over.
POLLS = 10
# Tasks run before measuring: the node's pages of a warm, used node.
WARM_TASKS = 200
HISTORY_TASKS = 2000


@purerun.remote
def small(i):
    return i


@pytest.fixture
def token_env():
    saved = os.environ.get("PURERUN_AUTH_TOKEN")
    os.environ["PURERUN_AUTH_TOKEN"] = TOKEN
    yield
    if saved is None:
        os.environ.pop("PURERUN_AUTH_TOKEN")
    else:
        os.environ["PURERUN_AUTH_TOKEN"] = saved


def _get_snapshot(url):
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/api/snapshot", headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        return json.loads(body)
    finally:
        conn.close()


def _node_memory():
    info = psutil.Process(context.client.node.pid).memory_full_info()
    return info.rss / 2**20, info.uss / 2**20


def _warm_node(**init):
    ctx = purerun.init(num_cpus=2, **init)
    purerun.get([small.remote(i) for i in range(WARM_TASKS)])
    purerun.get(purerun.put(b"x" * 1000))
    return ctx


def test_node_memory_with_and_without_the_dashboard(benchmark, token_env):
    _warm_node()
    without = _node_memory()
    purerun.shutdown()
    ctx = _warm_node(include_dashboard=True, dashboard_port=0)
    try:
        idle = _node_memory()
        for _ in range(POLLS):
            _get_snapshot(ctx.dashboard_url)
            time.sleep(dashboard.SNAPSHOT_MAX_AGE_S)   # each poll makes a new snapshot
        used = _node_memory()
        benchmark.pedantic(_get_snapshot, args=(ctx.dashboard_url,), rounds=20,
                           warmup_rounds=1)
    finally:
        purerun.shutdown()
    figures = {"rss_without_mib": without[0], "rss_with_idle_mib": idle[0],
               "rss_with_after_polls_mib": used[0], "uss_without_mib": without[1],
               "uss_with_idle_mib": idle[1], "uss_with_after_polls_mib": used[1],
               "rss_overhead_after_polls_mib": used[0] - without[0]}
    benchmark.extra_info.update({k: round(v, 2) for k, v in figures.items()})
    print("\nnode memory (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))


def test_snapshot_of_a_busy_node(benchmark, token_env):
    purerun.init(num_cpus=2)
    try:
        for start in range(0, HISTORY_TASKS, 500):
            purerun.get([small.remote(i) for i in range(start, start + 500)])
        source = dashboard.NodeSource(context.client.info["address"])
        try:
            snap = benchmark.pedantic(source.snapshot, rounds=10, warmup_rounds=1)
        finally:
            source.close()
    finally:
        purerun.shutdown()
    benchmark.extra_info["tasks_in_history"] = snap["tasks"]["total"]
    benchmark.extra_info["snapshot_json_kib"] = round(len(json.dumps(snap)) / 1024, 1)
