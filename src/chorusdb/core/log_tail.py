"""The tail of the replication log a node keeps in memory, and the retention policy that trims it.

A leader streams entries to followers from memory, so the tail it holds *is* what it can send
without a snapshot; the same entries are on disk (the store's log), and both are trimmed
together: the policy decides an index, the core drops the entries below it here and hands the
store a ``TrimLogBefore`` in the same ``Ready``. After a restart the store gives the tail back
(``RecoveredState.log``).

``base`` is the position just before the first entry held (the last entry retention removed,
or the snapshot position after an install): an ``Append`` that starts at the first entry names
it as its ``prev``. Its epoch is kept in meta (``log_base_epoch``/``log_base_index``) when the
log is trimmed, because the entry itself is gone.

**Retention** (``RetentionPolicy``) keeps an entry while it is within *all* of: the newest
``entries`` entries, ``bytes`` bytes of effects, and ``age_ms`` since it was appended here; and
beyond that, for a follower that still needs it, up to ``hold_entries_max`` entries back from
the last. Entries a node has not applied or that are not committed are never trimmed. A
follower that needs an entry below the new first index is re-seeded from a snapshot, and the
reason says which limit pushed it out.
"""

from __future__ import annotations

from dataclasses import dataclass

from chorusdb.core.model import (
    CounterChanged,
    DeleteKeys,
    Effect,
    EpochStart,
    EventsAppended,
    FlushAll,
    LogEntry,
    PopItems,
    Position,
    PushItems,
    Request,
    SetExpiry,
    SetValue,
    VersionWritten,
)

effect_overhead_bytes = 32        # the fixed part of an effect's size estimate


