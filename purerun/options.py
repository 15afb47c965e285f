"""Every option that ``@remote(...)``, ``@method(...)`` and ``.options(...)`` accept, declared
once, and what they mean for the specs the runtime runs.

The table ``OPTIONS`` below is the single home of each option's name, what it applies to
(tasks, actors, actor methods), its default and its check. Everything else — the per-kind
lookup tables, the "valid ones are ..." lists in error messages, ``defaults()`` — is derived
from it at import time, so that ``validate_options`` (run on every ``.options()`` call) only
does one dict lookup and one check per option given.

The runtime never reads options: ``task_fields``, ``actor_fields`` and ``method_fields``
turn validated options into the fields of ``core.task_spec.TaskSpec`` and ``ActorSpec``
(with every default applied here, once), and the public classes pass those down.

The option set, defaults and checks match Ray 2.x's remote options. purerun also accepts
the 2020 names ``num_return_vals`` (for ``num_returns``) and ``max_reconstructions`` (for
``max_restarts``); they are renamed on validation.

Conventions of the validated dicts this module returns:

* Only the options the user gave appear; ``defaults(kind)`` has the rest.
* For options whose ``None`` only ever means "not set" (counts and resource amounts),
  ``None`` is replaced by the option's default, so ``{**defaults(kind), **validated}``
  always holds concrete values for them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional, Tuple

from purerun.core import serialization
from purerun.core.scheduler import RESOURCE_UNIT
from purerun.core.task_spec import NODE_AFFINITY, ActorSpec
from purerun.core import placement_groups as _groups
from purerun.util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                                NodeLabelSchedulingStrategy,
                                                PlacementGroupSchedulingStrategy,
                                                label_constraints)

TASK = "task"
ACTOR = "actor"
METHOD = "method"
_KINDS = (TASK, ACTOR, METHOD)
_BOTH = frozenset((TASK, ACTOR))
_ALL = frozenset(_KINDS)
_TASK_ONLY = frozenset((TASK,))
_ACTOR_ONLY = frozenset((ACTOR,))
_METHOD_ONLY = frozenset((METHOD,))
_TASK_AND_METHOD = frozenset((TASK, METHOD))
_ACTOR_AND_METHOD = frozenset((ACTOR, METHOD))

# Ray's DEFAULT_TASK_MAX_RETRIES: a task is retried this many times if its worker dies.
DEFAULT_TASK_MAX_RETRIES = 3

# Calls an actor runs at once when max_concurrency is not given, as in Ray. A threaded
# actor runs one call at a time, so its methods need no locks; an asyncio actor's calls are
# coroutines that give way whenever they wait, so many can be in flight on its one thread.
DEFAULT_MAX_CONCURRENCY = 1
DEFAULT_ASYNC_MAX_CONCURRENCY = 1000

# A task asking for a given accelerator_type needs this much of the node resource
# "accelerator_type:<type>": enough to require the accelerator, too little to limit how
# many such tasks share a node. Same amount as Ray.
ACCELERATOR_TYPE_RESOURCE_AMOUNT = 0.001

_UNSET = object()


@dataclass(frozen=True)
class Option:
    """One remote option.

    Attributes:
        name: The keyword, as in Ray 2.x.
        applies_to: The kinds ("task", "actor", "method") that accept it.
        default: The default value (for the kinds without one of their own below).
        check: ``check(name, value, kind)`` raises TypeError for a value of the wrong type
            and ValueError for a value of the right type that is not allowed.
        actor_default: The default for actors when it differs from ``default``.
        method_default: The default for actor methods when it differs from ``default``.
        none_means_default: ``None`` only means "not set": validation replaces it by the
            default.
        allowed_in_options_call: False for options that can only be set in the decorator.
        rejected_for: Error message for the kind the option does not apply to, when a
            clearer one than "Invalid option keyword" exists.
    """

    name: str
    applies_to: FrozenSet[str]
    default: Any
    check: Callable[[str, Any, str], None]
    actor_default: Any = _UNSET
    method_default: Any = _UNSET
    none_means_default: bool = False
    allowed_in_options_call: bool = True
    rejected_for: Optional[str] = None

    def default_for(self, kind: str) -> Any:
        """The default value of this option for ``kind``."""
        if kind == ACTOR and self.actor_default is not _UNSET:
            return self.actor_default
        if kind == METHOD and self.method_default is not _UNSET:
            return self.method_default
        return self.default


# --------------------------------------------------------------------------------------
# Checks. Booleans are ints in Python, but ``num_cpus=True`` is a mistake, never a count:
# every numeric check rejects bool explicitly.


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} of type {type(value).__name__}"


def _type_error(name: str, expected: str, value: Any) -> TypeError:
    return TypeError(f"The type of option '{name}' must be {expected}, but got {_describe(value)}.")


def _is_int(value: Any) -> bool:
    # type() fast path first: the ABC check is only needed for numpy-style integers.
    return type(value) is int or (
        isinstance(value, numbers.Integral) and not isinstance(value, bool)
    )


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) or (
        isinstance(value, numbers.Real) and not isinstance(value, bool)
    )


def _check_amount(label: str, value: Any) -> None:
    """A resource amount: a finite number >= 0, at most 4 decimal places of precision.

    The scheduler counts amounts in units of 1/RESOURCE_UNIT, as Ray does: a smaller
    non-zero amount would round to nothing, and the request would silently be free.

    ``label`` says what the amount is for, e.g. "option 'num_cpus'".
    """
    if not _is_number(value):
        raise TypeError(
            f"The quantity of {label} must be a non-negative number (int or float), but got "
            f"{_describe(value)}."
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"The quantity of {label} must be a finite number >= 0, but got {value!r}."
        )
    if 0 < value and int(value * RESOURCE_UNIT) == 0:
        raise ValueError(
            f"The precision of the fractional quantity of {label} cannot go beyond "
            f"{1 / RESOURCE_UNIT}, but got {value!r}."
        )


def _resource_amount(name: str, value: Any, kind: str) -> None:
    if value is not None:
        _check_amount(f"option '{name}'", value)


def _counting(minimum: int, rule: str) -> Callable[[str, Any, str], None]:
    """An integer count >= ``minimum`` (or None); ``rule`` says so in error messages."""

    def check(name: str, value: Any, kind: str) -> None:
        if value is None:
            return
        if not _is_int(value):
            raise _type_error(name, "an int", value)
        if value < minimum:
            raise ValueError(f"The option '{name}' only accepts {rule}, but got {value!r}.")

    return check


def _instance_of(types: Tuple[type, ...], expected: str, allow_none: bool = True):
    def check(name: str, value: Any, kind: str) -> None:
        if value is None and allow_none:
            return
        if not isinstance(value, types):
            raise _type_error(name, expected, value)

    return check


def _check_bool(name: str, value: Any, kind: str) -> None:
    if not isinstance(value, bool):
        raise _type_error(name, "a bool", value)


def _check_num_returns(name: str, value: Any, kind: str) -> None:
    if value is None or value == "dynamic" or value == "streaming":
        return
    if isinstance(value, str):
        raise ValueError(
            f"The option '{name}' only accepts None, a non-negative integer, 'streaming' "
            f"(for generators) or 'dynamic', but got {value!r}."
        )
    if not _is_int(value):
        raise _type_error(name, "an int or 'streaming'/'dynamic'", value)
    if value < 0:
        raise ValueError(f"The option '{name}' must be >= 0, but got {value!r}.")


def _check_resources(name: str, value: Any, kind: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _type_error(name, "a dict of resource name to amount", value)
    if "CPU" in value or "GPU" in value:
        raise ValueError(
            "Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' in "
            "'resources' keyword"
        )
    for resource, amount in value.items():
        if not isinstance(resource, str) or not resource:
            raise TypeError(
                f"The resource names in option '{name}' must be non-empty strings, but got "
                f"{_describe(resource)}."
            )
        _check_amount(f"resource '{resource}' in option '{name}'", amount)


def _check_name(name: str, value: Any, kind: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _type_error(name, "a str", value)
    if kind == ACTOR and value == "":
        raise ValueError("Actor name cannot be an empty string.")


def _check_namespace(name: str, value: Any, kind: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _type_error(name, "a str", value)
    if value == "":
        raise ValueError('"" is not a valid namespace. Pass None to not specify a namespace.')


_SCHEDULING_STRATEGY_NAMES = frozenset(("DEFAULT", "SPREAD"))
# Values that are certainly not a scheduling strategy object (a plain number, container
# or byte string is a mistake, not a strategy); any other object is accepted, so the
# strategy classes (placement group, node affinity, node label) need not be imported here.
_NOT_A_STRATEGY = (bool, int, float, complex, bytes, bytearray, list, tuple, dict, set, frozenset)


def _check_scheduling_strategy(name: str, value: Any, kind: str) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if value not in _SCHEDULING_STRATEGY_NAMES:
            raise ValueError(
                f"The option '{name}' only accepts None, 'DEFAULT', 'SPREAD' or a scheduling "
                f"strategy object, but got {value!r}."
            )
        return
    if isinstance(value, _NOT_A_STRATEGY):
        raise _type_error(name, "None, 'DEFAULT', 'SPREAD' or a scheduling strategy object", value)


def _check_placement_group(name: str, value: Any, kind: str) -> None:
    if value is None or value == "default":
        return
    if isinstance(value, str) or isinstance(value, _NOT_A_STRATEGY):
        raise _type_error(name, "None, 'default' or a PlacementGroup", value)


def _check_retry_exceptions(name: str, value: Any, kind: str) -> None:
    if isinstance(value, bool):
        return
    if not isinstance(value, (list, tuple)):
        raise _type_error(name, "a bool or a list of exception classes", value)
    for item in value:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            raise ValueError(
                "retry_exceptions must be either a boolean or a list of exceptions, but the "
                f"list contains {_describe(item)}."
            )


def _check_lifetime(name: str, value: Any, kind: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _type_error(name, "None or a str", value)
    if value not in ("detached", "non_detached"):
        raise ValueError(
            "actor `lifetime` argument must be one of 'detached', 'non_detached' and 'None', "
            f"but got {value!r}."
        )


def _check_concurrency_groups(name: str, value: Any, kind: str) -> None:
    if value is None or isinstance(value, list):
        return
    if not isinstance(value, dict):
        raise _type_error(name, "a dict of group name to max concurrency", value)
    for group, limit in value.items():
        if not isinstance(group, str):
            raise TypeError(
                f"The group names in option '{name}' must be strings, but got {_describe(group)}."
            )
        if not _is_int(limit):
            raise TypeError(
                f"The max concurrency of group '{group}' in option '{name}' must be an int, "
                f"but got {_describe(limit)}."
            )
        if limit < 1:
            raise ValueError(
                f"The max concurrency of group '{group}' in option '{name}' must be >= 1, "
                f"but got {limit!r}."
            )


def _check_max_pending_calls(name: str, value: Any, kind: str) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise _type_error(name, "an int", value)
    if value != -1 and value < 1:
        raise ValueError(
            f"The option '{name}' only accepts -1 (no limit) or a positive integer, but got "
            f"{value!r}."
        )


def _check_label_selector(name: str, value: Any, kind: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _type_error(name, "a dict of label name to value", value)
    for label, selector in value.items():
        if not isinstance(label, str) or not isinstance(selector, str):
            raise TypeError(
                f"The option '{name}' maps label names to strings, but got {label!r}: "
                f"{_describe(selector)}."
            )
    try:
        _groups.parse_label_selector(value)
    except ValueError as exc:
        raise ValueError(f"The option '{name}' is not a valid label selector: {exc}") from None


def check_labels(labels):
    """Check the ``labels`` of ``init``: None, or a dict of label name to value (both str).

    Returns:
        A copy of the dict, or None.

    Raises:
        TypeError: not a dict, or a name or value that is not a str.
    """
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise TypeError(f"labels must be a dict of label name to value, got "
                        f"{type(labels).__name__}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"labels map label names (str) to values (str), got {key!r}: "
                            f"{_describe(value)}")
    return dict(labels)


def _check_backpressure(name: str, value: Any, kind: str) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise _type_error(name, "an int", value)
    if value == 0:
        raise ValueError(f"{name}=0 is not allowed. Use a value > 0, or -1 to disable it.")


_STR = _instance_of((str,), "a str")
_DICT = _instance_of((dict,), "a dict")

# runtime_env fields purerun acts on; the others (pip, conda, working_dir, py_modules, ...)
# set up environments on remote machines, which on one host are already there.
SUPPORTED_RUNTIME_ENV = frozenset({"env_vars", "worker_process_setup_hook"})
_warned_runtime_env = set()


def check_runtime_env(value):
    """Check a runtime_env: a dict whose ``env_vars`` maps str to str.

    Fields purerun does not set up are accepted with a one-time warning, so that programs
    written for Ray still run where their dependencies are already installed.

    Raises:
        TypeError: not a dict, env_vars not a dict of strings, or another field of the
            wrong type (see ``purerun.runtime_env.RuntimeEnv``).
        ValueError: a field's value is invalid (e.g. both pip and conda).
        RuntimeEnvSetupError: the worker_process_setup_hook cannot be pickled.
    """
    if value is None:
        return
    if not isinstance(value, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(value).__name__}")
    env_vars = value.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
            raise TypeError("runtime_env['env_vars'] must be a dict of str to str, got "
                            f"{env_vars!r}")
    from purerun.runtime_env import validate_runtime_env  # imports purerun.core only
    validate_runtime_env(value)  # each field's type, as RuntimeEnv(...) checks it
    ignored = sorted(set(value) - SUPPORTED_RUNTIME_ENV - _warned_runtime_env)
    if ignored:
        import logging
        _warned_runtime_env.update(ignored)
        logging.getLogger("purerun").warning(
            "runtime_env field(s) %s are not set up by purerun (only env_vars and "
            "worker_process_setup_hook are): what they "
            "provide must already be installed on this machine.", ", ".join(ignored))


def env_vars_of(runtime_env):
    """The env_vars of a runtime_env (None when there are none), with its setup hook's."""
    if not runtime_env:
        return None
    if runtime_env.get("worker_process_setup_hook") is not None:
        from purerun.runtime_env import setup_env_vars  # the hook travels as an env var
        return {**(runtime_env.get("env_vars") or {}), **setup_env_vars(runtime_env)}
    return runtime_env.get("env_vars") or None


