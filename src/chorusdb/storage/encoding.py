"""The byte formats of storage: record values, log entries and the in-memory store's disk records.

Everything is encoded with ``wire.codec.DataclassCodec`` (msgpack, one extension tag per type).
The tags below are an **on-disk format**: a SQLite file or a snapshot written today must be read
by every later version, so a tag is never reused for another type and a type whose fields change
gets a new tag (the old one stays readable or the schema version moves).

==== ==================== ===================================================================
tag  type                 where it is stored
==== ==================== ===================================================================
1    ``Position``         inside log entries and storage records
2    ``Record``           inside ``PutRecord`` (in-memory store records)
10   ``SetValue``         effect of a log entry
11   ``PushItems``        effect of a log entry
12   ``PopItems``         effect of a log entry
13   ``DeleteKeys``       effect of a log entry
14   ``SetExpiry``        effect of a log entry
15   ``FlushAll``         effect of a log entry
16   ``EpochStart``       effect of a log entry (the first entry of an epoch in leader mode)
17   ``Request``          effect of a log entry (a CHORUS.ONCE write: effects and its reply)
20   ``LogEntry``         inside the in-memory store's records
21   ``DivergentEntry``   inside ``PutDivergent``
30   ``PutRecord``        a write, in an in-memory store record
31   ``DeleteRecord``     a write, in an in-memory store record
32   ``ClearRecords``     a write, in an in-memory store record
33   ``AppendEntry``      a write, in an in-memory store record
34   ``PutMeta``          a write, in an in-memory store record
35   ``TrimLogBefore``    a write, in an in-memory store record (log retention)
36   ``ResetLog``         a write, in an in-memory store record (a snapshot install)
37   ``TruncateLogAfter`` a write, in an in-memory store record (a divergent suffix removed)
38   ``PutDivergent``     a write, in an in-memory store record (a row of the divergent table)
40   (retired)            was ``TrimLog``, storage's own trim before ``TrimLogBefore``; never
                          reuse it (no in-memory record outlives its process, so none is left)
41   ``ResetStore``       storage's own operation: a snapshot replaced everything
80   ``VersionWritten``   effect of a log entry (multi-leader: a register write or delete)
81   ``CounterChanged``   effect of a log entry (multi-leader: an origin's counter totals)
82   ``EventsAppended``   effect of a log entry (multi-leader: an RPUSH)
83   ``Version``          inside ``VersionWritten`` and ``VersionedValue``
84   ``VersionVector``    inside ``VersionWritten`` and ``VersionedValue``
85   ``Hlc``              inside the multi-leader effects and values
86   ``VersionedValue``   inside ``ReplicatedValue`` (a register's versions)
87   ``CounterValue``     inside ``ReplicatedValue`` (a PN-counter)
88   ``ReplicatedValue``  the value of a ``Kind.REPLICATED`` record
89   ``Event``            inside ``ReplicatedValue`` (one item of an event list)
==== ==================== ===================================================================

Three formats are built from these:

- **Record values** (the SQLite ``data.value`` column): a string is its bytes as they are; a list
  is the msgpack array of its items; a multi-leader key is its encoded ``ReplicatedValue``. The
  kind is a column of its own, so a string or a list needs no tag.
- **Log entries** (the SQLite ``log`` table, and the entries of its ``divergent`` table): the
  encoded effect in the ``entry`` column (the position is the row's own ``(epoch, idx)``) and,
  in the ``crc`` column, a CRC32C over the position (two big-endian u64) followed by those
  bytes — so an entry found at another position than it was written at fails too. On read the
  CRC is checked and the bytes must decode to an effect; any failure raises ``CorruptRecord``,
  because a record that fails its check is an error, never data.
- **Storage records** (the in-memory store's disk model, and its snapshot images): one record per
  transaction, ``crc32c(payload)`` as 4 big-endian bytes followed by ``payload``, the encoded
  tuple of the transaction's operations (writes, and ``ResetStore`` in snapshot images). A record
  cut short or with a flipped bit fails the CRC, which is how recovery finds a torn tail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import crc32c
import struct

from chorusdb.core.causal import CounterValue, Hlc, Version, VersionedValue, VersionVector
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
    Request,
    ResetLog,
    SetExpiry,
    SetValue,
    TrimLogBefore,
    TruncateLogAfter,
    VersionWritten,
)
from chorusdb.core.multileader_keyspace import Event, ReplicatedValue
from chorusdb.storage.base import EFFECT_TYPES
from chorusdb.wire.codec import CodecError, DataclassCodec

crc_bytes = 4
"""Length of the CRC32C that starts every storage record (big-endian)."""


class CorruptRecord(Exception):
    """A stored record failed its check (CRC, decoding or shape): an error, never data."""


@dataclass(frozen=True, slots=True)
class ResetStore:
    """Everything was replaced by a snapshot taken at ``position``: no data, no meta, an empty
    log whose last position is ``position``. The snapshot's rows follow in the same record. The
    divergent table stays: it is the node's own, not part of the state at a position."""

    position: Position


