"""Scenario tests of the leader-mode core: a small in-process cluster over in-memory stores,
messages delivered by hand, so each test shows one rule of the protocol exactly.

The simulator tests the same core under faults over hundreds of seeds; these pin down the
behaviours a reader of ``core/leader.py`` should be able to check one by one.
"""

from __future__ import annotations

import random

import pytest

from chorusdb.core.api import ClientCommand, CoreConfig
from chorusdb.core.leader import LeaderCore, LeaderSettings, base_refusals_max
from chorusdb.core.leader_messages import Append, AppendReply, SnapshotChunk
from chorusdb.core.model import (
    ZERO_POSITION,
    LogEntry,
    Position,
    PutMeta,
    ResetLog,
    SetValue,
)
from chorusdb.replies import OK, Error
from chorusdb.storage.memory_store import MemoryStore

T0 = 1_700_000_000_000
MEMBERS = ("n1", "n2", "n3")


def command(*parts: str) -> ClientCommand:
    return ClientCommand(parts[0].upper().encode(), tuple(p.encode() for p in parts[1:]))


class Cluster:
    """Cores over in-memory stores; ``run`` carries out Readys and delivers messages until
    quiet, except on links that ``cut`` blocks."""

    def __init__(self, members=MEMBERS, **settings) -> None:
        self.members = members
        self.settings = LeaderSettings(**settings)
        self.now = T0
        self.stores = {m: MemoryStore() for m in members}
        self.cores: dict[str, LeaderCore] = {}
        self.replies: dict[int, object] = {}
        self.positions: dict[int, Position | None] = {}
        self.stale: dict[int, bool] = {}
        self.cut: set[tuple[str, str]] = set()
        self.in_flight: list[object] = []
        self.sent: list[object] = []
        self.starts = 0
        for member in members:
            self.start(member)

    def start(self, member: str, bugs: frozenset[str] = frozenset()) -> None:
        config = CoreConfig(member, self.members, bugs=bugs, settings=self.settings)
        self.starts += 1                # each process draws its own numbers
        self.cores[member] = LeaderCore(config, self.stores[member].recover(),
                                        random.Random(f"{member}/{self.starts}"), self.now)

    def propose(self, member: str, request_id: int, *parts: str) -> None:
        self.cores[member].propose(command(*parts), request_id, self.now)

    def run(self, rounds_max: int = 200) -> None:
        for _ in range(rounds_max):
            busy = False
            for member, core in self.cores.items():
                while core.has_ready():
                    busy = True
                    ready = core.ready()
                    self.stores[member].commit(ready.writes)
                    self.sent.extend(ready.messages)
                    self.in_flight.extend(m for m in ready.messages
                                          if (m.source, m.target) not in self.cut)
                    for reply in ready.replies:
                        self.replies[reply.request_id] = reply.value
                        self.positions[reply.request_id] = reply.position
                        self.stale[reply.request_id] = reply.stale
                    core.advance(ready)
            messages, self.in_flight = self.in_flight, []
            for message in messages:
                busy = True
                self.cores[message.target].step(message, self.now)
            if not busy:
                return
        raise AssertionError("the cluster did not go quiet")

    def advance_time(self, ms: int) -> None:
        """Let ``ms`` pass in heartbeat-sized steps (a leader whose followers answer each
        heartbeat keeps leading; one jump longer than an election timeout would not)."""
        step_ms = self.settings.heartbeat_interval_ms
        while ms > 0:
            self.now += min(ms, step_ms)
            ms -= step_ms
            for core in self.cores.values():
                core.tick(self.now)
            self.run()

    def settle(self) -> None:
        """Let heartbeats carry the commit position everywhere."""
        for _ in range(3):
            self.advance_time(self.settings.heartbeat_interval_ms)


def ready_cluster(**settings) -> Cluster:
    cluster = Cluster(**settings)
    cluster.run()
    cluster.settle()            # followers have answered: the leader has quorum contact
    return cluster


def test_a_write_is_acknowledged_once_w_members_hold_it():
    cluster = ready_cluster(write_quorum=3)
    cluster.cut = {("n1", "n3")}
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.run()
    assert 1 not in cluster.replies            # only two of the three hold it
    cluster.cut = set()
    cluster.advance_time(cluster.settings.append_resend_ms)
    assert cluster.replies[1] == OK
    assert cluster.positions[1] == Position(1, 2)      # after the leader's EpochStart at 1:1
    for member in MEMBERS:
        assert cluster.stores[member].recover().last_position == Position(1, 2)


