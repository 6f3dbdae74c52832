"""The ``Store`` protocol: what every node keeps durably, and the rules both stores follow.

A store holds four things:

- **data**: one row per key (``Record``: kind, value, expiry, version), the materialised state
  at the last log position;
- **the replication log**: ``LogEntry`` values by index, each stored with a CRC32C; positions
  strictly increase in index and never decrease in epoch, and entries stay after commit until a
  retention policy removes a prefix (``TrimLogBefore``), a snapshot install empties the log
  (``ResetLog``) or a new leader's log replaces a suffix (``TruncateLogAfter``);
- **meta**: node metadata by name (epoch, vote, identity, ...), each an ``int``, ``str`` or
  ``bytes``;
- **the divergent table**: ``DivergentEntry`` rows by ``entry_id`` (``PutDivergent`` inserts or
  replaces one), the log entries this node removed because a later leader's log replaced them,
  kept until an operator resolves them and never removed by the store. They belong to the node,
  not to the state at a log position: a snapshot does not carry them and a ``restore`` keeps
  them. ``recover().divergent`` is every row, by ascending id.

``commit`` applies a list of writes (``core.model.Write``) in order and atomically: either every
write is durable (as durable as ``durability`` promises) or none is. So a data change and the log
entry that explains it always commit together. ``commit_many`` does the same for several batches
in one transaction: the group commit of the storage thread. A write that is not well formed (not
a ``Write``, a field of the wrong type) raises ``TypeError`` and a log write that does not fit
the log (below) raises ``ValueError``; either way nothing of the call is applied.

Besides appends, three writes change the log. Every log has a *base*: the position just before
its first entry (the last entry a trim removed, the position of a reset, ``ZERO_POSITION`` at
first), which is also its last position while it is empty.

- ``TrimLogBefore(index)`` removes the entries below ``index`` and leaves the last position where
  it was, even when the log empties; the base becomes the last entry it removed (an ``index``
  above ``last + 1`` can only be a caller's bug and raises ``ValueError``).
- ``ResetLog(position)`` empties the log and makes ``position`` its base and last position,
  lower than before if need be (a follower that installs a snapshot from a new leader).
- ``TruncateLogAfter(position)`` removes the entries after ``position``, which must be where the
  log holds an entry or its base, and makes it the last position (a follower whose suffix
  diverges from a new leader's log). A position below the base, beyond the last, or that the
  log does not hold (another epoch at that index, an index the log skipped) raises
  ``ValueError``: the store's last position is always its last entry's, or its base's.

Log writes apply in order with the appends of the same call: entries appended after a reset or
a truncation must follow its position, and a trim or a truncation after appends may remove them.

``durability`` is what an acknowledged commit survives: ``"fsync"`` a power loss (the commit
returns once the bytes are on the platter), ``"os"`` a process crash only (they are in the OS
page cache; the last commits may be lost when the machine loses power).

The log is addressed by index. ``log_bounds()`` is ``(first, last)``: the first and last index
held, ``(last + 1, last)`` when a trim, a reset or a truncation emptied it and ``(1, 0)`` on a
fresh store. The last position survives retention, so only a ``ResetLog``, a
``TruncateLogAfter`` or a ``restore`` moves ``recover().last_position`` back. ``recover().log``
is the tail of the log, oldest first and CRC-checked, at most the newest
``recover_log_entries_max`` entries: what a restarting leader serves its followers from and a
restarting follower compares with its leader's.
``read_log(after_index, limit)`` returns the entries after ``after_index`` in order, every one
CRC-checked; when retention already removed entries the reader needs it raises ``LogCompacted``
rather than return a gap (the follower is then re-seeded from a snapshot).

``snapshot()`` captures data and meta at the current last position; ``restore(snapshot)``
replaces data, meta and log with it: afterwards the log is empty with the snapshot's position as
its last, and ``recover()`` returns the snapshot's state with the node's own divergent table.
The image of a ``Snapshot`` is ``bytes`` for the in-memory store and the path of a SQLite file
for the SQLite store; it is opaque to callers, who move it (as bytes or as a file) to another
node of the same kind.

A store belongs to one thread (the storage thread in the server, the simulator's thread in the
simulator); none of its methods may be called from two threads.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Literal, Protocol

from chorusdb.core.model import (
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
    Request,
    ResetLog,
    SetExpiry,
    SetValue,
    TrimLogBefore,
    TruncateLogAfter,
    VersionWritten,
    Write,
)
from chorusdb.core.multileader_keyspace import ReplicatedValue

Durability = Literal["fsync", "os"]
DURABILITIES: tuple[Durability, ...] = ("fsync", "os")

EFFECT_TYPES = frozenset({SetValue, PushItems, PopItems, DeleteKeys, SetExpiry, FlushAll,
                          EpochStart, Request, VersionWritten, CounterChanged, EventsAppended})
int64_min = -(2**63)
int64_max = 2**63 - 1

recover_log_entries_max = 1_000_000
"""Log entries ``recover()`` reads back (the newest ones) into ``RecoveredState.log``. A small
entry costs ~300 bytes of memory and ~4 us of CPU to read and check on the SQLite store (a
million: 5 s and 320 MB, measured on a busy 2-core machine): retention should keep the log far
shorter than this."""


class LogCompacted(Exception):
    """``read_log`` was asked for entries that retention already removed."""

    def __init__(self, after_index: int, first_index: int) -> None:
        super().__init__(f"log entries after {after_index} are gone: the log starts at "
                         f"{first_index}; re-seed from a snapshot")
        self.after_index = after_index
        self.first_index = first_index


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Data and meta at ``position``; ``image`` is opaque (see the module docstring)."""

    position: Position
    image: bytes | Path


