"""Online invariants: white-box checks on every ``Ready``, crash and restart, as they happen.

The history checkers judge what clients saw; these judge what nodes did, at the moment they did
it, so a violation points at the event that caused it (TigerBeetle's state checker):

- **log positions strictly increase** on a node: every ``AppendEntry`` a node persists is at a
  position above the one before it, within an incarnation and across restarts (the first entry
  after a restart is above the last one that survived);
- **durable means durable**: after a crash the store recovers at least up to the last position
  that was synced before it, and after a process crash (which keeps the page cache) exactly up
  to the last position written: nothing that survived may be missing, nothing may appear;
- **positions never go backwards** while a node runs: ``status()["position"]`` and
  ``status()["commit_position"]`` are monotonic within an incarnation (only a crash may take
  them back, to what the disk kept). A ``ResetLog`` (a snapshot installed) moves the log end
  wherever the snapshot stands;
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
from chorusdb.core.model import ZERO_POSITION, AppendEntry, Position, RecoveredState, ResetLog
from chorusdb.sim.node import SimNode

violations_max = 20          # per run; the first few explain the failure


def _position(document: object) -> Position:
    assert isinstance(document, dict), document
    return Position(document["epoch"], document["index"])


class Invariants:
    """Per-node bookkeeping for the online checks; see the module docstring."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._written: dict[str, Position] = {}     # last position handed to the store
        self._synced: dict[str, Position] = {}      # last position synced to the platter
        self._copies: dict[str, Position] = {}      # highest ever synced, disk loss or not
        self._status: dict[str, tuple[Position, Position]] = {}
        self._power_lost: dict[str, bool] = {}      # how the node last went down
        self._down: set[str] = set()

    def _violate(self, node: SimNode, text: str) -> None:
        if len(self.violations) < violations_max:
            self.violations.append(f"t={node.world.now_us / 1e6:.6f}s {node.node_id}: {text}")

    def on_ready(self, node: SimNode, ready: Ready) -> None:
        last = self._written.get(node.node_id, ZERO_POSITION)
        for write in ready.writes:
            if type(write) is AppendEntry:
                position = write.entry.position
                if position <= last:
                    self._violate(node, f"log position {position} written after {last}")
                last = position
            elif type(write) is ResetLog:
                last = write.position
        self._written[node.node_id] = last

    def on_carried_out(self, node: SimNode) -> None:
        assert node.core is not None
        status = node.core.status()
        now = (_position(status["position"]), _position(status["commit_position"]))
        before = self._status.get(node.node_id)
        if before is not None:
            for name, old, new in (("position", before[0], now[0]),
                                   ("commit_position", before[1], now[1])):
                if new < old:
                    self._violate(node, f"{name} went back from {old} to {new} without a crash")
        self._status[node.node_id] = now
        if status.get("role") == "leader" and node.durability == "fsync" and now[1] > (
                ZERO_POSITION if before is None else before[1]):
            self._check_commit_copies(node, now[1], status["write_quorum"])

    def _check_commit_copies(self, node: SimNode, commit: Position, quorum: int) -> None:
        holders = [n for n, synced in self._copies.items() if synced >= commit]
        if len(holders) < quorum:
            self._violate(node, f"commit position {commit} acknowledged with {len(holders)} "
                                f"durable copies {sorted(holders)}, write quorum {quorum}")

    def on_sync(self, node: SimNode) -> None:
        # While a node is down after a power loss, what it had written is unknown until
        # recovery reads the disk (and there is nothing pending left to sync).
        if not (node.node_id in self._down and self._power_lost[node.node_id]):
            synced = self._written.get(node.node_id, ZERO_POSITION)
            self._synced[node.node_id] = synced
            self._copies[node.node_id] = max(synced, self._copies.get(node.node_id, synced))

    def on_crash(self, node: SimNode, power_loss: bool) -> None:
        self._power_lost[node.node_id] = power_loss
        self._down.add(node.node_id)

    def on_disk_lost(self, node: SimNode) -> None:
        """The data directory is gone: the node holds nothing any more."""
        self._written[node.node_id] = ZERO_POSITION
        self._synced[node.node_id] = ZERO_POSITION

    def on_restart(self, node: SimNode, recovered: RecoveredState) -> None:
        process_crash = not self._power_lost.get(node.node_id, False)
        written = self._written.get(node.node_id, ZERO_POSITION)
        synced = self._synced.get(node.node_id, ZERO_POSITION)
        last = recovered.last_position
        if last < synced:
            self._violate(node, f"recovered at {last}, but {synced} had been synced")
        if process_crash and last != written:
            self._violate(node, f"recovered at {last} after a process crash, but {written} "
                                f"had been written")
        if last > written:
            self._violate(node, f"recovered at {last}, beyond the last position written "
                                f"{written}")
        self._written[node.node_id] = last
        if not process_crash:       # after a power loss, what the disk holds is durable
            self._synced[node.node_id] = last
        self._status.pop(node.node_id, None)
        self._down.discard(node.node_id)
