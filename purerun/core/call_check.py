"""Checking a remote call's arguments against the callee's signature, in the caller.

``inspect.Signature.bind`` costs several microseconds a call. Most calls pass positional
arguments to plain positional parameters; those are checked by counting, and only the
other calls (or a count that does not fit, to raise the right TypeError) are bound.
"""

import inspect

__all__ = ["CallCheck"]

_PLAIN = {inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD}


class CallCheck:
    """``check(args, kwargs)`` raises TypeError as a local call with them would."""

    __slots__ = ("signature", "simple", "min_args", "max_args")

    def __init__(self, signature):
        self.signature = signature   #: inspect.Signature, or None: nothing is checked
        self.simple = False
        if signature is not None:
            params = list(signature.parameters.values())
            if {p.kind for p in params} <= _PLAIN:
                self.simple = True
                self.max_args = len(params)
                self.min_args = sum(p.default is inspect.Parameter.empty for p in params)

    def check(self, args, kwargs):
        if self.simple and not kwargs and self.min_args <= len(args) <= self.max_args:
            return
        if self.signature is not None:
            self.signature.bind(*args, **kwargs)
