"""Unit tests of purerun.options: the option table, validation, defaults, merging, the
resource requests derived from options, and the spec fields made of them."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from purerun import options as opts
from purerun.actor import ActorClassMeta
from purerun.core import serialization
from purerun.core.task_spec import NODE_AFFINITY
from purerun.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from purerun.options import (
    actor_fields,
    defaults,
    merge,
    method_fields,
    resource_request,
    running_actor_request,
    task_fields,
    validate_options,
)


class StrategyLike:
    """Stands in for a scheduling strategy or placement group object."""


TASK_ONLY = {"num_returns", "max_calls", "max_retries", "retry_exceptions",
             "_generator_backpressure_num_objects"}
ACTOR_ONLY = {"object_store_memory", "max_restarts", "max_task_retries", "max_concurrency",
              "max_pending_calls", "concurrency_groups", "lifetime", "namespace",
              "get_if_exists", "allow_out_of_order_execution"}
BOTH = {"num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "name",
        "runtime_env", "scheduling_strategy", "placement_group", "placement_group_bundle_index",
        "placement_group_capture_child_tasks", "_metadata", "label_selector",
        "fallback_strategy", "enable_task_events"}
# What actor methods take (Ray's @ray.method and ActorMethod.options), and which of those
# neither tasks nor actors take.
METHOD = {"num_returns", "max_task_retries", "retry_exceptions", "concurrency_group", "name",
          "enable_task_events", "tensor_transport", "_generator_backpressure_num_objects"}
METHOD_ONLY = {"concurrency_group", "tensor_transport"}


# --- the table ------------------------------------------------------------------------------


def test_table_declares_each_option_once():
    names = [opt.name for opt in opts.OPTIONS]
    assert len(names) == len(set(names))
    assert set(names) == TASK_ONLY | ACTOR_ONLY | BOTH | METHOD_ONLY


@pytest.mark.parametrize("opt", opts.OPTIONS, ids=lambda o: o.name)
def test_applies_to_matches_ray(opt):
    expected = set()
    if opt.name in TASK_ONLY | BOTH:
        expected.add("task")
    if opt.name in ACTOR_ONLY | BOTH:
        expected.add("actor")
    if opt.name in METHOD:
        expected.add("method")
    assert opt.applies_to == expected


@pytest.mark.parametrize("kind", ["task", "actor", "method"])
def test_defaults_pass_their_own_checks(kind):
    decorator_only = {"max_calls", "concurrency_groups"}
    checked = validate_options(kind, defaults(kind))
    assert checked == defaults(kind)
    in_options = {k: v for k, v in defaults(kind).items() if k not in decorator_only}
    assert validate_options(kind, in_options, in_options_call=True) == in_options


# --- defaults -------------------------------------------------------------------------------


def test_task_defaults():
    d = defaults("task")
    assert set(d) == TASK_ONLY | BOTH
    assert d["num_returns"] == 1
    assert d["num_cpus"] == 1
    assert d["num_gpus"] == 0
    assert d["max_calls"] == 0
    assert d["max_retries"] == 3
    assert d["retry_exceptions"] is False
    assert d["scheduling_strategy"] is None
    assert d["enable_task_events"] is True


def test_actor_defaults():
    d = defaults("actor")
    assert set(d) == ACTOR_ONLY | BOTH
    assert d["num_cpus"] is None  # 1 CPU to place, 0 while running
    assert d["num_gpus"] == 0
    assert d["max_restarts"] == 0
    assert d["max_task_retries"] == 0
    assert d["max_concurrency"] is None  # 1 threaded, 1000 asyncio
    assert d["max_pending_calls"] == -1
    assert d["lifetime"] is None
    assert d["get_if_exists"] is False


def test_method_defaults():
    d = defaults("method")
    assert set(d) == METHOD
    assert d["num_returns"] == 1
    assert d["max_task_retries"] is None  # the actor's own
    assert d["retry_exceptions"] is False
    assert d["concurrency_group"] is None


def test_defaults_returns_a_fresh_dict():
    first = defaults("task")
    first["num_cpus"] = 99
    assert defaults("task")["num_cpus"] == 1


@pytest.mark.parametrize("function", [defaults, lambda kind: validate_options(kind, {})])
def test_unknown_kind_is_rejected(function):
    with pytest.raises(ValueError, match="'task', 'actor' or 'method'"):
        function("job")


# --- unknown options, aliases ------------------------------------------------------------


def test_unknown_task_option_names_the_key_and_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        validate_options("task", {"num_cpu": 1})
    message = str(info.value)
    assert message.startswith(
        "Invalid option keyword num_cpu for remote functions. Valid ones are ["
    )
    assert "'num_cpus'" in message and "'max_retries'" in message
    assert "'max_restarts'" not in message  # actor-only options are not offered


def test_unknown_actor_option_names_the_key():
    with pytest.raises(ValueError, match="^Invalid option keyword max_retries for actors. Valid"):
        validate_options("actor", {"max_retries": 2})


@pytest.mark.parametrize("name", sorted(ACTOR_ONLY - {"object_store_memory"}))
def test_actor_only_options_are_invalid_for_tasks(name):
    with pytest.raises(ValueError, match=f"Invalid option keyword {name} for remote functions"):
        validate_options("task", {name: None})


@pytest.mark.parametrize("name", sorted(TASK_ONLY))
def test_task_only_options_are_invalid_for_actors(name):
    with pytest.raises(ValueError, match=f"Invalid option keyword {name} for actors"):
        validate_options("actor", {name: None})


@pytest.mark.parametrize("name", ["max_restarts", "num_cpus", "max_retries", "lifetime"])
def test_task_and_actor_options_are_invalid_for_methods(name):
    with pytest.raises(ValueError, match=f"Invalid option keyword {name} for actor methods"):
        validate_options("method", {name: None})


def test_object_store_memory_for_a_task_says_why():
    with pytest.raises(ValueError, match="'object_store_memory' is not implemented for tasks"):
        validate_options("task", {"object_store_memory": 100})


def test_validate_returns_a_new_dict_and_leaves_the_input_alone():
    given_options = {"num_return_vals": 2, "num_cpus": None}
    checked = validate_options("task", given_options)
    assert checked == {"num_returns": 2, "num_cpus": 1}
    assert given_options == {"num_return_vals": 2, "num_cpus": None}
    plain = {"num_cpus": 2}
    assert validate_options("task", plain) is not plain


def test_old_names_are_renamed():
    assert validate_options("task", {"num_return_vals": 3}) == {"num_returns": 3}
    assert validate_options("actor", {"max_reconstructions": -1}) == {"max_restarts": -1}
    in_options = validate_options("task", {"num_return_vals": 2}, in_options_call=True)
    assert in_options == {"num_returns": 2}


def test_old_names_are_checked_like_the_new_ones():
    with pytest.raises(ValueError, match="num_returns"):
        validate_options("task", {"num_return_vals": -1})
    with pytest.raises(TypeError, match="max_restarts"):
        validate_options("actor", {"max_reconstructions": "3"})


def test_old_names_only_apply_to_their_kind():
    with pytest.raises(ValueError, match="Invalid option keyword max_reconstructions for remote"):
        validate_options("task", {"max_reconstructions": 1})
    with pytest.raises(ValueError, match="Invalid option keyword num_return_vals for actors"):
        validate_options("actor", {"num_return_vals": 1})


def test_old_and_new_name_together_are_rejected():
    with pytest.raises(ValueError, match="old name of 'num_returns'"):
        validate_options("task", {"num_return_vals": 1, "num_returns": 2})


# --- each option's check ----------------------------------------------------------------------

# (kind, option, value) that must be accepted.
VALID = [
    ("task", "num_returns", 0), ("task", "num_returns", 5), ("task", "num_returns", "dynamic"),
    ("task", "num_returns", "streaming"), ("task", "num_returns", np.int64(2)),
    ("task", "num_cpus", 0), ("task", "num_cpus", 0.5), ("task", "num_cpus", 4),
    ("task", "num_cpus", 0.0001), ("task", "num_cpus", np.float64(1.5)),
    ("actor", "num_cpus", 2), ("actor", "num_cpus", 0),
    ("task", "num_gpus", 0.25), ("actor", "num_gpus", 1),
    ("task", "memory", 2**30), ("actor", "memory", 1.5e9),
    ("task", "resources", {"custom": 1, "tpu": 0.5}), ("actor", "resources", {}),
    ("task", "resources", None),
    ("task", "accelerator_type", "A100"), ("actor", "accelerator_type", "V100"),
    ("actor", "object_store_memory", 10**8), ("actor", "object_store_memory", 0),
    ("task", "name", "my_task"), ("actor", "name", "counter"), ("task", "name", ""),
    ("task", "runtime_env", {"env_vars": {"A": "1"}}), ("actor", "runtime_env", None),
    ("task", "scheduling_strategy", None), ("task", "scheduling_strategy", "DEFAULT"),
    ("actor", "scheduling_strategy", "SPREAD"), ("task", "scheduling_strategy", StrategyLike()),
    ("task", "placement_group", None), ("task", "placement_group", "default"),
    ("actor", "placement_group", StrategyLike()),
    ("task", "placement_group_bundle_index", -1), ("actor", "placement_group_bundle_index", 2),
    ("task", "placement_group_bundle_index", None),
    ("task", "placement_group_capture_child_tasks", True),
    ("actor", "placement_group_capture_child_tasks", None),
    ("task", "_metadata", {"ns": {"k": 1}}), ("actor", "_metadata", None),
    ("task", "label_selector", {"zone": "us-east"}), ("actor", "label_selector", None),
    ("task", "fallback_strategy", []), ("task", "enable_task_events", False),
    ("task", "max_calls", 0), ("task", "max_calls", 10),
    ("task", "max_retries", -1), ("task", "max_retries", 0), ("task", "max_retries", 5),
    ("task", "retry_exceptions", True), ("task", "retry_exceptions", False),
    ("task", "retry_exceptions", [ValueError, KeyError]), ("task", "retry_exceptions", (OSError,)),
    ("task", "retry_exceptions", []),
    ("task", "_generator_backpressure_num_objects", -1),
    ("task", "_generator_backpressure_num_objects", 10),
    ("actor", "max_restarts", -1), ("actor", "max_restarts", 0), ("actor", "max_restarts", 4),
    ("actor", "max_task_retries", -1), ("actor", "max_task_retries", 3),
    ("actor", "max_concurrency", 1), ("actor", "max_concurrency", 1000),
    ("actor", "max_concurrency", None),
    ("actor", "max_pending_calls", -1), ("actor", "max_pending_calls", 1),
    ("actor", "max_pending_calls", 100),
    ("actor", "concurrency_groups", {"io": 2, "compute": 4}), ("actor", "concurrency_groups", []),
    ("actor", "lifetime", None), ("actor", "lifetime", "detached"),
    ("actor", "lifetime", "non_detached"),
    ("actor", "namespace", "team-a"), ("actor", "namespace", None),
    ("actor", "get_if_exists", False),
    ("actor", "allow_out_of_order_execution", True),
    ("method", "num_returns", 2), ("method", "num_returns", None),
    ("method", "max_task_retries", 2), ("method", "max_task_retries", None),
    ("method", "retry_exceptions", [ValueError]), ("method", "name", "call"),
    ("method", "concurrency_group", "io"), ("method", "concurrency_group", None),
    ("method", "tensor_transport", "nccl"), ("method", "enable_task_events", False),
    ("method", "_generator_backpressure_num_objects", 4),
]

# (kind, option, value, expected exception): wrong types raise TypeError, wrong values
# of the right type raise ValueError.
INVALID = [
    ("task", "num_returns", -1, ValueError), ("task", "num_returns", "many", ValueError),
    ("task", "num_returns", 1.0, TypeError), ("task", "num_returns", True, TypeError),
    ("task", "num_cpus", -1, ValueError), ("task", "num_cpus", "1", TypeError),
    ("task", "num_cpus", True, TypeError), ("actor", "num_cpus", False, TypeError),
    ("task", "num_cpus", float("nan"), ValueError), ("task", "num_cpus", math.inf, ValueError),
    ("task", "num_cpus", 0.00001, ValueError), ("task", "num_cpus", np.bool_(True), TypeError),
    ("task", "num_gpus", -0.5, ValueError), ("actor", "num_gpus", [1], TypeError),
    ("task", "memory", -1, ValueError), ("actor", "memory", "1GB", TypeError),
    ("task", "resources", {"CPU": 1}, ValueError), ("actor", "resources", {"GPU": 1}, ValueError),
    ("task", "resources", {"custom": -1}, ValueError),
    ("task", "resources", {"custom": "1"}, TypeError),
    ("task", "resources", {"custom": True}, TypeError), ("task", "resources", {1: 1}, TypeError),
    ("task", "resources", {"": 1}, TypeError), ("task", "resources", [("custom", 1)], TypeError),
    ("task", "accelerator_type", 100, TypeError),
    ("actor", "object_store_memory", -1, ValueError),
    ("actor", "object_store_memory", 1.5, TypeError),
    ("task", "name", 5, TypeError), ("actor", "name", "", ValueError),
    ("task", "runtime_env", "env", TypeError),
    ("task", "scheduling_strategy", "FASTEST", ValueError),
    ("task", "scheduling_strategy", "spread", ValueError),
    ("actor", "scheduling_strategy", 1, TypeError), ("task", "scheduling_strategy", {}, TypeError),
    ("task", "placement_group", "mine", TypeError),
    ("task", "placement_group_bundle_index", -2, ValueError),
    ("task", "placement_group_capture_child_tasks", 1, TypeError),
    ("task", "_metadata", [], TypeError),
    ("task", "label_selector", {"zone": 1}, TypeError),
    ("task", "label_selector", "zone", TypeError),
    ("task", "fallback_strategy", {}, TypeError),
    ("task", "enable_task_events", None, TypeError), ("task", "enable_task_events", 1, TypeError),
    ("task", "max_calls", -1, ValueError), ("task", "max_calls", 1.0, TypeError),
    ("task", "max_retries", -2, ValueError), ("task", "max_retries", True, TypeError),
    ("task", "max_retries", "3", TypeError),
    ("task", "retry_exceptions", None, TypeError),
    ("task", "retry_exceptions", ValueError, TypeError),
    ("task", "retry_exceptions", [ValueError, "KeyError"], ValueError),
    ("task", "retry_exceptions", [KeyboardInterrupt], ValueError),
    ("task", "retry_exceptions", [ValueError("instance")], ValueError),
    ("task", "_generator_backpressure_num_objects", 0, ValueError),
    ("actor", "max_restarts", -2, ValueError), ("actor", "max_restarts", False, TypeError),
    ("actor", "max_task_retries", -5, ValueError), ("actor", "max_task_retries", 1.5, TypeError),
    ("actor", "max_concurrency", 0, ValueError), ("actor", "max_concurrency", -1, ValueError),
    ("actor", "max_concurrency", 2.0, TypeError),
    ("actor", "max_pending_calls", 0, ValueError), ("actor", "max_pending_calls", -2, ValueError),
    ("actor", "max_pending_calls", "10", TypeError),
    ("actor", "concurrency_groups", {"io": 0}, ValueError),
    ("actor", "concurrency_groups", {"io": "2"}, TypeError),
    ("actor", "concurrency_groups", {1: 2}, TypeError),
    ("actor", "concurrency_groups", "io", TypeError),
    ("actor", "lifetime", "forever", ValueError), ("actor", "lifetime", True, TypeError),
    ("actor", "namespace", "", ValueError), ("actor", "namespace", 1, TypeError),
    ("actor", "get_if_exists", None, TypeError), ("actor", "get_if_exists", 1, TypeError),
    ("actor", "allow_out_of_order_execution", "yes", TypeError),
    ("method", "num_returns", -1, ValueError), ("method", "max_task_retries", -2, ValueError),
    ("method", "retry_exceptions", "yes", TypeError),
    ("method", "concurrency_group", 1, TypeError), ("method", "tensor_transport", 2, TypeError),
]


def _case_id(case):
    return f"{case[0]}-{case[1]}-{case[2]!r}"


@pytest.mark.parametrize("case", VALID, ids=_case_id)
def test_valid_values_are_accepted(case):
    kind, name, value = case
    extra = {"name": "n"} if name == "get_if_exists" else {}
    checked = validate_options(kind, {name: value, **extra})
    if value is None and opts._BY_KIND[kind][name].none_means_default:
        assert checked[name] == defaults(kind)[name]
    else:
        assert checked[name] is value or checked[name] == value


@pytest.mark.parametrize("case", INVALID, ids=_case_id)
def test_invalid_values_name_the_option_and_the_value(case):
    kind, name, value, error = case
    with pytest.raises(error) as info:
        validate_options(kind, {name: value})
    assert type(info.value) is error
    message = str(info.value)
    if name == "resources" and isinstance(value, dict) and ("CPU" in value or "GPU" in value):
        # Ray's wording: it names the options to use instead.
        assert "'num_cpus' and 'num_gpus'" in message
    elif name == "resources" and isinstance(value, dict):
        # A bad entry is named by its resource name and the option.
        assert "option 'resources'" in message
        assert any(f"resource '{k}'" in message for k in value) or "names" in message
    elif name == "retry_exceptions" and error is ValueError:
        assert "retry_exceptions" in message
    else:
        assert f"'{name}'" in message or name in message, message
    if error is TypeError and not isinstance(value, (dict, list)):
        assert type(value).__name__ in message, message
    elif error is TypeError:
        assert "of type" in message, message


def test_every_option_has_valid_and_invalid_cases():
    assert {case[1] for case in VALID} == {opt.name for opt in opts.OPTIONS}
    checked_somehow = {case[1] for case in INVALID}
    assert checked_somehow == {opt.name for opt in opts.OPTIONS}


@given(st.floats(min_value=0.0001, max_value=1e6, allow_nan=False))
def test_any_reasonable_cpu_fraction_is_accepted(value):
    assert validate_options("task", {"num_cpus": value}) == {"num_cpus": value}


@given(st.integers(max_value=-2))
def test_counts_below_minus_one_are_rejected(value):
    with pytest.raises(ValueError, match="max_retries"):
        validate_options("task", {"max_retries": value})


@given(st.floats(min_value=1e-12, max_value=0.0000999))
def test_fractions_below_the_resource_precision_are_rejected(value):
    with pytest.raises(ValueError, match="precision"):
        validate_options("actor", {"resources": {"custom": value}})


# --- None means "the default" ----------------------------------------------------------------


def test_none_becomes_the_default_where_it_only_means_unset():
    checked = validate_options("task", {"num_cpus": None, "num_gpus": None, "max_retries": None,
                                        "num_returns": None, "memory": None})
    assert checked == {"num_cpus": 1, "num_gpus": 0, "max_retries": 3, "num_returns": 1,
                       "memory": None}
    checked = validate_options("actor", {"num_cpus": None, "max_restarts": None,
                                         "max_pending_calls": None, "max_concurrency": None})
    assert checked == {"num_cpus": None, "max_restarts": 0, "max_pending_calls": -1,
                       "max_concurrency": None}


def test_none_stays_none_where_it_means_something():
    assert validate_options("task", {"placement_group": None}) == {"placement_group": None}


# --- rules involving several options ---------------------------------------------------------


def test_decorator_only_options_are_refused_in_options_call():
    assert validate_options("task", {"max_calls": 1}) == {"max_calls": 1}
    not_supported = r"Setting 'max_calls' is not supported in '\.options\(\)'"
    with pytest.raises(ValueError, match=not_supported):
        validate_options("task", {"max_calls": 1}, in_options_call=True)
    assert validate_options("actor", {"concurrency_groups": {"io": 1}})
    with pytest.raises(ValueError, match="'concurrency_groups' is not supported in '.options"):
        validate_options("actor", {"concurrency_groups": {"io": 1}}, in_options_call=True)


def test_get_if_exists_requires_a_name():
    with pytest.raises(ValueError, match="name must be specified to use `get_if_exists`"):
        validate_options("actor", {"get_if_exists": True})
    with pytest.raises(ValueError, match="get_if_exists"):
        validate_options("actor", {"get_if_exists": True, "name": None})
    assert validate_options("actor", {"get_if_exists": True, "name": "a"})["get_if_exists"] is True


def test_get_if_exists_in_options_call_is_checked_against_the_combined_options():
    override = validate_options("actor", {"get_if_exists": True}, in_options_call=True)
    assert merge({"name": "counter"}, override)["get_if_exists"] is True
    with pytest.raises(ValueError, match="get_if_exists"):
        merge({}, override)
    named = validate_options("actor", {"name": "c", "get_if_exists": True}, in_options_call=True)
    assert merge({}, named) == {"name": "c", "get_if_exists": True}


def test_placement_group_and_scheduling_strategy_together_are_rejected():
    with pytest.raises(ValueError, match="scheduling_strategy"):
        validate_options(
            "task", {"placement_group": StrategyLike(), "scheduling_strategy": "SPREAD"}
        )
    base = validate_options("task", {"scheduling_strategy": "SPREAD"})
    override = validate_options("task", {"placement_group": StrategyLike()}, in_options_call=True)
    with pytest.raises(ValueError, match="scheduling_strategy"):
        merge(base, override)


def test_max_task_retries_is_allowed_without_max_restarts():
    # Current Ray accepts this combination: actor methods may retry on application errors
    # (retry_exceptions) without the actor ever restarting.
    assert validate_options("actor", {"max_task_retries": 3}) == {"max_task_retries": 3}
    assert validate_options("actor", {"max_task_retries": -1, "max_restarts": 0})


# --- merge ----------------------------------------------------------------------------------


def test_merge_overrides_and_leaves_inputs_alone():
    base = {"num_cpus": 1, "max_retries": 3, "max_calls": 5}
    override = {"num_cpus": 2}
    merged = merge(base, override)
    assert merged == {"num_cpus": 2, "max_retries": 3, "max_calls": 5}
    assert base == {"num_cpus": 1, "max_retries": 3, "max_calls": 5}
    assert override == {"num_cpus": 2}


def test_merge_deep_merges_metadata_per_namespace():
    base = {"_metadata": {"ns1": {"a": 1, "b": 2}, "ns2": {"c": 3}}}
    override = {"_metadata": {"ns1": {"b": 20, "d": 4}, "ns3": {"e": 5}}}
    merged = merge(base, override)
    assert merged["_metadata"] == {
        "ns1": {"a": 1, "b": 20, "d": 4},
        "ns2": {"c": 3},
        "ns3": {"e": 5},
    }
    assert base["_metadata"] == {"ns1": {"a": 1, "b": 2}, "ns2": {"c": 3}}
    assert merge({}, override)["_metadata"] == override["_metadata"]
    assert merge(base, {"_metadata": None})["_metadata"] is None


def test_options_call_flow_end_to_end():
    base = validate_options("task", {"num_cpus": 2, "max_calls": 1, "num_return_vals": 2})
    once = merge(base, validate_options("task", {"num_gpus": 1}, in_options_call=True))
    twice = merge(once, validate_options("task", {"num_cpus": None}, in_options_call=True))
    assert twice == {"num_cpus": 1, "max_calls": 1, "num_returns": 2, "num_gpus": 1}


# --- resource requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, options, expected",
    [
        ("task", {}, {"CPU": 1.0}),
        ("task", defaults("task"), {"CPU": 1.0}),
        ("task", {"num_cpus": 0}, {}),
        ("task", {"num_cpus": 0.5, "num_gpus": 1, "memory": 1000},
         {"CPU": 0.5, "GPU": 1.0, "memory": 1000.0}),
        ("task", {"resources": {"custom": 2, "unused": 0}}, {"CPU": 1.0, "custom": 2.0}),
        ("task", {"accelerator_type": "A100", "num_gpus": 1},
         {"CPU": 1.0, "GPU": 1.0, "accelerator_type:A100": 0.001}),
        ("actor", {}, {"CPU": 1.0}),
        ("actor", defaults("actor"), {"CPU": 1.0}),
        ("actor", {"num_cpus": 0}, {}),
        ("actor", {"num_cpus": 3, "resources": {"slot": 1}}, {"CPU": 3.0, "slot": 1.0}),
    ],
)
def test_resource_request(kind, options, expected):
    request = resource_request(options, kind)
    assert request == expected
    assert all(type(amount) is float for amount in request.values())


def test_resource_request_rejects_an_unknown_kind():
    with pytest.raises(ValueError):
        resource_request({}, "job")


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, {}),  # placed with 1 CPU, holds none while running
        (defaults("actor"), {}),
        ({"memory": 100}, {"memory": 100.0}),  # memory does not count as asking
        ({"num_gpus": 1}, {"CPU": 1.0, "GPU": 1.0}),
        ({"resources": {"slot": 1}}, {"CPU": 1.0, "slot": 1.0}),
        ({"resources": {"slot": 0}}, {}),
        ({"accelerator_type": "V100"}, {"CPU": 1.0, "accelerator_type:V100": 0.001}),
        ({"num_cpus": 2}, {"CPU": 2.0}),
        ({"num_cpus": 0, "num_gpus": 1}, {"GPU": 1.0}),
    ],
)
def test_running_actor_request(options, expected):
    assert running_actor_request(options) == expected


# --- spec fields ------------------------------------------------------------------------------


def test_task_fields_of_the_defaults():
    assert task_fields({}) == {"num_returns": 1, "resources": {"CPU": 1.0}, "max_retries": 3,
                               "retry_exceptions": False, "max_calls": 0, "env_vars": None,
                               "strategy": None, "generator": None, "backpressure": -1}


@pytest.mark.parametrize("options, is_generator, expected", [
    ({}, False, (1, None, -1)),
    ({}, True, (1, "streaming", -1)),                    # a generator function streams
    ({"num_returns": 3}, True, (3, None, -1)),           # ... unless num_returns says how many
    ({"num_returns": "streaming"}, True, (1, "streaming", -1)),
    ({"num_returns": "streaming", "_generator_backpressure_num_objects": 4}, True,
     (1, "streaming", 4)),
    ({"num_returns": "dynamic"}, True, (1, "dynamic", -1)),
])
def test_generator_fields(options, is_generator, expected):
    for fields in (task_fields(validate_options("task", options), is_generator),
                   method_fields(validate_options("method", options), is_generator)):
        assert (fields["num_returns"], fields["generator"], fields["backpressure"]) == expected


@pytest.mark.parametrize("value, expected", [
    (None, None), ("DEFAULT", None), ("SPREAD", "SPREAD"),
    (NodeAffinitySchedulingStrategy("ab" * 16, soft=True), (NODE_AFFINITY, b"\xab" * 16, True)),
])
def test_the_scheduling_strategy_becomes_the_spec_strategy(value, expected):
    fields = task_fields(validate_options("task", {"scheduling_strategy": value}))
    assert fields["strategy"] == expected


@pytest.mark.parametrize("args, error", [
    ((b"ab", True), TypeError), (("zz", True), ValueError), (("ab", 1), TypeError)])
def test_node_affinity_rejects_what_is_not_a_node_id(args, error):
    with pytest.raises(error):
        NodeAffinitySchedulingStrategy(*args)


def test_task_fields_of_given_options():
    checked = validate_options("task", {
        "num_returns": np.int64(2), "num_cpus": 0.5, "max_retries": -1, "max_calls": 4,
        "retry_exceptions": [KeyError], "runtime_env": {"env_vars": {"A": "1"}}})
    fields = task_fields(checked)
    assert fields["num_returns"] == 2 and type(fields["num_returns"]) is int
    assert fields["resources"] == {"CPU": 0.5}
    assert fields["max_retries"] == -1 and fields["max_calls"] == 4
    assert serialization.deserialize(fields["retry_exceptions"]) == (KeyError,)
    assert fields["env_vars"] == {"A": "1"}


def test_method_fields():
    assert method_fields({}) == {"num_returns": 1, "max_retries": None,
                                 "retry_exceptions": False, "concurrency_group": None,
                                 "generator": None, "backpressure": -1}
    fields = method_fields(validate_options("method", {
        "num_returns": 0, "max_task_retries": 2, "retry_exceptions": True,
        "concurrency_group": "io"}))
    assert fields == {"num_returns": 0, "max_retries": 2, "retry_exceptions": True,
                      "concurrency_group": "io", "generator": None, "backpressure": -1}


def _meta(is_async=False):
    return ActorClassMeta("Counter", "tests", {}, is_async)


def test_actor_fields_of_the_defaults():
    fields = actor_fields({}, _meta())
    spec = fields.spec
    assert (spec.class_name, spec.name, spec.namespace, spec.detached) == \
        ("Counter", None, None, False)
    assert (spec.max_restarts, spec.max_task_retries, spec.max_concurrency) == (0, 0, 1)
    assert spec.concurrency_groups == {} and spec.is_async is False
    assert spec.hold == {}  # placed with 1 CPU, holds none while running
    assert fields.resources == {"CPU": 1.0}
    assert fields.env_vars is None
    assert fields.get_if_exists is False
    assert fields.max_pending_calls == -1


def test_an_asyncio_actor_runs_many_calls_at_once_by_default():
    assert actor_fields({}, _meta(is_async=True)).spec.max_concurrency == 1000
    assert actor_fields({"max_concurrency": 3}, _meta(is_async=True)).spec.max_concurrency == 3


def test_actor_fields_of_given_options():
    checked = validate_options("actor", {
        "name": "c", "namespace": "team", "lifetime": "detached", "max_restarts": -1,
        "max_task_retries": 2, "max_concurrency": 4, "concurrency_groups": ["io"],
        "num_gpus": 1, "get_if_exists": True, "max_pending_calls": 8,
        "runtime_env": {"env_vars": {"A": "1"}}})
    fields = actor_fields(checked, _meta())
    spec = fields.spec
    assert (spec.name, spec.namespace, spec.detached) == ("c", "team", True)
    assert (spec.max_restarts, spec.max_task_retries, spec.max_concurrency) == (-1, 2, 4)
    assert spec.concurrency_groups == {"io": 4}  # a list takes the default limit
    assert spec.hold == {"CPU": 1.0, "GPU": 1.0}
    assert fields.resources == {"CPU": 1.0, "GPU": 1.0}
    assert fields.env_vars == {"A": "1"}
    assert fields.get_if_exists is True and fields.max_pending_calls == 8
    assert actor_fields({"concurrency_groups": {"io": 2}}, _meta()).spec.concurrency_groups \
        == {"io": 2}
