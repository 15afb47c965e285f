"""The ``purerun`` command line.

- ``purerun start``: start a node on this machine that outlives the drivers connecting to it
  (``purerun.init(address="auto")``), so that detached actors can outlive their driver.
- ``purerun stop``: stop it.
- ``purerun microbenchmark``: Ray's microbenchmark rows (see purerun.microbenchmark).
- ``purerun version``.
"""

import argparse
import json
import os
import signal
import sys
import time

# How long `start` waits for the new node to listen, and `stop` for it to exit.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def _current_file():
    from purerun import api
    return os.path.join(api._temp_root(), api.CURRENT_NODE_FILE)


def start(args):
    from purerun import api
    current = _current_file()
    if os.path.exists(current):
        address = api._started_node_address()
        if address and os.path.exists(address):
            print(f"A purerun node is already running at {address}; 'purerun stop' first.",
                  file=sys.stderr)
            return 1
    resources = json.loads(args.resources) if args.resources else None
    node_resources = api._node_resources(args.num_cpus, args.num_gpus, resources)
    process = api._spawn_node(node_resources, args.object_store_memory)
    # The node's socket appears in its session dir once it listens; find it by its pid.
    deadline = time.monotonic() + START_TIMEOUT_S
    address = None
    while address is None and time.monotonic() < deadline:
        if process.poll() is not None:
            print("The purerun node exited at start-up.", file=sys.stderr)
            return 1
        address = _find_socket(api._temp_root(), process.args)
        if address is None:
            time.sleep(0.01)
    if address is None:
        process.kill()
        print("The purerun node did not start in time.", file=sys.stderr)
        return 1
    with open(current, "w") as f:
        json.dump({"address": address, "pid": process.pid}, f)
    print(f"Started a purerun node (pid {process.pid}).\n"
          f"Connect with purerun.init(address=\"auto\"), or PURERUN_ADDRESS={address}\n"
          "Stop it with: purerun stop")
    return 0


def _find_socket(root, node_argv):
    config = json.loads(node_argv[4])
    path = os.path.join(config["session_dir"], "node.sock")
    return path if os.path.exists(path) else None


def stop(args):
    current = _current_file()
    try:
        with open(current) as f:
            pid = json.load(f)["pid"]
    except (OSError, ValueError, KeyError):
        print("No purerun node started with 'purerun start' is running.", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.01)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    os.unlink(current)
    print(f"Stopped the purerun node (pid {pid}).")
    return 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # our own child (same process started it) may linger as a zombie
        done, _ = os.waitpid(pid, os.WNOHANG)
        return not done
    except ChildProcessError:
        import psutil
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


def main(argv=None):
    """Entry point of the ``purerun`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="purerun", description="purerun command line")
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start a node that outlives drivers")
    start_parser.add_argument("--num-cpus", type=float, default=None)
    start_parser.add_argument("--num-gpus", type=float, default=None)
    start_parser.add_argument("--resources", default=None,
                              help='custom resources as JSON, e.g. \'{"disk": 2}\'')
    start_parser.add_argument("--object-store-memory", type=int, default=None)
    commands.add_parser("stop", help="stop the node 'purerun start' started")
    commands.add_parser("microbenchmark", help="run Ray's microbenchmark rows", add_help=False)
    commands.add_parser("version", help="print the version")
    if argv and argv[0] == "microbenchmark":
        from purerun import microbenchmark
        microbenchmark.main(argv[1:])
        return 0
    args = parser.parse_args(argv)
    if args.command == "version":
        import purerun
        print(purerun.__version__)
        return 0
    if args.command == "start":
        return start(args)
    return stop(args)


if __name__ == "__main__":
    sys.exit(main())