STORAGE_TYPE_TAGS = MappingProxyType({
    1: Position,
    2: Record,
    10: SetValue,
    11: PushItems,
    12: PopItems,
    13: DeleteKeys,
    14: SetExpiry,
    15: FlushAll,
    16: EpochStart,
    17: Request,
    20: LogEntry,
    21: DivergentEntry,
    30: PutRecord,
    31: DeleteRecord,
    32: ClearRecords,
    33: AppendEntry,
    34: PutMeta,
    35: TrimLogBefore,
    36: ResetLog,
    37: TruncateLogAfter,
    38: PutDivergent,
    41: ResetStore,
    80: VersionWritten,
    81: CounterChanged,
    82: EventsAppended,
    83: Version,
    84: VersionVector,
    85: Hlc,
    86: VersionedValue,
    87: CounterValue,
    88: ReplicatedValue,
    89: Event,
})
"""Tag -> type of every value storage encodes; see the table in the module docstring."""

_codec = DataclassCodec(STORAGE_TYPE_TAGS)


def checksum(data: bytes) -> int:
    """CRC32C of ``data`` (an unsigned 32-bit int)."""
    return crc32c.crc32c(data)


# --- record values -------------------------------------------------------------------------------


def encode_value(record: Record) -> bytes:
    """The ``data.value`` column of ``record``: a string's bytes, or the encoded list or
    multi-leader value."""
    if record.kind is Kind.STRING:
        assert type(record.value) is bytes, record
        return record.value
    assert (record.kind is Kind.LIST and type(record.value) is tuple) or (
        record.kind is Kind.REPLICATED and type(record.value) is ReplicatedValue), record
    return _codec.encode(record.value)


def decode_record(kind: int, value: bytes, expire_at_ms: int, version: int) -> Record:
    """A ``Record`` from the columns of its data row; ``CorruptRecord`` if they do not form one."""
    if kind == Kind.STRING and type(value) is bytes:
        return Record(Kind.STRING, value, expire_at_ms, version)
    if kind == Kind.LIST and type(value) is bytes:
        try:
            items = _codec.decode(value)
        except CodecError as error:
            raise CorruptRecord(f"list value does not decode: {error}") from error
        if type(items) is tuple and all(type(item) is bytes for item in items):
            return Record(Kind.LIST, items, expire_at_ms, version)
    if kind == Kind.REPLICATED and type(value) is bytes:
        try:
            replicated = _codec.decode(value)
        except CodecError as error:
            raise CorruptRecord(f"multi-leader value does not decode: {error}") from error
        if type(replicated) is ReplicatedValue:
            return Record(Kind.REPLICATED, replicated, expire_at_ms, version)
    raise CorruptRecord(f"data row of kind {kind!r} holds {type(value).__name__} {value!r:.40}")


# --- log entries ----------------------------------------------------------------------------------


_POSITION = struct.Struct(">QQ")


def _entry_checksum(position: Position, data: bytes) -> int:
    """CRC32C over the position and the encoded effect: an intact effect stored at another
    position than the one it was written at fails the check too."""
    return crc32c.crc32c(data, crc32c.crc32c(_POSITION.pack(position.epoch, position.index)))


def encode_entry(entry: LogEntry) -> tuple[bytes, int]:
    """The ``log.entry`` and ``log.crc`` columns of ``entry``. The position lives in the row's
    own columns, so the blob holds only the effect (one dataclass to encode, not three)."""
    data = _codec.encode(entry.effect)
    return data, _entry_checksum(entry.position, data)


def decode_entry(position: Position, data: bytes, crc: int) -> LogEntry:
    """The entry stored at ``position`` as ``data`` with checksum ``crc``, checked.

    Raises ``CorruptRecord`` when the CRC does not match (damaged bytes, or an entry moved to
    another position) or the bytes do not decode to an effect.
    """
    if type(data) is not bytes or _entry_checksum(position, data) != crc:
        raise CorruptRecord(f"log entry {position}: CRC32C mismatch")
    try:
        effect = _codec.decode(data)
    except CodecError as error:
        raise CorruptRecord(f"log entry {position}: {error}") from error
    if type(effect) not in EFFECT_TYPES:
        raise CorruptRecord(f"log entry {position}: holds {effect!r:.80}")
    return LogEntry(position, effect)


# --- storage records ------------------------------------------------------------------------------


def encode_transaction(operations: Sequence[object]) -> bytes:
    """One storage record: the CRC32C of the encoded operations, then the encoded operations."""
    payload = _codec.encode(tuple(operations))
    return checksum(payload).to_bytes(crc_bytes, "big") + payload


def decode_transaction(record: bytes, *, verify_crc: bool) -> tuple[object, ...]:
    """The operations of one storage record, in order.

    Raises ``CorruptRecord`` when the record is shorter than its CRC, fails it (only checked with
    ``verify_crc``), or does not decode to a tuple. With ``verify_crc=False`` a damaged record
    that still decodes comes back as if it were intact: that is the defect the flag exists to
    demonstrate. The caller checks the operations themselves.
    """
    if len(record) < crc_bytes:
        raise CorruptRecord(f"storage record of {len(record)} bytes is shorter than its CRC")
    payload = record[crc_bytes:]
    if verify_crc and checksum(payload) != int.from_bytes(record[:crc_bytes], "big"):
        raise CorruptRecord("storage record: CRC32C mismatch")
    try:
        operations = _codec.decode(payload)
    except CodecError as error:
        raise CorruptRecord(f"storage record: {error}") from error
    if type(operations) is not tuple:
        raise CorruptRecord(f"storage record holds {operations!r:.80}")
    return operations