def test_semi_sync_moves_to_whichever_follower_answers():
    cluster = ready_cluster(write_quorum=2)
    for request_id, down in ((1, "n2"), (2, "n3")):
        cluster.cut = {("n1", down), (down, "n1")}
        cluster.propose("n1", request_id, "SET", "k", str(request_id))
        cluster.run()
        assert cluster.replies[request_id] == OK


def test_followers_apply_only_committed_entries_and_answer_reads_stale():
    cluster = ready_cluster(write_quorum=3)
    cluster.cut = {("n1", "n3")}
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.run()
    cluster.advance_time(cluster.settings.heartbeat_interval_ms)
    cluster.propose("n2", 2, "GET", "k")
    cluster.run()
    assert cluster.replies[2] is None          # n2 holds the entry, but it is not committed
    assert cluster.stale[2] is True
    cluster.cut = set()
    cluster.advance_time(cluster.settings.append_resend_ms)
    cluster.settle()
    cluster.propose("n2", 3, "GET", "k")
    cluster.run()
    assert cluster.replies[3] == b"v"


def test_a_leader_read_waits_for_the_commit_of_what_it_saw():
    cluster = ready_cluster(write_quorum=2)
    cluster.cut = {("n1", "n2"), ("n1", "n3")}
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.propose("n1", 2, "GET", "k")
    cluster.run()
    assert 1 not in cluster.replies and 2 not in cluster.replies
    cluster.cut = set()
    cluster.advance_time(cluster.settings.append_resend_ms)
    assert cluster.replies[1] == OK and cluster.replies[2] == b"v"


def test_unconfirmed_write_is_indoubt_and_a_write_without_quorum_contact_is_refused():
    # W = 3 > N - Q + 1 = 2: with n3 cut off the leader still leads (n2 answers), but it
    # cannot gather W copies.
    cluster = ready_cluster(write_quorum=3, write_timeout_ms=500, quorum_contact_ms=1000)
    cluster.cut = {("n1", "n3"), ("n3", "n1")}
    cluster.propose("n1", 1, "INCR", "counter")
    cluster.run()
    cluster.advance_time(500)
    assert isinstance(cluster.replies[1], Error)
    assert cluster.replies[1].error_class == "INDOUBT"
    cluster.advance_time(1000)                 # n3 did not answer for longer than 1 s
    cluster.propose("n1", 2, "SET", "k", "v")
    cluster.run()
    assert cluster.replies[2].error_class == "NOQUORUM"
    assert cluster.cores["n1"].role == "leader"


def test_follower_writes_are_forwarded_or_redirected():
    cluster = ready_cluster(client_addresses=(("n1", "127.0.0.1:7001"),))
    cluster.propose("n2", 1, "RPUSH", "list", "a")
    cluster.run()
    assert cluster.replies[1] == 1
    assert cluster.positions[1] == Position(1, 2)
    redirect = ready_cluster(follower_writes="redirect",
                             client_addresses=(("n1", "127.0.0.1:7001"),))
    redirect.propose("n3", 1, "SET", "k", "v")
    redirect.run()
    assert redirect.replies[1] == Error("NOTLEADER n1 127.0.0.1:7001")


def test_a_duplicated_forward_is_applied_once():
    cluster = ready_cluster()
    cluster.propose("n2", 1, "RPUSH", "list", "a")
    ready = cluster.cores["n2"].ready()
    cluster.cores["n2"].advance(ready)
    forward, = ready.messages
    for _ in range(2):
        cluster.cores["n1"].step(forward, cluster.now)
    cluster.run()
    cluster.propose("n1", 2, "LRANGE", "list", "0", "-1")
    cluster.advance_time(1)                     # a leader read waits for a confirming round
    assert cluster.replies[2] == [b"a"]


def test_wait_counts_followers_holding_the_position_and_waitpos_waits_for_it():
    cluster = ready_cluster(write_quorum=1)
    cluster.cut = {("n1", "n3")}
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.run()
    cluster.propose("n1", 2, "CHORUS.WAITREPLICAS", "2", "100", "1", "2")
    cluster.run()
    assert 2 not in cluster.replies
    cluster.advance_time(100)
    assert cluster.replies[2] == 1
    cluster.propose("n3", 3, "CHORUS.WAITPOS", "1", "2", "1000")
    cluster.run()
    assert 3 not in cluster.replies
    cluster.cut = set()
    cluster.advance_time(cluster.settings.append_resend_ms)   # within the wait's timeout
    cluster.settle()
    assert cluster.replies[3] == OK
    cluster.propose("n3", 4, "CHORUS.WAITPOS", "1", "9", "10")
    cluster.advance_time(10)
    assert cluster.replies[4].error_class == "TRYAGAIN"


