"""``purerun microbenchmark``: the rows of Ray's ``ray microbenchmark`` that use the public API.

Same names and the same work per timed call as Ray's suite, so the two can be compared
line by line; ``--backend ray`` runs this very code on Ray (when installed). Each row is
timed in a few short trials (Ray's harness: warm up, then trials of a fixed duration) and
printed as ``<name> per second <mean> +- <sd>``. Also printed: time from init() to the
first task's result, shutdown time, idle memory and process count of the cluster, and two
reference rows from the standard library (``multiprocessing.Pool.apply`` and
``apply_async``).

Run: ``python -m purerun.microbenchmark [--backend purerun|ray] [--filter SUBSTR]
[--trial-seconds S] [--json FILE] [--cluster]``.

``--cluster`` starts a two-node cluster on this host instead of one node
(``cluster_utils.Cluster``: a head, the driver's node A and a node B, each with every CPU,
joined over loopback TCP) and runs the cross-node rows only, each named with
"(cross-node)": "single client tasks sync" and "async" with every task pinned to B by hard
node affinity; "multi client tasks async" with its four client actors on A and their tasks
on B; the 1:1 actor rows with the actor on B; and "1:1 object transfer 100 MB get", the
driver's ``get`` on A of a 100 MB array a task made on B, timed from the call to the value
(making it and waiting for it to be ready are off the clock; one get per trial, after one
untimed warm-up). The default mode's rows of the same names are their single-node
counterparts; the transfer has none, as a get on the node that holds a value maps it in
place.
"""

import argparse
import gc
import importlib
import json
import multiprocessing
import os
import statistics
import sys
import time

import psutil

# Short trials keep the whole run under a few minutes; medians of several trials smooth a
# shared, noisy machine.
DEFAULT_TRIAL_SECONDS = 1.0
DEFAULT_TRIALS = 4
WARMUP_SECONDS = 0.3


def timeit(name, fn, multiplier=1, trial_seconds=DEFAULT_TRIAL_SECONDS, trials=DEFAULT_TRIALS,
           results=None):
    """Time ``fn`` like Ray's harness: warm up, then trials of ``trial_seconds`` each."""
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < WARMUP_SECONDS:
        fn()
        count += 1
    step = count // 10 + 1
    rates = []
    for _ in range(trials):
        start = time.perf_counter()
        done = 0
        while time.perf_counter() - start < trial_seconds:
            for _ in range(step):
                fn()
            done += step
        rates.append(multiplier * done / (time.perf_counter() - start))
    mean = statistics.mean(rates)
    sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
    print(f"{name} per second {round(mean, 2)} +- {round(sd, 2)}", flush=True)
    if results is not None:
        results.append({"name": name, "mean": mean, "sd": sd, "median": statistics.median(rates)})
    return mean


def cluster_processes(ray):
    """The processes of the local cluster: this driver's children (node and workers)."""
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if p.is_running()]


def idle_memory(processes):
    """(RSS, USS) in bytes summed over processes; USS counts pages only that process has."""
    rss = uss = 0
    for p in processes:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        uss += info.uss
    return rss, uss


