"""The ``purerun`` command line.

- ``purerun start``: start a node on this machine that outlives the drivers connecting to it
  (``purerun.init(address="auto")``), so that detached actors can outlive their driver.
- ``purerun stop``: stop it.
- ``purerun microbenchmark``: Ray's microbenchmark rows (see purerun.microbenchmark).
- ``purerun version``.
"""

import argparse
import json
import sys

from purerun.core import launcher

# How long `start` waits for the new node to listen, and `stop` for it to exit.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def start(args):
    address = launcher.running_standalone_address()
    if address is not None:
        print(f"A purerun node is already running at {address}; 'purerun stop' first.",
              file=sys.stderr)
        return 1
    resources = json.loads(args.resources) if args.resources else None
    node_resources = launcher.node_resources(args.num_cpus, args.num_gpus, resources)
    try:
        node = launcher.start_standalone(node_resources, args.object_store_memory,
                                         START_TIMEOUT_S)
    except launcher.NodeStartError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Started a purerun node (pid {node.pid}).\n"
          f"Connect with purerun.init(address=\"auto\"), or PURERUN_ADDRESS={node.address}\n"
          "Stop it with: purerun stop")
    return 0


def stop(args):
    pid = launcher.stop_recorded(STOP_TIMEOUT_S)
    if pid is None:
        print("No purerun node started with 'purerun start' is running.", file=sys.stderr)
        return 1
    print(f"Stopped the purerun node (pid {pid}).")
    return 0


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
