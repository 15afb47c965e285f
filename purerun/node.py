"""``python -m purerun.node``: one node of a multi-host cluster, in the foreground.

::

    python -m purerun.node --address HEAD:PORT [--num-cpus N] [--num-gpus N]
                           [--resources JSON] [--object-store-memory B] [--labels k=v,...]
                           [--node-ip-address IP]
        │
        ├─ the cluster token must be there (as for purerun start --address)
        ├─ launcher.spawn_node(head=HEAD:PORT): the node process, its stderr on ours
        ├─ once it listens: recorded (as purerun start records its nodes), so that drivers
        │  of this host that give the head's address attach to it, and purerun stop stops it
        └─ waits for it; SIGINT or SIGTERM: SIGTERM to the node, SIGKILL if it has not exited
           within STOP_GRACE_PERIOD_S; its record goes, its session directory too; exit 0

For a process manager (systemd, a batch scheduler) that wants the node in the foreground,
as ``ray start --block`` does. The node is a child process rather than this one because
a node ignores SIGINT (Ctrl-C is for its drivers) and forks workers from a single thread;
this process stays a few megabytes of waiting. If it is killed with SIGKILL, the node lives
on, as a ``purerun start`` node would: ``purerun stop`` ends it.
"""

import argparse
import signal
import sys

from purerun import cli
from purerun.core import launcher

__all__ = ["main"]

START_TIMEOUT_S = cli.START_TIMEOUT_S
STOP_GRACE_PERIOD_S = cli.STOP_GRACE_PERIOD_S


class _Stop(Exception):
    """Raised by the signal handler in the main thread: stop the node."""


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m purerun.node",
        description="Run one node of a purerun cluster in the foreground, joined to its "
                    "head, until SIGINT or SIGTERM.")
    parser.add_argument("--address", required=True, type=cli.head_address,
                        help="HOST:PORT of the head to join")
    parser.add_argument("--node-ip-address", default=None,
                        help="the address this node listens on for other nodes "
                             "(default: the interface it reaches the head from)")
    cli.add_node_arguments(parser)
    return parser


def main(argv=None):
    """Run a node joined to a head until SIGINT or SIGTERM.

    Args:
        argv: The command line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 after a stop by signal (or by ``purerun stop``), 1 if the node could
        not start or join, or exited by itself with an error.
    """
    args = _parser().parse_args(argv)
    problem = cli.check_token(args.address)
    if problem:
        print(f"purerun node: {problem}", file=sys.stderr)
        return 1
    try:
        resources = cli.node_resources_of(args)
        node = launcher.spawn_node(resources, args.object_store_memory, head=args.address,
                                   node_host=args.node_ip_address, labels=args.labels,
                                   errors_file=False)
    except (ValueError, TypeError) as exc:
        print(f"purerun node: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum, frame):
        # Once: what follows the first signal (the node's stop) must not be interrupted.
        for name in (signal.SIGINT, signal.SIGTERM):
            signal.signal(name, signal.SIG_IGN)
        raise _Stop(signum)

    previous = {name: signal.signal(name, on_signal) for name in (signal.SIGINT, signal.SIGTERM)}
    record = None
    try:
        try:
            node.wait_listening(START_TIMEOUT_S)
            record = launcher.record_node(node, args.address)
            print(f"purerun node {node.node_id[:12]} (pid {node.pid}) joined the head at "
                  f"{args.address}.\n"
                  f"Drivers on this host attach to it with "
                  f"purerun.init(address=\"{args.address}\").\n"
                  "Stop it with Ctrl-C (SIGINT) or SIGTERM.", flush=True)
            code = node.process.wait()
        except _Stop:
            node.process.send_signal(signal.SIGTERM)
            node.reap(STOP_GRACE_PERIOD_S)
            code = 0
        except launcher.NodeStartError as exc:
            # Its own error, if any, is on our stderr already.
            print(f"purerun node: could not join the head at {args.address}: "
                  f"{exc.reason or exc}", file=sys.stderr)
            return 1
    finally:
        if record is not None:
            record.forget()
        for name, handler in previous.items():
            signal.signal(name, handler)
    if code != 0:
        node.reap(0)   # removes what a node that did not exit cleanly left
        print(f"purerun node: the node exited with code {code}.", file=sys.stderr)
        return 1
    print("purerun node stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
