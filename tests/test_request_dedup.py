"""``CHORUS.ONCE request_id command ...``: exactly-once writes whose table of remembered requests
lives in the replicated data.

From the inside out: the keyspace (a write and the memory of it are one ``Request`` effect; a
retry answers the remembered reply and applies nothing; the table is invisible to data commands,
survives FLUSHDB, snapshots and storage, and expires), the storage and peer encodings of a log
entry that holds a ``Request``, a leader-mode cluster in which the retry reaches a new leader
after a failover, and the standalone core.
"""

from __future__ import annotations

import random

import pytest
from test_core_failover import ELECTION_MS, isolate, leader_of
from test_core_leader import MEMBERS, ready_cluster
from test_keyspace import NOW, Node

from chorusdb.core.api import NO_DEADLINE, ClientCommand, CoreConfig
from chorusdb.core.commands import COMMANDS
from chorusdb.core.divergent import entry_command
from chorusdb.core.keyspace import (
    BAD_REQUEST_ID,
    REQUEST_KEY_PREFIX,
    RESERVED_KEY,
    Keyspace,
    decode_reply,
    encode_reply,
    request_id_bytes_max,
    request_key,
    request_remembered_ms,
)
from chorusdb.core.leader_messages import Append
from chorusdb.core.log_tail import effect_bytes
from chorusdb.core.model import (
    NO_EXPIRY,
    ZERO_POSITION,
    AppendEntry,
    ClearRecords,
    DeleteKeys,
    DeleteRecord,
    FlushAll,
    Kind,
    LogEntry,
    Position,
    PushItems,
    PutRecord,
    Record,
    Request,
    SetValue,
)
from chorusdb.core.standalone import StandaloneCore
from chorusdb.net.protocol import PEER_CODEC
from chorusdb.replies import OK, WRONGTYPE, Error, Simple
from chorusdb.sim.node import effect_keys
from chorusdb.storage.memory_store import MemoryStore
from chorusdb.storage.sqlite_store import SqliteStore

EXPIRES = NOW + request_remembered_ms
R1 = request_key(b"r1")


@pytest.fixture
def node() -> Node:
    """A keyspace driven as a core drives it (this module's, not conftest's server process)."""
    return Node()


def once(node: Node, request_id: str, *words: str, now: int = NOW) -> tuple[object, tuple]:
    return node.run("CHORUS.ONCE", request_id, *words, now=now)


# --- the keyspace ------------------------------------------------------------------------------


def test_the_first_run_applies_the_write_and_remembers_its_reply_in_the_same_effect(node):
    reply, effects = once(node, "r1", "INCR", "counter")
    assert reply == 1
    assert effects == (Request(b"r1", encode_reply(1), EXPIRES,
                               (SetValue(b"counter", b"1", NO_EXPIRY),)),)
    assert node.reply("GET", "counter") == b"1"
    assert node.keyspace.take_changes() == [
        PutRecord(b"counter", Record(Kind.STRING, b"1", NO_EXPIRY, 1)),
        PutRecord(R1, Record(Kind.STRING, encode_reply(1), EXPIRES, 1)),
    ]


def test_a_retry_answers_the_remembered_reply_and_applies_nothing(node):
    once(node, "r1", "INCR", "counter")
    node.keyspace.take_changes()
    assert once(node, "r1", "INCR", "counter", now=EXPIRES) == (1, ())
    assert once(node, "r2", "INCR", "counter") == (
        2, (Request(b"r2", encode_reply(2), EXPIRES, (SetValue(b"counter", b"2", NO_EXPIRY),)),))
    assert node.reply("GET", "counter") == b"2"


WRITE_REPLIES = [      # (commands run first, the wrapped write, its reply)
    ((), ("SET", "k", "v"), OK),
    ((("SET", "k", "old"),), ("SET", "k", "v", "GET"), b"old"),
    ((), ("SET", "k", "v", "GET"), None),
    ((), ("RPUSH", "l", "a", "b"), 2),
    ((("RPUSH", "l", "a", "b", "c"),), ("LPOP", "l"), b"a"),
    ((("RPUSH", "l", "a", "b", "c"),), ("RPOP", "l", "2"), [b"c", b"b"]),
    ((("SET", "k", "v"),), ("GETDEL", "k"), b"v"),
    ((("SET", "a", "1"),), ("DEL", "a", "b"), 1),
    ((), ("MSET", "a", "1", "b", "2"), OK),
    ((("SET", "k", "v"),), ("APPEND", "k", "w"), 2),
]