def run(backend="purerun", name_filter="", trial_seconds=DEFAULT_TRIAL_SECONDS,
        trials=DEFAULT_TRIALS, json_path=None, with_stdlib=True):
    ray = importlib.import_module(backend)
    import numpy as np

    results = []
    extra = {}

    def wanted(name):
        return name_filter in name

    def bench(name, fn, multiplier=1):
        if wanted(name):
            timeit(name, fn, multiplier, trial_seconds, trials, results)

    # -- startup ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False) if backend == "ray" else \
        ray.init(num_cpus=os.cpu_count())

    @ray.remote
    def small_value():
        return b"ok"

    ray.get(small_value.remote())
    extra["init_to_first_result_s"] = time.perf_counter() - t0
    print(f"init to first result {extra['init_to_first_result_s']:.3f} s", flush=True)

    # Idle memory once a couple of workers exist and have settled.
    ray.get([small_value.remote() for _ in range(2)])
    gc.collect()
    procs = cluster_processes(ray)
    rss, uss = idle_memory(procs)
    extra.update(idle_processes=len(procs), idle_rss_mib=rss / 2**20, idle_uss_mib=uss / 2**20)
    print(f"idle cluster: {len(procs)} processes, RSS {rss / 2**20:.0f} MiB, "
          f"USS {uss / 2**20:.0f} MiB", flush=True)

    @ray.remote(num_cpus=0)
    class Actor:
        def small_value(self):
            return b"ok"

        def small_value_arg(self, x):
            return b"ok"

        def small_value_batch(self, n):
            ray.get([small_value.remote() for _ in range(n)])

    @ray.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

        async def small_value_with_arg(self, i):
            return b"ok"

    @ray.remote(num_cpus=0)
    class Client:
        def __init__(self, servers):
            if not isinstance(servers, list):
                servers = [servers]
            self.servers = servers

        def small_value_batch(self, n):
            results = []
            for s in self.servers:
                results.extend([s.small_value.remote() for _ in range(n)])
            ray.get(results)

        def small_value_batch_arg(self, n):
            x = ray.put(0)
            results = []
            for s in self.servers:
                results.extend([s.small_value_arg.remote(x) for _ in range(n)])
            ray.get(results)

    @ray.remote
    def do_put_small():
        for _ in range(100):
            ray.put(0)

    @ray.remote
    def do_put():
        for _ in range(10):
            ray.put(np.zeros(10 * 1024 * 1024, dtype=np.int64))

    @ray.remote
    def create_object_containing_ref():
        obj_refs = []
        for _ in range(10000):
            obj_refs.append(ray.put(1))
        return obj_refs

    n_cpu = max(1, multiprocessing.cpu_count() // 2)

    value = ray.put(0)
    bench("single client get calls (Plasma Store)", lambda: ray.get(value))
    bench("single client put calls (Plasma Store)", lambda: ray.put(0))
    bench("multi client put calls (Plasma Store)",
          lambda: ray.get([do_put_small.remote() for _ in range(10)]), 1000)

    if wanted("gigabytes"):
        arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)
        bench("single client put gigabytes", lambda: ray.put(arr), 8 * 0.1)
        big = ray.put(arr)
        bench("single client get gigabytes (800 MB array)", lambda: ray.get(big), 8 * 0.1)
        # The machine's own copy speed, for scale: a put is one copy of the array.
        dst = np.empty_like(arr)
        bench("memcpy gigabytes (reference)", lambda: np.copyto(dst, arr), 8 * 0.1)
        del arr, big, dst
        gc.collect()

    if wanted("single client get object containing 10k refs"):
        ref = create_object_containing_ref.remote()
        ray.get(ref)
        bench("single client get object containing 10k refs", lambda: ray.get(ref))
        del ref

    if wanted("single client wait 1k refs"):
        def wait_multiple_refs():
            num_objs = 1000
            not_ready = [small_value.remote() for _ in range(num_objs)]
            for _ in range(num_objs):
                _ready, not_ready = ray.wait(not_ready)
        bench("single client wait 1k refs", wait_multiple_refs)

    bench("single client tasks and get batch",
          lambda: ray.get([small_value.remote() for _ in range(1000)]))
    bench("multi client put gigabytes", lambda: ray.get([do_put.remote() for _ in range(10)]), 8)
    bench("single client tasks sync", lambda: ray.get(small_value.remote()))
    bench("single client tasks async",
          lambda: ray.get([small_value.remote() for _ in range(1000)]), 1000)

    if wanted("multi client tasks async"):
        n = 10000
        m = 4
        actors = [Actor.remote() for _ in range(m)]
        bench("multi client tasks async",
              lambda: ray.get([a.small_value_batch.remote(n) for a in actors]), n * m)
        del actors

    a = Actor.remote()
    bench("1:1 actor calls sync", lambda: ray.get(a.small_value.remote()))
    bench("1:1 actor calls async",
          lambda: ray.get([a.small_value.remote() for _ in range(1000)]), 1000)
    a = Actor.options(max_concurrency=16).remote()
    bench("1:1 actor calls concurrent",
          lambda: ray.get([a.small_value.remote() for _ in range(1000)]), 1000)

    fan_out_rows(ray, bench, wanted, "actor", Actor, Client, n_cpu)

    if wanted("n:n actor calls with arg async"):
        n = 1000
        actors = [Actor.remote() for _ in range(n_cpu)]
        clients = [Client.remote(a) for a in actors]
        bench("n:n actor calls with arg async",
              lambda: ray.get([c.small_value_batch_arg.remote(n) for c in clients]),
              n * len(clients))
        del actors, clients

    aa = AsyncActor.remote()
    bench("1:1 async-actor calls sync", lambda: ray.get(aa.small_value.remote()))
    bench("1:1 async-actor calls async",
          lambda: ray.get([aa.small_value.remote() for _ in range(1000)]), 1000)
    bench("1:1 async-actor calls with args async",
          lambda: ray.get([aa.small_value_with_arg.remote(i) for i in range(1000)]), 1000)

    fan_out_rows(ray, bench, wanted, "async-actor", AsyncActor, Client, n_cpu)

    t = time.perf_counter()
    ray.shutdown()
    extra["shutdown_s"] = time.perf_counter() - t
    print(f"shutdown {extra['shutdown_s']:.3f} s", flush=True)

    if with_stdlib:
        _stdlib_rows(bench)

    if json_path:
        with open(json_path, "w") as f:
            json.dump({"backend": backend, "rows": results, "extra": extra}, f, indent=1)
    return results, extra


