"""An in-memory ``Store`` that also models a disk, for the deterministic simulator and tests.

It passes the same contract tests as ``SqliteStore``; what it adds is a model of what a crash
leaves on disk, so the simulator can test recovery without files.

**The disk model.** Every transaction (a commit, a group commit, a log trim) becomes one
*storage record* (``encoding.encode_transaction``: a CRC32C over the whole transaction, then the
transaction's writes, the log's own and ``PutDivergent`` among them) appended to the disk. A
record is first *written* (in the OS page cache: ``pending``) and becomes *durable* when synced
(on the platter)::

    records:  [ durable ... durable | pending ... pending ]
                                    ^ synced_count

- ``write(writes)`` appends one record, pending; ``sync()`` makes everything pending durable (an
  fsync, or the OS writing dirty pages back). ``commit``/``commit_many`` are ``write`` plus, with
  durability ``"fsync"``, ``sync``.
- ``crash(rng, power_loss=False)``: the process dies; the page cache survives, so every written
  record is still there (SIGKILL does not lose un-fsynced data).
- ``crash(rng, power_loss=True, torn_probability=p)``: durable records survive, of the pending
  ones a random prefix reached the disk (possibly none, possibly all) and, with probability
  ``p``, the last of those is torn: cut short or with bytes flipped.
- ``recover()`` replays the records in order, checks each CRC, and stops at the first bad one,
  dropping it and everything after it (``last_recovery`` says how many and whether a torn record
  was found: the simulator's ``torn_record_recovered`` probe). A record is all or nothing, so a
  torn record that carried a ``ResetLog``, a trim or a truncation leaves the log as it was
  before it, and one that carried a truncation with the ``PutDivergent`` rows of the entries it
  removed leaves neither: the entries are back in the log and not in the divergent table.

With ``verify_crc=False`` (the simulator's known-bug switch) recovery skips the CRC check: a
torn record that still decodes is replayed as if it were intact, which silently corrupts keys or
the log. That is what the CRC buys; the crash tests show both.

**Keeping it cheap.** The simulator restarts nodes often, so nothing is replayed unless a crash
actually lost or tore something: the store keeps the materialised state (``live``) next to the
records, and ``recover()`` only copies it. Durable records are folded into a *checkpoint* (the
state they produce; only durable records, so a power loss never has to undo it) once
``fold_records_min`` of them accumulate, which bounds both memory and replay time: after a power
loss the state is the checkpoint plus the records that survived. ``restore`` replaces the
checkpoint and empties the disk, as the SQLite store replaces its file; the new checkpoint keeps
the divergent table, which the SQLite store copies into the file it restores too.

No file I/O, no clock, no global random: ``crash`` draws from the ``random.Random`` it is given.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass

from chorusdb import limits
from chorusdb.core.model import (
    ZERO_POSITION,
    AppendEntry,
    ClearRecords,
    DeleteRecord,
    DivergentEntry,
    LogEntry,
    Position,
    PutDivergent,
    PutMeta,
    PutRecord,
    Record,
    RecoveredState,
    ResetLog,
    TrimLogBefore,
    TruncateLogAfter,
    Write,
)
from chorusdb.storage import base
from chorusdb.storage.base import (
    LogCheck,
    LogCompacted,
    Snapshot,
    check_durability,
)
from chorusdb.storage.encoding import (
    CorruptRecord,
    ResetStore,
    decode_transaction,
    encode_transaction,
)

fold_records_min = 256
"""Durable records kept as bytes before they are folded into the checkpoint."""
torn_cut_probability = 0.5
"""Of torn records, the share cut short; the others get one byte flipped."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What the last ``recover()`` found on the disk model.

    ``records_replayed`` counts records replayed from bytes (0 when nothing was lost and the
    in-memory state was still valid); ``records_dropped`` the records at and after the first
    bad one, which recovery removed; ``torn_detected`` whether there was a bad one.
    """

    records_replayed: int
    records_dropped: int
    torn_detected: bool


NOTHING_REPLAYED = RecoveryReport(records_replayed=0, records_dropped=0, torn_detected=False)


@dataclass(frozen=True, slots=True)
class _DiskRecord:
    """One storage record on the disk model.

    ``data`` is what the disk holds (recovery reads nothing else); ``operations`` is what was
    written, kept so that folding durable records into the checkpoint needs no decoding.
    """

    data: bytes
    operations: Sequence[object]


@dataclass(frozen=True, slots=True)
class CrashReport:
    """What a ``crash`` did to the records that were written but not synced."""

    power_loss: bool
    pending_kept: int
    pending_lost: int
    torn: bool


class _State:
    """Data, meta, log and divergent table materialised from storage records."""

    __slots__ = ("records", "meta", "log_indexes", "log_entries", "base", "divergent")

    def __init__(self) -> None:
        self.records: dict[bytes, Record] = {}
        self.meta: dict[str, int | str | bytes] = {}
        self.log_indexes: list[int] = []
        self.log_entries: list[LogEntry] = []
        self.base = ZERO_POSITION
        """The position before the first entry, and the last position when the log is empty:
        the last entry retention removed, or the position of a ``ResetLog`` or a restored
        snapshot."""
        self.divergent: dict[int, DivergentEntry] = {}

    def copy(self) -> _State:
        state = _State()
        state.records = dict(self.records)
        state.meta = dict(self.meta)
        state.log_indexes = list(self.log_indexes)
        state.log_entries = list(self.log_entries)
        state.base = self.base
        state.divergent = dict(self.divergent)
        return state

    @property
    def last_position(self) -> Position:
        return self.log_entries[-1].position if self.log_entries else self.base

    def entry_before(self, index: int) -> Position | None:
        """The position of the entry with the highest index below ``index``, if any."""
        count = bisect.bisect_left(self.log_indexes, index)
        return self.log_entries[count - 1].position if count else None

    def log_check(self) -> LogCheck:
        """A check of writes to be applied to this state."""
        return LogCheck(self.base, self.last_position, self.entry_before)

    def apply(self, operation: object) -> None:
        kind = type(operation)
        if kind is PutRecord:
            self.records[operation.key] = operation.record
        elif kind is AppendEntry:
            self.log_indexes.append(operation.entry.position.index)
            self.log_entries.append(operation.entry)
        elif kind is DeleteRecord:
            self.records.pop(operation.key, None)
        elif kind is PutMeta:
            self.meta[operation.name] = operation.value
        elif kind is ClearRecords:
            self.records.clear()
        elif kind is TrimLogBefore:
            cut = bisect.bisect_left(self.log_indexes, operation.index)
            if cut:
                self.base = self.log_entries[cut - 1].position
                del self.log_indexes[:cut]
                del self.log_entries[:cut]
        elif kind is TruncateLogAfter:
            kept = bisect.bisect_right(self.log_indexes, operation.position.index)
            del self.log_indexes[kept:]
            del self.log_entries[kept:]
            assert self.last_position == operation.position, (self.last_position, operation)
        elif kind is PutDivergent:
            self.divergent[operation.item.entry_id] = operation.item
        elif kind is ResetLog:
            self.log_indexes = []
            self.log_entries = []
            self.base = operation.position
        else:
            assert kind is ResetStore, operation
            self.records = {}
            self.meta = {}
            self.log_indexes = []
            self.log_entries = []
            self.base = operation.position


def _check_replayed(operations: tuple[object, ...], state: _State) -> None:
    """Raise ``CorruptRecord`` unless a decoded record holds operations a store could have
    written onto ``state`` (only a record replayed without its CRC check can fail this)."""
    check = state.log_check()
    try:
        for operation in operations:
            # A ``ResetStore`` does to the log what a ``ResetLog`` does, and is checked as one.
            check.check((ResetLog(operation.position) if type(operation) is ResetStore
                         else operation,))
    except (TypeError, ValueError) as error:
        raise CorruptRecord(f"storage record holds an impossible operation: {error}") from error


def _tear(record: bytes, rng: random.Random) -> bytes:
    """The record as a power loss in the middle of writing it may leave it."""
    if rng.random() < torn_cut_probability:
        return record[:rng.randrange(len(record))]
    offset = rng.randrange(len(record))
    flipped = record[offset] ^ rng.randrange(1, 256)
    return record[:offset] + bytes((flipped,)) + record[offset + 1:]


class MemoryStore:
    """The in-memory ``Store`` and disk model; see the module docstring."""

    def __init__(self, *, durability: str = "fsync", verify_crc: bool = True) -> None:
        self.durability = check_durability(durability)
        self.verify_crc = verify_crc
        self.commits_total = 0
        self.writes_total = 0
        self.last_recovery = NOTHING_REPLAYED
        self._checkpoint = _State()
        self._records: list[_DiskRecord] = []
        self._synced_count = 0
        self._live: _State | None = _State()
        """The state of every record written; ``None`` after a crash that lost or tore one."""
        self._running = True
        """False after ``close`` or ``crash`` until the next ``recover``."""

    # --- the disk model ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records written and not yet synced."""
        return len(self._records) - self._synced_count

    @property
    def _state(self) -> _State:
        assert self._running and self._live is not None, "the store is not open: recover() it"
        return self._live

    def write(self, writes: Sequence[Write]) -> None:
        """Commit ``writes`` as one pending record (written, not synced)."""
        self._write_batches((writes,))

    def sync(self) -> None:
        """Everything pending becomes durable. Runs whether the process is up or down (the OS
        writes its page cache back either way)."""
        if self.pending == 0:
            return
        self._synced_count = len(self._records)
        if self._synced_count >= fold_records_min:
            checkpoint = self._checkpoint
            for record in self._records:
                for operation in record.operations:
                    checkpoint.apply(operation)
            self._records.clear()
            self._synced_count = 0

    def crash(self, rng: random.Random, *, power_loss: bool,
              torn_probability: float) -> CrashReport:
        """The process dies, and with ``power_loss`` the machine too; see the module docstring."""
        self._running = False
        pending = self.pending
        if not power_loss or pending == 0:
            return CrashReport(power_loss, pending_kept=pending, pending_lost=0, torn=False)
        kept = rng.randint(0, pending)
        del self._records[self._synced_count + kept:]
        torn = kept > 0 and rng.random() < torn_probability
        if torn:
            last = self._records[-1]
            self._records[-1] = _DiskRecord(_tear(last.data, rng), last.operations)
        # Whatever reached the platter before the power went is durable now.
        self._synced_count = len(self._records)
        if kept < pending or torn:
            self._live = None
        return CrashReport(power_loss, pending_kept=kept, pending_lost=pending - kept, torn=torn)

    def _replay(self, state: _State,
                records: list[_DiskRecord]) -> tuple[int, CorruptRecord | None]:
        """Decode ``records`` and apply them to ``state`` in order up to the first bad one;
        returns how many were applied and the error of the bad one (``None`` if all were good)."""
        for count, record in enumerate(records):
            try:
                operations = decode_transaction(record.data, verify_crc=self.verify_crc)
                _check_replayed(operations, state)
            except CorruptRecord as error:
                return count, error
            for operation in operations:
                state.apply(operation)
        return len(records), None

    # --- Store ----------------------------------------------------------------------------------

    def recover(self) -> RecoveredState:
        if self._live is None:
            replayed, bad = self._replay(self._checkpoint, self._records)
            dropped = len(self._records) - replayed
            self._records.clear()
            self._synced_count = 0
            self._live = self._checkpoint.copy()
            self.last_recovery = RecoveryReport(replayed, dropped, torn_detected=bad is not None)
        else:
            self.last_recovery = NOTHING_REPLAYED
        self._running = True
        live = self._live
        tail_start = max(0, len(live.log_entries) - base.recover_log_entries_max)
        log = tuple(live.log_entries[tail_start:])
        divergent = tuple(live.divergent[entry_id] for entry_id in sorted(live.divergent))
        return RecoveredState(dict(live.records), dict(live.meta), live.last_position, log,
                              divergent)

    def commit(self, writes: Sequence[Write]) -> None:
        self.commit_many((writes,))

    def commit_many(self, batches: Sequence[Sequence[Write]]) -> None:
        if self._write_batches(batches) and self.durability == "fsync":
            self.sync()

    def _write_batches(self, batches: Sequence[Sequence[Write]]) -> bool:
        """Check, encode and apply ``batches`` as one pending record; False if they were empty."""
        state = self._state
        check = state.log_check()
        for writes in batches:
            check.check(writes)
        operations = [write for writes in batches for write in writes]
        if not operations:
            return False
        record = _DiskRecord(encode_transaction(operations), operations)
        for operation in operations:
            state.apply(operation)
        assert (state.base, state.last_position) == (check.base, check.last), (
            state.base, state.last_position, check.base, check.last)
        self._records.append(record)
        self.commits_total += 1
        self.writes_total += len(operations)
        return True

    def log_bounds(self) -> tuple[int, int]:
        state = self._state
        if state.log_indexes:
            return state.log_indexes[0], state.log_indexes[-1]
        last = state.base.index
        return last + 1, last

    def read_log(self, after_index: int, limit: int) -> list[LogEntry]:
        assert 0 < limit <= limits.log_read_entries_max, limit
        assert after_index >= 0, after_index
        first, _ = self.log_bounds()
        if after_index < first - 1:
            raise LogCompacted(after_index, first)
        state = self._state
        start = bisect.bisect_right(state.log_indexes, after_index)
        return state.log_entries[start:start + limit]

    def truncate_log_before(self, index: int) -> int:
        first, _ = self.log_bounds()
        if index <= first:
            return 0
        entries = len(self._state.log_entries)
        self.commit((TrimLogBefore(index),))
        return entries - len(self._state.log_entries)

    def snapshot(self) -> Snapshot:
        state = self._state
        position = state.last_position
        operations: list[object] = [ResetStore(position)]
        operations.extend(PutRecord(key, record) for key, record in state.records.items())
        operations.extend(PutMeta(name, value) for name, value in state.meta.items())
        return Snapshot(position, encode_transaction(operations))

    def restore(self, snapshot: Snapshot) -> None:
        assert isinstance(snapshot.image, bytes), "an in-memory store restores from bytes"
        state = self._state
        operations = decode_transaction(snapshot.image, verify_crc=True)
        if not operations or operations[0] != ResetStore(snapshot.position):
            raise CorruptRecord(f"snapshot image does not start at {snapshot.position}")
        _check_replayed(operations, state)
        checkpoint = _State()
        checkpoint.divergent = dict(state.divergent)
        for operation in operations:
            checkpoint.apply(operation)
        self._checkpoint = checkpoint
        self._records.clear()
        self._synced_count = 0
        self._live = checkpoint.copy()

    def close(self) -> None:
        self._running = False