def test_a_gap_is_refused_and_resent_in_order():
    cluster = ready_cluster(write_quorum=1)
    cluster.cut = {("n1", "n2")}
    cluster.propose("n1", 1, "RPUSH", "l", "a")
    cluster.run()
    cluster.propose("n1", 2, "RPUSH", "l", "b")
    cluster.cut = set()
    cluster.run()                               # n2 sees entry 2 first: a gap, refused
    refusals = [m for m in cluster.sent if type(m) is AppendReply and not m.accepted]
    assert [(m.source, m.hint) for m in refusals] == [("n2", Position(1, 1))]
    cluster.settle()
    assert cluster.cores["n2"].applied == Position(1, 3)
    cluster.propose("n2", 3, "LRANGE", "l", "0", "-1")
    cluster.run()
    assert cluster.replies[3] == [b"a", b"b"]


@pytest.mark.parametrize("lost_data", [False, True])
def test_a_follower_behind_retention_is_reseeded_by_snapshot(lost_data: bool):
    cluster = ready_cluster(write_quorum=2, log_retention_entries=5, log_hold_entries_max=10)
    cluster.cut = {("n1", "n3"), ("n3", "n1")}
    for i in range(30):
        cluster.propose("n1", i, "SET", f"k{i % 7}", str(i))
        cluster.run()
    cluster.advance_time(1000)                 # retention runs: the log keeps 5..10 entries
    leader = cluster.cores["n1"]
    assert leader.log.first_index > 2
    if lost_data:
        cluster.stores["n3"] = type(cluster.stores["n3"])()
        cluster.start("n3")
    cluster.cut = set()
    cluster.settle()
    cluster.advance_time(cluster.settings.append_resend_ms)
    cluster.settle()
    follower = cluster.cores["n3"]
    assert follower.counters["snapshots_installed"] == 1
    assert follower.keyspace.digest(cluster.now) == leader.keyspace.digest(cluster.now)
    status = leader.status()["members"]
    assert [m["reseeds"] for m in status if m["id"] == "n3"] == [1]
    assert "log starts at" in [m["reseed_reason"] for m in status if m["id"] == "n3"][0]
    restarted = cluster.stores["n3"].recover()
    assert restarted.last_position == follower.log.last


def test_a_corrupt_snapshot_chunk_is_refused_and_sent_again():
    cluster = ready_cluster(write_quorum=2, log_retention_entries=2, log_hold_entries_max=2)
    cluster.cut = {("n1", "n3"), ("n3", "n1")}
    for i in range(10):
        cluster.propose("n1", i, "SET", f"k{i}", str(i))
        cluster.run()
    cluster.advance_time(1000)
    cluster.cut = {("n1", "n3")}
    cluster.advance_time(cluster.settings.heartbeat_interval_ms)
    chunks = [m for m in cluster.sent if type(m) is SnapshotChunk and m.target == "n3"]
    assert chunks
    bad = chunks[-1]
    corrupt = SnapshotChunk(bad.source, bad.target, bad.epoch, bad.snapshot, bad.chunk,
                            bad.chunks, b"x" + bad.data[1:], bad.crc)
    cluster.cores["n3"].step(corrupt, cluster.now)
    cluster.run()
    assert cluster.cores["n3"].counters["snapshots_installed"] == 0
    cluster.cut = set()
    cluster.advance_time(1000)
    cluster.settle()
    assert cluster.cores["n3"].counters["snapshots_installed"] == 1


def test_an_append_from_an_older_epoch_is_refused_and_told_the_epoch():
    cluster = ready_cluster()
    follower = cluster.cores["n2"]
    stale = Append("n3", "n2", 0, Position(0, 0), (), Position(1, 5), Position(1, 5),
                   cluster.now)
    follower.step(stale, cluster.now)
    assert follower.commit < Position(1, 5)
    answer, = follower.ready().messages
    assert (answer.target, answer.epoch, answer.accepted) == ("n3", 1, False)


def test_a_follower_bounds_the_writes_it_has_forwarded(monkeypatch):
    monkeypatch.setattr("chorusdb.core.leader.forwards_pending_max", 1)
    cluster = ready_cluster()
    cluster.cut = {("n2", "n1")}
    cluster.propose("n2", 1, "SET", "a", "1")
    cluster.propose("n2", 2, "SET", "b", "2")
    cluster.run()
    assert 1 not in cluster.replies            # forwarded, the leader cannot hear it
    assert cluster.replies[2].error_class == "TRYAGAIN"