@pytest.mark.parametrize(("setup", "words", "expected"), WRITE_REPLIES,
                         ids=[" ".join(words) for _, words, _ in WRITE_REPLIES])
def test_every_kind_of_write_reply_is_remembered_as_it_was_answered(node, setup, words,
                                                                    expected):
    for command in setup:
        node.run(*command)
    reply, effects = once(node, "r", *words)
    assert reply == expected and len(effects) == 1
    remembered, again = once(node, "r", *words)
    assert (remembered, type(remembered), again) == (expected, type(expected), ())


def test_reply_encoding_round_trips_every_reply_a_write_gives_and_refuses_the_others():
    for reply in (b"", b"\x00\xff", 0, -(2**63), 2**63 - 1, None, [], [b"a", None, [1, [b"b"]]],
                  OK, Simple("QUEUED"), WRONGTYPE, Error("ERR caf\u00e9")):
        decoded = decode_reply(encode_reply(reply))
        assert decoded == reply and type(decoded) is type(reply)
    for reply in (1.5, True, {b"a": 1}, "text", (b"a",), [b"a", 2.0]):
        with pytest.raises(AssertionError):
            encode_reply(reply)


def test_a_wrapped_command_that_fails_or_changes_nothing_is_not_remembered(node):
    node.run("SET", "counter", "not a number")
    assert once(node, "r1", "INCR", "counter") == (
        Error("ERR value is not an integer or out of range"), ())
    assert once(node, "r2", "DEL", "missing") == (0, ())
    node.run("SET", "counter", "41")
    node.run("SET", "missing", "now here")
    assert once(node, "r1", "INCR", "counter")[0] == 42      # ran again: it changed nothing
    assert once(node, "r2", "DEL", "missing")[0] == 1


@pytest.mark.parametrize(("request_id", "words", "error"), [
    ("", ("INCR", "k"), BAD_REQUEST_ID.text),
    ("x" * (request_id_bytes_max + 1), ("INCR", "k"), BAD_REQUEST_ID.text),
    ("r", ("NOSUCH", "k"), "ERR unknown command 'NOSUCH'"),
    ("r", ("INCR",), "ERR wrong number of arguments for 'incr' command"),
    ("r", ("GET", "k"), "ERR CHORUS.ONCE wraps a data write command"),
    ("r", ("PING",), "ERR CHORUS.ONCE wraps a data write command"),
    ("r", ("CHORUS.ONCE", "r2", "INCR", "k"), "ERR CHORUS.ONCE wraps a data write command"),
    ("r", ("SET", "k" * 70_000, "v"), "ERR key is longer than"),
    ("r", ("SET", REQUEST_KEY_PREFIX.decode("latin-1") + "r", "v"), RESERVED_KEY.text),
])
def test_bad_request_ids_and_wrapped_commands_are_refused_with_nothing_applied(
        node, request_id, words, error):
    encoded = [word.encode("latin-1") for word in ("CHORUS.ONCE", request_id, *words)]
    reply, effects = node.run(*encoded)
    assert isinstance(reply, Error) and reply.text.startswith(error), reply
    assert effects == ()
    assert node.keyspace.items() == []


def test_the_command_documentation_states_how_long_a_request_is_remembered():
    summary = COMMANDS[b"CHORUS.ONCE"].summary
    assert f"for {request_remembered_ms // 60_000} minutes" in summary


def test_the_longest_request_id_and_a_lower_case_wrapped_command_are_accepted(node):
    assert once(node, "x" * request_id_bytes_max, "incr", "k")[0] == 1


@pytest.mark.parametrize("words", [
    ("SET", "{prefix}x", "v"),
    ("MSET", "a", "1", "{prefix}x", "2"),
    ("RPUSH", "{prefix}x", "a"),
    ("INCR", "{prefix}x"),
])
def test_a_write_to_a_key_of_the_request_table_is_refused(node, words):
    prefix = REQUEST_KEY_PREFIX.decode("latin-1")
    encoded = [word.replace("{prefix}", prefix).encode("latin-1") for word in words]
    assert node.run(*encoded) == (RESERVED_KEY, ())


