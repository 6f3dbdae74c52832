"""Scenario tests of leader-mode failover: elections, fencing, step-down, read-index, the
quarantine of divergent entries, switchover, and clients during an election.

They drive the same in-process cluster as ``test_core_leader`` (in-memory stores, messages
delivered by hand, links cut on demand); the simulator runs the same rules under faults.
"""

from __future__ import annotations

from test_core_leader import MEMBERS, Cluster, ready_cluster

from chorusdb.core.leader_messages import AppendReply
from chorusdb.core.model import EpochStart, Position
from chorusdb.replies import OK, Error, Simple
from chorusdb.storage.memory_store import MemoryStore

ELECTION_MS = 1000          # the default election timeout is drawn from 500..1000 ms


def running_cluster(**settings) -> Cluster:
    """A cluster past its first election timeout: members that started empty vote only after
    following a leader that long (``test_a_member_that_starts_empty_...``)."""
    cluster = ready_cluster(**settings)
    cluster.advance_time(ELECTION_MS)
    return cluster


def isolate(cluster: Cluster, member: str) -> None:
    cluster.cut = {(member, other) for other in MEMBERS if other != member} | \
                  {(other, member) for other in MEMBERS if other != member}


def leader_of(cluster: Cluster, among=MEMBERS) -> str:
    leaders = [m for m in among if cluster.cores[m].role == "leader"]
    assert len(leaders) == 1, {m: cluster.cores[m].role for m in among}
    return leaders[0]


def test_the_initial_leader_is_elected_at_once_and_starts_its_epoch_with_its_mark():
    cluster = Cluster()
    cluster.advance_time(1)
    leader = cluster.cores["n1"]
    assert (leader.role, leader.epoch, leader.elections["won"]) == ("leader", 1, 1)
    assert leader.log.entry(1).effect == EpochStart("n1")
    cluster.settle()
    assert all(core.commit == Position(1, 1) for core in cluster.cores.values())


def test_a_dead_leader_is_replaced_and_rejoins_as_a_follower_that_converges():
    cluster = ready_cluster()
    cluster.propose("n1", 1, "SET", "k", "before")
    cluster.run()
    assert cluster.replies[1] == OK
    isolate(cluster, "n1")
    cluster.advance_time(ELECTION_MS + 200)
    new = leader_of(cluster, ("n2", "n3"))
    assert cluster.cores[new].epoch == 2
    assert cluster.cores["n1"].role == "follower"      # it stepped down on its own
    cluster.propose(new, 2, "SET", "k", "after")
    cluster.run()
    assert cluster.replies[2] == OK
    cluster.cut = set()
    cluster.settle()
    cores = cluster.cores.values()
    assert len({(c.log.last, c.commit, c.applied) for c in cores}) == 1
    assert cluster.cores["n1"].keyspace.digest(cluster.now) == \
        cluster.cores[new].keyspace.digest(cluster.now)
    assert cluster.cores[new].status()["last_failover_ms"] is not None


def test_only_a_member_with_the_freshest_log_can_win():
    cluster = ready_cluster(write_quorum=2)
    cluster.cut = {("n1", "n3"), ("n3", "n1")}
    cluster.propose("n1", 1, "SET", "k", "v")      # committed on n1 and n2 only
    cluster.run()
    assert cluster.replies[1] == OK
    isolate(cluster, "n1")
    cluster.advance_time(3 * ELECTION_MS)
    assert leader_of(cluster, ("n2", "n3")) == "n2"
    cluster.propose("n2", 2, "GET", "k")
    cluster.advance_time(1)
    assert cluster.replies[2] == b"v"


def test_a_member_that_still_hears_its_leader_does_not_help_elect_another():
    cluster = ready_cluster()
    cluster.cut = {("n1", "n3"), ("n3", "n1")}      # n3 alone times out; n2 still hears n1
    cluster.advance_time(3 * ELECTION_MS)
    assert cluster.cores["n3"].epoch == 1           # pre-votes refused: no epoch disturbed
    assert cluster.cores["n1"].role == "leader" and cluster.cores["n1"].epoch == 1
    cluster.cut = set()
    cluster.settle()
    assert leader_of(cluster) == "n1"


def test_a_leader_cut_off_from_a_quorum_answers_no_read_and_steps_down():
    cluster = ready_cluster()
    isolate(cluster, "n1")
    cluster.propose("n1", 1, "GET", "k")
    cluster.advance_time(400)
    assert 1 not in cluster.replies                 # no member confirmed it still leads
    cluster.advance_time(200)
    assert cluster.cores["n1"].role == "follower"
    assert cluster.replies[1].error_class == "TRYAGAIN"