def test_wait_for_zero_replicas_answers_a_count_at_once():
    cluster = ready_cluster()
    cluster.propose("n1", 1, "CHORUS.WAITREPLICAS", "0", "0", "0", "0")
    cluster.run()
    assert cluster.replies[1] == 2             # both followers answered and hold 0:0


def test_a_wait_sent_to_a_follower_keeps_its_own_timeout():
    cluster = ready_cluster(write_timeout_ms=500)
    cluster.cut = {("n2", "n1")}
    cluster.propose("n2", 1, "CHORUS.WAITREPLICAS", "2", "5000", "0", "0")
    cluster.run()
    cluster.advance_time(1000)
    assert 1 not in cluster.replies            # past the write timeout, within WAIT's own
    cluster.advance_time(5000)
    assert cluster.replies[1] == 0             # the leader never answered


def test_an_answer_from_a_follower_process_that_ended_is_ignored():
    cluster = ready_cluster(write_quorum=3)
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.run()
    assert cluster.replies[1] == OK
    old_answer = [m for m in cluster.sent if type(m) is AppendReply and m.source == "n3"][-1]
    assert old_answer.durable == Position(1, 2)
    cluster.stores["n3"] = MemoryStore()        # its data directory is lost; it starts empty
    cluster.start("n3")
    cluster.settle()
    leader = cluster.cores["n1"]
    progress = leader.followers["n3"]
    assert progress.incarnation == cluster.cores["n3"]._incarnation
    leader.step(old_answer, cluster.now)        # delayed, from the process that held 1:1
    assert progress.incarnation > old_answer.incarnation
    cluster.cut = {("n1", "n3")}                # n3 cannot get the entry back
    cluster.propose("n1", 2, "SET", "k", "w")
    cluster.run()
    cluster.advance_time(cluster.settings.heartbeat_interval_ms)
    assert 2 not in cluster.replies             # two copies of 1:3, not three


def test_a_follower_that_drops_its_log_during_a_snapshot_stops_counting_toward_w():
    """While a snapshot streams to a follower its replies do not move it forward, but one that
    refuses (it dropped its data and log to be re-seeded) holds nothing any more: the leader
    must not keep counting it toward the write quorum with what it held before."""
    cluster = ready_cluster(write_quorum=2)
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.settle()
    leader = cluster.cores["n1"]
    progress = leader.followers["n2"]
    assert progress.match == cluster.positions[1]
    progress.snapshot_next_chunk = 0               # as if a snapshot were streaming to n2
    n2 = cluster.cores["n2"]
    leader.step(AppendReply("n2", "n1", leader.epoch, ZERO_POSITION, ZERO_POSITION, False,
                            n2._incarnation, cluster.now, ZERO_POSITION), cluster.now)
    assert progress.match == ZERO_POSITION


def test_empty_appends_below_a_snapshot_base_do_not_make_a_follower_drop_it():
    """A follower just seeded from a snapshot (log base 1:100) hears heartbeats that start below
    its base from a leader that has not heard from it since: they say nothing about the base,
    so it only tells the leader where its log starts. Appends with entries that never reach
    the base are evidence it is not in the leader's history: after ``base_refusals_max`` of
    them it drops its data and asks to be seeded again."""
    store = MemoryStore()
    base = Position(1, 100)
    store.commit([ResetLog(base), PutMeta("epoch", 1)])
    core = LeaderCore(CoreConfig("n2", MEMBERS, settings=LeaderSettings(write_quorum=2)),
                      store.recover(), random.Random(1), T0)
    below = Position(1, 50)

    def append(entries: tuple[LogEntry, ...]) -> AppendReply:
        core.step(Append("n1", "n2", 1, below, entries, below, below, T0), T0)
        replies = [m for m in core.ready().messages if type(m) is AppendReply]
        return replies[-1]

    for _ in range(base_refusals_max + 2):
        reply = append(())
        assert (reply.accepted, reply.hint) == (False, base)
    assert core.counters["reseeds_after_divergence"] == 0
    entries = tuple(LogEntry(Position(1, i), SetValue(b"k", b"v", 0)) for i in range(51, 61))
    for _ in range(base_refusals_max):
        assert append(entries).hint == base
    assert core.counters["reseeds_after_divergence"] == 0
    assert append(entries).hint == ZERO_POSITION
    assert core.counters["reseeds_after_divergence"] == 1
