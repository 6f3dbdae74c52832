"""Unit tests of the command table (core/commands.py) and the keyspace (core/keyspace.py).

Every command is run through ``Keyspace.execute`` and its effects through ``apply``, the way a
core does; the tests check the reply, the effects (logical, with absolute expiry) and the state
that applying them leaves. Replies and error texts are Redis 7's.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorusdb.core import keyspace as keyspace_module
from chorusdb.core.api import ClientCommand
from chorusdb.core.commands import (
    COMMANDS,
    DATA_CATEGORIES,
    Argument,
    CommandSpec,
    check_arity,
    command_keys,
    find_subcommand,
)
from chorusdb.core.keyspace import (
    DECREMENT_OVERFLOW,
    EXPIRE_GT_LT_CONFLICT,
    EXPIRE_NX_CONFLICT,
    INVALID_CURSOR,
    LIST_TOO_LONG,
    MUST_BE_POSITIVE,
    STRING_TOO_LONG,
    Keyspace,
    glob_matcher,
    invalid_expire_time,
    parse_int64,
    parse_scan_cursor,
    unsupported_option,
)
from chorusdb.core.model import (
    NO_EXPIRY,
    ClearRecords,
    DeleteKeys,
    DeleteRecord,
    FlushAll,
    Kind,
    PopItems,
    PushItems,
    PutRecord,
    Record,
    SetExpiry,
    SetValue,
)
from chorusdb.replies import (
    INCR_OVERFLOW,
    NOT_AN_INTEGER,
    OK,
    SYNTAX_ERROR,
    WRONGTYPE,
    Error,
    Simple,
    wrong_arity,
)

NOW = 1_700_000_000_000
MAX = 2**63 - 1
MIN = -(2**63)


class Node:
    """A keyspace driven as a core drives it: execute, then apply each effect at the next log
    index. Keeps the log so tests can replay it."""

    def __init__(self, records: dict[bytes, Record] | None = None) -> None:
        self.keyspace = Keyspace(records if records is not None else {})
        self.log: list[object] = []

    def run(self, *words: bytes | str | int, now: int = NOW) -> tuple[object, tuple]:
        encoded = [w if isinstance(w, bytes) else str(w).encode() for w in words]
        command = ClientCommand(encoded[0].upper(), tuple(encoded[1:]))
        spec = COMMANDS[command.name]
        assert check_arity(spec, len(encoded)), words
        reply, effects = self.keyspace.execute(command, now)
        for effect in effects:
            self.log.append(effect)
            self.keyspace.apply(effect, len(self.log))
        return reply, effects

    def reply(self, *words: bytes | str | int, now: int = NOW) -> object:
        return self.run(*words, now=now)[0]

    def record(self, key: bytes, now: int = NOW) -> Record | None:
        return self.keyspace.get_record(key, now)


@pytest.fixture
def node() -> Node:
    return Node()


# --- the command table ---------------------------------------------------------------------


def _minimum_words(argument: Argument) -> int:
    if argument.optional:
        return 0
    if argument.type == "block":
        inner = sum(_minimum_words(child) for child in argument.value)
    elif argument.type == "oneof":
        inner = min(_minimum_words(child) for child in argument.value)
    elif argument.type == "pure-token":
        return 1
    else:
        inner = 1
    return inner + (1 if argument.token else 0)


def _has_variable_words(argument: Argument) -> bool:
    return argument.optional or argument.multiple or any(
        _has_variable_words(child) for child in argument.value)


def _all_specs() -> list[CommandSpec]:
    return [checked for spec in COMMANDS.values() for checked in (spec, *spec.subcommands)]


def test_table_covers_the_commands_of_the_design() -> None:
    names = {name.decode() for name in COMMANDS}
    assert names == set(
        "GET SET DEL EXISTS MGET MSET INCR INCRBY DECR DECRBY APPEND STRLEN EXPIRE PEXPIRE "
        "EXPIREAT PEXPIREAT TTL PTTL PERSIST TYPE KEYS SCAN DBSIZE FLUSHDB RPUSH LPUSH LRANGE "
        "LLEN LPOP RPOP SETNX SETEX PSETEX GETSET GETDEL PING ECHO AUTH HELLO SELECT INFO ROLE "
        "CLIENT COMMAND QUIT RESET WAIT CHORUS.POSITION CHORUS.DIGEST CHORUS.WAITREPLICAS "
        "CHORUS.WAITPOS CHORUS.DIVERGENT CHORUS.SWITCHOVER CHORUS.TOKEN CHORUS.TOPOLOGY "
        "CHORUS.ONCE CHORUS.CONSISTENCY CHORUS.SIBLINGS CHORUS.SETCTX CHORUS.CONFLICTS".split())
    for name, spec in COMMANDS.items():
        assert name == spec.name.upper().encode()


@pytest.mark.parametrize("spec", _all_specs(), ids=lambda spec: spec.name)
def test_documented_arguments_agree_with_arity(spec: CommandSpec) -> None:
    """redis-cli's hints come from the arguments: they must need exactly the words the arity
    asks for (the name of a subcommand is two words)."""
    assert spec.summary and spec.since and spec.group and spec.complexity
    if not spec.arguments and spec.subcommands:
        return                                   # a container: the subcommands say the rest
    name_words = 2 if "|" in spec.name else 1
    minimum = name_words + sum(_minimum_words(argument) for argument in spec.arguments)
    assert minimum == abs(spec.arity)
    variable = any(_has_variable_words(argument) for argument in spec.arguments)
    # Redis's QUIT takes (and ignores) any arguments without documenting one.
    assert variable == (spec.arity < 0) or spec.name == "quit"


@pytest.mark.parametrize(("name", "argc", "expected"), [
    (b"GET", 2, True), (b"GET", 1, False), (b"GET", 3, False),
    (b"SET", 3, True), (b"SET", 9, True), (b"SET", 2, False),
    (b"DBSIZE", 1, True), (b"DBSIZE", 2, False), (b"PING", 1, True), (b"PING", 2, True),
])
def test_check_arity(name: bytes, argc: int, expected: bool) -> None:
    assert check_arity(COMMANDS[name], argc) is expected


def test_command_keys_follow_the_key_positions() -> None:
    assert command_keys(COMMANDS[b"GET"], (b"k",)) == (b"k",)
    assert command_keys(COMMANDS[b"SET"], (b"k", b"v", b"EX", b"1")) == (b"k",)
    assert command_keys(COMMANDS[b"DEL"], (b"a", b"b", b"c")) == (b"a", b"b", b"c")
    assert command_keys(COMMANDS[b"MSET"], (b"a", b"1", b"b", b"2")) == (b"a", b"b")
    assert command_keys(COMMANDS[b"KEYS"], (b"*",)) == ()


def test_find_subcommand_ignores_case() -> None:
    client = COMMANDS[b"CLIENT"]
    setname = find_subcommand(client, b"SetName")
    assert setname is not None and setname.name == "client|setname" and setname.arity == 3
    assert find_subcommand(client, b"nonsense") is None
    assert find_subcommand(COMMANDS[b"GET"], b"x") is None


def test_data_categories_and_write_flags() -> None:
    for spec in COMMANDS.values():
        assert spec.is_write == ("write" in spec.flags)
        if spec.category in DATA_CATEGORIES:
            assert spec.group in {"string", "generic", "list", "server"}
    assert COMMANDS[b"GET"].category == "data-read"
    assert COMMANDS[b"INCR"].category == "data-write"
    assert COMMANDS[b"WAIT"].category == "server"
    assert COMMANDS[b"CHORUS.POSITION"].category == "chorus"
    assert COMMANDS[b"GETSET"].doc_flags == ("deprecated",)
    assert COMMANDS[b"GET"].doc_flags == ()


# --- integer and cursor parsing ------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    (b"0", 0), (b"1", 1), (b"-1", -1), (b"123", 123), (str(MAX).encode(), MAX),
    (str(MIN).encode(), MIN), (str(MAX + 1).encode(), None), (str(MIN - 1).encode(), None),
    (b"", None), (b"-", None), (b"-0", None), (b"+1", None), (b"01", None), (b"00", None),
    (b" 1", None), (b"1 ", None), (b"1.0", None), (b"1e3", None), (b"1_000", None),
    (b"0x10", None), (b"\xd9\xa1", None), (b"9" * 5000, None),
])
def test_parse_int64_is_as_strict_as_redis(text: bytes, expected: int | None) -> None:
    assert parse_int64(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    (b"0", 0), (b"17", 17), (b"007", 7), (b"+5", 5), (b"-1", 2**64 - 1), (b"", 0),
    (b"+", None), (b" 1", None), (b"1 ", None), (b"x", None), (str(2**64).encode(), None),
    (str(2**64 - 1).encode(), 2**64 - 1),
])
def test_parse_scan_cursor_reads_like_strtoul(text: bytes, expected: int | None) -> None:
    assert parse_scan_cursor(text) == expected


# --- strings -------------------------------------------------------------------------------


def test_get_and_set(node: Node) -> None:
    assert node.run("GET", "k") == (None, ())
    assert node.run("SET", "k", b"v\x00\xff") == (OK, (SetValue(b"k", b"v\x00\xff", NO_EXPIRY),))
    assert node.reply("GET", "k") == b"v\x00\xff"
    assert node.record(b"k") == Record(Kind.STRING, b"v\x00\xff", NO_EXPIRY, 1)


def test_get_on_a_list_is_wrongtype(node: Node) -> None:
    node.run("RPUSH", "l", "a")
    assert node.run("GET", "l") == (WRONGTYPE, ())


def test_set_overwrites_a_list_and_clears_the_ttl(node: Node) -> None:
    node.run("RPUSH", "l", "a")
    node.run("PEXPIRE", "l", 5000)
    assert node.reply("SET", "l", "v") == OK
    assert node.record(b"l") == Record(Kind.STRING, b"v", NO_EXPIRY, 3)


@pytest.mark.parametrize(("option", "amount", "expire_at"), [
    ("EX", 10, NOW + 10_000), ("PX", 1500, NOW + 1500),
    ("EXAT", NOW // 1000 + 20, (NOW // 1000 + 20) * 1000), ("PXAT", NOW + 7, NOW + 7),
    ("ex", 1, NOW + 1000),
])
def test_set_expiry_options_become_absolute(node: Node, option: str, amount: int,
                                            expire_at: int) -> None:
    assert node.run("SET", "k", "v", option, amount) == (OK, (SetValue(b"k", b"v", expire_at),))
    assert node.reply("PTTL", "k") == expire_at - NOW


def test_set_with_an_absolute_expiry_in_the_past_deletes(node: Node) -> None:
    node.run("SET", "k", "old")
    assert node.run("SET", "k", "v", "PXAT", NOW - 1) == (OK, (DeleteKeys((b"k",)),))
    assert node.reply("EXISTS", "k") == 0
    assert node.run("SET", "other", "v", "EXAT", 1) == (OK, ())
    # Expiring at this very millisecond: the key still exists now (Redis's keyIsExpired).
    assert node.run("SET", "k", "v", "PXAT", NOW) == (OK, (SetValue(b"k", b"v", NOW),))
    assert node.reply("GET", "k") == b"v"
    assert node.reply("GET", "k", now=NOW + 1) is None


@pytest.mark.parametrize("words", [
    ("EX", "0"), ("EX", "-1"), ("PX", "0"), ("EXAT", "0"), ("PXAT", "-5"),
    ("EX", str(MAX // 1000 + 1)), ("PX", str(MAX)), ("EXAT", str(MAX)),
])
def test_set_invalid_expire_time(node: Node, words: tuple[str, str]) -> None:
    assert node.run("SET", "k", "v", *words) == (invalid_expire_time("set"), ())
    assert invalid_expire_time("set").text == "ERR invalid expire time in 'set' command"


@pytest.mark.parametrize("words", [
    ("NX", "XX"), ("XX", "NX"), ("KEEPTTL", "EX", "1"), ("EX", "1", "KEEPTTL"),
    ("EX", "1", "PX", "1"), ("PXAT", "1", "EXAT", "1"), ("EX",), ("FOO",), ("GET", "GET", "PX"),
    ("EX", "0", "PX", "1"),      # the conflict is found before the time is checked
])
def test_set_conflicting_or_unknown_options_are_a_syntax_error(node: Node,
                                                                words: tuple[str, ...]) -> None:
    assert node.run("SET", "k", "v", *words) == (SYNTAX_ERROR, ())


def test_set_repeated_options_are_allowed_and_the_last_expiry_wins(node: Node) -> None:
    assert node.run("SET", "k", "v", "EX", "1", "EX", "5", "NX", "NX") == (
        OK, (SetValue(b"k", b"v", NOW + 5000),))
    assert node.run("SET", "k", "v", "EX", "x") == (NOT_AN_INTEGER, ())


def test_set_nx_xx(node: Node) -> None:
    assert node.run("SET", "k", "1", "XX") == (None, ())
    assert node.run("SET", "k", "1", "NX") == (OK, (SetValue(b"k", b"1", NO_EXPIRY),))
    assert node.run("SET", "k", "2", "NX") == (None, ())
    assert node.run("SET", "k", "3", "xx") == (OK, (SetValue(b"k", b"3", NO_EXPIRY),))


def test_set_get_returns_the_old_value(node: Node) -> None:
    assert node.run("SET", "k", "1", "GET") == (None, (SetValue(b"k", b"1", NO_EXPIRY),))
    assert node.run("SET", "k", "2", "GET") == (b"1", (SetValue(b"k", b"2", NO_EXPIRY),))
    # NX with GET (allowed since 7.0): the old value, and nothing set.
    assert node.run("SET", "k", "3", "NX", "GET") == (b"2", ())
    assert node.run("SET", "new", "3", "XX", "GET") == (None, ())
    node.run("RPUSH", "l", "a")
    assert node.run("SET", "l", "v", "GET") == (WRONGTYPE, ())
    assert node.reply("TYPE", "l") == Simple("list")


def test_set_keepttl(node: Node) -> None:
    node.run("SET", "k", "1", "PX", 5000)
    assert node.run("SET", "k", "2", "KEEPTTL") == (OK, (SetValue(b"k", b"2", NOW + 5000),))
    assert node.run("SET", "k", "3") == (OK, (SetValue(b"k", b"3", NO_EXPIRY),))
    node.run("SET", "gone", "1", "PX", 10)
    assert node.run("SET", "gone", "2", "KEEPTTL", now=NOW + 11) == (
        OK, (SetValue(b"gone", b"2", NO_EXPIRY),))


def test_setnx_setex_psetex(node: Node) -> None:
    assert node.run("SETNX", "k", "1") == (1, (SetValue(b"k", b"1", NO_EXPIRY),))
    assert node.run("SETNX", "k", "2") == (0, ())
    assert node.run("SETEX", "k", 10, "v") == (OK, (SetValue(b"k", b"v", NOW + 10_000),))
    assert node.run("PSETEX", "k", 10, "v") == (OK, (SetValue(b"k", b"v", NOW + 10),))
    assert node.run("SETEX", "k", 0, "v") == (invalid_expire_time("setex"), ())
    assert node.run("PSETEX", "k", -1, "v") == (invalid_expire_time("psetex"), ())
    assert node.run("SETEX", "k", "x", "v") == (NOT_AN_INTEGER, ())
    node.run("RPUSH", "l", "a")
    assert node.run("SETNX", "l", "v") == (0, ())
    assert node.reply("SETEX", "l", 5, "v") == OK          # overwrites whatever type


def test_getset_and_getdel(node: Node) -> None:
    node.run("SET", "k", "1", "EX", 100)
    assert node.run("GETSET", "k", "2") == (b"1", (SetValue(b"k", b"2", NO_EXPIRY),))
    assert node.run("GETSET", "new", "x") == (None, (SetValue(b"new", b"x", NO_EXPIRY),))
    assert node.run("GETDEL", "k") == (b"2", (DeleteKeys((b"k",)),))
    assert node.run("GETDEL", "k") == (None, ())
    node.run("RPUSH", "l", "a")
    assert node.run("GETSET", "l", "v") == (WRONGTYPE, ())
    assert node.run("GETDEL", "l") == (WRONGTYPE, ())


def test_mget_and_mset(node: Node) -> None:
    node.run("RPUSH", "l", "a")
    assert node.run("MSET", "a", "1", "b", "2", "a", "3") == (OK, (
        SetValue(b"a", b"1", NO_EXPIRY), SetValue(b"b", b"2", NO_EXPIRY),
        SetValue(b"a", b"3", NO_EXPIRY)))
    assert node.run("MGET", "a", "l", "missing", "b", "a") == ([b"3", None, None, b"2", b"3"], ())
    assert node.run("MSET", "a", "1", "b") == (wrong_arity("mset"), ())


def test_incr_family(node: Node) -> None:
    assert node.run("INCR", "n") == (1, (SetValue(b"n", b"1", NO_EXPIRY),))
    assert node.run("INCRBY", "n", 41) == (42, (SetValue(b"n", b"42", NO_EXPIRY),))
    assert node.run("DECR", "n") == (41, (SetValue(b"n", b"41", NO_EXPIRY),))
    assert node.run("DECRBY", "n", 50) == (-9, (SetValue(b"n", b"-9", NO_EXPIRY),))
    assert node.run("INCRBY", "n", -1) == (-10, (SetValue(b"n", b"-10", NO_EXPIRY),))


def test_incr_keeps_the_ttl(node: Node) -> None:
    node.run("SET", "n", "5", "PX", 3000)
    assert node.run("INCR", "n") == (6, (SetValue(b"n", b"6", NOW + 3000),))
    assert node.reply("PTTL", "n") == 3000


def test_incr_errors(node: Node) -> None:
    for value in (b"x", b"", b" 1", b"1.5", b"01", b"-0", b"+1", str(MAX + 1).encode()):
        node.run("SET", "s", value)
        assert node.run("INCR", "s") == (NOT_AN_INTEGER, ()), value
    node.run("SET", "big", MAX)
    assert node.run("INCR", "big") == (INCR_OVERFLOW, ())
    assert node.run("INCRBY", "big", 0) == (MAX, (SetValue(b"big", str(MAX).encode(), 0),))
    node.run("SET", "small", MIN)
    assert node.run("DECR", "small") == (INCR_OVERFLOW, ())
    assert node.run("DECRBY", "x", MIN) == (DECREMENT_OVERFLOW, ())
    assert DECREMENT_OVERFLOW.text == "ERR decrement would overflow"
    assert node.run("INCRBY", "x", "1x") == (NOT_AN_INTEGER, ())
    node.run("RPUSH", "l", "a")
    assert node.run("INCR", "l") == (WRONGTYPE, ())
    # The increment is parsed before the key is looked at.
    assert node.run("INCRBY", "l", "x") == (NOT_AN_INTEGER, ())


def test_append_and_strlen(node: Node) -> None:
    assert node.run("STRLEN", "k") == (0, ())
    assert node.run("APPEND", "k", "") == (0, (SetValue(b"k", b"", NO_EXPIRY),))
    assert node.reply("EXISTS", "k") == 1
    node.run("PEXPIRE", "k", 900)
    assert node.run("APPEND", "k", "ab") == (2, (SetValue(b"k", b"ab", NOW + 900),))
    assert node.run("APPEND", "k", b"\x00") == (3, (SetValue(b"k", b"ab\x00", NOW + 900),))
    assert node.run("STRLEN", "k") == (3, ())
    node.run("RPUSH", "l", "a")
    assert node.run("APPEND", "l", "x") == (WRONGTYPE, ())
    assert node.run("STRLEN", "l") == (WRONGTYPE, ())


def test_append_is_bounded(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyspace_module.limits, "value_bytes_max", 4)
    node.run("SET", "k", "abc")
    assert node.run("APPEND", "k", "d") == (4, (SetValue(b"k", b"abcd", NO_EXPIRY),))
    assert node.run("APPEND", "k", "e") == (STRING_TOO_LONG, ())


# --- keys and expiry -----------------------------------------------------------------------


def test_del_and_exists(node: Node) -> None:
    node.run("MSET", "a", "1", "b", "2")
    node.run("SET", "gone", "1", "PX", 1)
    later = NOW + 2
    assert node.run("EXISTS", "a", "a", "b", "c", "gone", now=later) == (3, ())
    assert node.run("DEL", "a", "a", "c", "gone", "b", now=later) == (
        2, (DeleteKeys((b"a", b"b")),))
    assert node.run("DEL", "a", "gone", now=later) == (0, ())


def test_expire_family_is_absolute(node: Node) -> None:
    node.run("SET", "k", "v")
    assert node.run("EXPIRE", "k", 10) == (1, (SetExpiry(b"k", NOW + 10_000),))
    assert node.run("PEXPIRE", "k", 10) == (1, (SetExpiry(b"k", NOW + 10),))
    assert node.run("EXPIREAT", "k", NOW // 1000 + 5) == (
        1, (SetExpiry(b"k", (NOW // 1000 + 5) * 1000),))
    assert node.run("PEXPIREAT", "k", NOW + 3) == (1, (SetExpiry(b"k", NOW + 3),))
    assert node.run("EXPIRE", "missing", 10) == (0, ())


@pytest.mark.parametrize("words", [
    ("EXPIRE", "k", 0), ("EXPIRE", "k", -5), ("PEXPIRE", "k", 0),
    ("EXPIREAT", "k", 1), ("PEXPIREAT", "k", NOW),
])
def test_expire_at_or_before_now_deletes(node: Node, words: tuple) -> None:
    node.run("SET", "k", "v")
    assert node.run(*words) == (1, (DeleteKeys((b"k",)),))
    assert node.reply("EXISTS", "k") == 0


def test_expire_options(node: Node) -> None:
    node.run("SET", "k", "v")
    assert node.run("EXPIRE", "k", 100, "XX") == (0, ())
    assert node.run("EXPIRE", "k", 100, "GT") == (0, ())        # no TTL counts as infinite
    assert node.run("EXPIRE", "k", 100, "NX") == (1, (SetExpiry(b"k", NOW + 100_000),))
    assert node.run("EXPIRE", "k", 200, "NX") == (0, ())
    assert node.run("EXPIRE", "k", 100, "gt") == (0, ())        # equal is not greater
    assert node.run("EXPIRE", "k", 200, "GT") == (1, (SetExpiry(b"k", NOW + 200_000),))
    assert node.run("EXPIRE", "k", 300, "LT") == (0, ())
    assert node.run("EXPIRE", "k", 50, "LT", "XX") == (1, (SetExpiry(b"k", NOW + 50_000),))
    node.run("SET", "p", "v")
    assert node.run("EXPIRE", "p", 50, "LT") == (1, (SetExpiry(b"p", NOW + 50_000),))


@pytest.mark.parametrize(("words", "error"), [
    (("NX", "XX"), EXPIRE_NX_CONFLICT), (("NX", "GT"), EXPIRE_NX_CONFLICT),
    (("LT", "NX"), EXPIRE_NX_CONFLICT), (("GT", "LT"), EXPIRE_GT_LT_CONFLICT),
    (("XX", "FOO"), unsupported_option(b"FOO")),
])
def test_expire_option_errors(node: Node, words: tuple[str, ...], error: Error) -> None:
    node.run("SET", "k", "v")
    assert node.run("EXPIRE", "k", 10, *words) == (error, ())
    # Options are checked before the time.
    assert node.run("EXPIRE", "k", "x", *words) == (error, ())
    assert unsupported_option(b"FOO").text == "ERR Unsupported option FOO"


@pytest.mark.parametrize(("words", "command"), [
    (("EXPIRE", "k", MAX // 1000 + 1), "expire"), (("EXPIRE", "k", MIN // 1000), "expire"),
    (("PEXPIRE", "k", MAX), "pexpire"), (("EXPIREAT", "k", MAX), "expireat"),
])
def test_expire_overflow(node: Node, words: tuple, command: str) -> None:
    node.run("SET", "k", "v")
    assert node.run(*words) == (invalid_expire_time(command), ())


def test_expire_with_huge_absolute_times_that_fit(node: Node) -> None:
    node.run("SET", "k", "v")
    assert node.run("PEXPIREAT", "k", MAX) == (1, (SetExpiry(b"k", MAX),))
    assert node.run("EXPIRE", "k", "notanumber") == (NOT_AN_INTEGER, ())


def test_ttl_and_pttl(node: Node) -> None:
    assert node.run("TTL", "k") == (-2, ())
    node.run("SET", "k", "v")
    assert node.run("PTTL", "k") == (-1, ())
    node.run("PEXPIRE", "k", 2500)
    assert node.reply("PTTL", "k") == 2500
    assert node.reply("TTL", "k") == 3                       # Redis rounds: (ms + 500) / 1000
    assert node.reply("TTL", "k", now=NOW + 1001) == 1
    assert node.reply("PTTL", "k", now=NOW + 2500) == 0
    assert node.reply("PTTL", "k", now=NOW + 2501) == -2


def test_persist(node: Node) -> None:
    assert node.run("PERSIST", "k") == (0, ())
    node.run("SET", "k", "v")
    assert node.run("PERSIST", "k") == (0, ())
    node.run("EXPIRE", "k", 10)
    assert node.run("PERSIST", "k") == (1, (SetExpiry(b"k", NO_EXPIRY),))
    assert node.reply("TTL", "k") == -1


def test_type(node: Node) -> None:
    node.run("SET", "s", "v")
    node.run("LPUSH", "l", "v")
    assert node.reply("TYPE", "s") == Simple("string")
    assert node.reply("TYPE", "l") == Simple("list")
    assert node.reply("TYPE", "x") == Simple("none")


def test_expired_keys_are_missing_everywhere(node: Node) -> None:
    node.run("SET", "s", "5", "PX", 10)
    node.run("RPUSH", "l", "a", "b")
    node.run("PEXPIRE", "l", 10)
    later = NOW + 11
    for words, expected in [
        (("GET", "s"), None), (("STRLEN", "s"), 0), (("TYPE", "s"), Simple("none")),
        (("LLEN", "l"), 0), (("LRANGE", "l", 0, -1), []), (("EXISTS", "s", "l"), 0),
        (("TTL", "s"), -2), (("KEYS", "*"), []), (("DBSIZE",), 0), (("MGET", "s"), [None]),
        (("LPOP", "l"), None), (("PERSIST", "s"), 0), (("EXPIRE", "s", 100), 0),
        (("SCAN", 0), [b"0", []]),
    ]:
        assert node.run(*words, now=later) == (expected, ()), words
    # Writes start from nothing: INCR does not see "5" and drops the old expiry.
    assert node.run("INCR", "s", now=later) == (1, (SetValue(b"s", b"1", NO_EXPIRY),))
    assert node.run("APPEND", "l", "x", now=later) == (1, (SetValue(b"l", b"x", NO_EXPIRY),))
    assert node.reply("TYPE", "l", now=later) == Simple("string")


def test_push_onto_an_expired_list_reclaims_it_first(node: Node) -> None:
    node.run("RPUSH", "l", "old")
    node.run("PEXPIRE", "l", 10)
    later = NOW + 11
    assert node.run("RPUSH", "l", "new", now=later) == (
        1, (DeleteKeys((b"l",)), PushItems(b"l", (b"new",), False)))
    assert node.record(b"l", later) == Record(Kind.LIST, (b"new",), NO_EXPIRY, 4)
    node.run("SET", "s", "v", "PX", 10)
    assert node.run("LPUSH", "s", "a", now=later) == (
        1, (DeleteKeys((b"s",)), PushItems(b"s", (b"a",), True)))


def test_keys_with_patterns(node: Node) -> None:
    for key in (b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello", b"a*b", b"", b"\xff"):
        node.run("SET", key, "v")
    assert node.reply("KEYS", "*") == [b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello",
                                        b"a*b", b"", b"\xff"]
    assert node.reply("KEYS", "h?llo") == [b"hello", b"hallo", b"hxllo"]
    assert node.reply("KEYS", "h*llo") == [b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello"]
    assert node.reply("KEYS", "h[ae]llo") == [b"hello", b"hallo"]
    assert node.reply("KEYS", "h[^e]llo") == [b"hallo", b"hxllo"]
    assert node.reply("KEYS", "h[a-b]llo") == [b"hallo"]
    assert node.reply("KEYS", "a\\*b") == [b"a*b"]
    assert node.reply("KEYS", "**") == [b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello",
                                         b"a*b", b"\xff"]      # only "*" itself matches b""
    assert node.reply("KEYS", "") == [b""]
    assert node.reply("KEYS", b"\xff") == [b"\xff"]


# --- glob matching against a transcription of Redis's stringmatchlen -----------------------


def _redis_stringmatch(pattern: bytes, string: bytes) -> bool:
    """Redis 7's stringmatchlen_impl (util.c), transcribed line by line, nocase = 0."""
    def signed(byte: int) -> int:
        return byte - 256 if byte > 127 else byte

    def at(data: bytes, index: int) -> int:
        return data[index] if index < len(data) else 0       # C reads the terminating NUL

    skip_longer = [False]

    def match(p: int, s: int, nesting: int) -> bool:
        if nesting > 1000:
            return False
        plen = len(pattern) - p
        slen = len(string) - s
        while plen and slen:
            c = pattern[p]
            if c == ord("*"):
                while plen and at(pattern, p + 1) == ord("*"):
                    p += 1
                    plen -= 1
                if plen == 1:
                    return True
                while slen:
                    if match(p + 1, s, nesting + 1):
                        return True
                    if skip_longer[0]:
                        return False
                    s += 1
                    slen -= 1
                skip_longer[0] = True
                return False
            elif c == ord("?"):
                s += 1
                slen -= 1
            elif c == ord("["):
                p += 1
                plen -= 1
                negate = at(pattern, p) == ord("^")
                if negate:
                    p += 1
                    plen -= 1
                matched = False
                while True:
                    if at(pattern, p) == ord("\\") and plen >= 2:
                        p += 1
                        plen -= 1
                        if pattern[p] == string[s]:
                            matched = True
                    elif at(pattern, p) == ord("]"):
                        break
                    elif plen == 0:
                        p -= 1
                        plen += 1
                        break
                    elif plen >= 3 and pattern[p + 1] == ord("-"):
                        start, end = signed(pattern[p]), signed(pattern[p + 2])
                        if start > end:
                            start, end = end, start
                        p += 2
                        plen -= 2
                        if start <= signed(string[s]) <= end:
                            matched = True
                    elif pattern[p] == string[s]:
                        matched = True
                    p += 1
                    plen -= 1
                if negate:
                    matched = not matched
                if not matched:
                    return False
                s += 1
                slen -= 1
            else:
                if c == ord("\\") and plen >= 2:
                    p += 1
                    plen -= 1
                if pattern[p] != string[s]:
                    return False
                s += 1
                slen -= 1
            p += 1
            plen -= 1
            if slen == 0:
                while at(pattern, p) == ord("*") and plen:
                    p += 1
                    plen -= 1
                break
        return plen == 0 and slen == 0

    return match(0, 0, 0)


