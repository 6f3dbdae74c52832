"""The standalone core: one node, no replication — the simplest implementation of ``core.api``.

Every data command runs against the in-memory ``Keyspace``. A write becomes one log entry per
logical effect, at position ``(0, index)`` with ``index`` counting on from the last entry that
survived on disk, so positions are never reused across restarts. The entries and the rows they
changed go out as the ``writes`` of the next ``Ready``, together with the replies: the driver
persists the writes first, so a reply never reaches a client before what it acknowledges is
durable (with ``durability = "fsync"``). Reads in the same ``Ready`` may have seen those writes;
their replies wait behind the same persist, so nobody reads what could still be lost.

Expired keys are reclaimed by ``tick``: at most ``expiry_reclaim_keys_max`` per cycle become one
``DeleteKeys`` entry, like any other write (so a later replicated mode ships the same effect).

Known defects that the simulator can switch on (``CoreConfig.bugs``) to show its checkers work:

- ``ack_before_persist``: replies go out one ``Ready`` ahead of the writes they acknowledge, so a
  crash in between loses acknowledged writes;
- ``del_not_persisted``: DEL changes memory and the log but never deletes the data row, so a
  deleted key comes back after a restart.
"""

from __future__ import annotations

import random

from chorusdb.core.api import (
    NO_DEADLINE,
    ClientCommand,
    ClientReply,
    Committed,
    CoreConfig,
    Ready,
    WriteAcknowledged,
)
from chorusdb.core.commands import (
    DATA_CATEGORIES,
    MULTI_LEADER_COMMANDS,
    multi_leader_only,
    resolve,
)
from chorusdb.core.keyspace import Keyspace
from chorusdb.core.model import (
    AppendEntry,
    DeleteKeys,
    DeleteRecord,
    Effect,
    LogEntry,
    Position,
    RecoveredState,
    Write,
)
from chorusdb.core.position_wait import NOT_AN_INTEGER, parse_position_wait
from chorusdb.replies import OK, Error

expiry_reclaim_keys_max = 256        # expired keys deleted per tick
expiry_cycle_interval_ms = 100       # how often tick reclaims expired keys (Redis's hz 10)


