"""One seed, start to verdict: build the world, run chaos, heal, liveness, final reads, checks.

``run_seed(config, seed)`` is deterministic: the same ``SimConfig`` and seed give the same
``SeedReport`` (trace hash included) on any machine and under any ``PYTHONHASHSEED``.

**Phases.**

1. *Chaos* (``SeedParams.chaos_us``): clients run their operations while the nemesis injects the
   seed's faults.
2. *Heal*: partitions and storms end, paused nodes resume, downed nodes boot, and every node is
   restarted once more (a SIGKILL, which loses nothing).
3. *Liveness* (bounded by ``SeedParams.liveness_us``): every client worker must complete
   ``liveness_ok_operations`` successful operations, every node must go idle and, in a mode
   that claims convergence, every node must report the same log, commit and applied positions
   (``QUIESCED_FIELDS``: followers caught up; in multi-leader mode, whose nodes log the same
   writes in different orders, the version vectors too); a worker that
   cannot is a liveness failure (and the seed stops there: without a quiesced cluster there is
   no final state to judge).
4. *Final reads*: every key ever used is read on every node with a local read (proposed
   straight to the core, no network) and recorded in the history, and every node is asked for
   ``CHORUS.DIGEST`` of all its data: digests must agree (convergence; trivial with one node,
   still checked).
5. *Checks*: ``verify.check_with_damage`` with the mode's claims, the final state, the loss
   windows and the damaged keys.

**Loss windows** (durability ``"os"`` only). With ``"os"`` a node acknowledges a write once it
is in the page cache, so a power loss may take acknowledged writes: those written after the
node's last sync. Every power loss is noted in the history (``power_loss``: its last sync, the
crash, what was lost). When a power loss under ``"os"`` drops or tears records, the run declares
a loss window for that node from its last sync to the crash, plus one client timeout (a reply
sent just before the crash may still be on its way), writes it into the history as a
``loss-window`` note (a saved history re-checks alone) and hands it to the lost-writes checker,
which reports the losses it covers as *allowed* (attributed) rather than failures. In a
cluster the window covers every node's acknowledgements: the lost copy may have been a
follower's, one of the W copies behind a write the leader acknowledged.

**Quarantined losses** (leader mode with W + Q <= N, or durability ``"os"``). A failover there
may drop acknowledged writes, but never silently: after the final reads, every entry in any
node's ``divergent`` table that its leader had acknowledged (the cores emit
``WriteAcknowledged`` notes in leader mode) becomes a loss window of that acknowledgement plus
one client timeout, and every quarantined entry's keys count as damaged (a read on its leader
may have shown it). A lost write no table holds is still a failure: that is the negative
control the ``drop_divergent`` bug proves.

The keys that the dropped records wrote (the simulator knows them exactly: it handed those
records to the store) are the keys whose operations overlap the window *and* actually lost
something. On them the claims about what reads showed are not held (linearizability with
list-append's rules, consistent prefix, the session guarantees), because a correct node may have
shown a value that it then forgot; they keep the rules that hold regardless: no element twice,
no value that nobody wrote. Every other key keeps every claim. Under ``"fsync"`` no window is ever declared:
every acknowledged write must survive every crash.

**Failures** of a seed: an unexplained anomaly from a checker, an online invariant violated
(``invariants``), a reply of the wrong shape, a liveness failure, or an exception anywhere in the
run (an assertion inside a core, a store that cannot recover, an exhausted event budget), which
stops the run and is reported with where it was raised.
"""

from __future__ import annotations

import traceback
from functools import partial
from dataclasses import dataclass, field