_GLOB_ALPHABET = b"ab*?[]^-\\\x00\x80\xff"


@settings(max_examples=3000, derandomize=True, deadline=None)
@given(pattern=st.binary(max_size=8).map(lambda raw: bytes(_GLOB_ALPHABET[b % 12] for b in raw)),
       key=st.binary(max_size=6).map(lambda raw: bytes(b"ab*-]\x00\x80\xff"[b % 8] for b in raw)))
def test_glob_matcher_agrees_with_redis(pattern: bytes, key: bytes) -> None:
    assert glob_matcher(pattern)(key) == _redis_stringmatch(pattern, key)


@pytest.mark.parametrize(("pattern", "key", "expected"), [
    (b"[a-]", b"_", True), (b"[a-]", b"b", False), (b"[z-a]", b"m", True),
    (b"[a-\xff]", b"\x00", True), (b"[a-\xff]", b"b", False), (b"[abc", b"b", True),
    (b"[", b"a", False), (b"[^", b"q", True), (b"a\\", b"a\\", True), (b"[\\]]", b"]", True),
    (b"*", b"", False), (b"", b"", True), (b"?", b"", False), (b"a*", b"a", True),
])
def test_glob_matcher_edge_cases(pattern: bytes, key: bytes, expected: bool) -> None:
    assert glob_matcher(pattern)(key) is expected
    assert _redis_stringmatch(pattern, key) is expected


