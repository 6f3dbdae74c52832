"""The seed sweep: every mode and durability over hundreds of seeds, none may fail.

Each parameter below is one chunk of consecutive seeds, so ``pytest -n 2`` spreads the chunks
over both cores. A failing seed prints its witness and the command that replays it; once it is
understood (and fixed), it goes into ``regression_seeds.txt`` for good.

``CHORUSDB_SIM_SEED_OFFSET`` shifts every chunk (a soak session runs other seeds than CI does);
the default, 0, keeps CI on the same seeds every time.

Leader mode with W + Q <= N (W = 1 of 3, 1 of 5) is the negative control: a failover there
may lose acknowledged writes, the run excuses a loss only when a node's ``divergent`` table
holds the write, and each such chunk must show some (else the faults no longer reach it).
"""

from __future__ import annotations

import os

import pytest

from chorusdb.core.leader import LeaderSettings
from chorusdb.core.modes import CORES
from chorusdb.sim.params import SimConfig
from chorusdb.sim.runner import run_seed

SEEDS_PER_CHUNK = 50
# (mode, durability, nodes, write quorum) -> seeds per CI run (0: the mode's default). Standalone
# runs both durabilities; every other mode gets at least 100 seeds under the strict one; leader
# mode covers W in {1, 2, 3} of 3 and {1, 3, 5} of 5.
SEEDS = {("standalone", "fsync", 0, 0): 300, ("standalone", "os", 0, 0): 300,
         ("leader", "fsync", 3, 1): 100, ("leader", "fsync", 3, 2): 100,
         ("leader", "fsync", 3, 3): 100, ("leader", "os", 3, 2): 100,
         ("leader", "fsync", 5, 1): 50, ("leader", "fsync", 5, 3): 50,
         ("leader", "fsync", 5, 5): 50,
         ("multi-leader", "fsync", 3, 0): 100, ("multi-leader", "fsync", 5, 0): 50,
         ("multi-leader", "os", 3, 0): 50}
for _mode in CORES:
    assert any(mode == _mode for mode, *_ in SEEDS), f"mode {_mode} is not swept"
SEED_OFFSET = int(os.environ.get("CHORUSDB_SIM_SEED_OFFSET", "0"))

CHUNKS = [
    pytest.param(SimConfig(mode=mode, durability=durability, nodes=nodes, write_quorum=quorum),
                 first, id=f"{mode}-{durability}-n{nodes}-w{quorum}-{first}")
    for (mode, durability, nodes, quorum), count in SEEDS.items()
    for first in range(1 + SEED_OFFSET, 1 + SEED_OFFSET + count, SEEDS_PER_CHUNK)
]


def may_lose(config: SimConfig) -> bool:
    return config.mode == LeaderSettings.mode and LeaderSettings(
        write_quorum=config.write_quorum).may_lose_acknowledged_writes(config.node_count)


@pytest.mark.parametrize(("config", "first"), CHUNKS)
def test_no_seed_fails(config: SimConfig, first: int):
    reports = [run_seed(config, seed) for seed in range(first, first + SEEDS_PER_CHUNK)]
    failures = [report for report in reports if report.failed]
    assert not failures, (
        f"{len(failures)} of seeds {first}..{first + SEEDS_PER_CHUNK - 1} failed; add each to "
        "tests/sim/regression_seeds.txt once understood:\n\n"
        + "\n\n".join(report.explain() for report in failures))
    if may_lose(config):
        quarantined = sum(report.allowed.get("lost-writes", 0) for report in reports)
        print(f"{quarantined} acknowledged writes lost and found quarantined")
        assert quarantined > 0, "W + Q <= N lost no acknowledged write in a whole chunk"
