"""Leader mode in real processes: three ``chorusdb serve`` nodes on loopback (``n1`` leads, W = 2)
driven through redis-py and watched through ``/status``.

- writes on the leader reach every follower (``CHORUS.WAITPOS`` there with the write's position,
  then a read); a follower forwards a write, or refuses it with ``-NOTLEADER`` in redirect mode;
- ``WAIT`` counts the followers that hold the connection's last write, and times out on a
  follower that is SIGSTOPped;
- a follower SIGKILLed under write load restarts on its data and catches up from the leader's
  log (no snapshot);
- a follower whose data directory was deleted while it was down is re-seeded from a snapshot,
  with writes going on, because the leader's small retention has trimmed the log it would need;
- a follower that is down stays reported as disconnected once the log is trimmed past it
  (expected to fail until the leader stops reporting it as being snapshotted).

Every scenario ends with the same ``CHORUS.DIGEST`` on all three nodes. Processes are stopped
by their PID in the fixture's finaliser; waits poll with bounded deadlines (``cluster_helpers``).
"""

from __future__ import annotations

import shutil
import time

import pytest
import redis

from cluster_helpers import LeaderCluster, Writer, poll_interval_s, position_of

pytestmark = pytest.mark.process

SEMI_SYNC = {"write_quorum": 2}
waitpos_timeout_ms = 10_000         # a follower applies a committed write well within this
wait_timeout_ms = 300               # WAIT's timeout while a follower is stopped
wait_early_s_max = 0.01             # the server's clock counts whole milliseconds
wait_overshoot_s_max = 1.7          # how much later than that WAIT may answer on a busy machine
load_phase_writes = 150             # acknowledged writes in each phase of the load tests
load_phase_timeout_s = 30.0
seed_keys = 300                     # written before the re-seeded follower goes down
SMALL_RETENTION = {**SEMI_SYNC, "log_retention_entries": 50, "log_hold_entries_max": 100}
dead_follower_watch_s = 2.5         # longer than the resend timer and a retention check


@pytest.fixture
def make_cluster(tmp_path):
    """Start a three-node cluster and wait until the leader streams to both followers; every
    process any cluster started is stopped when the test ends."""
    clusters: list[LeaderCluster] = []

    def make(leader: dict[str, object] = SEMI_SYNC,
             per_node: dict[str, dict[str, object]] | None = None) -> LeaderCluster:
        cluster = LeaderCluster(tmp_path / f"cluster{len(clusters)}", leader, per_node)
        clusters.append(cluster)
        cluster.start()
        cluster.wait_streaming()
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop_all()


def test_writes_reach_every_follower_and_follower_writes_are_forwarded_or_redirected(
        make_cluster):
    cluster = make_cluster(per_node={"n3": {"follower_writes": "redirect"}})
    leader, n2, n3 = (node.client() for node in cluster.nodes.values())
    assert leader.set("k", "v") is True
    assert leader.rpush("list", "a", "b") == 2
    assert leader.incrby("counter", 5) == 5
    assert leader.set("expiring", "x", ex=1000) is True
    written = position_of(leader.execute_command("CHORUS.POSITION"))
    for follower in (n2, n3):
        assert follower.execute_command("CHORUS.WAITPOS", *written, waitpos_timeout_ms) == b"OK"
        assert follower.get("k") == b"v"
        assert follower.lrange("list", 0, -1) == [b"a", b"b"]
        assert follower.get("counter") == b"5"
        assert 990 < follower.ttl("expiring") <= 1000
    role = leader.execute_command("ROLE")
    assert role[0] == b"master" and role[1] >= written[1]
    assert sorted(f"{host.decode()}:{port.decode()}" for host, port, _ in role[2]) == \
        [cluster.nodes["n2"].client_address, cluster.nodes["n3"].client_address]
    assert n2.execute_command("ROLE")[:4] == [b"slave", cluster.leader.host.encode(),
                                              cluster.leader.client_port, b"connected"]

    # n2 forwards: the leader applies the write, n2 answers with the leader's reply.
    assert n2.set("forwarded", "f") is True
    assert n2.incr("counter") == 6
    forwarded = position_of(n2.execute_command("CHORUS.POSITION"))
    assert forwarded > written
    assert leader.get("forwarded") == b"f" and leader.get("counter") == b"6"
    assert n3.execute_command("CHORUS.WAITPOS", *forwarded, waitpos_timeout_ms) == b"OK"
    assert n3.get("forwarded") == b"f"

    # n3 redirects: the client is told where the leader is, and nothing is written.
    with pytest.raises(redis.ResponseError) as refused:
        n3.set("redirected", "r")
    assert str(refused.value) == f"NOTLEADER n1 {cluster.leader.client_address}"
    assert n3.get("forwarded") == b"f"          # reads are still answered there
    assert leader.get("redirected") is None
    assert cluster.leader.status()["applied_position"]["index"] == forwarded[1]
    cluster.wait_converged()