def test_glob_matcher_is_linear_on_hostile_patterns() -> None:
    pattern = b"a*" * 30 + b"b"
    assert glob_matcher(pattern)(b"a" * 5000) is False
    assert glob_matcher(b"*a" * 1001)(b"a" * 1001) is False     # Redis's nesting bound
    assert glob_matcher(b"*a" * 1000)(b"a" * 1000) is True
    assert glob_matcher(b"*a" * 1000 + b"*")(b"a" * 1000) is True


# --- SCAN, DBSIZE, FLUSHDB ----------------------------------------------------------------


def _scan_all(node: Node, *options: object, now: int = NOW,
              between: object = None) -> list[bytes]:
    cursor = b"0"
    seen: list[bytes] = []
    for _ in range(10_000):
        reply = node.reply("SCAN", cursor, *options, now=now)
        assert isinstance(reply, list)
        cursor, keys = reply
        seen.extend(keys)
        if callable(between):
            between()
        if cursor == b"0":
            return seen
    raise AssertionError("SCAN did not finish")


def test_scan_returns_every_key_once_in_creation_order(node: Node) -> None:
    keys = [b"k%d" % i for i in range(50)]
    for key in keys:
        node.run("SET", key, "v")
    assert _scan_all(node) == keys
    assert _scan_all(node, "COUNT", 7) == keys
    assert node.reply("SCAN", 0, "COUNT", 3) == [b"4", keys[:3]]