from chorusdb.core.api import (
    ClientCommand,
    ClientReply,
    Committed,
    CoreConfig,
    Probe,
    Ready,
    WriteAcknowledged,
)
from chorusdb.core.causal import LWW
from chorusdb.core.leader import LeaderSettings
from chorusdb.core.multileader import MultiLeaderCore, MultiLeaderSettings
from chorusdb.core.multileader_keyspace import KeyPolicy
from chorusdb.core.model import Position, RecoveredState
from chorusdb.core.modes import core_class
from chorusdb.replies import DEFINITE_ERROR_CLASSES, Error
from chorusdb.sim.clock import NodeClock
from chorusdb.sim.invariants import Invariants
from chorusdb.sim.nemesis import Nemesis
from chorusdb.sim.network import Network
from chorusdb.sim.node import SimNode, effect_keys
from chorusdb.sim.params import SeedParams, SimConfig
from chorusdb.sim.workload import Workload, read_command
from chorusdb.sim.world import World
from chorusdb.storage.memory_store import CrashReport, MemoryStore
from chorusdb.verify.check import CLAIMS, CONVERGENCE, FinalState, check_with_damage
from chorusdb.verify.history import HistoryRecorder
from chorusdb.verify.lost_writes import LOSS_WINDOW_NOTE, LossWindow
from chorusdb.verify.render import render_results
from chorusdb.verify.result import CheckResult

DIGEST_COMMAND = ClientCommand(b"CHORUS.DIGEST", ())
# Quiesced, in a mode that claims convergence: every node's status agrees on these (a replica
# has caught up with its leader).
QUIESCED_FIELDS = ("position", "commit_position", "applied_position", "vector")
SIM_LWW_PREFIXES = (b"reg-1", b"reg-3", b"reg-5", b"reg-7", b"reg-9")   # multi-leader: lww
events_per_seed_max = 1_000_000     # a seed runs ~20-40 k; more means something spins
traceback_frames_max = 12            # innermost frames shown when a run raises
final_reads_us_max = 5_000_000       # local reads must all be answered within this
final_read_attempts_max = 20         # a final read refused this often is recorded as refused
final_read_retry_us = 100_000        # wait before asking a refused final read again
clock_epoch_ms = 1_700_000_000_000   # every node's clock starts near this wall time
SIM_BUGS = {
    "skip_crc_check": "the in-memory store replays storage records without checking their CRC",
}


def core_settings(config: SimConfig, params: SeedParams) -> object:
    """The mode's own settings for a run (``CoreConfig.settings``)."""
    if config.mode == LeaderSettings.mode:
        return LeaderSettings(write_quorum=config.write_quorum,
                              log_retention_entries=params.log_retention_entries,
                              log_hold_entries_max=params.log_retention_entries)
    assert not config.write_quorum, "--write-quorum is a leader-mode setting"
    if config.mode == MultiLeaderCore.mode:
        # About half of the registers resolve by timestamp and the others keep siblings, so
        # every seed exercises both policies.
        return MultiLeaderSettings(policies=tuple(KeyPolicy(prefix, LWW)
                                                  for prefix in SIM_LWW_PREFIXES))
    return None


def bug_write_quorum(mode: str, bug: str) -> int:
    """The write quorum under which ``bug`` shows (0: the mode's default)."""
    return getattr(core_class(mode), "BUG_WRITE_QUORUMS", {}).get(bug, 0)


def known_bugs(mode: str) -> dict[str, str]:
    """Every bug the simulator can switch on in ``mode``: the core's and its own."""
    return {**core_class(mode).KNOWN_BUGS, **SIM_BUGS}


