"""The in-memory store's disk model: what a process crash and a power loss leave, and how
recovery treats a torn record with and without its CRC check.

Each test runs a fixed list of seeds (printed in every failure message); a workload is a list of
transactions (single SETs, and log trims, resets and truncations with the divergent rows that
quarantine what they remove, for the log's own writes), so "the state after the first k
transactions" is easy to name and every recovered state must be one of those prefixes.
"""

from __future__ import annotations

import random

import pytest

from chorusdb.core.model import (
    NO_EXPIRY,
    AppendEntry,
    ClearRecords,
    DivergentEntry,
    EpochStart,
    Kind,
    LogEntry,
    Position,
    PutDivergent,
    PutMeta,
    PutRecord,
    Record,
    RecoveredState,
    ResetLog,
    SetValue,
    TrimLogBefore,
    TruncateLogAfter,
    Write,
)
from chorusdb.storage import memory_store
from chorusdb.storage.memory_store import (
    NOTHING_REPLAYED,
    CrashReport,
    MemoryStore,
    RecoveryReport,
    fold_records_min,
)

SEEDS = range(60)


def transaction(index: int, value_bytes: int = 8) -> list[Write]:
    key = b"k%d" % index
    value = random.Random(index).randbytes(value_bytes)
    return [PutRecord(key, Record(Kind.STRING, value, NO_EXPIRY, index)),
            AppendEntry(LogEntry(Position(1, index), SetValue(key, value, NO_EXPIRY)))]


def prefix_states(count: int, value_bytes: int = 8) -> list[dict[bytes, Record]]:
    """The data after the first k transactions, for every k in 0..count."""
    states = [{}]
    for index in range(1, count + 1):
        state = dict(states[-1])
        put = transaction(index, value_bytes)[0]
        state[put.key] = put.record
        states.append(state)
    return states


def store_with(synced: int, pending: int, *, value_bytes: int = 8,
               verify_crc: bool = True) -> MemoryStore:
    """``synced`` transactions on the platter, then ``pending`` in the page cache."""
    store = MemoryStore(durability="os", verify_crc=verify_crc)
    store.recover()
    for index in range(1, synced + pending + 1):
        store.commit(transaction(index, value_bytes))
        if index == synced:
            store.sync()
    assert store.pending == pending
    return store


def test_a_process_crash_keeps_every_written_record():
    store = store_with(synced=2, pending=8)
    report = store.crash(random.Random(0), power_loss=False, torn_probability=1.0)
    assert report == CrashReport(power_loss=False, pending_kept=8, pending_lost=0, torn=False)
    with pytest.raises(AssertionError):            # a dead process commits nothing
        store.commit(transaction(11))
    state = store.recover()
    assert state.records == prefix_states(10)[10]
    assert state.last_position == Position(1, 10)
    assert store.last_recovery == NOTHING_REPLAYED  # nothing was lost: no replay needed
    assert store.pending == 8                       # still only in the page cache...
    report = store.crash(random.Random(1), power_loss=True, torn_probability=0.0)
    assert report.pending_kept + report.pending_lost == 8   # ...so a power loss can take them


def test_the_os_writing_back_a_dead_process_pages_makes_them_durable():
    store = store_with(synced=0, pending=5)
    store.crash(random.Random(0), power_loss=False, torn_probability=0.0)
    store.sync()
    report = store.crash(random.Random(0), power_loss=True, torn_probability=1.0)
    assert report == CrashReport(power_loss=True, pending_kept=0, pending_lost=0, torn=False)
    assert store.recover().records == prefix_states(5)[5]


def test_power_loss_keeps_the_synced_records_and_a_prefix_of_the_rest():
    states = prefix_states(10)
    kept_counts = set()
    for seed in SEEDS:
        store = store_with(synced=3, pending=7)
        report = store.crash(random.Random(seed), power_loss=True, torn_probability=0.0)
        assert report.pending_kept + report.pending_lost == 7, seed
        recovered = store.recover()
        survivors = 3 + report.pending_kept
        assert recovered.records == states[survivors], seed
        assert recovered.last_position == Position(1, survivors), seed
        assert store.last_recovery == (
            NOTHING_REPLAYED if report.pending_lost == 0
            else RecoveryReport(records_replayed=survivors, records_dropped=0,
                                torn_detected=False)), seed
        kept_counts.add(report.pending_kept)
    assert {0, 7} <= kept_counts and len(kept_counts) > 4, kept_counts