def run_cluster(backend="purerun", name_filter="", trial_seconds=DEFAULT_TRIAL_SECONDS,
                trials=DEFAULT_TRIALS, json_path=None):
    """The ``--cluster`` rows (see the module docstring)."""
    ray = importlib.import_module(backend)
    Cluster = importlib.import_module(f"{backend}.cluster_utils").Cluster
    strategies = importlib.import_module(f"{backend}.util.scheduling_strategies")

    results = []
    extra = {"mode": "cluster"}

    def bench(name, fn, multiplier=1):
        if name_filter in name:
            timeit(name, fn, multiplier, trial_seconds, trials, results)

    t0 = time.perf_counter()
    cpus = os.cpu_count()
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": cpus})
    try:
        node_b = cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        on_a = strategies.NodeAffinitySchedulingStrategy(cluster.head_node.unique_id, soft=False)
        on_b = strategies.NodeAffinitySchedulingStrategy(node_b.unique_id, soft=False)

        @ray.remote
        def small_value():
            return b"ok"

        remote_value = small_value.options(scheduling_strategy=on_b)
        ray.get(remote_value.remote())
        extra["cluster_to_first_result_s"] = time.perf_counter() - t0
        print(f"cluster ({cpus} + {cpus} CPUs) to first cross-node result "
              f"{extra['cluster_to_first_result_s']:.3f} s", flush=True)

        @ray.remote(num_cpus=0)
        class Actor:
            def small_value(self):
                return b"ok"

            def small_value_batch(self, n):
                ray.get([remote_value.remote() for _ in range(n)])

        bench("single client tasks sync (cross-node)", lambda: ray.get(remote_value.remote()))
        bench("single client tasks async (cross-node)",
              lambda: ray.get([remote_value.remote() for _ in range(1000)]), 1000)

        name = "multi client tasks async (cross-node)"
        if name_filter in name:
            n, m = 10000, 4
            clients = [Actor.options(scheduling_strategy=on_a).remote() for _ in range(m)]
            bench(name, lambda: ray.get([c.small_value_batch.remote(n) for c in clients]),
                  n * m)

        if any(name_filter in row for row in ("1:1 actor calls sync (cross-node)",
                                              "1:1 actor calls async (cross-node)")):
            actor = Actor.options(scheduling_strategy=on_b).remote()
            bench("1:1 actor calls sync (cross-node)",
                  lambda: ray.get(actor.small_value.remote()))
            bench("1:1 actor calls async (cross-node)",
                  lambda: ray.get([actor.small_value.remote() for _ in range(1000)]), 1000)

        name = "1:1 object transfer 100 MB get (cross-node)"
        if name_filter in name:
            _transfer_row(ray, name, on_b, trials, results)
    finally:
        t = time.perf_counter()
        cluster.shutdown()
        extra["shutdown_s"] = time.perf_counter() - t
    print(f"cluster shutdown {extra['shutdown_s']:.3f} s", flush=True)

    if json_path:
        with open(json_path, "w") as f:
            json.dump({"backend": backend, "rows": results, "extra": extra}, f, indent=1)
    return results, extra


