"""The portability suite: the same programs run unchanged on purerun and on Ray.

Every program in ``programs/`` and every example in ``examples/`` is an ordinary Ray program
(``import ray``; the examples say ``import purerun as ray``). This runner starts each one in
a fresh interpreter with a shim directory first on ``PYTHONPATH``:

    backend   shim                        so that
    purerun   shims/ray_is_purerun/ray    ``import ray``, ``import ray.util.queue``, ... give purerun
    ray       shims/purerun_is_ray/purerun ``import purerun ...`` (the examples) gives Ray

and compares what the program prints (stdout only) with ``expected/<name>.out``. One expected
file per program, checked against both backends, makes purerun's output equal to Ray's. The
programs print deterministic output: sorted, no timings, ids or pids.

A program may carry marker lines, ``# portability: <marker>``:

    purerun-only, <reason>   not run on Ray (purerun differs from Ray there on purpose)
    ray-needs <module>, <reason>
                             on Ray, skipped unless <module> can be imported (e.g. the state
                             API needs ray[default], which a plain `pip install ray` lacks)
    args <a> <b> ...         command-line arguments (e.g. a smaller problem for an example)
    scrub <regex>            every match in the output is replaced by "<scrubbed>" before the
                             comparison (for what legitimately varies: a timing, a node id)

Usage (the main test suite runs the purerun leg through tests/test_portability.py):

    python tests/portability/runner.py --backend ray [--jobs 2] [name ...]
    python tests/portability/runner.py --backend purerun --update name   # write expected/name.out

It needs only the standard library, so it runs in a virtual environment that has Ray and not
purerun (nor pytest). Exit status: 0 when every program that ran passed.
"""

import argparse
import concurrent.futures
import difflib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROGRAMS_DIR = os.path.join(HERE, "programs")
EXAMPLES_DIR = os.path.join(REPO, "examples")
EXPECTED_DIR = os.path.join(HERE, "expected")
BACKENDS = ("purerun", "ray")
SHIMS = {
    "purerun": os.path.join(HERE, "shims", "ray_is_purerun"),
    "ray": os.path.join(HERE, "shims", "purerun_is_ray"),
}
# Seconds one program may take before it counts as hung. Ray starts a local cluster in
# seconds, several times over for a multi-node program, and a shared 2-core CI machine is
# slow: its limit is the larger one.
TIMEOUT_S = {"purerun": 60.0, "ray": 240.0}
# Settings for both backends, so that a program stays light on a small machine: no memory
# monitor thread; on Ray no usage report and no token file written to the home directory.
# RAY_LOG_TO_DRIVER=0: what is compared is what the driver prints, and Ray would add to its
# stdout the raylet's warnings (a worker died, a task is retried) and workers' output.
ENVIRONMENT = {
    "RAY_memory_monitor_refresh_ms": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_LOG_TO_DRIVER": "0",
}
# What Ray prints when its local cluster did not come up (a loaded machine): the program
# never ran, so it runs once more rather than counting as a difference.
RAY_START_FAILED = "timed out during startup"
MARKER = re.compile(r"^\s*#\s*portability:\s*(.+?)\s*$")
SCRUBBED = "<scrubbed>"
# How much of a failed program's stderr a report shows: the end, where the traceback is.
STDERR_TAIL_LINES = 40


@dataclass
class Program:
    """One program of the suite and what its marker lines say."""

    name: str                       #: "tasks_options", or "example_pi" for examples/pi.py
    path: str
    purerun_only: Optional[str] = None      #: the reason, when it is not run on Ray
    ray_needs: Optional[tuple] = None       #: (module, reason): what it needs on Ray
    args: List[str] = field(default_factory=list)
    scrubs: List["re.Pattern"] = field(default_factory=list)

    @property
    def expected_path(self) -> str:
        return os.path.join(EXPECTED_DIR, self.name + ".out")


@dataclass
class Result:
    """The outcome of one program on one backend: "passed", "failed" or "skipped"."""

    program: Program
    backend: str
    status: str
    detail: str = ""                #: why it failed (a diff, the stderr) or was skipped
    output: str = ""                #: normalized stdout
    seconds: float = 0.0