# --------------------------------------------------------------------------------------
# The table. Options accepted "for compatibility" are checked but purerun's scheduler may
# not act on them (placement groups, labels, task events, ...).

OPTIONS: Tuple[Option, ...] = (
    # -- tasks and actors: resources ---------------------------------------------------
    # Actors default to None: 1 CPU to be placed, 0 held while running (see
    # running_actor_request).
    Option("num_cpus", _BOTH, 1, _resource_amount, actor_default=None, none_means_default=True),
    Option("num_gpus", _BOTH, 0, _resource_amount, none_means_default=True),
    Option("memory", _BOTH, None, _resource_amount, none_means_default=True),
    Option("resources", _BOTH, None, _check_resources),
    Option("accelerator_type", _BOTH, None, _STR),
    Option(
        "object_store_memory",
        _ACTOR_ONLY,
        None,
        _counting(0, "None, 0 or a positive integer"),
        none_means_default=True,
        rejected_for="Setting 'object_store_memory' is not implemented for tasks",
    ),
    # -- tasks and actors: identity, environment, placement -----------------------------
    # For an actor method (in .options()), the name of that call.
    Option("name", _ALL, None, _check_name),
    Option("runtime_env", _BOTH, None, lambda name, value, kind: check_runtime_env(value)),
    Option("scheduling_strategy", _BOTH, None, _check_scheduling_strategy),
    # Deprecated in Ray in favour of scheduling_strategy. "default" (not None) is the
    # default because None explicitly means "no placement group".
    Option("placement_group", _BOTH, "default", _check_placement_group),
    Option(
        "placement_group_bundle_index",
        _BOTH,
        -1,
        _counting(-1, "-1 or a bundle index >= 0"),
        none_means_default=True,
    ),
    Option("placement_group_capture_child_tasks", _BOTH, None, _instance_of((bool,), "a bool")),
    Option("_metadata", _BOTH, None, _DICT),
    Option("label_selector", _BOTH, None, _check_label_selector),
    Option("fallback_strategy", _BOTH, None, _instance_of((list,), "a list")),
    Option("enable_task_events", _ALL, True, _check_bool),
    # -- tasks and actor methods ---------------------------------------------------------
    Option("num_returns", _TASK_AND_METHOD, 1, _check_num_returns, none_means_default=True),
    Option("retry_exceptions", _TASK_AND_METHOD, False, _check_retry_exceptions),
    Option("_generator_backpressure_num_objects", _TASK_AND_METHOD, None, _check_backpressure),
    # -- tasks only ----------------------------------------------------------------------
    Option(
        "max_calls",
        _TASK_ONLY,
        0,
        _counting(0, "None, 0 or a positive integer"),
        none_means_default=True,
        allowed_in_options_call=False,
    ),
    Option(
        "max_retries",
        _TASK_ONLY,
        DEFAULT_TASK_MAX_RETRIES,
        _counting(-1, "None, 0, -1 or a positive integer, where -1 represents infinity"),
        none_means_default=True,
    ),
    # -- actors only ---------------------------------------------------------------------
    Option(
        "max_restarts",
        _ACTOR_ONLY,
        0,
        _counting(-1, "None, 0, -1 or a positive integer, where -1 represents infinity"),
        none_means_default=True,
    ),
    # For a method: None is the actor's own max_task_retries.
    Option(
        "max_task_retries",
        _ACTOR_AND_METHOD,
        0,
        _counting(-1, "None, 0, -1 or a positive integer, where -1 represents infinity"),
        method_default=None,
        none_means_default=True,
    ),
    # None: 1 for a threaded actor, 1000 for an asyncio actor (decided when the class is
    # known to have async methods).
    Option("max_concurrency", _ACTOR_ONLY, None, _counting(1, "None or an integer >= 1")),
    Option("max_pending_calls", _ACTOR_ONLY, -1, _check_max_pending_calls, none_means_default=True),
    Option(
        "concurrency_groups",
        _ACTOR_ONLY,
        None,
        _check_concurrency_groups,
        allowed_in_options_call=False,
    ),
    Option("lifetime", _ACTOR_ONLY, None, _check_lifetime),
    Option("namespace", _ACTOR_ONLY, None, _check_namespace),
    Option("get_if_exists", _ACTOR_ONLY, False, _check_bool),
    Option("allow_out_of_order_execution", _ACTOR_ONLY, None, _instance_of((bool,), "a bool")),
    # -- actor methods only --------------------------------------------------------------
    # None: the group the method was declared in, else the actor's default group.
    Option("concurrency_group", _METHOD_ONLY, None, _STR),
    # How tensors in the results travel between GPUs (Ray's "nccl", "gloo", ...): purerun
    # has one host and no GPU transport, so the results go through the object store.
    Option("tensor_transport", _METHOD_ONLY, None, _STR),
)