class StandaloneCore:
    """One node that owns all data; see the module docstring."""

    mode = "standalone"
    CLAIMS = frozenset({"linearizable", "consistent_prefix", "no_lost_writes", "convergence",
                        "session"})
    DATA_LOSS_EXEMPT_ROLES: frozenset[str] = frozenset()
    KNOWN_BUGS = {
        "ack_before_persist": "replies are sent one Ready before the writes they acknowledge",
        "del_not_persisted": "DEL is logged but its data rows are never deleted on disk",
    }

    def __init__(self, config: CoreConfig, recovered: RecoveredState, rng: random.Random,
                 now_ms: int) -> None:
        unknown_bugs = config.bugs - self.KNOWN_BUGS.keys()
        assert not unknown_bugs, f"unknown bugs for {self.mode}: {sorted(unknown_bugs)}"
        self.config = config
        self.keyspace = Keyspace(dict(recovered.records))
        self.last_position = recovered.last_position
        self._entries: list[Write] = []
        self._ready = Ready()
        self._deferred_writes: list[Write] = []     # only with the ack_before_persist bug
        self._next_expiry_cycle_ms = now_ms
        self._acknowledged: list[WriteAcknowledged] = []
        self._ticked = False

    # --- inputs ---------------------------------------------------------------------------

    def propose(self, command: ClientCommand, request_id: int, now_ms: int) -> None:
        before = self.last_position.index
        reply = self._execute(command, now_ms)
        self._ready.replies.append(ClientReply(request_id, reply))
        if self.config.history_notes and self.last_position.index != before:
            self._acknowledged.append(WriteAcknowledged(request_id, self.last_position))

    def step(self, message: object, now_ms: int) -> None:
        raise AssertionError(f"a standalone node has no peers, got {message!r}")

    def tick(self, now_ms: int) -> None:
        self._ticked = True             # the next Ready carries the next deadline
        if now_ms < self._next_expiry_cycle_ms:
            return
        self._next_expiry_cycle_ms = now_ms + expiry_cycle_interval_ms
        expired = self.keyspace.expired_keys(now_ms, expiry_reclaim_keys_max)
        if expired:
            self._append(DeleteKeys(expired))

    # --- outputs --------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._entries or self._ready.replies or self._deferred_writes
                    or self._ticked)

    def ready(self) -> Ready:
        ready = self._ready
        self._ready = Ready()
        self._ticked = False
        writes = self._entries
        self._entries = []
        writes.extend(self.keyspace.take_changes())
        if "del_not_persisted" in self.config.bugs:
            writes = [w for w in writes if not isinstance(w, DeleteRecord)]
        if "ack_before_persist" in self.config.bugs:
            writes, self._deferred_writes = self._deferred_writes, writes
        ready.writes = writes
        if self.config.history_notes and self._acknowledged:
            ready.notes.extend(self._acknowledged)
            ready.notes.append(Committed(self.last_position))
            self._acknowledged = []
        ready.deadline_ms = (self._next_expiry_cycle_ms if self.keyspace.holds_records()
                             else NO_DEADLINE)
        return ready

    def advance(self, ready: Ready) -> None:
        """Nothing to learn: a standalone node's writes are durable once persisted."""

    def status(self) -> dict:
        position = {"epoch": self.last_position.epoch, "index": self.last_position.index}
        return {
            "role": "standalone",
            "epoch": self.last_position.epoch,
            "leader_id": self.config.node_id,
            "lag_entries": 0,
            "staleness_ms": 0,
            "position": position,
            "commit_position": dict(position),
            "members": [],
            "divergent_entries": 0,
            "keys": len(self.keyspace),
            "expires": self.keyspace.expiring_count(),
        }

    # --- internals ------------------------------------------------------------------------

    def _execute(self, command: ClientCommand, now_ms: int) -> object:
        spec = resolve(command.name, command.args)
        if isinstance(spec, Error):
            return spec
        if spec.category in DATA_CATEGORIES:
            reply, effects = self.keyspace.execute(command, now_ms)
            for effect in effects:
                self._append(effect)
            return reply
        if command.name in (b"WAIT", b"CHORUS.WAITREPLICAS", b"CHORUS.WAITPOS"):
            return self._wait(command.name, command.args)
        if command.name in (b"CHORUS.POSITION", b"CHORUS.TOKEN"):
            return str(self.last_position).encode()
        if command.name == b"CHORUS.DIGEST":
            return self.keyspace.digest(now_ms).encode()
        if command.name == b"CHORUS.DIVERGENT":
            # A lone node never follows another log, so nothing ever diverges.
            return [] if command.args[0].upper() == b"LIST" else Error(
                "ERR a standalone node has no divergent entries (CHORUS.DIVERGENT LIST is empty)")
        if command.name in MULTI_LEADER_COMMANDS:
            return multi_leader_only(command.name)
        if command.name == b"CHORUS.SWITCHOVER":
            return Error("ERR a standalone node has no other member to hand leadership to; "
                         "switchover needs cluster.mode = \"leader\"")
        raise AssertionError(f"{spec.name} is handled by the server, not the core")

    def _wait(self, name: bytes, args: tuple[bytes, ...]) -> object:
        """WAIT and CHORUS.WAITREPLICAS count no replicas; CHORUS.WAITPOS answers at once, since
        this node's position moves only by writes it runs itself (and it is never behind a
        leader, so its bounds always hold)."""
        if name == b"CHORUS.WAITPOS":
            parsed = parse_position_wait(args)
            if isinstance(parsed, Error):
                return parsed
            if parsed.position <= self.last_position:
                return OK
            return Error(f"TRYAGAIN position {parsed.position} is beyond this node's log "
                         f"(at {self.last_position})")
        try:
            numbers = [int(arg) for arg in args]
        except ValueError:
            return NOT_AN_INTEGER
        if numbers[1] < 0:      # WAIT n timeout / CHORUS.WAITREPLICAS n timeout epoch index
            return Error("ERR timeout is negative")
        return 0    # no replicas to wait for

    def _append(self, effect: Effect) -> None:
        position = Position(self.last_position.epoch, self.last_position.index + 1)
        self.last_position = position
        self.keyspace.apply(effect, position.index)
        self._entries.append(AppendEntry(LogEntry(position, effect)))
