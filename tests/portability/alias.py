"""Make one top-level package answer to another's name: ``import ray`` gives purerun.

``install("ray", "purerun")`` puts ``sys.modules["ray"] = purerun`` and a finder at the front of
``sys.meta_path`` that answers every ``ray.X`` import with the module ``purerun.X`` itself (the
same object, not a copy), so ``import ray.util.queue``, ``from ray.exceptions import
RayTaskError`` and ``isinstance(e, ray.exceptions.RayTaskError)`` all see purerun's objects.
Classes and functions keep their real ``__module__`` (``purerun.…``), which is what pickles
name, so worker processes never need the alias.

The portability suite's shim packages (``shims/*/``) call this from their ``__init__``.
"""

import importlib
import importlib.abc
import importlib.util
import sys


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``alias.X`` as ``target.X``: the loader returns the target module unchanged."""

    def __init__(self, alias: str, target: str):
        self.alias = alias
        self.target = target

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.alias + "."):
            return None
        real_name = self.target + fullname[len(self.alias):]
        if importlib.util.find_spec(real_name) is None:
            return None     # the target has no such module: the usual ImportError follows
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(self.target + spec.name[len(self.alias):])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its real name; the import system has just stamped the
        # alias's spec on it, so give it back its own (it is still purerun.X to everyone).
        module.__spec__ = module.__spec__.loader_state


def install(alias: str, target: str):
    """Make ``import alias`` and ``import alias.X`` give ``target`` and ``target.X``.

    Returns:
        The target package (also left in ``sys.modules[alias]``).
    """
    sys.meta_path.insert(0, _AliasFinder(alias, target))
    package = importlib.import_module(target)
    sys.modules[alias] = package
    return package
