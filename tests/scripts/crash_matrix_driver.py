"""A driver for test_crash_matrix.py that crashes in its own process: os._exit(3) while it
pickles a call's argument, or while it unpickles a call's result.

Usage: python crash_matrix_driver.py task|actor pickle-arguments|unpickle-result

It prints ``SESSION <session dir>`` and ``CALLED`` before the fault, and ``SURVIVED`` if it
lives through it (it must not): the test checks its exit status, 3, and that its node and
workers went with it.
"""

import sys

import purerun
from test_crash_matrix import PHASES, Target


def main(target, phase):
    info = purerun.init(num_cpus=1)
    print("SESSION " + info["session_dir"], flush=True)
    on = None
    if target == "actor":
        on = Target.remote()
        purerun.get(on.pid.remote())
    print("CALLED", flush=True)
    purerun.get(PHASES[phase]("crash", on))
    print("SURVIVED", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
