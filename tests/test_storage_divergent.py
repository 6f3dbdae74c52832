"""The ``Store`` contract for a log that diverged, run against both stores: ``TruncateLogAfter``
(a suffix removed, alone or with appends and trims in the same call) and the ``divergent``
table (``PutDivergent`` rows and ``recover().divergent``).

The harnesses and helpers are the general contract tests' (``test_storage_contract``): "after a
restart" means a new ``SqliteStore`` on the same directory or the same ``MemoryStore`` after
``close``. SQLite-only tests at the end open files of the earlier schema and corrupt rows.
"""

from __future__ import annotations

import sqlite3

import pytest

from chorusdb.core.model import (
    NO_EXPIRY,
    AppendEntry,
    DeleteKeys,
    DivergentEntry,
    EpochStart,
    FlushAll,
    LogEntry,
    PopItems,
    Position,
    PushItems,
    PutDivergent,
    PutMeta,
    SetExpiry,
    SetValue,
    TrimLogBefore,
    TruncateLogAfter,
)
from chorusdb.storage.encoding import CorruptRecord
from chorusdb.storage.memory_store import MemoryStore
from chorusdb.storage.sqlite_store import SqliteStore, store_file_name
from test_storage_contract import (
    MemoryHarness,
    SqliteHarness,
    check_log,
    commit_sets,
    set_key,
)


@pytest.fixture(params=["sqlite", "memory"])
def harness(request, tmp_path):
    return SqliteHarness(tmp_path) if request.param == "sqlite" else MemoryHarness()


def entry_at(epoch: int, index: int) -> LogEntry:
    """The entry ``commit_sets`` writes at ``(epoch, index)``."""
    return LogEntry(Position(epoch, index), SetValue(b"k%d" % index, b"v%d" % index, NO_EXPIRY))


def quarantined(entry_id: int, entry: LogEntry, **fields) -> DivergentEntry:
    return DivergentEntry(entry_id, entry, **{
        "leader": "n1", "removed_at_ms": 1_700_000_000_000 + entry_id, "removed_by": "n2",
        "verified": True, **fields})


# --- TruncateLogAfter ---------------------------------------------------------------------------


def test_a_truncation_removes_the_suffix_and_moves_the_last_position_back(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 3)
    commit_sets(store, 4, 6, epoch=2)
    store.commit([TruncateLogAfter(Position(1, 3))])
    store = check_log(store, harness, [1, 2, 3], Position(1, 3))
    assert len(store.recover().records) == 6               # the data rows are the caller's
    store.commit([TruncateLogAfter(Position(1, 3))])       # at the last position: nothing to do
    store = check_log(store, harness, [1, 2, 3], Position(1, 3))
    commit_sets(store, 4, 5, epoch=3)                      # the log goes on from there
    store = check_log(store, harness, [1, 2, 3, 4, 5], Position(3, 5))
    assert store.read_log(3, 10) == [entry_at(3, 4), entry_at(3, 5)]
    store.close()


def test_a_truncation_and_the_appends_after_it_commit_together(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 6)
    commits = store.commits_total
    store.commit([TruncateLogAfter(Position(1, 4))] + set_key(5, b"new", b"5", epoch=2)
                 + set_key(6, b"newer", b"6", epoch=2))
    assert store.commits_total == commits + 1
    store = check_log(store, harness, [1, 2, 3, 4, 5, 6], Position(2, 6))
    assert [entry.position for entry in store.read_log(3, 10)] == [
        Position(1, 4), Position(2, 5), Position(2, 6)]
    # Across the batches of a group too, and an append then truncated in the same call.
    store.commit_many([set_key(7, b"a", b"7", epoch=2), [TruncateLogAfter(Position(2, 5))],
                       set_key(6, b"b", b"6", epoch=3)])
    store = check_log(store, harness, [1, 2, 3, 4, 5, 6], Position(3, 6))
    assert store.read_log(5, 10) == [
        LogEntry(Position(3, 6), SetValue(b"b", b"6", NO_EXPIRY))]
    store.close()