def parse_markers(program: Program, source: str) -> Program:
    """Fill ``program``'s markers from the ``# portability: ...`` lines of its source.

    Raises:
        ValueError: a marker line that says something this runner does not know.
    """
    for number, line in enumerate(source.splitlines(), 1):
        match = MARKER.match(line)
        if not match:
            continue
        text = match.group(1)
        if text.startswith("purerun-only"):
            reason = text[len("purerun-only"):].lstrip(" ,:")
            if not reason:
                raise ValueError(f"{program.path}:{number}: purerun-only needs a reason")
            program.purerun_only = reason
        elif text.startswith("ray-needs "):
            module, _, reason = text[len("ray-needs "):].partition(",")
            if not reason.strip():
                raise ValueError(f"{program.path}:{number}: ray-needs needs a module and a "
                                 f"reason")
            program.ray_needs = (module.strip(), reason.strip())
        elif text.startswith("args "):
            program.args.extend(text[len("args "):].split())
        elif text.startswith("scrub "):
            program.scrubs.append(re.compile(text[len("scrub "):]))
        else:
            raise ValueError(f"{program.path}:{number}: unknown portability marker {text!r} "
                             f"(known: purerun-only, ray-needs, args, scrub)")
    return program


def discover() -> List[Program]:
    """Every program of the suite, sorted by name: programs/*.py, then examples/*.py."""
    found = []
    for directory, prefix in ((PROGRAMS_DIR, ""), (EXAMPLES_DIR, "example_")):
        for entry in sorted(os.listdir(directory)):
            if entry.endswith(".py") and not entry.startswith("_"):
                path = os.path.join(directory, entry)
                with open(path, encoding="utf-8") as f:
                    source = f.read()
                found.append(parse_markers(Program(prefix + entry[:-3], path), source))
    return found


def normalize(program: Program, stdout: str) -> str:
    """The output as compared: scrubbed, trailing spaces and blank lines gone."""
    for pattern in program.scrubs:
        stdout = pattern.sub(SCRUBBED, stdout)
    lines = [line.rstrip() for line in stdout.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def environment(backend: str, tmpdir: Optional[str] = None) -> dict:
    """The environment a program runs in on ``backend``: the shim first on PYTHONPATH, no
    cluster address inherited (each program starts its own cluster).

    ``tmpdir`` becomes TMPDIR. Each program gets a directory of its own because a Ray
    ``init()`` without an address joins any cluster it finds recorded under TMPDIR (e.g. one
    that another program is running at the same time) instead of starting its own.
    """
    env = {key: value for key, value in os.environ.items()
           if key not in ("PURERUN_ADDRESS", "RAY_ADDRESS", "PYTHONPATH", "RAY_TMPDIR")}
    env.update(ENVIRONMENT)
    if tmpdir is not None:
        env["TMPDIR"] = tmpdir
    path = [SHIMS[backend]]
    if backend == "purerun":
        path.append(REPO)           # purerun itself, also where it is not installed
    inherited = os.environ.get("PYTHONPATH")
    if inherited:
        path.append(inherited)
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])


