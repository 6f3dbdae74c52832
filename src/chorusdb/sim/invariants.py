"""Online invariants: white-box checks on every ``Ready``, crash and restart, as they happen.

The history checkers judge what clients saw; these judge what nodes did, at the moment they did
it, so a violation points at the event that caused it (TigerBeetle's state checker):

- **log positions strictly increase** on a node: every ``AppendEntry`` a node persists is at a
  position above the end of its log before it, within an incarnation and across restarts (the
  first entry after a restart is above the last one that survived). Only a ``ResetLog`` (a
  snapshot installed) or a ``TruncateLogAfter`` (a divergent suffix removed) moves the end of
  the log back, to its own position, and the next entry must follow that;
- **durable means durable**: every storage record leaves the log ending somewhere (where it
  ended before, for a record that writes no log). After a power loss the store recovers with
  its log ending where the last synced record left it or where one of the records written
  since left it (a prefix of them survived); after a process crash (which keeps the page cache)
  exactly where the last record written left it: nothing that survived may be missing, nothing
  may appear. Ends, not the highest position, because a truncation or a reset moves the end
  back, and losing that record moves it forward again;
- **positions never go backwards** while a node runs: ``status()["commit_position"]`` is
  monotonic within an incarnation (only a crash may take it back, to what the disk kept), and
  so is ``status()["position"]`` except that a truncation or a reset may take it back to its
  own position. The core cuts its log in memory, so the cut reaches the disk in the ``Ready``
  it was made for or, when the core cut while a persist was in flight, in the next ``Ready``
  that writes anything; a position that went back without one is a violation;
- **at most one leader per epoch**: no two nodes ever report ``role`` leader with the same
  ``epoch`` (whenever, not only at the same time), and a running node's ``epoch`` never goes
  back (it would let the node vote twice in an epoch);
- **acknowledged means W copies** (durability ``"fsync"``): whenever a leader's
  ``commit_position`` moves forward, at least ``status()["write_quorum"]`` nodes, itself
  included, have synced it (a copy counts once synced, even if its node loses its data
  directory afterwards: surviving that is what the W copies are for). Under ``"os"`` a
  follower's copy sits in its page cache and a power loss may take it between its answer and
  the commit, which that durability allows.

A violation is recorded (with the virtual time and node) and fails the seed; the run goes on so
the report also shows what the clients saw.
"""

from __future__ import annotations

from chorusdb.core.api import Ready
from chorusdb.core.model import (
    ZERO_POSITION,
    AppendEntry,
    Position,
    RecoveredState,
    ResetLog,
    TruncateLogAfter,
)
from chorusdb.sim.node import SimNode

violations_max = 20          # per run; the first few explain the failure


def _position(document: object) -> Position:
    assert isinstance(document, dict), document
    return Position(document["epoch"], document["index"])


