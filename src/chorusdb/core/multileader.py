"""Multi-leader mode: every node takes writes; nodes pull each other's logs; conflicts merge.

**A write** is accepted by whichever node the client talks to. The node names it with a dot
``(this node, its next origin sequence)``, stamps it with its hybrid logical clock, applies it to
its ``ReplicatedKeyspace`` and appends it to its own log as one entry, then acknowledges it once
the ``Ready`` that carries the entry, the key's new state and the advanced version vector (meta
``ml_vector:<origin>``) is persisted: one transaction, so the sequence, the data and the log
never disagree after a crash, and a restart continues the sequence where it stopped (the
defect of level-replicator, whose sequence lived in memory, is the ``sequence_not_persisted``
bug below).

**Replication** is pull-based (``core.multileader_messages``). Every ``pull_interval_ms`` a node
asks each peer it pulls from (every other member with ``topology = "all"``; the hub, or every
member for the hub itself, with ``"star"``; the previous member with ``"ring"``) for the entries
after its checkpoint of that peer's log. It applies, in order, each entry whose dot its vector
does not cover (a relayed copy of a write it has is skipped), appends it to its own log, and
moves the checkpoint (meta ``ml_checkpoint:<peer>`` and ``ml_checkpoint_incarnation:<peer>``) in
the same ``Ready``; a reply that says there is more is followed by the next request in that
``Ready``, after the batch is durable. The checkpoint names the life (``incarnation``, a random
id stored with the log) of the peer's store: a peer whose store was replaced is pulled from the
start again. The source side records each puller's checkpoint too (``ml_pulled:<peer>``), and
trims its log only below what every puller has (and beyond ``log_entries_max``, after which a
puller that far behind is reported ``compacted``: it needs a new copy of the data, which this
version does not make). Entries of one origin are applied in sequence order on every node (an
assertion), so a vector entry ``{a: 5}`` means "has a's writes 1 to 5".

**Conflicts** are detected per key by the write's context (the writer's vector) and resolved by
the key's policy (``causal``): ``siblings`` (the default: every concurrent version is kept,
GET shows the greatest stamp, ``CHORUS.SIBLINGS`` lists them with their context and
``CHORUS.SETCTX key context value`` supersedes exactly those), ``lww`` (greatest hybrid stamp;
writes to such keys are refused while this node's clock is ahead of more than half of its
recently heard peers by more than ``clock_offset_ms_max``), or ``resolver`` (an application
function, given the siblings sorted by dot). Counters (INCRBY, DECRBY, INCR, DECR) are
PN-counters and event lists (RPUSH) grow-only sets: neither can conflict. Every conflict a node
applies is counted and the most recent are kept for ``CHORUS.CONFLICTS``.

**Deletes** are tombstone versions. A tombstone goes only when it is causally stable: every
member reported a vector that covers it, and this node holds everything each member had written
before that report (``causal.is_stable``), so no write concurrent with it can still arrive
here. Reports travel on every request (the puller's own vector) and reply (the source's, and the
latest it heard from every member), so the ``star`` and ``ring`` topologies learn them too.

Known defects the simulator can switch on to show that its checks catch them
(``KNOWN_BUGS``).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

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
from chorusdb.core.causal import (
    LWW,
    POLICIES,
    RESOLVER,
    Applied,
    CounterValue,
    Dot,
    Hlc,
    Version,
    VersionVector,
    hlc_now,
    hlc_observe,
    is_stable,
    winner,
)
from chorusdb.core.commands import resolve
from chorusdb.core.keyspace import INT64_MAX, INT64_MIN, list_range, parse_int64
from chorusdb.core.log_tail import LogTail
from chorusdb.core.model import (
    AppendEntry,
    CounterChanged,
    EventsAppended,
    LogEntry,
    Position,
    PutMeta,
    RecoveredState,
    ReplicatedEffect,
    TrimLogBefore,
    VersionWritten,
    Write,
)
from chorusdb.core.multileader_keyspace import KeyPolicy, ReplicatedKeyspace
from chorusdb.core.multileader_messages import PullReply, PullRequest
from chorusdb.replies import (
    INCR_OVERFLOW,
    NOT_AN_INTEGER,
    OK,
    WRONGTYPE,
    Error,
)

LOG_EPOCH = 1
"""The epoch of every multi-leader log position: there are no terms, only this node's order."""

