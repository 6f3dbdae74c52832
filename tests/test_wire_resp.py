"""RESP: request parsing (multibulk, inline, pipelines, limits) and reply encoding (RESP2/3).

Parser tests run twice: with the hiredis accelerator and with the exact parser alone, which must
give the same events (tests/test_wire_fuzz.py compares them on random input).
"""

from __future__ import annotations

import enum
import math
import tracemalloc

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chorusdb.replies import OK, PONG, WRONGTYPE, Error, Simple
from chorusdb.wire.resp import (
    NEED_DATA,
    ProtocolError,
    RespParser,
    encode_command,
    encode_replies,
    encode_reply,
    format_double,
    split_inline_arguments,
)

ACCELERATED = pytest.mark.parametrize("use_hiredis", [True, False], ids=["hiredis", "exact"])


def parse_all(chunks, *, max_count: int = 4096, **options) -> list:
    """Every event the parser produces for ``chunks`` fed one after another."""
    parser = RespParser(**options)
    events: list = []
    for chunk in chunks:
        parser.receive_data(chunk)
        while True:
            commands, error = parser.next_events(max_count)
            events.extend(commands)
            if error is not None:
                return [*events, error]
            if len(commands) < max_count:
                break
    return events


# --- requests ---------------------------------------------------------------------------------

PIPELINE = (
    encode_command([b"SET", b"key", b"value"])
    + b"PING\r\n"
    + encode_command([b"GET", b"k\x00\xff\xfe"])
    + b'set "a b" \'c d\' "\\x41\\n"\n'
    + b"*0\r\n"
    + b"\r\n"
    + encode_command([b"ECHO", b"a+b=c(d)>e~f|g", b"*1234567", b"\r\n"])
    + b"*-1\r\n"
    + encode_command([b"MSET"] + [b"k%d" % n for n in range(40)])
)
PIPELINE_COMMANDS = [
    [b"SET", b"key", b"value"],
    [b"PING"],
    [b"GET", b"k\x00\xff\xfe"],
    [b"set", b"a b", b"c d", b"A\n"],
    [b"ECHO", b"a+b=c(d)>e~f|g", b"*1234567", b"\r\n"],
    [b"MSET"] + [b"k%d" % n for n in range(40)],
]


@ACCELERATED
def test_pipeline_mixing_multibulk_and_inline(use_hiredis: bool) -> None:
    assert parse_all([PIPELINE], use_hiredis=use_hiredis) == PIPELINE_COMMANDS


@ACCELERATED
def test_pipeline_split_at_every_point(use_hiredis: bool) -> None:
    for split in range(len(PIPELINE) + 1):
        chunks = [PIPELINE[:split], PIPELINE[split:]]
        assert parse_all(chunks, use_hiredis=use_hiredis) == PIPELINE_COMMANDS, split


@ACCELERATED
def test_pipeline_byte_by_byte_and_one_command_at_a_time(use_hiredis: bool) -> None:
    chunks = [PIPELINE[index : index + 1] for index in range(len(PIPELINE))]
    assert parse_all(chunks, use_hiredis=use_hiredis) == PIPELINE_COMMANDS
    assert parse_all([PIPELINE], max_count=1, use_hiredis=use_hiredis) == PIPELINE_COMMANDS


def test_next_event_pulls_one_command_at_a_time() -> None:
    parser = RespParser()
    parser.receive_data(encode_command([b"A"]) + encode_command([b"B"]) + b"*1\r\n$1")
    assert parser.next_event() == [b"A"]
    assert parser.next_event() == [b"B"]
    assert parser.next_event() is NEED_DATA
    assert 0 < parser.buffered_bytes <= len(b"*1\r\n$1")
    parser.receive_data(b"\r\nC\r\n")
    assert parser.next_event() == [b"C"]
    assert parser.buffered_bytes == 0


def test_next_events_respects_max_count() -> None:
    parser = RespParser()
    parser.receive_data(encode_command([b"PING"]) * 10)
    assert parser.next_events(4) == ([[b"PING"]] * 4, None)
    assert parser.next_events(4) == ([[b"PING"]] * 4, None)
    assert parser.next_events(4) == ([[b"PING"]] * 2, None)
    assert parser.next_events(4) == ([], None)


