"""serialization.serialize: small containers of plain values skip cloudpickle; anything
else keeps its buffers out of band."""

import pickle

import numpy as np
import pytest

from purerun.core import serialization


@pytest.mark.parametrize("value", [
    ((1, "a"), {}),                      # a call's arguments
    ((b"item", None), {"timeout": 2.5}),
    (True, b"x"),                        # a result
    [1, 2.0, "three", None, False],
    {"a": (1, 2), "b": [b"c"]},
])
def test_small_containers_of_plain_values_round_trip_through_plain_pickle(value):
    assert serialization._plain(value, 2)
    sv = serialization.serialize(value)
    assert sv.buffers == [] and sv.contained == []
    assert pickle.loads(sv.meta) == value


@pytest.mark.parametrize("value", [
    list(range(20)),                     # longer than a glance should cost
    ((1,), {"k": {"deep": 1}}),          # deeper than two levels
    {1: "not a str key"},
    (object,),
])
def test_other_values_are_not_taken_for_plain(value):
    assert not serialization._plain(value, 2)
    assert pickle.loads(serialization.serialize(value).meta) == value


def test_an_array_inside_a_tuple_still_goes_out_of_band():
    array = np.arange(10)
    sv = serialization.serialize((array, 1))
    assert len(sv.buffers) == 1
    back, one = serialization.deserialize(*serialization.to_inline(sv))
    assert one == 1 and (back == array).all()
    assert not back.flags.writeable     # rebuilt over the stored (read-only) bytes
