"""The fault injector: during chaos, one fault every so often, each undone after a while.

Faults arrive as a Poisson process (exponential gaps with the seed's mean interval); each picks
one of the seed's enabled kinds uniformly and a victim, applies the fault, writes a ``nemesis``
note into the history and schedules its undoing:

- ``crash`` / ``power``: a node dies (SIGKILL / power loss) and boots again after a downtime
  in a cluster of several nodes, some SIGKILLed nodes also lose their data directory before
  they boot (``disk_loss_probability``: the member rejoins empty and must be re-seeded). Power
  loss and disk loss spare the roles the mode lists in ``DATA_LOSS_EXEMPT_ROLES``;
  half of these crashes wait for the node's next persist and strike while it is in flight
  (written, not yet synced or acknowledged), the instant that decides whether an
  acknowledgement can be lost, and one a crash at a random time rarely hits;
- ``pause``: a node stops (SIGSTOP) and continues (SIGCONT) after a while;
- ``clock``: a node's clock steps forwards or backwards (the driver clamps backwards steps);
- ``net``: a storm on some links (heavy drops and delays; duplicates between nodes);
- ``partition``: a set of blocked links, one shape at a time (a new one replaces the old):
  ``isolate`` (one node alone), ``halves`` (majority / minority), ``one_way`` (a node can hear
  but not speak), ``bridge`` (two sides that one node still joins), ``flapping`` (one of those,
  switched on and off every few hundred ms), and, between clients and nodes, ``clients_cut``
  (no client reaches a node) and ``replies_cut`` (requests arrive, replies are lost: the
  classic "did my write happen?").

``heal`` ends chaos: no new faults, partitions and storms cleared, paused nodes resumed, downed
nodes booted, and then every node restarted once more (SIGKILL, which loses nothing), so every
run also checks that what was acknowledged survives a restart.

Everything random comes from the world's ``faults`` stream (clock steps from ``clocks``).
"""

from __future__ import annotations

from functools import partial

from chorusdb.sim.network import LinkFaults, Network
from chorusdb.sim.node import ArmedCrash, SimNode
from chorusdb.sim.params import SeedParams
from chorusdb.sim.world import World
from chorusdb.verify.history import HistoryRecorder

mid_persist_crash_probability = 0.5
disk_loss_probability = 0.3          # of a SIGKILLed cluster member: its data directory is gone
downtime_ms_min = 10
downtime_ms_max = 3000
pause_ms_min = 20
pause_ms_max = 3000
clock_jump_ms_max = 5000
storm_ms_min = 100
storm_ms_max = 3000
storm_links_fraction_max = 0.7
storm_drop_probability_max = 0.5
storm_duplicate_probability_max = 0.5
storm_delay_ms_max = 200
partition_ms_min = 200
partition_ms_max = 5000
flap_ms_min = 50
flap_ms_max = 500

NODE_PARTITIONS = ("isolate", "halves", "one_way", "bridge", "flapping")
CLIENT_PARTITIONS = ("clients_cut", "replies_cut")
BRIDGE_NODES_MIN = 3