def test_a_truncation_to_the_base_empties_the_log(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 6)
    store.commit([TrimLogBefore(4)])                       # the base is now 1:3
    store.commit([TruncateLogAfter(Position(1, 3))])
    store = check_log(store, harness, [], Position(1, 3))
    commit_sets(store, 4, 4, epoch=2)
    store = check_log(store, harness, [4], Position(2, 4))
    # A trim and a truncation to the base it leaves, in one batch.
    store.commit(set_key(5, b"x", b"5", epoch=2) + [TrimLogBefore(5),
                                                    TruncateLogAfter(Position(2, 4))])
    store = check_log(store, harness, [], Position(2, 4))
    # A truncation then a trim of what it kept, in one batch.
    commit_sets(store, 5, 8, epoch=2)
    store.commit([TruncateLogAfter(Position(2, 6)), TrimLogBefore(6)])
    store = check_log(store, harness, [6], Position(2, 6))
    store.close()


@pytest.mark.parametrize("writes", [
    [TruncateLogAfter(Position(1, 11))],
    [TruncateLogAfter(Position(1, 3))],
    [TruncateLogAfter(Position(2, 8))],
    [TruncateLogAfter(Position(1, 8)), TruncateLogAfter(Position(1, 9))],
    [TruncateLogAfter(Position(1, 8))] + set_key(8, b"x", b"x"),
    [TruncateLogAfter(Position(1, 8))] + set_key(9, b"x", b"x", epoch=0),
    set_key(11, b"x", b"x", epoch=2) + [TruncateLogAfter(Position(1, 11))],
    [TrimLogBefore(8), TruncateLogAfter(Position(1, 6))],
    [TruncateLogAfter(Position(1, 5)), TruncateLogAfter(Position(0, 4))],
], ids=["beyond-the-end", "below-the-base", "another-epoch-at-the-index",
        "beyond-an-earlier-truncation", "append-at-the-truncation",
        "append-older-epoch-than-the-truncation", "another-epoch-than-the-appended-entry",
        "below-a-trim-in-the-batch", "base-with-another-epoch"])
def test_truncations_that_do_not_fit_the_log_are_refused_with_nothing_applied(harness, writes):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 10)
    store.commit([TrimLogBefore(5)])                       # entries 5..10 after the base 1:4
    with pytest.raises(ValueError):
        store.commit([PutMeta("m", 1), PutDivergent(quarantined(1, entry_at(1, 10)))] + writes)
    with pytest.raises(ValueError):
        store.commit_many([[TruncateLogAfter(Position(1, 9))], writes])
    assert (store.commits_total, store.writes_total) == (11, 21)
    store = check_log(store, harness, [5, 6, 7, 8, 9, 10], Position(1, 10))
    state = store.recover()
    assert (len(state.records), state.meta, state.divergent) == (10, {}, ())
    store.close()


def test_a_truncation_to_an_index_the_log_skipped_is_refused(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 2)
    commit_sets(store, 5, 6, epoch=2)
    with pytest.raises(ValueError):
        store.commit([TruncateLogAfter(Position(2, 4))])
    with pytest.raises(ValueError):                        # nor one inside the appended part
        store.commit(set_key(9, b"x", b"x", epoch=2) + [TruncateLogAfter(Position(2, 8))])
    store.commit([TruncateLogAfter(Position(1, 2))])
    store = check_log(store, harness, [1, 2], Position(1, 2))
    store.close()


# --- the divergent table ----------------------------------------------------------------------