class Store(Protocol):
    """The durable state of one node; see the module docstring for the rules."""

    durability: Durability
    commits_total: int
    """Transactions committed (commits, group commits, log trims); each is one fsync of the
    log with ``durability = "fsync"``."""
    writes_total: int
    """Writes committed."""

    def recover(self) -> RecoveredState:
        """Everything the store holds, read back and checked; the input of a core."""
        ...

    def commit(self, writes: Sequence[Write]) -> None:
        """Apply ``writes`` in order in one transaction."""
        ...

    def commit_many(self, batches: Sequence[Sequence[Write]]) -> None:
        """Apply every batch, in order, in one transaction (group commit)."""
        ...

    def read_log(self, after_index: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` entries with an index above ``after_index``, in order, CRC-checked."""
        ...

    def log_bounds(self) -> tuple[int, int]:
        """``(first, last)`` index held."""
        ...

    def truncate_log_before(self, index: int) -> int:
        """Commit ``TrimLogBefore(index)`` alone, unless it would remove nothing; returns how
        many entries it removed."""
        ...

    def snapshot(self) -> Snapshot:
        """Data and meta at the current last position."""
        ...

    def restore(self, snapshot: Snapshot) -> None:
        """Replace data, meta and log with ``snapshot``; durable when it returns."""
        ...

    def close(self) -> None:
        """Release the store; idempotent."""
        ...


def check_durability(durability: str) -> Durability:
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
    return durability  # type: ignore[return-value]


def _is_int64(value: object) -> bool:
    """An ``int`` that SQLite and msgpack store as it is (a signed 64-bit integer)."""
    return type(value) is int and int64_min <= value <= int64_max


def _is_record(record: object) -> bool:
    if type(record) is not Record or not _is_int64(record.expire_at_ms) \
            or not _is_int64(record.version):
        return False
    if record.kind is Kind.STRING:
        return type(record.value) is bytes
    if record.kind is Kind.REPLICATED:
        return type(record.value) is ReplicatedValue
    return record.kind is Kind.LIST and type(record.value) is tuple


def _is_position(position: object) -> bool:
    return (type(position) is Position and _is_int64(position.epoch)
            and _is_int64(position.index))


def _is_log_position(position: object) -> bool:
    """A position a log may end at: no negative epoch or index."""
    return _is_position(position) and position.epoch >= 0 and position.index >= 0


def _is_log_entry(entry: object) -> bool:
    return (type(entry) is LogEntry and _is_position(entry.position)
            and type(entry.effect) in EFFECT_TYPES)


def _is_divergent(item: object) -> bool:
    return (type(item) is DivergentEntry and _is_int64(item.entry_id) and item.entry_id >= 0
            and _is_log_entry(item.entry) and type(item.leader) is str
            and _is_int64(item.removed_at_ms) and type(item.removed_by) is str
            and type(item.verified) is bool and type(item.resolution) is str
            and type(item.resolved_by) is str and _is_int64(item.resolved_at_ms))


def _is_well_formed(write: object) -> bool:
    kind = type(write)
    if kind is PutRecord:
        return type(write.key) is bytes and _is_record(write.record)
    if kind is AppendEntry:
        return _is_log_entry(write.entry)
    if kind is DeleteRecord:
        return type(write.key) is bytes
    if kind is PutMeta:
        value = write.value
        return type(write.name) is str and (type(value) in (str, bytes) or _is_int64(value))
    if kind is TrimLogBefore:
        return _is_int64(write.index) and write.index >= 0
    if kind is ResetLog or kind is TruncateLogAfter:
        return _is_log_position(write.position)
    if kind is PutDivergent:
        return _is_divergent(write.item)
    return kind is ClearRecords


def _follows(position: Position, last: Position) -> bool:
    """Whether ``position`` may be appended after ``last``: a higher index, no older epoch."""
    return position.index > last.index and position.epoch >= last.epoch


EntryBefore = Callable[[int], Position | None]
"""``entry_before(index)``: the position of the stored entry with the highest index below
``index``, or ``None`` when the store holds none (a store's view of its log before a commit)."""

_index_of = attrgetter("index")


class LogCheck:
    """Checks writes before anything of them is applied, following the log's base and last
    position through them (see the module docstring for the rules).

    A store builds one per commit from its log as it stands (``base``, ``last`` and
    ``entry_before``), passes every batch of the commit to ``check`` in order, and after
    applying them takes ``base`` and ``last`` as its new log ends. Besides those two it keeps
    what a truncation must look up: the positions appended by the writes checked so far (still
    in the log), and the highest index up to which the store's own entries are still there.
    """

    __slots__ = ("base", "last", "_entry_before", "_stored_index_max", "_appended")

    def __init__(self, base: Position, last: Position, entry_before: EntryBefore) -> None:
        self.base = base
        self.last = last
        self._entry_before = entry_before
        self._stored_index_max = last.index
        """The store's entries above this index are removed by the writes checked so far."""
        self._appended: list[Position] = []
        """Positions appended by the writes checked so far and still in the log, in order."""

    def check(self, writes: Sequence[object]) -> None:
        """Raise ``TypeError`` for anything that is not a well-formed ``Write`` and
        ``ValueError`` for a log write that does not fit the log as the writes before it
        (in this call and in earlier ones) left it."""
        for write in writes:
            if not _is_well_formed(write):
                raise TypeError(f"not a well-formed write: {write!r:.200}")
            kind = type(write)
            if kind is AppendEntry:
                position = write.entry.position
                if not _follows(position, self.last):
                    raise ValueError(f"log entry at {position} does not follow {self.last}")
                self._appended.append(position)
                self.last = position
            elif kind is TrimLogBefore:
                self._trim(write.index)
            elif kind is TruncateLogAfter:
                self._truncate(write.position)
            elif kind is ResetLog:
                self._reset(write.position)

    def _reset(self, position: Position) -> None:
        """The log is empty and ends at ``position``."""
        self.base = self.last = position
        self._appended.clear()
        self._stored_index_max = position.index

    def _trim(self, index: int) -> None:
        if index > self.last.index + 1:
            raise ValueError(f"cannot remove the log entries below {index}: "
                             f"the log ends at {self.last}")
        if index > self.base.index + 1:
            self.base = self._position_before(index)
            del self._appended[:bisect_left(self._appended, index, key=_index_of)]

    def _truncate(self, position: Position) -> None:
        if not self.base.index <= position.index <= self.last.index:
            raise ValueError(f"cannot truncate the log after {position}: it holds the entries "
                             f"after {self.base} up to {self.last}")
        held = self._position_before(position.index + 1)
        if held != position:
            raise ValueError(f"cannot truncate the log after {position}: the log holds {held} "
                             f"there")
        self.last = position
        del self._appended[bisect_left(self._appended, position.index + 1, key=_index_of):]
        self._stored_index_max = min(self._stored_index_max, position.index)

    def _position_before(self, index: int) -> Position:
        """The position of the entry with the highest index below ``index`` in the log as the
        writes checked so far left it, or the base if there is none."""
        appended = self._appended
        count = bisect_left(appended, index, key=_index_of)
        if count:
            return appended[count - 1]
        if self._stored_index_max > self.base.index:
            stored = self._entry_before(min(index, self._stored_index_max + 1))
            if stored is not None and stored.index > self.base.index:
                return stored
        return self.base
