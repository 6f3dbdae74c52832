"""What a run is asked to do (``SimConfig``) and what its seed draws (``SeedParams``).

``SimConfig`` is the command line: mode, durability, node count, the fault kinds allowed and an
optional known bug. It alone, with the seed, determines the run; ``replay_command`` prints it.

``SeedParams`` is swarm testing (TigerBeetle's VOPR, FoundationDB's BUGGIFY): every seed draws
*which* allowed fault kinds are on (each with ``fault_kind_probability``, at least one) and *how
hard* they hit (intervals, storm strength, pause and crash lengths, torn-write probability), as
well as the disk's latency, the OS writeback interval and the workload's shape. A seed that
happens to turn everything on at full strength and one that only skews clocks both occur, so
the bugs that need a quiet run and the bugs that need a storm are both within reach.

Fault kinds:

- ``net``: network storms on some links (drops, delays; duplicates between nodes);
- ``partition``: blocked links (one node isolated, majority/minority, asymmetric, bridge,
  flapping; client links cut or one-way);
- ``crash``: SIGKILL and restart (the page cache survives);
- ``power``: power loss and restart (unsynced records survive only as a prefix, maybe torn);
- ``clock``: skewed and drifting clocks from the start, and clock jumps;
- ``pause``: SIGSTOP and SIGCONT.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from chorusdb.sim.network import LinkFaults
from chorusdb.sim.node import DiskTiming
from chorusdb.sim.workload import WorkloadShape

FAULT_KINDS = ("net", "partition", "crash", "power", "clock", "pause")
DURABILITIES = ("fsync", "os")
DEFAULT_NODES = {"standalone": 1}
default_nodes_replicated = 3

fault_kind_probability = 0.6
chaos_s_min = 20
chaos_s_max = 40
liveness_s = 20                       # heal -> every worker's progress and converged replicas
fault_interval_ms_min = 400
fault_interval_ms_max = 3000
operations_min = 700                  # invoked during chaos, all workers together
operations_max = 1100
clients_per_node_min = 2
clients_per_node_max = 4
burst_probability_max = 0.5
client_timeout_ms_min = 300
client_timeout_ms_max = 1500
liveness_ok_operations = 3
value_padding_bytes_max = 48
# Links between storms: a short fixed delay plus an exponential part; with ``net`` on, a
# little loss (and, between nodes, duplication) all the time.
client_delay_us_min_range = (20, 200)
client_delay_us_mean_range = (50, 2000)
client_drop_probability_max = 0.01
peer_delay_us_min_range = (50, 500)
peer_delay_us_mean_range = (100, 5000)
peer_drop_probability_max = 0.05
peer_duplicate_probability_max = 0.1
peer_corrupt_probability_max = 0.3
# Replicated modes keep a short log in the simulator, so a follower that was down a while is
# re-seeded by snapshot (the default policy keeps 100 000 entries: a run writes fewer).
log_retention_entries_min = 5
log_retention_entries_max = 100
fsync_us_min = 100
fsync_us_mean_min = 200
fsync_us_mean_max = 5000
page_cache_write_us = 20
writeback_interval_ms_min = 100
writeback_interval_ms_max = 800
torn_probability_min = 0.3
torn_probability_max = 0.9
clock_skew_ms_max = 2000
clock_drift_ppm_max = 500


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulator invocation's settings (the seed aside)."""

    mode: str
    durability: str = "fsync"
    nodes: int = 0                              # 0: the mode's default
    faults: tuple[str, ...] = FAULT_KINDS
    bug: str = ""                               # "": no known bug switched on
    write_quorum: int = 0                       # leader mode's W; 0: the mode's default

    def __post_init__(self) -> None:
        assert self.durability in DURABILITIES, self.durability
        unknown = set(self.faults) - set(FAULT_KINDS)
        assert not unknown, f"unknown fault kinds {sorted(unknown)}"

    @property
    def node_count(self) -> int:
        return self.nodes or DEFAULT_NODES.get(self.mode, default_nodes_replicated)

    def replay_command(self, seed: int) -> str:
        parts = [f"chorusdb sim --mode {self.mode} --seed {seed} --seeds 1",
                 f"--durability {self.durability}"]
        if self.nodes:
            parts.append(f"--nodes {self.nodes}")
        if self.faults != FAULT_KINDS:
            parts.append(f"--faults {','.join(self.faults) or 'none'}")
        if self.write_quorum:
            parts.append(f"--write-quorum {self.write_quorum}")
        if self.bug:
            parts.append(f"--bug {self.bug}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class SeedParams:
    """Everything a seed draws before the run starts; see the module docstring."""

    faults: tuple[str, ...]
    chaos_us: int
    liveness_us: int
    fault_interval_us_mean: int
    client_link: LinkFaults
    peer_link: LinkFaults
    disk: DiskTiming
    torn_probability: float
    clock_skew_us_max: int
    clock_drift_ppm_max: int
    workload: WorkloadShape
    log_retention_entries: int

    @classmethod
    def draw(cls, config: SimConfig, rng: random.Random) -> SeedParams:
        faults = tuple(kind for kind in config.faults if rng.random() < fault_kind_probability)
        if config.faults and not faults:
            faults = (rng.choice(config.faults),)
        chaos_us = rng.randint(chaos_s_min, chaos_s_max) * 1_000_000
        clients_per_node = rng.randint(clients_per_node_min, clients_per_node_max)
        clients = clients_per_node * config.node_count
        operations = rng.randint(operations_min, operations_max)
        timeout_us = rng.randint(client_timeout_ms_min, client_timeout_ms_max) * 1000
        workload = WorkloadShape(
            clients_per_node=clients_per_node,
            operations_max=operations,
            think_us_mean=max(1, chaos_us * clients // operations),
            burst_probability=rng.uniform(0, burst_probability_max),
            timeout_us=timeout_us,
            liveness_ok_operations=liveness_ok_operations,
            value_padding_bytes=rng.randint(0, value_padding_bytes_max),
        )
        quiet = "net" not in faults
        client_link = LinkFaults(
            drop_probability=0.0 if quiet else rng.uniform(0, client_drop_probability_max),
            duplicate_probability=0.0,
            delay_us_min=rng.randint(*client_delay_us_min_range),
            delay_us_mean=rng.randint(*client_delay_us_mean_range),
        )
        peer_link = LinkFaults(
            drop_probability=0.0 if quiet else rng.uniform(0, peer_drop_probability_max),
            duplicate_probability=0.0 if quiet else rng.uniform(0, peer_duplicate_probability_max),
            delay_us_min=rng.randint(*peer_delay_us_min_range),
            delay_us_mean=rng.randint(*peer_delay_us_mean_range),
        )
        disk = DiskTiming(
            fsync_us_min=fsync_us_min,
            fsync_us_mean=rng.randint(fsync_us_mean_min, fsync_us_mean_max),
            page_cache_write_us=page_cache_write_us,
            writeback_interval_us=rng.randint(writeback_interval_ms_min,
                                              writeback_interval_ms_max) * 1000,
        )
        clock = "clock" in faults
        fault_interval_us_mean = rng.randint(fault_interval_ms_min, fault_interval_ms_max) * 1000
        torn_probability = rng.uniform(torn_probability_min, torn_probability_max)
        # Drawn after everything else, so adding them left earlier seeds' draws unchanged.
        peer_link = replace(peer_link, corrupt_probability=0.0 if quiet else rng.uniform(
            0, peer_corrupt_probability_max))
        log_retention_entries = rng.randint(log_retention_entries_min, log_retention_entries_max)
        return cls(
            faults=faults,
            chaos_us=chaos_us,
            liveness_us=liveness_s * 1_000_000,
            fault_interval_us_mean=fault_interval_us_mean,
            client_link=client_link,
            peer_link=peer_link,
            disk=disk,
            torn_probability=torn_probability,
            clock_skew_us_max=clock_skew_ms_max * 1000 if clock else 0,
            clock_drift_ppm_max=clock_drift_ppm_max if clock else 0,
            workload=workload,
            log_retention_entries=log_retention_entries,
        )
