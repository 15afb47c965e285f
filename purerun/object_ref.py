"""ObjectRef: a reference to a value in the object store, as in Ray; ObjectRefGenerator
and DynamicObjectRefGenerator: the refs of generator calls.

The class lives in ``purerun.core.object_ref``: it is part of the runtime (it talks to the
client that counts it); this module is its public name.
"""

from purerun.core.object_ref import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator

__all__ = ["ObjectRef", "ObjectRefGenerator", "DynamicObjectRefGenerator"]