def test_divergent_rows_come_back_by_id_with_every_field(harness):
    store = harness.open()
    assert store.recover().divergent == ()
    items = [
        quarantined(7, LogEntry(Position(2, 9), FlushAll()), verified=False),
        quarantined(3, LogEntry(Position(1, 4), SetValue(b"\x00k", b"\xffv", 1_700_000_000_999))),
        quarantined(5, LogEntry(Position(2, 5), PushItems(b"l", (b"a", b""), left=True)),
                    leader="", resolution="reapplied", resolved_by="operator \u00e9",
                    resolved_at_ms=2**62),
        quarantined(0, LogEntry(Position(2, 6), PopItems(b"l", 2, left=False)),
                    resolution="discarded", resolved_by="admin", resolved_at_ms=-1),
        quarantined(11, LogEntry(Position(2, 7), DeleteKeys((b"a", b"b")))),
        quarantined(12, LogEntry(Position(2, 8), SetExpiry(b"s", NO_EXPIRY))),
        quarantined(2**63 - 1, LogEntry(Position(3, 10), EpochStart("n3")), removed_at_ms=-5),
    ]
    store.commit([PutDivergent(item) for item in items[:3]])
    store.commit_many([[PutDivergent(item)] for item in items[3:]])
    expected = tuple(sorted(items, key=lambda item: item.entry_id))
    assert store.recover().divergent == expected
    store = harness.reopen(store)
    state = store.recover()
    assert state.divergent == expected
    assert [type(item.verified) for item in state.divergent] == [bool] * len(items)
    assert (state.records, state.meta, state.log) == ({}, {}, ())   # no other table changed
    store.close()


def test_a_divergent_row_is_replaced_by_its_id(harness):
    store = harness.open()
    store.recover()
    first = quarantined(4, entry_at(1, 2))
    other = quarantined(9, entry_at(1, 3))
    store.commit([PutDivergent(first), PutDivergent(other)])
    resolved = DivergentEntry(4, entry_at(1, 2), "n1", first.removed_at_ms, "n2", True,
                              "reapplied", "admin", 1_700_000_100_000)
    store.commit([PutDivergent(resolved)])
    store = harness.reopen(store)
    assert store.recover().divergent == (resolved, other)
    # Within one batch the last write of an id wins.
    discarded = DivergentEntry(9, entry_at(1, 3), "n1", 0, "n2", False, "discarded", "ops", 5)
    store.commit([PutDivergent(other), PutDivergent(discarded)])
    store = harness.reopen(store)
    assert store.recover().divergent == (resolved, discarded)
    store.close()


def test_a_truncation_quarantines_its_suffix_in_the_same_transaction(harness):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 5)
    removed = store.read_log(3, 10)
    items = [quarantined(number, entry) for number, entry in enumerate(removed, start=1)]
    store.commit([PutDivergent(item) for item in items] + [TruncateLogAfter(Position(1, 3))]
                 + [AppendEntry(LogEntry(Position(2, 4), EpochStart("n2")))])
    store = check_log(store, harness, [1, 2, 3, 4], Position(2, 4))
    state = store.recover()
    assert state.divergent == tuple(items)
    assert [item.entry for item in state.divergent] == removed
    store.close()


@pytest.mark.parametrize("bad", [
    PutDivergent(entry_at(1, 1)),
    PutDivergent(DivergentEntry(1, entry_at(1, 1), "n1", 0, "n2", 1)),
    PutDivergent(DivergentEntry(-1, entry_at(1, 1), "n1", 0, "n2", True)),
    PutDivergent(DivergentEntry(2**63, entry_at(1, 1), "n1", 0, "n2", True)),
    PutDivergent(DivergentEntry(1, LogEntry(Position(1, 1), "SET"), "n1", 0, "n2", True)),
    PutDivergent(DivergentEntry(1, LogEntry((1, 1), FlushAll()), "n1", 0, "n2", True)),
    PutDivergent(DivergentEntry(1, entry_at(1, 1), b"n1", 0, "n2", True)),
    PutDivergent(DivergentEntry(1, entry_at(1, 1), "n1", 1.5, "n2", True)),
    PutDivergent(DivergentEntry(1, entry_at(1, 1), "n1", 0, "n2", True, None)),
    PutDivergent(DivergentEntry(1, entry_at(1, 1), "n1", 0, "n2", True, "", "", 2**63)),
    TruncateLogAfter((1, 1)),
    TruncateLogAfter(Position(-1, 1)),
    TruncateLogAfter(Position(1, True)),
], ids=["not-an-item", "int-verified", "negative-id", "huge-id", "not-an-effect",
        "tuple-position", "bytes-leader", "float-time", "none-resolution", "huge-resolved-at",
        "tuple-truncation", "negative-epoch-truncation", "bool-index-truncation"])
