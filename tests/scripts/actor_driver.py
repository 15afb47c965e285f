"""A second driver for tests/test_actors.py: connects to a running node, makes or looks up
named actors, prints what happened, and exits.

Usage::

    python actor_driver.py '<json spec>'

The spec is ``{"address": <node socket path>, "namespace": <job namespace or null>,
"steps": [...]}``; each step is one of

* ``{"make": NAME, "value": V, "detached": BOOL, "add": N}``: create the actor
  ``Box(V)`` named NAME (detached if asked), then call ``add(N)`` on it when N is given;
* ``{"lookup": NAME, "namespace": NS}``: ``get_actor(NAME, namespace=NS)`` and read its
  value.

The last line of stdout is ``RESULT <json list>``, one entry per step: ``{"pid", "value"}``
for a step that worked, ``{"error": <exception type>, "message": ...}`` for one that raised.
The driver then exits without calling shutdown(): what it leaves behind is what the tests
look at.
"""

import json
import os
import sys

import purerun

# Upper bound on one call: far above what a call takes, so a hang fails the test quickly.
CALL_TIMEOUT_S = 60


@purerun.remote
class Box:
    """A named value; ``add`` changes it, so a later driver can tell it met the same actor."""

    def __init__(self, value):
        self.value = value

    def add(self, amount):
        self.value += amount
        return self.value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()


def run_step(step):
    if "make" in step:
        options = {"name": step["make"]}
        if step.get("detached"):
            options["lifetime"] = "detached"
        box = Box.options(**options).remote(step.get("value", 0))
        if step.get("add") is not None:
            purerun.get(box.add.remote(step["add"]), timeout=CALL_TIMEOUT_S)
    else:
        box = purerun.get_actor(step["lookup"], namespace=step.get("namespace"))
    pid, value = purerun.get([box.pid.remote(), box.get.remote()], timeout=CALL_TIMEOUT_S)
    return {"pid": pid, "value": value}


def main():
    spec = json.loads(sys.argv[1])
    purerun.init(address=spec["address"], namespace=spec.get("namespace"),
                 log_to_driver=False)
    results = []
    for step in spec["steps"]:
        try:
            results.append(run_step(step))
        except Exception as exc:  # reported to the test, which decides what was expected
            results.append({"error": type(exc).__name__, "message": str(exc)})
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