class Invariants:
    """Per-node bookkeeping for the online checks; see the module docstring."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._written: dict[str, Position] = {}     # log end after the last record written
        self._synced: dict[str, Position] = {}      # log end after the last record synced
        self._unsynced_ends: dict[str, list[Position]] = {}  # per record written since
        self._copies: dict[str, Position] = {}      # highest ever synced, disk loss or not
        self._status: dict[str, tuple[Position, Position]] = {}
        self._cut: dict[str, Position] = {}         # lowest cut persisted since the last status
        self._awaited_cut: dict[str, tuple[Position, Position]] = {}  # (from, to) not yet cut
        self._power_lost: dict[str, bool] = {}      # how the node last went down
        self._down: set[str] = set()
        self._leaders: dict[int, str] = {}          # epoch -> the node that led it
        self._epochs: dict[str, int] = {}           # per running node, its latest epoch

    def _violate(self, node: SimNode, text: str) -> None:
        if len(self.violations) < violations_max:
            self.violations.append(f"t={node.world.now_us / 1e6:.6f}s {node.node_id}: {text}")

    def on_ready(self, node: SimNode, ready: Ready) -> None:
        node_id = node.node_id
        last = self._written.get(node_id, ZERO_POSITION)
        cut: Position | None = None
        for write in ready.writes:
            kind = type(write)
            if kind is AppendEntry:
                position = write.entry.position
                if position <= last:
                    self._violate(node, f"log position {position} written after {last}")
                last = position
            elif kind is ResetLog or kind is TruncateLogAfter:
                last = write.position
                cut = last if cut is None else min(cut, last)
        if cut is not None:
            self._cut[node_id] = min(cut, self._cut.get(node_id, cut))
        if not ready.writes:        # no storage record: the log and the disk stay as they are
            return
        awaited = self._awaited_cut.pop(node_id, None)
        if awaited is not None and (cut is None or cut > awaited[1]):
            self._violate(node, f"position went back from {awaited[0]} to {awaited[1]} without "
                                f"a crash, and no truncation or reset persisted it")
        self._written[node_id] = last
        self._unsynced_ends.setdefault(node_id, []).append(last)

    def on_carried_out(self, node: SimNode) -> None:
        assert node.core is not None
        node_id = node.node_id
        status = node.core.status()
        now = (_position(status["position"]), _position(status["commit_position"]))
        before = self._status.get(node_id)
        cut = self._cut.pop(node_id, None)
        if before is not None:
            if now[0] < before[0] and (cut is None or cut > now[0]):
                # Cut in memory after this Ready was made: the next Ready that writes holds it.
                awaited = self._awaited_cut.get(node_id)
                self._awaited_cut[node_id] = (before[0], now[0]) if awaited is None else (
                    awaited[0], min(awaited[1], now[0]))
            # A re-seed after a divergence drops the log and what the node knew was committed
            # with it: the commit may go back only together with the log end (a cut that is
            # persisted now, or awaited above).
            if now[1] < before[1] and not (now[0] < before[0] and now[0] <= now[1]):
                self._violate(node, f"commit_position went back from {before[1]} to {now[1]} "
                                    f"without a crash or a re-seed after a divergence")
        self._status[node_id] = now
        if "epoch" in status:
            epoch = status["epoch"]
            if epoch < self._epochs.get(node_id, epoch):
                self._violate(node, f"epoch went back from {self._epochs[node_id]} to {epoch}")
            self._epochs[node_id] = epoch
        if status.get("role") == "leader":
            self._check_one_leader(node, status["epoch"])
        if status.get("role") == "leader" and node.durability == "fsync" and now[1] > (
                ZERO_POSITION if before is None else before[1]):
            self._check_commit_copies(node, now[1], status["write_quorum"])

    def _check_one_leader(self, node: SimNode, epoch: int) -> None:
        elected = self._leaders.setdefault(epoch, node.node_id)
        if elected != node.node_id:
            self._violate(node, f"a second leader of epoch {epoch}: {elected} leads it too")

    def _check_commit_copies(self, node: SimNode, commit: Position, quorum: int) -> None:
        holders = [n for n, synced in self._copies.items() if synced >= commit]
        if len(holders) < quorum:
            self._violate(node, f"commit position {commit} acknowledged with {len(holders)} "
                                f"durable copies {sorted(holders)}, write quorum {quorum}")

    def on_sync(self, node: SimNode) -> None:
        # While a node is down after a power loss, what it had written is unknown until
        # recovery reads the disk (and there is nothing pending left to sync).
        node_id = node.node_id
        if not (node_id in self._down and self._power_lost[node_id]):
            synced = self._written.get(node_id, ZERO_POSITION)
            self._synced[node_id] = synced
            self._unsynced_ends.pop(node_id, None)
            self._copies[node_id] = max(synced, self._copies.get(node_id, synced))

    def on_crash(self, node: SimNode, power_loss: bool) -> None:
        self._power_lost[node.node_id] = power_loss
        self._down.add(node.node_id)
        self._cut.pop(node.node_id, None)
        self._awaited_cut.pop(node.node_id, None)
        self._epochs.pop(node.node_id, None)        # a lost disk forgets it; the check is per run

    def on_disk_lost(self, node: SimNode) -> None:
        """The data directory is gone: the node holds nothing any more."""
        self._written[node.node_id] = ZERO_POSITION
        self._synced[node.node_id] = ZERO_POSITION
        self._unsynced_ends.pop(node.node_id, None)

    def on_restart(self, node: SimNode, recovered: RecoveredState) -> None:
        node_id = node.node_id
        written = self._written.get(node_id, ZERO_POSITION)
        synced = self._synced.get(node_id, ZERO_POSITION)
        last = recovered.last_position
        if not self._power_lost.get(node_id, False):
            # The page cache kept every record, still unsynced: a later power loss may take them.
            if last != written:
                self._violate(node, f"recovered at {last} after a process crash, but the last "
                                    f"record written left the log at {written}")
        else:
            # After a power loss, what the disk holds is durable.
            ends = self._unsynced_ends.pop(node_id, [])
            if last != synced and last not in ends:
                self._violate(node, f"recovered at {last}, but {synced} had been synced and "
                                    f"the records written since left the log at "
                                    f"[{', '.join(map(str, ends))}]")
            self._synced[node_id] = last
        self._written[node_id] = last
        self._status.pop(node_id, None)
        self._down.discard(node_id)