def test_scan_survives_changes_during_the_iteration(node: Node) -> None:
    stable = [b"s%d" % i for i in range(40)]
    for i, key in enumerate(stable):
        node.run("SET", key, "v")
        node.run("SET", b"t%d" % i, "v")
    rng = random.Random(7)
    counter = iter(range(10_000))

    def churn() -> None:
        node.run("DEL", b"t%d" % rng.randrange(40), b"n%d" % rng.randrange(100))
        node.run("SET", b"n%d" % next(counter), "v")

    seen = _scan_all(node, "COUNT", 5, between=churn)
    stable_seen = [key for key in seen if key.startswith(b"s")]
    assert stable_seen == stable                 # each stable key exactly once
    assert len(seen) == len(set(seen))


def test_scan_compacts_holes(node: Node) -> None:
    for i in range(3000):
        node.run("SET", b"k%d" % i, "v")
    node.run("DEL", *[b"k%d" % i for i in range(2999)])
    assert _scan_all(node, "COUNT", 1) == [b"k2999"]
    holes_max = keyspace_module.scan_holes_slack
    assert len(node.keyspace._scan_keys) <= holes_max + 1


def test_scan_match_type_and_expired(node: Node) -> None:
    node.run("SET", "s1", "v")
    node.run("RPUSH", "l1", "v")
    node.run("SET", "s2", "v", "PX", 5)
    node.run("SET", "x", "v")
    later = NOW + 6
    assert _scan_all(node, now=later) == [b"s1", b"l1", b"x"]
    assert _scan_all(node, "MATCH", "s*", now=later) == [b"s1"]
    assert _scan_all(node, "TYPE", "LIST", now=later) == [b"l1"]
    assert _scan_all(node, "TYPE", "hash") == []
    assert _scan_all(node, "type", "string", "match", "*1", "count", 100) == [b"s1"]
    assert _scan_all(node, "MATCH", "*") == [b"s1", b"l1", b"s2", b"x"]