class Nemesis:
    """Schedules and undoes faults; see the module docstring."""

    def __init__(self, *, world: World, network: Network, nodes: dict[str, SimNode],
                 clients: tuple[str, ...], params: SeedParams,
                 recorder: HistoryRecorder) -> None:
        self.world = world
        self.network = network
        self.nodes = nodes
        self.node_ids = tuple(nodes)
        self.clients = clients
        self.params = params
        self.recorder = recorder
        self.rng = world.streams["faults"]
        self.counts: dict[str, int] = {}
        self.healed = False
        self._partition_generation = 0
        self._shapes = CLIENT_PARTITIONS + (NODE_PARTITIONS if len(nodes) > 1 else ())
        if len(nodes) < BRIDGE_NODES_MIN:
            self._shapes = tuple(s for s in self._shapes if s != "bridge")
        self._actions = {
            "crash": self._crash, "power": self._crash, "pause": self._pause,
            "clock": self._clock, "net": self._storm, "partition": self._partition,
        }

    def start(self) -> None:
        if self.params.faults:
            self._schedule_next()

    def _schedule_next(self) -> None:
        gap_us = int(self.rng.expovariate(1.0 / self.params.fault_interval_us_mean))
        self.world.after(gap_us, self._inject)

    def _inject(self) -> None:
        if self.healed:
            return
        kind = self.rng.choice(self.params.faults)
        if self._actions[kind](kind):
            self.counts[kind] = self.counts.get(kind, 0) + 1
        self._schedule_next()

    def _note(self, f: str, value: dict) -> None:
        self.world.trace("nemesis", f, value)
        self.recorder.note("nemesis", f, value, time=self.world.now_us * 1000)

    def _duration_us(self, low_ms: int, high_ms: int) -> int:
        return self.rng.randint(low_ms, high_ms) * 1000

    # --- processes --------------------------------------------------------------------------

    def _crash(self, kind: str) -> bool:
        power_loss = kind == "power"
        up = [node for node in self.nodes.values() if node.is_up
              and not (power_loss and node.role() in node.core_class.DATA_LOSS_EXEMPT_ROLES)]
        if not up:
            return False
        node = self.rng.choice(up)
        # Drawn only in clusters, so single-node seeds keep their draws.
        lose_disk = (not power_loss and len(self.nodes) > 1
                     and node.role() not in node.core_class.DATA_LOSS_EXEMPT_ROLES
                     and node.role() not in getattr(node.core_class, "DISK_LOSS_EXEMPT_ROLES",
                                                    frozenset())
                     and self.rng.random() < disk_loss_probability
                     and self._others_hold_everything(node))
        if self.rng.random() < mid_persist_crash_probability:
            self._note("armed", {"node": node.node_id, "crash": kind})
            node.crash_during_next_persist(ArmedCrash(
                power_loss, self.params.torn_probability,
                partial(self._crashed, node, kind, lose_disk)))
        else:
            node.crash(power_loss=power_loss, torn_probability=self.params.torn_probability)
            self._crashed(node, kind, lose_disk)
        return True

    def _others_hold_everything(self, victim: SimNode) -> bool:
        """A disk is lost only while every other member is up and holds all that any member
        knows to be committed, and the victim quarantined nothing: one lost copy is what
        replication must survive, losing the last copies of a write is not (after a failover,
        any member may hold the only copies of some writes, not just the leader)."""
        others = [node for node in self.nodes.values() if node is not victim]
        if not all(node.is_up for node in others):
            return False
        if victim.core.status().get("divergent_entries"):
            return False            # the only copies of the writes it quarantined
        statuses = [node.core.status() for node in self.nodes.values() if node.is_up]
        committed = max(status["commit_position"]["index"] for status in statuses)
        victim_end = victim.core.status()["position"]
        for node in others:
            status = node.core.status()
            end = status["position"]
            if end["index"] < max(committed, victim_end["index"]) or end["epoch"] < victim_end[
                    "epoch"]:
                return False
        return True

    def _crashed(self, node: SimNode, kind: str, lose_disk: bool) -> None:
        self._note(kind, {"node": node.node_id})
        if lose_disk:
            node.lose_disk()
            self._note("disk_lost", {"node": node.node_id})
            self.world.probe("disk_lost")
        if kind == "power":
            self.world.probe("power_loss")
        self.world.after(self._duration_us(downtime_ms_min, downtime_ms_max),
                         self._boot, node, node.incarnation)

    def _boot(self, node: SimNode, incarnation: int) -> None:
        if node.is_up or node.incarnation != incarnation:
            return
        self._note("start", {"node": node.node_id})
        self.world.probe("crash_restart")
        node.start()

    def _pause(self, kind: str) -> bool:
        running = [node for node in self.nodes.values() if node.is_up and not node.paused]
        if not running:
            return False
        node = self.rng.choice(running)
        self._note("pause", {"node": node.node_id})
        self.world.probe("pause")
        node.pause()
        self.world.after(self._duration_us(pause_ms_min, pause_ms_max), self._resume, node,
                         node.incarnation)
        return True

    def _resume(self, node: SimNode, incarnation: int) -> None:
        if node.incarnation == incarnation and node.paused:
            self._note("resume", {"node": node.node_id})
            node.resume()

    def _clock(self, kind: str) -> bool:
        node = self.nodes[self.rng.choice(self.node_ids)]
        delta_us = self.world.streams["clocks"].randint(-clock_jump_ms_max, clock_jump_ms_max)
        delta_us *= 1000
        self._note("clock_jump", {"node": node.node_id, "delta_us": delta_us})
        self.world.probe("clock_jump")
        node.jump_clock(delta_us)
        return True

    # --- network ------------------------------------------------------------------------------

    def _links(self) -> list[tuple[str, str]]:
        """Every directed link, in a fixed order: node to node, then client to node and back."""
        links = [(a, b) for a in self.node_ids for b in self.node_ids if a != b]
        for client in self.clients:
            for node_id in self.node_ids:
                links.append((client, node_id))
                links.append((node_id, client))
        return links

    def _storm(self, kind: str) -> bool:
        rng = self.rng
        links = self._links()
        count = max(1, int(len(links) * rng.uniform(0, storm_links_fraction_max)))
        chosen = rng.sample(links, count)
        node_ids = set(self.node_ids)
        for source, target in chosen:
            between_nodes = source in node_ids and target in node_ids
            faults = LinkFaults(
                drop_probability=rng.uniform(0, storm_drop_probability_max),
                duplicate_probability=(rng.uniform(0, storm_duplicate_probability_max)
                                       if between_nodes else 0.0),
                delay_us_min=rng.randint(0, storm_delay_ms_max) * 1000,
                delay_us_mean=rng.randint(1, storm_delay_ms_max) * 1000,
            )
            self.network.disturb(source, target, faults)
        self._note("storm", {"links": [list(link) for link in chosen]})
        self.world.probe("net_storm")
        self.world.after(self._duration_us(storm_ms_min, storm_ms_max), self._calm, chosen)
        return True

    def _calm(self, links: list[tuple[str, str]]) -> None:
        for source, target in links:
            self.network.calm(source, target)

    def _partition(self, kind: str) -> bool:
        shape = self.rng.choice(self._shapes)
        self._partition_generation += 1
        generation = self._partition_generation
        duration_us = self._duration_us(partition_ms_min, partition_ms_max)
        if shape == "flapping":
            blocked = self._blocked_links(self.rng.choice(
                [s for s in self._shapes if s != "flapping"]))
            self._flap(generation, blocked, self.world.now_us + duration_us, True)
        else:
            blocked = self._blocked_links(shape)
            self._block(blocked)
            self.world.after(duration_us, self._unblock, generation)
        self._note("partition", {"shape": shape, "blocked": [list(link) for link in blocked]})
        self.world.probe("partition")
        return True

    def _block(self, blocked: list[tuple[str, str]]) -> None:
        self.network.blocked.clear()
        self.network.blocked.update(blocked)

    def _unblock(self, generation: int) -> None:
        if generation == self._partition_generation and not self.healed:
            self.network.blocked.clear()
            self._note("partition_end", {})

    def _flap(self, generation: int, blocked: list[tuple[str, str]], end_us: int,
              on: bool) -> None:
        if generation != self._partition_generation or self.healed:
            return
        if on and self.world.now_us < end_us:
            self._block(blocked)
        else:
            self.network.blocked.clear()
        if self.world.now_us < end_us:
            self.world.after(self._duration_us(flap_ms_min, flap_ms_max), self._flap,
                             generation, blocked, end_us, not on)

    def _blocked_links(self, shape: str) -> list[tuple[str, str]]:
        rng = self.rng
        nodes = list(self.node_ids)
        if shape in CLIENT_PARTITIONS:
            victim = rng.choice(nodes)
            links = [(victim, client) for client in self.clients]
            if shape == "clients_cut":
                links += [(client, victim) for client in self.clients]
            return links
        rng.shuffle(nodes)
        if shape == "isolate":
            return _between(nodes[:1], nodes[1:])
        if shape == "halves":
            minority = rng.randint(1, len(nodes) // 2)
            return _between(nodes[:minority], nodes[minority:])
        if shape == "one_way":
            return [(nodes[0], other) for other in nodes[1:]]
        assert shape == "bridge", shape
        rest = nodes[1:]
        cut = rng.randint(1, len(rest) - 1)
        return _between(rest[:cut], rest[cut:])

    # --- heal ---------------------------------------------------------------------------------

    def heal(self) -> None:
        """End chaos; see the module docstring."""
        self.healed = True
        self._note("heal", {})
        self.network.heal()
        for node in self.nodes.values():
            if node.paused:
                node.resume()
        for node in self.nodes.values():
            if node.is_up:
                node.crash(power_loss=False, torn_probability=0.0)
            node.start()


def _between(side_a: list[str], side_b: list[str]) -> list[tuple[str, str]]:
    """Both directions of every link between two groups of nodes."""
    return [link for a in side_a for b in side_b for link in ((a, b), (b, a))]
