"""Leader mode: one leader per epoch appends every write to the log and streams it to
followers; a write is acknowledged once ``write_quorum`` W members (the leader included) hold it
durably; when the leader fails, the others elect a new one with ``election_quorum`` Q votes.

W = 1 is asynchronous replication, W = 2 semi-synchronous (whichever follower answers first
carries the sync role, so it moves to any follower that is up), W = N fully synchronous. Any W
and Q with W + Q > N lose no acknowledged write in a failover (every election quorum meets every
write quorum); with W + Q <= N they can, and each such loss is quarantined (below), never
silent. Messages are in ``core.leader_messages``.

**Elections.** A member that hears nothing from a leader for a random election timeout
(``election_timeout_min_ms``..``_max_ms``; a higher ``priority`` draws from a lower slice, a
member configured ``candidate = false`` never runs) first asks for *pre-votes* for the next
epoch, which change nothing: a member grants one only if the candidate's log end ``(epoch,
index)`` is at least its own and it has not itself heard a leader for the minimum election
timeout (so a member cut off and back cannot depose a working leader). With Q pre-votes it
raises its epoch, votes for itself (durably, before the requests leave) and asks for votes; a
member votes once per epoch, durably before it answers, and only for a log at least as fresh as
its own. The winner appends an ``EpochStart`` entry (who leads the epoch) and counts copies
only of entries of its own epoch: once that mark is committed, everything before it is too.
The initial leader (``initial_leader``) runs the first election at once. A member that starts
with an empty store may have lost its disk, and its votes with it: it votes and runs only after
it followed a leader for a whole election timeout (a new cluster's election of its initial
leader, for epoch 1, is the one exception).

**Fencing.** Every message carries the sender's epoch. A member that sees a higher one adopts
it (a leader or candidate steps down); an ``Append`` of an older epoch is refused and answered
with the current epoch, so a deposed leader learns it at once. A leader that no set of
N - Q + 1 members (itself included; the members that meet every election quorum) has confirmed
within the minimum election timeout steps down: a new leader may exist elsewhere by then. Its
held replies are answered ``-INDOUBT`` (writes, which may still commit) and ``-TRYAGAIN``
(reads). Confirmation is measured on the leader's own clock: each ``Append`` carries the time
it was sent and the reply echoes it, so an answer that waited out a pause of the leader proves
nothing new.

**Reads** on the leader are linearizable by read-index: a read waits until the commit covers
the log as it stood when the read ran (the leader's data includes its uncommitted writes) and
until N - Q + 1 members confirmed the leader with an ``Append`` sent after the read arrived (a
round goes out at once for it). No lease, so no bound on clock drift is assumed.

**Divergent entries.** An entry a node holds that the new leader's log does not (a deposed
leader's writes that no election quorum held) is removed when the new leader's entries reach
it, and kept, in the same transaction, in the ``divergent`` table (``DivergentEntry``: the
entry, who wrote it, who replaced it, when). A node that had already applied such entries (a
deposed leader applies its whole log) drops its data and log and is re-seeded from the leader.
Entries that are *safe* (held by N - Q + 1 members, counted like the commit) never diverge; no
node trims its log above what it knows to be safe, so every entry a failover can remove is
still there to quarantine. ``CHORUS.DIVERGENT LIST | SHOW | REAPPLY | DISCARD`` lets an
operator look and decide (``core.divergent``).

**Switchover.** ``CHORUS.SWITCHOVER node`` pauses writes on the leader (``-TRYAGAIN``), waits
until the target holds the whole log durably, sends it ``TimeoutNow`` (it runs at once, and its
vote requests say so, so members that still hear the leader vote too), and answers when it sees
the new epoch; if the target does not catch up within ``switchover_timeout_ms`` it answers why
and resumes writes.

**Clients during failover.** A follower that knows no leader keeps forwarded writes until one
is elected (within the write timeout, then ``-TRYAGAIN``: never sent, so nothing applied); a
node that is not the leader refuses a forwarded write with ``-NOTLEADER``, which the follower
retries with the leader it knows. A write forwarded to a leader that then fell silent is
answered ``-INDOUBT``: it may have been applied. With ``follower_writes = "redirect"`` clients
get ``-NOTLEADER <id> <host:port>``, or ``-TRYAGAIN`` while no leader is known.

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
leader's commit position covers them and they are known to match the leader's log; the applied
position is kept in meta with the data it describes (and the commit with it). Reads on a
follower are answered from that state at once (``stale``: consistent prefix, not
linearizable), but only while its data is not ahead of what it knows to be committed: after a
snapshot install (the leader's data at its log end, which W members may not hold yet), on a
deposed leader (which applied its whole log), or during a re-seed they get ``-TRYAGAIN``. Writes are forwarded to the leader (``follower_writes =
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
the followers whose durable position covers it), ``CHORUS.POSITION`` and ``CHORUS.TOKEN`` (the
core answers its applied position; the server raises it to the connection's last write).
``CHORUS.WAITPOS epoch index timeout_ms [MAXLAG n] [MAXSTALENESS ms]`` waits until this node has
applied the position and meets the bounds (``core.position_wait``): a follower knows the latest
commit a leader's ``Append`` carried and when it last held it, so it knows how far behind it is
in entries and in time; the leader is behind by neither.

Known defects the simulator can switch on (``KNOWN_BUGS``) to show its checkers catch them.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
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
from chorusdb.core.commands import (
    DATA_CATEGORIES,
    MULTI_LEADER_COMMANDS,
    multi_leader_only,
    resolve,
)
from chorusdb.core.divergent import carries_a_write, entry_command, item_reply
from chorusdb.core.keyspace import Keyspace
from chorusdb.core.leader_messages import (
    Append,
    AppendReply,
    Forward,
    ForwardReply,
    SnapshotAck,
    SnapshotChunk,
    TimeoutNow,
    VoteReply,
    VoteRequest,
)
from chorusdb.core.log_tail import LogTail, RetentionPolicy
from chorusdb.core.model import (
    ZERO_POSITION,
    AppendEntry,
    ClearRecords,
    DeleteKeys,
    DivergentEntry,
    Effect,
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
    TrimLogBefore,
    TruncateLogAfter,
    Write,
)
from chorusdb.core.position_wait import NOT_AN_INTEGER, PositionWaitRequest, parse_position_wait
from chorusdb.core.standalone import expiry_cycle_interval_ms, expiry_reclaim_keys_max
from chorusdb.replies import OK, Error, Simple

append_batch_entries_max = 1024         # entries in one Append
append_batch_bytes_max = 1024 * 1024    # estimated effect bytes in one Append
inflight_entries_max = 16_384           # entries sent to a follower beyond what it confirmed
snapshot_chunk_bytes_max = 1024 * 1024  # estimated record bytes in one snapshot chunk
snapshot_chunks_inflight_max = 4        # chunks sent beyond what the follower acknowledged
snapshot_resend_ms = 1000               # no acknowledgement for this long: resend from there
spool_entries_max = 100_000             # entries a follower keeps while a snapshot streams
epoch_leaders_kept = 64                 # recent epochs whose leader a node remembers
base_refusals_max = 3                   # Appends below our base, none reaching it: re-seed
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
META_COMMIT_EPOCH = "commit_epoch"
META_COMMIT_INDEX = "commit_index"
META_VOTED_EPOCH = "voted_epoch"
META_VOTED_FOR = "voted_for"
META_EPOCH_LEADERS = "epoch_leaders"     # "7=n2 8=n1": who led the recent epochs

FOLLOWER_WRITES = ("forward", "redirect")
WAIT_REPLICAS = b"CHORUS.WAITREPLICAS"
WAIT_POSITION = b"CHORUS.WAITPOS"
SWITCHOVER = b"CHORUS.SWITCHOVER"
DIVERGENT = b"CHORUS.DIVERGENT"
FOLLOWER_COMMANDS_FORWARDED = frozenset({WAIT_REPLICAS, SWITCHOVER})
NO_LEADER_TEXT = "TRYAGAIN no leader is known"
NOT_LEADER_PREFIXES = ("NOTLEADER", NO_LEADER_TEXT)


@dataclass(frozen=True, slots=True)
class LeaderSettings:
    """The ``[leader]`` configuration; see the module docstring for what each does.

    ``write_quorum`` W and ``election_quorum`` Q: 0 means a majority. ``initial_leader`` (``""``:
    the first member) runs the first election at once instead of after a timeout.
    ``client_addresses`` maps member ids to their client ``host:port`` (for ``-NOTLEADER``);
    ``non_candidates`` never become leader; ``priorities`` (member -> number, default 0): a
    higher one waits less before it runs for election.
    """

    mode: ClassVar[str] = "leader"
    write_quorum: int = 0
    election_quorum: int = 0
    initial_leader: str = ""
    follower_writes: str = "forward"
    client_addresses: tuple[tuple[str, str], ...] = ()
    non_candidates: tuple[str, ...] = ()
    priorities: tuple[tuple[str, int], ...] = ()
    write_timeout_ms: int = 2000
    heartbeat_interval_ms: int = 100
    election_timeout_min_ms: int = 500
    election_timeout_max_ms: int = 1000
    switchover_timeout_ms: int = 5000
    append_resend_ms: int = 400
    quorum_contact_ms: int = 1000
    follower_disconnected_ms: int = 1000
    log_retention_entries: int = 100_000
    log_retention_bytes: int = 256 * 1024 * 1024
    log_retention_age_ms: int = 3_600_000
    log_hold_entries_max: int = 1_000_000

    def quorum(self, member_count: int) -> int:
        return self.write_quorum or member_count // 2 + 1

    def votes_needed(self, member_count: int) -> int:
        return self.election_quorum or member_count // 2 + 1

    def may_lose_acknowledged_writes(self, member_count: int) -> bool:
        """W + Q <= N: an election quorum need not include a member that holds a write."""
        return self.quorum(member_count) + self.votes_needed(member_count) <= member_count

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
    echo_ms: int = -1                        # it followed this leader after this (leader) time


@dataclass(slots=True)
class Campaign:
    """An election this node runs: a pre-vote (for ``epoch``, not adopted yet) or the vote."""

    epoch: int
    pre: bool
    granted: set[str]
    started_ms: int             # when the requests left: a voter followed us after this


@dataclass(slots=True)
class Switchover:
    """``CHORUS.SWITCHOVER`` in progress on the leader: writes wait; ``handed`` once the target
    was told to take over (``TimeoutNow``)."""

    target: str
    request_id: int
    started_ms: int
    deadline_ms: int
    handed: bool = False


@dataclass(slots=True)
class PendingForward:
    """A write this follower forwards: to ``sent_to`` (``""``: waiting for a leader)."""

    request_id: int
    deadline_ms: int                         # NO_DEADLINE: a WAIT 0
    is_wait: bool
    command: ClientCommand
    sent_to: str


@dataclass(slots=True)
class Waiter:
    """A reply the leader holds until the commit covers ``index`` and, for a read, until enough
    members confirmed its leadership after the read arrived (``arrived_ms``; -1 for writes)."""

    index: int
    deadline_ms: int
    request_id: int
    value: object
    position: Position | None
    is_write: bool
    arrived_ms: int


@dataclass(slots=True)
class PositionWait:
    """``CHORUS.WAITREPLICAS`` (``replicas``: how many followers must hold ``position``) or
    ``CHORUS.WAITPOS`` (``replicas`` None: this node must have applied it, within ``bounds``)."""

    request_id: int
    position: Position
    replicas: int | None
    deadline_ms: int                        # NO_DEADLINE: wait for ever (WAIT ... 0)
    bounds: PositionWaitRequest | None = None


class LeaderCore:
    """One member of a leader-mode cluster, in any role; see the module docstring."""

    mode = "leader"
    CLAIMS = frozenset({"linearizable", "consistent_prefix", "no_lost_writes", "convergence"})
    KNOWN_BUGS = {
        "ack_before_durable": "the leader counts a follower's copy as durable when it sends the "
                              "entries, not when the follower confirms them",
        "apply_out_of_order": "a follower appends and applies entries that do not follow its "
                              "log (after a gap), so later entries land before earlier ones",
        "skip_chunk_crc": "a follower installs snapshot chunks without checking their CRC",
        "vote_without_freshness": "a member votes for a candidate whose log is behind its own",
        "no_epoch_check_on_append": "a follower takes entries from a leader of an older epoch "
                                    "and takes that epoch back on (it may then vote again in "
                                    "an epoch it already voted in)",
        "ack_without_quorum_contact": "a leader cut off from its followers keeps answering: it "
                                      "never steps down, and answers reads from its own data "
                                      "at once, without confirming that it still leads",
        "drop_divergent": "a divergent log suffix is truncated without being quarantined",
    }
    # A bug that shows only under some configuration: drop_divergent loses acknowledged writes
    # silently only where W + Q <= N lets a failover drop acknowledged writes at all.
    BUG_WRITE_QUORUMS = {"drop_divergent": 1}
    DATA_LOSS_EXEMPT_ROLES = frozenset({"leader"})

    def __init__(self, config: CoreConfig, recovered: RecoveredState, rng: random.Random,
                 now_ms: int) -> None:
        unknown_bugs = config.bugs - self.KNOWN_BUGS.keys()
        assert not unknown_bugs, f"unknown bugs for {self.mode}: {sorted(unknown_bugs)}"
        settings = config.settings if config.settings is not None else LeaderSettings()
        assert isinstance(settings, LeaderSettings), settings
        assert settings.follower_writes in FOLLOWER_WRITES, settings.follower_writes
        assert settings.election_timeout_min_ms < settings.election_timeout_max_ms, settings
        self.config = config
        self.settings = settings
        self.rng = rng
        self.node_id = config.node_id
        members = config.members
        self.quorum = settings.quorum(len(members))
        assert 1 <= self.quorum <= len(members), (self.quorum, members)
        self.votes_needed = settings.votes_needed(len(members))
        assert 1 <= self.votes_needed <= len(members), (self.votes_needed, members)
        # Members that meet every election quorum: their contact proves this node still leads,
        # and an entry they all hold survives any election (it is "safe").
        self.survivors = len(members) - self.votes_needed + 1
        self.candidates = tuple(m for m in members if m not in settings.non_candidates)
        assert self.candidates, (members, settings.non_candidates)
        priorities = dict(settings.priorities)
        self.priority = priorities.get(self.node_id, 0)
        levels = sorted({priorities.get(m, 0) for m in self.candidates}, reverse=True)
        self._priority_rank = levels.index(self.priority) if self.priority in levels else 0
        self._priority_levels = len(levels)
        self.is_leader = False
        self.role = "follower"
        self.leader_id = ""                 # the leader of this epoch, once heard from
        self._client_addresses = dict(settings.client_addresses)
        self._retention = settings.retention()
        self._now_ms = now_ms
        meta = recovered.meta
        self.epoch = int(meta.get(META_EPOCH, 0))
        voted_epoch = int(meta.get(META_VOTED_EPOCH, -1))
        self.voted_for = str(meta.get(META_VOTED_FOR, "")) if voted_epoch == self.epoch else ""
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
        # What this node knows is acknowledged (kept in meta with the applied position): a
        # follower applies only that, a leader applies its whole log; reads on a follower are
        # answered only while its data is not ahead of it.
        self.commit = Position(int(meta.get(META_COMMIT_EPOCH, self.applied.epoch)),
                               int(meta.get(META_COMMIT_INDEX, self.applied.index)))
        self.commit = min(self.commit, self.log.last)
        # What this node knows survives every election (never trimmed from the log above it).
        self.safe = ZERO_POSITION
        # None: the first Ready writes the applied position to meta, before any entry is
        # appended ahead of it (without it in meta, recovery takes the data to be at the log's
        # end, which is only true of data written by a standalone node).
        self._applied_written: Position | None = None
        # The leader of each recent epoch, as far as this node knows (from Appends, the log's
        # EpochStart entries, and meta, which keeps them when retention trimmed those): a
        # divergent entry records who wrote it.
        self._epoch_leaders: dict[int, str] = {
            int(epoch): leader for epoch, leader in
            (pair.split("=", 1) for pair in str(meta.get(META_EPOCH_LEADERS, "")).split() if pair)}
        for entry in recovered.log:
            if type(entry.effect) is EpochStart:
                self._epoch_leaders[entry.position.epoch] = entry.effect.leader
        self.divergent: list[DivergentEntry] = list(recovered.divergent)
        self._next_divergent_id = max((d.entry_id for d in self.divergent), default=0) + 1
        # Leader state.
        self.followers: dict[str, FollowerProgress] = {}
        self._held: deque[Waiter] = deque()
        self._position_waits: list[PositionWait] = []
        self._forwarded: dict[int, tuple[str, int, int]] = {}
        self._forward_seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._reapplying: dict[int, tuple[int, int]] = {}   # internal id -> (client id, entry)
        self._next_internal_request = -1
        self._snapshot: OutgoingSnapshot | None = None
        self._next_heartbeat_ms = now_ms
        self._round_ms = -1                 # the last time an Append went to every follower
        self._read_arrived_ms = -1          # the latest read held for confirmation
        self._leader_since_ms = now_ms
        self._quorum_confirmed_floor_ms = -1   # a lower bound of _confirmed_ms(quorum) while leading
        self._switchover: Switchover | None = None
        self._next_expiry_cycle_ms = now_ms
        self._next_retention_ms = now_ms + retention_check_interval_ms
        self._trim_reason = ""
        self._acknowledged: list[WriteAcknowledged] = []
        # Follower and candidate state.
        self._reply_to_leader = False
        self._accepted = True
        self._hint = ZERO_POSITION
        self._echo_ms = -1                  # the latest Append.sent_ms of the current leader
        self._verified_index = 0            # our log matches the current leader's up to here
        self._incoming: IncomingSnapshot | None = None
        self._campaign: Campaign | None = None
        # The initial leader runs the first election at once; the others wait their timeout.
        first_wait = 0 if self.node_id == settings.leader(members) else self._election_timeout_ms()
        self._election_deadline_ms = now_ms + first_wait
        self._leaderless_since_ms: int | None = now_ms
        self._had_leader = False
        self.last_failover_ms: int | None = None
        # This process, in AppendReply and Forward: above every earlier one of this node (its
        # start time, or one more than the last one stored, whichever is higher).
        # A node that starts with an empty store may have lost its disk, and with it the votes
        # it cast: it votes (and runs) only after it has followed a leader and a whole
        # election timeout has passed (any campaign it may have voted in is over by then).
        # The one exception bootstraps a new cluster: the initial leader's election of epoch 1.
        self._started_empty = META_INCARNATION not in meta
        self._followed = not self._started_empty
        self._votes_from_ms = now_ms + (settings.election_timeout_max_ms
                                        if self._started_empty else 0)
        self._incarnation = max(now_ms, int(meta.get(META_INCARNATION, 0)) + 1)
        self._writes.append(PutMeta(META_INCARNATION, self._incarnation))
        self._forward_sequence = 0
        self._forwards: dict[tuple[int, int], PendingForward] = {}
        self._last_leader_contact_ms = -1
        self._leader_commit_heard = ZERO_POSITION   # the latest commit a leader's Append carried
        self._caught_up_ms = -1             # when this node last held that commit (-1: never)
        self._ticked = False
        self._reseed_reason = ""
        self._reseeding = False             # data dropped after a divergence, not yet back
        self._base_refusals = 0             # Appends in a row that start below our base
        self.counters = {"append_messages_sent": 0, "entries_sent": 0, "snapshot_chunks_sent": 0,
                         "snapshot_bytes_sent": 0, "snapshots_installed": 0,
                         "entries_received": 0, "writes_refused_no_quorum": 0,
                         "replies_in_doubt": 0, "forwarded_writes": 0, "reseeds_after_divergence": 0}
        self.elections = {"started": 0, "won": 0, "lost": 0}
        self._handlers = {AppendReply: self._on_append_reply, Append: self._on_append,
                          SnapshotChunk: self._on_snapshot_chunk,
                          SnapshotAck: self._on_snapshot_ack, Forward: self._on_forward,
                          ForwardReply: self._on_forward_reply, VoteReply: self._on_vote_reply,
                          TimeoutNow: self._on_timeout_now}
        self._notes.append(Probe("became_follower"))

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
            if command.linearizable and not self.is_leader:
                self._reply_now(request_id, self._not_leader_error())
                return
            self._wait_position(request_id, command.args, counting=False)
        elif name == DIVERGENT:
            self._divergent_command(request_id, command.args)
        elif self.is_leader:
            self._lead(command, spec.category, spec.is_write, request_id)
        elif spec.is_write or name in FOLLOWER_COMMANDS_FORWARDED:
            self._follower_write(command, request_id)
        elif spec.category in DATA_CATEGORIES:
            if command.linearizable:
                self._reply_now(request_id, self._not_leader_error())
                return
            if self.applied.index > self.commit.index or self._reseeding:
                self._reply_now(request_id, Error(
                    f"TRYAGAIN {self.node_id} holds writes at {self.applied} that are not known "
                    f"to be committed (committed: {self.commit}); retry, or read from the leader"))
                return
            reply, effects = self.keyspace.execute(command, now_ms)
            assert not effects, command
            self._ready.replies.append(ClientReply(request_id, reply, stale=True))
        else:
            self._reply_now(request_id, self._local_command(command))

    def step(self, message: object, now_ms: int) -> None:
        self._now_ms = now_ms
        kind = type(message)
        if kind is VoteRequest:
            self._on_vote_request(message)      # adopts a higher epoch only if it may vote
            return
        if kind is VoteReply and message.pre:
            self._on_pre_vote_reply(message)
            return
        if message.epoch > self.epoch:
            self._adopt_epoch(message.epoch)
        handler = self._handlers.get(kind)
        assert handler is not None, f"not a leader-mode message: {message!r}"
        handler(message)

    def tick(self, now_ms: int) -> None:
        self._now_ms = now_ms
        self._ticked = True             # the next Ready carries the next deadline
        if self.is_leader:
            if now_ms >= self._next_expiry_cycle_ms:
                self._next_expiry_cycle_ms = now_ms + expiry_cycle_interval_ms
                expired = self.keyspace.expired_keys(now_ms, expiry_reclaim_keys_max)
                if expired and self._may_write() is None:
                    self._append(DeleteKeys(expired))
            self._resend_stalled()
            self._expire_held()
            self._check_quorum()
            self._advance_switchover()
        else:
            if now_ms >= self._election_deadline_ms:
                self._election_timer_fired()
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
        if self.is_leader:
            # A leader back from a pause may first see answers from before it: it releases
            # nothing once its confirmation is older than the minimum election timeout.
            self._check_quorum()
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
            writes.append(PutMeta(META_COMMIT_EPOCH, self.commit.epoch))
            writes.append(PutMeta(META_COMMIT_INDEX, self.commit.index))
            self._applied_written = self.applied
        ready.writes = writes
        self._persisting_to = self.log.last
        if self.is_leader:
            self._release_held(ready)
            self._send_appends(now)
        elif self._reply_to_leader:
            self._reply_to_leader = False
            if self.leader_id:
                # Durable as far as it is known to match the leader's log: beyond that our
                # entries may be another history's (this leader will send its own).
                log = self.log
                durable = log.position(min(log.last.index,
                                           max(self._verified_index, log.base.index)))
                hint = self._hint if not self._accepted else durable
                self._messages.append(AppendReply(self.node_id, self.leader_id, self.epoch,
                                                  durable, self.applied, self._accepted,
                                                  self._incarnation, self._echo_ms, hint))
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

    # --- elections -------------------------------------------------------------------------------

    def _election_timeout_ms(self) -> int:
        """A random wait in the configured range; a member of higher priority draws from a
        lower slice of it, so it usually runs first."""
        low = self.settings.election_timeout_min_ms
        span = (self.settings.election_timeout_max_ms - low) / self._priority_levels
        return low + int(span * (self._priority_rank + self.rng.random()))

    def _reset_election_timer(self) -> None:
        self._election_deadline_ms = self._now_ms + self._election_timeout_ms()

    def _lost_leader(self) -> None:
        if self._leaderless_since_ms is None:
            self._leaderless_since_ms = self._now_ms

    def _found_leader(self) -> None:
        """This node knows the leader of its epoch again: the failover (if any) is over."""
        if self._leaderless_since_ms is not None:
            if self._had_leader:
                self.last_failover_ms = self._now_ms - self._leaderless_since_ms
            self._leaderless_since_ms = None
        self._had_leader = True

    def _broadcast(self, make: object) -> None:
        for member in self.config.members:
            if member != self.node_id:
                self._messages.append(make(member))

    def _election_timer_fired(self) -> None:
        """No word from a leader for a whole timeout (or the last campaign went nowhere)."""
        self._reset_election_timer()
        self._lost_leader()
        if self.leader_id:
            self._notes.append(Probe("leader_timed_out"))
            self.leader_id = ""
        if not self._may_stand():
            return
        if self.role == "candidate":
            self.elections["lost"] += 1
            self.role = "follower"
        # Pre-vote: ask whether we could win before disturbing anyone with a new epoch.
        self._campaign = Campaign(self.epoch + 1, True, {self.node_id}, self._now_ms)
        last = self.log.last
        self._broadcast(lambda member: VoteRequest(self.node_id, member, self.epoch + 1, last,
                                                   pre=True, transfer=False))
        if len(self._campaign.granted) >= self.votes_needed:
            self._start_election(transfer=False)

    def _start_election(self, transfer: bool) -> None:
        """Run for ``epoch + 1``: the vote for itself is durable before any request leaves
        (they go out in the ``Ready`` that persists it)."""
        self.epoch += 1
        self.voted_for = self.node_id
        self._persist_vote()
        self.role = "candidate"
        self.leader_id = ""
        self._lost_leader()
        self._campaign = Campaign(self.epoch, False, {self.node_id}, self._now_ms)
        self.elections["started"] += 1
        self._notes.append(Probe("election_started"))
        self._reset_election_timer()
        last = self.log.last
        self._broadcast(lambda member: VoteRequest(self.node_id, member, self.epoch, last,
                                                   pre=False, transfer=transfer))
        if len(self._campaign.granted) >= self.votes_needed:
            self._become_leader()

    def _persist_vote(self) -> None:
        self._writes.append(PutMeta(META_EPOCH, self.epoch))
        self._writes.append(PutMeta(META_VOTED_EPOCH, self.epoch))
        self._writes.append(PutMeta(META_VOTED_FOR, self.voted_for))

    def _adopt_epoch(self, epoch: int) -> None:
        """A message of a later epoch: whatever this node was, it now follows (the leader of
        that epoch, once it hears from it)."""
        assert epoch > self.epoch, (epoch, self.epoch)
        self.epoch = epoch
        self.voted_for = ""
        self._persist_vote()
        if self.role != "follower":
            self._step_down(f"saw epoch {epoch}")
        self.leader_id = ""
        self._lost_leader()
        self._campaign = None

    def _hears_a_leader(self) -> bool:
        """Leader stickiness: a member that heard from a leader less than the minimum election
        timeout ago refuses to help elect another (a member that was cut off and comes back
        cannot disturb a working leader); a leader refuses while it leads."""
        if self.is_leader:
            return True
        return bool(self.leader_id) and \
            self._now_ms - self._last_leader_contact_ms < self.settings.election_timeout_min_ms

    def _rejoining(self) -> bool:
        return self._started_empty and not (self._followed and
                                            self._now_ms >= self._votes_from_ms)

    def _bootstrap_election(self, candidate: str, epoch: int) -> bool:
        return epoch == 1 and candidate == self.settings.leader(self.config.members)

    def _may_stand(self) -> bool:
        return self.node_id in self.candidates and (
            not self._rejoining() or self._bootstrap_election(self.node_id, self.epoch + 1))

    def _on_vote_request(self, request: VoteRequest) -> None:
        if request.source not in self.config.members or request.source == self.node_id:
            return
        fresh = request.last >= self.log.last or "vote_without_freshness" in self.config.bugs
        fresh = fresh and (not self._rejoining()
                           or self._bootstrap_election(request.source, request.epoch))
        sticky = not request.transfer and self._hears_a_leader()
        if request.pre:
            granted = request.epoch > self.epoch and fresh and not sticky
            self._messages.append(VoteReply(self.node_id, request.source, self.epoch, True,
                                            granted))
            return
        if sticky and request.epoch > self.epoch:
            return          # not even the epoch is taken: the leader it hears stays in office
        if request.epoch > self.epoch:
            self._adopt_epoch(request.epoch)
        granted = request.epoch == self.epoch and fresh and self.voted_for in ("", request.source)
        if granted and self.voted_for != request.source:
            self.voted_for = request.source
            self._persist_vote()            # durable before the reply leaves (same Ready)
        if granted:
            self._reset_election_timer()
        self._messages.append(VoteReply(self.node_id, request.source, self.epoch, False, granted))

    def _on_pre_vote_reply(self, reply: VoteReply) -> None:
        if reply.epoch > self.epoch:
            self._adopt_epoch(reply.epoch)
            return
        campaign = self._campaign
        if campaign is None or not campaign.pre or campaign.epoch != self.epoch + 1 \
                or not reply.granted:
            return
        campaign.granted.add(reply.source)
        if len(campaign.granted) >= self.votes_needed:
            self._start_election(transfer=False)

    def _on_vote_reply(self, reply: VoteReply) -> None:
        campaign = self._campaign
        if self.role != "candidate" or campaign is None or campaign.pre \
                or reply.epoch != self.epoch or not reply.granted:
            return
        campaign.granted.add(reply.source)
        if len(campaign.granted) >= self.votes_needed:
            self._become_leader()

    def _on_timeout_now(self, message: TimeoutNow) -> None:
        """Switchover: the leader of this epoch hands over; run at once, skipping the pre-vote
        (the leader is alive, so every voter would still refuse it)."""
        if message.epoch == self.epoch and not self.is_leader \
                and self.node_id in self.candidates:
            self._notes.append(Probe("switchover_received"))
            self._start_election(transfer=True)

    def _become_leader(self) -> None:
        campaign = self._campaign
        self.role = "leader"
        self.is_leader = True
        self.leader_id = self.node_id
        self._campaign = None
        self._learn_epoch_leader(self.epoch, self.node_id)
        now = self._now_ms
        self._leader_since_ms = now
        self._quorum_confirmed_floor_ms = -1
        self._next_heartbeat_ms = now
        self.followers = {member: FollowerProgress(member, next_index=self.log.last.index + 1,
                                                   last_progress_ms=now)
                          for member in self.config.members if member != self.node_id}
        for voter in campaign.granted - {self.node_id}:     # they follow us since they voted
            self.followers[voter].echo_ms = campaign.started_ms
        self._apply_up_to(self.log.last.index)   # a leader's data is its whole log
        self._append(EpochStart(self.node_id))
        self.elections["won"] += 1
        self._notes.append(Probe("became_leader"))
        self._advance_commit()
        # Writes this node was forwarding: those that never left run here now; those sent to
        # the old leader may have been applied there, so their outcome is unknown.
        forwards, self._forwards = self._forwards, {}
        for pending in forwards.values():
            if pending.sent_to:
                self._answer_in_doubt(pending)
            else:
                self.propose(pending.command, pending.request_id, now)

    def _step_down(self, reason: str) -> None:
        """Leader or candidate -> follower. Replies the leader held are answered: a write may
        still commit under the next leader (``-INDOUBT``), a read changed nothing."""
        was_leader = self.is_leader
        self.role = "follower"
        self.is_leader = False
        self._campaign = None
        self._reset_election_timer()
        if not was_leader:
            return
        self.leader_id = ""
        self._lost_leader()
        self._notes.append(Probe("stepped_down"))
        held = self._held
        while held:
            waiter = held.popleft()
            self.counters["replies_in_doubt"] += waiter.is_write
            if waiter.is_write:
                value = Error(f"INDOUBT {self.node_id} stopped leading ({reason}) before the "
                              f"write at {waiter.position} was confirmed; it may still commit")
            else:
                value = Error(f"TRYAGAIN {self.node_id} stopped leading ({reason}) before it "
                              f"could confirm the read; it changed nothing")
            self._deliver(self._ready, waiter.request_id, value, None)
        self._check_waits(timed_out_before_ms=None, answer_all_counts=True)
        self.followers = {}
        self._snapshot = None
        switchover = self._switchover
        if switchover is not None:
            self._switchover = None
            self._reply_now(switchover.request_id, Simple(
                f"OK leadership handed to {switchover.target} at epoch {self.epoch}")
                if switchover.handed else Error(
                f"ERR {self.node_id} stopped leading ({reason}) before the switchover to "
                f"{switchover.target} was handed over"))

    def _check_quorum(self) -> None:
        """A leader that no set of members meeting every election quorum has confirmed for a
        minimum election timeout steps down: elsewhere a new leader may be elected by now."""
        if "ack_without_quorum_contact" in self.config.bugs:
            return
        limit = self.settings.election_timeout_min_ms
        now = self._now_ms
        if now - self._leader_since_ms >= limit and \
                now - self._confirmed_ms(self.survivors) >= limit:
            self._step_down(f"no word from {self.survivors - 1} followers for {limit} ms")

    def _confirmed_ms(self, count: int) -> int:
        """The latest leader time by which ``count`` members, this one included, were known to
        follow this leader (this node itself: now, and later than anything that arrived)."""
        times = sorted((f.echo_ms for f in self.followers.values()), reverse=True)
        return (self._now_ms + 1) if count <= 1 else times[count - 2]

    # --- the leader ----------------------------------------------------------------------------

    def _lead(self, command: ClientCommand, category: str, is_write: bool,
              request_id: int) -> None:
        if is_write:
            refusal = self._may_write()
            if refusal is not None:
                self._reply_now(request_id, refusal)
                return
        if category in DATA_CATEGORIES:
            reply, effects = self.keyspace.execute(command, self._now_ms)
            position = None
            for effect in effects:
                position = self._append(effect)
            self._hold(request_id, reply, position, is_write)
        elif command.name == WAIT_REPLICAS:
            self._wait_position(request_id, command.args, counting=True)
        elif command.name == SWITCHOVER:
            self._start_switchover(request_id, command.args)
        else:
            self._reply_now(request_id, self._local_command(command))

    def _may_write(self) -> Error | None:
        """Why the leader refuses a write before appending it (definite: nothing applied)."""
        if self._switchover is not None:
            return Error(f"TRYAGAIN writes pause while leadership moves to "
                         f"{self._switchover.target}; retry in a moment")
        if "ack_without_quorum_contact" not in self.config.bugs and not self._has_quorum_contact():
            self.counters["writes_refused_no_quorum"] += 1
            return Error(f"NOQUORUM fewer than {self.quorum} members answered within "
                         f"{self.settings.quorum_contact_ms} ms; the write was not applied")
        # With W < N - Q + 1, acknowledged entries may not be safe yet; they stay in the log
        # (retention keeps them for the quarantine), so their number is bounded. (Otherwise
        # every committed entry is safe, and uncommitted ones end with the write timeout.)
        unsafe = self.log.last.index - self.safe.index
        if self.quorum < self.survivors and unsafe >= self.settings.log_hold_entries_max:
            return Error(f"TRYAGAIN {unsafe} entries are not yet held by the {self.survivors} "
                         f"members that make a write survive a failover; the write was not "
                         f"applied")
        return None

    def _append(self, effect: Effect) -> Position:
        position = Position(self.epoch, self.log.last.index + 1)
        entry = LogEntry(position, effect)
        self.log.append(entry, self._now_ms)
        self._writes.append(AppendEntry(entry))
        self.keyspace.apply(effect, position.index)
        self.applied = position
        return position

    def _hold(self, request_id: int, reply: object, position: Position | None,
              is_write: bool) -> None:
        """Keep the reply until the commit covers the log as it stands now, and a read until
        enough members confirmed this leader after it arrived (read-index)."""
        index = self.log.last.index
        wrote = position is not None        # a write that changed nothing answers like a read
        arrived = -1 if wrote else self._now_ms
        waiter = Waiter(index, self._now_ms + self.settings.write_timeout_ms, request_id, reply,
                        position, wrote, arrived)
        if not self._held and self._may_release(waiter):
            self._reply_now(request_id, reply, position)
            return
        if not wrote:
            self._read_arrived_ms = self._now_ms
            self._ticked = True     # a Ready must carry the deadline of the confirming round
        self._held.append(waiter)

    def _may_release(self, waiter: Waiter) -> bool:
        if waiter.arrived_ms >= 0 and "ack_without_quorum_contact" in self.config.bugs:
            return True
        if waiter.index > self.commit.index:
            return False
        return waiter.arrived_ms < 0 or self._confirmed_ms(self.survivors) > waiter.arrived_ms

    def _has_quorum_contact(self) -> bool:
        """Asked before every write, so it sorts the followers' echoes only when the floor it
        kept is too old: while this node leads, ``_confirmed_ms`` never decreases (echoes only
        grow, and the followers are replaced only by a new leadership, which resets the
        floor)."""
        since = self._now_ms - self.settings.quorum_contact_ms
        if self._quorum_confirmed_floor_ms >= since:
            return True
        self._quorum_confirmed_floor_ms = self._confirmed_ms(self.quorum)
        return self._quorum_confirmed_floor_ms >= since

    def _advance_commit(self) -> None:
        """The commit: the highest index W members hold durably; ``safe``: the one the members
        that meet every election quorum hold. Both count only entries of this leader's epoch
        (an older epoch's entry on a quorum may still be replaced; once an entry of ours is
        on it, everything before it stays)."""
        durable = sorted([self._durable.index, *(f.match.index for f in self.followers.values())],
                         reverse=True)
        log = self.log
        for count, attribute in ((self.quorum, "commit"), (self.survivors, "safe")):
            index = min(durable[count - 1], log.last.index)
            if index > getattr(self, attribute).index and index >= log.base.index:
                position = log.position(index)
                if position.epoch == self.epoch:
                    setattr(self, attribute, position)
                    if attribute == "commit" and self._leaderless_since_ms is not None:
                        self._found_leader()        # a leader's own epoch is committed

    def _releasable(self) -> bool:
        held = self._held
        return bool(held) and self._may_release(held[0])

    def _release_held(self, ready: Ready) -> None:
        held = self._held
        history = self.config.history_notes
        while held and self._may_release(held[0]):
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
                value = Error(f"NOQUORUM fewer than {self.survivors} members confirmed this "
                              f"leader and the log the command saw within "
                              f"{self.settings.write_timeout_ms} ms; it changed nothing")
            self._deliver(self._ready, waiter.request_id, value, None)

    def _deliver(self, ready: Ready, request_id: int, value: object,
                 position: Position | None) -> None:
        """A reply to a client of this node, to a follower that forwarded the command, or to
        the client of a ``CHORUS.DIVERGENT REAPPLY`` (which marks the entry reapplied)."""
        if request_id < 0:
            reapplied = self._reapplying.pop(request_id, None)
            if reapplied is not None:
                client_request, entry_id = reapplied
                if not isinstance(value, Error):
                    self._resolve_divergent(entry_id, "reapplied", self.node_id)
                ready.replies.append(ClientReply(client_request, value, position))
                return
            forwarded = self._forwarded.pop(request_id, None)
            if forwarded is not None:
                source, incarnation, sequence = forwarded
                self._messages.append(ForwardReply(self.node_id, source, self.epoch, incarnation,
                                                   sequence, value, position or ZERO_POSITION))
                return
        ready.replies.append(ClientReply(request_id, value, position))

    def _reply_now(self, request_id: int, value: object, position: Position | None = None) -> None:
        self._deliver(self._ready, request_id, value, position)

    # --- streaming to followers -------------------------------------------------------------------

    def _confirmation_due(self, now: int) -> bool:
        """A read waits for confirmation and no round went to every follower since it arrived
        (a round in the same millisecond does not count: it may have left before the read
        came)."""
        return self._confirmation_wanted() and now > self._read_arrived_ms

    def _confirmation_wanted(self) -> bool:
        return 0 <= self._round_ms <= self._read_arrived_ms or \
            (self._round_ms < 0 <= self._read_arrived_ms)

    def _replication_due(self) -> bool:
        if self._now_ms >= self._next_heartbeat_ms or self._confirmation_due(self._now_ms):
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
        heartbeat = now >= self._next_heartbeat_ms or self._confirmation_due(now)
        if heartbeat:
            self._next_heartbeat_ms = now + self.settings.heartbeat_interval_ms
            self._round_ms = now
        log = self.log
        last = log.last.index
        commit = self.commit
        safe = self.safe
        epoch = self.epoch
        source = self.node_id
        optimistic = "ack_before_durable" in self.config.bugs
        for f in self.followers.values():
            if f.snapshot_next_chunk < 0 and f.next_index < log.first_index:
                if not self._answering(f, now):
                    # A snapshot for a follower that is down waits until it answers this.
                    if heartbeat:
                        self._messages.append(Append(source, f.member, epoch, log.base, (),
                                                     commit, safe, now))
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
                self._messages.append(Append(source, f.member, epoch, prev, entries, commit,
                                             safe, now))
                f.next_index += len(entries)
                self.counters["append_messages_sent"] += 1
                self.counters["entries_sent"] += len(entries)
                sent = True
                if optimistic:
                    f.match = max(f.match, entries[-1].position)
            if not sent and (heartbeat or f.sent_commit < commit):
                self._messages.append(Append(source, f.member, epoch,
                                             log.position(f.next_index - 1), (), commit, safe,
                                             now))
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
        f.echo_ms = max(f.echo_ms, reply.echo_ms)
        f.applied = max(f.applied, reply.applied)
        durable = reply.durable
        last = self.log.last
        if durable.index > last.index:
            # The follower holds entries this leader does not: only a leader that lost part of
            # its log (power loss with durability "os") gets here. Resend from our end.
            self._notes.append(Probe("follower_ahead_of_leader"))
            durable = last
        if f.snapshot_next_chunk >= 0:
            # Its log is being replaced; the snapshot's end decides. But a refusal says it holds
            # less than we counted (it dropped its data to be re-seeded): stop counting it now.
            if not reply.accepted:
                f.match = min(f.match, durable)
            return
        if reply.accepted:
            if durable > f.match:
                f.match = durable
                f.last_progress_ms = now
            f.next_index = max(f.next_index, f.match.index + 1)
        else:
            # A gap (lost or reordered Append), a follower that restarted with less, or a log
            # that diverges: resend from the last entry both logs may share. The hint holds
            # only entries of epochs up to its own, so skip ours of later epochs; the
            # follower checks ``prev`` again and hints further back if it still differs.
            hint = reply.hint
            index = self.log.last_index_of_epoch_at_most(hint.epoch, hint.index)
            f.match = min(f.match, self.log.position(index) if index >= self.log.base.index
                          else ZERO_POSITION)
            f.next_index = index + 1
            f.last_progress_ms = now
        self._advance_commit()
        self._check_waits_now()
        self._advance_switchover()

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
            # Not applied here: definite, so the follower may send it to the real leader.
            self._messages.append(ForwardReply(self.node_id, forward.source, self.epoch,
                                               forward.incarnation, forward.sequence,
                                               self._not_leader_error(), ZERO_POSITION))
            return
        identity = (forward.source, forward.incarnation, forward.sequence)
        if identity in self._forward_seen:
            return          # a duplicate: the first copy is answered
        self._forward_seen[identity] = None
        if len(self._forward_seen) > forward_dedup_entries_max:
            self._forward_seen.popitem(last=False)
        request_id = self._internal_request_id()
        self._forwarded[request_id] = identity
        self.propose(forward.command, request_id, self._now_ms)

    def _internal_request_id(self) -> int:
        """Request ids of commands this core runs for others are negative."""
        request_id = self._next_internal_request
        self._next_internal_request -= 1
        return request_id

    def _not_leader_error(self) -> Error:
        if self.leader_id and self.leader_id != self.node_id:
            address = self._client_addresses.get(self.leader_id, "?")
            return Error(f"NOTLEADER {self.leader_id} {address}")
        return Error(f"{NO_LEADER_TEXT} to {self.node_id} (an election is running); retry in a "
                     f"moment")

    # --- the follower ----------------------------------------------------------------------------------

    def _follower_write(self, command: ClientCommand, request_id: int) -> None:
        """Forward the write to the leader; while no leader is known, keep it until one is
        (within the write timeout), so a client of a follower sees a pause, not an error."""
        if self.settings.follower_writes == "redirect":
            self._reply_now(request_id, self._not_leader_error())
            return
        if len(self._forwards) >= forwards_pending_max:
            self._reply_now(request_id, Error(
                f"TRYAGAIN {forwards_pending_max} forwarded writes are awaiting the leader "
                f"{self.leader_id or '(none known)'}; the write was not forwarded"))
            return
        self._forward_sequence += 1
        timeout_ms = self.settings.write_timeout_ms
        is_wait = command.name == WAIT_REPLICAS
        if command.name == SWITCHOVER:
            timeout_ms += self.settings.switchover_timeout_ms
        deadline = self._now_ms + timeout_ms
        if is_wait:                 # WAIT's own timeout, and the leader's answer on top
            wait_ms = int(command.args[1]) if command.args[1].isdigit() else 0
            deadline = NO_DEADLINE if wait_ms == 0 else deadline + wait_ms
        pending = PendingForward(request_id, deadline, is_wait, command, "")
        key = (self._incarnation, self._forward_sequence)
        self._forwards[key] = pending
        self.counters["forwarded_writes"] += 1
        self._send_forward(key, pending)

    def _send_forward(self, key: tuple[int, int], pending: PendingForward) -> None:
        if not self.leader_id or self.is_leader:
            pending.sent_to = ""
            return
        pending.sent_to = self.leader_id
        self._messages.append(Forward(self.node_id, self.leader_id, self.epoch, key[0], key[1],
                                      pending.command))

    def _send_waiting_forwards(self) -> None:
        for key, pending in self._forwards.items():
            if not pending.sent_to:
                self._send_forward(key, pending)

    def _on_forward_reply(self, reply: ForwardReply) -> None:
        key = (reply.incarnation, reply.sequence)
        pending = self._forwards.get(key)
        if pending is None:
            return          # answered already (a duplicate), or timed out
        value = reply.value
        if isinstance(value, Error) and value.text.startswith(NOT_LEADER_PREFIXES):
            # Refused by a node that is not the leader: nothing was applied. Send it to the
            # leader we know, or keep it until we know one.
            if self.leader_id == reply.source:
                pending.sent_to = ""
            else:
                self._send_forward(key, pending)
            return
        del self._forwards[key]
        position = reply.position if reply.position != ZERO_POSITION else None
        self._deliver(self._ready, pending.request_id, value, position)

    def _expire_forwards(self) -> None:
        now = self._now_ms
        expired = [key for key, pending in self._forwards.items()
                   if pending.deadline_ms != NO_DEADLINE and pending.deadline_ms <= now]
        for key in expired:
            pending = self._forwards.pop(key)
            if pending.sent_to:
                self._answer_in_doubt(pending)
            else:
                self._deliver(self._ready, pending.request_id, 0 if pending.is_wait else Error(
                    f"TRYAGAIN no leader was elected within {self.settings.write_timeout_ms} ms; "
                    f"the write was not applied"), None)

    def _answer_in_doubt(self, pending: PendingForward) -> None:
        """A forwarded write whose leader did not answer (in time, or before it lost office)."""
        # A WAIT whose answer never came: no follower was seen to hold the write.
        self._deliver(self._ready, pending.request_id, 0 if pending.is_wait else Error(
            f"INDOUBT the leader {pending.sent_to} did not answer the forwarded write; it may "
            f"still be applied"), None)

    def _forget_forwards_to_others(self) -> None:
        """A new leader is known: what was forwarded to another one will get no answer (if
        it was applied there, the new leader's log says so; the client cannot be told)."""
        for key in [key for key, pending in self._forwards.items()
                    if pending.sent_to and pending.sent_to != self.leader_id]:
            self._answer_in_doubt(self._forwards.pop(key))

    def _on_append(self, append: Append) -> None:
        if append.epoch < self.epoch and "no_epoch_check_on_append" not in self.config.bugs:
            # A deposed leader: tell it the epoch, so it steps down at once.
            self._notes.append(Probe("stale_append_refused"))
            self._messages.append(AppendReply(self.node_id, append.source, self.epoch,
                                              self.log.last, self.applied, False,
                                              self._incarnation, -1, self.log.last))
            return
        if self.is_leader:
            return          # only with the bug: two leaders of one epoch cannot exist
        if self.role == "candidate":
            self._step_down(f"{append.source} leads epoch {append.epoch}")
        now = self._now_ms
        if append.epoch < self.epoch:           # only with the bug
            self.epoch = append.epoch
            self.voted_for = ""
            self._persist_vote()
        if self.leader_id != append.source:
            self.leader_id = append.source
            self._learn_epoch_leader(append.epoch, append.source)
            self._echo_ms = -1
            self._verified_index = 0
            self._found_leader()
            self._forget_forwards_to_others()
            self._send_waiting_forwards()
        self._last_leader_contact_ms = now
        self._leader_commit_heard = max(self._leader_commit_heard, append.commit)
        self._reset_election_timer()
        self._echo_ms = max(self._echo_ms, append.sent_ms)
        self._reply_to_leader = True
        if self._incoming is not None:
            self._spool(append)
            return
        log = self.log
        prev = append.prev
        if prev.index > log.last.index and "apply_out_of_order" not in self.config.bugs:
            self._reject(log.last)          # a gap: the leader resends from our end
            return
        if prev.index < log.base.index:
            # Entries we compacted: our base must be among them, or it is not in the leader's
            # history (a snapshot of a deposed leader's data, or a log the leader lacks). Only
            # Appends that carry entries count as attempts to reach it: an empty one is the
            # heartbeat of a leader that does not know where our log starts (it sent us a
            # snapshot and has not heard back yet), and says nothing about our base.
            base = log.base
            reaching = [entry for entry in append.entries if entry.position.index == base.index]
            if reaching and reaching[0].position != base or not reaching and \
                    append.entries and self._base_refusals >= base_refusals_max:
                self._reseed(f"the log base {base} is not in the history of {append.source}",
                             verified=False)
                self._reject(ZERO_POSITION)
                return
            if not reaching:
                self._base_refusals += bool(append.entries)
                self._reject(base)          # ask for the entries up to our base
                return
            prev = base
        self._base_refusals = 0
        if prev.index <= log.last.index and log.position(prev.index) != prev:
            if prev.index == log.base.index:
                # Our base itself (a snapshot's position) is not in the leader's history.
                self._reseed(f"the log base {log.base} is not in the history of {append.source}",
                             verified=True)
                self._reject(ZERO_POSITION)
                return
            ours = log.position(prev.index)
            self._notes.append(Probe("append_prev_mismatch"))
            self._reject(Position(ours.epoch, prev.index - 1))
            return
        for entry in append.entries:
            index = entry.position.index
            if index <= log.base.index:
                continue                    # compacted here, and our base matched
            if index <= log.last.index:
                if log.position(index) == entry.position:
                    continue                # held already (a duplicate or a resend)
                self._truncate_after(index - 1, append.source)
                if log.last.index != index - 1:
                    self._reject(ZERO_POSITION)     # re-seeded: the leader starts over
                    return
            if index != log.last.index + 1:                     # only with apply_out_of_order
                log.reset(Position(entry.position.epoch, index - 1))
                self._writes.append(ResetLog(log.base))
                self.applied = max(self.applied, log.base)          # the gap is never applied
            log.append(entry, now)
            self._writes.append(AppendEntry(entry))
            self.counters["entries_received"] += 1
            if type(entry.effect) is EpochStart:
                self._learn_epoch_leader(entry.position.epoch, entry.effect.leader)
        sent_to = append.entries[-1].position.index if append.entries else prev.index
        self._verified_index = max(self._verified_index, min(sent_to, log.last.index))
        self._followed = True
        verified = log.position(max(self._verified_index, log.base.index))
        self.commit = max(self.commit, min(append.commit, verified))
        self.safe = max(self.safe, min(append.safe, verified))
        self._apply_up_to(min(self.commit.index, log.last.index))
        if self.applied >= append.commit:
            self._caught_up_ms = now
            if self._reseeding:
                self._reseeding = False     # caught up with what the leader acknowledged
        self._check_waits_now()

    def _learn_epoch_leader(self, epoch: int, leader: str) -> None:
        leaders = self._epoch_leaders
        if leaders.get(epoch) == leader:
            return
        leaders[epoch] = leader
        for old in sorted(leaders)[:-epoch_leaders_kept]:
            del leaders[old]
        self._writes.append(PutMeta(META_EPOCH_LEADERS, " ".join(
            f"{e}={name}" for e, name in sorted(leaders.items()))))

    def _reject(self, hint: Position) -> None:
        self._accepted = False
        self._hint = hint

    def _quarantine(self, entries: list[LogEntry], removed_by: str, verified: bool) -> None:
        """Keep removed entries in the ``divergent`` table (same batch as the removal)."""
        if "drop_divergent" in self.config.bugs:
            return
        for entry in entries:
            if not carries_a_write(entry.effect):
                continue
            item = DivergentEntry(self._next_divergent_id, entry,
                                  self._epoch_leaders.get(entry.position.epoch, ""),
                                  self._now_ms, removed_by, verified)
            self._next_divergent_id += 1
            self.divergent.append(item)
            self._writes.append(PutDivergent(item))
        if entries:
            self._notes.append(Probe("divergent_quarantined"))

    def _truncate_after(self, index: int, leader: str) -> None:
        """Our entries after ``index`` differ from the leader's: quarantine and remove them.
        If they were applied already (this node led when it wrote them, or W + Q <= N let a
        follower apply entries a later leader lacks), the data cannot be rolled back entry by
        entry: the node re-seeds from the leader."""
        if self.applied.index > index:
            self._reseed(f"entries after {index} it had applied diverge from {leader}'s log",
                         verified=True, keep_through=index)
            return
        removed = self.log.truncate_after(index)
        self._quarantine(removed, leader, verified=True)
        self._writes.append(TruncateLogAfter(self.log.last))
        self._notes.append(Probe("log_truncated"))

    def _reseed(self, reason: str, verified: bool, keep_through: int = -1) -> None:
        """Drop data and log (quarantining the entries after ``keep_through``, the last one
        known to be in the leader's history): the leader sends everything again, or a
        snapshot."""
        log = self.log
        start = max(keep_through, log.base.index)
        removed = log.truncate_after(start) if start <= log.last.index else []
        self._quarantine(removed, self.leader_id, verified)
        self._writes.extend(self.keyspace.take_changes())
        self._writes.append(ClearRecords())
        self._writes.append(ResetLog(ZERO_POSITION))
        self.keyspace = Keyspace({})
        log.reset(ZERO_POSITION)
        self.applied = ZERO_POSITION
        self.commit = ZERO_POSITION
        self.safe = ZERO_POSITION
        self._verified_index = 0
        self._applied_written = None
        self.counters["reseeds_after_divergence"] += 1
        self._reseed_reason = reason
        self._reseeding = True
        self._notes.append(Probe("reseed_after_divergence"))

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
        self._reset_election_timer()
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
        # Our entries the snapshot replaces and that may not be in the leader's history:
        # those above what we knew to be safe, except entries of the snapshot's own epoch up
        # to its position (that epoch's leader wrote them, and its log holds them).
        log = self.log
        if log.last.index > max(self.safe.index, log.base.index):
            removed = log.truncate_after(max(self.safe.index, log.base.index))
            self._quarantine([entry for entry in removed
                              if entry.position.epoch != position.epoch
                              or entry.position.index > position.index],
                             self.leader_id, verified=False)
        self._writes.extend(self.keyspace.take_changes())
        self._writes.append(ClearRecords())
        self._writes.extend(PutRecord(key, record) for key, record in records.items())
        self._writes.append(ResetLog(position))
        self.keyspace = Keyspace(records)
        self.log.reset(position)
        self.applied = position
        self._verified_index = position.index
        self._reseeding = False
        self._applied_written = None            # the applied position goes to meta again
        self.counters["snapshots_installed"] += 1
        self._notes.append(Probe("snapshot_installed"))
        for entry in incoming.spool:
            if entry.position.index == self.log.last.index + 1:
                self.log.append(entry, self._now_ms)
                self._writes.append(AppendEntry(entry))
                self._verified_index = entry.position.index
        self._apply_up_to(min(self.commit.index, self.log.last.index))
        self._reply_to_leader = True

    # --- switchover -----------------------------------------------------------------------------------

    def _start_switchover(self, request_id: int, args: tuple[bytes, ...]) -> None:
        """``CHORUS.SWITCHOVER node [timeout_ms]``: pause writes, wait until ``node`` holds the
        whole log durably, tell it to run (``TimeoutNow``); the reply comes when this leader
        sees the new epoch, or an error when the time is up (writes then resume)."""
        target = args[0].decode(errors="replace")
        timeout_ms = self.settings.switchover_timeout_ms
        if len(args) > 1:
            if not args[1].isdigit() or int(args[1]) == 0:
                self._reply_now(request_id, Error("ERR the timeout must be a positive integer "
                                                  "(milliseconds)"))
                return
            timeout_ms = int(args[1])
        if target == self.node_id:
            self._reply_now(request_id, Simple(f"OK {target} already leads epoch {self.epoch}"))
            return
        refusal = None
        if target not in self.followers:
            refusal = f"{target} is not a member (members: {', '.join(self.config.members)})"
        elif target not in self.candidates:
            refusal = f"{target} is configured with candidate = false"
        elif self._switchover is not None:
            refusal = f"a switchover to {self._switchover.target} is in progress"
        if refusal is not None:
            self._reply_now(request_id, Error(f"ERR switchover refused: {refusal}"))
            return
        now = self._now_ms
        self._switchover = Switchover(target, request_id, now, now + timeout_ms)
        self._notes.append(Probe("switchover_started"))
        self._advance_switchover()

    def _advance_switchover(self) -> None:
        switchover = self._switchover
        if switchover is None:
            return
        f = self.followers[switchover.target]
        now = self._now_ms
        if not switchover.handed and f.match == self.log.last and self._answering(f, now):
            switchover.handed = True
            self._messages.append(TimeoutNow(self.node_id, f.member, self.epoch))
            return
        if now < switchover.deadline_ms:
            return
        self._switchover = None
        elapsed = now - switchover.started_ms
        if switchover.handed:
            reason = f"{f.member} did not take over within {elapsed} ms"
        elif not self._answering(f, now):
            reason = f"{f.member} is not answering"
        else:
            reason = (f"{f.member} is {self.log.last.index - f.match.index} entries behind "
                      f"after {elapsed} ms (durable at {f.match}, log end {self.log.last})")
        self._reply_now(switchover.request_id, Error(
            f"ERR switchover refused: {reason}; writes resumed on {self.node_id}"))

    # --- divergent entries ----------------------------------------------------------------------------

    def _divergent_command(self, request_id: int, args: tuple[bytes, ...]) -> None:
        """``CHORUS.DIVERGENT LIST [ALL|PENDING] | SHOW id | REAPPLY id | DISCARD id who``."""
        sub = args[0].upper()
        if sub == b"LIST" and len(args) <= 2:
            everything = len(args) == 2 and args[1].upper() == b"ALL"
            if len(args) == 2 and not everything and args[1].upper() != b"PENDING":
                self._reply_now(request_id, Error("ERR LIST takes ALL or PENDING"))
                return
            self._reply_now(request_id, [item_reply(item) for item in self.divergent
                                         if everything or not item.resolution])
            return
        arity = {b"SHOW": 2, b"REAPPLY": 2, b"DISCARD": 3}.get(sub)
        if arity is None or len(args) != arity:
            self._reply_now(request_id, Error(
                "ERR usage: CHORUS.DIVERGENT LIST [ALL|PENDING] | SHOW id | REAPPLY id | "
                "DISCARD id who"))
            return
        item = self._divergent_item(args[1])
        if item is None:
            self._reply_now(request_id, Error(
                f"ERR no divergent entry {args[1].decode(errors='replace')} on {self.node_id}; "
                f"CHORUS.DIVERGENT LIST shows them"))
            return
        if sub == b"SHOW":
            self._reply_now(request_id, item_reply(item))
            return
        if item.resolution:
            self._reply_now(request_id, Error(
                f"ERR divergent entry {item.entry_id} was {item.resolution} by "
                f"{item.resolved_by} at {item.resolved_at_ms}"))
            return
        if sub == b"DISCARD":
            self._resolve_divergent(item.entry_id, "discarded",
                                    args[2].decode(errors="replace"))
            self._reply_now(request_id, OK)
            return
        internal = self._internal_request_id()
        self._reapplying[internal] = (request_id, item.entry_id)
        self.propose(entry_command(item.entry.effect), internal, self._now_ms)

    def _divergent_item(self, text: bytes) -> DivergentEntry | None:
        if not text.isdigit():
            return None
        entry_id = int(text)
        return next((item for item in self.divergent if item.entry_id == entry_id), None)

    def _resolve_divergent(self, entry_id: int, resolution: str, who: str) -> None:
        for i, item in enumerate(self.divergent):
            if item.entry_id == entry_id and not item.resolution:
                resolved = replace(item, resolution=resolution, resolved_by=who,
                                   resolved_at_ms=self._now_ms)
                self.divergent[i] = resolved
                self._writes.append(PutDivergent(resolved))
                return

    # --- commands answered by any node ----------------------------------------------------------

    def _local_command(self, command: ClientCommand) -> object:
        name = command.name
        if name in (b"CHORUS.POSITION", b"CHORUS.TOKEN"):
            return str(self.applied).encode()
        if name == b"CHORUS.DIGEST":
            return self.keyspace.digest(self._now_ms).encode()
        if name in MULTI_LEADER_COMMANDS:
            return multi_leader_only(name)
        raise AssertionError(f"{name!r} is handled by the server, not the core")

    def _wait_position(self, request_id: int, args: tuple[bytes, ...], counting: bool) -> None:
        """``CHORUS.WAITREPLICAS n timeout epoch index`` (``counting``) or
        ``CHORUS.WAITPOS epoch index timeout [MAXLAG n] [MAXSTALENESS ms]``."""
        bounds: PositionWaitRequest | None = None
        replicas: int | None = None
        if counting:
            try:
                replicas, timeout_ms, epoch, index = (int(arg) for arg in args)
            except ValueError:
                self._reply_now(request_id, NOT_AN_INTEGER)
                return
            if (epoch, index) == (-1, -1):        # the server's "the log's end now"
                epoch, index = self.log.last.epoch, self.log.last.index
            if timeout_ms < 0 or replicas < 0 or epoch < 0 or index < 0:
                self._reply_now(request_id, Error("ERR timeout is negative" if timeout_ms < 0
                                                  else "ERR a negative position or count"))
                return
            position = Position(epoch, index)
        else:
            parsed = parse_position_wait(args)
            if isinstance(parsed, Error):
                self._reply_now(request_id, parsed)
                return
            bounds, position, timeout_ms = parsed, parsed.position, parsed.timeout_ms
        if len(self._position_waits) >= waiters_max:
            self._reply_now(request_id, Error(f"ERR more than {waiters_max} waits outstanding"))
            return
        deadline = NO_DEADLINE if timeout_ms == 0 and counting else self._now_ms + timeout_ms
        wait = PositionWait(request_id, position, replicas, deadline, bounds)
        # CHORUS.WAITPOS ... 0 does not wait: it answers now, OK or -TRYAGAIN.
        if not self._finish_wait(wait, timed_out=deadline == self._now_ms):
            self._position_waits.append(wait)

    def lag_entries(self) -> int:
        """Committed entries this node has not applied yet, as far as it knows (0 on the
        leader)."""
        if self.is_leader:
            return 0
        return max(0, self._leader_commit_heard.index - self.applied.index)

    def staleness_ms(self) -> int | None:
        """How long ago this node last held everything the leader had committed (0 on the
        leader; None: never since it started)."""
        if self.is_leader:
            return 0
        return None if self._caught_up_ms < 0 else self._now_ms - self._caught_up_ms

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
        applied = self.applied >= wait.position
        lag, staleness = self.lag_entries(), self.staleness_ms()
        if applied and (wait.bounds is None or wait.bounds.bounds_met(lag, staleness)):
            self._reply_now(wait.request_id, OK)
            return True
        if timed_out:
            why = (f"is {lag} entries behind and was caught up with the leader "
                   f"{'never' if staleness is None else f'{staleness} ms ago'}" if applied else
                   f"has not applied position {wait.position} (applied: {self.applied})")
            self._reply_now(wait.request_id, Error(
                f"TRYAGAIN {self.node_id} {why} after the timeout; retry, or read from the "
                f"leader"))
            return True
        return False

    def _check_waits(self, timed_out_before_ms: int | None,
                     answer_all_counts: bool = False) -> None:
        """Answer the waits whose condition holds or whose time is up; with
        ``answer_all_counts`` (a leader stepping down) every ``WAIT`` gets its count now."""
        kept = []
        for wait in self._position_waits:
            timed_out = timed_out_before_ms is not None and wait.deadline_ms != NO_DEADLINE \
                and wait.deadline_ms <= timed_out_before_ms
            timed_out = timed_out or (answer_all_counts and wait.replicas is not None)
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
        # Never trimmed: entries not applied, not committed, or not yet safe (a failover could
        # still make them divergent, and they must then be quarantined from the log).
        keep_from = min(self.applied.index, self.commit.index, self.safe.index) + 1
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
            if self.keyspace.holds_records():
                deadlines.append(self._next_expiry_cycle_ms)
            if self._held:
                deadlines.append(self._held[0].deadline_ms)
            if self._confirmation_wanted():
                deadlines.append(self._read_arrived_ms + 1)      # the confirming round
            if self._switchover is not None:
                deadlines.append(self._switchover.deadline_ms)
            for f in self.followers.values():
                if f.snapshot_next_chunk >= 0:
                    deadlines.append(f.snapshot_progress_ms + snapshot_resend_ms)
                elif f.next_index - 1 > f.match.index:
                    deadlines.append(f.last_progress_ms + self.settings.append_resend_ms)
        else:
            deadlines.append(self._election_deadline_ms)
            deadlines.extend(pending.deadline_ms for pending in self._forwards.values()
                             if pending.deadline_ms != NO_DEADLINE)
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
            "election_quorum": self.votes_needed,
            "may_lose_acknowledged_writes": self.quorum + self.votes_needed
                                            <= len(self.config.members),
            "candidate": self.node_id in self.candidates,
            "priority": self.priority,
            "voted_for": self.voted_for,
            "elections": dict(self.elections),
            "leaderless_ms": (0 if self._leaderless_since_ms is None
                              else now - self._leaderless_since_ms),
            "last_failover_ms": self.last_failover_ms,
            "safe_position": _position_dict(self.safe),
            "switchover": None if self._switchover is None else {
                "target": self._switchover.target,
                "state": "handing over" if self._switchover.handed else "catching up",
                "elapsed_ms": now - self._switchover.started_ms},
            "reseed_reason": self._reseed_reason,
            "follower_writes": self.settings.follower_writes,
            "members": members,
            "divergent_entries": sum(1 for item in self.divergent if not item.resolution),
            "divergent_total": len(self.divergent),
            "keys": len(self.keyspace),
            "expires": self.keyspace.expiring_count(),
            "log": {"first_index": self.log.first_index, "entries": len(self.log),
                    "bytes": self.log.bytes},
            "leader_contact_ms_ago": (None if self.is_leader or self._last_leader_contact_ms < 0
                                      else now - self._last_leader_contact_ms),
            "lag_entries": self.lag_entries(),
            "staleness_ms": self.staleness_ms(),
            "snapshot_receiving": (None if self._incoming is None else
                                   f"{len(self._incoming.received)}/{self._incoming.chunks}"),
            "inflight_entries": sum(max(0, f.next_index - 1 - f.match.index)
                                    for f in self.followers.values()),
            "replication": dict(self.counters),
        }


def _position_dict(position: Position) -> dict:
    return {"epoch": position.epoch, "index": position.index}
