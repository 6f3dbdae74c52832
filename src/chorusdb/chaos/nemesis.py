"""The fault injector of ``chorusdb chaos``: real faults on real processes, one at a time.

A background thread starts a fault about every ``interval_s`` (each gap uniform in ``[0.5,
1.5]`` times it): it picks one of the enabled kinds, applies it to the cluster, holds it for a
random duration (within the gap) and undoes it:

- ``partition``: one shape through the link proxies — ``isolate`` (the leader, or any node,
  alone), ``halves`` (a minority cut off from a majority), ``one_way`` (a node whose messages
  are held while it still hears the others), ``bridge`` (two sides that only one node joins);
- ``kill``: SIGKILL, then a restart when the fault ends;
- ``pause``: SIGSTOP, then SIGCONT;
- ``restart``: a graceful stop (SIGTERM), then a start;
- ``skew``: the node's clock jumps forwards or backwards (``CHORUS.DEBUG CLOCKSKEW``; a node's
  clock never runs backwards, so a backward jump stalls it until real time catches up).

One fault at a time keeps every fault's effect attributable in the report, and a mean interval
of ~5 s still gives a dozen faults a minute. The victim of a process or partition fault is the
leader half of the time (when the mode has one), because that is where failover is tested.
Every fault is written into the history as a ``nemesis`` note and into ``events`` for the
artifacts. While a fault on the leader is in force, the thread watches the nodes' ``/status``
and records the failover time: from the fault to the first status of a new leader of a later
epoch. ``heal()`` undoes whatever is in force and brings every node back.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from chorusdb.chaos.cluster import ChaosCluster

NEMESES = ("partition", "kill", "pause", "restart", "skew")
PROCESS_FAULTS = ("kill", "pause", "restart")
PARTITION_SHAPES = ("isolate", "halves", "one_way", "bridge")
fault_duration_s_min = 1.0
fault_duration_s_max = 4.0
skew_ms_max = 3000
leader_victim_probability = 0.5
status_poll_interval_s = 0.05        # while a fault on the leader is in force
NEMESIS_PROCESS = "nemesis"


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One line of the nemesis log: a fault began or ended."""

    time_s: float                     # since the run started
    action: str                       # "start" or "end"
    kind: str
    detail: str


def leader_and_epoch(cluster: ChaosCluster) -> tuple[str | None, int]:
    """The node that says it leads (the highest epoch wins), and the highest epoch seen."""
    leader, epoch = None, -1
    for node_id in cluster.node_ids:
        status = cluster.status(node_id) if cluster.is_running(node_id) else None
        if not status:
            continue
        node_epoch = status.get("epoch", 0)
        if status.get("role") in ("leader", "standalone") and node_epoch >= epoch:
            leader = node_id
        epoch = max(epoch, node_epoch)
    return leader, epoch