# Old names still accepted, per kind: old name -> Ray 2.x name.
ALIASES: Mapping[str, Mapping[str, str]] = {
    TASK: {"num_return_vals": "num_returns"},
    ACTOR: {"max_reconstructions": "max_restarts"},
    METHOD: {},
}

# Derived lookup tables (one dict lookup per given option on the hot path).
_BY_KIND: Dict[str, Dict[str, Option]] = {
    kind: {opt.name: opt for opt in OPTIONS if kind in opt.applies_to} for kind in _KINDS
}
_ALL_BY_NAME: Dict[str, Option] = {opt.name: opt for opt in OPTIONS}
_KIND_WORDS = {TASK: "remote functions", ACTOR: "actors", METHOD: "actor methods"}
_VALID_TEXT = {kind: str(list(_BY_KIND[kind])) for kind in _KINDS}

# --------------------------------------------------------------------------------------


def _table(kind: str) -> Dict[str, Option]:
    try:
        return _BY_KIND[kind]
    except (KeyError, TypeError):
        raise ValueError(f"kind must be 'task', 'actor' or 'method', not {kind!r}.") from None


def _check_combination(options: Mapping[str, Any]) -> None:
    """Rules that involve several options; run on the combined options."""
    if options.get("get_if_exists") and not options.get("name"):
        raise ValueError("The actor name must be specified to use `get_if_exists`.")
    if options.get("placement_group", "default") not in ("default", None) and (
        options.get("scheduling_strategy") is not None
    ):
        raise ValueError(
            "Placement groups should be specified via the scheduling_strategy option. "
            "The placement_group option is deprecated."
        )
    # Ray 2.x once rejected max_task_retries != 0 together with max_restarts == 0. Current
    # Ray accepts it (actor methods can retry on application exceptions via
    # retry_exceptions without the actor ever restarting), and so does purerun.


