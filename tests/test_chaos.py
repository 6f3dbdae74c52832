"""``chorusdb chaos`` end to end, as a user runs it: a real cluster, a minute of faults about
every 5 s, the verdict, and no process left behind — also after Ctrl-C.

Each run is the real command in a subprocess (``python -m chorusdb chaos``), so the
test proves the CLI, the exit codes and the teardown, not just the library.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

CHAOS = [sys.executable, "-m", "chorusdb", "chaos"]
run_timeout_s = 300
interrupt_after_s = 8
pids_wait_s = 30


def chaos(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    artifacts = tmp_path / "artifacts"
    result = subprocess.run([*CHAOS, "--artifacts", str(artifacts), "--keep", *flags],
                            capture_output=True, text=True, timeout=run_timeout_s,
                            env={**os.environ, "COLUMNS": "120"})
    print(result.stdout[-6000:], result.stderr[-3000:])
    assert_nothing_left(artifacts)
    return result


def started_pids(artifacts: Path) -> list[int]:
    return json.loads((artifacts / "cluster" / "pids.json").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in \
        Path(f"/proc/{pid}/status").read_text().lower()


def assert_nothing_left(artifacts: Path) -> None:
    pids = started_pids(artifacts)
    assert pids, "the run recorded no process"
    assert not [pid for pid in pids if alive(pid)], "processes left running"


def test_leader_w2_survives_a_minute_of_every_fault(tmp_path: Path):
    result = chaos(tmp_path, "--mode", "leader", "--nodes", "3", "--write-quorum", "2",
                   "--duration", "60", "--interval", "5", "--seed", "7")
    assert result.returncode == 0, "a forbidden anomaly (see the report above)"
    assert "no forbidden anomaly" in result.stdout


def test_standalone_survives_a_minute_of_every_fault(tmp_path: Path):
    result = chaos(tmp_path, "--mode", "standalone", "--duration", "60", "--interval", "5",
                   "--seed", "7")
    assert result.returncode == 0, "a forbidden anomaly (see the report above)"


def test_an_interrupted_run_leaves_no_process(tmp_path: Path):
    artifacts = tmp_path / "artifacts"
    process = subprocess.Popen([*CHAOS, "--artifacts", str(artifacts), "--keep", "--mode",
                                "leader", "--duration", "60", "--seed", "3"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + pids_wait_s
    while not (artifacts / "cluster" / "pids.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(interrupt_after_s)               # well into the faults
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=run_timeout_s)
    print(output[-3000:])
    assert process.returncode == 130
    assert_nothing_left(artifacts)


def test_leader_sessions_keep_their_guarantees_under_faults(tmp_path: Path):
    """The clients are ``chorusdb.Client`` sessions reading from followers: the history is held
    to the session guarantees too, through kills, partitions, pauses and failovers."""
    result = chaos(tmp_path, "--mode", "leader", "--nodes", "3", "--write-quorum", "2",
                   "--client", "session", "--duration", "45", "--interval", "5", "--seed", "11")
    assert result.returncode == 0, "a forbidden anomaly (see the report above)"
    assert "no forbidden anomaly" in result.stdout
    assert "--client session" in result.stdout        # the replay line names the clients
    assert re.search(r"session\s+0\s+0", result.stdout), "the session checker did not run"


def test_multi_leader_converges_through_every_fault(tmp_path: Path):
    """Every node takes writes while partitions, kills, pauses, restarts and clock skew strike:
    after heal the nodes hold the same data and no append or increment is lost."""
    result = chaos(tmp_path, "--mode", "multi-leader", "--duration", "45", "--interval", "3",
                   "--seed", "11")
    assert result.returncode == 0, "a forbidden anomaly (see the report above)"
    assert re.search(r"convergence\s+0\s+0", result.stdout), "the convergence checker did not run"
    assert re.search(r"lost-writes\s+0\s+0", result.stdout)


def test_multi_leader_without_a_durable_sequence_is_caught(tmp_path: Path):
    """The negative control: a restarted node that numbers its writes from 1 again."""
    result = chaos(tmp_path, "--mode", "multi-leader", "--duration", "30", "--interval", "3",
                   "--nemesis", "kill,restart", "--seed", "5", "--bug", "sequence_not_persisted")
    assert result.returncode != 0 and "INVALID" in result.stdout