@pytest.mark.parametrize(("words", "error"), [
    (("x",), INVALID_CURSOR), ((" 1",), INVALID_CURSOR), (("0", "COUNT"), SYNTAX_ERROR),
    (("0", "COUNT", "0"), SYNTAX_ERROR), (("0", "COUNT", "x"), NOT_AN_INTEGER),
    (("0", "FOO", "1"), SYNTAX_ERROR), (("0", "MATCH"), SYNTAX_ERROR),
])
def test_scan_errors(node: Node, words: tuple[str, ...], error: Error) -> None:
    assert node.run("SCAN", *words) == (error, ())


def test_scan_cursor_past_the_end_and_huge_count(node: Node) -> None:
    node.run("SET", "k", "v")
    assert node.reply("SCAN", "-1") == [b"0", []]
    assert node.reply("SCAN", "", "COUNT", MAX) == [b"0", [b"k"]]


def test_dbsize_counts_live_keys(node: Node) -> None:
    node.run("MSET", "a", "1", "b", "2", "c", "3")
    node.run("PEXPIRE", "a", 10)
    node.run("PEXPIRE", "b", 20)
    node.run("PEXPIRE", "b", 30)                 # a stale heap entry must not count twice
    assert node.reply("DBSIZE") == 3
    assert node.reply("DBSIZE", now=NOW + 11) == 2
    assert node.reply("DBSIZE", now=NOW + 31) == 1
    assert len(node.keyspace) == 3
    assert node.keyspace.expiring_count() == 2
    node.run("PERSIST", "b")
    node.run("SET", "c", "v", "EX", 5)
    node.run("DEL", "a", now=NOW + 5)
    assert node.keyspace.expiring_count() == 1