def validate_options(
    kind: str, options: Mapping[str, Any], *, in_options_call: bool = False
) -> Dict[str, Any]:
    """Check remote options and return them with old names renamed.

    Args:
        kind: "task" for ``@remote`` on a function, "actor" for ``@remote`` on a class,
            "method" for ``@method`` and an actor method's ``.options()``.
        options: The keyword arguments given to ``@remote(...)``, ``@method(...)`` or
            ``.options(...)``.
        in_options_call: True when ``options`` are the arguments of ``.options()``. Then
            options that can only be set in the decorator (``max_calls``,
            ``concurrency_groups``) are refused, and rules that involve several options
            (``get_if_exists`` needs ``name``, ...) are left to :func:`merge`, which sees
            them together with the decorator's options.

    Returns:
        A new dict of the given options, with ``num_return_vals`` renamed to
        ``num_returns`` and ``max_reconstructions`` to ``max_restarts``, and ``None``
        replaced by the default for options where ``None`` only means "not set".

    Raises:
        ValueError: An unknown option ("Invalid option keyword foo for remote functions.
            Valid ones are [...]"), an option not allowed in ``.options()``, an option
            given under both its old and new name, a value of the right type that is not
            allowed, or an invalid combination of options.
        TypeError: A value of the wrong type (booleans are not numbers here).
    """
    table = _table(kind)
    aliases = ALIASES[kind]
    result: Dict[str, Any] = {}
    for key, value in options.items():
        opt = table.get(key)
        if opt is None:
            new_name = aliases.get(key)
            if new_name is None:
                other = _ALL_BY_NAME.get(key)
                if other is not None and other.rejected_for:
                    raise ValueError(other.rejected_for)
                raise ValueError(
                    f"Invalid option keyword {key} for {_KIND_WORDS[kind]}. "
                    f"Valid ones are {_VALID_TEXT[kind]}."
                )
            if new_name in options:
                raise ValueError(
                    f"The option '{key}' is the old name of '{new_name}'; give only '{new_name}'."
                )
            key, opt = new_name, table[new_name]
        if in_options_call and not opt.allowed_in_options_call:
            raise ValueError(f"Setting '{key}' is not supported in '.options()'.")
        opt.check(key, value, kind)
        if value is None and opt.none_means_default:
            value = opt.default_for(kind)
        result[key] = value
    if not in_options_call:
        _check_combination(result)
    return result