@ACCELERATED
def test_values_with_reply_type_bytes_across_reads_and_batches(use_hiredis: bool) -> None:
    # Bytes that could start another RESP type make the accelerated path check its batch end
    # command by command, and confirm it with a second reader when a command is left partial.
    commands = [[b"SET", b"k+%d" % n, b"v=(>~|" * n] for n in range(30)]
    stream = b"".join(map(encode_command, commands))
    for split in range(0, len(stream) + 1, 7):
        for max_count in (1, 3, 4096):
            chunks = [stream[:split], stream[split:]]
            assert parse_all(chunks, max_count=max_count, use_hiredis=use_hiredis) == commands


@pytest.mark.parametrize(
    ("line", "arguments"),
    [
        (b"", []),
        (b"   \t ", []),
        (b"GET key", [b"GET", b"key"]),
        (b"  set   a\tb  ", [b"set", b"a", b"b"]),
        (b'set "hello world" x', [b"set", b"hello world", b"x"]),
        (b'"\\n\\r\\t\\b\\a\\\\\\"\\q"', [b"\n\r\t\b\a\\\"q"]),
        (b'"\\x41\\x4a\\xff\\x00z"', [b"AJ\xff\x00z"]),
        (b'"\\x4g"', [b"x4g"]),  # not a hex escape: the backslash escapes 'x'
        (b"'it\\'s' 'a\\nb'", [b"it's", b"a\\nb"]),
        (b'a"b c"d', None),  # a closing quote must end the argument
        (b'foo"bar baz"', [b"foobar baz"]),  # a quote may open inside an argument
        (b'"unterminated', None),
        (b"'unterminated", None),
        (b'""', [b""]),
        (b"a\x00b c", [b"a"]),  # a NUL ends the line, as in C
        (b"a\x0bb", [b"a\x0bb"]),  # \v separates nothing inside an argument...
        (b"\x0b\x0ca", [b"a"]),  # ...but is skipped before one
        (b"\xff\xfe k\xc3", [b"\xff\xfe", b"k\xc3"]),
    ],
)
def test_inline_splitting_follows_sdssplitargs(line: bytes, arguments: list[bytes] | None) -> None:
    assert split_inline_arguments(line) == arguments


@ACCELERATED
def test_inline_line_endings_and_quotes(use_hiredis: bool) -> None:
    assert parse_all([b"PING\nPING\r\n ECHO 'a b'\r\n"], use_hiredis=use_hiredis) == [
        [b"PING"],
        [b"PING"],
        [b"ECHO", b"a b"],
    ]
    assert parse_all([b'ECHO "a\r\n'], use_hiredis=use_hiredis) == [
        ProtocolError("unbalanced quotes in request")
    ]


@ACCELERATED
@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$', got ':'"),
        (b"*1\r\n*1\r\n$1\r\na\r\n", "expected '$', got '*'"),
        (b"*1\r\n=7\r\ntxt:abc\r\n", "expected '$', got '='"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$03\r\nabc\r\n", "invalid bulk length"),
        (b"*1\r\n$+3\r\nabc\r\n", "invalid bulk length"),
        (b"*1\r\n$ 3\r\nabc\r\n", "invalid bulk length"),
        (b"*01\r\n$1\r\na\r\n", "invalid multibulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\rX$1\r\na\r\n", None),  # Redis ends a header at \r and skips one byte blindly
        (b"*99999999999999999999\r\n", "invalid multibulk length"),
    ],
)
def test_malformed_requests(use_hiredis: bool, stream: bytes, message: str | None) -> None:
    expected = [ProtocolError(message)] if message else [[b"a"]]
    assert parse_all([stream], use_hiredis=use_hiredis) == expected


@ACCELERATED
def test_commands_before_an_error_are_returned_and_the_error_sticks(use_hiredis: bool) -> None:
    parser = RespParser(use_hiredis=use_hiredis)
    parser.receive_data(encode_command([b"A"]) + b"*1\r\n:1\r\n" + encode_command([b"B"]))
    error = ProtocolError("expected '$', got ':'")
    assert parser.next_events(100) == ([[b"A"]], error)
    parser.receive_data(encode_command([b"C"]))
    assert parser.next_events(100) == ([], error)
    assert parser.next_event() == error


SMALL_LIMITS = dict(bulk_bytes_max=10, args_max=3, inline_bytes_max=16, buffer_bytes_max=40)