def run(program: Program, backend: str, python: str = sys.executable,
        timeout: Optional[float] = None) -> Result:
    """Run ``program`` on ``backend`` in a fresh interpreter and compare its output.

    Args:
        program: From ``discover()``.
        backend: "purerun" or "ray".
        python: The interpreter, whose environment has the backend installed.
        timeout: Seconds before the program counts as hung; the backend's default if None.

    Returns:
        A ``Result``; a program without an expected file fails, showing its output.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "ray" and program.purerun_only:
        return Result(program, backend, "skipped", "purerun-only: " + program.purerun_only)
    if backend == "ray" and program.ray_needs:
        module, reason = program.ray_needs
        if not _can_import(python, module):
            return Result(program, backend, "skipped",
                          f"{reason} (no module {module!r} in {python})")
    timeout = TIMEOUT_S[backend] if timeout is None else timeout
    # Short: unix socket paths under it must stay below the kernel's ~107-byte limit.
    tmpdir = tempfile.mkdtemp(prefix="port-")
    start = time.monotonic()
    try:
        argv = [python, program.path, *program.args]
        returncode, stdout, stderr = _run_in_own_session(argv, environment(backend, tmpdir),
                                                         timeout)
        if backend == "ray" and returncode and RAY_START_FAILED in stderr:
            shutil.rmtree(tmpdir, ignore_errors=True)
            os.makedirs(tmpdir)
            returncode, stdout, stderr = _run_in_own_session(
                argv, environment(backend, tmpdir), timeout)
        # purerun removes a node's session directory when the node stops (Ray keeps its
        # own on purpose): one left behind is a leak, as in the main suite's leak guard.
        left = glob.glob(os.path.join(tmpdir, "purerun-sessions", "session_*"))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    seconds = time.monotonic() - start
    output = normalize(program, stdout)
    if returncode is None:
        return Result(program, backend, "failed",
                      f"timed out after {timeout:g} s\n--- stdout ---\n{output}"
                      f"--- stderr (end) ---\n{_tail(stderr)}", output, seconds)
    if returncode != 0:
        return Result(program, backend, "failed",
                      f"exit status {returncode}\n--- stdout ---\n{output}"
                      f"--- stderr (end) ---\n{_tail(stderr)}", output, seconds)
    if left:
        return Result(program, backend, "failed",
                      f"left {len(left)} purerun session directory(ies) behind",
                      output, seconds)
    if not os.path.exists(program.expected_path):
        return Result(program, backend, "failed",
                      f"no expected output {program.expected_path}; this run printed:\n{output}",
                      output, seconds)
    with open(program.expected_path, encoding="utf-8") as f:
        expected = f.read()
    if output != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(True), output.splitlines(True),
            fromfile=f"expected/{program.name}.out", tofile=f"{backend} output"))
        return Result(program, backend, "failed",
                      f"output differs\n{diff}--- stderr (end) ---\n{_tail(stderr)}",
                      output, seconds)
    return Result(program, backend, "passed", "", output, seconds)


_importable = {}


def _can_import(python: str, module: str) -> bool:
    """Whether ``python`` can import ``module`` (asked once per interpreter and module)."""
    key = (python, module)
    if key not in _importable:
        done = subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                              timeout=120)
        _importable[key] = done.returncode == 0
    return _importable[key]


def _run_in_own_session(argv, env, timeout):
    """Run ``argv`` in a new session; past ``timeout`` kill its whole process group (a
    hung program's cluster processes too), so nothing outlives a program that hung.

    Returns:
        (exit status or None after a timeout, stdout, stderr).
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        return proc.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
        return None, stdout, stderr


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the portability suite on one backend.")
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter with the backend installed (default: this one)")
    parser.add_argument("--jobs", type=int, default=1, help="programs run at the same time")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per program")
    parser.add_argument("--update", action="store_true",
                        help="write each named program's output as its expected output")
    parser.add_argument("--rerun-failed", action="store_true",
                        help="run a program that failed once more, alone, and count the "
                             "second run (for a backend that is flaky when run in parallel "
                             "under load)")
    parser.add_argument("names", nargs="*", help="run only these programs (default: all)")
    options = parser.parse_args(argv)

    programs = discover()
    if options.names:
        known = {p.name: p for p in programs}
        unknown = sorted(set(options.names) - set(known))
        if unknown:
            parser.error(f"no such program(s): {', '.join(unknown)}")
        programs = [known[name] for name in options.names]
    elif options.update:
        parser.error("--update needs the names of the programs whose output to keep")

    with concurrent.futures.ThreadPoolExecutor(max(1, options.jobs)) as pool:
        futures = [pool.submit(run, p, options.backend, options.python, options.timeout)
                   for p in programs]
        results = []
        for future in futures:
            result = future.result()
            results.append(result)
            print(f"{result.status.upper():8} {result.program.name} "
                  f"({result.seconds:.1f} s)" + (f": {result.detail}" if result.status ==
                                                 "skipped" else ""), flush=True)
            if result.status == "failed":
                if options.update and result.detail.startswith(("output differs", "no expected")):
                    with open(result.program.expected_path, "w", encoding="utf-8") as f:
                        f.write(result.output)
                    print(f"         wrote {result.program.expected_path}")
                else:
                    print("    " + result.detail.replace("\n", "\n    "), flush=True)

    if options.rerun_failed and not options.update:
        for i, result in enumerate(results):
            if result.status == "failed":
                again = run(result.program, options.backend, options.python, options.timeout)
                print(f"RERUN    {again.status.upper():8} {again.program.name} "
                      f"({again.seconds:.1f} s)", flush=True)
                if again.status == "failed":
                    print("    " + again.detail.replace("\n", "\n    "), flush=True)
                results[i] = again

    counts = {status: sum(r.status == status for r in results)
              for status in ("passed", "failed", "skipped")}
    print(f"{options.backend}: {len(results)} programs, {counts['passed']} passed, "
          f"{counts['failed']} failed, {counts['skipped']} skipped")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
