"""The ``purerun`` command line, in the manner of ``ray start / stop / status``.

::

    purerun start --head [--host H] [--port P]    python -m purerun.head ─▶ head (detached)
                                                  + a node joined to it  ─▶ node (detached)
        [--dashboard-port P] [--dashboard-host H] [--include-dashboard BOOL]
                                                  the head serves the status page too
    purerun start --address H:P                   a node joined to H:P   ─▶ node (detached)
    purerun start                                 a node on its own      ─▶ node (detached)
        each recorded in launcher.records_dir(), where the commands below and
        purerun.init(address="auto" | "H:P") find them
    purerun stop [-f] [-g S]                      SIGTERM the recorded nodes, then heads
    purerun status [--address H:P] [-v]           the head's tables, as `ray status`
    purerun list tasks|actors|objects|nodes|jobs  the state API's records, as `ray list`
        [--filter "state=RUNNING"] [--limit N] [--detail] [--format table|json]
    purerun summary tasks|actors|objects          counts by name and state, as `ray summary`
    purerun microbenchmark                        Ray's microbenchmark rows
    purerun version

``python -m purerun.node --address H:P`` (purerun/node.py) runs one node in the foreground
instead, with the same resource flags (``add_node_arguments``).
"""

import argparse
import errno
import json
import os
import socket
import sys

from purerun.core import launcher, transport
from purerun.head import add_dashboard_arguments, dashboard_wanted

# How long `start` waits for the new head or node to listen.
START_TIMEOUT_S = 30.0
# How long `stop` gives a process between SIGTERM and SIGKILL: a node stops in well under a
# second; this bounds one stuck in a worker that will not die.
STOP_GRACE_PERIOD_S = 10.0
# How long `status` waits for the head: it answers in milliseconds; this bounds a head that
# is wedged or a host that drops packets.
STATUS_TIMEOUT_S = 5.0


# -- arguments shared with python -m purerun.node ---------------------------------------------------

def _resources_json(text):
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'a JSON object like \'{{"disk": 2}}\', not {text!r}')
    return value


def _labels(text):
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"labels are key=value,...; got {item!r}")
        labels[key.strip()] = value.strip()
    return labels


def add_node_arguments(parser):
    """Add the flags that say what a new node offers: --num-cpus, --num-gpus, --resources,
    --object-store-memory, --labels."""
    parser.add_argument("--num-cpus", type=float, default=None,
                        help="CPUs it offers (default: this machine's)")
    parser.add_argument("--num-gpus", type=float, default=None,
                        help="GPUs it offers (default: the GPUs found)")
    parser.add_argument("--resources", type=_resources_json, default=None,
                        help='custom resources as JSON, e.g. \'{"disk": 2}\'')
    parser.add_argument("--object-store-memory", type=int, default=None,
                        help="bytes of shared memory for large objects")
    parser.add_argument("--labels", type=_labels, default=None,
                        help="its labels, as key=value,key2=value2")


def node_resources_of(args):
    """The resources the flags of ``add_node_arguments`` ask for.

    Raises:
        ValueError, TypeError: an invalid amount (the message says which).
    """
    return launcher.node_resources(args.num_cpus, args.num_gpus, args.resources)


def head_address(text):
    """``text`` if it is a head's "host:port"; argparse's error otherwise."""
    if not launcher.is_head_address(text):
        raise argparse.ArgumentTypeError(
            f"a head's address is host:port (like 192.168.1.10:6380, or [::1]:6380), "
            f"got {text!r}")
    return text


def check_token(head):
    """The error to print when this process has no usable token to join ``head``, else
    None."""
    from purerun.core import auth
    try:
        token = auth.load_token()
    except (ValueError, OSError) as exc:
        return f"Cannot join the head at {head}: {exc}"
    return None if token is not None else launcher.no_token_message(head)


def _fail(message):
    print(f"purerun: {message}", file=sys.stderr)
    return 1


# -- start ------------------------------------------------------------------------------------------

def start(args):
    if args.head:
        return start_head(args)
    if args.address:
        return start_joined(args)
    running = launcher.running_records()
    if running:
        return _fail(f"purerun is already running on this host: {running[0].describe()}. "
                     "'purerun stop' first.")
    try:
        node = launcher.start_standalone(node_resources_of(args), args.object_store_memory,
                                         START_TIMEOUT_S, labels=args.labels)
    except (ValueError, TypeError, launcher.NodeStartError) as exc:
        return _fail(str(exc))
    print(f"Started a purerun node (pid {node.pid}).\n"
          f"Connect with purerun.init(address=\"auto\"), or PURERUN_ADDRESS={node.address}\n"
          "Stop it with: purerun stop")
    return 0