def defaults(kind: str) -> Dict[str, Any]:
    """Return the default value of every option that applies to ``kind``.

    Args:
        kind: "task", "actor" or "method".

    Returns:
        A new dict of option name to default. ``num_cpus`` is 1 for tasks and None for
        actors (1 CPU to place the actor, 0 while it runs); ``max_concurrency`` is None
        (1 for threaded actors, 1000 for asyncio actors); a method's ``max_task_retries``
        is None (the actor's).

    Raises:
        ValueError: ``kind`` is not one of those.
    """
    return {name: opt.default_for(kind) for name, opt in _table(kind).items()}


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """Combine a remote function's or actor class's options with ``.options()`` overrides.

    Both arguments should already be validated (``overrides`` with
    ``in_options_call=True``). ``_metadata`` is merged per namespace: an override of
    ``{"ns": {"a": 1}}`` updates only key ``a`` of namespace ``ns``.

    Args:
        base: The current options (e.g. from the decorator). Not modified.
        overrides: The validated arguments of ``.options()``. Not modified.

    Returns:
        A new dict: ``base`` updated with ``overrides``.

    Raises:
        ValueError: The combined options break a rule involving several options (for
            example ``get_if_exists=True`` without a ``name``).
    """
    merged = {**base, **overrides}
    base_metadata = base.get("_metadata")
    new_metadata = overrides.get("_metadata")
    if base_metadata is not None and new_metadata is not None:
        metadata = dict(base_metadata)
        for namespace, config in new_metadata.items():
            metadata[namespace] = {**metadata.get(namespace, {}), **config}
        merged["_metadata"] = metadata
    _check_combination(merged)
    return merged


