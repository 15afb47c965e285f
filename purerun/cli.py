"""The ``purerun`` command line."""

import argparse
import sys


def main(argv=None):
    """Entry point of the ``purerun`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="purerun", description="purerun command line")
    parser.add_argument("command", choices=["microbenchmark", "version"],
                        help="microbenchmark: run Ray's microbenchmark rows; version: print it")
    args, rest = parser.parse_known_args(argv[:1])
    if args.command == "version":
        import purerun
        print(purerun.__version__)
        return 0
    from purerun import microbenchmark
    microbenchmark.main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
