"""Leader mode: one leader appends every write to the log and streams it to followers; a write
is acknowledged once ``write_quorum`` W members (the leader included) hold it durably.

W = 1 is asynchronous replication, W = 2 semi-synchronous (whichever follower answers first
carries the sync role, so it moves to any follower that is up), W = N fully synchronous. Until
elections exist (the failover work) the leader is ``LeaderSettings.initial_leader`` at epoch 1
and every other member follows it. Messages are in ``core.leader_messages``.

**Leader.** A client write runs against the leader's keyspace at once (its effects are the
log entries: SET as the value, INCR as its result, expiry as an absolute time) and is appended
at ``(epoch, last.index + 1)``. The entries leave in ``Append`` batches in the same ``Ready``
that persists them (the driver persists first, so no follower ever holds an entry the leader
could lose), at most ``append_batch_entries_max`` entries or ``append_batch_bytes_max`` bytes
each, and at most ``inflight_entries_max`` entries beyond what the follower confirmed. The
leader's own copy is durable when the ``Ready`` is advanced; a follower's when its
``AppendReply`` says so. The commit position is the highest index W members hold durably; every
reply — reads included — waits in index order until the commit covers the log as it stood when
the command ran, so nobody is told about a write that could still be lost, and a read never
shows a value that is not yet committed (reads on the leader are linearizable). A reply not
released within ``write_timeout_ms`` is answered ``-INDOUBT`` for a write (it was appended and
may still commit) and ``-NOQUORUM`` for a read (nothing to undo). A write that arrives while
fewer than W members answered within ``quorum_contact_ms`` is refused before it is appended
(``-NOQUORUM``, definite).

Lost, duplicated and reordered messages: a follower skips entries it already holds and answers
a gap with where its log ends; the leader then resends from there. If a follower's confirmed
position makes no progress for ``append_resend_ms`` while entries are in flight, the leader
resends everything after it (go-back-N). A heartbeat (an empty ``Append`` carrying the commit
position) goes to every follower each ``heartbeat_interval_ms``, and at once when the commit
advances, so followers apply promptly.

**Followers** persist entries as they arrive and apply them to their keyspace only once the
leader's commit position covers them (their data is never ahead of what is acknowledged, so a
follower read never shows a write that could be lost); the applied position is kept in meta
with the data it describes. The one exception is a snapshot: it is the leader's data at its
log end, which the leader holds durably (the chunks leave after the persist of the ``Ready``
that made them) but W members may not yet; the follower's applied position is then ahead of
its commit position until the leader's commit catches up. Reads on a follower are answered from that state at once (``stale``:
consistent prefix, not linearizable). Writes are forwarded to the leader (``follower_writes =
"forward"``; answered ``-INDOUBT`` if the leader does not answer within ``write_timeout_ms``) or
refused with ``-NOTLEADER <leader-id> <host:port>`` (``"redirect"``).

**Catch-up and snapshots.** A follower that restarts or reconnects resumes from its durable
position. If the leader no longer holds the entries it needs (``LogTail`` retention), the leader
takes an in-memory copy of its data at its current position (records are immutable, so the copy
is a list of references), cuts it into CRC32C-checked chunks of ``snapshot_chunk_bytes_max``,
and streams them ``snapshot_chunks_inflight_max`` at a time; the follower acknowledges each
chunk with the next one it needs, so a disconnect resumes where it stopped. Entries after the
snapshot keep flowing meanwhile: the follower spools them (at most ``spool_entries_max``) and
appends them right after installing. The install — clear the data, write the records, reset the
log to the snapshot position — is one transaction. The reason a follower was re-seeded is kept
for ``/status``.

**Positions for clients.** ``ClientReply.position`` is where a write landed; the server keeps
it per connection for ``WAIT`` (sent to the core as ``CHORUS.WAITREPLICAS n timeout epoch index``:
the followers whose durable position covers it) and ``CHORUS.POSITION``. ``CHORUS.WAITPOS epoch
index timeout_ms`` waits until this node has applied the position.

Known defects the simulator can switch on (``KNOWN_BUGS``) to show its checkers catch them.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import ClassVar

import crc32c
import msgpack

from chorusdb.core.api import (
    NO_DEADLINE,
    ClientCommand,
    ClientReply,
    Committed,
    CoreConfig,
    Probe,
    Ready,
    WriteAcknowledged,
)
from chorusdb.core.commands import DATA_CATEGORIES, resolve
from chorusdb.core.keyspace import Keyspace
from chorusdb.core.leader_messages import (
    Append,
    AppendReply,
    Forward,
    ForwardReply,
    SnapshotAck,
    SnapshotChunk,
)
from chorusdb.core.log_tail import LogTail, RetentionPolicy
from chorusdb.core.model import (
    ZERO_POSITION,
    AppendEntry,
    ClearRecords,
    DeleteKeys,
    Effect,
    Kind,
    LogEntry,
    Position,
    PutMeta,
    PutRecord,
    Record,
    RecoveredState,
    ResetLog,
    TrimLogBefore,
    Write,
)
from chorusdb.core.standalone import expiry_cycle_interval_ms, expiry_reclaim_keys_max
from chorusdb.replies import OK, Error

append_batch_entries_max = 1024         # entries in one Append
append_batch_bytes_max = 1024 * 1024    # estimated effect bytes in one Append
inflight_entries_max = 16_384           # entries sent to a follower beyond what it confirmed
snapshot_chunk_bytes_max = 1024 * 1024  # estimated record bytes in one snapshot chunk
snapshot_chunks_inflight_max = 4        # chunks sent beyond what the follower acknowledged
snapshot_resend_ms = 1000               # no acknowledgement for this long: resend from there
spool_entries_max = 100_000             # entries a follower keeps while a snapshot streams
forward_dedup_entries_max = 65_536      # forwarded writes remembered to drop duplicates
forwards_pending_max = 65_536           # writes a follower has forwarded and awaits answers for
waiters_max = 100_000                   # WAIT / CHORUS.WAITPOS calls outstanding per node
retention_check_interval_ms = 1000      # how often the retention policy runs
record_overhead_bytes = 48              # the fixed part of a record's size estimate
META_EPOCH = "epoch"
META_INCARNATION = "incarnation"
META_APPLIED_EPOCH = "applied_epoch"
META_APPLIED_INDEX = "applied_index"
META_BASE_EPOCH = "log_base_epoch"
META_BASE_INDEX = "log_base_index"

FOLLOWER_WRITES = ("forward", "redirect")
WAIT_REPLICAS = b"CHORUS.WAITREPLICAS"
WAIT_POSITION = b"CHORUS.WAITPOS"
FOLLOWER_COMMANDS_FORWARDED = frozenset({WAIT_REPLICAS})


@dataclass(frozen=True, slots=True)
class LeaderSettings:
    """The ``[leader]`` configuration; see the module docstring for what each does.

    ``write_quorum`` 0 means a majority; ``initial_leader`` ``""`` the first member.
    ``client_addresses`` maps member ids to their client ``host:port`` (for ``-NOTLEADER``).
    """

    mode: ClassVar[str] = "leader"
    write_quorum: int = 0
    initial_leader: str = ""
    follower_writes: str = "forward"
    client_addresses: tuple[tuple[str, str], ...] = ()
    write_timeout_ms: int = 2000
    heartbeat_interval_ms: int = 100
    append_resend_ms: int = 400
    quorum_contact_ms: int = 1000
    follower_disconnected_ms: int = 1000
    log_retention_entries: int = 100_000
    log_retention_bytes: int = 256 * 1024 * 1024
    log_retention_age_ms: int = 3_600_000
    log_hold_entries_max: int = 1_000_000

    def quorum(self, member_count: int) -> int:
        return self.write_quorum or member_count // 2 + 1

    def leader(self, members: tuple[str, ...]) -> str:
        return self.initial_leader or members[0]

    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(self.log_retention_entries, self.log_retention_bytes,
                               self.log_retention_age_ms, self.log_hold_entries_max)


# --- snapshots -------------------------------------------------------------------------------------


def _record_bytes(key: bytes, record: Record) -> int:
    value = record.value
    size = len(value) if record.kind is Kind.STRING else sum(len(item) for item in value)
    return record_overhead_bytes + len(key) + size


def encode_chunk(items: list[tuple[bytes, Record]]) -> bytes:
    """The bytes of one snapshot chunk: a msgpack array of ``[key, kind, value, expiry,
    version]`` (a list's value is the array of its items)."""
    return msgpack.packb([[key, int(r.kind), r.value, r.expire_at_ms, r.version]
                          for key, r in items], use_bin_type=True)


def decode_chunk(data: bytes) -> list[tuple[bytes, Record]]:
    rows = msgpack.unpackb(data, use_list=False, raw=False)
    return [(key, Record(Kind(kind), value, expire_at_ms, version))
            for key, kind, value, expire_at_ms, version in rows]


class OutgoingSnapshot:
    """A copy of the leader's data at ``position``, cut into chunks on demand."""

    __slots__ = ("position", "_items", "_starts")

    def __init__(self, position: Position, items: list[tuple[bytes, Record]]) -> None:
        self.position = position
        self._items = items
        starts = [0]
        size = 0
        for i, (key, record) in enumerate(items):
            size += _record_bytes(key, record)
            if size > snapshot_chunk_bytes_max and i + 1 < len(items):
                starts.append(i + 1)
                size = 0
        self._starts = starts

    @property
    def chunks(self) -> int:
        return len(self._starts)

    def chunk(self, number: int) -> bytes:
        end = self._starts[number + 1] if number + 1 < len(self._starts) else len(self._items)
        return encode_chunk(self._items[self._starts[number]:end])


@dataclass(slots=True)
class IncomingSnapshot:
    """A follower's chunks of the snapshot at ``position`` so far, and the entries after it
    that arrived meanwhile (``spool``)."""

    position: Position
    chunks: int
    received: list[bytes] = field(default_factory=list)
    spool: list[LogEntry] = field(default_factory=list)


# --- the leader's view of one follower ---------------------------------------------------------------


@dataclass(slots=True)
class FollowerProgress:
    """What the leader knows of one follower."""

    member: str
    match: Position = ZERO_POSITION          # durable on the follower, as it last said
    applied: Position = ZERO_POSITION
    next_index: int = 1                      # the next entry to send
    sent_commit: Position = ZERO_POSITION
    last_reply_ms: int = -1
    last_progress_ms: int = 0
    snapshot_next_chunk: int = -1            # -1: no snapshot streaming to it
    snapshot_sent_chunk: int = 0
    snapshot_progress_ms: int = 0
    reseeds: int = 0                         # snapshots it installed
    reseed_reason: str = ""
    incarnation: int = -1                    # of the follower process that answers now


@dataclass(slots=True)
class Waiter:
    """A reply the leader holds until the commit covers ``index``."""

    index: int
    deadline_ms: int
    request_id: int
    value: object
    position: Position | None
    is_write: bool


@dataclass(slots=True)
class PositionWait:
    """``CHORUS.WAITREPLICAS`` (``replicas``: how many followers must hold ``position``) or
    ``CHORUS.WAITPOS`` (``replicas`` None: this node must have applied it)."""

    request_id: int
    position: Position
    replicas: int | None
    deadline_ms: int                        # NO_DEADLINE: wait for ever (WAIT ... 0)


class LeaderCore:
    """One member of a leader-mode cluster, in either role; see the module docstring."""

    mode = "leader"
    CLAIMS = frozenset({"linearizable", "consistent_prefix", "no_lost_writes", "convergence"})
    KNOWN_BUGS = {
        "ack_before_durable": "the leader counts a follower's copy as durable when it sends the "
                              "entries, not when the follower confirms them",
        "apply_out_of_order": "a follower appends and applies entries that do not follow its "
                              "log (after a gap), so later entries land before earlier ones",
        "skip_chunk_crc": "a follower installs snapshot chunks without checking their CRC",
    }
    DATA_LOSS_EXEMPT_ROLES = frozenset({"leader"})

    def __init__(self, config: CoreConfig, recovered: RecoveredState, rng: random.Random,
                 now_ms: int) -> None:
        unknown_bugs = config.bugs - self.KNOWN_BUGS.keys()
        assert not unknown_bugs, f"unknown bugs for {self.mode}: {sorted(unknown_bugs)}"
        settings = config.settings if config.settings is not None else LeaderSettings()
        assert isinstance(settings, LeaderSettings), settings
        assert settings.follower_writes in FOLLOWER_WRITES, settings.follower_writes
        self.config = config
        self.settings = settings
        self.node_id = config.node_id
        self.quorum = settings.quorum(len(config.members))
        assert 1 <= self.quorum <= len(config.members), (self.quorum, config.members)
        self.leader_id = settings.leader(config.members)
        assert self.leader_id in config.members, (self.leader_id, config.members)
        self.is_leader = self.leader_id == self.node_id
        self.role = "leader" if self.is_leader else "follower"
        self._client_addresses = dict(settings.client_addresses)
        self._retention = settings.retention()
        self._now_ms = now_ms
        meta = recovered.meta
        self.epoch = max(int(meta.get(META_EPOCH, 1)), 1)
        self._ready = Ready()
        self._writes: list[Write] = []
        self._messages: list[object] = []
        self._notes: list[object] = []
        # Always written: the first Ready then persists (and syncs) what the disk gave back,
        # which after a process crash may sit unsynced in the page cache; only that persist
        # makes the recovered log durable (``_durable``).
        self._writes.append(PutMeta(META_EPOCH, self.epoch))
        # The log tail and the data, at the applied position.
        self.log = LogTail(self._recovered_base(recovered), tuple(recovered.log), now_ms)
        assert self.log.last == recovered.last_position, (self.log.last, recovered.last_position)
        if META_APPLIED_INDEX in meta:
            self.applied = Position(int(meta[META_APPLIED_EPOCH]), int(meta[META_APPLIED_INDEX]))
        else:
            self.applied = recovered.last_position
        assert self.applied <= self.log.last, (self.applied, self.log.last)
        assert self.applied.index >= self.log.base.index, (self.applied, self.log.base)
        self.keyspace = Keyspace(dict(recovered.records))
        self._durable = ZERO_POSITION           # until the first Ready has persisted
        self._persisting_to = self.log.last     # the log end in the Ready being persisted
        # What this node knows is acknowledged: a follower applied only that; a leader learns
        # it again from its followers' answers.
        self.commit = ZERO_POSITION if self.is_leader else self.applied
        # None: the first Ready writes the applied position to meta, before any entry is
        # appended ahead of it (without it in meta, recovery takes the data to be at the log's
        # end, which is only true of data written by a standalone node).
        self._applied_written: Position | None = None
        # Leader state.
        self.followers: dict[str, FollowerProgress] = {}
        self._held: deque[Waiter] = deque()
        self._position_waits: list[PositionWait] = []
        self._forwarded: dict[int, tuple[str, int, int]] = {}
        self._forward_seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._next_internal_request = -1
        self._snapshot: OutgoingSnapshot | None = None
        self._next_heartbeat_ms = now_ms
        self._next_expiry_cycle_ms = now_ms
        self._next_retention_ms = now_ms + retention_check_interval_ms
        self._trim_reason = ""
        self._acknowledged: list[WriteAcknowledged] = []
        # Follower state.
        self._reply_to_leader = False
        self._accepted = True
        self._incoming: IncomingSnapshot | None = None
        # This process, in AppendReply and Forward: above every earlier one of this node (its
        # start time, or one more than the last one stored, whichever is higher).
        self._incarnation = max(now_ms, int(meta.get(META_INCARNATION, 0)) + 1)
        self._writes.append(PutMeta(META_INCARNATION, self._incarnation))
        self._forward_sequence = 0
        # (incarnation, sequence) -> (request id, deadline or NO_DEADLINE, is a WAIT)
        self._forwards: dict[tuple[int, int], tuple[int, int, bool]] = {}
        self._last_leader_contact_ms = -1
        self._ticked = False
        self.counters = {"append_messages_sent": 0, "entries_sent": 0, "snapshot_chunks_sent": 0,
                         "snapshot_bytes_sent": 0, "snapshots_installed": 0,
                         "entries_received": 0, "writes_refused_no_quorum": 0,
                         "replies_in_doubt": 0, "forwarded_writes": 0}
        if self.is_leader:
            for member in config.members:
                if member != self.node_id:
                    self.followers[member] = FollowerProgress(
                        member, next_index=self.log.last.index + 1, last_progress_ms=now_ms)
            self._apply_up_to(self.log.last.index)   # a leader's data is its whole log
            self._advance_commit()
        self._notes.append(Probe("became_leader" if self.is_leader else "became_follower"))

    @staticmethod
    def _recovered_base(recovered: RecoveredState) -> Position:
        """The position just before the first entry the store gave back (module docstring of
        ``log_tail``)."""
        if not recovered.log:
            return recovered.last_position
        first = recovered.log[0].position
        meta = recovered.meta
        if int(meta.get(META_BASE_INDEX, -1)) == first.index - 1:
            return Position(int(meta[META_BASE_EPOCH]), first.index - 1)
        if first.index == 1:
            return ZERO_POSITION
        return Position(first.epoch, first.index - 1)

    # --- inputs ---------------------------------------------------------------------------------

    def propose(self, command: ClientCommand, request_id: int, now_ms: int) -> None:
        self._now_ms = now_ms
        spec = resolve(command.name, command.args)
        if isinstance(spec, Error):
            self._reply_now(request_id, spec)
            return
        name = command.name
        if name == WAIT_POSITION:
            self._wait_position(request_id, command.args, counting=False)
        elif self.is_leader:
            self._lead(command, spec.category, spec.is_write, request_id)
        elif spec.is_write or name in FOLLOWER_COMMANDS_FORWARDED:
            self._follower_write(command, request_id)
        elif spec.category in DATA_CATEGORIES:
            reply, effects = self.keyspace.execute(command, now_ms)
            assert not effects, command
            self._ready.replies.append(ClientReply(request_id, reply, stale=True))
        else:
            self._reply_now(request_id, self._local_command(command))

    def step(self, message: object, now_ms: int) -> None:
        self._now_ms = now_ms
        epoch = message.epoch
        if epoch > self.epoch:
            self.epoch = epoch
            self._writes.append(PutMeta(META_EPOCH, epoch))
        kind = type(message)
        if kind is AppendReply:
            self._on_append_reply(message)
        elif kind is Append:
            self._on_append(message)
        elif kind is SnapshotChunk:
            self._on_snapshot_chunk(message)
        elif kind is SnapshotAck:
            self._on_snapshot_ack(message)
        elif kind is Forward:
            self._on_forward(message)
        elif kind is ForwardReply:
            self._on_forward_reply(message)
        else:
            raise AssertionError(f"not a leader-mode message: {message!r}")

    def tick(self, now_ms: int) -> None:
        self._now_ms = now_ms
        self._ticked = True             # the next Ready carries the next deadline
        if self.is_leader:
            if now_ms >= self._next_expiry_cycle_ms:
                self._next_expiry_cycle_ms = now_ms + expiry_cycle_interval_ms
                expired = self.keyspace.expired_keys(now_ms, expiry_reclaim_keys_max)
                if expired and self._has_quorum_contact():
                    self._append(DeleteKeys(expired))
            self._resend_stalled()
            self._expire_held()
        else:
            self._expire_forwards()
        self._expire_position_waits()
        if now_ms >= self._next_retention_ms:
            self._next_retention_ms = now_ms + retention_check_interval_ms
            self._apply_retention()

    # --- outputs ---------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        ready = self._ready
        if self._writes or self._messages or ready.replies or self._notes \
                or self._reply_to_leader or self._ticked:
            return True
        if self.applied != self._applied_written:        # applied entries to persist
            return True
        if self.is_leader:
            return self._replication_due() or self._releasable()
        return False

    def ready(self) -> Ready:
        if self.is_leader and self._writes and self._releasable():
            return self._releases_only()
        ready = self._ready
        self._ready = Ready()
        self._ticked = False
        now = self._now_ms
        writes = self._writes
        self._writes = []
        writes.extend(self.keyspace.take_changes())
        if self.applied != self._applied_written:
            writes.append(PutMeta(META_APPLIED_EPOCH, self.applied.epoch))
            writes.append(PutMeta(META_APPLIED_INDEX, self.applied.index))
            self._applied_written = self.applied
        ready.writes = writes
        self._persisting_to = self.log.last
        if self.is_leader:
            self._release_held(ready)
            self._send_appends(now)
        elif self._reply_to_leader:
            self._reply_to_leader = False
            self._messages.append(AppendReply(self.node_id, self.leader_id, self.epoch,
                                              self.log.last, self.applied, self._accepted,
                                              self._incarnation))
            self._accepted = True
        return self._finish(ready, now)

    def _releases_only(self) -> Ready:
        """A leader's ``Ready`` of the replies the commit released and nothing to persist: the
        driver hands them out at once instead of behind the fsync of the writes that queued up
        meanwhile (which do not concern them; those go in the next ``Ready``). The leader's
        other pending messages are forwarded replies, equally independent of new writes."""
        ready = Ready()
        self._release_held(ready)
        return self._finish(ready, self._now_ms)

    def _finish(self, ready: Ready, now: int) -> Ready:
        ready.messages = self._messages
        self._messages = []
        ready.notes.extend(self._notes)
        self._notes = []
        if self._acknowledged:
            ready.notes.extend(self._acknowledged)
            ready.notes.append(Committed(self.commit))
            self._acknowledged = []
        ready.deadline_ms = self._deadline(now)
        return ready

    def advance(self, ready: Ready) -> None:
        """The ``Ready`` was carried out: its entries are durable here."""
        self._durable = self._persisting_to
        if self.is_leader:
            self._advance_commit()

    # --- the leader ----------------------------------------------------------------------------

    def _lead(self, command: ClientCommand, category: str, is_write: bool,
              request_id: int) -> None:
        if is_write and not self._has_quorum_contact():
            self.counters["writes_refused_no_quorum"] += 1
            self._reply_now(request_id, Error(
                f"NOQUORUM fewer than {self.quorum} members answered within "
                f"{self.settings.quorum_contact_ms} ms; the write was not applied"))
            return
        if category in DATA_CATEGORIES:
            reply, effects = self.keyspace.execute(command, self._now_ms)
            position = None
            for effect in effects:
                position = self._append(effect)
            self._hold(request_id, reply, position)
        elif command.name == WAIT_REPLICAS:
            self._wait_position(request_id, command.args, counting=True)
        else:
            self._reply_now(request_id, self._local_command(command))

    def _append(self, effect: Effect) -> Position:
        position = Position(self.epoch, self.log.last.index + 1)
        entry = LogEntry(position, effect)
        self.log.append(entry, self._now_ms)
        self._writes.append(AppendEntry(entry))
        self.keyspace.apply(effect, position.index)
        self.applied = position
        return position

    def _hold(self, request_id: int, reply: object, position: Position | None) -> None:
        """Keep the reply until the commit covers the log as it stands now."""
        index = self.log.last.index
        if index <= self.commit.index and not self._held:
            self._reply_now(request_id, reply, position)
            return
        self._held.append(Waiter(index, self._now_ms + self.settings.write_timeout_ms,
                                 request_id, reply, position, position is not None))

    def _has_quorum_contact(self) -> bool:
        if self.quorum == 1:
            return True
        since = self._now_ms - self.settings.quorum_contact_ms
        answered = sum(1 for f in self.followers.values() if f.last_reply_ms >= since)
        return answered + 1 >= self.quorum

    def _advance_commit(self) -> None:
        durable = sorted([self._durable.index, *(f.match.index for f in self.followers.values())],
                         reverse=True)
        index = min(durable[self.quorum - 1], self.log.last.index)
        if index > self.commit.index and index >= self.log.base.index:
            self.commit = self.log.position(index)

    def _releasable(self) -> bool:
        held = self._held
        return bool(held) and held[0].index <= self.commit.index

    def _release_held(self, ready: Ready) -> None:
        held = self._held
        commit_index = self.commit.index
        history = self.config.history_notes
        while held and held[0].index <= commit_index:
            waiter = held.popleft()
            self._deliver(ready, waiter.request_id, waiter.value, waiter.position)
            if history and waiter.is_write:
                self._acknowledged.append(WriteAcknowledged(waiter.request_id, waiter.position))

    def _expire_held(self) -> None:
        held = self._held
        now = self._now_ms
        while held and held[0].deadline_ms <= now:
            waiter = held.popleft()
            self.counters["replies_in_doubt"] += waiter.is_write
            if waiter.is_write:
                value = Error(f"INDOUBT the write was appended at {waiter.position} but fewer "
                              f"than {self.quorum} members confirmed it within "
                              f"{self.settings.write_timeout_ms} ms; it may still commit")
            else:
                value = Error(f"NOQUORUM fewer than {self.quorum} members confirmed the log "
                              f"this command saw within {self.settings.write_timeout_ms} ms; "
                              f"it changed nothing")
            self._deliver(self._ready, waiter.request_id, value, None)

    def _deliver(self, ready: Ready, request_id: int, value: object,
                 position: Position | None) -> None:
        """A reply to a client of this node, or to a follower that forwarded the command."""
        forwarded = self._forwarded.pop(request_id, None) if request_id < 0 else None
        if forwarded is None:
            ready.replies.append(ClientReply(request_id, value, position))
            return
        source, incarnation, sequence = forwarded
        self._messages.append(ForwardReply(self.node_id, source, self.epoch, incarnation,
                                           sequence, value, position or ZERO_POSITION))

    def _reply_now(self, request_id: int, value: object, position: Position | None = None) -> None:
        self._deliver(self._ready, request_id, value, position)

    # --- streaming to followers -------------------------------------------------------------------

    def _replication_due(self) -> bool:
        if self._now_ms >= self._next_heartbeat_ms:
            return True
        last = self.log.last.index
        for f in self.followers.values():
            if f.snapshot_next_chunk >= 0:
                if f.snapshot_sent_chunk < min(self._snapshot.chunks,
                                               f.snapshot_next_chunk + snapshot_chunks_inflight_max):
                    return True
                if f.next_index < self.log.first_index:
                    continue            # nothing to stream until the snapshot is in
            elif f.next_index < self.log.first_index:
                if self._answering(f, self._now_ms):
                    return True
                continue
            if f.next_index <= last and \
                    f.next_index - 1 - self._confirmed_index(f) < self._window(f, self._now_ms):
                return True
            if f.sent_commit < self.commit:
                return True
        return False

    def _send_appends(self, now: int) -> None:
        heartbeat = now >= self._next_heartbeat_ms
        if heartbeat:
            self._next_heartbeat_ms = now + self.settings.heartbeat_interval_ms
        log = self.log
        last = log.last.index
        commit = self.commit
        optimistic = "ack_before_durable" in self.config.bugs
        for f in self.followers.values():
            if f.snapshot_next_chunk < 0 and f.next_index < log.first_index:
                if not self._answering(f, now):
                    # A snapshot for a follower that is down waits until it answers this.
                    if heartbeat:
                        self._messages.append(Append(self.node_id, f.member, self.epoch,
                                                     log.base, (), commit))
                    continue
                self._start_snapshot(f, now)
            if f.snapshot_next_chunk >= 0:
                self._send_chunks(f, now)
                if f.next_index < log.first_index:
                    continue        # trimmed past this snapshot too: another one follows it
            sent = False
            window = self._window(f, now)
            confirmed = self._confirmed_index(f)
            while f.next_index <= last and f.next_index - 1 - confirmed < window:
                entries = log.entries_from(f.next_index, append_batch_entries_max,
                                           append_batch_bytes_max)
                prev = log.position(f.next_index - 1)
                self._messages.append(Append(self.node_id, f.member, self.epoch, prev, entries,
                                             commit))
                f.next_index += len(entries)
                self.counters["append_messages_sent"] += 1
                self.counters["entries_sent"] += len(entries)
                sent = True
                if optimistic:
                    f.match = max(f.match, entries[-1].position)
            if not sent and (heartbeat or f.sent_commit < commit):
                self._messages.append(Append(self.node_id, f.member, self.epoch,
                                             log.position(f.next_index - 1), (), commit))
                self.counters["append_messages_sent"] += 1
            f.sent_commit = commit
        if optimistic:
            self._advance_commit()

    def _confirmed_index(self, f: FollowerProgress) -> int:
        """Where the in-flight window of ``f`` starts: its durable index, or the position of
        the snapshot it is receiving (the entries after it stream meanwhile)."""
        if f.snapshot_next_chunk >= 0 and self._snapshot is not None:
            return max(f.match.index, self._snapshot.position.index)
        return f.match.index

    def _answering(self, f: FollowerProgress, now: int) -> bool:
        return f.last_reply_ms >= 0 and \
            now - f.last_reply_ms <= self.settings.follower_disconnected_ms

    def _window(self, f: FollowerProgress, now: int) -> int:
        """Entries in flight to ``f``: the full window while it answers, one batch while it
        does not (so a dead follower costs one batch per resend, not the window)."""
        return inflight_entries_max if self._answering(f, now) else append_batch_entries_max

    def _on_append_reply(self, reply: AppendReply) -> None:
        f = self.followers.get(reply.source)
        if not self.is_leader or f is None or reply.epoch < self.epoch:
            return
        if reply.incarnation != f.incarnation and not self._new_incarnation(f, reply):
            return
        now = self._now_ms
        f.last_reply_ms = now
        f.applied = max(f.applied, reply.applied)
        durable = reply.durable
        last = self.log.last
        if durable.index > last.index:
            # The follower holds entries this leader does not: only a leader that lost part of
            # its log (power loss with durability "os") gets here. Resend from our end.
            self._notes.append(Probe("follower_ahead_of_leader"))
            durable = last
        if f.snapshot_next_chunk >= 0:
            return              # its log is being replaced; the snapshot's end decides
        if reply.accepted:
            if durable > f.match:
                f.match = durable
                f.last_progress_ms = now
            f.next_index = max(f.next_index, f.match.index + 1)
        else:
            # A gap (lost or reordered Append), or a follower that restarted with less.
            f.match = min(f.match, durable)
            f.next_index = durable.index + 1
            f.last_progress_ms = now
        self._advance_commit()
        self._check_waits_now()

    def _new_incarnation(self, f: FollowerProgress, reply: AppendReply) -> bool:
        """The follower's process changed: trust only what the new one says it holds (it may
        have lost anything, its data directory included). False for a delayed answer from an
        earlier process while the current one answers; a lower incarnation is taken only from
        a follower silent for ``follower_disconnected_ms`` (its clock went back across a
        restart that also lost the stored incarnation)."""
        if reply.incarnation < f.incarnation and self._answering(f, self._now_ms):
            return False
        f.incarnation = reply.incarnation
        f.match = min(f.match, reply.durable)
        f.applied = reply.applied
        f.next_index = reply.durable.index + 1
        return True

    def _resend_stalled(self) -> None:
        now = self._now_ms
        for f in self.followers.values():
            if f.snapshot_next_chunk >= 0:
                continue
            if f.next_index - 1 > f.match.index and \
                    now - f.last_progress_ms >= self.settings.append_resend_ms:
                f.next_index = f.match.index + 1
                f.last_progress_ms = now
                self._notes.append(Probe("append_resent"))

    # --- snapshots, leader side ---------------------------------------------------------------------

    def _start_snapshot(self, f: FollowerProgress, now: int) -> None:
        if self._snapshot is None or self._snapshot.position.index < self.log.base.index:
            self._snapshot = OutgoingSnapshot(self.applied, self.keyspace.items())
        reason = self._trim_reason or "its log was lost or is older than the leader's"
        f.reseed_reason = (f"needed entry {f.next_index} but the log starts at "
                           f"{self.log.first_index} ({reason})")
        f.snapshot_next_chunk = 0
        f.snapshot_sent_chunk = 0
        f.snapshot_progress_ms = now
        f.next_index = self._snapshot.position.index + 1     # entries after it keep flowing
        self._notes.append(Probe("snapshot_started"))

    def _send_chunks(self, f: FollowerProgress, now: int) -> None:
        snapshot = self._snapshot
        assert snapshot is not None
        if not self._answering(f, now):
            # It went silent: stop streaming; it starts again once it answers.
            f.snapshot_next_chunk = -1
            self._release_snapshot()
            return
        if now - f.snapshot_progress_ms >= snapshot_resend_ms:
            f.snapshot_sent_chunk = f.snapshot_next_chunk          # resume after a loss
            f.snapshot_progress_ms = now
        end = min(snapshot.chunks, f.snapshot_next_chunk + snapshot_chunks_inflight_max)
        while f.snapshot_sent_chunk < end:
            number = f.snapshot_sent_chunk
            data = snapshot.chunk(number)
            self._messages.append(SnapshotChunk(self.node_id, f.member, self.epoch,
                                                snapshot.position, number, snapshot.chunks, data,
                                                crc32c.crc32c(data)))
            self.counters["snapshot_chunks_sent"] += 1
            self.counters["snapshot_bytes_sent"] += len(data)
            f.snapshot_sent_chunk += 1

    def _on_snapshot_ack(self, ack: SnapshotAck) -> None:
        f = self.followers.get(ack.source)
        snapshot = self._snapshot
        if not self.is_leader or f is None or snapshot is None or f.snapshot_next_chunk < 0 \
                or ack.snapshot != snapshot.position:
            return
        f.last_reply_ms = self._now_ms
        if ack.next_chunk > f.snapshot_next_chunk:
            f.snapshot_progress_ms = self._now_ms
        f.snapshot_next_chunk = ack.next_chunk
        f.snapshot_sent_chunk = max(f.snapshot_sent_chunk, ack.next_chunk)
        if ack.next_chunk < f.snapshot_sent_chunk and ack.next_chunk == 0:
            f.snapshot_sent_chunk = 0                              # it restarted: from scratch
        if ack.next_chunk >= snapshot.chunks:
            f.snapshot_next_chunk = -1
            f.match = max(f.match, snapshot.position)
            f.next_index = max(f.next_index, snapshot.position.index + 1)
            f.reseeds += 1
            f.last_progress_ms = self._now_ms
            self._notes.append(Probe("snapshot_sent"))
            self._release_snapshot()

    def _release_snapshot(self) -> None:
        """Drop the copy of the data once no follower is receiving it."""
        if all(f.snapshot_next_chunk < 0 for f in self.followers.values()):
            self._snapshot = None

    # --- forwarded writes, leader side ------------------------------------------------------------

    def _on_forward(self, forward: Forward) -> None:
        if not self.is_leader:
            return          # the follower times out and answers INDOUBT
        identity = (forward.source, forward.incarnation, forward.sequence)
        if identity in self._forward_seen:
            return          # a duplicate: the first copy is answered
        self._forward_seen[identity] = None
        if len(self._forward_seen) > forward_dedup_entries_max:
            self._forward_seen.popitem(last=False)
        request_id = self._next_internal_request
        self._next_internal_request -= 1
        self._forwarded[request_id] = identity
        self.propose(forward.command, request_id, self._now_ms)

    # --- the follower ----------------------------------------------------------------------------------

    def _follower_write(self, command: ClientCommand, request_id: int) -> None:
        if self.settings.follower_writes == "redirect":
            address = self._client_addresses.get(self.leader_id, "?")
            self._reply_now(request_id, Error(f"NOTLEADER {self.leader_id} {address}"))
            return
        if len(self._forwards) >= forwards_pending_max:
            self._reply_now(request_id, Error(
                f"TRYAGAIN {forwards_pending_max} forwarded writes are awaiting the leader "
                f"{self.leader_id}; the write was not forwarded"))
            return
        self._forward_sequence += 1
        sequence = self._forward_sequence
        deadline = self._now_ms + self.settings.write_timeout_ms
        is_wait = command.name == WAIT_REPLICAS
        if is_wait:                 # WAIT's own timeout, and the leader's answer on top
            timeout_ms = int(command.args[1]) if command.args[1].isdigit() else 0
            deadline = NO_DEADLINE if timeout_ms == 0 else deadline + timeout_ms
        self._forwards[(self._incarnation, sequence)] = (request_id, deadline, is_wait)
        self.counters["forwarded_writes"] += 1
        self._messages.append(Forward(self.node_id, self.leader_id, self.epoch,
                                      self._incarnation, sequence, command))

    def _on_forward_reply(self, reply: ForwardReply) -> None:
        pending = self._forwards.pop((reply.incarnation, reply.sequence), None)
        if pending is None:
            return          # answered already (a duplicate), or timed out
        position = reply.position if reply.position != ZERO_POSITION else None
        self._ready.replies.append(ClientReply(pending[0], reply.value, position))

    def _expire_forwards(self) -> None:
        now = self._now_ms
        expired = [key for key, (_, deadline, _) in self._forwards.items()
                   if deadline != NO_DEADLINE and deadline <= now]
        for key in expired:
            request_id, _, is_wait = self._forwards.pop(key)
            # A WAIT whose answer never came: no follower was seen to hold the write.
            self._reply_now(request_id, 0 if is_wait else Error(
                f"INDOUBT the leader {self.leader_id} did not answer the forwarded write within "
                f"{self.settings.write_timeout_ms} ms; it may still be applied"))

    def _on_append(self, append: Append) -> None:
        if self.is_leader or append.epoch < self.epoch:
            return
        self._last_leader_contact_ms = self._now_ms
        self.leader_id = append.source
        self._reply_to_leader = True
        if self._incoming is not None:
            self._spool(append)
            return
        log = self.log
        last = log.last
        entries = append.entries
        if append.prev.index > last.index and "apply_out_of_order" not in self.config.bugs:
            self._accepted = False          # a gap: the leader resends from our end
            return
        if append.prev.index >= log.base.index and append.prev.index <= last.index \
                and log.position(append.prev.index) != append.prev:
            self._accepted = False          # not our history (needs the failover's repair)
            self._notes.append(Probe("append_prev_mismatch"))
            return
        for entry in entries:
            if entry.position.index <= log.last.index:
                continue                    # held already (a duplicate or a resend)
            if entry.position.index != log.last.index + 1:      # only with apply_out_of_order
                log.reset(Position(entry.position.epoch, entry.position.index - 1))
                self._writes.append(ResetLog(log.base))
                self.applied = max(self.applied, log.base)          # the gap is never applied
            log.append(entry, self._now_ms)
            self._writes.append(AppendEntry(entry))
            self.counters["entries_received"] += 1
        if append.commit > self.commit:
            self.commit = append.commit
        self._apply_up_to(min(self.commit.index, log.last.index))
        self._check_waits_now()

    def _apply_up_to(self, index: int) -> None:
        log = self.log
        keyspace = self.keyspace
        applied = self.applied
        while applied.index < index:
            entry = log.entry(applied.index + 1)
            keyspace.apply(entry.effect, entry.position.index)
            applied = entry.position
        self.applied = applied

    # --- snapshots, follower side ------------------------------------------------------------------

    def _on_snapshot_chunk(self, chunk: SnapshotChunk) -> None:
        if self.is_leader or chunk.epoch < self.epoch:
            return
        self._last_leader_contact_ms = self._now_ms
        incoming = self._incoming
        if chunk.snapshot <= self.log.last:
            # Nothing in it this node lacks (a resent or reused snapshot): say so and where
            # the log ends, and the leader streams entries from there.
            self._incoming = None
            self._ack_chunks(chunk.source, chunk.snapshot, chunk.chunks)
            self._reply_to_leader = True
            return
        if incoming is None or incoming.position != chunk.snapshot:
            if chunk.chunk != 0:
                self._ack_chunks(chunk.source, chunk.snapshot, 0)
                return
            incoming = self._incoming = IncomingSnapshot(chunk.snapshot, chunk.chunks)
            self._notes.append(Probe("snapshot_receiving"))
        if chunk.chunk == len(incoming.received):
            if "skip_chunk_crc" not in self.config.bugs and crc32c.crc32c(chunk.data) != chunk.crc:
                self._notes.append(Probe("snapshot_chunk_corrupt"))
                self._ack_chunks(chunk.source, chunk.snapshot, len(incoming.received))
                return
            incoming.received.append(chunk.data)
        if len(incoming.received) == incoming.chunks:
            self._install(incoming)
        self._ack_chunks(chunk.source, chunk.snapshot, len(incoming.received))

    def _ack_chunks(self, leader: str, snapshot: Position, next_chunk: int) -> None:
        self._messages.append(SnapshotAck(self.node_id, leader, self.epoch, snapshot, next_chunk))

    def _spool(self, append: Append) -> None:
        spool = self._incoming.spool
        expected = (spool[-1].position if spool else self._incoming.position).index + 1
        for entry in append.entries:
            if entry.position.index != expected:
                continue
            if len(spool) >= spool_entries_max:
                spool.clear()           # the leader resends them after the install
                self._notes.append(Probe("snapshot_spool_overflow"))
                return
            spool.append(entry)
            expected = entry.position.index + 1
        if append.commit > self.commit:
            self.commit = append.commit

    def _install(self, incoming: IncomingSnapshot) -> None:
        """All chunks are in: replace data and log in one transaction, then the spool."""
        try:
            records = dict(item for data in incoming.received for item in decode_chunk(data))
        except (ValueError, TypeError, msgpack.UnpackException):
            # Only a corrupt chunk (the skip_chunk_crc bug) can get here: start over.
            self._incoming = None
            self._notes.append(Probe("snapshot_undecodable"))
            return
        position = incoming.position
        self._incoming = None
        self._writes.extend(self.keyspace.take_changes())
        self._writes.append(ClearRecords())
        self._writes.extend(PutRecord(key, record) for key, record in records.items())
        self._writes.append(ResetLog(position))
        self.keyspace = Keyspace(records)
        self.log.reset(position)
        self.applied = position
        self._applied_written = None            # the applied position goes to meta again
        self.counters["snapshots_installed"] += 1
        self._notes.append(Probe("snapshot_installed"))
        for entry in incoming.spool:
            if entry.position.index == self.log.last.index + 1:
                self.log.append(entry, self._now_ms)
                self._writes.append(AppendEntry(entry))
        self._apply_up_to(min(self.commit.index, self.log.last.index))
        self._reply_to_leader = True

    # --- commands answered by any node ----------------------------------------------------------

    def _local_command(self, command: ClientCommand) -> object:
        name = command.name
        if name == b"CHORUS.POSITION":
            return str(self.applied).encode()
        if name == b"CHORUS.DIGEST":
            return self.keyspace.digest(self._now_ms).encode()
        raise AssertionError(f"{name!r} is handled by the server, not the core")

    def _wait_position(self, request_id: int, args: tuple[bytes, ...], counting: bool) -> None:
        """``CHORUS.WAITREPLICAS n timeout epoch index`` (``counting``) or
        ``CHORUS.WAITPOS epoch index timeout``."""
        try:
            numbers = [int(arg) for arg in args]
        except ValueError:
            self._reply_now(request_id, Error("ERR value is not an integer or out of range"))
            return
        replicas: int | None = None
        if counting:
            replicas, timeout_ms, epoch, index = numbers
            if (epoch, index) == (-1, -1):        # the server's "the log's end now"
                epoch, index = self.log.last.epoch, self.log.last.index
        else:
            epoch, index, timeout_ms = numbers
        if timeout_ms < 0 or (replicas or 0) < 0 or epoch < 0 or index < 0:
            self._reply_now(request_id, Error("ERR timeout is negative" if timeout_ms < 0
                                              else "ERR a negative position or count"))
            return
        if len(self._position_waits) >= waiters_max:
            self._reply_now(request_id, Error(f"ERR more than {waiters_max} waits outstanding"))
            return
        deadline = NO_DEADLINE if timeout_ms == 0 and counting else self._now_ms + timeout_ms
        wait = PositionWait(request_id, Position(epoch, index), replicas, deadline)
        if not self._finish_wait(wait, timed_out=False):
            self._position_waits.append(wait)

    def _replicas_holding(self, position: Position) -> int:
        """Followers that answered at least once and hold ``position`` durably."""
        return sum(1 for f in self.followers.values()
                   if f.last_reply_ms >= 0 and f.match >= position)

    def _finish_wait(self, wait: PositionWait, timed_out: bool) -> bool:
        """Answer ``wait`` if its condition holds or its time is up; True when answered."""
        if wait.replicas is not None:
            count = self._replicas_holding(wait.position)
            if count >= wait.replicas or timed_out:
                self._reply_now(wait.request_id, count)
                return True
            return False
        if self.applied >= wait.position:
            self._reply_now(wait.request_id, OK)
            return True
        if timed_out:
            self._reply_now(wait.request_id, Error(
                f"TRYAGAIN position {wait.position} is not applied on {self.node_id} after "
                f"the timeout (applied: {self.applied}); retry, or read from the leader"))
            return True
        return False

    def _check_waits(self, timed_out_before_ms: int | None) -> None:
        kept = []
        for wait in self._position_waits:
            timed_out = timed_out_before_ms is not None and wait.deadline_ms != NO_DEADLINE \
                and wait.deadline_ms <= timed_out_before_ms
            if not self._finish_wait(wait, timed_out):
                kept.append(wait)
        self._position_waits = kept

    def _check_waits_now(self) -> None:
        if self._position_waits:
            self._check_waits(None)

    def _expire_position_waits(self) -> None:
        if self._position_waits:
            self._check_waits(self._now_ms)

    # --- retention --------------------------------------------------------------------------------

    def _apply_retention(self) -> None:
        log = self.log
        keep_from = min(self.applied.index, self.commit.index) + 1
        needed = keep_from
        for f in self.followers.values():
            needed = min(needed, f.match.index + 1)
        start, reason = log.retention_start(self._retention, self._now_ms, keep_from, needed)
        if start <= log.first_index:
            return
        log.trim_before(start)
        self._trim_reason = reason
        self._writes.append(PutMeta(META_BASE_EPOCH, log.base.epoch))
        self._writes.append(PutMeta(META_BASE_INDEX, log.base.index))
        self._writes.append(TrimLogBefore(start))
        self._notes.append(Probe("log_trimmed"))

    # --- timing -------------------------------------------------------------------------------------

    def _deadline(self, now: int) -> int:
        deadlines = [self._next_retention_ms]
        if self.is_leader:
            deadlines.append(self._next_heartbeat_ms)
            if len(self.keyspace):
                deadlines.append(self._next_expiry_cycle_ms)
            if self._held:
                deadlines.append(self._held[0].deadline_ms)
            for f in self.followers.values():
                if f.snapshot_next_chunk >= 0:
                    deadlines.append(f.snapshot_progress_ms + snapshot_resend_ms)
                elif f.next_index - 1 > f.match.index:
                    deadlines.append(f.last_progress_ms + self.settings.append_resend_ms)
        else:
            deadlines.extend(deadline for _, deadline, _ in self._forwards.values()
                             if deadline != NO_DEADLINE)
        deadlines.extend(w.deadline_ms for w in self._position_waits
                         if w.deadline_ms != NO_DEADLINE)
        return max(now, min(deadlines))

    # --- status -------------------------------------------------------------------------------------

    def status(self) -> dict:
        now = self._now_ms
        members = []
        if self.is_leader:
            last = self.log.last
            for f in self.followers.values():
                if not self._answering(f, now):
                    state = "disconnected"
                elif f.snapshot_next_chunk >= 0:
                    state = "snapshotting"
                else:
                    state = "streaming"
                reason = ""
                if state == "disconnected":
                    reason = ("never answered" if f.last_reply_ms < 0 else
                              f"no answer for {now - f.last_reply_ms} ms")
                members.append({
                    "id": f.member, "state": state, "reason": reason,
                    "durable_position": _position_dict(f.match),
                    "applied_position": _position_dict(f.applied),
                    "lag_entries": max(0, last.index - f.match.index),
                    "lag_ms": 0 if f.match >= last else max(0, now - f.last_progress_ms),
                    "last_answer_ms_ago": None if f.last_reply_ms < 0 else now - f.last_reply_ms,
                    "reseeds": f.reseeds, "reseed_reason": f.reseed_reason,
                    "snapshot_chunks": (f"{f.snapshot_next_chunk}/{self._snapshot.chunks}"
                                        if f.snapshot_next_chunk >= 0 and self._snapshot
                                        else None),
                })
        return {
            "role": self.role,
            "epoch": self.epoch,
            "leader_id": self.leader_id,
            "position": _position_dict(self.log.last),
            "commit_position": _position_dict(self.commit),
            "applied_position": _position_dict(self.applied),
            "write_quorum": self.quorum,
            "follower_writes": self.settings.follower_writes,
            "members": members,
            "divergent_entries": 0,
            "keys": len(self.keyspace),
            "expires": self.keyspace.expiring_count(),
            "log": {"first_index": self.log.first_index, "entries": len(self.log),
                    "bytes": self.log.bytes},
            "leader_contact_ms_ago": (None if self.is_leader or self._last_leader_contact_ms < 0
                                      else now - self._last_leader_contact_ms),
            "snapshot_receiving": (None if self._incoming is None else
                                   f"{len(self._incoming.received)}/{self._incoming.chunks}"),
            "inflight_entries": sum(max(0, f.next_index - 1 - f.match.index)
                                    for f in self.followers.values()),
            "replication": dict(self.counters),
        }


def _position_dict(position: Position) -> dict:
    return {"epoch": position.epoch, "index": position.index}
