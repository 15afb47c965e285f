"""ObjectRef: a reference to a value in the object store, as in Ray.

The class lives in ``purerun.core.object_ref``: it is part of the runtime (it talks to the
client that counts it); this module is its public name.
"""

from purerun.core.object_ref import ObjectRef

__all__ = ["ObjectRef"]
