"""Every seed that ever failed, run again every time (``regression_seeds.txt``, never pruned).

A line without a bug must pass now (whatever failed was fixed); a line with a bug must still be
caught by that seed (the bug corpus keeps its teeth). The file's header says what to do when a
change to the simulator reshapes a seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chorusdb.sim.params import SimConfig
from chorusdb.sim.runner import run_seed

SEEDS_FILE = Path(__file__).with_name("regression_seeds.txt")


def regression_entries() -> list:
    entries = []
    for number, line in enumerate(SEEDS_FILE.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [field.strip() for field in line.split(",")]
        mode, durability, seed, bug = fields[:4]
        nodes, quorum = (int(field) for field in (fields[4:] + ["0", "0"])[:2])
        config = SimConfig(mode=mode, durability=durability, bug=bug, nodes=nodes,
                           write_quorum=quorum)
        entries.append(pytest.param(config, int(seed),
                                    id=f"line{number}-{mode}-{durability}-{seed}-{bug or 'none'}"))
    return entries


@pytest.mark.parametrize(("config", "seed"), regression_entries())
def test_regression_seed(config: SimConfig, seed: int):
    report = run_seed(config, seed)
    if config.bug:
        assert report.failed, f"seed {seed} no longer catches {config.bug}"
    else:
        assert not report.failed, report.explain()


def test_the_file_is_well_formed():
    assert len(regression_entries()) > 0