class Nemesis:
    """See the module docstring. ``started_s`` is the run's ``time.monotonic()`` origin."""

    def __init__(self, cluster: ChaosCluster, note: Callable[..., object], rng: random.Random,
                 kinds: tuple[str, ...], interval_s: float, started_s: float,
                 has_leader: bool, on_event: Callable[[FaultEvent], None] | None = None) -> None:
        """``note(source, f, value)`` writes a note into the history (on its clock, under its
        lock: the workload's threads write there too)."""
        unknown = set(kinds) - set(NEMESES)
        assert not unknown, unknown
        self.cluster = cluster
        self.note = note
        self.rng = rng
        self.kinds = tuple(k for k in kinds if k != "partition" or len(cluster.node_ids) > 1)
        self.interval_s = interval_s
        self.started_s = started_s
        self.has_leader = has_leader
        self.on_event = on_event
        self.events: list[FaultEvent] = []
        self.counts: dict[str, int] = {}
        self.failover_s: list[float] = []
        self._undo: Callable[[], None] | None = None
        self._pending = ("", "")                    # the fault in force: kind, detail
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="nemesis", daemon=True)

    # --- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        if self.kinds:
            self._thread.start()

    def stop(self) -> None:
        """No new faults; the one in force is undone by ``heal``."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        """Faults start about every ``interval_s`` (each gap uniform in 0.5..1.5 of it) and
        each ends within 80% of its gap, so the next one starts on a healed cluster."""
        next_start = time.monotonic() + self.interval_s * self.rng.uniform(0.5, 1.5)
        while not self._stopped.wait(max(0.0, next_start - time.monotonic())):
            gap_s = self.interval_s * self.rng.uniform(0.5, 1.5)
            next_start += gap_s
            kind = self.rng.choice(self.kinds)
            duration_s = min(self.rng.uniform(fault_duration_s_min, fault_duration_s_max),
                             0.8 * gap_s)
            with self._lock:
                if self._stopped.is_set():
                    return
                leader, epoch = leader_and_epoch(self.cluster) if self.has_leader else (None, -1)
                hits_leader = self._apply(kind, leader)
            self._hold(duration_s, epoch if hits_leader else None)
            with self._lock:
                self._end()

    def _hold(self, duration_s: float, leader_epoch: int | None) -> None:
        """Wait out the fault; meanwhile time the failover if it struck the leader."""
        began = time.monotonic()
        deadline = began + duration_s
        while not self._stopped.is_set() and time.monotonic() < deadline:
            if leader_epoch is not None:
                leader, epoch = leader_and_epoch(self.cluster)
                if leader is not None and epoch > leader_epoch:
                    self.failover_s.append(time.monotonic() - began)
                    leader_epoch = None
            self._stopped.wait(status_poll_interval_s if leader_epoch is not None
                               else max(0.0, deadline - time.monotonic()))

    # --- faults -----------------------------------------------------------------------------

    def _victim(self, leader: str | None) -> str:
        running = [n for n in self.cluster.node_ids if self.cluster.is_running(n)]
        if leader in running and self.rng.random() < leader_victim_probability:
            return leader
        return self.rng.choice(running or list(self.cluster.node_ids))

    def _apply(self, kind: str, leader: str | None) -> bool:
        """Apply one fault of ``kind``; True when it took the leader away."""
        cluster = self.cluster
        if kind == "partition":
            shape = self.rng.choice(PARTITION_SHAPES)
            blocked, direction, alone = self._partition(shape, leader)
            cluster.block(blocked, direction)
            self._began(kind, f"{shape}: {sorted(blocked)} blocked ({direction})",
                        cluster.heal)
            return alone == leader and leader is not None
        victim = self._victim(leader)
        if kind == "kill":
            cluster.kill(victim)
            self._began(kind, victim, lambda: cluster.start(victim))
        elif kind == "pause":
            cluster.pause(victim)
            self._began(kind, victim, lambda: cluster.resume(victim))
        elif kind == "restart":
            cluster.terminate(victim)
            self._began(kind, victim, lambda: cluster.start(victim))
        else:
            delta_ms = self.rng.choice((-1, 1)) * self.rng.randint(1, skew_ms_max)
            if cluster.is_running(victim):
                cluster.skew(victim, delta_ms)
            self._began(kind, f"{victim} {delta_ms:+d} ms", None)
            return False
        return victim == leader

    def _partition(self, shape: str, leader: str | None
                   ) -> tuple[set[tuple[str, str]], str, str | None]:
        """The links to block for ``shape``, the direction, and the node left alone (if any)."""
        nodes = list(self.cluster.node_ids)
        self.rng.shuffle(nodes)
        if leader in nodes and self.rng.random() < leader_victim_probability:
            nodes.remove(leader)
            nodes.insert(0, leader)
        first, rest = nodes[0], nodes[1:]
        if shape == "isolate":
            return _between([first], rest), "both", first
        if shape == "halves":
            minority = nodes[:len(nodes) // 2]
            return _between(minority, nodes[len(nodes) // 2:]), "both", \
                first if len(minority) == 1 else None
        if shape == "one_way":
            return {(first, other) for other in rest}, "forward", None
        # "bridge": ``first`` keeps every link; the two sides lose each other.
        return _between(rest[:len(rest) // 2], rest[len(rest) // 2:]), "both", None

    def _began(self, kind: str, detail: str, undo: Callable[[], None] | None) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self._undo = undo
        self._log("start", kind, detail)
        self._pending = (kind, detail)

    def _end(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()
        kind, detail = self._pending
        self._log("end", kind, detail)

    def _log(self, action: str, kind: str, detail: str) -> None:
        now = time.monotonic()
        event = FaultEvent(round(now - self.started_s, 3), action, kind, detail)
        self.events.append(event)
        self.note(NEMESIS_PROCESS, f"{kind}-{action}", detail)
        if self.on_event is not None:
            self.on_event(event)

    # --- heal ------------------------------------------------------------------------------

    def heal(self) -> None:
        """Stop faulting, undo the fault in force, and bring every node back."""
        self.stop()
        with self._lock:
            if self._undo is not None:
                self._end()
            self.cluster.heal()
            for node_id in self.cluster.node_ids:
                if not self.cluster.is_running(node_id):
                    self.cluster.start(node_id)


def _between(side_a: list[str], side_b: list[str]) -> set[tuple[str, str]]:
    return {(a, b) for a in side_a for b in side_b} | {(b, a) for a in side_a for b in side_b}