def test_wait_counts_followers_and_times_out_on_a_stopped_one(make_cluster):
    cluster = make_cluster()
    leader = cluster.leader.client()
    assert leader.set("before", "1") is True
    assert leader.wait(2, 1000) == 2
    with cluster.paused("n3"):
        assert leader.set("during", "2") is True        # n2 makes the quorum
        started = time.monotonic()
        assert leader.wait(2, wait_timeout_ms) == 1
        waited_s = time.monotonic() - started
    timeout_s = wait_timeout_ms / 1000
    assert timeout_s - wait_early_s_max <= waited_s < timeout_s + wait_overshoot_s_max, waited_s
    assert leader.wait(2, 10_000) == 2                  # n3 runs again and confirms it
    follower = cluster.nodes["n2"].client()             # a follower forwards WAIT with the
    assert follower.set("forwarded", "3") is True       # position of its connection's write
    assert follower.wait(2, 10_000) == 2
    cluster.wait_converged()


def test_a_follower_killed_under_load_catches_up_from_the_log(make_cluster):
    cluster = make_cluster()
    writer = Writer(cluster.leader, "crash").start()
    try:
        writer.wait_acknowledged(load_phase_writes, load_phase_timeout_s, cluster)
        held_by_n3 = cluster.wait_for(
            lambda: cluster.member_status("n3")["durable_position"]["index"],
            load_phase_timeout_s, "n3 holds part of the log")
        cluster.kill("n3")
        writer.wait_acknowledged(writer.acknowledged + load_phase_writes, load_phase_timeout_s,
                                 cluster)
        cluster.start("n3")
        writer.wait_acknowledged(writer.acknowledged + load_phase_writes, load_phase_timeout_s,
                                 cluster)
    finally:
        writer.stop()
    assert writer.failures == []
    cluster.wait_converged()
    for node in cluster.nodes.values():
        assert writer.missing_on(node) == [], node.node_id
    n3 = cluster.member_status("n3")
    assert n3["state"] == "streaming" and n3["reseeds"] == 0, n3
    # What n3 held before the kill came back from its own disk; the rest from the leader's log.
    received = cluster.nodes["n3"].status()["replication"]["entries_received"]
    last = cluster.leader.status()["position"]["index"]
    assert 0 < received <= last - held_by_n3, (received, last, held_by_n3)


def test_a_follower_that_lost_its_data_is_reseeded_by_snapshot_while_writes_go_on(
        make_cluster):
    cluster = make_cluster(SMALL_RETENTION)
    leader = cluster.leader.client()
    pipe = leader.pipeline(transaction=False)
    for i in range(seed_keys):
        pipe.set(f"seed:{i}", f"seed-value-{i}")
    assert pipe.execute() == [True] * seed_keys
    cluster.kill("n3")
    shutil.rmtree(cluster.nodes["n3"].data_dir)
    writer = Writer(cluster.leader, "reseed").start()
    try:
        # The leader trims its log past everything n3 had: only a snapshot can bring it back.
        held_by_n3 = cluster.member_status("n3")["durable_position"]["index"]
        cluster.wait_for(lambda: cluster.leader.status()["log"]["first_index"] > held_by_n3 + 1,
                         load_phase_timeout_s, "the leader trimmed its log past n3's position")
        cluster.start("n3")
        cluster.wait_for(lambda: cluster.member_status("n3")["state"] == "streaming"
                         and cluster.nodes["n3"].status()["replication"]["snapshots_installed"],
                         load_phase_timeout_s, "n3 installed a snapshot and streams again")
        writer.wait_acknowledged(writer.acknowledged + load_phase_writes, load_phase_timeout_s,
                                 cluster)
    finally:
        writer.stop()
    assert writer.failures == []
    cluster.wait_converged()
    n3 = cluster.member_status("n3")
    assert n3["reseeds"] >= 1 and n3["reseed_reason"], n3
    seeds = cluster.nodes["n3"].client().mget([f"seed:{i}" for i in range(seed_keys)])
    assert seeds == [f"seed-value-{i}".encode() for i in range(seed_keys)]
    assert writer.missing_on(cluster.nodes["n3"]) == []


def test_a_dead_follower_is_reported_disconnected_after_the_log_is_trimmed_past_it(
        make_cluster):
    cluster = make_cluster(SMALL_RETENTION)
    cluster.kill("n3")
    cluster.wait_for(lambda: cluster.member_status("n3")["state"] == "disconnected",
                     load_phase_timeout_s, "the leader sees n3 disconnected")
    leader = cluster.leader.client()
    pipe = leader.pipeline(transaction=False)
    for i in range(seed_keys):
        pipe.set(f"key:{i}", "v")
    assert pipe.execute() == [True] * seed_keys
    cluster.wait_for(lambda: cluster.leader.status()["log"]["first_index"] > 1,
                     load_phase_timeout_s, "the leader trimmed its log past n3's position")
    watch_until = time.monotonic() + dead_follower_watch_s
    while time.monotonic() < watch_until:
        n3 = cluster.member_status("n3")
        assert n3["state"] == "disconnected" and n3["reason"], n3
        assert leader.info("replication")["connected_slaves"] == 1
        time.sleep(poll_interval_s)
    cluster.start("n3")
    cluster.wait_converged()