def test_the_table_is_invisible_to_data_commands_counts_and_the_digest(node):
    once(node, "r1", "SET", "k", "v")
    plain = Node()
    plain.run("SET", "k", "v")
    raw_key = R1
    assert node.reply("KEYS", "*") == [b"k"]
    assert node.reply("SCAN", "0") == [b"0", [b"k"]]
    assert node.reply("DBSIZE") == 1
    assert (node.reply("GET", raw_key), node.reply("EXISTS", raw_key)) == (None, 0)
    assert node.reply("TYPE", raw_key) == Simple("none")
    assert node.run("DEL", raw_key) == (0, ())          # nothing there for a data command
    keyspace = node.keyspace
    assert (len(keyspace), keyspace.live_count(NOW), keyspace.expiring_count()) == (1, 1, 0)
    assert keyspace.digest(NOW) == plain.keyspace.digest(NOW)


def test_an_expired_request_runs_again_and_is_reclaimed_like_an_expired_key(node):
    once(node, "r1", "INCR", "counter")
    node.run("SET", "soon", "v", "PX", str(request_remembered_ms - 1))
    node.keyspace.take_changes()
    keyspace = node.keyspace
    assert keyspace.expired_keys(EXPIRES, 10) == (b"soon",)
    assert keyspace.expired_keys(EXPIRES + 1, 10) == (b"soon", R1)   # earliest expiry first
    assert keyspace.expired_keys(EXPIRES + 1, 1) == (b"soon",)
    assert keyspace.expiring_count() == 1                           # user keys only
    assert once(node, "r1", "INCR", "counter", now=EXPIRES + 1)[0] == 2   # forgotten: runs again
    assert keyspace.expired_keys(EXPIRES + 1, 10) == (b"soon",)     # remembered anew
    later = EXPIRES + 1 + request_remembered_ms
    assert keyspace.expired_keys(later + 1, 10) == (b"soon", R1)
    keyspace.take_changes()
    keyspace.apply(DeleteKeys((b"soon", R1)), 9)
    assert keyspace.take_changes() == [DeleteRecord(b"soon"), DeleteRecord(R1)]
    assert keyspace.expired_keys(later + 1, 10) == ()
    assert keyspace.items() == [(b"counter", Record(Kind.STRING, b"2", NO_EXPIRY, 3))]


def test_flushdb_keeps_the_table_and_writes_its_rows_again_after_clearing(node):
    once(node, "r1", "INCR", "counter")
    node.keyspace.take_changes()
    remembered = Record(Kind.STRING, encode_reply(1), EXPIRES, 1)
    node.run("FLUSHDB")
    assert node.keyspace.take_changes() == [ClearRecords(), PutRecord(R1, remembered)]
    assert once(node, "r1", "INCR", "counter") == (1, ())
    assert node.reply("DBSIZE") == 0
    reply, effects = once(node, "r2", "FLUSHDB")                     # FLUSHDB wrapped too
    assert (reply, effects) == (OK, (Request(b"r2", encode_reply(OK), EXPIRES, (FlushAll(),)),))
    assert node.keyspace.take_changes() == [
        ClearRecords(), PutRecord(R1, remembered),
        PutRecord(request_key(b"r2"), Record(Kind.STRING, encode_reply(OK), EXPIRES, 3))]


def test_a_snapshot_of_the_items_seeds_a_keyspace_that_knows_the_requests(node):
    once(node, "r1", "INCR", "counter")
    once(node, "r2", "RPUSH", "list", "a")
    items = node.keyspace.items()
    assert [key for key, _ in items] == [b"counter", b"list", R1, request_key(b"r2")]
    seeded = Node(dict(items))
    assert seeded.keyspace.items() == items
    assert (len(seeded.keyspace), seeded.reply("KEYS", "*")) == (2, [b"counter", b"list"])
    assert once(seeded, "r1", "INCR", "counter") == (1, ())
    assert once(seeded, "r2", "RPUSH", "list", "a") == (1, ())
    assert seeded.keyspace.expired_keys(EXPIRES + 1, 10) == (R1, request_key(b"r2"))


