"""On the Ray leg of the portability suite: Ray's own messages go to stderr, not stdout.

A Ray driver prints on its stdout what its raylet reports (a task failed and will be
retried, a worker died, many workers were started). The suite compares a program's stdout,
what the program itself prints; so, once ``ray._private.worker`` is imported, its
``print_to_stdstream`` sends the raylet's and the autoscaler's messages to stderr instead.
Nothing else changes. (Workers' output is off: the runner sets RAY_LOG_TO_DRIVER=0.)
"""

import importlib.abc
import importlib.util
import sys

_MODULE = "ray._private.worker"
_RAY_ITSELF = ("raylet", "autoscaler")


def _reroute(worker_module):
    original = worker_module.print_to_stdstream

    def print_to_stdstream(data, *args, **kwargs):
        if data.get("pid") in _RAY_ITSELF:
            data = {**data, "is_err": True}
        return original(data, *args, **kwargs)

    worker_module.print_to_stdstream = print_to_stdstream


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds ``_MODULE`` as usual, and patches it once it has been executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            _reroute(module)

        spec.loader.exec_module = exec_then_patch
        return spec


sys.meta_path.insert(0, _AfterImport())