TOPOLOGIES = ("all", "star", "ring")
META_VECTOR_PREFIX = "ml_vector:"
META_CHECKPOINT_PREFIX = "ml_checkpoint:"
META_CHECKPOINT_INCARNATION_PREFIX = "ml_checkpoint_incarnation:"
META_PULLED_PREFIX = "ml_pulled:"
META_INCARNATION = "ml_incarnation"
META_INCARNATION_HISTORY = "ml_incarnation_history"
incarnation_history_max = 16          # earlier lives of the log a checkpoint may name
META_HLC_WALL = "ml_hlc_wall_ms"
META_HLC_LOGICAL = "ml_hlc_logical"
incarnation_bits = 64
clock_samples_per_peer = 8            # offset estimates kept per peer (the smallest counts)


@dataclass(frozen=True, slots=True)
class MultiLeaderSettings:
    """The ``[multi_leader]`` section of the config (see the module docstring)."""

    default_policy: str = "siblings"
    policies: tuple[KeyPolicy, ...] = ()
    topology: str = "all"
    siblings_max: int = 16
    clock_offset_ms_max: int = 500
    pull_interval_ms: int = 50
    pull_timeout_ms: int = 1_000
    pull_batch_entries_max: int = 512
    pull_batch_bytes_max: int = 1 << 20
    log_entries_max: int = 100_000
    tombstone_check_interval_ms: int = 200
    tombstones_checked_max: int = 256
    conflicts_recent_max: int = 100
    peer_heard_recently_ms: int = 5_000
    default_resolver: object = None       # the callable for ``default_policy = "resolver"``

    def __post_init__(self) -> None:
        assert self.default_policy in POLICIES, self.default_policy
        assert self.topology in TOPOLOGIES, self.topology
        assert all(p.policy in POLICIES for p in self.policies), self.policies
        assert all((p.policy == RESOLVER) == (p.resolver is not None) for p in self.policies)
        assert (self.default_policy == RESOLVER) == (self.default_resolver is not None)
        assert self.siblings_max >= 1 and self.pull_batch_entries_max >= 1, self
        assert 0 < self.pull_interval_ms < self.pull_timeout_ms, self


@dataclass(slots=True)
class PeerProgress:
    """What this node knows of one peer it pulls from, and of its pulls from us."""

    checkpoint_incarnation: str = ""
    checkpoint_index: int = 0
    request_sent_ms: int = -1          # -1: no request outstanding
    last_heard_ms: int = -1
    last_index: int = 0                # the peer's log end, from its last reply
    compacted: bool = False
    pulled_index: int = 0              # how far the peer has pulled our log (its checkpoint)
    clock_offsets_ms: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """A conflict this node applied: the key, its policy, the versions that were concurrent
    (the new one last) and the one GET shows now."""

    key: bytes
    policy: str
    versions: tuple[Version, ...]
    winner: Version
    applied_at_ms: int


def pull_sources(node_id: str, members: tuple[str, ...], topology: str) -> tuple[str, ...]:
    """The members ``node_id`` pulls from under ``topology`` (module docstring)."""
    others = tuple(m for m in members if m != node_id)
    if topology == "all" or len(members) <= 2:
        return others
    if topology == "star":
        hub = members[0]
        return others if node_id == hub else (hub,)
    position = members.index(node_id)
    return (members[position - 1],)


def format_history(history: tuple[tuple[str, int], ...]) -> str:
    """The incarnation history as meta stores it: ``life:survived_to`` pairs, oldest first."""
    return ",".join(f"{incarnation}:{survived_to}" for incarnation, survived_to in history)


def parse_history(text: str) -> tuple[tuple[str, int], ...]:
    pairs = []
    for part in filter(None, text.split(",")):
        incarnation, _, survived_to = part.partition(":")
        pairs.append((incarnation, int(survived_to)))
    return tuple(pairs)


def format_vector(vector: VersionVector) -> bytes:
    """A context as clients see it: ``origin:seq`` pairs separated by commas."""
    return b",".join(b"%s:%d" % (origin.encode(), seq) for origin, seq in vector.entries)


def parse_vector(text: bytes) -> VersionVector | None:
    """The inverse of ``format_vector``; ``None`` when ``text`` is not one."""
    if not text:
        return VersionVector()
    pairs: dict[str, int] = {}
    for part in text.split(b","):
        origin, _, seq = part.rpartition(b":")
        number = parse_int64(seq)
        if not origin or number is None or number < 1 or origin.decode(errors="replace") in pairs:
            return None
        pairs[origin.decode(errors="replace")] = number
    return VersionVector.of(pairs)