@ACCELERATED
@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([b"*4\r\n"], "invalid multibulk length"),
        ([b"*1\r\n$11\r\n"], "invalid bulk length"),
        ([b"x" * 17], "too big inline request"),
        ([b"*" + b"1" * 17], "too big mbulk count string"),
        ([b"*1\r\n$" + b"1" * 17], "too big bulk count string"),
    ],
)
def test_limits(use_hiredis: bool, chunks: list[bytes], message: str) -> None:
    assert parse_all(chunks, use_hiredis=use_hiredis, **SMALL_LIMITS)[-1] == ProtocolError(message)


@ACCELERATED
def test_query_buffer_limit_counts_arguments_of_the_partial_command(use_hiredis: bool) -> None:
    complete = encode_command([b"a" * 10, b"b" * 10])
    partial = b"*3\r\n" + (b"$10\r\n" + b"x" * 10 + b"\r\n") * 2 + b"$10\r\n" + b"z" * 9
    # The partial command holds 20 bytes of arguments and 9 of the third (its header is parsed).
    limits = dict(SMALL_LIMITS, buffer_bytes_max=28)
    assert parse_all([complete, partial], use_hiredis=use_hiredis, **limits) == [
        [b"a" * 10, b"b" * 10],
        ProtocolError("query buffer limit exceeded"),
    ]
    limits = dict(SMALL_LIMITS, buffer_bytes_max=29)
    assert parse_all([complete, partial], use_hiredis=use_hiredis, **limits) == [[b"a" * 10, b"b" * 10]]


@ACCELERATED
def test_limits_allow_exactly_the_maximum(use_hiredis: bool) -> None:
    command = [b"a" * 10, b"b" * 10, b"c"]
    assert parse_all([b"x" * 15 + b"\n", encode_command(command)], use_hiredis=use_hiredis, **SMALL_LIMITS) == [
        [b"x" * 15],
        command,
    ]


@ACCELERATED
def test_oversized_headers_are_refused_before_their_body_arrives(use_hiredis: bool) -> None:
    parser = RespParser(use_hiredis=use_hiredis)
    parser.receive_data(b"*2\r\n$3\r\nSET\r\n$100000000\r\n")
    assert parser.next_event() == ProtocolError("invalid bulk length")
    parser = RespParser(use_hiredis=use_hiredis)
    parser.receive_data(b"*2000000000\r\n")
    assert parser.next_event() == ProtocolError("invalid multibulk length")


def test_huge_nested_array_headers_never_reach_hiredis() -> None:
    # hiredis allocates an array when it reads its header. With args_max=100 the guard covers
    # numbers of 3 digits or more; an unguarded 500000-element header would cost 4 MB here.
    parser = RespParser(args_max=100)
    tracemalloc.start()
    try:
        parser.receive_data(b"*1\r\n*500000\r\n")
        event = parser.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert event == ProtocolError("expected '$', got '*'")
    assert peak < 1_000_000


def test_big_value_arriving_in_pieces() -> None:
    value = bytes(range(256)) * 8192  # 2 MiB, NUL and every byte value included
    stream = encode_command([b"SET", b"k", value])
    chunks = [stream[index : index + 65536] for index in range(0, len(stream), 65536)]
    parser = RespParser()
    events = []
    for chunk in chunks:
        parser.receive_data(chunk)
        commands, error = parser.next_events(4096)
        assert error is None
        events.extend(commands)
        assert parser.buffered_bytes <= len(stream)
    assert events == [[b"SET", b"k", value]]
    assert parser.buffered_bytes == 0


command_lists = st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=6), max_size=12)