def effect_bytes(effect: Effect) -> int:
    """An estimate of an effect's encoded size: its keys and values plus a fixed overhead."""
    kind = type(effect)
    if kind is SetValue:
        return effect_overhead_bytes + len(effect.key) + len(effect.value)
    if kind is PushItems:
        return effect_overhead_bytes + len(effect.key) + sum(len(item) for item in effect.items)
    if kind is PopItems or kind is SetExpiry:
        return effect_overhead_bytes + len(effect.key)
    if kind is DeleteKeys:
        return effect_overhead_bytes + sum(len(key) for key in effect.keys)
    if kind is EpochStart:
        return effect_overhead_bytes + len(effect.leader)
    if kind is Request:
        return (effect_overhead_bytes + len(effect.request_id) + len(effect.reply)
                + sum(effect_bytes(inner) for inner in effect.effects))
    if kind is VersionWritten:
        value = effect.version.value
        return (effect_overhead_bytes + len(effect.key) + (0 if value is None else len(value))
                + effect_overhead_bytes * len(effect.context.entries))
    if kind is EventsAppended:
        return effect_overhead_bytes + len(effect.key) + sum(len(item) for item in effect.items)
    if kind is CounterChanged:
        return effect_overhead_bytes + len(effect.key)
    assert kind is FlushAll, effect
    return effect_overhead_bytes


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How much log a node keeps (module docstring)."""

    entries: int
    bytes: int
    age_ms: int
    hold_entries_max: int

    def __post_init__(self) -> None:
        assert self.entries >= 1 and self.bytes >= 1 and self.age_ms >= 1, self
        assert self.hold_entries_max >= self.entries, self


class LogTail:
    """The entries after ``base``, in order, with when each was appended and its size."""

    __slots__ = ("base", "_entries", "_appended_ms", "_sizes", "_bytes")

    def __init__(self, base: Position, entries: tuple[LogEntry, ...], now_ms: int) -> None:
        self.base = base
        # Lists, not deques: a follower catching up reads batches from the middle, which a
        # list indexes in O(1); a trim drops a prefix once per retention check.
        self._entries: list[LogEntry] = []
        self._appended_ms: list[int] = []
        self._sizes: list[int] = []
        self._bytes = 0
        for entry in entries:
            self.append(entry, now_ms)

    # --- reading -----------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """Index of the first entry held (``last.index + 1`` when empty)."""
        return self.base.index + 1

    @property
    def last(self) -> Position:
        return self._entries[-1].position if self._entries else self.base

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def holds(self, index: int) -> bool:
        return self.base.index < index <= self.last.index

    def entry(self, index: int) -> LogEntry:
        assert self.holds(index), (index, self.base, self.last)
        return self._entries[index - self.base.index - 1]

    def position(self, index: int) -> Position:
        """The position of entry ``index``; ``base`` itself is known too."""
        if index == self.base.index:
            return self.base
        return self.entry(index).position

    def last_index_of_epoch_at_most(self, epoch: int, index_max: int) -> int:
        """The highest index at most ``index_max`` whose entry's epoch is at most ``epoch``
        (epochs never decrease along the log, so a binary search); ``base.index`` or below when
        no entry held qualifies (the answer is then ``min(index_max, base.index)``)."""
        low, high = 0, min(index_max, self.last.index) - self.base.index   # offsets [0, high)
        if high <= 0:
            return min(index_max, self.base.index)
        while low < high:
            middle = (low + high) // 2
            if self._entries[middle].position.epoch <= epoch:
                low = middle + 1
            else:
                high = middle
        return self.base.index + low

    def entries_from(self, index: int, count_max: int, bytes_max: int) -> tuple[LogEntry, ...]:
        """Up to ``count_max`` entries from ``index`` on, at most ``bytes_max`` estimated bytes
        (always at least one entry when there is one)."""
        assert index >= self.first_index, (index, self.first_index)
        offset = index - self.base.index - 1
        end = min(len(self._entries), offset + count_max)
        taken = []
        size = 0
        for i in range(offset, end):
            size += self._sizes[i]
            if taken and size > bytes_max:
                break
            taken.append(self._entries[i])
        return tuple(taken)

    # --- changing ------------------------------------------------------------------------------

    def append(self, entry: LogEntry, now_ms: int) -> None:
        assert entry.position.index == self.last.index + 1, (entry.position, self.last)
        assert entry.position.epoch >= self.last.epoch, (entry.position, self.last)
        size = effect_bytes(entry.effect)
        self._entries.append(entry)
        self._appended_ms.append(now_ms)
        self._sizes.append(size)
        self._bytes += size

    def reset(self, base: Position) -> None:
        """Forget every entry: the log now ends at ``base`` (a snapshot was installed)."""
        self.base = base
        self._entries.clear()
        self._appended_ms.clear()
        self._sizes.clear()
        self._bytes = 0

    def truncate_after(self, index: int) -> list[LogEntry]:
        """Drop the entries after ``index`` (they diverge from the leader's log) and return
        them, oldest first."""
        assert self.base.index <= index <= self.last.index, (index, self.base, self.last)
        offset = index - self.base.index
        removed = self._entries[offset:]
        self._bytes -= sum(self._sizes[offset:])
        del self._entries[offset:], self._appended_ms[offset:], self._sizes[offset:]
        return removed

    def trim_before(self, index: int) -> None:
        """Drop the entries below ``index``; ``base`` becomes the entry just before it."""
        assert self.first_index <= index <= self.last.index + 1, (index, self.base, self.last)
        count = index - self.first_index
        if count <= 0:
            return
        self.base = self._entries[count - 1].position
        self._bytes -= sum(self._sizes[:count])
        del self._entries[:count], self._appended_ms[:count], self._sizes[:count]

    # --- retention -------------------------------------------------------------------------------

    def retention_start(self, policy: RetentionPolicy, now_ms: int, keep_from: int,
                        needed_by_followers: int) -> tuple[int, str]:
        """The first index to keep, and which limit set it (``""`` when nothing is trimmed).

        ``keep_from``: never trim at or above it (uncommitted or unapplied entries).
        ``needed_by_followers``: the lowest index a follower still needs (``keep_from`` when
        none does).
        """
        last_index = self.last.index
        start = self.first_index
        reason = ""
        by_count = last_index - policy.entries + 1
        if by_count > start:
            start, reason = by_count, f"more than {policy.entries} entries"
        # Walk from the front while the byte or age limit is exceeded.
        offset = start - self.base.index - 1
        size = self._bytes - sum(self._sizes[i] for i in range(offset))
        while offset < len(self._entries) and (
                size > policy.bytes or now_ms - self._appended_ms[offset] > policy.age_ms):
            reason = (f"more than {policy.bytes} bytes" if size > policy.bytes
                      else f"older than {policy.age_ms} ms")
            size -= self._sizes[offset]
            offset += 1
        start = max(start, self.base.index + 1 + offset)
        if needed_by_followers < start:
            floor = last_index - policy.hold_entries_max + 1
            if needed_by_followers >= floor:
                start, reason = needed_by_followers, ""
            else:
                start = min(start, floor)
                reason = f"a follower fell more than {policy.hold_entries_max} entries behind"
        start = min(start, keep_from)
        if start <= self.first_index:
            return self.first_index, ""
        return start, reason