def _demand(options: Mapping[str, Any], cpus: Any) -> Dict[str, float]:
    """CPU, GPU, memory, custom and accelerator-type amounts, without zero amounts."""
    demand = {"CPU": cpus, "GPU": options.get("num_gpus"), "memory": options.get("memory")}
    custom = options.get("resources")
    if custom:
        demand.update(custom)
    accelerator_type = options.get("accelerator_type")
    if accelerator_type:
        demand[f"accelerator_type:{accelerator_type}"] = ACCELERATOR_TYPE_RESOURCE_AMOUNT
    return {name: float(amount) for name, amount in demand.items() if amount}


def resource_request(options: Mapping[str, Any], kind: str) -> Dict[str, float]:
    """Return the resources a node must have free to run a task or to place an actor.

    Args:
        options: Validated options (missing ones take their defaults).
        kind: "task" or "actor".

    Returns:
        ``{"CPU": num_cpus, "GPU": num_gpus, "memory": memory, **resources}`` as floats,
        without zero amounts. ``num_cpus`` defaults to 1 for both kinds: an actor with
        the default needs 1 CPU free to be placed (see :func:`running_actor_request` for
        what it holds afterwards). An ``accelerator_type`` adds a demand of
        0.001 ``"accelerator_type:<type>"``, which only nodes with that accelerator offer.

    Raises:
        ValueError: ``kind`` is neither "task" nor "actor".
    """
    _table(kind)
    cpus = options.get("num_cpus")
    return _demand(options, 1 if cpus is None else cpus)


def running_actor_request(options: Mapping[str, Any]) -> Dict[str, float]:
    """Return the resources an actor holds while it is alive, as Ray does.

    An actor that asks for nothing (``num_cpus``, ``num_gpus``, ``resources`` and
    ``accelerator_type`` unset) needs 1 CPU to be placed but holds 0 CPU while it runs,
    so idle actors do not starve tasks. An actor that asks for any resource holds what
    it asked for, with ``num_cpus`` defaulting to 1. ``memory`` does not count as asking.
    An explicit ``num_gpus=0`` counts as not asking (a zero amount is no demand).

    Args:
        options: Validated actor options (missing ones take their defaults).

    Returns:
        The resources held for the actor's lifetime, as floats, without zero amounts.
    """
    cpus = options.get("num_cpus")
    if cpus is None:
        asks = (
            bool(options.get("num_gpus"))
            or any((options.get("resources") or {}).values())
            or bool(options.get("accelerator_type"))
        )
        cpus = 1 if asks else 0
    return _demand(options, cpus)


# --------------------------------------------------------------------------------------
# Options -> spec fields. Each default is applied here, from the table; callers pass the
# results to the runtime as they are.

