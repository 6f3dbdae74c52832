"""The in-memory log tail and its retention policy (``core/log_tail.py``)."""

from __future__ import annotations

from chorusdb.core.log_tail import LogTail, RetentionPolicy, effect_bytes
from chorusdb.core.model import ZERO_POSITION, LogEntry, Position, SetValue

T0 = 1_000_000


def tail_of(count: int, value_bytes: int = 10, spacing_ms: int = 0) -> LogTail:
    tail = LogTail(ZERO_POSITION, (), T0)
    for index in range(1, count + 1):
        tail.append(LogEntry(Position(1, index), SetValue(b"k", b"v" * value_bytes, 0)),
                    T0 + index * spacing_ms)
    return tail


def policy(entries=1000, bytes_=10**9, age_ms=10**9, hold=1000) -> RetentionPolicy:
    return RetentionPolicy(entries, bytes_, age_ms, hold)


def test_entries_are_addressed_by_index_and_batches_respect_the_byte_bound():
    tail = tail_of(10)
    assert tail.first_index == 1 and tail.last == Position(1, 10)
    assert tail.entry(4).position == Position(1, 4) and tail.position(0) == ZERO_POSITION
    size = effect_bytes(tail.entry(1).effect)
    assert [e.position.index for e in tail.entries_from(3, 100, 2 * size)] == [3, 4]
    assert len(tail.entries_from(10, 100, 1)) == 1          # at least one entry


def test_trim_keeps_the_base_position_and_the_byte_count():
    tail = tail_of(10)
    before = tail.bytes
    tail.trim_before(4)
    assert tail.base == Position(1, 3) and tail.first_index == 4 and len(tail) == 7
    assert tail.bytes == before - 3 * effect_bytes(tail.entry(4).effect)
    tail.trim_before(11)
    assert len(tail) == 0 and tail.last == Position(1, 10)


def test_retention_by_count_bytes_and_age_with_its_reason():
    assert tail_of(10).retention_start(policy(entries=4), T0, 11, 11) == (
        7, "more than 4 entries")
    size = effect_bytes(SetValue(b"k", b"v" * 10, 0))
    start, reason = tail_of(10).retention_start(policy(bytes_=3 * size), T0, 11, 11)
    assert (start, reason) == (8, f"more than {3 * size} bytes")
    start, reason = tail_of(10, spacing_ms=100).retention_start(policy(age_ms=450), T0 + 1000,
                                                               11, 11)
    assert (start, reason) == (6, "older than 450 ms")


def test_retention_never_passes_what_is_not_committed_and_holds_for_a_follower():
    tail = tail_of(10)
    assert tail.retention_start(policy(entries=2), T0, 5, 11) == (5, "more than 2 entries")
    assert tail.retention_start(policy(entries=2, hold=8), T0, 11, 4) == (4, "")  # held for it
    assert tail.retention_start(policy(entries=2, hold=5), T0, 11, 2) == (
        6, "a follower fell more than 5 entries behind")
