"""DataclassCodec: round trips of the core model, strict rejection of malformed input."""

from __future__ import annotations

import dataclasses
import enum

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chorusdb.core import model
from chorusdb.wire.codec import CodecError, DataclassCodec

MODEL_TYPES = {
    1: model.Position,
    2: model.Record,
    3: model.SetValue,
    4: model.PushItems,
    5: model.PopItems,
    6: model.DeleteKeys,
    7: model.SetExpiry,
    8: model.FlushAll,
    9: model.LogEntry,
    10: model.PutRecord,
    11: model.DeleteRecord,
    12: model.ClearRecords,
    13: model.AppendEntry,
    14: model.PutMeta,
    15: model.RecoveredState,
}
codec = DataclassCodec(MODEL_TYPES)


class Color(enum.IntEnum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Painted:
    color: Color
    shades: tuple[Color, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Unregistered:
    value: int


positions = st.builds(model.Position, st.integers(0, 2**40), st.integers(0, 2**62))
keys = st.binary(max_size=16)
effects = st.one_of(
    st.builds(model.SetValue, keys, st.binary(max_size=64), st.integers(0, 2**53)),
    st.builds(model.PushItems, keys, st.lists(st.binary(max_size=8)).map(tuple), st.booleans()),
    st.builds(model.PopItems, keys, st.integers(0, 2**31), st.booleans()),
    st.builds(model.DeleteKeys, st.lists(keys).map(tuple)),
    st.builds(model.SetExpiry, keys, st.integers(0, 2**53)),
    st.builds(model.FlushAll),
)
entries = st.builds(model.LogEntry, positions, effects)
records = st.one_of(
    st.builds(model.Record, st.just(model.Kind.STRING), st.binary(), st.integers(0, 2**63), st.integers(0, 2**63)),
    st.builds(
        model.Record,
        st.just(model.Kind.LIST),
        st.lists(st.binary(max_size=8)).map(tuple),
        st.integers(0, 2**63),
        st.integers(0, 2**63),
    ),
)
writes = st.one_of(
    st.builds(model.PutRecord, keys, records),
    st.builds(model.DeleteRecord, keys),
    st.builds(model.ClearRecords),
    st.builds(model.AppendEntry, entries),
    st.builds(
        model.PutMeta, st.text(), st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(), st.binary())
    ),
)


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(writes, max_size=8).map(tuple))
def test_writes_round_trip(batch: tuple[object, ...]) -> None:
    assert codec.decode(codec.encode(batch)) == batch


@settings(max_examples=100, derandomize=True)
@given(st.dictionaries(keys, records, max_size=5), st.dictionaries(st.text(), st.integers(-(2**63), 2**63)), positions)
def test_recovered_state_round_trips(records_by_key, meta, position) -> None:
    state = model.RecoveredState(records_by_key, meta, position)
    assert codec.decode(codec.encode(state)) == state


def test_record_kind_comes_back_as_the_enum_member() -> None:
    record = model.Record(model.Kind.LIST, (b"a", b"\x00\xff"), model.NO_EXPIRY, 3)
    decoded = codec.decode(codec.encode(record))
    assert decoded == record
    assert type(decoded.kind) is model.Kind
    assert decoded.value == (b"a", b"\x00\xff")


def test_nested_enum_container_stays_ints_but_direct_field_is_member() -> None:
    painted_codec = DataclassCodec({1: Painted})
    decoded = painted_codec.decode(painted_codec.encode(Painted(Color.BLUE, (Color.RED,))))
    assert decoded == Painted(Color.BLUE, (Color.RED,))
    assert type(decoded.color) is Color


def test_plain_values_round_trip_and_arrays_come_back_as_tuples() -> None:
    value = {b"k\x00": [1, (2.5, None)], "s": True, 3: -(2**63), b"": {b"nested": b"\xff"}}
    assert codec.decode(codec.encode(value)) == {
        b"k\x00": (1, (2.5, None)),
        "s": True,
        3: -(2**63),
        b"": {b"nested": b"\xff"},
    }


def test_empty_dataclass_and_empty_tuple_are_distinct() -> None:
    assert codec.decode(codec.encode((model.FlushAll(), ()))) == (model.FlushAll(), ())


def test_encoding_is_stable() -> None:
    # Tags and field order are the on-disk format: this exact byte string must keep decoding.
    entry = model.LogEntry(model.Position(3, 7), model.SetValue(b"k", b"v", 0))
    encoded = bytes.fromhex("93c7000993c70001030794c70003c4016bc4017600")
    assert codec.encode(entry) == encoded
    assert codec.decode(encoded) == entry


def test_unregistered_type_cannot_be_encoded() -> None:
    with pytest.raises(CodecError, match="not a registered type"):
        codec.encode(model.LogEntry(model.Position(1, 1), Unregistered(1)))
    with pytest.raises(CodecError):
        codec.encode({1, 2})
    with pytest.raises(CodecError, match="64-bit range"):
        codec.encode(model.Position(0, 2**64))
    # The codec is still usable after a failure.
    assert codec.decode(codec.encode(model.Position(1, 2))) == model.Position(1, 2)


def test_unknown_tag_is_rejected() -> None:
    data = msgpack.packb([msgpack.ExtType(99, b""), 1, 2])
    with pytest.raises(CodecError, match="unknown tag 99"):
        codec.decode(data)


@pytest.mark.parametrize("fields", [[1], [1, 2, 3]])
def test_wrong_field_count_is_rejected(fields: list[int]) -> None:
    data = msgpack.packb([msgpack.ExtType(1, b""), *fields])
    with pytest.raises(CodecError, match="Position"):
        codec.decode(data)


@pytest.mark.parametrize(
    "value",
    [
        msgpack.ExtType(1, b""),  # a bare marker
        [1, msgpack.ExtType(1, b"")],  # a marker in the wrong slot
        {"k": msgpack.ExtType(8, b"")},  # a marker as a map value
        [msgpack.ExtType(1, b"payload"), 1, 2],  # a marker with a payload
        [msgpack.ExtType(2, b""), 99, b"", 0, 0],  # not a Kind
    ],
)
def test_misplaced_or_invalid_markers_are_rejected(value: object) -> None:
    with pytest.raises(CodecError):
        codec.decode(msgpack.packb(value))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x01\x02", b"\xdc\xff\xff"])
def test_malformed_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(data)


def test_every_truncation_of_a_valid_encoding_is_rejected() -> None:
    data = codec.encode(
        (model.AppendEntry(model.LogEntry(model.Position(2, 9), model.PushItems(b"k", (b"a",), True))),)
    )
    for end in range(len(data)):
        with pytest.raises(CodecError):
            codec.decode(data[:end])


def test_registration_errors() -> None:
    with pytest.raises(ValueError, match="outside"):
        DataclassCodec({128: model.Position})
    with pytest.raises(ValueError, match="two tags"):
        DataclassCodec({1: model.Position, 2: model.Position})
    with pytest.raises(TypeError, match="not a dataclass"):
        DataclassCodec({1: int})
