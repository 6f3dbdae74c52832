"""The ``Store`` protocol: what every node keeps durably, and the rules both stores follow.

A store holds three things:

- **data**: one row per key (``Record``: kind, value, expiry, version), the materialised state
  at the last log position;
- **the replication log**: ``LogEntry`` values by index, each stored with a CRC32C; positions
  strictly increase in index and never decrease in epoch, and entries stay after commit until a
  retention policy removes a prefix (``TrimLogBefore``) or a snapshot install empties the log
  (``ResetLog``);
- **meta**: node metadata by name (epoch, vote, identity, ...), each an ``int``, ``str`` or
  ``bytes``.

``commit`` applies a list of writes (``core.model.Write``) in order and atomically: either every
write is durable (as durable as ``durability`` promises) or none is. So a data change and the log
entry that explains it always commit together. ``commit_many`` does the same for several batches
in one transaction: the group commit of the storage thread. A write that is not well formed (not
a ``Write``, a field of the wrong type) raises ``TypeError`` and a log position that does not
follow the last one raises ``ValueError``; either way nothing of the call is applied.

The two log writes keep the last position apart from the entries: ``TrimLogBefore(index)``
removes the entries below ``index`` and leaves the last position where it was, even when the log
empties (an ``index`` above ``last + 1`` can only be a caller's bug and raises ``ValueError``);
``ResetLog(position)`` empties the log and makes ``position`` the last position, lower than
before if need be (a follower that installs a snapshot from a new leader). Log writes apply in
order with the appends of the same call: entries appended after a reset must follow the reset
position, and a trim after appends may remove them.

``durability`` is what an acknowledged commit survives: ``"fsync"`` a power loss (the commit
returns once the bytes are on the platter), ``"os"`` a process crash only (they are in the OS
page cache; the last commits may be lost when the machine loses power).

The log is addressed by index. ``log_bounds()`` is ``(first, last)``: the first and last index
held, ``(last + 1, last)`` when a trim or a reset emptied it and ``(1, 0)`` on a fresh store. The
last position survives retention, so only a ``ResetLog`` or a ``restore`` moves
``recover().last_position`` back. ``recover().log`` is the tail of the log, oldest first and
CRC-checked, at most the newest ``recover_log_entries_max`` entries: what a restarting leader
serves its followers from and a restarting follower compares with its leader's.
``read_log(after_index, limit)`` returns the entries after ``after_index`` in order, every one
CRC-checked; when retention already removed entries the reader needs it raises ``LogCompacted``
rather than return a gap (the follower is then re-seeded from a snapshot).

``snapshot()`` captures data and meta at the current last position; ``restore(snapshot)``
replaces data, meta and log with it: afterwards the log is empty with the snapshot's position as
its last, and ``recover()`` returns the snapshot's state. The image of a ``Snapshot`` is
``bytes`` for the in-memory store and the path of a SQLite file for the SQLite store; it is
opaque to callers, who move it (as bytes or as a file) to another node of the same kind.

A store belongs to one thread (the storage thread in the server, the simulator's thread in the
simulator); none of its methods may be called from two threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from chorusdb.core.model import (
    AppendEntry,
    ClearRecords,
    DeleteKeys,
    DeleteRecord,
    FlushAll,
    Kind,
    LogEntry,
    PopItems,
    Position,
    PushItems,
    PutMeta,
    PutRecord,
    Record,
    RecoveredState,
    ResetLog,
    SetExpiry,
    SetValue,
    TrimLogBefore,
    Write,
)

Durability = Literal["fsync", "os"]
DURABILITIES: tuple[Durability, ...] = ("fsync", "os")

EFFECT_TYPES = frozenset({SetValue, PushItems, PopItems, DeleteKeys, SetExpiry, FlushAll})
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
    return record.kind is Kind.LIST and type(record.value) is tuple


def _is_position(position: object) -> bool:
    return (type(position) is Position and _is_int64(position.epoch)
            and _is_int64(position.index))


def _is_well_formed(write: object) -> bool:
    kind = type(write)
    if kind is PutRecord:
        return type(write.key) is bytes and _is_record(write.record)
    if kind is AppendEntry:
        entry = write.entry
        return (type(entry) is LogEntry and _is_position(entry.position)
                and type(entry.effect) in EFFECT_TYPES)
    if kind is DeleteRecord:
        return type(write.key) is bytes
    if kind is PutMeta:
        value = write.value
        return type(write.name) is str and (type(value) in (str, bytes) or _is_int64(value))
    if kind is TrimLogBefore:
        return _is_int64(write.index) and write.index >= 0
    if kind is ResetLog:
        position = write.position
        return _is_position(position) and position.epoch >= 0 and position.index >= 0
    return kind is ClearRecords


def _follows(position: Position, last: Position) -> bool:
    """Whether ``position`` may be appended after ``last``: a higher index, no older epoch."""
    return position.index > last.index and position.epoch >= last.epoch


def validate_writes(writes: Sequence[object], last: Position) -> Position:
    """Check ``writes`` before anything of them is applied; returns the new last log position.

    Raises ``TypeError`` for anything that is not a well-formed ``Write`` and ``ValueError`` for
    a log entry whose position does not follow the one before it (a ``ResetLog`` before it in
    ``writes`` included) or a trim beyond the entry after the last.
    """
    for write in writes:
        if not _is_well_formed(write):
            raise TypeError(f"not a well-formed write: {write!r:.200}")
        kind = type(write)
        if kind is AppendEntry:
            position = write.entry.position
            if not _follows(position, last):
                raise ValueError(f"log entry at {position} does not follow {last}")
            last = position
        elif kind is TrimLogBefore:
            if write.index > last.index + 1:
                raise ValueError(f"cannot remove the log entries below {write.index}: "
                                 f"the log ends at {last}")
        elif kind is ResetLog:
            last = write.position
    return last