def test_a_malformed_truncation_or_divergent_row_leaves_nothing(harness, bad):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 2)
    with pytest.raises(TypeError):
        store.commit([PutDivergent(quarantined(1, entry_at(1, 2))), bad])
    store = harness.reopen(store)
    state = store.recover()
    assert (state.divergent, state.last_position) == ((), Position(1, 2))
    store.close()


def test_a_restore_keeps_the_divergent_table_and_a_snapshot_does_not_carry_it(harness,
                                                                              tmp_path):
    store = harness.open()
    store.recover()
    commit_sets(store, 1, 3)
    kept = quarantined(1, entry_at(1, 3))
    store.commit([PutDivergent(kept)])
    snapshot = store.snapshot()
    later = quarantined(2, entry_at(1, 4))
    commit_sets(store, 4, 4)
    store.commit([PutDivergent(later), TruncateLogAfter(Position(1, 3))])
    store.restore(snapshot)
    assert store.recover().divergent == (kept, later)
    store = harness.reopen(store)
    state = store.recover()
    assert (state.divergent, state.last_position, len(state.records)) == (
        (kept, later), Position(1, 3), 3)
    store.close()
    other = (SqliteStore(tmp_path / "other") if isinstance(harness, SqliteHarness)
             else MemoryStore())
    other.recover()
    other.restore(snapshot)
    state = other.recover()
    assert (state.divergent, state.last_position, len(state.records)) == ((), Position(1, 3), 3)
    other.close()


# --- SQLite only --------------------------------------------------------------------------------


def raw_connection(directory) -> sqlite3.Connection:
    return sqlite3.connect(directory / store_file_name, isolation_level=None)


def test_sqlite_opens_a_file_written_before_the_divergent_table(tmp_path):
    store = SqliteStore(tmp_path)
    commit_sets(store, 1, 3)
    store.close()
    raw = raw_connection(tmp_path)
    raw.execute("DROP TABLE divergent")
    raw.close()
    store = SqliteStore(tmp_path)
    state = store.recover()
    assert (state.divergent, state.last_position, len(state.records)) == ((), Position(1, 3), 3)
    item = quarantined(1, entry_at(1, 3))
    store.commit([PutDivergent(item), TruncateLogAfter(Position(1, 2))])
    store.close()
    store = SqliteStore(tmp_path)
    assert store.recover().divergent == (item,)
    store.close()


def test_sqlite_restores_a_snapshot_written_before_the_divergent_table(tmp_path):
    leader = SqliteStore(tmp_path / "leader")
    commit_sets(leader, 1, 4)
    snapshot = leader.snapshot()
    leader.close()
    raw = sqlite3.connect(snapshot.image, isolation_level=None)
    raw.execute("DROP TABLE divergent")
    raw.close()
    follower = SqliteStore(tmp_path / "follower")
    item = quarantined(1, entry_at(7, 1))
    follower.commit([PutDivergent(item)])
    follower.restore(snapshot)
    follower.close()
    follower = SqliteStore(tmp_path / "follower")
    state = follower.recover()
    assert (state.divergent, state.last_position) == ((item,), Position(1, 4))
    follower.close()


@pytest.mark.parametrize("column, value", [("entry", None), ("idx", 99), ("verified", 2)],
                         ids=["flipped-entry", "moved-entry", "verified-not-a-bool"])
def test_sqlite_reports_a_corrupted_divergent_row(tmp_path, column, value):
    store = SqliteStore(tmp_path)
    store.commit([PutDivergent(quarantined(1, entry_at(1, 3)))])
    raw = raw_connection(tmp_path)
    if value is None:
        (entry,) = raw.execute("SELECT entry FROM divergent").fetchone()
        value = entry[:-1] + bytes((entry[-1] ^ 0x01,))
    raw.execute(f"UPDATE divergent SET {column} = ?", (value,))
    raw.close()
    with pytest.raises(CorruptRecord, match="divergent row 1" if column == "verified" else "1:"):
        store.recover()
    store.close()
