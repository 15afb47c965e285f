"""``python -m purerun.head``: run the head of a multi-host cluster in the foreground.

::

    python -m purerun.head [--host 127.0.0.1] [--port 6380] [--token-path P]
                           [--address-file F] [--include-dashboard BOOL]
                           [--dashboard-host 127.0.0.1] [--dashboard-port 8265]
        │
        ├─ auth.ensure_token(): the cluster token (made in ~/.purerun/auth_token if none)
        ├─ Head(host, port, token): binds, then prints its address, where the token is, and
        │  how nodes (purerun start --address ...) and drivers (purerun.init(address=...))
        │  join; writes the address to F (atomically) for whoever started it
        ├─ with a dashboard option: the status page (core/dashboard.py) on a thread of
        │  this process, its address in the head's KV (Ray's "webui:url" in namespace
        │  "dashboard"), where joining nodes and ``purerun start`` read it
        └─ serves until SIGINT or SIGTERM; then closes its socket, removes F, exits 0

It listens on 127.0.0.1 unless told otherwise: a head reachable from other hosts is a
deliberate choice (``--host 0.0.0.0``), even though every connection must prove it knows
the token. ``--port 0`` takes any free port; the banner and the address file say which.
"""

import argparse
import logging
import os
import signal
import socket
import sys

from purerun.core import auth, transport
from purerun.core.head import DEFAULT_PORT, Head, format_address
from purerun.core.launcher import DASHBOARD_NAMESPACE, DASHBOARD_PORT, DASHBOARD_URL_KEY
from purerun.core.transport import LOOPBACK

__all__ = ["main", "add_dashboard_arguments", "dashboard_wanted"]

# Addresses that mean "every interface": not one a peer can connect to.
_ANY = ("0.0.0.0", "::", "")
# A routable address no packet is ever sent to: connecting a UDP socket there only asks the
# kernel which interface (and so which source address) it would use.
_PROBE = ("10.255.255.255", 1)


def _advertised_host(host: str) -> str:
    """The host peers should connect to, for a head bound to ``host``."""
    if host not in _ANY:
        return host
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(_PROBE)
        return probe.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())
    finally:
        probe.close()


def _write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees nothing or all of it."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _banner(head: Head, address: str, host: str, token_where: str,
            dashboard_url=None) -> str:
    lines = [
        f"purerun head listening on {head.address}",
        f"  Cluster token:     {token_where}",
        "                     (every node and driver of the cluster needs this same token)",
        f"  Join a node:       purerun start --address {address}",
        f"  Connect a driver:  purerun.init(address=\"{address}\")",
    ]
    if dashboard_url:
        lines.append(f"  Status page:       http://{dashboard_url} (it asks for the token)")
    if transport.is_loopback(host):
        lines.append(f"  Only this host can connect (bound to {host}); --host 0.0.0.0 "
                     "accepts other hosts.")
    lines.append("Stop it with Ctrl-C (SIGINT) or SIGTERM.")
    return "\n".join(lines)


def _bool(text):
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def add_dashboard_arguments(parser):
    """The status page's options (Ray's names), for ``python -m purerun.head`` and
    ``purerun start --head``."""
    parser.add_argument("--include-dashboard", type=_bool, default=None, metavar="BOOL",
                        help="serve the status page (default: only when --dashboard-port "
                             "or --dashboard-host is given)")
    parser.add_argument("--dashboard-host", default=None,
                        help=f"the status page's interface (default {LOOPBACK})")
    parser.add_argument("--dashboard-port", type=int, default=None,
                        help=f"the status page's port (default {DASHBOARD_PORT}, or the next "
                             "free one; 0 for any free one)")


def dashboard_wanted(args):
    """Whether the parsed options ask for the status page."""
    if args.include_dashboard is not None:
        return args.include_dashboard
    return args.dashboard_port is not None or args.dashboard_host is not None


def main(argv=None) -> int:
    """Run a head until SIGINT or SIGTERM.

    Args:
        argv: The command line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 after a clean stop, 1 if the token or the port could not be had.
    """
    parser = argparse.ArgumentParser(
        prog="python -m purerun.head",
        description="Run the head of a multi-host purerun cluster in the foreground.")
    parser.add_argument("--host", default=LOOPBACK,
                        help=f"interface to listen on (default {LOOPBACK}; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port (default {DEFAULT_PORT}; 0 for any free one)")
    parser.add_argument("--token-path", default=None,
                        help="file holding the cluster token, made if missing (default: "
                             f"${auth.TOKEN_ENV}, ${auth.TOKEN_PATH_ENV}, or "
                             f"{auth.DEFAULT_TOKEN_PATH})")
    parser.add_argument("--address-file", default=None,
                        help="write the head's host:port to this file once listening")
    add_dashboard_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        token, token_path = auth.ensure_token(args.token_path)
    except (ValueError, OSError) as exc:
        print(f"purerun head: no cluster token: {exc}", file=sys.stderr)
        return 1
    try:
        head = Head(args.host, args.port, token)
    except (ValueError, OSError) as exc:
        where = format_address(args.host, args.port)
        print(f"purerun head: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1

    port = int(head.address.rpartition(":")[2])
    address = format_address(_advertised_host(args.host), port)
    dashboard = None
    if dashboard_wanted(args):
        from purerun.core.dashboard import DashboardServer, HeadSource
        try:
            dashboard = DashboardServer(HeadSource(address, token), token,
                                        args.dashboard_host or LOOPBACK, args.dashboard_port)
        except (ValueError, OSError) as exc:
            head.close()
            print(f"purerun head: {exc}", file=sys.stderr)
            return 1
        head.store.kv_put(DASHBOARD_URL_KEY, dashboard.url, True, DASHBOARD_NAMESPACE)

    def stop(signum, frame):
        head.stop()

    previous = {}
    wrote_address = False
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
        token_where = f"in {token_path}" if token_path else auth.token_source_text()
        print(_banner(head, address, args.host, token_where,
                      dashboard.url if dashboard else None), flush=True)
        if dashboard is not None:
            dashboard.start()
        if args.address_file:
            _write_atomically(args.address_file, address + "\n")
            wrote_address = True
        head.serve()
    finally:
        if dashboard is not None:
            dashboard.stop()
        head.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if wrote_address:
            try:
                os.unlink(args.address_file)
            except OSError:
                pass
    print("purerun head stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