@pytest.mark.parametrize("words", [(), ("ASYNC",), ("sync",)])
def test_flushdb(node: Node, words: tuple[str, ...]) -> None:
    node.run("MSET", "a", "1", "b", "2")
    assert node.run("FLUSHDB", *words) == (OK, (FlushAll(),))
    assert node.reply("DBSIZE") == 0
    assert node.run("FLUSHDB") == (OK, (FlushAll(),))          # always propagated, as in Redis


@pytest.mark.parametrize("words", [("FOO",), ("ASYNC", "SYNC")])
def test_flushdb_syntax_error(node: Node, words: tuple[str, ...]) -> None:
    assert node.run("FLUSHDB", *words) == (SYNTAX_ERROR, ())


# --- lists ---------------------------------------------------------------------------------


def test_push_order(node: Node) -> None:
    assert node.run("LPUSH", "l", "a", "b", "c") == (3, (PushItems(b"l", (b"a", b"b", b"c"),
                                                                   True),))
    assert node.run("RPUSH", "l", "d", "e") == (5, (PushItems(b"l", (b"d", b"e"), False),))
    assert node.run("LPUSH", "l", "z") == (6, (PushItems(b"l", (b"z",), True),))
    assert node.reply("LRANGE", "l", 0, -1) == [b"z", b"c", b"b", b"a", b"d", b"e"]
    node.run("SET", "s", "v")
    assert node.run("RPUSH", "s", "a") == (WRONGTYPE, ())


