"""Find what keeps an object from being serialized, as ``ray.util.inspect_serializability``.

Tasks, actors and their arguments travel pickled with cloudpickle. When that fails, the
error names the type that failed but not where it sits: a lock in a global the function
uses, a socket in an attribute of an attribute. ``inspect_serializability`` walks down
from the object (a function's globals and closure variables, an object's attributes) to
at most ``depth`` levels, trying each, and reports the innermost objects that fail.
"""

import inspect

import cloudpickle

__all__ = ["FailureTuple", "inspect_serializability"]

class FailureTuple:
    """One object that failed to serialize, and where it was found.

    Attributes:
        obj: the object that failed.
        name: the variable or attribute name it was found under (None for the object
            given to ``inspect_serializability`` without a name).
        parent: the object that refers to it (None at the top).
        path: the names from the inspected object down to this one.
    """

    def __init__(self, obj, name, parent, path=()):
        self.obj = obj
        self.name = name
        self.parent = parent
        self.path = tuple(path)

    def __repr__(self):
        shown = [str(p) if p is not None else "unknown" for p in self.path]
        return (f"FailTuple({self.name} [path={' -> '.join(shown)}, obj={self.obj}, "
                f"parent={self.parent}])")


class _Printer:
    def __init__(self, print_file):
        self.level = 0
        self.print_file = print_file

    def print(self, msg):
        print("    " * self.level + msg, file=self.print_file)


def inspect_serializability(base_obj, name=None, depth=3, print_file=None):
    """Find the objects that keep ``base_obj`` from being serialized.

    Prints what it tries and what fails (to ``print_file``, or stdout) and returns the
    innermost failing objects it found within ``depth`` levels.

    Args:
        base_obj: the object to check (a function, a class, an instance, ...).
        name: a name for it in the report.
        depth: how many levels of globals, closure variables and attributes to walk down.
        print_file: a file to print to, as ``print(file=...)`` takes it.

    Returns:
        ``(serializable, failures)``: True and an empty set if it serializes; otherwise
        False and a set of ``FailureTuple``.

    Raises:
        TypeError: ``depth`` is not an int.
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth must be an int, got {type(depth).__name__}")
    printer = _Printer(print_file)
    declaration = f"Checking Serializability of {base_obj}"
    rule = "=" * min(len(declaration), 80)
    printer.print(rule)
    printer.print(declaration)
    printer.print(rule)
    path = (name,) if name is not None else ()
    failures = set()
    serializable = _inspect(base_obj, name, depth, None, failures, printer, path)
    if serializable:
        return True, failures
    printer.print(rule)
    printer.print("Variable: \n\n\t" + "\n".join(str(f) for f in failures) + "\n\nwas found "
                  "to be non-serializable. There may be multiple other undetected "
                  "variables that were non-serializable.")
    printer.print("Consider either removing the instantiation/imports of these variables "
                  "or moving the instantiation into the scope of the function/class.")
    printer.print(rule)
    return False, failures


def _inspect(obj, name, depth, parent, failures, printer, path):
    """Whether ``obj`` serializes; if not, add the innermost failures below it."""
    if parent is not None:
        printer.print(f"Serializing '{name}' {obj}...")
    try:
        cloudpickle.dumps(obj)
        return True
    except Exception as exc:  # any failure to pickle is what is being looked for
        printer.print(f"!!! FAIL serialization: {exc}")
    if depth > 0:
        before = len(failures)
        printer.level += 1
        try:
            if inspect.isfunction(obj):
                _inspect_function(obj, depth, failures, printer, path)
            else:
                _inspect_members(obj, depth, failures, printer, path)
        finally:
            printer.level -= 1
        if len(failures) > before:
            return False
    # Nothing below it failed on its own (or the walk stops here): this is the culprit.
    failures.add(FailureTuple(obj, name, parent, path))
    return False


def _inspect_function(fn, depth, failures, printer, path):
    closure = inspect.getclosurevars(fn)
    for kind, variables in (("global", closure.globals), ("nonlocal", closure.nonlocals)):
        if not variables:
            continue
        printer.print(f"Detected {len(variables)} {kind} variables. Checking "
                      f"serializability...")
        for var_name, value in variables.items():
            if not _inspect_child(value, var_name, depth, fn, failures, printer, path):
                return
    printer.print(f"WARNING: Did not find non-serializable object in {fn}. This may be "
                  "an oversight.")


def _inspect_members(obj, depth, failures, printer, path):
    try:
        members = inspect.getmembers(obj)
    except Exception:  # an object whose attributes cannot even be listed: it is the culprit
        return
    for member_name, value in members:
        if member_name.startswith("__") and member_name.endswith("__"):
            continue
        if inspect.isbuiltin(value):
            continue
        if not _inspect_child(value, member_name, depth, obj, failures, printer, path):
            return
    printer.print(f"WARNING: Did not find non-serializable object in {obj}. This may be "
                  "an oversight.")


def _inspect_child(value, name, depth, parent, failures, printer, path):
    return _inspect(value, name, depth - 1, parent, failures, printer, path + (name,))