def test_a_stale_leaders_append_is_refused_and_it_learns_the_new_epoch():
    cluster = ready_cluster()
    isolate(cluster, "n1")
    cluster.advance_time(ELECTION_MS + 200)
    cluster.cut = set()
    cluster.run()
    cluster.settle()
    assert cluster.cores["n1"].role == "follower" and cluster.cores["n1"].epoch == 2


def test_a_divergent_suffix_is_quarantined_and_can_be_reapplied_or_discarded():
    cluster = ready_cluster(write_quorum=1)     # W + Q <= N: an acknowledged write can be lost
    isolate(cluster, "n1")
    cluster.propose("n1", 1, "SET", "lost", "1")
    cluster.propose("n1", 2, "RPUSH", "list", "x")
    cluster.run()
    assert cluster.replies[1] == OK and cluster.replies[2] == 1
    cluster.advance_time(ELECTION_MS + 200)
    new = leader_of(cluster, ("n2", "n3"))
    cluster.cut = set()
    cluster.settle()
    old = cluster.cores["n1"]
    assert old.role == "follower" and old.status()["divergent_entries"] == 2
    cluster.propose("n1", 3, "CHORUS.DIVERGENT", "LIST")
    cluster.run()
    listed = cluster.replies[3]
    assert [dict(zip(item[::2], item[1::2]))[b"command"] for item in listed] == \
        [b"SET lost 1", b"RPUSH list x"]
    first = dict(zip(listed[0][::2], listed[0][1::2]))
    assert (first[b"leader"], first[b"removed_by"], first[b"verified"]) == (b"n1", new.encode(), 1)
    cluster.propose("n1", 4, "CHORUS.DIVERGENT", "REAPPLY", str(first[b"id"]))
    cluster.run()
    cluster.settle()
    assert cluster.replies[4] == OK
    cluster.propose(new, 5, "GET", "lost")
    cluster.advance_time(1)
    assert cluster.replies[5] == b"1"
    cluster.propose("n1", 6, "CHORUS.DIVERGENT", "DISCARD", str(first[b"id"] + 1), "ops@host")
    cluster.propose("n1", 7, "CHORUS.DIVERGENT", "REAPPLY", str(first[b"id"]))
    cluster.run()
    assert cluster.replies[6] == OK
    assert cluster.replies[7].error_class == "ERR" and "reapplied" in cluster.replies[7].text
    recovered = cluster.stores["n1"].recover().divergent
    assert [(d.resolution, d.resolved_by) for d in recovered] == \
        [("reapplied", "n1"), ("discarded", "ops@host")]


def test_switchover_hands_leadership_to_a_caught_up_member():
    cluster = running_cluster()
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.propose("n3", 2, "CHORUS.SWITCHOVER", "n2")      # forwarded to the leader
    cluster.run()
    cluster.settle()
    assert cluster.replies[2] == Simple("OK leadership handed to n2 at epoch 2")
    assert leader_of(cluster) == "n2" and cluster.cores["n2"].epoch == 2
    cluster.propose("n2", 3, "GET", "k")
    cluster.advance_time(1)
    assert cluster.replies[3] == b"v"


def test_switchover_to_a_member_that_cannot_catch_up_is_refused_and_writes_resume():
    cluster = ready_cluster(switchover_timeout_ms=300)
    cluster.cut = {("n1", "n3"), ("n3", "n1")}
    cluster.propose("n1", 1, "CHORUS.SWITCHOVER", "n3")
    cluster.propose("n1", 2, "SET", "k", "v")
    cluster.run()
    assert cluster.replies[2].error_class == "TRYAGAIN"      # writes pause meanwhile
    cluster.advance_time(300)
    assert cluster.replies[1].error_class == "ERR" and "n3" in cluster.replies[1].text
    assert leader_of(cluster) == "n1"
    cluster.propose("n1", 3, "SET", "k", "v")
    cluster.run()
    assert cluster.replies[3] == OK


def test_a_member_that_is_no_candidate_never_leads():
    cluster = ready_cluster(non_candidates=("n2", "n3"))
    isolate(cluster, "n1")
    cluster.advance_time(3 * ELECTION_MS)
    assert all(cluster.cores[m].role == "follower" for m in ("n2", "n3"))
    assert cluster.cores["n2"].elections["started"] == 0


