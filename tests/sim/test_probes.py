"""Coverage probes: the rare paths the simulator exists to exercise must actually run.

Cores mark rare paths with ``Probe(name)`` notes and the simulator counts its own events; a
probe listed here that never fires over the seeds below means the faults (or the core) stopped
reaching that path, which fails CI just like an anomaly would.
"""

from __future__ import annotations

import pytest

from chorusdb.core.modes import CORES
from chorusdb.sim.params import SimConfig
from chorusdb.sim.runner import run_seed

SEEDS = range(1, 31)
PROBE_FIRINGS_MIN = 10
# A path that needs two faults to meet fires less often: a disk is lost only while every other
# member is whole.
RARE_PROBE_FIRINGS_MIN = {"disk_lost": 5}
SINGLE_NODE_PROBES = (
    "crash_restart", "power_loss", "torn_write", "torn_record_recovered",
    "records_dropped_on_recovery", "unsynced_records_lost", "partition", "clock_jump",
    "pause", "net_storm", "message_dropped", "client_timeout",
)
REPLICATED_PROBES = SINGLE_NODE_PROBES + ("duplicate_delivery",)
REQUIRED = {
    "standalone": SINGLE_NODE_PROBES,
    # A follower catching up: go-back-N resends, retention trims, snapshots sent and installed.
    # (A corrupt snapshot chunk is rarer, a few per 30 seeds: the skip_chunk_crc bug test
    # proves the simulator reaches it.) Failover: elections, leaders stepping down, divergent
    # entries quarantined and their holders re-seeded. (An Append from a deposed leader that
    # arrives after the election is rare, 0 to 20 per 30 seeds: the no_epoch_check_on_append
    # bug test proves the simulator reaches it.)
    "leader": REPLICATED_PROBES + ("append_resent", "log_trimmed", "snapshot_started",
                                   "snapshot_installed", "disk_lost", "election_started",
                                   "stepped_down", "divergent_quarantined",
                                   "reseed_after_divergence"),
}


@pytest.mark.parametrize("mode", sorted(CORES))
@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_required_probes_fire(mode: str, durability: str):
    config = SimConfig(mode=mode, durability=durability)
    totals: dict[str, int] = {}
    for seed in SEEDS:
        for name, count in run_seed(config, seed).probes.items():
            totals[name] = totals.get(name, 0) + count
    required = REQUIRED.get(mode, REPLICATED_PROBES)
    rare = {name: totals.get(name, 0) for name in required
            if totals.get(name, 0) < RARE_PROBE_FIRINGS_MIN.get(name, PROBE_FIRINGS_MIN)}
    assert not rare, f"probes fired fewer than {PROBE_FIRINGS_MIN} times in {len(SEEDS)} " \
                     f"seeds: {rare} (all: {dict(sorted(totals.items()))})"