def test_a_push_onto_an_expired_key_keeps_both_of_its_effects_in_one_request(node):
    node.run("RPUSH", "l", "old")
    node.run("PEXPIRE", "l", "10")
    reply, (request,) = once(node, "r1", "RPUSH", "l", "new", now=NOW + 11)
    assert reply == 1
    assert request.effects == (DeleteKeys((b"l",)), PushItems(b"l", (b"new",), False))
    assert node.reply("LRANGE", "l", "0", "-1", now=NOW + 11) == [b"new"]


# --- what reads effects besides the keyspace ---------------------------------------------------


def test_a_divergent_request_is_reapplied_as_the_same_request():
    effects = (SetValue(b"a", b"1", NO_EXPIRY), SetValue(b"b", b"2", NO_EXPIRY))
    assert entry_command(Request(b"r1", encode_reply(OK), EXPIRES, effects)) == ClientCommand(
        b"CHORUS.ONCE", (b"r1", b"MSET", b"a", b"1", b"b", b"2"))
    push = (DeleteKeys((b"l",)), PushItems(b"l", (b"x", b"y"), True))
    assert entry_command(Request(b"r2", encode_reply(2), EXPIRES, push)) == ClientCommand(
        b"CHORUS.ONCE", (b"r2", b"LPUSH", b"l", b"x", b"y"))
    assert entry_command(Request(b"r3", encode_reply(1), EXPIRES, (DeleteKeys((b"k",)),))) == \
        ClientCommand(b"CHORUS.ONCE", (b"r3", b"DEL", b"k"))


def test_a_request_counts_its_keys_and_bytes():
    request = Request(b"r1", b"\x01", EXPIRES, (SetValue(b"k", b"vv", NO_EXPIRY),))
    assert effect_keys(request) == (R1, b"k")
    assert effect_keys(Request(b"r1", b"\x01", EXPIRES, (FlushAll(),))) is None
    assert effect_bytes(request) > effect_bytes(SetValue(b"k", b"vv", NO_EXPIRY)) + 3


# --- storage and the peer protocol -------------------------------------------------------------


REQUEST_ENTRY = LogEntry(Position(2, 1), Request(
    b"r1", encode_reply([b"a", None]), EXPIRES,
    (DeleteKeys((b"l",)), PushItems(b"l", (b"a",), False), SetValue(b"k", b"\xff", EXPIRES))))


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_both_stores_keep_a_log_entry_that_holds_a_request_and_its_table_row(kind, tmp_path):
    store = SqliteStore(tmp_path) if kind == "sqlite" else MemoryStore()
    store.recover()
    row = Record(Kind.STRING, REQUEST_ENTRY.effect.reply, EXPIRES, 1)
    store.commit([AppendEntry(REQUEST_ENTRY), PutRecord(R1, row)])
    store.close()
    if kind == "sqlite":
        store = SqliteStore(tmp_path)
    state = store.recover()
    assert state.log == (REQUEST_ENTRY,)
    assert store.read_log(0, 10) == [REQUEST_ENTRY]
    assert state.records == {R1: row}
    assert Keyspace(dict(state.records)).items() == [(R1, row)]
    store.close()


def test_a_request_travels_between_peers_unchanged():
    append = Append("n1", "n2", 2, ZERO_POSITION, (REQUEST_ENTRY,), ZERO_POSITION,
                    ZERO_POSITION, NOW)
    assert PEER_CODEC.decode(PEER_CODEC.encode(append)) == append


# --- the cores ---------------------------------------------------------------------------------