def test_fsync_durability_loses_nothing_to_a_power_loss():
    store = MemoryStore(durability="fsync")
    store.recover()
    for index in range(1, 11):
        store.commit(transaction(index))
    assert store.pending == 0
    report = store.crash(random.Random(0), power_loss=True, torn_probability=1.0)
    assert report == CrashReport(power_loss=True, pending_kept=0, pending_lost=0, torn=False)
    assert store.recover().records == prefix_states(10)[10]


def test_a_torn_record_is_detected_and_dropped_with_everything_after_it():
    states = prefix_states(7)
    torn_seeds = 0
    for seed in SEEDS:
        store = store_with(synced=2, pending=5)
        report = store.crash(random.Random(seed), power_loss=True, torn_probability=1.0)
        recovered = store.recover()
        assert report.torn == (report.pending_kept > 0), seed
        survivors = 2 + report.pending_kept - report.torn
        assert recovered.records == states[survivors], seed
        assert recovered.last_position == Position(1, survivors), seed
        if report.torn:
            torn_seeds += 1
            assert store.last_recovery == RecoveryReport(
                records_replayed=survivors, records_dropped=1, torn_detected=True), seed
        # The dropped record is gone from the disk: the node goes on from the last good one.
        store.commit(transaction(survivors + 1))
        store.sync()
        store.crash(random.Random(seed), power_loss=True, torn_probability=1.0)
        assert store.recover().records == prefix_states(survivors + 1)[-1], seed
        assert store.last_recovery == NOTHING_REPLAYED, seed
    assert torn_seeds > len(SEEDS) // 2, torn_seeds


@pytest.mark.parametrize("verify_crc", [True, False], ids=["crc", "no-crc"])
def test_the_crc_is_what_keeps_a_torn_record_out_of_the_data(verify_crc):
    """Without the check, a torn record whose bytes still decode is replayed as if it were
    intact: the recovered data then matches no prefix of what was committed."""
    value_bytes = 200
    states = prefix_states(6, value_bytes)
    corrupted_seeds = []
    for seed in SEEDS:
        store = store_with(synced=1, pending=5, value_bytes=value_bytes, verify_crc=verify_crc)
        store.crash(random.Random(seed), power_loss=True, torn_probability=1.0)
        recovered = store.recover()
        if recovered.records not in states:
            corrupted_seeds.append(seed)
            assert not store.last_recovery.torn_detected, seed
    if verify_crc:
        assert corrupted_seeds == []
    else:
        assert len(corrupted_seeds) > 5, corrupted_seeds


def test_recovery_replays_only_what_was_not_folded_into_the_checkpoint():
    total = fold_records_min + 10
    store = store_with(synced=total - 3, pending=3)
    report = store.crash(random.Random(3), power_loss=True, torn_probability=0.0)
    assert report.pending_lost > 0
    recovered = store.recover()
    survivors = total - report.pending_lost
    assert recovered.records == prefix_states(survivors)[-1]
    # The sync of the first ``total - 3`` crossed the threshold and folded them: only the
    # pending records that reached the disk are replayed.
    assert store.last_recovery.records_replayed == report.pending_kept


def test_a_restored_snapshot_is_durable_at_once():
    store = store_with(synced=0, pending=4)
    snapshot = store.snapshot()
    store.commit(transaction(5))
    store.restore(snapshot)
    store.commit(transaction(5))
    store.crash(random.Random(0), power_loss=True, torn_probability=0.0)
    store.crash(random.Random(0), power_loss=True, torn_probability=0.0)
    recovered = store.recover()
    assert recovered.records in (prefix_states(5)[4], prefix_states(5)[5])


def set_at(position: Position, key: bytes) -> list[Write]:
    return [PutRecord(key, Record(Kind.STRING, b"v", NO_EXPIRY, position.index)),
            AppendEntry(LogEntry(position, SetValue(key, b"v", NO_EXPIRY)))]


def quarantine(entry_id: int, position: Position, key: bytes, resolution: str = "") -> Write:
    """The divergent row of the entry ``set_at(position, key)`` appended."""
    entry = LogEntry(position, SetValue(key, b"v", NO_EXPIRY))
    return PutDivergent(DivergentEntry(entry_id, entry, "n1", 1000 + entry_id, "n2", True,
                                       resolution, "admin" if resolution else "",
                                       2000 if resolution else 0))