def _port_taken(host, port):
    """Why ``host:port`` cannot be listened on because it is in use, else None."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return exc.strerror or str(exc)
    # Anything else (a host that is not this machine's, say): the head says what. Checked
    # here only for a clear message: the head's own bind still decides.
    return None


def start_head(args):
    from purerun.core import auth
    from purerun.core.head import format_address
    head = launcher.recorded_head()
    if head is not None:
        return _fail(f"A purerun head is already running on this host at {head.address} "
                     f"(pid {head.pid}); 'purerun stop' first.")
    try:
        resources = node_resources_of(args)
        _token, token_path = auth.ensure_token()
    except (ValueError, TypeError, OSError) as exc:
        return _fail(str(exc))
    where = format_address(args.host, args.port)
    taken = _port_taken(args.host, args.port)
    if taken:
        return _fail(f"Cannot start a head on {where}: the port is in use ({taken}). Choose "
                     "another with --port (--port 0 takes any free one).")
    dashboard = None
    if dashboard_wanted(args):
        from purerun.core.dashboard import check_settings, port_free
        dashboard = {"host": args.dashboard_host or transport.LOOPBACK,
                     "port": args.dashboard_port}
        try:
            check_settings(dashboard["host"], dashboard["port"])
        except (TypeError, ValueError) as exc:
            return _fail(str(exc))
        problem = args.dashboard_port and port_free(dashboard["host"], args.dashboard_port)
        if problem:
            return _fail(f"Cannot serve the status page on {dashboard['host']}:"
                         f"{args.dashboard_port}: {problem}. Choose another --dashboard-port "
                         "(0 takes any free one).")
    try:
        head = launcher.start_head(args.host, args.port, START_TIMEOUT_S, dashboard=dashboard)
    except launcher.NodeStartError as exc:
        return _fail(f"The head did not start on {where}: "
                     f"{exc.reason or exc.errors or exc}")
    try:
        node = launcher.start_standalone(resources, args.object_store_memory, START_TIMEOUT_S,
                                         head=head.address, node_host=args.node_ip_address,
                                         labels=args.labels)
    except launcher.NodeStartError as exc:
        launcher.stop_processes([head.record], STOP_GRACE_PERIOD_S)
        return _fail(f"The head started, but its node did not (the head was stopped again): "
                     f"{exc.reason or exc}")
    token_where = f"in {token_path}" if token_path else auth.token_source_text()
    url = None
    if dashboard is not None:
        try:
            url = launcher.dashboard_url(head.address)
        except ConnectionError as exc:
            print(f"purerun: cannot read the status page's address: {exc}", file=sys.stderr)
    print(_head_banner(head, node, token_where, token_path, args.host, url))
    return 0


def _head_banner(head, node, token_where, token_path, host, dashboard_url=None):
    address = head.address
    if token_path:
        copy = ("  Copy it to every other host, or set PURERUN_AUTH_TOKEN to it there:\n"
                f"    scp {token_path} otherhost:~/.purerun/")
    else:
        copy = "  Set the same token on every other host of the cluster."
    lines = [
        f"Started a purerun head at {address} (pid {head.pid}) and a node on this host "
        f"(pid {node.pid}).",
        "",
        f"Cluster token: {token_where}",
        "  Every node and driver of the cluster needs this same token.",
        copy,
        "",
        "To add another host to this cluster, run on it:",
        f"  purerun start --address '{address}'",
        "",
        "To connect a driver to this cluster:",
        f"  purerun.init(address=\"{address}\")    or    PURERUN_ADDRESS={address}",
        "  (on this host, purerun.init(address=\"auto\") finds it too)",
        "",
        "To see the cluster:            purerun status",
        "To stop purerun on this host:  purerun stop",
    ]
    if dashboard_url:
        lines[-2:-2] = [f"To see it in a browser:        http://{dashboard_url} (log in with "
                        "the cluster token)"]
    if transport.is_loopback(host):
        lines += ["", f"The head listens on {host} only, so no other host can join: start it "
                      "with --host 0.0.0.0 (or this host's LAN address) for a multi-host "
                      "cluster."]
    return "\n".join(lines)


def start_joined(args):
    problem = check_token(args.address)
    if problem:
        return _fail(problem)
    try:
        node = launcher.start_standalone(node_resources_of(args), args.object_store_memory,
                                         START_TIMEOUT_S, head=args.address,
                                         node_host=args.node_ip_address, labels=args.labels)
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    except launcher.NodeStartError as exc:
        return _fail(f"The node could not join the head at {args.address}: "
                     f"{exc.reason or exc}")
    print(f"Started a purerun node (pid {node.pid}) joined to the head at {args.address}.\n"
          f"Drivers on this host attach to it with purerun.init(address=\"{args.address}\").\n"
          "To see the cluster:            purerun status\n"
          "To stop purerun on this host:  purerun stop")
    return 0


# -- stop -------------------------------------------------------------------------------------------

def stop(args):
    stopped = launcher.stop_recorded(args.grace_period, force=args.force)
    if not stopped:
        return _fail("No purerun process started with 'purerun start' is running on this "
                     "host.")
    for record, killed in stopped:
        how = " with SIGKILL" if killed else ""
        print(f"Stopped {record.describe()}{how}.")
    return 0


# -- status -----------------------------------------------------------------------------------------

def status(args):
    target = args.address or _address_from_env() or launcher.recorded_address()
    if not target:
        return _fail("No purerun head found on this host: give its address with --address "
                     "HOST:PORT, set PURERUN_ADDRESS, or start one with 'purerun start "
                     "--head'.")
    try:
        if launcher.is_head_address(target):
            tables = _head_tables(target)
        else:
            tables = _node_tables(target)
    except ConnectionError as exc:
        return _fail(str(exc))
    from purerun.core.status import format_status
    print(format_status(*tables))
    if not launcher.is_head_address(target):
        print(f"\n(a node without a head, at {target})")
    if args.verbose:
        print("\n" + _node_details(tables[0]))
    return 0


def _address_from_env():
    for name in launcher.ADDRESS_ENV_VARS:
        value = os.environ.get(name)
        if value and value != "auto":
            return value
    return None


def _head_tables(address):
    """(nodes, cluster resources, available resources, stats) from the head."""
    from purerun.core import auth
    from purerun.core.remote_control import RemoteControlStore
    try:
        token = auth.load_token()
    except (ValueError, OSError) as exc:
        raise ConnectionError(f"Cannot reach the head at {address}: {exc}") from None
    if token is None:
        raise ConnectionError(launcher.no_token_message(address))
    with RemoteControlStore.connect(address, token, STATUS_TIMEOUT_S,
                                    call_timeout=STATUS_TIMEOUT_S) as store:
        return (store.node_table(), store.cluster_resources(), store.available_resources(),
                store.stats())


def _node_tables(address):
    """The same tables from a node without a head, asked over its socket as a driver asks.

    The node's own counters stand in for the head's: tasks, objects and the bytes they take.
    """
    ops = ("nodes", "cluster_resources", "available_resources", "stats")
    values = []
    for op, (ok, value) in zip(ops, launcher.ask_node(address, [(op, ()) for op in ops],
                                                      STATUS_TIMEOUT_S)):
        if not ok:
            raise ConnectionError(f"the node at {address} could not answer {op}: {value!r}")
        values.append(value)
    nodes, total, available, counters = values
    stats = {"tasks": counters.get("tasks", 0), "objects": counters.get("num_objects", 0),
             "object_store_bytes": counters.get("arena_used", 0)}
    return nodes, total, available, stats


def _amount(value):
    # As status.py writes amounts: one decimal at least, more only when there are some.
    text = f"{value:.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _resource_order(name):
    from purerun.core.status import FIRST_RESOURCES
    if name in FIRST_RESOURCES:
        return FIRST_RESOURCES.index(name), ""
    return len(FIRST_RESOURCES), name


def _node_details(nodes):
    """``status -v``: one block per node (its address, resources and load)."""
    from purerun.core import status
    lines = ["Nodes", "-" * 63]
    for record in nodes:
        if "node_id" in record:   # the head's node_table()
            node_id = record["node_id"].hex()
            alive, ip, hostname = record["alive"], record["node_ip"], record["hostname"]
            address, total = record["address"], record["resources"]
            available, load = record.get("available"), record.get("load") or {}
            labels = record.get("labels") or {}
        else:                     # a node's nodes(), in Ray's shape
            node_id, alive = record["NodeID"], record["Alive"]
            ip, hostname = record["NodeManagerAddress"], record["NodeManagerHostname"]
            address, total = record["RayletSocketName"], record["Resources"]
            available, load, labels = None, {}, record.get("Labels") or {}
        lines.append(f" node_{node_id[:status.NODE_ID_SHOWN]} "
                     f"{'alive' if alive else 'dead'}  {ip} ({hostname})  at {address}")
        parts = []
        for name in sorted(total, key=_resource_order):
            if name.startswith(status.HIDDEN_PREFIXES):
                continue
            amount = total[name]
            show = status.format_bytes if name in status.MEMORY_RESOURCES else _amount
            if available is None:
                parts.append(f"{show(amount)} {name}")
            else:
                used = max(amount - available.get(name, 0.0), 0.0)
                parts.append(f"{show(used)}/{show(amount)} {name}")
        lines.append("   resources: " + (", ".join(parts) or "(none)"))
        if labels:
            lines.append("   labels: " + ", ".join(f"{key}={value}"
                                                   for key, value in sorted(labels.items())))
        if load:
            lines.append("   load: " + ", ".join(f"{count} {name}"
                                                 for name, count in sorted(load.items())))
    return "\n".join(lines)


# -- list / summary (the state API) -----------------------------------------------------------------

# Columns of `purerun list` tables, as `ray list` shows them (the rest: --detail).
LIST_COLUMNS = {
    "tasks": ("task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type",
              "func_or_class_name", "node_id", "worker_pid", "error_type"),
    "actors": ("actor_id", "class_name", "state", "job_id", "name", "node_id", "pid",
               "ray_namespace", "num_restarts"),
    "objects": ("object_id", "object_size", "task_status", "reference_type", "type", "ip"),
    "nodes": ("node_id", "node_ip", "is_head_node", "state", "node_name", "resources_total"),
    "jobs": ("job_id", "type", "status", "entrypoint", "start_time", "end_time"),
}


def state_filter(text):
    """``--filter "key=value"`` or ``"key!=value"`` as a state API filter triple."""
    for predicate in ("!=", "="):
        key, found, value = text.partition(predicate)
        if found:
            key, value = key.strip(), value.strip()
            if not key:
                break
            return key, predicate, value
    raise argparse.ArgumentTypeError(f"a filter is KEY=VALUE or KEY!=VALUE, got {text!r}")


def _table(columns, rows):
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c.upper())] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}"
                         for k, v in sorted(value.items()))
    return str(value)


def list_command(args):
    from purerun.util import state
    lister = getattr(state, f"list_{args.resource}")
    try:
        records = lister(address=args.address, filters=args.filter or None, limit=args.limit,
                         timeout=args.timeout, detail=args.detail,
                         raise_on_missing_output=False)
    except (ValueError, state.StateApiException) as exc:
        return _fail(str(exc))
    rows = [record.asdict() for record in records]
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"Total: {len(rows)}\n")
    if not rows:
        print(f"No {args.resource} found.")
    elif args.detail:
        # Every column, one record after another (as `ray list --detail`, in YAML's manner).
        blocks = ["\n".join(f"  {key}: {_cell(value)}" for key, value in row.items())
                  for row in rows]
        print("\n---\n".join(blocks))
    else:
        print(_table(LIST_COLUMNS[args.resource], rows))
    return 0


def summary_command(args):
    from purerun.util import state
    summarize = getattr(state, f"summarize_{args.resource}")
    try:
        result = summarize(address=args.address, timeout=args.timeout)["cluster"]
    except state.StateApiException as exc:
        return _fail(str(exc))
    if args.format == "json":
        print(json.dumps(result, indent=2, default=str))
        return 0
    summary = result["summary"]
    if args.resource == "tasks":
        print(f"======== Tasks Summary ========\nTotal tasks: {result['total_tasks']}  "
              f"actor tasks: {result['total_actor_tasks']}  "
              f"actors scheduled: {result['total_actor_scheduled']}\n")
        rows = [{"func_or_class_name": name, "type": e["type"],
                 "state_counts": e["state_counts"]} for name, e in summary.items()]
        columns = ("func_or_class_name", "type", "state_counts")
    elif args.resource == "actors":
        print(f"======== Actors Summary ========\nTotal actors: {result['total_actors']}\n")
        rows = [{"class_name": name, "state_counts": e["state_counts"]}
                for name, e in summary.items()]
        columns = ("class_name", "state_counts")
    else:
        print(f"======== Objects Summary ========\nTotal objects: {result['total_objects']}"
              f"  size: {result['total_size_mb']:.3f} MB\n")
        rows = [{"task_status": status, "total_objects": e["total_objects"],
                 "total_size_mb": f"{e['total_size_mb']:.3f}",
                 "ref_type_counts": e["ref_type_counts"]} for status, e in summary.items()]
        columns = ("task_status", "total_objects", "total_size_mb", "ref_type_counts")
    print(_table(columns, rows) if rows else f"No {args.resource} found.")
    return 0


def _state_arguments(parser):
    parser.add_argument("--address", default=None,
                        help="a node's socket or session directory, or a head's HOST:PORT "
                             "(default: $PURERUN_ADDRESS, $RAY_ADDRESS, else what 'purerun "
                             "start' left running here)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the answer (default 30)")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="a table (default) or JSON")


# -- the command line -------------------------------------------------------------------------------

def _parser():
    from purerun.core.head import DEFAULT_PORT
    from purerun.core.transport import LOOPBACK
    parser = argparse.ArgumentParser(prog="purerun", description="purerun command line")
    commands = parser.add_subparsers(dest="command", required=True)

    start_parser = commands.add_parser(
        "start", help="start a head, or a node, that outlives this command",
        description="Start a purerun head and a node (--head), a node joined to a head "
                    "(--address), or, with neither, a node on its own; they run until "
                    "'purerun stop'.")
    role = start_parser.add_mutually_exclusive_group()
    role.add_argument("--head", action="store_true",
                      help="start the head of a new cluster, and a node joined to it")
    role.add_argument("--address", type=head_address, default=None,
                      help="HOST:PORT of the head to join")
    start_parser.add_argument("--host", default=None,
                              help=f"with --head: the interface it listens on (default "
                                   f"{LOOPBACK}; 0.0.0.0 for every one)")
    start_parser.add_argument("--port", type=int, default=None,
                              help=f"with --head: its TCP port (default {DEFAULT_PORT}; 0 for "
                                   "any free one)")
    add_dashboard_arguments(start_parser)
    start_parser.add_argument("--node-ip-address", default=None,
                              help="the address this node listens on for other nodes "
                                   "(default: the interface it reaches the head from)")
    add_node_arguments(start_parser)

    stop_parser = commands.add_parser("stop", help="stop what 'purerun start' started here")
    stop_parser.add_argument("-f", "--force", action="store_true",
                             help="SIGKILL at once instead of SIGTERM")
    stop_parser.add_argument("-g", "--grace-period", type=float, default=STOP_GRACE_PERIOD_S,
                             help="seconds between SIGTERM and SIGKILL (default "
                                  f"{STOP_GRACE_PERIOD_S:g})")

    status_parser = commands.add_parser("status", help="show the cluster's nodes and resources")
    status_parser.add_argument("--address", default=None,
                               help="HOST:PORT of the head (default: $PURERUN_ADDRESS, "
                                    "$RAY_ADDRESS, else the head started on this host)")
    status_parser.add_argument("-v", "--verbose", action="store_true",
                               help="also show each node's address, resources and load")

    list_parser = commands.add_parser("list", help="list tasks, actors, objects, nodes or jobs")
    list_parser.add_argument("resource", choices=("tasks", "actors", "objects", "nodes", "jobs"))
    list_parser.add_argument("--filter", action="append", type=state_filter, default=[],
                             help='KEY=VALUE or KEY!=VALUE, e.g. "state=RUNNING" (repeatable)')
    list_parser.add_argument("--limit", type=int, default=100,
                             help="at most this many records (default 100)")
    list_parser.add_argument("--detail", action="store_true", help="every column")
    _state_arguments(list_parser)

    summary_parser = commands.add_parser("summary", help="counts of tasks, actors or objects")
    summary_parser.add_argument("resource", choices=("tasks", "actors", "objects"))
    _state_arguments(summary_parser)

    commands.add_parser("microbenchmark", help="run Ray's microbenchmark rows", add_help=False)
    commands.add_parser("version", help="print the version")
    return parser


def main(argv=None):
    """Entry point of the ``purerun`` console script.

    Returns:
        The exit code: 0 on success, 1 when the command could not do what it was asked
        (the reason is on stderr), 2 for invalid arguments.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "microbenchmark":
        from purerun import microbenchmark
        microbenchmark.main(argv[1:])
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        import purerun
        print(purerun.__version__)
        return 0
    if args.command == "start":
        if not args.head and (args.host is not None or args.port is not None):
            parser.error("--host and --port are for the head: use them with --head")
        if not args.head and dashboard_wanted(args):
            parser.error("the status page is served by the head: use --include-dashboard, "
                         "--dashboard-host and --dashboard-port with --head")
        if not args.head and not args.address and args.node_ip_address:
            parser.error("--node-ip-address is for a node that joins a head: use it with "
                         "--address or --head")
        if args.head:
            from purerun.core.head import DEFAULT_PORT
            from purerun.core.transport import LOOPBACK
            args.host = LOOPBACK if args.host is None else args.host
            args.port = DEFAULT_PORT if args.port is None else args.port
        return start(args)
    if args.command == "status":
        return status(args)
    if args.command == "list":
        return list_command(args)
    if args.command == "summary":
        return summary_command(args)
    return stop(args)


if __name__ == "__main__":
    sys.exit(main())
