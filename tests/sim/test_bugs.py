"""Every known bug is caught within 200 seeds: the proof that the faults and the checkers can
see what they are meant to see (a simulator that never fails proves nothing by itself).

Each bug runs under the CLI's default durability, ``fsync`` (where no acknowledged write may
ever be lost), in the configuration where it can show (``bug_write_quorum``: a bug about
quarantining lost writes needs W + Q <= N, where writes can be lost), and stops at its first
failing seed.
"""

from __future__ import annotations

import pytest

from chorusdb.core.modes import CORES
from chorusdb.sim.params import SimConfig
from chorusdb.sim.runner import bug_write_quorum, known_bugs, run_seed

SEEDS_MAX = 200
BUGS = [pytest.param(mode, bug, id=f"{mode}-{bug}") for mode in CORES for bug in known_bugs(mode)]


@pytest.mark.parametrize(("mode", "bug"), BUGS)
def test_known_bug_is_caught(mode: str, bug: str):
    config = SimConfig(mode=mode, durability="fsync", bug=bug,
                       write_quorum=bug_write_quorum(mode, bug))
    for seed in range(1, SEEDS_MAX + 1):
        report = run_seed(config, seed)
        if report.failed:
            print(f"{bug} caught by seed {seed}:\n{report.explain()}")
            return
    pytest.fail(f"{mode} bug {bug} survived {SEEDS_MAX} seeds")


def test_every_mode_lists_the_simulator_bugs():
    for mode in CORES:
        assert "skip_crc_check" in known_bugs(mode)
