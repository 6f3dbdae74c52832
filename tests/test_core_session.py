"""What the cores give session clients: ``CHORUS.WAITPOS`` with staleness bounds, and the lag
and staleness a follower knows of itself (``core.position_wait``)."""

from __future__ import annotations

import random

import pytest
from test_core_leader import command, ready_cluster

from chorusdb.core.api import ClientCommand, CoreConfig
from chorusdb.core.model import ZERO_POSITION, Position, RecoveredState
from chorusdb.core.position_wait import PositionWaitRequest, parse_position_wait
from chorusdb.core.standalone import StandaloneCore
from chorusdb.replies import OK, Error

T0 = 1_000_000


@pytest.mark.parametrize("args, expected", [
    ((b"3", b"7", b"100"), PositionWaitRequest(Position(3, 7), 100)),
    ((b"3", b"7", b"100", b"maxlag", b"5"), PositionWaitRequest(Position(3, 7), 100, 5)),
    ((b"3", b"7", b"0", b"MAXSTALENESS", b"250", b"MAXLAG", b"0"),
     PositionWaitRequest(Position(3, 7), 0, 0, 250)),
])
def test_waitpos_arguments_parse(args, expected):
    assert parse_position_wait(args) == expected


@pytest.mark.parametrize("args, error", [
    ((b"x", b"7", b"100"), "ERR value is not an integer or out of range"),
    ((b"3", b"7", b"-1"), "ERR timeout is negative"),
    ((b"3", b"-7", b"1"), "ERR a negative position or count"),
    ((b"3", b"7", b"1", b"MAXLAG"), "ERR syntax error"),
    ((b"3", b"7", b"1", b"MAXLAG", b"1", b"MAXLAG", b"2"), "ERR syntax error"),
    ((b"3", b"7", b"1", b"FRESH", b"1"), "ERR syntax error"),
    ((b"3", b"7", b"1", b"MAXSTALENESS", b"-5"), "ERR MAXSTALENESS is negative"),
])
def test_bad_waitpos_arguments_are_refused(args, error):
    assert parse_position_wait(args) == Error(error)


def test_bounds_hold_only_within_the_limits():
    request = PositionWaitRequest(Position(1, 1), 10, max_lag_entries=3, max_staleness_ms=100)
    assert request.bounds_met(3, 100)
    assert not request.bounds_met(4, 0)
    assert not request.bounds_met(0, 101)
    assert not request.bounds_met(0, None)          # never caught up: staleness unknown
    assert PositionWaitRequest(Position(1, 1), 10).bounds_met(10**6, None)


def test_a_follower_knows_how_far_behind_it_is_and_since_when():
    cluster = ready_cluster(write_quorum=2)
    n3 = cluster.cores["n3"]
    assert n3.lag_entries() == 0 and n3.staleness_ms() == 0
    assert cluster.cores["n1"].staleness_ms() == 0
    cluster.cut = {("n1", "n3"), ("n3", "n1")}
    for request_id in range(1, 4):
        cluster.propose("n1", request_id, "SET", "k", str(request_id))
    cluster.advance_time(300)
    assert n3.staleness_ms() == 300          # heard nothing since the cut
    assert n3.lag_entries() == 0             # ... so it does not know what it misses
    cluster.cut = set()
    cluster.advance_time(cluster.settings.heartbeat_interval_ms)
    assert n3.lag_entries() == 0 and n3.staleness_ms() < cluster.settings.heartbeat_interval_ms
    status = n3.status()
    assert (status["lag_entries"], status["staleness_ms"]) == (0, n3.staleness_ms())


