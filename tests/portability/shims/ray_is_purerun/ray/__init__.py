"""`import ray` is purerun: this directory goes first on PYTHONPATH when the portability
suite runs a program written for ray on purerun (see ../../alias.py)."""

import importlib.util as _util
import os as _os

_spec = _util.spec_from_file_location(
    "_portability_alias",
    _os.path.join(_os.path.dirname(__file__), _os.pardir, _os.pardir, _os.pardir, "alias.py"))
_alias = _util.module_from_spec(_spec)
_spec.loader.exec_module(_alias)
_alias.install("ray", "purerun")