def test_a_session_read_is_one_round_trip_that_waits_for_its_position(make_cluster):
    """``CHORUS.WAITPOS`` blocks the connection: the GET pipelined behind it runs only once the
    follower has applied the position, so it sees a write made after the pipeline was sent.
    ``CHORUS.TOKEN`` answers a position covering what the connection read or wrote, a write
    forwarded by a follower included; ``CHORUS.TOPOLOGY`` names every member and the leader."""
    cluster = make_cluster()
    leader, n2 = cluster.nodes["n1"].client(), cluster.nodes["n2"].client()
    assert leader.set("k", "old") is True
    epoch, index = position_of(leader.execute_command("CHORUS.TOKEN"))
    connection = n2.connection_pool.get_connection()
    try:
        connection.send_packed_command(connection.pack_commands([
            ("CHORUS.WAITPOS", epoch, index + 1, waitpos_timeout_ms), ("GET", "k"),
            ("CHORUS.TOKEN",)]))
        time.sleep(0.3)                         # the follower has read the three commands
        assert not connection.can_read(timeout=0)   # ... and answers none before the write
        assert leader.set("k", "new") is True
        replies = [connection.read_response() for _ in range(3)]
    finally:
        n2.connection_pool.release(connection)
    assert replies[:2] == [b"OK", b"new"]
    assert position_of(replies[2]) >= (epoch, index + 1)

    pipe = n2.pipeline(transaction=False)       # a write n2 forwards to the leader
    pipe.set("forwarded", "f")
    pipe.execute_command("CHORUS.TOKEN")
    _, token = pipe.execute()
    assert position_of(token) >= position_of(leader.execute_command("CHORUS.POSITION"))

    topology = n2.execute_command("CHORUS.TOPOLOGY")
    fields = dict(zip(topology[::2], topology[1::2]))
    assert (fields[b"node"], fields[b"role"], fields[b"leader"]) == (b"n2", b"follower", b"n1")
    assert sorted(fields[b"members"]) == sorted(
        [node_id.encode(), node.client_address.encode()]
        for node_id, node in cluster.nodes.items())
    assert fields[b"staleness_ms"] >= 0 and fields[b"lag_entries"] >= 0
    leader_fields = leader.execute_command("CHORUS.TOPOLOGY")
    assert leader_fields[leader_fields.index(b"role") + 1] == b"leader"


def test_a_connection_asks_for_linearizable_reads_and_a_follower_refuses_them(make_cluster):
    """``CHORUS.CONSISTENCY linearizable`` (or a ``CHORUS.WAITPOS ... LINEARIZABLE``) makes a
    follower refuse the connection's reads with ``-NOTLEADER``; ``stale`` (or a WAITPOS without
    the flag) brings back reads from what the follower applied."""
    cluster = make_cluster()
    leader, n2 = cluster.nodes["n1"].client(), cluster.nodes["n2"].client()
    assert leader.set("k", "v") is True
    epoch, index = position_of(leader.execute_command("CHORUS.TOKEN"))
    assert n2.execute_command("CHORUS.WAITPOS", epoch, index, waitpos_timeout_ms) == b"OK"
    leader_address = cluster.leader.client_address
    connection = n2.connection_pool.get_connection()
    try:
        def ask(*commands: tuple) -> list:
            connection.send_packed_command(connection.pack_commands(commands))
            replies = []
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as error:
                    replies.append(f"error: {error}")
            return replies

        assert ask(("CHORUS.CONSISTENCY",), ("GET", "k")) == [b"stale", b"v"]
        assert ask(("CHORUS.CONSISTENCY", "linearizable"), ("GET", "k"),
                   ("CHORUS.CONSISTENCY",)) == \
            [b"OK", f"error: NOTLEADER n1 {leader_address}", b"linearizable"]
        assert ask(("CHORUS.WAITPOS", epoch, index, 100), ("GET", "k")) == [b"OK", b"v"]
        assert ask(("CHORUS.WAITPOS", epoch, index, 100, "LINEARIZABLE"), ("GET", "k")) == \
            [f"error: NOTLEADER n1 {leader_address}"] * 2
        assert ask(("CHORUS.CONSISTENCY", "eventual"),) == \
            ["error: CHORUS.CONSISTENCY takes linearizable or stale"]
    finally:
        n2.connection_pool.release(connection)
    leader.execute_command("CHORUS.CONSISTENCY", "linearizable")
    assert leader.get("k") == b"v"              # the leader serves them
