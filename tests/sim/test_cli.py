"""``chorusdb sim`` and ``python -m chorusdb.sim``: arguments, output and exit codes."""

from __future__ import annotations

import argparse
import subprocess
import sys

from chorusdb.cli import sim
from chorusdb.sim.runner import known_bugs


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chorusdb")
    sim.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sim", *argv])


def test_a_passing_sweep_prints_the_summary_and_exits_0(capsys):
    args = parse("--mode", "standalone", "--seeds", "5")
    assert args.func is sim.run
    assert sim.run(args) == 0
    out = capsys.readouterr().out
    assert "5 run, 0 failed" in out
    for row in ("operations", "faults", "anomalies", "probes"):
        assert row in out


def test_a_caught_bug_prints_the_seed_the_witness_and_the_replay_command(capsys):
    code = sim.run(parse("--mode", "standalone", "--seed", "1", "--bug", "del_not_persisted"))
    captured = capsys.readouterr()
    assert code == 1
    assert "seed 1 FAILED" in captured.out
    assert "#" in captured.out                       # history records of the witness
    assert ("replay: chorusdb sim --mode standalone --seed 1 --seeds 1 --durability fsync "
            "--bug del_not_persisted") in captured.out.replace("\n", " ")


def test_list_bugs_prints_one_name_per_line(capsys):
    assert sim.run(parse("--mode", "standalone", "--list-bugs")) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == list(known_bugs("standalone"))
    assert "skip_crc_check" in known_bugs("standalone")


def test_bad_usage_exits_2(capsys):
    assert sim.run(parse("--mode", "nosuchmode", "--seeds", "1")) == 2
    assert sim.run(parse("--mode", "standalone", "--bug", "nosuchbug")) == 2
    assert sim.run(parse("--mode", "standalone", "--faults", "crash,meteor")) == 2
    assert "meteor" in capsys.readouterr().err
    assert sim.run(parse("--mode", "standalone", "--nodes", "3", "--seeds", "1")) == 2
    assert "--nodes" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run([sys.executable, "-m", "chorusdb.sim", "--mode", "standalone",
                             "--list-bugs"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.split() == list(known_bugs("standalone"))
