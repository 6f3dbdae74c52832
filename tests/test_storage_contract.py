"""The ``Store`` contract (storage/base.py), run against both stores: SQLite and in-memory.

Every test gets a ``harness`` that opens a store and reopens it the way its kind is reopened (a
new ``SqliteStore`` on the same directory; the same ``MemoryStore`` after ``close``), so "after a
restart" means the same thing for both. SQLite-only tests at the end corrupt the file with a raw
connection and check that the store reports it.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorusdb.core.model import (
    NO_EXPIRY,
    ZERO_POSITION,
    AppendEntry,
    ClearRecords,
    CounterChanged,
    DeleteKeys,
    DeleteRecord,
    DivergentEntry,
    EpochStart,
    EventsAppended,
    FlushAll,
    Kind,
    LogEntry,
    PopItems,
    Position,
    PushItems,
    PutDivergent,
    PutMeta,
    PutRecord,
    Record,
    RecoveredState,
    ResetLog,
    SetExpiry,
    SetValue,
    TrimLogBefore,
    TruncateLogAfter,
    VersionWritten,
    Write,
)
from chorusdb.core.causal import CounterValue, Hlc, Version, VersionedValue, VersionVector
from chorusdb.core.multileader_keyspace import Event, ReplicatedValue
from chorusdb.storage import base
from chorusdb.storage.base import LogCompacted, Snapshot, Store
from chorusdb.storage.encoding import CorruptRecord
from chorusdb.storage.memory_store import MemoryStore
from chorusdb.storage.sqlite_store import SchemaMismatch, SqliteStore, store_file_name


class SqliteHarness:
    """Folds the data journal every third row, so the contract holds with keys in the journal,
    in ``data`` and split between them."""

    fold_rows = 3

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open(self, durability: str = "fsync") -> Store:
        return SqliteStore(self.directory, durability=durability, fold_rows=self.fold_rows)

    def reopen(self, store: Store) -> Store:
        store.close()
        return SqliteStore(self.directory, durability=store.durability, fold_rows=self.fold_rows)


class MemoryHarness:
    def open(self, durability: str = "fsync") -> Store:
        return MemoryStore(durability=durability)

    def reopen(self, store: Store) -> Store:
        store.close()
        return store


@pytest.fixture(params=["sqlite", "memory"])
def harness(request, tmp_path):
    return SqliteHarness(tmp_path) if request.param == "sqlite" else MemoryHarness()


def string(value: bytes, version: int, expire_at_ms: int = NO_EXPIRY) -> Record:
    return Record(Kind.STRING, value, expire_at_ms, version)


def set_key(index: int, key: bytes, value: bytes, *, epoch: int = 1) -> list[Write]:
    """What a SET at log position ``(epoch, index)`` writes: the row and its log entry."""
    return [PutRecord(key, string(value, index)),
            AppendEntry(LogEntry(Position(epoch, index), SetValue(key, value, NO_EXPIRY)))]


def commit_sets(store: Store, first: int, last: int, *, epoch: int = 1) -> None:
    for index in range(first, last + 1):
        store.commit(set_key(index, b"k%d" % index, b"v%d" % index, epoch=epoch))


def indexes(entries: Sequence[LogEntry]) -> list[int]:
    return [entry.position.index for entry in entries]


def restored(state: RecoveredState) -> RecoveredState:
    """``state`` as a restore of a snapshot taken in it recovers it: the log is empty."""
    return dataclasses.replace(state, log=())


# --- round trips ------------------------------------------------------------------------------


def test_a_fresh_store_is_empty(harness):
    store = harness.open()
    state = store.recover()
    assert (state.records, state.meta, state.last_position, state.log) == (
        {}, {}, ZERO_POSITION, ())
    assert store.log_bounds() == (1, 0)
    assert store.read_log(0, 10) == []
    store.close()


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_committed_writes_come_back_after_reopen(harness, durability):
    store = harness.open(durability)
    store.recover()
    entries = [
        LogEntry(Position(1, 1), SetValue(b"s", b"\x00bin\xff", 1_700_000_000_000)),
        LogEntry(Position(1, 2), PushItems(b"l", (b"a", b"", b"c"), left=False)),
        LogEntry(Position(2, 3), PopItems(b"l", 1, left=True)),
        LogEntry(Position(2, 4), SetExpiry(b"s", NO_EXPIRY)),
        LogEntry(Position(2, 5), DeleteKeys((b"gone", b"also"))),
        LogEntry(Position(3, 6), FlushAll()),
        LogEntry(Position(4, 7), EpochStart("n2")),
    ]
    records = {
        b"s": string(b"\x00bin\xff", 4),
        b"l": Record(Kind.LIST, (b"", b"c"), 1_700_000_000_500, 3),
        b"": string(b"", 6),
        b"empty list": Record(Kind.LIST, (), NO_EXPIRY, 6),
    }
    meta = {"epoch": 3, "vote": "n2", "identity": b"\x00\x01", "big": 2**62, "blank": ""}
    store.commit([PutRecord(key, record) for key, record in records.items()]
                 + [AppendEntry(entry) for entry in entries]
                 + [PutMeta(name, value) for name, value in meta.items()])
    assert (store.commits_total, store.writes_total) == (1, len(records) + len(entries) + len(meta))

    store = harness.reopen(store)
    state = store.recover()
    assert state.records == records
    assert {key: type(record.kind) for key, record in state.records.items()} == dict.fromkeys(
        records, Kind)
    assert state.meta == meta
    assert {name: type(value) for name, value in state.meta.items()} == {
        name: type(value) for name, value in meta.items()}
    assert state.last_position == Position(4, 7)
    assert state.log == tuple(entries)
    assert store.read_log(0, 10) == entries
    assert store.log_bounds() == (1, 7)
    store.close()


def test_commits_continue_after_reopen(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 3)
    store = harness.reopen(store)
    assert store.recover().last_position == Position(1, 3)
    commit_sets(store, 4, 5)
    store = harness.reopen(store)
    state = store.recover()
    assert sorted(state.records) == [b"k1", b"k2", b"k3", b"k4", b"k5"]
    assert indexes(store.read_log(0, 10)) == [1, 2, 3, 4, 5]
    store.close()


# --- order and atomicity ----------------------------------------------------------------------


def test_writes_apply_in_order_inside_a_batch(harness):
    store = harness.open()
    store.recover()
    store.commit([
        PutRecord(b"put-then-delete", string(b"1", 1)), DeleteRecord(b"put-then-delete"),
        DeleteRecord(b"delete-then-put"), PutRecord(b"delete-then-put", string(b"2", 1)),
        PutRecord(b"put-twice", string(b"first", 1)), PutRecord(b"put-twice", string(b"last", 1)),
        DeleteRecord(b"never-there"),
        PutMeta("name", "first"), PutMeta("name", "last"),
        AppendEntry(LogEntry(Position(1, 1), SetValue(b"put-twice", b"last", NO_EXPIRY))),
    ])
    store = harness.reopen(store)
    state = store.recover()
    assert state.records == {b"delete-then-put": string(b"2", 1), b"put-twice": string(b"last", 1)}
    assert state.meta == {"name": "last"}
    store.close()


def test_clear_records_removes_every_row_written_before_it(harness):
    store = harness.open()
    store.recover()
    store.commit(set_key(1, b"a", b"1") + [PutMeta("kept", 1)])
    store.commit(set_key(2, b"b", b"2") + [
        ClearRecords(), PutRecord(b"c", string(b"3", 3)), DeleteRecord(b"a"),
        AppendEntry(LogEntry(Position(1, 3), FlushAll())),
    ])
    store = harness.reopen(store)
    state = store.recover()
    assert state.records == {b"c": string(b"3", 3)}
    assert state.meta == {"kept": 1}
    assert indexes(store.read_log(0, 10)) == [1, 2, 3]
    store.close()


@pytest.mark.parametrize("bad", [object(), "a string", Position(1, 2),
                                 PutRecord(b"k", Record(Kind.STRING, ("a tuple",), 0, 1)),
                                 PutRecord("a str key", string(b"v", 1)),
                                 PutMeta("float", 1.5), PutMeta("huge", 2**63),
                                 PutMeta("bool", True), TrimLogBefore(-1), TrimLogBefore(2**63),
                                 TrimLogBefore(1.0), TrimLogBefore(True), ResetLog((1, 2)),
                                 ResetLog(Position(-1, 2)), ResetLog(Position(1, -2)),
                                 ResetLog(Position(1, 2**63))],
                         ids=["object", "str", "position", "wrong-kind", "str-key", "float-meta",
                              "huge-meta", "bool-meta", "negative-trim", "huge-trim", "float-trim",
                              "bool-trim", "tuple-reset", "negative-epoch-reset",
                              "negative-index-reset", "huge-reset"])
def test_a_batch_with_a_malformed_write_leaves_nothing(harness, bad):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 1)
    with pytest.raises(TypeError):
        store.commit(set_key(2, b"x", b"2") + [bad] + set_key(3, b"y", b"3"))
    with pytest.raises(TypeError):
        store.commit_many([set_key(2, b"x", b"2"), [PutMeta("m", 1), bad]])
    assert (store.commits_total, store.writes_total) == (1, 2)
    commit_sets(store, 2, 2)                       # still usable, and index 2 was never taken
    store = harness.reopen(store)
    state = store.recover()
    assert sorted(state.records) == [b"k1", b"k2"]
    assert state.meta == {}
    assert state.last_position == Position(1, 2)
    assert indexes(store.read_log(0, 10)) == [1, 2]
    store.close()


@pytest.mark.parametrize("position", [Position(1, 2), Position(1, 1), Position(0, 4)],
                         ids=["repeated-index", "older-index", "older-epoch"])
def test_a_log_entry_that_does_not_follow_the_last_is_refused(harness, position):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 2)
    with pytest.raises(ValueError):
        store.commit([PutRecord(b"x", string(b"x", 3)),
                      AppendEntry(LogEntry(position, SetValue(b"x", b"x", NO_EXPIRY)))])
    with pytest.raises(ValueError):                # the same, across the batches of a group
        store.commit_many([set_key(3, b"x", b"3"), set_key(3, b"y", b"3")])
    store = harness.reopen(store)
    state = store.recover()
    assert sorted(state.records) == [b"k1", b"k2"]
    assert state.last_position == Position(1, 2)
    store.close()


def test_commit_many_is_one_transaction_in_order(harness):
    store = harness.open()
    store.recover()
    store.commit_many([set_key(1, b"a", b"1"), [DeleteRecord(b"a")], set_key(2, b"b", b"2"), []])
    assert (store.commits_total, store.writes_total) == (1, 5)
    store.commit_many([[], []])                    # nothing to write: no transaction
    assert store.commits_total == 1
    store = harness.reopen(store)
    state = store.recover()
    assert state.records == {b"b": string(b"2", 2)}
    assert indexes(store.read_log(0, 10)) == [1, 2]
    store.close()


# --- the log ----------------------------------------------------------------------------------


def test_log_reads_respect_after_index_and_limit(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 25)
    assert indexes(store.read_log(0, 10)) == list(range(1, 11))
    assert indexes(store.read_log(10, 100)) == list(range(11, 26))
    assert indexes(store.read_log(24, 10)) == [25]
    assert store.read_log(25, 10) == []
    assert store.read_log(99, 10) == []
    assert store.log_bounds() == (1, 25)
    entry = store.read_log(6, 1)[0]
    assert entry == LogEntry(Position(1, 7), SetValue(b"k7", b"v7", NO_EXPIRY))
    store.close()


def test_log_positions_may_skip_indexes_and_change_epochs(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 2, epoch=1)
    commit_sets(store, 5, 6, epoch=4)
    assert indexes(store.read_log(0, 10)) == [1, 2, 5, 6]
    assert indexes(store.read_log(2, 10)) == [5, 6]
    assert indexes(store.read_log(3, 1)) == [5]
    assert store.log_bounds() == (1, 6)
    assert store.truncate_log_before(4) == 2
    assert store.log_bounds() == (5, 6)
    store = harness.reopen(store)
    assert store.recover().last_position == Position(4, 6)
    store.close()


def test_retention_removes_a_prefix_and_the_last_position_survives_it(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 25)
    assert store.truncate_log_before(11) == 10
    assert store.truncate_log_before(11) == 0
    assert store.truncate_log_before(3) == 0
    assert store.log_bounds() == (11, 25)
    assert indexes(store.read_log(10, 3)) == [11, 12, 13]
    with pytest.raises(LogCompacted) as compacted:
        store.read_log(9, 3)
    assert compacted.value.first_index == 11

    store = harness.reopen(store)
    state = store.recover()
    assert store.log_bounds() == (11, 25)
    assert len(state.records) == 25                # retention never touches the data

    assert store.truncate_log_before(26) == 15     # everything
    assert store.log_bounds() == (26, 25)
    assert store.read_log(25, 5) == []
    store = harness.reopen(store)
    assert store.recover().last_position == Position(1, 25)
    assert store.log_bounds() == (26, 25)
    commit_sets(store, 26, 26)
    assert store.log_bounds() == (26, 26)
    with pytest.raises(ValueError):                # beyond the last entry: a caller's bug
        store.truncate_log_before(28)
    store.close()


# --- trims and resets as writes ---------------------------------------------------------------


def check_log(store: Store, harness, expected_indexes: list[int], last: Position) -> Store:
    """The log holds ``expected_indexes`` and ends at ``last``, before and after a restart, by
    every way of reading it; returns the reopened store."""
    for attempt in ("running", "reopened"):
        state = store.recover()
        assert (indexes(state.log), state.last_position) == (expected_indexes, last), attempt
        first = expected_indexes[0] if expected_indexes else last.index + 1
        assert store.log_bounds() == (first, last.index), attempt
        assert store.read_log(first - 1, 100) == list(state.log), attempt
        if first > 1:
            with pytest.raises(LogCompacted):
                store.read_log(first - 2, 100)
        if attempt == "running":
            store = harness.reopen(store)
    return store


def test_a_trim_removes_a_prefix_and_keeps_the_last_position_even_when_the_log_empties(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 10)
    store.commit([TrimLogBefore(4)])
    store = check_log(store, harness, list(range(4, 11)), Position(1, 10))
    store.commit([TrimLogBefore(2), TrimLogBefore(4)])     # nothing below them is left
    store.commit([TrimLogBefore(11)])
    store = check_log(store, harness, [], Position(1, 10))
    assert len(store.recover().records) == 10              # the data stays
    store.commit([TrimLogBefore(11)])                      # on an empty log too
    commit_sets(store, 11, 11)
    store = check_log(store, harness, [11], Position(1, 11))
    store.close()


def test_a_reset_empties_the_log_at_its_position_with_the_rows_of_its_batch(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 5)
    store.commit([PutMeta("epoch", 3), ClearRecords(), PutRecord(b"s", string(b"snap", 17)),
                  ResetLog(Position(3, 20))])
    store = check_log(store, harness, [], Position(3, 20))
    state = store.recover()
    assert (state.records, state.meta) == ({b"s": string(b"snap", 17)}, {"epoch": 3})
    commit_sets(store, 21, 22, epoch=3)                    # the log goes on from the reset
    store = check_log(store, harness, [21, 22], Position(3, 22))
    store.close()


def test_a_reset_may_move_the_last_position_back(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 10)
    store.commit([ResetLog(Position(2, 4))])
    store = check_log(store, harness, [], Position(2, 4))
    with pytest.raises(ValueError):                        # older epoch than the reset
        store.commit(set_key(5, b"k", b"v", epoch=1))
    commit_sets(store, 5, 6, epoch=2)
    store = check_log(store, harness, [5, 6], Position(2, 6))
    assert store.read_log(4, 1) == [LogEntry(Position(2, 5), SetValue(b"k5", b"v5", NO_EXPIRY))]
    store.close()


def test_appends_after_a_reset_in_the_same_batch_and_group_follow_it(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 10)
    # Entries appended before the reset go with the rest of the log.
    store.commit(set_key(11, b"a", b"1") + [ResetLog(Position(2, 7))] + set_key(8, b"b", b"2",
                                                                              epoch=2))
    store = check_log(store, harness, [8], Position(2, 8))
    commits = store.commits_total
    store.commit_many([set_key(9, b"c", b"3", epoch=2), [ResetLog(Position(3, 30))],
                       set_key(31, b"d", b"4", epoch=3) + set_key(32, b"e", b"5", epoch=3)])
    assert store.commits_total == commits + 1              # one group commit
    store = check_log(store, harness, [31, 32], Position(3, 32))
    assert store.recover().records.keys() == {b"a", b"b", b"c", b"d", b"e"} | {
        b"k%d" % index for index in range(1, 11)}
    store.close()


def test_a_trim_in_a_batch_applies_in_order_with_its_appends(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 5)
    store.commit([TrimLogBefore(6)] + set_key(6, b"a", b"6"))         # empties, then appends
    store = check_log(store, harness, [6], Position(1, 6))
    store.commit(set_key(7, b"b", b"7") + set_key(8, b"c", b"8") + [TrimLogBefore(8)]
                 + set_key(9, b"d", b"9"))                             # removes 6 and 7
    store = check_log(store, harness, [8, 9], Position(1, 9))
    store.commit_many([set_key(10, b"e", b"10"), [TrimLogBefore(11)]])  # everything
    store = check_log(store, harness, [], Position(1, 10))
    assert store.recover().records.keys() == {b"k1", b"k2", b"k3", b"k4", b"k5", b"a", b"b",
                                              b"c", b"d", b"e"}
    store.close()


@pytest.mark.parametrize("writes", [
    [TrimLogBefore(12)],
    [TrimLogBefore(11), TrimLogBefore(12)],
    [ResetLog(Position(2, 4)), TrimLogBefore(6)],
    [ResetLog(Position(2, 4))] + set_key(4, b"x", b"x", epoch=2),
    [ResetLog(Position(2, 4))] + set_key(5, b"x", b"x", epoch=1),
], ids=["trim-beyond-the-end", "trim-beyond-in-a-batch", "trim-beyond-a-reset",
        "append-at-the-reset", "append-older-epoch-than-the-reset"])
def test_log_writes_that_do_not_fit_the_log_are_refused_with_nothing_applied(harness, writes):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 10)
    with pytest.raises(ValueError):
        store.commit([PutMeta("m", 1), ClearRecords()] + writes)
    with pytest.raises(ValueError):
        store.commit_many([[TrimLogBefore(5)], writes])
    assert (store.commits_total, store.writes_total) == (10, 20)
    store = check_log(store, harness, list(range(1, 11)), Position(1, 10))
    state = store.recover()
    assert (len(state.records), state.meta) == (10, {})
    store.close()


def test_recover_returns_at_most_the_newest_entries_of_its_bound(harness, monkeypatch):
    monkeypatch.setattr(base, "recover_log_entries_max", 3)
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 2)
    store = harness.reopen(store)
    assert indexes(store.recover().log) == [1, 2]
    commit_sets(store, 3, 8)
    store = harness.reopen(store)
    state = store.recover()
    assert indexes(state.log) == [6, 7, 8]
    assert state.log == tuple(store.read_log(5, 10))
    assert store.log_bounds() == (1, 8)                    # the bound limits reading, not the log
    store.close()


# --- snapshots --------------------------------------------------------------------------------


def test_restore_brings_back_the_snapshot_data_meta_and_position(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 4)
    store.commit(set_key(5, b"list", b"") + [
        PutRecord(b"list", Record(Kind.LIST, (b"x", b"y"), 123, 5)), PutMeta("epoch", 1),
        PutMeta("vote", "n1")])
    snapshot = store.snapshot()
    assert snapshot.position == Position(1, 5)
    at_snapshot = store.recover()

    commit_sets(store, 6, 8, epoch=2)
    store.commit([DeleteRecord(b"k1"), ClearRecords(), PutMeta("epoch", 2), PutMeta("new", b"x"),
                  AppendEntry(LogEntry(Position(2, 9), FlushAll()))])
    store.truncate_log_before(3)

    store.restore(snapshot)
    assert store.recover() == restored(at_snapshot)
    assert store.log_bounds() == (6, 5)
    assert store.read_log(5, 10) == []
    commit_sets(store, 6, 6, epoch=3)              # the log goes on from the snapshot
    store = harness.reopen(store)
    state = store.recover()
    assert state.last_position == Position(3, 6)
    assert state.meta == at_snapshot.meta
    assert set(state.records) == set(at_snapshot.records) | {b"k6"}
    assert indexes(store.read_log(5, 10)) == [6]
    store.close()


def test_restore_replaces_a_store_that_is_further_ahead_or_fresh(harness):
    source = harness.open()
    source.recover()
    commit_sets(source, 1, 3)
    snapshot = source.snapshot()
    expected = source.recover()
    commit_sets(source, 4, 9)
    source.restore(snapshot)
    assert source.recover() == restored(expected)
    source.restore(snapshot)                       # the same snapshot restores twice
    assert source.recover() == restored(expected)
    source.close()


def test_a_snapshot_that_does_not_match_its_position_is_refused(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 3)
    snapshot = store.snapshot()
    commit_sets(store, 4, 4)
    with pytest.raises(CorruptRecord):
        store.restore(Snapshot(Position(1, 2), snapshot.image))
    state = store.recover()                        # nothing changed
    assert state.last_position == Position(1, 4)
    assert len(state.records) == 4
    store.close()


# --- against a reference model ----------------------------------------------------------------

KEYS = [b"a", b"b", b"c"]
write_strategy = st.one_of(
    st.builds(lambda key, value: ("put", key, value), st.sampled_from(KEYS), st.binary(max_size=8)),
    st.builds(lambda key, items: ("push", key, items), st.sampled_from(KEYS),
              st.lists(st.binary(max_size=4), max_size=3).map(tuple)),
    st.builds(lambda key: ("delete", key), st.sampled_from(KEYS)),
    st.just(("clear",)),
    st.builds(lambda name, value: ("meta", name, value), st.sampled_from(["x", "y"]),
              st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=4),
                        st.binary(max_size=4))),
    st.just(("append",)),
    st.builds(lambda back: ("trim", back), st.integers(0, 3)),
    st.builds(lambda back: ("reset", back), st.integers(-3, 3)),
    st.builds(lambda back: ("truncate", back), st.integers(0, 3)),
    st.builds(lambda entry_id, verified, resolution: ("divergent", entry_id, verified, resolution),
              st.integers(0, 3), st.booleans(), st.sampled_from(["", "reapplied", "discarded"])),
)
history_strategy = st.lists(st.lists(st.lists(write_strategy, max_size=4), min_size=1, max_size=3),
                            max_size=6)


class Reference:
    """What a store must hold after the writes made by ``writes_for``: the obvious model."""

    def __init__(self) -> None:
        self.records: dict[bytes, Record] = {}
        self.meta: dict[str, int | str | bytes] = {}
        self.log: list[LogEntry] = []
        self.base = ZERO_POSITION
        self.last = ZERO_POSITION
        self.divergent: dict[int, DivergentEntry] = {}

    def writes_for(self, plan: list[tuple]) -> list[Write]:
        """The writes of ``plan`` and a closing log entry, applied here as they are made. Log
        entries go at the next index; a trim keeps the last ``back`` entries' indexes; a reset
        moves the last index ``back`` (forward when negative); a truncation removes the last
        ``back`` entries (fewer if the log holds fewer); a divergent row quarantines an entry
        at the next index under an id of its own, replacing the row of that id."""
        writes: list[Write] = []
        for step in [*plan, ("append",)]:
            version = self.last.index + 1
            if step[0] == "put":
                writes.append(PutRecord(step[1], string(step[2], version)))
                self.records[step[1]] = writes[-1].record
            elif step[0] == "push":
                writes.append(PutRecord(step[1], Record(Kind.LIST, step[2], NO_EXPIRY, version)))
                self.records[step[1]] = writes[-1].record
            elif step[0] == "delete":
                writes.append(DeleteRecord(step[1]))
                self.records.pop(step[1], None)
            elif step[0] == "clear":
                writes.append(ClearRecords())
                self.records.clear()
            elif step[0] == "meta":
                writes.append(PutMeta(step[1], step[2]))
                self.meta[step[1]] = step[2]
            elif step[0] == "append":
                self.last = Position(1, version)
                self.log.append(LogEntry(self.last, FlushAll()))
                writes.append(AppendEntry(self.log[-1]))
            elif step[0] == "trim":
                index = max(0, version - step[1])
                writes.append(TrimLogBefore(index))
                removed = [entry for entry in self.log if entry.position.index < index]
                if removed:
                    self.base = removed[-1].position
                self.log = self.log[len(removed):]
            elif step[0] == "reset":
                self.base = self.last = Position(1, max(0, self.last.index - step[1]))
                writes.append(ResetLog(self.last))
                self.log = []
            elif step[0] == "truncate":
                self.log = self.log[:max(0, len(self.log) - step[1])]
                self.last = self.log[-1].position if self.log else self.base
                writes.append(TruncateLogAfter(self.last))
            else:
                _, entry_id, verified, resolution = step
                item = DivergentEntry(entry_id, LogEntry(Position(1, version), EpochStart("n1")),
                                      "n1", version, "n2", verified, resolution, "admin",
                                      version if resolution else 0)
                writes.append(PutDivergent(item))
                self.divergent[entry_id] = item
        return writes


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@settings(max_examples=60, derandomize=True, deadline=None)
@given(history=history_strategy)
def test_groups_of_batches_match_a_reference_model(kind, history, tmp_path_factory):
    harness = (SqliteHarness(tmp_path_factory.mktemp("store")) if kind == "sqlite"
               else MemoryHarness())
    store = harness.open("os")
    store.recover()
    reference = Reference()
    for group in history:
        store.commit_many([reference.writes_for(plan) for plan in group])
    store = harness.reopen(store)
    state = store.recover()
    assert state.records == reference.records
    assert state.meta == reference.meta
    assert state.last_position == reference.last
    assert state.log == tuple(reference.log)
    assert state.divergent == tuple(item for _, item in sorted(reference.divergent.items()))
    first = reference.log[0].position.index if reference.log else reference.last.index + 1
    assert store.log_bounds() == (first, reference.last.index)
    assert store.read_log(first - 1, 100) == reference.log
    store.close()


# --- SQLite only --------------------------------------------------------------------------------


def raw_connection(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(directory / store_file_name, isolation_level=None)


def flip_a_bit_of_entry(directory: Path, index: int) -> None:
    raw = raw_connection(directory)
    (entry,) = raw.execute("SELECT entry FROM log WHERE idx = ?", (index,)).fetchone()
    flipped = entry[:-1] + bytes((entry[-1] ^ 0x01,))
    raw.execute("UPDATE log SET entry = ? WHERE idx = ?", (flipped, index))
    raw.close()


def test_sqlite_reports_a_corrupted_log_entry(tmp_path):
    store = SqliteStore(tmp_path)
    commit_sets(store, 1, 5)
    flip_a_bit_of_entry(tmp_path, 3)
    assert indexes(store.read_log(0, 2)) == [1, 2]
    with pytest.raises(CorruptRecord, match="1:3"):
        store.read_log(0, 10)
    with pytest.raises(CorruptRecord, match="1:3"):
        store.recover()
    store.close()


def test_sqlite_recover_checks_every_entry_of_the_tail_it_returns(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "recover_log_entries_max", 3)
    store = SqliteStore(tmp_path)
    commit_sets(store, 1, 5)
    flip_a_bit_of_entry(tmp_path, 3)               # the oldest entry of the tail
    with pytest.raises(CorruptRecord, match="1:3"):
        store.recover()
    monkeypatch.setattr(base, "recover_log_entries_max", 2)
    assert indexes(store.recover().log) == [4, 5]  # beyond the tail: read (and checked) later
    with pytest.raises(CorruptRecord, match="1:3"):
        store.read_log(2, 1)
    store.close()


def test_sqlite_reports_an_entry_stored_under_another_position(tmp_path):
    store = SqliteStore(tmp_path)
    commit_sets(store, 1, 2)
    raw = raw_connection(tmp_path)
    (entry, crc) = raw.execute("SELECT entry, crc FROM log WHERE idx = 1").fetchone()
    raw.execute("UPDATE log SET entry = ?, crc = ? WHERE idx = 2", (entry, crc))
    raw.close()
    with pytest.raises(CorruptRecord, match="1:2"):
        store.read_log(1, 1)
    store.close()


def test_sqlite_rolls_back_a_transaction_that_fails_half_way(tmp_path):
    store = SqliteStore(tmp_path)
    commit_sets(store, 1, 1)
    raw = raw_connection(tmp_path)
    raw.execute("CREATE TRIGGER refuse_index_3 BEFORE INSERT ON log WHEN NEW.idx = 3 "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    raw.close()
    with pytest.raises(sqlite3.DatabaseError, match="injected failure"):
        store.commit_many([set_key(2, b"a", b"2") + [PutMeta("m", 1)],
                           set_key(3, b"b", b"3") + [ClearRecords()]])
    assert store.log_bounds() == (1, 1)
    commit_sets(store, 2, 2)
    store = SqliteStore(tmp_path)
    state = store.recover()
    assert sorted(state.records) == [b"k1", b"k2"]
    assert state.meta == {}
    assert state.last_position == Position(1, 2)
    store.close()


def test_sqlite_snapshot_seeds_a_store_in_another_directory(tmp_path):
    leader = SqliteStore(tmp_path / "leader")
    commit_sets(leader, 1, 50)
    leader.commit([PutMeta("cluster", "demo")])
    snapshot = leader.snapshot()
    expected = leader.recover()
    leader.close()
    assert snapshot.image.parent == tmp_path / "leader" / "snapshots"
    assert not list(snapshot.image.parent.glob("*.partial"))

    follower = SqliteStore(tmp_path / "follower", durability="os")
    commit_sets(follower, 1, 3, epoch=7)           # divergent: replaced by the snapshot
    follower.restore(snapshot)
    follower.close()
    follower = SqliteStore(tmp_path / "follower", durability="os")
    assert follower.recover() == restored(expected)
    assert follower.log_bounds() == (51, 50)
    assert snapshot.image.exists()                 # restore copies the image, never moves it
    follower.close()


def table_rows(directory: Path, table: str) -> int:
    raw = raw_connection(directory)
    (rows,) = raw.execute(f"SELECT count(*) FROM {table}").fetchone()
    raw.close()
    return rows


def test_sqlite_journals_data_writes_and_folds_them_at_the_threshold(tmp_path):
    store = SqliteStore(tmp_path, fold_rows=4)
    store.commit(set_key(1, b"a", b"1") + [PutRecord(b"b", string(b"1", 1))])
    store.commit([DeleteRecord(b"a"), AppendEntry(LogEntry(Position(1, 2), DeleteKeys((b"a",))))])
    assert (table_rows(tmp_path, "data"), table_rows(tmp_path, "data_journal")) == (0, 3)
    reopened = SqliteStore(tmp_path, fold_rows=4)          # as after a crash: nothing folded
    assert table_rows(tmp_path, "data_journal") == 3
    assert reopened.recover().records == {b"b": string(b"1", 1)}
    assert (table_rows(tmp_path, "data"), table_rows(tmp_path, "data_journal")) == (1, 0)
    reopened.close()

    store = SqliteStore(tmp_path, fold_rows=4)
    commit_sets(store, 3, 5)
    assert (table_rows(tmp_path, "data"), table_rows(tmp_path, "data_journal")) == (1, 3)
    store.commit(set_key(6, b"k4", b"again"))              # the fourth row: folded
    assert (table_rows(tmp_path, "data"), table_rows(tmp_path, "data_journal")) == (4, 0)
    assert store.folds_total == 1
    store.commit(set_key(7, b"k5", b"again"))
    store.close()
    store = SqliteStore(tmp_path, fold_rows=4)
    assert store.recover().records == {b"b": string(b"1", 1), b"k3": string(b"v3", 3),
                                       b"k4": string(b"again", 6), b"k5": string(b"again", 7)}
    store.close()


def test_sqlite_a_clear_empties_the_journal_too(tmp_path):
    store = SqliteStore(tmp_path, fold_rows=100)
    commit_sets(store, 1, 3)
    store.commit([ClearRecords(), PutRecord(b"after", string(b"x", 3))])
    assert table_rows(tmp_path, "data_journal") == 1
    store.close()
    store = SqliteStore(tmp_path)
    assert store.recover().records == {b"after": string(b"x", 3)}
    store.close()


def test_sqlite_a_snapshot_holds_the_writes_still_in_the_journal(tmp_path):
    leader = SqliteStore(tmp_path / "leader", fold_rows=100)
    commit_sets(leader, 1, 5)
    snapshot = leader.snapshot()
    assert table_rows(tmp_path / "leader", "data_journal") == 0
    expected = leader.recover()
    leader.close()
    follower = SqliteStore(tmp_path / "follower", fold_rows=100)
    follower.restore(snapshot)
    assert follower.recover() == restored(expected)
    assert len(expected.records) == 5
    follower.close()


def test_sqlite_upgrades_a_file_of_schema_version_1(tmp_path):
    store = SqliteStore(tmp_path, fold_rows=1)
    commit_sets(store, 1, 3)
    store.close()
    raw = raw_connection(tmp_path)
    raw.execute("DROP TABLE data_journal")
    raw.execute("PRAGMA user_version = 1")
    raw.close()
    store = SqliteStore(tmp_path, fold_rows=100)
    assert sorted(store.recover().records) == [b"k1", b"k2", b"k3"]
    commit_sets(store, 4, 4)
    store.close()
    raw = raw_connection(tmp_path)
    assert raw.execute("PRAGMA user_version").fetchone() == (2,)
    raw.close()
    store = SqliteStore(tmp_path)
    assert sorted(store.recover().records) == [b"k1", b"k2", b"k3", b"k4"]
    store.close()


def test_sqlite_refuses_a_file_of_another_schema_version(tmp_path):
    SqliteStore(tmp_path).close()
    raw = raw_connection(tmp_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(SchemaMismatch):
        SqliteStore(tmp_path)


def test_multi_leader_records_and_entries_come_back_after_reopen(harness):
    stamp = Hlc(1_700_000_000_000, 3)
    written = Version("n1", 4, stamp, b"v")
    deleted = Version("n2", 2, stamp, None)
    context = VersionVector.of({"n1": 4, "n2": 1})
    value = ReplicatedValue(
        register=VersionedValue((written, deleted), context.with_sequence("n2", 2)),
        counter=CounterValue((("n1", 5, 1), ("n2", 2, 0))),
        events=(Event(stamp, "n1", 3, 0, b"e"),))
    effects = (VersionWritten(b"k", written, context),
               CounterChanged(b"c", "n1", 5, stamp, 5, 1),
               EventsAppended(b"l", "n1", 3, stamp, (b"e",)))
    store = harness.open()
    store.recover()
    store.commit([PutRecord(b"k", Record(Kind.REPLICATED, value, NO_EXPIRY, 3)),
                  *(AppendEntry(LogEntry(Position(1, index), effect))
                    for index, effect in enumerate(effects, start=1))])
    store = harness.reopen(store)
    state = store.recover()
    assert state.records == {b"k": Record(Kind.REPLICATED, value, NO_EXPIRY, 3)}
    assert tuple(entry.effect for entry in state.log) == effects
    store.close()