LOG_WORKLOAD: list[list[Write]] = [
    set_at(Position(1, 1), b"a"),
    set_at(Position(1, 2), b"b"),
    set_at(Position(1, 3), b"c"),
    [TrimLogBefore(3)],
    set_at(Position(1, 4), b"d"),
    # A snapshot install from a leader whose log ended below ours.
    [PutMeta("epoch", 2), ClearRecords(),
     PutRecord(b"s", Record(Kind.STRING, b"snap", NO_EXPIRY, 2)), ResetLog(Position(2, 2))],
    set_at(Position(2, 3), b"e"),
    set_at(Position(2, 4), b"f") + [TrimLogBefore(4)] + set_at(Position(2, 5), b"g"),
    [ResetLog(Position(2, 9))] + set_at(Position(2, 10), b"h"),
    set_at(Position(2, 11), b"i") + set_at(Position(2, 12), b"j"),
    # A leader of epoch 3 replaced the last two entries: quarantined, removed, and its own
    # epoch's first entry appended, in one transaction.
    [quarantine(1, Position(2, 11), b"i"), quarantine(2, Position(2, 12), b"j"),
     TruncateLogAfter(Position(2, 10)), AppendEntry(LogEntry(Position(3, 11), EpochStart("n2")))],
    [quarantine(1, Position(2, 11), b"i", resolution="discarded")],
]
"""Transactions that trim and reset the log, a reset that moves its last position back, and a
truncation that moves it back with the divergent rows of what it removed (then one resolved)."""
TRUNCATION = 10
"""The index in ``LOG_WORKLOAD`` of the transaction that truncates the log."""


def log_workload_prefix_states() -> list[RecoveredState]:
    """What an intact store recovers after the first k transactions of ``LOG_WORKLOAD``."""
    states = []
    for count in range(len(LOG_WORKLOAD) + 1):
        store = MemoryStore()
        store.recover()
        for writes in LOG_WORKLOAD[:count]:
            store.commit(writes)
        states.append(store.recover())
    return states


@pytest.mark.parametrize("synced", [0, 3, 5, 6, 9], ids=lambda synced: f"synced-{synced}")
def test_power_loss_around_log_writes_keeps_a_prefix_of_the_transactions(synced, monkeypatch):
    """A torn record that carried a trim, a reset or a truncation leaves the log (and the
    divergent table) as it was before it; with the checkpoint folded at 4 records, the later
    runs replay onto a checkpoint that already holds trims and a reset."""
    monkeypatch.setattr(memory_store, "fold_records_min", 4)
    states = log_workload_prefix_states()
    assert [len(state.log) for state in states] == [0, 1, 2, 3, 1, 2, 0, 1, 2, 1, 3, 2, 2]
    assert (states[5].last_position, states[6].last_position) == (Position(1, 4), Position(2, 2))
    assert (states[10].last_position, states[11].last_position) == (
        Position(2, 12), Position(3, 11))
    assert [len(state.divergent) for state in states[10:]] == [0, 2, 2]
    outcomes = set()
    for seed in SEEDS:
        store = MemoryStore(durability="os")
        store.recover()
        for count, writes in enumerate(LOG_WORKLOAD, start=1):
            store.commit(writes)
            if count == synced:
                store.sync()
        report = store.crash(random.Random(seed), power_loss=True, torn_probability=0.5)
        survivors = synced + report.pending_kept - report.torn
        recovered = store.recover()
        assert recovered == states[survivors], seed
        first, last = store.log_bounds()
        assert last == recovered.last_position.index, seed
        assert store.read_log(first - 1, 100) == list(recovered.log), seed
        store.commit(set_at(Position(3, last + 1), b"next"))    # the node goes on from there
        outcomes.add((survivors, report.torn))
    assert len({survivors for survivors, _ in outcomes}) > 3, outcomes
    assert any(torn for _, torn in outcomes), outcomes


def test_a_torn_truncation_leaves_the_log_and_the_divergent_table_as_before_it():
    states = log_workload_prefix_states()
    torn_seeds = 0
    for seed in SEEDS:
        store = MemoryStore(durability="os")
        store.recover()
        for writes in LOG_WORKLOAD[:TRUNCATION]:
            store.commit(writes)
        store.sync()
        store.commit(LOG_WORKLOAD[TRUNCATION])
        report = store.crash(random.Random(seed), power_loss=True, torn_probability=1.0)
        recovered = store.recover()
        assert recovered == states[TRUNCATION], seed      # lost or torn: as if never written
        assert (recovered.last_position, recovered.divergent) == (Position(2, 12), ()), seed
        torn_seeds += report.torn
    assert 0 < torn_seeds < len(SEEDS), torn_seeds


def test_a_process_crash_keeps_every_log_write_and_divergent_row_written():
    states = log_workload_prefix_states()
    store = MemoryStore(durability="os")
    store.recover()
    for writes in LOG_WORKLOAD:
        store.commit(writes)
    store.crash(random.Random(0), power_loss=False, torn_probability=1.0)
    assert store.recover() == states[-1]
    assert store.last_recovery == NOTHING_REPLAYED