class MultiLeaderCore:
    """One node of a multi-leader cluster; see the module docstring."""

    mode = "multi-leader"
    CLAIMS = frozenset({"convergence", "no_lost_merged_writes"})
    DATA_LOSS_EXEMPT_ROLES: frozenset[str] = frozenset()
    DISK_LOSS_EXEMPT_ROLES = frozenset({"peer"})     # re-seeding a wiped node is not built yet
    KNOWN_BUGS = {
        "sequence_not_persisted": "a restarted node numbers its writes from 1 again, so peers "
                                  "that have those dots skip its new writes",
        "lww_raw_wall_clock": "lww stamps writes with the raw wall clock instead of the hybrid "
                              "clock, so a causally later write can lose to an earlier one",
        "tombstone_removed_early": "a tombstone is forgotten as soon as it is applied, before "
                                   "every member has it",
        "checkpoint_before_durable": "a pulled batch's checkpoint is persisted one Ready before "
                                     "its entries, so a crash in between skips them for good",
    }

    def __init__(self, config: CoreConfig, recovered: RecoveredState, rng: random.Random,
                 now_ms: int) -> None:
        unknown_bugs = config.bugs - self.KNOWN_BUGS.keys()
        assert not unknown_bugs, f"unknown bugs for {self.mode}: {sorted(unknown_bugs)}"
        settings = config.settings if config.settings is not None else MultiLeaderSettings()
        assert isinstance(settings, MultiLeaderSettings), settings
        assert config.node_id in config.members, config
        self.config = config
        self.settings = settings
        self.node_id = config.node_id
        self._rng = rng
        self._now_ms = now_ms
        meta = recovered.meta
        self.vector = VersionVector.of({
            name[len(META_VECTOR_PREFIX):]: int(value) for name, value in meta.items()
            if name.startswith(META_VECTOR_PREFIX)})
        self._own_seq = (0 if "sequence_not_persisted" in config.bugs
                         else self.vector.get(self.node_id))
        self.hlc = Hlc(int(meta.get(META_HLC_WALL, 0)), int(meta.get(META_HLC_LOGICAL, 0)))
        self._meta_writes: dict[str, int | str | bytes] = {}
        # A new life of the log at every start: entries past the recovered end may have been
        # lost (a power loss under durability "os") and their indexes are used again, so a
        # checkpoint taken in an earlier life is good only up to what survived of it.
        self.incarnation = f"{rng.getrandbits(incarnation_bits):016x}"
        self.incarnation_history = parse_history(str(meta.get(META_INCARNATION_HISTORY, "")))
        previous = meta.get(META_INCARNATION)
        if previous is not None:
            self.incarnation_history = (
                *self.incarnation_history, (str(previous), recovered.last_position.index),
            )[-incarnation_history_max:]
        self._meta_writes[META_INCARNATION] = self.incarnation
        self._meta_writes[META_INCARNATION_HISTORY] = format_history(self.incarnation_history)
        default = KeyPolicy(b"", settings.default_policy, settings.default_resolver)
        self.keyspace = ReplicatedKeyspace(dict(recovered.records), settings.policies, default,
                                           settings.siblings_max)
        self.log = LogTail(_base_of(recovered), recovered.log, now_ms)
        self.peers: dict[str, PeerProgress] = {m: PeerProgress() for m in config.members
                                               if m != self.node_id}
        for peer, progress in self.peers.items():
            progress.checkpoint_index = int(meta.get(META_CHECKPOINT_PREFIX + peer, 0))
            progress.checkpoint_incarnation = str(
                meta.get(META_CHECKPOINT_INCARNATION_PREFIX + peer, ""))
            progress.pulled_index = int(meta.get(META_PULLED_PREFIX + peer, 0))
        self.sources = pull_sources(self.node_id, config.members, settings.topology)
        self.reports: dict[str, VersionVector] = {self.node_id: self.vector}
        self._learning_own_writes = "sequence_not_persisted" not in config.bugs
        self._learn_own_writes()
        self._writes: list[Write] = []
        self._deferred_writes: list[Write] = []    # checkpoint_before_durable only
        self._messages: list[object] = []
        self._ready = Ready()
        self._ticked = False
        self._next_pull_ms = now_ms
        self._next_tombstone_check_ms = now_ms + settings.tombstone_check_interval_ms
        self._tombstone_cursor = b""
        self._acknowledged: list[WriteAcknowledged] = []
        self.conflicts: list[ConflictRecord] = []
        self.counters = {"writes_local": 0, "writes_pulled": 0, "entries_skipped": 0,
                         "conflicts": 0, "siblings_dropped": 0, "tombstones_removed": 0,
                         "writes_refused_clock_ahead": 0, "pulls_sent": 0, "pulls_served": 0}

    # --- inputs ---------------------------------------------------------------------------------

    def propose(self, command: ClientCommand, request_id: int, now_ms: int) -> None:
        self._now_ms = now_ms
        before = self.log.last
        spec = resolve(command.name, command.args)
        reply = spec if isinstance(spec, Error) else self._execute(command)
        self._ready.replies.append(ClientReply(request_id, reply,
                                               None if self.log.last == before else self.log.last))
        if self.config.history_notes and self.log.last != before:
            self._acknowledged.append(WriteAcknowledged(request_id, self.log.last))

    def step(self, message: object, now_ms: int) -> None:
        self._now_ms = now_ms
        if type(message) is PullRequest:
            self._on_pull_request(message)
        else:
            assert type(message) is PullReply, f"not a multi-leader message: {message!r}"
            self._on_pull_reply(message)

    def tick(self, now_ms: int) -> None:
        self._now_ms = now_ms
        self._ticked = True
        if now_ms >= self._next_pull_ms:
            self._next_pull_ms = now_ms + self.settings.pull_interval_ms
            for source in self.sources:
                progress = self.peers[source]
                if progress.request_sent_ms < 0 or \
                        now_ms - progress.request_sent_ms >= self.settings.pull_timeout_ms:
                    self._request_from(source)
        if now_ms >= self._next_tombstone_check_ms:
            self._next_tombstone_check_ms = now_ms + self.settings.tombstone_check_interval_ms
            self._forget_stable_tombstones()

    # --- outputs --------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._writes or self._messages or self._ready.replies or self._ticked
                    or self._meta_writes or self._deferred_writes)

    def ready(self) -> Ready:
        ready = self._ready
        self._ready = Ready()
        self._ticked = False
        writes = self._writes
        self._writes = []
        writes.extend(self.keyspace.take_changes())
        checkpoints = [PutMeta(name, value) for name, value in self._meta_writes.items()]
        self._meta_writes = {}
        if "checkpoint_before_durable" in self.config.bugs:
            writes, self._deferred_writes = self._deferred_writes + checkpoints, writes
        else:
            writes.extend(checkpoints)
        ready.writes = writes
        ready.messages, self._messages = self._messages, []
        if self.config.history_notes and self._acknowledged:
            ready.notes.extend(self._acknowledged)
            ready.notes.append(Committed(self.log.last))
            self._acknowledged = []
        ready.deadline_ms = min(self._next_pull_ms, self._next_tombstone_check_ms)
        if not self.sources and not self.keyspace.tombstoned:
            ready.deadline_ms = NO_DEADLINE
        return ready

    def advance(self, ready: Ready) -> None:
        """Nothing to learn: the entries of a ``Ready`` are durable once it is persisted, and
        the requests it carried already name the checkpoints it persisted."""

    def status(self) -> dict:
        position = {"epoch": self.log.last.epoch, "index": self.log.last.index}
        now = self._now_ms
        return {
            "role": "peer",
            "epoch": self.log.last.epoch,
            "leader_id": None,
            "lag_entries": 0,
            "staleness_ms": 0,
            "position": position,
            "commit_position": dict(position),
            "vector": self.vector.as_dict(),
            "incarnation": self.incarnation,
            "topology": self.settings.topology,
            "pulls_from": list(self.sources),
            "members": [{
                "id": peer,
                "checkpoint": progress.checkpoint_index,
                "entries_behind": max(0, progress.last_index - progress.checkpoint_index),
                "last_contact_ms": (None if progress.last_heard_ms < 0
                                    else now - progress.last_heard_ms),
                "compacted": progress.compacted,
                "pulled_from_us": progress.pulled_index,
                "clock_offset_ms": (min(progress.clock_offsets_ms)
                                    if progress.clock_offsets_ms else None),
            } for peer, progress in sorted(self.peers.items())],
            "divergent_entries": 0,
            "keys": len(self.keyspace),
            "tombstones_pending": len(self.keyspace.tombstoned),
            "taking_writes": not self._learning_own_writes,
            "counters": dict(self.counters),
        }

    # --- client commands ------------------------------------------------------------------------

    def _execute(self, command: ClientCommand) -> object:
        handler = _HANDLERS.get(command.name)
        if handler is None:
            return Error(f"ERR {command.name.decode(errors='replace')} is not supported in "
                         f"multi-leader mode (GET, SET, MGET, MSET, DEL, EXISTS, INCR, INCRBY, "
                         f"DECR, DECRBY, RPUSH, LRANGE, LLEN, DBSIZE and CHORUS.SIBLINGS, "
                         f"SETCTX, CONFLICTS are)")
        return handler(self, command.args)

    def _get(self, args: tuple[bytes, ...]) -> object:
        value = self.keyspace.value(args[0])
        if value.events and value.register is None and value.counter is None:
            return WRONGTYPE
        return self.keyspace.get(args[0])

    def _mget(self, args: tuple[bytes, ...]) -> object:
        return [None if self.keyspace.value(key).events else self.keyspace.get(key)
                for key in args]

    def _exists(self, args: tuple[bytes, ...]) -> object:
        return sum(1 for key in args if self.keyspace.exists(key))

    def _dbsize(self, args: tuple[bytes, ...]) -> object:
        return len(self.keyspace.live_keys())

    def _set(self, args: tuple[bytes, ...]) -> object:
        if len(args) != 2:
            return Error("ERR SET options (EX, PX, NX, XX, GET, KEEPTTL) are not supported in "
                         "multi-leader mode; use SET key value")
        refusal = self._register_refusal(args[0])
        if refusal is not None:
            return refusal
        self._write_version(args[0], args[1], self.vector)
        return OK

    def _mset(self, args: tuple[bytes, ...]) -> object:
        if len(args) % 2:
            return Error("ERR wrong number of arguments for 'mset' command")
        pairs = list(zip(args[::2], args[1::2]))
        for key, _ in pairs:
            refusal = self._register_refusal(key)
            if refusal is not None:
                return refusal
        for key, value in pairs:
            self._write_version(key, value, self.vector)
        return OK

    def _setctx(self, args: tuple[bytes, ...]) -> object:
        key, text, value = args
        context = parse_vector(text)
        if context is None:
            return Error("ERR context must be origin:seq pairs separated by commas, as "
                         "CHORUS.SIBLINGS returns it")
        refusal = self._register_refusal(key)
        if refusal is not None:
            return refusal
        self._write_version(key, value, context)
        return OK

    def _del(self, args: tuple[bytes, ...]) -> object:
        removed = 0
        for key in args:
            value = self.keyspace.value(key)
            if value.counter is not None or value.events:
                return Error("ERR in multi-leader mode DEL removes strings only: counters and "
                             "event lists are grow-only in this version")
        for key in dict.fromkeys(args):
            if self.keyspace.register_value(key) is None:
                continue
            refusal = self._register_refusal(key)
            if refusal is not None:
                return refusal
            self._write_version(key, None, self.vector)
            removed += 1
        return removed

    def _incrby(self, args: tuple[bytes, ...]) -> object:
        return self._increment(args[0], parse_int64(args[1]))

    def _decrby(self, args: tuple[bytes, ...]) -> object:
        amount = parse_int64(args[1])
        return self._increment(args[0], None if amount is None or amount == INT64_MIN
                               else -amount)

    def _incr(self, args: tuple[bytes, ...]) -> object:
        return self._increment(args[0], 1)

    def _decr(self, args: tuple[bytes, ...]) -> object:
        return self._increment(args[0], -1)

    def _increment(self, key: bytes, amount: int | None) -> object:
        if amount is None:
            return NOT_AN_INTEGER
        if self._learning_own_writes:
            return self._learning_refusal()
        value = self.keyspace.value(key)
        if value.register is not None or value.events:
            return WRONGTYPE
        counter = value.counter or CounterValue(())
        result = counter.value() + amount
        if not INT64_MIN <= result <= INT64_MAX:
            return INCR_OVERFLOW
        added, subtracted = counter.add(self.node_id, amount).of_origin(self.node_id)
        seq, stamp = self._next_dot()
        self._apply_local(CounterChanged(key, self.node_id, seq, stamp, added, subtracted))
        return result

    def _rpush(self, args: tuple[bytes, ...]) -> object:
        key, items = args[0], args[1:]
        if self._learning_own_writes:
            return self._learning_refusal()
        value = self.keyspace.value(key)
        if value.register is not None or value.counter is not None:
            return WRONGTYPE
        seq, stamp = self._next_dot()
        self._apply_local(EventsAppended(key, self.node_id, seq, stamp, tuple(items)))
        return len(self.keyspace.value(key).events)

    def _lrange(self, args: tuple[bytes, ...]) -> object:
        start, stop = parse_int64(args[1]), parse_int64(args[2])
        if start is None or stop is None:
            return NOT_AN_INTEGER
        if not self._holds_only_events(args[0]):
            return WRONGTYPE
        return list_range(self.keyspace.events(args[0]), start, stop)

    def _llen(self, args: tuple[bytes, ...]) -> object:
        if not self._holds_only_events(args[0]):
            return WRONGTYPE
        return len(self.keyspace.value(args[0]).events)

    def _siblings(self, args: tuple[bytes, ...]) -> object:
        register = self.keyspace.value(args[0]).register
        if register is None:
            return [format_vector(VersionVector()), []]
        return [format_vector(register.context),
                [[b"%s:%d" % (v.origin.encode(), v.seq), b"%d.%d" % (v.hlc.wall_ms, v.hlc.logical),
                  v.value] for v in register.versions]]

    def _conflicts(self, args: tuple[bytes, ...]) -> object:
        count = self.settings.conflicts_recent_max if not args else parse_int64(args[0])
        if count is None or count < 0:
            return Error("ERR count must be a non-negative integer")
        return [[record.key, record.policy.encode(),
                 [b"%s:%d" % (v.origin.encode(), v.seq) for v in record.versions],
                 b"%s:%d" % (record.winner.origin.encode(), record.winner.seq),
                 record.applied_at_ms]
                for record in reversed(self.conflicts[-count:] if count else [])]

    def _digest(self, args: tuple[bytes, ...]) -> object:
        return self.keyspace.digest().encode()

    def _position(self, args: tuple[bytes, ...]) -> object:
        return str(self.log.last).encode()

    def _divergent(self, args: tuple[bytes, ...]) -> object:
        """Nothing diverges here: no node's writes are ever removed from its log."""
        if args[0].upper() == b"LIST":
            return []
        return Error("ERR a multi-leader node has no divergent entries: every node keeps every "
                     "write it took (CHORUS.DIVERGENT LIST is empty)")

    def _wait(self, args: tuple[bytes, ...]) -> object:
        return 0            # no member acknowledges another's writes in this mode

    def _holds_only_events(self, key: bytes) -> bool:
        value = self.keyspace.value(key)
        return value.register is None and value.counter is None

    def _register_refusal(self, key: bytes) -> Error | None:
        """Why a register write to ``key`` is refused here (definite: nothing applied)."""
        if self._learning_own_writes:
            return self._learning_refusal()
        value = self.keyspace.value(key)
        if value.counter is not None or value.events:
            return WRONGTYPE
        if self.keyspace.policy_of(key).policy == LWW and self._clock_ahead():
            self.counters["writes_refused_clock_ahead"] += 1
            return Error(f"TRYAGAIN {self.node_id}'s clock is ahead of most of its peers by more "
                         f"than {self.settings.clock_offset_ms_max} ms, and this key resolves "
                         f"conflicts by timestamp; fix the clock (NTP) or write through "
                         f"another node")
        return None

    def _learning_refusal(self) -> Error:
        missing = sorted(set(self.config.members) - self.reports.keys())
        waiting = (f"no word yet from {', '.join(missing)}" if missing else
                   f"peers hold its writes up to {self._own_seq_reported()}, it has "
                   f"{self.vector.get(self.node_id)}")
        return Error(f"TRYAGAIN {self.node_id} restarted and takes writes once it knows the "
                     f"last one it numbered ({waiting}); retry, or write through another node")

    def _own_seq_reported(self) -> int:
        return max((vector.get(self.node_id) for member, vector in self.reports.items()
                    if member != self.node_id), default=0)

    def _learn_own_writes(self) -> None:
        """After a start, writes wait until every member has reported what it holds and this
        node holds every write of its own that any of them reported: a node that lost its
        newest transactions (a power loss under durability "os") pulls its own writes back
        from its peers before numbering new ones, so no dot is ever used twice."""
        if not self.config.members or not set(self.config.members) <= self.reports.keys():
            return
        if self.vector.get(self.node_id) >= self._own_seq_reported():
            self._learning_own_writes = False
            self._own_seq = max(self._own_seq, self.vector.get(self.node_id))

    def _clock_ahead(self) -> bool:
        """Whether this node's clock runs ahead of more than half of the peers heard recently
        by more than ``clock_offset_ms_max`` (each peer's smallest recent estimate: network
        delay only ever makes a peer look further behind)."""
        recent = [min(p.clock_offsets_ms) for p in self.peers.values()
                  if p.clock_offsets_ms and p.last_heard_ms >= 0
                  and self._now_ms - p.last_heard_ms <= self.settings.peer_heard_recently_ms]
        ahead = sum(1 for offset in recent if offset > self.settings.clock_offset_ms_max)
        return ahead * 2 > len(recent)

    # --- writing --------------------------------------------------------------------------------

    def _next_dot(self) -> tuple[int, Hlc]:
        self._own_seq += 1
        if "lww_raw_wall_clock" in self.config.bugs:
            self.hlc = Hlc(self._now_ms, 0)
        else:
            self.hlc = hlc_now(self.hlc, self._now_ms)
        self._meta_writes[META_HLC_WALL] = self.hlc.wall_ms
        self._meta_writes[META_HLC_LOGICAL] = self.hlc.logical
        return self._own_seq, self.hlc

    def _write_version(self, key: bytes, value: bytes | None, context: VersionVector) -> None:
        seq, stamp = self._next_dot()
        self._apply_local(VersionWritten(key, Version(self.node_id, seq, stamp, value), context))

    def _apply_local(self, effect: ReplicatedEffect) -> None:
        self.counters["writes_local"] += 1
        self._append(effect)

    def _append(self, effect: ReplicatedEffect) -> None:
        """Apply a write whose dot is new here and log it; the vector moves with it."""
        position = Position(LOG_EPOCH, self.log.last.index + 1)
        entry = LogEntry(position, effect)
        self.log.append(entry, self._now_ms)
        self._writes.append(AppendEntry(entry))
        applied = self.keyspace.apply(effect, position.index)
        if applied is not None:
            self._account(effect, applied)
        self.vector = self.vector.with_sequence(effect.origin, effect.seq)
        self.reports[self.node_id] = self.vector
        self._meta_writes[META_VECTOR_PREFIX + effect.origin] = self.vector.get(effect.origin)

    def _account(self, effect: ReplicatedEffect, applied: Applied) -> None:
        assert type(effect) is VersionWritten
        self.counters["siblings_dropped"] += len(applied.dropped)
        if not applied.concurrent_with or applied.state is None:
            return
        self.counters["conflicts"] += 1
        self.conflicts.append(ConflictRecord(
            effect.key, self.keyspace.policy_of(effect.key).policy,
            (*applied.concurrent_with, effect.version), winner(applied.state), self._now_ms))
        del self.conflicts[:-self.settings.conflicts_recent_max]

    # --- replication ----------------------------------------------------------------------------

    def _request_from(self, source: str) -> None:
        progress = self.peers[source]
        progress.request_sent_ms = self._now_ms
        self.counters["pulls_sent"] += 1
        self._messages.append(PullRequest(self.node_id, source, progress.checkpoint_incarnation,
                                          progress.checkpoint_index, self.vector, self._now_ms))

    def _on_pull_request(self, request: PullRequest) -> None:
        puller = request.source
        progress = self.peers.get(puller)
        assert progress is not None, f"{puller} is not a member"
        self._heard(progress, request.now_ms)
        self.reports[puller] = self.reports.get(puller, VersionVector()).merge(request.vector)
        if self._learning_own_writes:
            self._learn_own_writes()
        after = self._resume_index(request.incarnation, request.after_index)
        if after != progress.pulled_index:
            progress.pulled_index = after
            self._meta_writes[META_PULLED_PREFIX + puller] = after
        log = self.log
        compacted = after < log.base.index
        entries: tuple[LogEntry, ...] = ()
        if not compacted and after < log.last.index:
            entries = log.entries_from(after + 1, self.settings.pull_batch_entries_max,
                                       self.settings.pull_batch_bytes_max)
        self.counters["pulls_served"] += 1
        self._messages.append(PullReply(
            self.node_id, puller, self.incarnation, after, entries, log.last.index, compacted,
            self.vector, tuple(sorted(self.reports.items())), self._now_ms))
        self._trim_log()

    def _on_pull_reply(self, reply: PullReply) -> None:
        progress = self.peers[reply.source]
        self._heard(progress, reply.now_ms)
        progress.request_sent_ms = -1
        progress.last_index = reply.last_index
        progress.compacted = reply.compacted
        for member, vector in reply.reports:
            if member != self.node_id:
                self.reports[member] = self.reports.get(member, VersionVector()).merge(vector)
        self.reports[reply.source] = self.reports.get(
            reply.source, VersionVector()).merge(reply.vector)
        if reply.incarnation == progress.checkpoint_incarnation:
            if reply.after_index != progress.checkpoint_index or reply.compacted:
                return      # an answer to an older request, or nothing we can use
        else:
            # The source restarted: it says from where our checkpoint still holds (never
            # beyond it; a larger index answers a request from before our own restart).
            if reply.after_index > progress.checkpoint_index or reply.compacted:
                return
            if reply.after_index < progress.checkpoint_index:
                self._ready.notes.append(Probe("multileader_checkpoint_rewound"))
            progress.checkpoint_incarnation = reply.incarnation
            progress.checkpoint_index = reply.after_index
            self._meta_writes[META_CHECKPOINT_INCARNATION_PREFIX + reply.source] = reply.incarnation
            self._meta_writes[META_CHECKPOINT_PREFIX + reply.source] = reply.after_index
        for entry in reply.entries:
            effect = entry.effect
            have = self.vector.get(effect.origin)
            if effect.seq <= have:
                self.counters["entries_skipped"] += 1
                continue
            assert effect.seq == have + 1, (
                f"{self.node_id} got {effect.origin}:{effect.seq} from {reply.source} while "
                f"holding {effect.origin}'s writes up to {have}: a gap in an origin's order")
            if effect.origin == self.node_id:
                # Our own write, lost here by a crash and brought back by a peer.
                self._own_seq = max(self._own_seq, effect.seq)
                self._ready.notes.append(Probe("multileader_own_write_recovered"))
            if "lww_raw_wall_clock" not in self.config.bugs:
                self.hlc = hlc_observe(self.hlc, _stamp_of(effect), self._now_ms)
            self.counters["writes_pulled"] += 1
            self._append(effect)
        if reply.entries:
            progress.checkpoint_index = reply.entries[-1].position.index
            self._meta_writes[META_CHECKPOINT_PREFIX + reply.source] = progress.checkpoint_index
        if self._learning_own_writes:
            self._learn_own_writes()
        if progress.checkpoint_index < reply.last_index:
            self._request_from(reply.source)

    def _resume_index(self, incarnation: str, after_index: int) -> int:
        """Where a puller whose checkpoint is ``after_index`` in the life ``incarnation`` of
        this log resumes: there, in this life; in an earlier one, at most at what survived of
        each life since (the recovered end at each start); from the start when the life is
        unknown (older than the history kept)."""
        if incarnation == self.incarnation:
            return after_index
        resume = after_index
        for earlier, survived_to in reversed(self.incarnation_history):
            resume = min(resume, survived_to)
            if earlier == incarnation:
                return resume
        return 0

    def _heard(self, progress: PeerProgress, sent_ms: int) -> None:
        progress.last_heard_ms = self._now_ms
        progress.clock_offsets_ms.append(self._now_ms - sent_ms)
        del progress.clock_offsets_ms[:-clock_samples_per_peer]

    def _trim_log(self) -> None:
        """Drop the entries every puller has, and the oldest beyond ``log_entries_max``."""
        log = self.log
        pulled = min((self.peers[m].pulled_index for m in self.peers
                      if self.node_id in pull_sources(m, self.config.members,
                                                      self.settings.topology)),
                     default=log.last.index)
        keep_from = max(min(pulled, log.last.index) + 1,
                        log.last.index - self.settings.log_entries_max + 1)
        if keep_from - log.first_index >= self.settings.pull_batch_entries_max:
            log.trim_before(keep_from)
            self._writes.append(TrimLogBefore(keep_from))

    def _forget_stable_tombstones(self) -> None:
        keyspace = self.keyspace
        if "tombstone_removed_early" in self.config.bugs:
            def stable(dot: Dot) -> bool:
                return True
        else:
            members = set(self.config.members)
            if not members <= self.reports.keys():
                return      # some member has never reported: nothing is known stable
            reports = {m: self.reports[m] for m in members}

            def stable(dot: Dot) -> bool:
                return is_stable(dot, self.vector, reports)
        # A bounded round per check, in key order from where the last one stopped, so keys
        # whose tombstones must stay (beside a live sibling) cannot starve the others.
        pending = sorted(keyspace.tombstoned)
        start = bisect.bisect_right(pending, self._tombstone_cursor)
        batch = (pending[start:] + pending[:start])[:self.settings.tombstones_checked_max]
        for key in batch:
            self.counters["tombstones_removed"] += keyspace.forget_tombstones(key, stable)
        self._tombstone_cursor = batch[-1] if batch else b""