_DEFAULTS: Dict[str, Dict[str, Any]] = {kind: defaults(kind) for kind in _KINDS}


def _with_defaults(kind: str, options: Mapping[str, Any]) -> Dict[str, Any]:
    return {**_DEFAULTS[kind], **options}


def _returns_fields(full: Mapping[str, Any], is_generator: bool) -> Dict[str, Any]:
    """``num_returns``, ``generator`` and ``backpressure`` of a call.

    A generator function whose caller set no num_returns streams, as in Ray 2.x; with an
    integer num_returns it is a plain call whose generator must yield exactly that many
    values. "streaming" and "dynamic" calls have one return of their own (the end of the
    stream, or the DynamicObjectRefGenerator); their items are objects of their own.
    """
    num_returns = full["num_returns"]
    if num_returns is None:
        num_returns = "streaming" if is_generator else 1
    backpressure = full.get("_generator_backpressure_num_objects")
    if num_returns == "streaming":
        return {"num_returns": 1, "generator": "streaming",
                "backpressure": -1 if backpressure is None else backpressure}
    if num_returns == "dynamic":
        return {"num_returns": 1, "generator": "dynamic", "backpressure": -1}
    return {"num_returns": int(num_returns), "generator": None, "backpressure": -1}


def _retry_policy(retry_exceptions: Any):
    """TaskSpec.retry_exceptions: True, False, or the pickled tuple of exception classes."""
    if isinstance(retry_exceptions, (list, tuple)):
        return serialization.dumps(tuple(retry_exceptions))
    return retry_exceptions


def task_fields(options: Mapping[str, Any], is_generator: bool = False) -> Dict[str, Any]:
    """Return the TaskSpec fields that a remote function's options fix for all its calls.

    Args:
        options: Validated task options (missing ones take their defaults).
        is_generator: the function is a generator function: without a ``num_returns``
            option its calls stream.

    Returns:
        A new dict of ``TaskSpec`` keyword arguments: ``num_returns``, ``generator`` and
        ``backpressure`` (see ``TaskSpec``), ``resources``, ``max_retries``,
        ``retry_exceptions`` (True, False or a pickled tuple of exception classes),
        ``max_calls`` and ``env_vars`` (None when there are none).
    """
    full = {**_DEFAULTS[TASK], "num_returns": None, **options}
    return {
        **_returns_fields(full, is_generator),
        "resources": resource_request(options, TASK),
        "max_retries": full["max_retries"],
        "retry_exceptions": _retry_policy(full["retry_exceptions"]),
        "max_calls": full["max_calls"],
        "env_vars": env_vars_of(full["runtime_env"]),
        "strategy": placement_strategy(full, resource_request(options, TASK), TASK),
    }


def strategy_field(value: Any):
    """The ``TaskSpec.strategy`` for a ``scheduling_strategy`` option value.

    Returns:
        None for None and "DEFAULT", "SPREAD", or ``(NODE_AFFINITY, node id bytes, soft)``
        for a ``NodeAffinitySchedulingStrategy``. Other strategy objects (placement groups,
        labels) are placed as the default.
    """
    if value is None or value == "DEFAULT":
        return None
    if value == "SPREAD":
        return "SPREAD"
    if isinstance(value, NodeAffinitySchedulingStrategy):
        return (NODE_AFFINITY, bytes.fromhex(value.node_id), bool(value.soft))
    return None


