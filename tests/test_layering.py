"""The core never imports the public layer: imports point from ``purerun.*`` down into
``purerun.core.*``, never back up.

Every ``import`` and ``from ... import`` in ``purerun/core/`` counts, at any depth (an import
inside a function closes a cycle as surely as one at the top, it only hides it), and relative
imports are resolved first. The core may import itself, the standard library, third-party
packages and ``purerun.exceptions``, the shared leaf every layer raises from. Anything else
under ``purerun`` (``api``, ``actor``, ``object_ref``, ``options``, ``cli``, ... and the
package itself, whose ``__init__`` imports all of them) is the public layer.

Imports made from strings at run time (``importlib.import_module``) are not seen.
"""

import ast
import os

import pytest

import purerun

PACKAGE_DIR = os.path.dirname(os.path.abspath(purerun.__file__))
CORE_DIR = os.path.join(PACKAGE_DIR, "core")
# What the core may import from purerun, besides purerun.core itself.
SHARED_LEAVES = frozenset({"purerun.exceptions"})


def module_name(path):
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))
    parts = relative[:-len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree, module, is_package=False):
    """(line, absolute module name) of every import in ``tree``, at any depth.

    ``from a import b`` yields ``a``, except ``from purerun import b``, which yields
    ``purerun.b``: the modules taken from the package are what is imported.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            if source == "purerun":
                for alias in node.names:
                    yield node.lineno, f"purerun.{alias.name}"
            else:
                yield node.lineno, source


def is_public(name):
    """Whether ``name`` is a module of purerun's public layer (or could be one)."""
    if name == "purerun":
        return True
    if not name.startswith("purerun."):
        return False
    top = ".".join(name.split(".")[:2])
    return top != "purerun.core" and top not in SHARED_LEAVES


def upward_imports(source, path, module):
    """``path:line imports name`` for each import of the public layer in ``source``."""
    tree = ast.parse(source, path)
    where = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))
    found = {(line, name) for line, name in
             imported_modules(tree, module, path.endswith("__init__.py")) if is_public(name)}
    return [f"{where}:{line} imports {name}" for line, name in sorted(found)]


def core_files():
    for directory, _dirs, files in os.walk(CORE_DIR):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def test_the_core_never_imports_the_public_layer():
    found = []
    for path in core_files():
        with open(path) as f:
            found += upward_imports(f.read(), path, module_name(path))
    assert not found, "the core imports the public layer:\n" + "\n".join(found)


def test_every_core_module_is_checked():
    names = {module_name(path) for path in core_files()}
    assert {"purerun.core.client", "purerun.core.node", "purerun.core.worker",
            "purerun.core.local_mode", "purerun.core"} <= names


# The checker itself: each of these, written in core/client.py, must be caught.
UPWARD = [
    pytest.param("from purerun.actor import ActorHandle", "purerun.actor", id="from-module"),
    pytest.param("from purerun import api", "purerun.api", id="from-package"),
    pytest.param("import purerun.options as o", "purerun.options", id="import"),
    pytest.param("import purerun", "purerun", id="the-package"),
    pytest.param("def f():\n    if True:\n        from purerun import object_ref\n",
                 "purerun.object_ref", id="inside-a-function"),
    pytest.param("from .. import remote_function", "purerun.remote_function",
                 id="relative-up"),
    pytest.param("from purerun import exceptions, runtime_context", "purerun.runtime_context",
                 id="beside-the-shared-leaf"),
    pytest.param("from ..cli import main", "purerun.cli", id="relative-module"),
    pytest.param("from purerun.util.queue import Queue", "purerun.util.queue",
                 id="a-future-module"),
]
ALLOWED = [
    pytest.param("from purerun import exceptions", id="the-shared-leaf"),
    pytest.param("from .. import exceptions", id="the-shared-leaf-relative"),
    pytest.param("from purerun.exceptions import RayError", id="from-the-shared-leaf"),
    pytest.param("from purerun.core import ids, protocol", id="core"),
    pytest.param("from . import ids\nfrom .task_spec import TaskSpec", id="relative-core"),
    pytest.param("import os\nfrom collections import deque", id="stdlib"),
]
CLIENT = os.path.join(CORE_DIR, "client.py")


@pytest.mark.parametrize("source, name", UPWARD)
def test_the_checker_names_file_line_and_module_of_an_upward_import(source, name):
    found = upward_imports("import os\n" + source, CLIENT, "purerun.core.client")
    assert any(f.startswith("purerun/core/client.py:") and f.endswith(f" imports {name}")
               for f in found), found
    assert all(":1 " not in f for f in found)  # "import os" on line 1 is fine


@pytest.mark.parametrize("source", ALLOWED)
def test_the_checker_lets_the_core_import_downwards(source):
    assert upward_imports(source, CLIENT, "purerun.core.client") == []


# The pure rules: no socket, thread, process, file or clock of their own (the control store
# takes its clocks as arguments; ``time`` is only its default).
PURE_RULES = ("node_state", "cluster_rules", "node_vocabulary", "scheduler", "tasks", "actors",
              "object_table", "control_store", "group_rules", "placement_groups", "state_rules")
IMPURE = {"socket", "select", "selectors", "threading", "subprocess", "multiprocessing",
          "mmap", "os", "signal", "asyncio", "concurrent.futures"}


@pytest.mark.parametrize("name", PURE_RULES)
def test_the_rules_import_no_io(name):
    path = os.path.join(CORE_DIR, name + ".py")
    with open(path) as f:
        tree = ast.parse(f.read())
    used = {module for _line, module in imported_modules(tree, f"purerun.core.{name}")}
    assert not used & IMPURE, used & IMPURE
    transitive = {m for m in used if m.startswith("purerun.core.")
                  and m.rpartition(".")[2] in ("transport", "node", "object_store", "client",
                                               "worker", "launcher", "head", "remote_control")}
    assert not transitive, transitive