def _stamp_of(effect: ReplicatedEffect) -> Hlc:
    return effect.version.hlc if type(effect) is VersionWritten else effect.hlc


def _base_of(recovered: RecoveredState) -> Position:
    """Where the recovered log tail starts: the entry before its first, or the last position
    when the store holds no entries."""
    if recovered.log:
        first = recovered.log[0].position
        return Position(first.epoch, first.index - 1)
    return recovered.last_position


_HANDLERS = {
    b"GET": MultiLeaderCore._get,
    b"MGET": MultiLeaderCore._mget,
    b"EXISTS": MultiLeaderCore._exists,
    b"DBSIZE": MultiLeaderCore._dbsize,
    b"SET": MultiLeaderCore._set,
    b"MSET": MultiLeaderCore._mset,
    b"DEL": MultiLeaderCore._del,
    b"INCR": MultiLeaderCore._incr,
    b"DECR": MultiLeaderCore._decr,
    b"INCRBY": MultiLeaderCore._incrby,
    b"DECRBY": MultiLeaderCore._decrby,
    b"RPUSH": MultiLeaderCore._rpush,
    b"LRANGE": MultiLeaderCore._lrange,
    b"LLEN": MultiLeaderCore._llen,
    b"WAIT": MultiLeaderCore._wait,
    b"CHORUS.DIVERGENT": MultiLeaderCore._divergent,
    b"CHORUS.SIBLINGS": MultiLeaderCore._siblings,
    b"CHORUS.SETCTX": MultiLeaderCore._setctx,
    b"CHORUS.CONFLICTS": MultiLeaderCore._conflicts,
    b"CHORUS.DIGEST": MultiLeaderCore._digest,
    b"CHORUS.POSITION": MultiLeaderCore._position,
    b"CHORUS.TOKEN": MultiLeaderCore._position,
}