def placement_strategy(full: Mapping[str, Any], demand: Mapping[str, float], kind: str):
    """The ``TaskSpec.strategy`` for options with their defaults: ``scheduling_strategy``,
    the deprecated ``placement_group`` options, and ``label_selector``.

    Returns:
        What ``strategy_field`` returns, or ``(PLACEMENT_GROUP, group id, bundle index,
        capture)`` for a placement group, or ``(LABELS, hard, soft)`` for labels (see
        core/placement_groups.py).

    Raises:
        ValueError: the demand fits no bundle of the group (or not the one named), a
            bundle index the group does not have, or a label selector together with a
            strategy other than the default.
    """
    strategy = full["scheduling_strategy"]
    group = full.get("placement_group", "default")
    if group not in ("default", None) and strategy is None:
        import warnings
        warnings.warn("The placement_group option is deprecated; use scheduling_strategy="
                      "PlacementGroupSchedulingStrategy(...) instead.", DeprecationWarning,
                      stacklevel=4)
        strategy = PlacementGroupSchedulingStrategy(
            group, full.get("placement_group_bundle_index", -1),
            full.get("placement_group_capture_child_tasks"))
    selector = full.get("label_selector")
    if selector:
        if strategy not in (None, "DEFAULT"):
            raise ValueError("label_selector cannot be combined with a scheduling_strategy "
                             f"other than the default, got {strategy!r}")
        return (_groups.LABELS, _groups.parse_label_selector(selector), ())
    if isinstance(strategy, NodeLabelSchedulingStrategy):
        return (_groups.LABELS, label_constraints(strategy.hard),
                label_constraints(strategy.soft))
    if isinstance(strategy, PlacementGroupSchedulingStrategy) and \
            strategy.placement_group is None:
        return None
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        group = strategy.placement_group
        index = strategy.placement_group_bundle_index
        bundles = group.bundle_specs
        what = "the task" if kind == TASK else "the actor"
        if index >= len(bundles):
            raise ValueError(f"placement group bundle index {index} is invalid. Valid "
                             f"placement group indexes: 0-{len(bundles) - 1}")
        candidates = bundles if index == -1 else [bundles[index]]
        if not any(all(bundle.get(name, 0) + 1e-9 >= amount
                       for name, amount in demand.items()) for bundle in candidates):
            where = ("any bundles for the placement group" if index == -1
                     else f"the bundle {index} of the placement group")
            raise ValueError(f"Cannot schedule {what} with the placement group because the "
                             f"resource request {dict(demand)} cannot fit into {where}, "
                             f"{candidates}.")
        return (_groups.PLACEMENT_GROUP, bytes(group.id), index,
                bool(strategy.placement_group_capture_child_tasks))
    return strategy_field(strategy)


@dataclass(frozen=True)
class ActorFields:
    """What an actor class's options fix for an actor made from it.

    Attributes:
        spec: The ``ActorSpec`` its creation carries.
        resources: What a node must have free to place it (see ``resource_request``).
        env_vars: Its own runtime_env env_vars (not those it inherits), or None.
        get_if_exists: Return the live actor of the same name instead of failing.
        max_pending_calls: Calls one handle may have in flight (-1: no limit).
    """

    spec: ActorSpec
    resources: Dict[str, float]
    env_vars: Optional[Dict[str, str]]
    get_if_exists: bool
    max_pending_calls: int


def actor_fields(options: Mapping[str, Any], meta: Any) -> ActorFields:
    """Return what the runtime needs to create an actor with these options.

    Args:
        options: Validated actor options (missing ones take their defaults).
        meta: The class's ``actor.ActorClassMeta``: its name, and whether it is an asyncio
            actor (which changes the default ``max_concurrency``).

    Returns:
        An ``ActorFields``, with a new ``ActorSpec``.
    """
    full = _with_defaults(ACTOR, options)
    max_concurrency = full["max_concurrency"]
    if max_concurrency is None:
        max_concurrency = DEFAULT_ASYNC_MAX_CONCURRENCY if meta.is_async \
            else DEFAULT_MAX_CONCURRENCY
    groups = full["concurrency_groups"]
    spec = ActorSpec(
        class_name=meta.class_name, meta=meta, name=full["name"], namespace=full["namespace"],
        detached=full["lifetime"] == "detached", max_restarts=full["max_restarts"],
        max_task_retries=full["max_task_retries"], max_concurrency=max_concurrency,
        # A list names groups with the default limit (as Ray accepts); a dict sets limits.
        concurrency_groups=({group: max_concurrency for group in groups}
                            if isinstance(groups, list) else dict(groups or {})),
        is_async=meta.is_async, hold=running_actor_request(options),
        strategy=placement_strategy(full, resource_request(options, ACTOR), ACTOR))
    return ActorFields(spec=spec, resources=resource_request(options, ACTOR),
                       env_vars=env_vars_of(full["runtime_env"]),
                       get_if_exists=bool(full["get_if_exists"]),
                       max_pending_calls=full["max_pending_calls"])


def method_fields(options: Mapping[str, Any], is_generator: bool = False) -> Dict[str, Any]:
    """Return the TaskSpec fields that an actor method's options fix for its calls.

    Args:
        options: Validated method options (missing ones take their defaults).
        is_generator: the method is a (sync or async) generator function: without a
            ``num_returns`` option its calls stream.

    Returns:
        A new dict of ``TaskSpec`` keyword arguments: ``num_returns``, ``generator``,
        ``backpressure``, ``max_retries`` (None: the actor's ``max_task_retries``),
        ``retry_exceptions`` and ``concurrency_group`` (None: the method's declared group).
    """
    full = {**_DEFAULTS[METHOD], "num_returns": None, **options}
    return {
        **_returns_fields(full, is_generator),
        "max_retries": full["max_task_retries"],
        "retry_exceptions": _retry_policy(full["retry_exceptions"]),
        "concurrency_group": full["concurrency_group"],
    }