def test_a_retry_after_a_failover_answers_the_same_reply_and_applies_nothing():
    cluster = ready_cluster()
    cluster.propose("n1", 1, "CHORUS.ONCE", "r1", "INCR", "counter")
    cluster.run()
    assert cluster.replies[1] == 1
    written = cluster.positions[1]
    assert type(cluster.cores["n1"].log.entry(written.index).effect) is Request
    cluster.settle()
    isolate(cluster, "n1")                  # the client lost the reply and retries elsewhere
    cluster.advance_time(ELECTION_MS + 200)
    new = leader_of(cluster, ("n2", "n3"))
    cluster.propose(new, 2, "CHORUS.ONCE", "r1", "INCR", "counter")
    cluster.propose(new, 3, "GET", "counter")
    cluster.advance_time(1)                 # answered like a read: once the leader is confirmed
    assert (cluster.replies[2], cluster.positions[2], cluster.replies[3]) == (1, None, b"1")
    cluster.cut = set()
    cluster.settle()
    follower = "n1" if new != "n1" else "n2"
    cluster.propose(follower, 4, "CHORUS.ONCE", "r1", "INCR", "counter")   # forwarded
    cluster.propose(follower, 5, "CHORUS.ONCE", "r2", "INCR", "counter")
    cluster.run()
    cluster.settle()
    assert (cluster.replies[4], cluster.replies[5]) == (1, 2)
    for member in MEMBERS:
        records = cluster.stores[member].recover().records
        assert records[b"counter"].value == b"2"
        assert records[R1].value == encode_reply(1)


def test_a_follower_seeded_from_a_snapshot_knows_the_requests():
    cluster = ready_cluster(write_quorum=2, log_retention_entries=2, log_hold_entries_max=2)
    cluster.cut = {("n1", "n3"), ("n3", "n1")}
    cluster.propose("n1", 1, "CHORUS.ONCE", "r1", "INCR", "counter")
    cluster.run()
    for i in range(10):
        cluster.propose("n1", 10 + i, "SET", f"k{i}", str(i))
        cluster.run()
    cluster.advance_time(1000)                  # retention: n3 can only catch up by snapshot
    cluster.cut = set()
    cluster.settle()
    cluster.advance_time(cluster.settings.append_resend_ms)
    cluster.settle()
    follower = cluster.cores["n3"]
    assert follower.counters["snapshots_installed"] == 1
    command = ClientCommand(b"CHORUS.ONCE", (b"r1", b"INCR", b"counter"))
    assert follower.keyspace.execute(command, cluster.now) == (1, ())
    assert cluster.stores["n3"].recover().records[R1].value == encode_reply(1)


def test_the_standalone_core_remembers_requests_across_a_restart():
    store = MemoryStore()
    core = StandaloneCore(CoreConfig("n1", ("n1",)), store.recover(), random.Random(1), NOW)
    command = ClientCommand(b"CHORUS.ONCE", (b"r1", b"INCR", b"counter"))
    core.propose(command, 1, NOW)
    core.propose(command, 2, NOW)
    ready = core.ready()
    entries = [write.entry for write in ready.writes if type(write) is AppendEntry]
    assert [type(entry.effect) for entry in entries] == [Request]
    assert [(reply.request_id, reply.value) for reply in ready.replies] == [(1, 1), (2, 1)]
    store.commit(ready.writes)
    core.advance(ready)
    restarted = StandaloneCore(CoreConfig("n1", ("n1",)), store.recover(), random.Random(1), NOW)
    restarted.propose(command, 3, NOW + 1)
    ready = restarted.ready()
    assert [(reply.request_id, reply.value) for reply in ready.replies] == [(3, 1)]
    assert not any(type(write) is AppendEntry for write in ready.writes)
    assert restarted.status()["keys"] == 1



def test_a_standalone_core_reclaims_requests_when_no_key_is_left():
    core = StandaloneCore(CoreConfig("n1", ("n1",)), MemoryStore().recover(), random.Random(1),
                          NOW)
    core.propose(ClientCommand(b"CHORUS.ONCE", (b"r1", b"SET", b"k", b"v")), 1, NOW)
    core.propose(ClientCommand(b"DEL", (b"k",)), 2, NOW)
    ready = core.ready()
    core.advance(ready)
    assert core.status()["keys"] == 0
    assert ready.deadline_ms != NO_DEADLINE         # the expiry cycle still runs for r1
    core.tick(EXPIRES + 1)
    ready = core.ready()
    deleted = [write.entry.effect for write in ready.writes if type(write) is AppendEntry]
    assert deleted == [DeleteKeys((R1,))]