def test_waitpos_bounds_wait_until_the_follower_is_fresh_again():
    cluster = ready_cluster(write_quorum=2)
    cluster.cut = {("n1", "n3"), ("n3", "n1")}
    cluster.advance_time(400)
    applied = cluster.cores["n3"].applied
    cluster.propose("n3", 1, "CHORUS.WAITPOS", str(applied.epoch), str(applied.index), "1000",
                    "MAXSTALENESS", "200")
    cluster.propose("n3", 2, "CHORUS.WAITPOS", str(applied.epoch), str(applied.index), "100",
                    "MAXSTALENESS", "200")
    cluster.propose("n3", 3, "CHORUS.WAITPOS", str(applied.epoch), str(applied.index), "100")
    cluster.run()
    assert cluster.replies[3] == OK                      # no bound asked: applied is enough
    assert 1 not in cluster.replies and 2 not in cluster.replies
    cluster.advance_time(100)
    assert cluster.replies[2].error_class == "TRYAGAIN"
    assert "was caught up with the leader 500 ms ago" in str(cluster.replies[2])
    cluster.cut = set()
    cluster.advance_time(cluster.settings.heartbeat_interval_ms)
    assert cluster.replies[1] == OK


def test_waitpos_maxlag_counts_committed_entries_not_applied():
    cluster = ready_cluster(write_quorum=2)
    n3 = cluster.cores["n3"]
    n3._leader_commit_heard = Position(1, n3.applied.index + 5)     # heard of 5 more
    applied = n3.applied
    cluster.propose("n3", 1, "CHORUS.WAITPOS", str(applied.epoch), str(applied.index), "0",
                    "MAXLAG", "4")
    cluster.propose("n3", 2, "CHORUS.WAITPOS", str(applied.epoch), str(applied.index), "0",
                    "MAXLAG", "5")
    cluster.run()
    assert cluster.replies[1].error_class == "TRYAGAIN"
    assert "is 5 entries behind" in str(cluster.replies[1])
    assert cluster.replies[2] == OK


def test_token_and_position_answer_the_applied_position():
    cluster = ready_cluster(write_quorum=3)
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.settle()
    cluster.propose("n2", 2, "CHORUS.TOKEN")
    cluster.propose("n1", 3, "CHORUS.TOKEN")
    cluster.run()
    assert cluster.replies[2] == cluster.replies[3] == str(cluster.positions[1]).encode()


def test_a_standalone_node_meets_every_bound_and_answers_its_position():
    core = StandaloneCore(CoreConfig("solo", ("solo",)), RecoveredState({}, {}, ZERO_POSITION),
                          random.Random(1), T0)
    core.propose(command("SET", "k", "v"), 1, T0)
    core.propose(command("CHORUS.WAITPOS", "0", "1", "0", "MAXLAG", "0", "MAXSTALENESS", "0"),
                 2, T0)
    core.propose(command("CHORUS.WAITPOS", "0", "2", "0"), 3, T0)
    core.propose(command("CHORUS.TOKEN"), 4, T0)
    core.propose(command("CHORUS.WAITPOS", "0", "1", "0", "MAXLAG"), 5, T0)
    replies = {reply.request_id: reply.value for reply in core.ready().replies}
    assert replies[2] == OK
    assert replies[3].error_class == "TRYAGAIN"
    assert replies[4] == b"0:1"
    assert replies[5] == Error("ERR syntax error")
    assert core.status()["staleness_ms"] == 0


def test_a_follower_refuses_linearizable_reads_and_the_leader_serves_them():
    cluster = ready_cluster(write_quorum=2)
    cluster.propose("n1", 1, "SET", "k", "v")
    cluster.settle()
    for request_id, member in ((2, "n2"), (3, "n1")):
        cluster.cores[member].propose(ClientCommand(b"GET", (b"k",), linearizable=True),
                                      request_id, cluster.now)
        cluster.cores[member].propose(ClientCommand(b"CHORUS.WAITPOS", (b"1", b"1", b"100",
                                                                        b"LINEARIZABLE"),
                                                    linearizable=True), request_id + 10,
                                      cluster.now)
    cluster.advance_time(1)                     # a leader read waits for a confirming round
    assert cluster.replies[2] == cluster.replies[12] == Error("NOTLEADER n1 ?")
    assert cluster.replies[3] == b"v" and cluster.replies[13] == OK
