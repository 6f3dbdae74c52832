"""The simulator with several nodes, before any replicated mode exists: a toy core whose nodes
keep their own data and gossip heartbeats shows that peer messages are routed by ``target``,
that partitions, storms and duplicates reach them, and that the phases, final reads and
invariants work for N nodes. It claims nothing, so the history checkers have nothing to judge:
this is the plumbing the replicated modes will plug into without changes to the simulator."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from chorusdb.core import modes
from chorusdb.core.api import ClientCommand, ClientReply, CoreConfig, Ready
from chorusdb.core.keyspace import Keyspace
from chorusdb.core.model import AppendEntry, LogEntry, Position, RecoveredState
from chorusdb.sim.params import SimConfig
from chorusdb.sim.runner import claims_of, run_seed

HEARTBEAT_INTERVAL_MS = 50


@dataclass(frozen=True, slots=True)
class Heartbeat:
    target: str
    source: str
    sent_ms: int


class GossipCore:
    """Every node serves its own data (like a standalone node) and pings its peers."""

    mode = "gossip-test"
    KNOWN_BUGS: dict[str, str] = {}
    CLAIMS = frozenset()
    DATA_LOSS_EXEMPT_ROLES = frozenset()
    heartbeats_received = 0

    def __init__(self, config: CoreConfig, recovered: RecoveredState, rng: random.Random,
                 now_ms: int) -> None:
        self.config = config
        self.keyspace = Keyspace(dict(recovered.records))
        self.position = recovered.last_position
        self.next_heartbeat_ms = now_ms
        self.pending = Ready()
        self.ticked = False

    def propose(self, command: ClientCommand, request_id: int, now_ms: int) -> None:
        if command.name == b"CHORUS.DIGEST":
            self.pending.replies.append(
                ClientReply(request_id, self.keyspace.digest(now_ms).encode()))
            return
        reply, effects = self.keyspace.execute(command, now_ms)
        for effect in effects:
            self.position = Position(0, self.position.index + 1)
            self.keyspace.apply(effect, self.position.index)
            self.pending.writes.append(AppendEntry(LogEntry(self.position, effect)))
        self.pending.replies.append(ClientReply(request_id, reply))

    def step(self, message: object, now_ms: int) -> None:
        assert isinstance(message, Heartbeat) and message.target == self.config.node_id
        GossipCore.heartbeats_received += 1

    def tick(self, now_ms: int) -> None:
        self.ticked = True                  # the next Ready carries the next deadline
        if now_ms >= self.next_heartbeat_ms:
            self.next_heartbeat_ms = now_ms + HEARTBEAT_INTERVAL_MS
            self.pending.messages += [Heartbeat(peer, self.config.node_id, now_ms)
                                      for peer in self.config.members
                                      if peer != self.config.node_id]

    def has_ready(self) -> bool:
        return self.ticked or not self.pending.is_empty()

    def ready(self) -> Ready:
        self.ticked = False
        ready, self.pending = self.pending, Ready()
        ready.writes += self.keyspace.take_changes()
        ready.deadline_ms = self.next_heartbeat_ms
        return ready

    def advance(self, ready: Ready) -> None:
        pass

    def status(self) -> dict:
        position = {"epoch": 0, "index": self.position.index}
        return {"role": "peer", "position": position, "commit_position": position}


@pytest.fixture
def gossip_mode(monkeypatch):
    monkeypatch.setitem(modes.CORES, GossipCore.mode, GossipCore)
    GossipCore.heartbeats_received = 0
    return GossipCore.mode


def test_three_nodes_run_every_phase_and_reach_each_other(gossip_mode):
    assert claims_of(gossip_mode) == frozenset()
    probes: dict[str, int] = {}
    for seed in range(1, 21):
        report = run_seed(SimConfig(mode=gossip_mode, nodes=3), seed)
        assert not report.failed, report.explain()
        for name, count in report.probes.items():
            probes[name] = probes.get(name, 0) + count
    assert GossipCore.heartbeats_received > 10_000
    for name in ("duplicate_delivery", "partition", "message_dropped", "crash_restart"):
        assert probes.get(name, 0) > 0, (name, probes)


def test_every_mode_but_standalone_defaults_to_three_nodes(gossip_mode):
    assert SimConfig(mode=gossip_mode).node_count == 3
    assert SimConfig(mode="standalone").node_count == 1