def test_push_keeps_the_ttl(node: Node) -> None:
    node.run("RPUSH", "l", "a")
    node.run("PEXPIRE", "l", 100)
    node.run("RPUSH", "l", "b")
    node.run("LPOP", "l")
    assert node.record(b"l") == Record(Kind.LIST, (b"b",), NOW + 100, 4)


def test_lists_are_bounded(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyspace_module, "list_items_max", 3)
    node.run("RPUSH", "l", "a", "b")
    assert node.run("RPUSH", "l", "c", "d") == (LIST_TOO_LONG, ())
    assert node.run("LPUSH", "l", "c") == (3, (PushItems(b"l", (b"c",), True),))


@pytest.mark.parametrize(("start", "stop", "expected"), [
    (0, -1, "abcde"), (0, 0, "a"), (1, 3, "bcd"), (-2, -1, "de"), (-100, 1, "ab"),
    (3, 100, "de"), (5, 10, ""), (3, 2, ""), (-1, -2, ""), (0, -6, ""), (-6, -5, "a"),
    (MIN, MAX, "abcde"),
])
def test_lrange(node: Node, start: int, stop: int, expected: str) -> None:
    node.run("RPUSH", "l", "a", "b", "c", "d", "e")
    assert node.run("LRANGE", "l", start, stop) == ([c.encode() for c in expected], ())


def test_lrange_and_llen_errors(node: Node) -> None:
    assert node.run("LRANGE", "missing", 0, -1) == ([], ())
    assert node.run("LLEN", "missing") == (0, ())
    node.run("SET", "s", "v")
    assert node.run("LRANGE", "s", 0, -1) == (WRONGTYPE, ())
    assert node.run("LRANGE", "s", "x", -1) == (NOT_AN_INTEGER, ())  # indexes come first
    assert node.run("LLEN", "s") == (WRONGTYPE, ())


def test_lpop_and_rpop(node: Node) -> None:
    node.run("RPUSH", "l", "a", "b", "c", "d", "e")
    assert node.run("LPOP", "l") == (b"a", (PopItems(b"l", 1, True),))
    assert node.run("RPOP", "l") == (b"e", (PopItems(b"l", 1, False),))
    assert node.run("RPOP", "l", 2) == ([b"d", b"c"], (PopItems(b"l", 2, False),))
    assert node.run("LPOP", "l", 0) == ([], ())
    assert node.run("LPOP", "l", 10) == ([b"b"], (PopItems(b"l", 1, True),))
    assert node.reply("EXISTS", "l") == 0                     # an emptied list is deleted
    assert node.run("LPOP", "l") == (None, ())
    assert node.run("LPOP", "l", 0) == (None, ())            # Redis's null array
    assert node.run("RPOP", "l", 3) == (None, ())


def test_pop_errors(node: Node) -> None:
    assert node.run("LPOP", "l", -1) == (MUST_BE_POSITIVE, ())
    assert MUST_BE_POSITIVE.text == "ERR value is out of range, must be positive"
    assert node.run("LPOP", "l", "x") == (MUST_BE_POSITIVE, ())
    assert node.run("RPOP", "l", 1, 2) == (wrong_arity("rpop"), ())
    node.run("SET", "s", "v")
    assert node.run("LPOP", "s") == (WRONGTYPE, ())
    assert node.run("LPOP", "s", 0) == (WRONGTYPE, ())


# --- apply, take_changes, expiry, digest ---------------------------------------------------


def _random_session(node: Node, rng: random.Random, steps: int) -> None:
    keys = [b"a", b"b", b"c", b"d"]
    now = NOW
    for _ in range(steps):
        now += rng.choice((0, 1, 5, 50))
        key = rng.choice(keys)
        choice = rng.randrange(10)
        if choice == 0:
            node.run("SET", key, rng.choice((b"1", b"x")), "PX", rng.randrange(1, 100), now=now)
        elif choice == 1:
            node.run("RPUSH", key, b"i", b"j", now=now)
        elif choice == 2:
            node.run("LPOP", key, rng.randrange(3), now=now)
        elif choice == 3:
            node.run("INCR", key, now=now)
        elif choice == 4:
            node.run("PEXPIRE", key, rng.randrange(-5, 100), now=now)
        elif choice == 5:
            node.run("DEL", key, rng.choice(keys), now=now)
        elif choice == 6:
            node.run("PERSIST", key, now=now)
        elif choice == 7:
            expired = node.keyspace.expired_keys(now, 2)
            if expired:
                node.log.append(DeleteKeys(expired))
                node.keyspace.apply(DeleteKeys(expired), len(node.log))
        elif choice == 8:
            node.run("APPEND", key, b"z", now=now)
        elif rng.random() < 0.1:
            node.run("FLUSHDB", now=now)


