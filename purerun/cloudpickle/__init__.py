"""``purerun.cloudpickle``: the cloudpickle purerun serializes with, as ``ray.cloudpickle``.

Ray vendors cloudpickle under its own name; purerun depends on the cloudpickle package
instead, and this module is that package under purerun's name, so that
``import purerun.cloudpickle as pickle; pickle.dumps(fn)`` works as it does with Ray.
"""

from pickle import PicklingError, UnpicklingError

import cloudpickle as _cloudpickle
from cloudpickle import (CloudPickler, Pickler, __version__, dump, dumps, load, loads,
                         register_pickle_by_value, unregister_pickle_by_value)

# Ray's name for the pickle protocol its cloudpickle uses by default.
DEFAULT_PROTOCOL = _cloudpickle.DEFAULT_PROTOCOL

__all__ = ["CloudPickler", "DEFAULT_PROTOCOL", "Pickler", "PicklingError", "UnpicklingError",
           "__version__", "dump", "dumps", "load", "loads", "register_pickle_by_value",
           "unregister_pickle_by_value"]