# A 100 MB value: made on node B, got on node A.
TRANSFER_BYTES = 100 * 1000 * 1000


def _transfer_row(ray, name, on_b, trials, results):
    """Gets per second of a fresh 100 MB value held by node B; each get timed alone."""
    @ray.remote
    def make(seed):
        import numpy as np
        return np.full(TRANSFER_BYTES, seed % 256, dtype=np.uint8)

    maker = make.options(scheduling_strategy=on_b)
    rates = []
    for trial in range(trials + 1):   # the first one warms A's arena up, untimed
        ref = maker.remote(trial)
        ray.wait([ref], fetch_local=False)
        start = time.perf_counter()
        value = ray.get(ref)
        elapsed = time.perf_counter() - start
        if value.shape != (TRANSFER_BYTES,) or value[-1] != trial % 256:
            raise RuntimeError(f"{name}: the value arrived wrong")
        del value, ref
        if trial:
            rates.append(1 / elapsed)
    mean = statistics.mean(rates)
    sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
    mb_per_s = TRANSFER_BYTES / 1e6 * statistics.median(rates)
    print(f"{name} per second {round(mean, 2)} +- {round(sd, 2)}  "
          f"({mb_per_s:,.0f} MB/s, median)", flush=True)
    results.append({"name": name, "mean": mean, "sd": sd, "median": statistics.median(rates),
                    "MB_per_s": mb_per_s})


def fan_out_rows(ray, bench, wanted, label, actor_class, client_class, n_cpu):
    """The "1:n" and "n:n" rows: one client actor, or 4 tasks, calling n_cpu actors."""
    n = 5000
    if wanted(f"1:n {label} calls async"):
        actors = [actor_class.remote() for _ in range(n_cpu)]
        client = client_class.remote(actors)
        bench(f"1:n {label} calls async", lambda: ray.get(client.small_value_batch.remote(n)),
              n * len(actors))
        del actors, client
    if wanted(f"n:n {label} calls async"):
        m = 4
        actors = [actor_class.remote() for _ in range(n_cpu)]

        @ray.remote
        def work(actors):
            ray.get([actors[i % len(actors)].small_value.remote() for i in range(n)])
        bench(f"n:n {label} calls async",
              lambda: ray.get([work.remote(actors) for _ in range(m)]), m * n)
        del actors


# -- the --scale rows -------------------------------------------------------------------------------

GIB = 1 << 30
# The store holds the 2 GiB value with room to spare; set for both backends, so that neither
# spills or refuses it (and both run as they would on a 24 GiB host).
SCALE_STORE_BYTES = 4 * GIB
# How many refs go to one get() in the rows that get many at once: the whole list, as Ray's
# release test does; the results are dropped right after, so memory stays bounded.
INT_LIST_LEN = 10_000