@dataclass(slots=True)
class SeedReport:
    """What one seed did and found; ``failed`` when anything is left unexplained."""

    seed: int
    config: SimConfig
    trace_hash: str = ""
    operations: int = 0                     # in the history: client operations, final reads
    outcomes: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)   # checker -> unexplained
    allowed: dict[str, int] = field(default_factory=dict)     # checker -> attributed
    problems: list[str] = field(default_factory=list)         # invariants, liveness, errors
    probes: dict[str, int] = field(default_factory=dict)
    witness: str = ""
    events: int = 0
    virtual_s: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.problems or any(self.anomalies.values()))

    def headline(self) -> str:
        """One line: the seed and what failed."""
        found = [f"{name}={count}" for name, count in self.anomalies.items() if count]
        found += self.problems[:1]
        return f"seed {self.seed} FAILED: {'; '.join(found)}"

    def explain(self) -> str:
        """Everything a person needs: what failed, the witness, and the replay command."""
        parts = [self.headline(), *self.problems]
        if self.witness:
            parts.append(self.witness)
        parts.append(f"replay: {self.config.replay_command(self.seed)}")
        return "\n".join(parts)


class _Observer:
    """Hooks every node calls: online invariants, probes, history notes, loss windows."""

    def __init__(self, run: SeedRun) -> None:
        self.run = run
        self.invariants = Invariants()

    def on_ready(self, node: SimNode, ready: Ready) -> None:
        self.invariants.on_ready(node, ready)

    def on_carried_out(self, node: SimNode, ready: Ready) -> None:
        self.invariants.on_carried_out(node)
        world = self.run.world
        for note in ready.notes:
            kind = type(note)
            if kind is Probe:
                world.probe(note.name)
            elif kind is WriteAcknowledged:
                self.run.acknowledged_at_us[(node.node_id, note.position)] = world.now_us
            elif kind is not Committed:
                world.trace("note", node.node_id, note)
                self.run.recorder.note(node.node_id, type(note).__name__, repr(note),
                                       time=world.now_us * 1000, node=node.node_id)

    def on_sync(self, node: SimNode) -> None:
        self.invariants.on_sync(node)

    def on_crash(self, node: SimNode, report: CrashReport,
                 lost_keys: frozenset[bytes] | None) -> None:
        self.invariants.on_crash(node, report.power_loss)
        run = self.run
        world = run.world
        if report.pending_lost:
            world.probe("unsynced_records_lost")
        if report.torn:
            world.probe("torn_write")
        if report.power_loss:
            run.recorder.note(node.node_id, "power_loss",
                              {"last_sync": node.last_sync_us * 1000, "crash": world.now_us * 1000,
                               "records_lost": report.pending_lost, "torn": report.torn},
                              time=world.now_us * 1000, node=node.node_id)
        if report.power_loss and run.config.durability == "os" and lost_keys != frozenset():
            # A reply sent before the crash may reach its client up to a timeout later.
            reply_in_flight_us = run.params.workload.timeout_us
            # In a cluster the lost copy may be a follower's, part of the W copies behind an
            # acknowledgement any member gave; a failover can then drop the write.
            window = LossWindow(node=node.node_id if len(run.nodes) == 1 else None,
                                start_time=node.last_sync_us * 1000,
                                end_time=(world.now_us + reply_in_flight_us) * 1000,
                                reason=f"power loss on {node.node_id}, durability=os")
            run.loss_windows.append(window)
            run.damaged_keys = None if lost_keys is None or run.damaged_keys is None \
                else run.damaged_keys | lost_keys
            run.recorder.note(node.node_id, LOSS_WINDOW_NOTE,
                              {"node": window.node, "start_time": window.start_time,
                               "end_time": window.end_time, "reason": window.reason},
                              time=world.now_us * 1000, node=node.node_id)

    def on_disk_lost(self, node: SimNode) -> None:
        self.invariants.on_disk_lost(node)

    def on_restart(self, node: SimNode, recovered: RecoveredState) -> None:
        self.invariants.on_restart(node, recovered)
        report = node.store.last_recovery
        if report.torn_detected:
            self.run.world.probe("torn_record_recovered")
        if report.records_dropped:
            self.run.world.probe("records_dropped_on_recovery")


