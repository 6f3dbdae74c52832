"""One ``chorusdb chaos`` run, start to verdict.

**Phases.**

1. *Start*: the cluster's processes come up and (in leader mode) elect a leader.
2. *Warm-up* (``warmup_s``): the workload runs without faults, so the report can tell a cluster
   that never worked from one that broke.
3. *Faults* (``duration_s``): the nemesis injects the chosen kinds, about one every
   ``interval_s``.
4. *Heal*: the fault in force is undone, every node is back; the workload keeps running for
   ``liveness_s`` and must get some writes acknowledged again.
5. *Quiesce*: the workload stops; every node must report the same log, commit and applied
   positions within ``quiesce_timeout_s`` (a mode that claims convergence).
6. *Final reads*: every key on every node, each node's digest and its divergent table.
7. *Verdict*: ``report.judge`` with the mode's claims (and the session guarantees when the
   clients are ``chorusdb.Client`` sessions). The exit code is 1 on any anomaly the mode
   forbids, or on a liveness or quiesce failure.

Everything a failed run leaves is kept in its artifacts folder: the history (JSON Lines, the
simulator's format: ``chorusdb check`` style tools read it), the nemesis log, every node's log
and data directory, and the report; a run that passes removes it unless asked to keep it.
Every process the run started is stopped on every way out (``ChaosCluster`` owns them).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from chorusdb.chaos.cluster import ChaosCluster
from chorusdb.chaos.nemesis import FaultEvent, Nemesis, leader_and_epoch
from chorusdb.chaos.report import judge, parse_divergent, render
from chorusdb.chaos.workload import ChaosWorkload, FinalReadsIncomplete
from chorusdb.core.leader import LeaderSettings
from chorusdb.core.modes import core_class
from chorusdb.verify.check import SESSION
from chorusdb.verify.history import HistoryRecorder

warmup_s = 3.0
liveness_s = 5.0
liveness_acknowledged_min = 1           # acknowledged writes after heal
quiesce_timeout_s = 30.0
start_timeout_s = 20.0
poll_interval_s = 0.1
request_timeout_s = 5.0                 # one final request to a node
QUIESCED_FIELDS = ("position", "commit_position", "applied_position")


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    mode: str
    nodes: int
    write_quorum: int                   # 0: the mode's default
    duration_s: float
    nemeses: tuple[str, ...]
    interval_s: float
    seed: int
    bug: str
    clients: int
    durability: str
    artifacts_dir: Path | None          # None: a new folder under the system's temp dir
    keep: bool
    session_clients: bool = False       # chorusdb.Client sessions instead of plain connections

    def replay_command(self) -> str:
        parts = [f"chorusdb chaos --mode {self.mode} --nodes {self.nodes}"]
        if self.write_quorum:
            parts.append(f"--write-quorum {self.write_quorum}")
        parts.append(f"--duration {self.duration_s:g} --nemesis {','.join(self.nemeses)}")
        parts.append(f"--interval {self.interval_s:g} --seed {self.seed}")
        if self.durability != "fsync":
            parts.append(f"--durability {self.durability}")
        if self.bug:
            parts.append(f"--bug {self.bug}")
        if self.session_clients:
            parts.append("--client session")
        return " ".join(parts)

    def may_lose(self) -> bool:
        if self.durability == "os":
            return True
        if self.mode != LeaderSettings.mode:
            return False
        return LeaderSettings(write_quorum=self.write_quorum).may_lose_acknowledged_writes(
            self.nodes)


@dataclass(slots=True)
class Outcome:
    valid: bool
    problems: list[str] = field(default_factory=list)
    artifacts: Path | None = None


def _quiesced(cluster: ChaosCluster) -> bool:
    statuses = [cluster.status(n) for n in cluster.node_ids]
    if any(status is None for status in statuses):
        return False
    return len({tuple(json.dumps(s.get(f), sort_keys=True) for f in QUIESCED_FIELDS)
                for s in statuses}) == 1


def _wait(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_interval_s)
    return condition()


def run(settings: ChaosSettings, console: Console) -> Outcome:
    """The whole run (module docstring); what it found, and where the evidence is."""
    workdir = settings.artifacts_dir or Path(tempfile.mkdtemp(prefix="chorusdb-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(settings.seed)
    recorder = HistoryRecorder()
    started_s = time.monotonic()
    claims = core_class(settings.mode).CLAIMS
    if settings.session_clients:
        claims = claims | {SESSION}         # the clients keep session tokens
    has_leader = settings.mode == LeaderSettings.mode
    problems: list[str] = []
    events: list[FaultEvent] = []
    with ChaosCluster(workdir / "cluster", settings.mode, settings.nodes, settings.write_quorum,
                      durability=settings.durability, bug=settings.bug) as cluster:
        cluster.start_all()
        if has_leader and not _wait(lambda: leader_and_epoch(cluster)[0] is not None,
                                    start_timeout_s):
            problems.append(f"no leader was elected within {start_timeout_s:.0f} s of start")
        addresses = {n: cluster.client_address(n) for n in cluster.node_ids}
        workload = ChaosWorkload(addresses, recorder, random.Random(rng.random()),
                                 clients=settings.clients, started_ns=int(started_s * 1e9),
                                 session_clients=settings.session_clients)
        nemesis = Nemesis(cluster, workload.note, random.Random(rng.random()), settings.nemeses,
                          settings.interval_s, started_s, has_leader, events.append)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[line]}"), console=console)
        total_s = warmup_s + settings.duration_s + liveness_s
        task = progress.add_task("chaos", total=total_s, line="")

        def live_line() -> str:
            counts = workload.counts()
            last = events[-1] if events else None
            fault = f"{last.action} {last.kind} {last.detail}" if last else "no fault yet"
            return (f"ok {counts.get('ok', 0)} fail {counts.get('fail', 0)} "
                    f"unknown {counts.get('info', 0)} | faults {sum(nemesis.counts.values())}"
                    f" | {fault}"[:110])

        def phase(name: str, seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                progress.update(task, description=name, completed=time.monotonic() - started_s,
                                line=live_line())
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))

        with Live(progress, console=console, transient=True, refresh_per_second=5):
            workload.start()
            try:
                phase("warm-up", warmup_s)
                nemesis.start()
                phase("faults", settings.duration_s)
                nemesis.heal()
                acknowledged_before = workload.counts().get("ok", 0)
                phase("heal", liveness_s)
            finally:
                nemesis.stop()
                workload.stop()
        if workload.counts().get("ok", 0) < acknowledged_before + liveness_acknowledged_min:
            problems.append(f"liveness: no operation succeeded in the {liveness_s:.0f} s "
                            f"after heal")
        if "convergence" in claims and not _wait(lambda: _quiesced(cluster), quiesce_timeout_s):
            problems.append(f"quiesce: the nodes' positions still differ "
                            f"{quiesce_timeout_s:.0f} s after heal")
        extra_rows = [
            ("faults injected", ", ".join(f"{kind} {count}" for kind, count
                                          in sorted(nemesis.counts.items())) or "none"),
            ("failover times", ", ".join(f"{s * 1000:.0f} ms" for s in nemesis.failover_s)
             or "none measured"),
        ]
        try:
            final_reads = workload.final_reads(addresses)
        except FinalReadsIncomplete as e:
            problems.append(f"final reads: {e}")
            final_reads = None
        verdict = None
        if final_reads is not None:        # without the final state there is nothing to judge
            digests = workload.digests(addresses)
            divergent = {n: parse_divergent(_divergent_entries(addresses[n]))
                         for n in cluster.node_ids}
            verdict = judge(recorder.history, final_reads, digests, settings.mode, claims,
                            divergent, settings.may_lose(), problems=workload.malformed_replies)
            render(verdict, console, [*extra_rows, ("problems", "; ".join(problems) or "none")])
        else:
            for label, value in extra_rows:
                console.print(f"{label}: {value}")
        for problem in problems:
            console.print(f"[red]{problem}[/red]", markup=True, highlight=False)
        valid = verdict is not None and verdict.valid and not problems
        _write_artifacts(workdir, recorder, events, verdict, problems, settings)
    if valid and not settings.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        return Outcome(True, problems, None)
    return Outcome(valid, problems, workdir)


def _divergent_entries(address: tuple[str, int]) -> list:
    """``CHORUS.DIVERGENT LIST ALL`` of one node (every quarantined entry, resolved or not)."""
    client = redis.Redis(host=address[0], port=address[1], protocol=2,
                         socket_timeout=request_timeout_s, retry=Retry(NoBackoff(), 0))
    try:
        return client.execute_command("CHORUS.DIVERGENT", "LIST", "ALL")
    finally:
        client.close()


def _write_artifacts(workdir: Path, recorder: HistoryRecorder, events: list[FaultEvent],
                     verdict, problems: list[str], settings: ChaosSettings) -> None:
    with (workdir / "history.jsonl").open("w") as file:
        recorder.history.write_jsonl(file)
    with (workdir / "nemesis.jsonl").open("w") as file:
        for event in events:
            file.write(json.dumps({"time_s": event.time_s, "action": event.action,
                                   "kind": event.kind, "detail": event.detail}) + "\n")
    witness = verdict.witness if verdict is not None else "(no verdict: no final state)"
    valid = verdict is not None and verdict.valid and not problems
    (workdir / "report.txt").write_text(
        f"replay: {settings.replay_command()}\nvalid: {valid}\nproblems: {problems}\n\n"
        f"{witness}\n")