def scale_rows(shrink=1):
    """The ``--scale`` rows: ``[(name, items, run)]``; ``run(ray, np)`` does the row's work
    and returns the seconds it timed. ``shrink`` divides every count (a quick check)."""
    def n(count):
        return max(1, count // shrink)

    rows = [
        (f"many args ({n(1000):,} args of 10k-int lists)", n(1000),
         lambda ray, np: _many_args(ray, n(1000))),
        (f"many returns ({n(3000):,} returns of 10k-int lists, get each)", n(3000),
         lambda ray, np: _many_returns(ray, n(3000))),
        (f"put+get {n(10_000):,} lists of 10k ints", n(10_000),
         lambda ray, np: _put_get(ray, n(10_000), lambda: list(range(INT_LIST_LEN)))),
        (f"put+get {n(10_000):,} numpy arrays of 10k int64", n(10_000),
         lambda ray, np: _put_get(ray, n(10_000), lambda: np.arange(INT_LIST_LEN))),
        (f"{n(100_000):,} tasks queued behind blocked CPUs", n(100_000),
         lambda ray, np: _queued_tasks(ray, n(100_000))),
        (f"put then get one {2 / shrink:g} GiB numpy array (fresh)", 1,
         lambda ray, np: _large_object(ray, np, 2 * GIB // shrink)),
    ]
    for count in (1000, 10_000, 100_000):
        rows.append((f"tiny tasks, {n(count):,} at once", n(count),
                     lambda ray, np, c=n(count): _tiny_tasks(ray, c)))
    for count in (1000, 10_000):
        rows.append((f"wait(num_returns=1) loop over {n(count):,} refs", n(count),
                     lambda ray, np, c=n(count): _wait_loop(ray, c)))
    # Last: a node stays busy a while after its actors are killed, which would slow
    # whatever row came next.
    for count in (10, 100):
        rows.append((f"{n(count):,} actors created and called", n(count),
                     lambda ray, np, c=n(count): _actors(ray, c)))
    return rows


def _many_args(ray, count):
    @ray.remote
    def sum_args(*args):
        return sum(sum(arg) for arg in args)

    args = [list(range(INT_LIST_LEN)) for _ in range(count)]
    start = time.perf_counter()
    total = ray.get(sum_args.remote(*args))
    elapsed = time.perf_counter() - start
    _check(total == count * sum(range(INT_LIST_LEN)), "many args: wrong sum")
    return elapsed


def _many_returns(ray, count):
    @ray.remote(num_returns=count)
    def make():
        return tuple(list(range(INT_LIST_LEN)) for _ in range(count))

    expected = list(range(INT_LIST_LEN))
    start = time.perf_counter()
    refs = make.remote()
    for ref in refs:
        value = ray.get(ref)
        _check(len(value) == INT_LIST_LEN and value[-1] == expected[-1],
               "many returns: a wrong value")
    return time.perf_counter() - start


def _put_get(ray, count, make):
    start = time.perf_counter()
    refs = [ray.put(make()) for _ in range(count)]
    values = ray.get(refs)
    elapsed = time.perf_counter() - start
    _check(len(values) == count and len(values[-1]) == INT_LIST_LEN, "put+get: wrong values")
    return elapsed


def _queued_tasks(ray, count):
    """``count`` tasks submitted while every CPU is held by a task that waits for a file
    (not in get, which would give its CPU back), then the CPUs freed and every result got."""
    import tempfile

    @ray.remote(num_cpus=1)
    def hold(path):
        while not os.path.exists(path):
            time.sleep(0.005)

    @ray.remote(num_cpus=1)
    def tiny():
        return None

    with tempfile.TemporaryDirectory() as directory:
        gate = os.path.join(directory, "open")
        cpus = int(ray.cluster_resources()["CPU"])
        holders = [hold.remote(gate) for _ in range(cpus)]
        start = time.perf_counter()
        queued = [tiny.remote() for _ in range(count)]
        open(gate, "w").close()
        ray.get(holders)
        results = ray.get(queued)
        elapsed = time.perf_counter() - start
    _check(len(results) == count and results[-1] is None, "queued tasks: wrong results")
    return elapsed


def _large_object(ray, np, nbytes):
    value = np.zeros(nbytes, dtype=np.int8)   # fresh: no page of it touched yet
    start = time.perf_counter()
    ref = ray.put(value)
    got = ray.get(ref)
    elapsed = time.perf_counter() - start
    _check(got.nbytes == nbytes and got[0] == 0 and got[-1] == 0, "large object: wrong value")
    del got, ref, value
    return elapsed


def _tiny_tasks(ray, count):
    @ray.remote
    def tiny():
        return b"ok"

    start = time.perf_counter()
    results = ray.get([tiny.remote() for _ in range(count)])
    elapsed = time.perf_counter() - start
    _check(len(results) == count, "tiny tasks: wrong results")
    return elapsed


def _actors(ray, count):
    @ray.remote(num_cpus=0)
    class Small:
        def ping(self):
            return b"ok"

    start = time.perf_counter()
    actors = [Small.remote() for _ in range(count)]
    results = ray.get([a.ping.remote() for a in actors])
    elapsed = time.perf_counter() - start
    _check(len(results) == count, "actors: wrong results")
    for a in actors:
        ray.kill(a)
    # Off the clock: every actor is gone (a call fails) before the next row starts.
    for a in actors:
        try:
            ray.get(a.ping.remote())
        except ray.exceptions.RayActorError:
            pass
    return elapsed


def _wait_loop(ray, count):
    @ray.remote
    def tiny():
        return b"ok"

    start = time.perf_counter()
    refs = [tiny.remote() for _ in range(count)]
    done = 0
    while refs:
        ready, refs = ray.wait(refs, num_returns=1)
        done += len(ready)
    elapsed = time.perf_counter() - start
    _check(done == count, "wait loop: refs missing")
    return elapsed


def _check(ok, what):
    if not ok:
        raise RuntimeError(what)


def run_scale(backend="purerun", name_filter="", repeats=1, json_path=None, shrink=1):
    """The ``--scale`` rows (see ``scale_rows``), each run ``repeats`` times; the median is
    printed with its cost per item."""
    ray = importlib.import_module(backend)
    import numpy as np

    kwargs = {"include_dashboard": False} if backend == "ray" else {}
    ray.init(num_cpus=os.cpu_count(), object_store_memory=max(SCALE_STORE_BYTES // shrink,
                                                                256 << 20), **kwargs)
    results = []
    try:
        # Workers started and warm before the first row, for both backends alike.
        @ray.remote
        def warm_up():
            return None

        ray.get([warm_up.remote() for _ in range(4 * (os.cpu_count() or 1))])
        for name, items, row in scale_rows(shrink):
            if name_filter not in name:
                continue
            times = []
            for _ in range(repeats):
                times.append(row(ray, np))
                gc.collect()
            seconds = statistics.median(times)
            per_item_us = seconds / items * 1e6
            print(f"{name}: {seconds:.3f} s  ({per_item_us:,.1f} us per item)", flush=True)
            results.append({"name": name, "seconds": seconds, "items": items,
                            "per_item_us": per_item_us, "all_seconds": times})
    finally:
        ray.shutdown()
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"backend": backend, "mode": "scale", "rows": results}, f, indent=1)
    return results


def _ok():
    return b"ok"


def _stdlib_rows(bench):
    """Reference rows: the same tiny task through multiprocessing.Pool."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(os.cpu_count()) as pool:
        pool.apply(_ok)
        bench("multiprocessing Pool.apply (reference)", lambda: pool.apply(_ok))
        bench("multiprocessing Pool.apply_async 1000 (reference)",
              lambda: [r.get() for r in [pool.apply_async(_ok) for _ in range(1000)]], 1000)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="purerun microbenchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="purerun", choices=["purerun", "ray"])
    parser.add_argument("--filter", default=os.environ.get("TESTS_TO_RUN", ""),
                        help="run only rows whose name contains this")
    parser.add_argument("--trial-seconds", type=float, default=DEFAULT_TRIAL_SECONDS)
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--no-stdlib", action="store_true",
                        help="skip the multiprocessing reference rows")
    parser.add_argument("--cluster", action="store_true",
                        help="a two-node cluster on this host; the cross-node rows only")
    parser.add_argument("--scale", action="store_true",
                        help="the scale rows (many args, returns, objects, tasks, actors, "
                             "a 2 GiB object, wait loops), each timed once per repeat")
    parser.add_argument("--repeats", type=int, default=1,
                        help="--scale: runs of each row; the median is printed")
    parser.add_argument("--shrink", type=int, default=1,
                        help="--scale: divide every count and size by this (a quick check)")
    args = parser.parse_args(argv)
    if args.backend == "ray":
        try:
            importlib.import_module("ray")
        except ImportError:
            sys.exit("--backend ray needs Ray installed (pip install ray).")
    if args.scale:
        run_scale(args.backend, args.filter, args.repeats, args.json, args.shrink)
        return
    if args.cluster:
        run_cluster(args.backend, args.filter, args.trial_seconds, args.trials, args.json)
        return
    run(args.backend, args.filter, args.trial_seconds, args.trials, args.json,
        with_stdlib=not args.no_stdlib)


if __name__ == "__main__":
    main()