class SeedRun:
    """The pieces of one seed's world and the phases that drive them."""

    def __init__(self, config: SimConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.world = world = World(seed, events_per_seed_max)
        self.params = params = SeedParams.draw(config, world.streams["params"])
        self.recorder = HistoryRecorder()
        self.loss_windows: list[LossWindow] = []
        # (leader, position) -> when it acknowledged the write there (leader mode, where
        # W + Q <= N may lose acknowledged writes that a failover then quarantines).
        self.acknowledged_at_us: dict[tuple[str, Position], int] = {}
        # Keys written by records a loss dropped (None: every key, a dropped record cleared all).
        self.damaged_keys: frozenset[bytes] | None = frozenset()
        self.observer = _Observer(self)
        self.network = Network(world)
        node_ids = tuple(f"n{number}" for number in range(1, config.node_count + 1))
        mode_class = core_class(config.mode)
        core_bugs = frozenset({config.bug}) & mode_class.KNOWN_BUGS.keys()
        clocks = world.streams["clocks"]
        self.nodes: dict[str, SimNode] = {}
        for node_id in node_ids:
            skew_us = clocks.randint(-params.clock_skew_us_max, params.clock_skew_us_max)
            drift_ppm = clocks.randint(-params.clock_drift_ppm_max, params.clock_drift_ppm_max)
            self.nodes[node_id] = SimNode(
                world=world, network=self.network, core_class=mode_class,
                config=CoreConfig(node_id=node_id, members=node_ids, bugs=core_bugs,
                                  settings=core_settings(config, params),
                                  history_notes=config.mode == LeaderSettings.mode),
                store=MemoryStore(durability=config.durability,
                                  verify_crc=config.bug != "skip_crc_check"),
                clock=NodeClock(clock_epoch_ms * 1000 + skew_us, drift_ppm),
                durability=config.durability, disk=params.disk, observer=self.observer)
        self.workload = Workload(world=world, network=self.network, recorder=self.recorder,
                                 node_ids=node_ids, shape=params.workload)
        clients = tuple(client.endpoint for client in self.workload.clients)
        for source in node_ids:
            for target in node_ids:
                if source != target:
                    self.network.set_link(source, target, params.peer_link)
            for client in clients:
                self.network.set_link(client, source, params.client_link)
                self.network.set_link(source, client, params.client_link)
        self.nemesis = Nemesis(world=world, network=self.network, nodes=self.nodes,
                               clients=clients, params=params, recorder=self.recorder)
        self.final_reads: dict[str, dict[bytes, object]] = {node_id: {} for node_id in node_ids}
        self._final_reads_expected = 0
        self.node_digests: dict[str, str] = {}

    # --- phases -------------------------------------------------------------------------------

    def chaos(self) -> None:
        for node in self.nodes.values():
            node.start()
        self.workload.start()
        self.nemesis.start()
        self.world.run_until(self.params.chaos_us)

    def heal_and_wait(self) -> list[str]:
        """Heal, then run until every worker made progress and every node is idle."""
        self.nemesis.heal()
        self.workload.start_liveness()
        deadline_us = self.world.now_us + self.params.liveness_us
        self.world.run_until(deadline_us, done=self._settled)
        if self._settled():
            return []
        stuck = [c.endpoint for c in self.workload.clients if not c.finished]
        busy = [n.node_id for n in self.nodes.values() if not n.is_idle()]
        positions = "; ".join(
            f"{n.node_id} " + " ".join(f"{name}={_show_position(status.get(name))}"
                                       for name in QUIESCED_FIELDS)
            for n, status in ((n, n.core.status()) for n in self.nodes.values() if n.is_up))
        return [f"liveness: {self.params.liveness_us / 1e6:.0f} s after heal, workers "
                f"{stuck or 'all done'} lacked successes, nodes {busy or 'all idle'} were busy; "
                f"{positions}"]

    def _settled(self) -> bool:
        if not (self.workload.liveness_reached()
                and all(n.is_idle() for n in self.nodes.values())):
            return False
        if CONVERGENCE not in claims_of(self.config.mode):
            return True             # replicas need not catch up with each other
        positions = {tuple(repr(status.get(name)) for name in QUIESCED_FIELDS)
                     for status in (n.core.status() for n in self.nodes.values())}
        return len(positions) == 1

    def read_final_state(self) -> list[str]:
        """Read every key on every node; returns the problems (unanswered reads)."""
        workload = self.workload
        expected = 0
        for node_id, node in self.nodes.items():
            for key, kind in sorted(workload.keys.kinds.items()):
                expected += 1
                _FinalRead(self, node_id, key, kind).start()
            node.propose_locally(workload.new_request_id(), DIGEST_COMMAND,
                                 partial(self._digest_answered, node_id))
        self._final_reads_expected = expected
        self.world.run_until(self.world.now_us + final_reads_us_max, done=self._all_answered)
        if self._all_answered():
            return []
        answered = sum(len(reads) for reads in self.final_reads.values()) + len(self.node_digests)
        expected += len(self.nodes)
        return [f"final reads: {expected - answered} of {expected} unanswered within "
                f"{final_reads_us_max / 1e6:.0f} s"]

    def _all_answered(self) -> bool:
        answered = sum(len(reads) for reads in self.final_reads.values())
        return (answered == self._final_reads_expected
                and len(self.node_digests) == len(self.nodes))

    def _digest_answered(self, node_id: str, reply: ClientReply) -> None:
        value = reply.value
        self.node_digests[node_id] = value.decode() if isinstance(value, bytes) else repr(value)

    def digests(self) -> dict[str, str]:
        """Per node, the digest of all its live data (``CHORUS.DIGEST``), read after heal."""
        return dict(self.node_digests)


@dataclass(slots=True)
class _FinalRead:
    """One key read on one node after heal; a definite refusal (the node is not sure its data
    is committed yet, or it just stopped leading) is recorded as failed and asked again."""

    run: SeedRun
    node_id: str
    key: bytes
    kind: str
    process: int = -1
    attempts: int = 0

    def start(self) -> None:
        run = self.run
        workload = run.workload
        f, command = read_command(self.kind, self.key)
        self.process = workload.new_process()
        self.attempts += 1
        run.recorder.invoke(self.process, f, self.key, time=run.world.now_us * 1000,
                            node=self.node_id)
        run.nodes[self.node_id].propose_locally(workload.new_request_id(), command, self.answer)

    def answer(self, reply: ClientReply) -> None:
        run = self.run
        value = reply.value
        time = run.world.now_us * 1000
        if isinstance(value, Error) and value.error_class in DEFINITE_ERROR_CLASSES \
                and self.attempts < final_read_attempts_max:
            run.recorder.fail(self.process, time=time, error=value.text, node=self.node_id)
            run.world.after(final_read_retry_us, self.start)
            return
        result = tuple(value) if isinstance(value, list) else value
        run.final_reads[self.node_id][self.key] = result
        run.recorder.ok(self.process, time=time, value=result, node=self.node_id)


def run_seed(config: SimConfig, seed: int) -> SeedReport:
    """Run one seed; see the module docstring."""
    report = SeedReport(seed=seed, config=config)
    run = SeedRun(config, seed)
    try:
        run.chaos()
        report.problems += run.heal_and_wait()
        if not report.problems:          # without liveness there is no final state to judge
            report.problems += run.read_final_state()
        if not report.problems:
            _check(run, report)
    except Exception as error:      # the seed failed; say where, then report what was seen
        frame = traceback.extract_tb(error.__traceback__)[-1]
        report.problems.append(f"{type(error).__name__} at {frame.filename.rsplit('/', 1)[-1]}:"
                               f"{frame.lineno} ({frame.name}): {error}")
        report.witness = "".join(traceback.format_exception(error, limit=-traceback_frames_max))
    report.problems += run.observer.invariants.violations
    report.problems += [f"malformed reply: {text}" for text in run.workload.malformed_replies]
    _summarise(run, report)
    return report


def _show_position(position: object) -> str:
    if isinstance(position, dict) and position.keys() == {"epoch", "index"}:
        return f"{position['epoch']}:{position['index']}"
    return repr(position)


def claims_of(mode: str) -> frozenset[str]:
    """What ``mode`` promises: its core class's ``CLAIMS`` (part of the core contract)."""
    claims = core_class(mode).CLAIMS
    assert claims <= CLAIMS, f"{mode} claims unknown properties {sorted(claims - CLAIMS)}"
    return claims


def _quarantined_losses(run: SeedRun) -> None:
    """With W + Q <= N, or durability "os" (a power loss takes a follower's copy), a failover
    may lose acknowledged writes, but each must then sit in some
    node's ``divergent`` table: each quarantined entry that was acknowledged becomes a loss
    window (that acknowledgement, plus a client timeout for the reply in flight). Every
    quarantined entry damages its keys, acknowledged or not: a read on its leader may have
    shown it. A lost write that no table holds stays a failure."""
    settings = core_settings(run.config, run.params)
    if not isinstance(settings, LeaderSettings) or not (
            run.config.durability == "os"       # a follower's power loss may take its copy
            or settings.may_lose_acknowledged_writes(len(run.nodes))):
        return
    reply_in_flight_us = run.params.workload.timeout_us
    for node in run.nodes.values():
        for item in node.core.divergent:
            keys = effect_keys(item.entry.effect)
            run.damaged_keys = None if keys is None or run.damaged_keys is None \
                else run.damaged_keys | frozenset(keys)
            acknowledged_us = run.acknowledged_at_us.get((item.leader, item.entry.position))
            if acknowledged_us is None:
                continue            # never acknowledged: nobody was told, nothing to excuse
            window = LossWindow(node=None, start_time=acknowledged_us * 1000,
                                end_time=(acknowledged_us + reply_in_flight_us) * 1000,
                                reason=f"W + Q <= N: {item.entry.position} quarantined on "
                                       f"{node.node_id}")
            run.loss_windows.append(window)
            run.world.probe("acknowledged_write_quarantined")
            run.recorder.note(node.node_id, LOSS_WINDOW_NOTE,
                              {"node": window.node, "start_time": window.start_time,
                               "end_time": window.end_time, "reason": window.reason},
                              time=run.world.now_us * 1000, node=node.node_id)


def _check(run: SeedRun, report: SeedReport) -> None:
    """Run the mode's checkers; keys damaged inside a loss window get the weaker set (module
    docstring)."""
    _quarantined_losses(run)
    history = run.recorder.history
    first_node = next(iter(run.final_reads))
    final_state = FinalState(values=run.final_reads[first_node], digests=run.digests(),
                             dumps=run.final_reads)
    results = check_with_damage(history, final_state=final_state,
                                claims=claims_of(run.config.mode),
                                loss_windows=run.loss_windows, damaged=run.damaged_keys)
    failing: list[CheckResult] = []
    for result in results:
        report.anomalies[result.name] = report.anomalies.get(result.name, 0) + len(
            result.anomalies)
        if result.allowed:
            report.allowed[result.name] = report.allowed.get(result.name, 0) + len(
                result.allowed)
        if not result.valid:
            failing.append(result)
    report.witness = render_results(failing)


def _summarise(run: SeedRun, report: SeedReport) -> None:
    world = run.world
    report.trace_hash = world.trace_hash()
    report.faults = dict(run.nemesis.counts)
    report.probes = dict(world.probes)
    report.events = world.events_run
    report.virtual_s = world.now_us / 1e6
    outcomes: dict[str, int] = {}
    operations = run.recorder.history.operations()
    for operation in operations:
        outcomes[operation.status] = outcomes.get(operation.status, 0) + 1
    report.operations = len(operations)      # client operations and final reads
    report.outcomes = outcomes
