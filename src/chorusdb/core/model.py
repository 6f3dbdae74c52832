"""The values every mode shares: positions, stored records, logical effects and log entries.

Effects are *logical*: the resulting change, never the command that asked for it. ``INCR`` is
replicated as the value it produced and a TTL as an absolute expiry time, so replaying the log
gives the same state on every node whatever its clock says (the warning about ``now()`` in
statement-based replication).

Writes are what the driver must persist, in order, in one transaction, before it sends the
messages and replies of the same ``Ready``: the data rows a batch changed and the log entries
that explain the change commit together, so the log and the data never disagree after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from chorusdb.core.causal import Hlc, Version, VersionVector


class Kind(IntEnum):
    """The type of a stored value (Redis's TYPE). ``REPLICATED`` is a multi-leader key: its
    value is a ``multileader_keyspace.ReplicatedValue`` (versions, counter totals, events)."""

    STRING = 0
    LIST = 1
    REPLICATED = 2


NO_EXPIRY = 0
"""``expire_at_ms`` of a record that never expires."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the replication log: ``(epoch, index)``, ordered as a tuple.

    ``index`` counts entries from 1 and never repeats on a node, across restarts too; ``epoch``
    is the leader term in leader mode and stays 0 where there is no leader.
    """

    epoch: int
    index: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.index}"


ZERO_POSITION = Position(0, 0)


@dataclass(frozen=True, slots=True)
class Record:
    """One key's stored state. Immutable: a batch handed to storage never changes under it.

    ``value`` is ``bytes`` for strings and a tuple of ``bytes`` for lists. ``expire_at_ms`` is an
    absolute wall-clock time in milliseconds (``NO_EXPIRY`` for none). ``version`` is the log
    index of the write that produced this state.
    """

    kind: Kind
    value: bytes | tuple[bytes, ...]
    expire_at_ms: int
    version: int


# --- logical effects (what the log carries) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetValue:
    """The key now holds the string ``value`` (SET, INCR's result, APPEND's result, ...)."""

    key: bytes
    value: bytes
    expire_at_ms: int


@dataclass(frozen=True, slots=True)
class PushItems:
    """``items`` were pushed, in this order, at the head (``left``) or tail of the list."""

    key: bytes
    items: tuple[bytes, ...]
    left: bool


@dataclass(frozen=True, slots=True)
class PopItems:
    """``count`` items were removed from the head (``left``) or tail of the list."""

    key: bytes
    count: int
    left: bool


@dataclass(frozen=True, slots=True)
class DeleteKeys:
    """The keys no longer exist (DEL, and expired keys reclaimed)."""

    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SetExpiry:
    """The key now expires at ``expire_at_ms`` (``NO_EXPIRY``: PERSIST)."""

    key: bytes
    expire_at_ms: int


@dataclass(frozen=True, slots=True)
class FlushAll:
    """Every key was removed (FLUSHDB)."""


@dataclass(frozen=True, slots=True)
class EpochStart:
    """The first entry of every epoch in leader mode: ``leader`` won the election of that epoch.
    It changes no data; committing it commits every entry before it (a leader counts copies
    only of entries of its own epoch), and it says in the log itself who wrote the epoch."""

    leader: str


@dataclass(frozen=True, slots=True)
class Request:
    """A write sent as ``CHORUS.ONCE request_id command ...``: the wrapped command's
    ``effects``, applied in order, and its ``reply`` (``keyspace.encode_reply``) remembered under
    ``request_id`` until ``expire_at_ms``. One entry holds both, so every node that applies the
    write knows the request too, and a retry of it on any node (after a failover too) answers
    the remembered reply instead of applying the write again. ``effects`` never holds another
    ``Request`` or an ``EpochStart``, and is never empty."""

    request_id: bytes
    reply: bytes
    expire_at_ms: int
    effects: tuple[Effect, ...]


# --- multi-leader effects: each is one write, named by its dot (origin, seq) -------------------


@dataclass(frozen=True, slots=True)
class VersionWritten:
    """A register write in multi-leader mode: ``version`` (its dot, stamp and value; ``None``
    for a DEL) written by a node that had seen ``context`` (the versions it supersedes)."""

    key: bytes
    version: Version
    context: VersionVector

    @property
    def origin(self) -> str:
        return self.version.origin

    @property
    def seq(self) -> int:
        return self.version.seq


@dataclass(frozen=True, slots=True)
class CounterChanged:
    """An INCRBY/DECRBY in multi-leader mode: ``origin``'s running totals of what it added and
    subtracted on the key (a PN-counter's state for one origin: merged by maximum)."""

    key: bytes
    origin: str
    seq: int
    hlc: Hlc
    added: int
    subtracted: int


@dataclass(frozen=True, slots=True)
class EventsAppended:
    """An RPUSH in multi-leader mode: ``items`` appended as events of one dot; a key's events
    are ordered by (stamp, origin, seq, position), so every node lists them the same way."""

    key: bytes
    origin: str
    seq: int
    hlc: Hlc
    items: tuple[bytes, ...]


ReplicatedEffect = VersionWritten | CounterChanged | EventsAppended

Effect = (SetValue | PushItems | PopItems | DeleteKeys | SetExpiry | FlushAll | EpochStart
          | Request | VersionWritten | CounterChanged | EventsAppended)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the replication log: where it stands and what it changed."""

    position: Position
    effect: Effect


# --- writes (what the driver persists) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutRecord:
    """Store ``record`` as the state of ``key`` (insert or replace the data row)."""

    key: bytes
    record: Record


@dataclass(frozen=True, slots=True)
class DeleteRecord:
    """Remove the data row of ``key``."""

    key: bytes


@dataclass(frozen=True, slots=True)
class ClearRecords:
    """Remove every data row."""


@dataclass(frozen=True, slots=True)
class AppendEntry:
    """Append ``entry`` to the replication log."""

    entry: LogEntry


@dataclass(frozen=True, slots=True)
class PutMeta:
    """Store a node metadata value (epoch, vote, identity, ...) under ``name``."""

    name: str
    value: int | str | bytes


@dataclass(frozen=True, slots=True)
class TrimLogBefore:
    """Log retention: remove the log entries with an index below ``index``. The last position
    is unchanged (it survives even when the log becomes empty)."""

    index: int


@dataclass(frozen=True, slots=True)
class ResetLog:
    """Empty the log and make ``position`` its last position (a snapshot was installed: the data
    rows written in the same batch are the state at ``position``). ``position`` may be below
    the current last position."""

    position: Position


@dataclass(frozen=True, slots=True)
class TruncateLogAfter:
    """Remove the log entries after ``position`` (which is in the log, or is its base): they
    diverge from the new leader's log. The last position becomes ``position``. The entries are
    quarantined (``PutDivergent``) in the same batch, before this write."""

    position: Position


@dataclass(frozen=True, slots=True)
class DivergentEntry:
    """A log entry this node removed because the leader of a later epoch does not hold it: a
    write that may have been acknowledged (with W + Q <= N) or was never acknowledged, kept for
    an operator to reapply or discard.

    ``entry_id`` is unique on this node and ascending. ``leader`` wrote the entry (``""``: not
    known here); ``removed_by`` is the leader whose log replaced it. ``verified`` says the new
    leader's log held another entry at the same position; an unverified entry was removed by a
    snapshot install and may also be in the leader's history. ``resolution`` is ``""`` while
    pending, then ``"reapplied"`` or ``"discarded"``, with who resolved it and when.
    """

    entry_id: int
    entry: LogEntry
    leader: str
    removed_at_ms: int
    removed_by: str
    verified: bool
    resolution: str = ""
    resolved_by: str = ""
    resolved_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PutDivergent:
    """Store ``item`` in the ``divergent`` table (insert, or replace the row of its id)."""

    item: DivergentEntry


Write = (PutRecord | DeleteRecord | ClearRecords | AppendEntry | PutMeta | TrimLogBefore | ResetLog
         | TruncateLogAfter | PutDivergent)


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What a node finds on its disk at start: the input to every core's constructor.

    ``last_position`` is the last log entry that survived (its CRC checked), ``ZERO_POSITION``
    on a fresh node; ``records`` is the data as last committed: at exactly that position for a
    standalone node, while a replicated core that applies entries later keeps the position its
    data reflects in ``meta``. ``log`` is the tail of
    the log the store still holds, oldest first, every entry CRC-checked: all of it, or the
    newest entries up to the store's bound when the log is longer. It ends at ``last_position``
    unless retention or a ``ResetLog`` emptied the log (then it is empty). ``divergent`` is the
    ``divergent`` table, by ascending id.
    """

    records: dict[bytes, Record]
    meta: dict[str, int | str | bytes]
    last_position: Position
    log: tuple[LogEntry, ...] = ()
    divergent: tuple[DivergentEntry, ...] = ()