@settings(max_examples=200, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(command_lists, st.lists(st.integers(0, 10_000), max_size=6), st.sampled_from([1, 2, 4096]))
def test_any_commands_in_any_chunking_parse_back_equal(commands, cuts, max_count) -> None:
    stream = b"".join(map(encode_command, commands))
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    chunks = [stream[start:end] for start, end in zip([0, *points], [*points, len(stream)])]
    assert parse_all(chunks, max_count=max_count) == commands
    assert parse_all(chunks, max_count=max_count, use_hiredis=False) == commands


# --- replies ----------------------------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    ("value", "resp2", "resp3"),
    [
        (OK, b"+OK\r\n", b"+OK\r\n"),
        (PONG, b"+PONG\r\n", b"+PONG\r\n"),
        (Simple("QUEUED"), b"+QUEUED\r\n", b"+QUEUED\r\n"),
        (WRONGTYPE, b"-" + WRONGTYPE.text.encode() + b"\r\n", b"-" + WRONGTYPE.text.encode() + b"\r\n"),
        (Error("ERR a\r\nb\nc"), b"-ERR a  b c\r\n", b"-ERR a  b c\r\n"),
        (Simple("x\ry"), b"+x y\r\n", b"+x y\r\n"),
        (b"", b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (b"a\r\n\x00\xff", b"$5\r\na\r\n\x00\xff\r\n", b"$5\r\na\r\n\x00\xff\r\n"),
        (0, b":0\r\n", b":0\r\n"),
        (-1, b":-1\r\n", b":-1\r\n"),
        (-2, b":-2\r\n", b":-2\r\n"),
        (2**63 - 1, b":9223372036854775807\r\n", b":9223372036854775807\r\n"),
        (Color.RED, b":1\r\n", b":1\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (False, b":0\r\n", b"#f\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (3.0, b"$1\r\n3\r\n", b",3\r\n"),
        (-0.0, b"$2\r\n-0\r\n", b",-0\r\n"),
        (math.inf, b"$3\r\ninf\r\n", b",inf\r\n"),
        (-math.inf, b"$4\r\n-inf\r\n", b",-inf\r\n"),
        (math.nan, b"$3\r\nnan\r\n", b",nan\r\n"),
        ([], b"*0\r\n", b"*0\r\n"),
        ((b"a", 1, None), b"*3\r\n$1\r\na\r\n:1\r\n$-1\r\n", b"*3\r\n$1\r\na\r\n:1\r\n_\r\n"),
        ({b"k": [b"v"]}, b"*2\r\n$1\r\nk\r\n*1\r\n$1\r\nv\r\n", b"%1\r\n$1\r\nk\r\n*1\r\n$1\r\nv\r\n"),
    ],
)
def test_reply_bytes(value: object, resp2: bytes, resp3: bytes) -> None:
    assert encode_reply(value, 2) == resp2
    assert encode_reply(value, 3) == resp3


def test_large_collections_and_values_use_computed_headers() -> None:
    items = [b"x" * 2000] * 1500
    encoded = encode_reply(items, 2)
    assert encoded.startswith(b"*1500\r\n$2000\r\n")
    assert len(encoded) == len(b"*1500\r\n") + 1500 * len(b"$2000\r\n" + b"x" * 2000 + b"\r\n")


@pytest.mark.parametrize("value", ["text", ["nested", b"ok"], object(), {1, 2}])
def test_non_reply_values_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        encode_reply(value, 2)


def test_format_double_matches_redis() -> None:
    assert format_double(1e18) == "1000000000000000000"
    assert format_double(2.0**62) == "4611686018427387904"
    assert format_double(2.0**63) == "9.223372036854776e+18"
    assert format_double(0.1) == "0.1"
    assert format_double(-2.5e-10) == "-2.5e-10"


def expected_from_hiredis(value: object, protocol: int) -> object:
    """What hiredis returns for ``value`` encoded in ``protocol``."""
    if isinstance(value, Simple):
        return value.text.encode()
    if isinstance(value, Error):
        return ("error", value.text)
    if isinstance(value, bool):
        return value if protocol == 3 else int(value)
    if isinstance(value, float):
        return value if protocol == 3 else format_double(value).encode()
    if isinstance(value, (list, tuple)):
        return [expected_from_hiredis(item, protocol) for item in value]
    if isinstance(value, dict):
        if protocol == 3:
            return {key: expected_from_hiredis(item, protocol) for key, item in value.items()}
        return [expected_from_hiredis(part, protocol) for pair in value.items() for part in pair]
    return value


def comparable(parsed: object) -> object:
    if isinstance(parsed, hiredis.ReplyError):
        return ("error", str(parsed))
    if isinstance(parsed, list):
        return [comparable(item) for item in parsed]
    if isinstance(parsed, dict):
        return {key: comparable(item) for key, item in parsed.items()}
    return parsed


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20)
scalars = st.one_of(
    st.binary(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    texts.map(Simple),
    texts.map(lambda text: Error("ERR " + text)),
)
replies = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(st.binary(max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(replies, max_size=5), st.sampled_from([2, 3]))
def test_replies_round_trip_through_hiredis(values: list, protocol: int) -> None:
    reader = hiredis.Reader()
    reader.feed(encode_replies(values, protocol))
    parsed = [comparable(reader.gets()) for _ in values]
    assert reader.gets() is False
    assert parsed == [expected_from_hiredis(value, protocol) for value in values]
    assert encode_replies(values, protocol) == b"".join(encode_reply(v, protocol) for v in values)