@pytest.mark.parametrize("seed", range(5))
def test_replaying_the_effects_reproduces_the_state(seed: int) -> None:
    node = Node()
    _random_session(node, random.Random(seed), 400)
    replica = Keyspace({})
    for version, effect in enumerate(node.log, start=1):
        replica.apply(effect, version)
    assert replica._records == node.keyspace._records, f"seed {seed}"
    assert replica.digest(NOW) == node.keyspace.digest(NOW)


@pytest.mark.parametrize("seed", range(5))
def test_take_changes_keeps_storage_equal_to_memory(seed: int) -> None:
    rng = random.Random(seed)
    node = Node()
    storage: dict[bytes, Record] = {}
    for _ in range(40):
        _random_session(node, rng, rng.randrange(1, 30))
        for write in node.keyspace.take_changes():
            if isinstance(write, ClearRecords):
                storage.clear()
            elif isinstance(write, PutRecord):
                storage[write.key] = write.record
            else:
                assert isinstance(write, DeleteRecord)
                storage.pop(write.key, None)
        assert storage == node.keyspace._records, f"seed {seed}"
    # A keyspace rebuilt from storage behaves the same (its indexes are rebuilt too).
    restarted = Keyspace(dict(storage))
    assert restarted.digest(NOW) == node.keyspace.digest(NOW)
    assert restarted.live_count(NOW + 50) == node.keyspace.live_count(NOW + 50)


def test_take_changes_coalesces_in_order_of_first_change(node: Node) -> None:
    node.run("SET", "b", "1")
    node.run("SET", "a", "1")
    for _ in range(5):
        node.run("INCR", "b")
    node.run("SET", "c", "1")
    node.run("DEL", "c")
    assert node.keyspace.take_changes() == [
        PutRecord(b"b", Record(Kind.STRING, b"6", NO_EXPIRY, 7)),
        PutRecord(b"a", Record(Kind.STRING, b"1", NO_EXPIRY, 2)),
        DeleteRecord(b"c"),
    ]
    assert node.keyspace.take_changes() == []


def test_take_changes_after_flushdb_starts_with_clear(node: Node) -> None:
    node.run("SET", "a", "1")
    node.run("SET", "b", "1")
    node.run("FLUSHDB")
    node.run("SET", "c", "1")
    node.run("SET", "d", "1")
    node.run("DEL", "d")
    assert node.keyspace.take_changes() == [
        ClearRecords(), PutRecord(b"c", Record(Kind.STRING, b"1", NO_EXPIRY, 4))]


def test_records_are_immutable_snapshots(node: Node) -> None:
    node.run("RPUSH", "l", "a")
    writes = node.keyspace.take_changes()
    node.run("RPUSH", "l", "b")
    assert writes == [PutRecord(b"l", Record(Kind.LIST, (b"a",), NO_EXPIRY, 1))]


def test_expired_keys_in_expiry_order_without_changing_anything(node: Node) -> None:
    node.run("SET", "c", "v", "PX", 30)
    node.run("SET", "a", "v", "PX", 10)
    node.run("SET", "b", "v", "PX", 10)
    node.run("SET", "d", "v", "PX", 500)
    node.run("SET", "e", "v")
    assert node.keyspace.expired_keys(NOW + 10, 10) == ()      # expiring at now is still alive
    assert node.keyspace.expired_keys(NOW + 11, 10) == (b"a", b"b")
    assert node.keyspace.expired_keys(NOW + 100, 2) == (b"a", b"b")
    assert node.keyspace.expired_keys(NOW + 100, 10) == (b"a", b"b", b"c")
    node.keyspace.apply(DeleteKeys((b"a", b"b")), 99)
    node.run("PERSIST", "c")
    assert node.keyspace.expired_keys(NOW + 1000, 10) == (b"d",)


def test_expiry_heap_stays_bounded_when_ttls_change_often(node: Node) -> None:
    node.run("SET", "k", "v")
    for i in range(5000):
        node.run("PEXPIRE", "k", 1_000_000 + i)
    assert len(node.keyspace._expiry_heap) <= 2 + keyspace_module.expiry_heap_stale_entries_slack
    assert node.keyspace.expired_keys(NOW + 2_000_000, 10) == (b"k",)


def test_records_given_at_start_are_indexed() -> None:
    records = {
        b"s": Record(Kind.STRING, b"v", NOW + 5, 3),
        b"l": Record(Kind.LIST, (b"a", b"b"), NO_EXPIRY, 4),
        b"old": Record(Kind.STRING, b"v", NOW - 5, 1),
    }
    node = Node(records)
    assert node.keyspace.expired_keys(NOW, 10) == (b"old",)
    assert node.keyspace.live_count(NOW) == 2
    assert len(node.keyspace) == 3
    assert node.reply("SCAN", 0) == [b"0", [b"s", b"l"]]
    assert node.reply("LRANGE", "l", 0, -1) == [b"a", b"b"]
    assert node.keyspace.get_record(b"old", NOW) is None


def test_digest_ignores_versions_order_and_dead_keys() -> None:
    first = Node()
    first.run("SET", "a", "1")
    first.run("RPUSH", "l", "x", "y")
    first.run("SET", "gone", "1", "PX", 1)
    second = Node()
    second.run("SET", "junk", "1")
    second.run("DEL", "junk")
    second.run("RPUSH", "l", "x")
    second.run("RPUSH", "l", "y")
    second.run("SET", "a", "1")
    assert first.keyspace.digest(NOW + 2) == second.keyspace.digest(NOW + 2)
    assert first.keyspace.digest(NOW) != second.keyspace.digest(NOW)
    second.run("PEXPIRE", "a", 100)
    assert first.keyspace.digest(NOW + 2) != second.keyspace.digest(NOW + 2)
    # Items are delimited: ("xy",) and ("x", "y") differ.
    third = Node()
    third.run("SET", "a", "1")
    third.run("RPUSH", "l", "xy")
    assert third.keyspace.digest(NOW + 2) != first.keyspace.digest(NOW + 2)
