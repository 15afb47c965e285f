"""``purerun.internal``: lower-level calls Ray keeps under ``ray.internal``."""

from purerun.core import context
from purerun.object_ref import ObjectRef


def free(object_refs, local_only=False):
    """Release objects from the object store now, even if references to them remain.

    A later ``get`` of a freed object raises ObjectFreedError. Memory still read through
    zero-copy views is released when the last view dies.

    Args:
        object_refs: an ObjectRef or a list of them.
        local_only: accepted for compatibility with Ray; purerun frees on the node either way.

    Raises:
        TypeError: not ObjectRefs.
    """
    if isinstance(object_refs, ObjectRef):
        object_refs = [object_refs]
    if not isinstance(object_refs, list) or not all(isinstance(r, ObjectRef)
                                                    for r in object_refs):
        raise TypeError("free() expects an ObjectRef or a list of ObjectRefs, got "
                        f"{type(object_refs).__name__}")
    if not object_refs:
        return
    context.get_or_start().free(object_refs)