def test_a_write_sent_to_a_follower_during_an_election_waits_for_the_new_leader():
    cluster = running_cluster(write_timeout_ms=3000, non_candidates=("n2",))
    isolate(cluster, "n1")
    cluster.cut |= {("n3", "n2")}                   # n3 cannot win until n2 hears it
    cluster.advance_time(ELECTION_MS + 100)
    follower = cluster.cores["n2"]
    assert not follower.leader_id                   # n2 gave up on n1, knows no other
    cluster.propose("n2", 1, "SET", "k", "v")
    cluster.run()
    assert 1 not in cluster.replies                 # kept, not refused
    cluster.cut -= {("n3", "n2")}
    cluster.advance_time(ELECTION_MS + 200)
    assert follower.leader_id == "n3" and cluster.replies[1] == OK


def test_a_member_that_starts_empty_votes_only_after_following_a_leader():
    cluster = ready_cluster()
    cluster.stores["n3"] = MemoryStore()            # its disk (and its votes) are gone
    cluster.start("n3")
    n3 = cluster.cores["n3"]
    assert n3._rejoining()
    cluster.settle()                                # it follows n1 ...
    cluster.advance_time(ELECTION_MS)               # ... for a whole election timeout
    assert not n3._rejoining()


def test_a_leader_of_a_single_member_cluster_elects_itself():
    cluster = Cluster(members=("n1",))
    cluster.advance_time(1)
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.run()
    assert cluster.replies[1] == OK and cluster.cores["n1"].role == "leader"
    assert not isinstance(cluster.replies[1], Error)


def test_a_leader_back_from_a_long_pause_acknowledges_nothing_it_sees_answered_late():
    cluster = running_cluster()
    cluster.cut = {("n2", "n1"), ("n3", "n1")}      # its entries go out, the answers wait
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.run()
    late = [m for m in cluster.sent if type(m) is AppendReply and m.target == "n1"][-1]
    assert late.durable.index == cluster.cores["n1"].log.last.index
    paused = cluster.cores.pop("n1")                # SIGSTOP: no ticks, nothing received
    cluster.advance_time(3000)
    assert leader_of(cluster, ("n2", "n3")) and paused.role == "leader"
    paused.step(late, cluster.now)                  # SIGCONT: the answers from before arrive
    ready = paused.ready()
    assert [isinstance(reply.value, Error) and reply.value.error_class
            for reply in ready.replies] == ["INDOUBT"]
    assert paused.role == "follower"


def test_writes_a_member_holds_for_a_leader_are_run_when_it_wins_itself():
    cluster = running_cluster(write_timeout_ms=3000, non_candidates=("n3",))
    isolate(cluster, "n1")
    cluster.cut |= {("n3", "n2"), ("n2", "n3")}     # n2 cannot win while it hears nobody
    cluster.advance_time(ELECTION_MS + 100)
    assert not cluster.cores["n2"].leader_id
    cluster.propose("n2", 1, "SET", "k", "v")
    cluster.run()
    assert 1 not in cluster.replies
    cluster.cut -= {("n3", "n2"), ("n2", "n3")}
    cluster.advance_time(ELECTION_MS + 200)
    assert leader_of(cluster, ("n2", "n3")) == "n2" and cluster.replies[1] == OK


def test_a_write_forwarded_to_a_leader_that_lost_office_is_in_doubt_at_once():
    cluster = running_cluster(write_timeout_ms=5000)
    cluster.cut = {("n2", "n1")}                    # the forward is lost on its way
    cluster.propose("n2", 1, "SET", "k", "v")
    cluster.run()
    isolate(cluster, "n1")
    cluster.advance_time(ELECTION_MS + 200)         # well within the write timeout
    assert leader_of(cluster, ("n2", "n3"))
    assert cluster.replies[1].error_class == "INDOUBT"


def test_a_held_leader_read_asks_for_a_tick_one_millisecond_later():
    cluster = running_cluster()
    leader = cluster.cores["n1"]
    cluster.propose("n1", 1, "GET", "k")
    assert leader.has_ready()                   # else the driver would only hear of it at the
    ready = leader.ready()                      # next heartbeat
    assert ready.deadline_ms == cluster.now + 1 and not ready.replies
    leader.advance(ready)
    cluster.advance_time(1)
    assert cluster.replies[1] is None
