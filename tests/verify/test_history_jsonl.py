"""The history format: pairing rules, the recorder, and a JSON Lines encoding that round-trips
any bytes (NUL, non-UTF-8) and keeps ASCII readable.
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorusdb.verify.history import (
    FAIL,
    INFO,
    OK,
    History,
    HistoryRecorder,
    MalformedHistory,
    Op,
    Value,
    decode_record,
    encode_record,
    error_outcome,
)

AWKWARD = b"\x00nul \xff\xfe not utf-8 \xc3\x28 \n\"quote\\"


def _recorded(sink: io.StringIO | None = None) -> HistoryRecorder:
    recorder = HistoryRecorder(sink)
    recorder.invoke(1, "rpush", b"k\x00\xff", AWKWARD, time=10, node="n1")
    recorder.invoke(2, "lrange", b"k\x00\xff", time=11)
    recorder.ok(1, time=12, node="n1")
    recorder.ok(2, time=12, value=[AWKWARD, b""], node="n2")
    recorder.invoke(3, "incrby", b"n", -7, time=13)
    recorder.error(3, time=14, error="INDOUBT not confirmed in time")
    recorder.note("nemesis", "partition", {"blocked": [["n1", "n2"]]}, time=15)
    recorder.invoke(4, "cas", b"r", (None, 5), time=16)
    recorder.ok(4, time=17, value=False)
    recorder.invoke(5, "get", b"r", time=18)
    return recorder


def test_round_trip_with_nul_and_non_utf8_bytes() -> None:
    """Recorder output is ASCII, reads back equal, and writes back byte for byte."""
    sink = io.StringIO()
    recorder = _recorded(sink)
    written = sink.getvalue()
    assert written.isascii()
    again = History.read_jsonl(io.StringIO(written + "\n"))
    assert list(again) == list(recorder.history)
    assert again[3].value == (AWKWARD, b"")
    out = io.StringIO()
    again.write_jsonl(out)
    assert out.getvalue() == written


def test_encoding_is_the_documented_one() -> None:
    """The line shape is the documented one; bytes map to code points one to one."""
    record = Op(41, 3, "invoke", "rpush", b"k7", b"c3-118", 2815000123, node="n2")
    line = encode_record(record)
    assert line == (
        '{"i":41,"p":3,"type":"invoke","f":"rpush","k":"k7","v":"c3-118","t":2815000123,'
        '"node":"n2"}'
    )
    assert json.loads(encode_record(Op(0, 1, "ok", "get", b"\x00", b"\xff", 5)))["v"] == "\xff"
    assert decode_record(line) == record


client_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4).map(tuple),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=200)
@given(key=st.binary(max_size=12), value=client_values)
def test_any_client_value_round_trips(key: bytes, value: Value) -> None:
    """Any key and nested client value survive encode and decode."""
    record = Op(0, 7, "invoke", "set", key, value, 0)
    assert decode_record(encode_record(record)) == record


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"i":0,"p":1,"type":"invoke","f":"set"}',
        '{"i":0,"p":1,"type":"invoke","f":"set","v":{"a":1},"t":0}',
        '{"i":0,"p":1,"type":"invoke","f":"set","k":"\\u0100","t":0}',
        '{"i":0,"p":1,"type":"invoke","f":"set","t":"soon"}',
        '{"i":0,"p":[1],"type":"invoke","f":"set","t":0}',
        '{"i":0,"p":1,"type":"invoke","f":"set","t":0,"node":7}',
    ],
)
def test_lines_that_are_not_records(line: str) -> None:
    """Garbage, missing fields and wrongly typed fields are refused, not guessed."""
    with pytest.raises(MalformedHistory):
        decode_record(line)


def test_pairing_and_unknown_outcomes() -> None:
    """Completions pair with invocations; an info or missing completion is unknown."""
    operations = _recorded().history.operations()
    statuses = [(o.process, o.f, o.status, o.return_index) for o in operations]
    assert statuses == [
        (1, "rpush", OK, 2),
        (2, "lrange", OK, 3),
        (3, "incrby", INFO, None),
        (4, "cas", OK, 8),
        (5, "get", INFO, None),
    ]
    assert operations[4].completion is None
    assert operations[1].output == (AWKWARD, b"")
    assert operations[0].output == AWKWARD


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        ("NOTLEADER n2", FAIL),
        ("NOQUORUM", FAIL),
        ("WRONGTYPE x", FAIL),
        ("INDOUBT", INFO),
        ("??", INFO),
    ],
)
def test_error_classes_decide_fail_or_info(error: str, outcome: str) -> None:
    """Definite error classes fail; anything else is an unknown outcome."""
    assert error_outcome(error) == outcome


def _invoke(index: int, process: int | str, time: int = 0) -> Op:
    return Op(index, process, "invoke", "set", b"k", b"v", time)


def _complete(index: int, process: int, kind: str = OK, f: str = "set") -> Op:
    return Op(index, process, kind, f, b"k", b"v", 0)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([_invoke(1, 1)], "arrives at position 0"),
        ([_invoke(0, 1), _invoke(1, 1)], "while record 0 is outstanding"),
        ([_invoke(0, 1), _complete(1, 1, INFO), _invoke(2, 1)], "after an info"),
        ([_complete(0, 1)], "nothing open"),
        ([_invoke(0, 1), _complete(1, 1, f="get")], "but record 0 invoked set"),
        ([_invoke(0, 1, time=5), _invoke(1, 2, time=4)], "goes back"),
        ([_invoke(0, "n1")], "must be an int"),
        ([Op(0, 1, "note", "x", None, None, 0)], "named source"),
        ([Op(0, 1, "maybe", "x", None, None, 0)], "unknown type"),
    ],
)
def test_history_rules(records: list[Op], message: str) -> None:
    """Each history rule is enforced with a message naming the record."""
    with pytest.raises(MalformedHistory, match=message):
        History(records)


def test_a_process_continues_after_a_definite_failure() -> None:
    history = History([_invoke(0, 1), _complete(1, 1, FAIL), _invoke(2, 1)])
    assert [o.status for o in history.operations()] == [FAIL, INFO]
