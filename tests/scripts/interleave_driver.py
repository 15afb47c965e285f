"""A process for test_output.py: relays worker lines while its main thread prints.

One thread writes ``RELAYS`` bursts of ``LINES`` prefixed lines the way the driver's client
relays worker output; the main thread meanwhile writes ``MARKS`` lines of its own. Stdout is
unbuffered (the test runs this with ``-u``) and, where Linux allows, a pipe of one page, so
the relay's writes block on a full pipe again and again.
"""

import sys
import threading

from purerun.core import progress

LINES = 10000
RELAYS = 2
MARKS = 1000
PREFIX = "(pid=1) "


def relay():
    lines = [f"numbered line {i} from the worker" for i in range(LINES)]
    for _ in range(RELAYS):
        progress.write_lines(sys.stdout, PREFIX, lines)


def main():
    if sys.platform.startswith("linux"):
        import fcntl
        try:
            fcntl.fcntl(1, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
        except OSError:
            pass
    thread = threading.Thread(target=relay)
    thread.start()
    for i in range(MARKS):
        sys.stdout.write(f"MARK {i}\n")
        sys.stdout.flush()
    thread.join()


if __name__ == "__main__":
    main()
