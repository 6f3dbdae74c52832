"""Automatic failover in real processes: three ``chorusdb serve`` nodes on loopback (W = 2, the
default election timeouts) under a write load that moves to another node on any error
(``bench.failover.WriteLoad``: SETs of unique keys and RPUSHes of unique items, each sent once,
acknowledged ones kept with the time they were sent and answered).

- SIGKILL the leader: a write sent after the kill is acknowledged within 2 s of it (the kill to
  the first OK, through whichever node the client reached), every acknowledged write is on the
  new leader, and the old leader, restarted on its data directory, comes back as a follower
  without disturbing the new leader and catches up with it;
- SIGSTOP the leader for 3 s while writes are sent to it (they queue in its sockets, one per
  connection, some during the pause and some right after SIGCONT): a new leader is elected
  during the pause, every reply the old leader gives is an error that promises nothing
  (``-INDOUBT``, ``-NOTLEADER``, ``-TRYAGAIN``, ``-NOQUORUM``) or an OK for a write the new
  leader committed (``CHORUS.POSITION`` on that connection names a later epoch, and the new
  leader holds the value), every acknowledged write of the load is on the new leader, and the
  old leader rejoins as a follower.

Both print what they measured (``pytest -s``). Processes are stopped by their PID in the
fixture's finaliser; every wait polls with a bounded deadline (``cluster_helpers``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
import redis

from chorusdb.bench.failover import WriteLoad, error_code
from cluster_helpers import ClusterNode, position_of, streaming_cluster

pytestmark = pytest.mark.process

SEMI_SYNC = {"write_quorum": 2}
warmup_writes = 200                 # acknowledged before the fault
after_failover_writes = 100         # acknowledged after it, before the load stops
load_timeout_ms = 20_000            # for either batch of acknowledgements
failover_s_max = 2.0                # the goal: kill -> first acknowledged write
failover_wait_s = 10.0              # how long to look for that write at all
rejoin_timeout_s = 20.0             # restart or SIGCONT -> follower, caught up
pause_s = 3.0                       # the SIGSTOP
writes_during_pause = 6             # sent to the paused leader, spread over the pause
writes_after_pause = 2              # sent to it right after SIGCONT
probe_join_timeout_s = 15.0         # its replies: within the forward timeout after SIGCONT
PROMISES_NOTHING = ("INDOUBT", "NOTLEADER", "TRYAGAIN", "NOQUORUM")


@pytest.fixture
def cluster(tmp_path):
    """A three-node cluster whose initial leader streams to both followers; every process it
    started is stopped when the test ends."""
    with streaming_cluster(tmp_path / "cluster", SEMI_SYNC) as cluster:
        yield cluster


def test_a_killed_leader_is_replaced_within_2_s_without_losing_acknowledged_writes(cluster):
    old, old_status = cluster.current_leader()
    load = WriteLoad(cluster.client_addresses(), "kill")
    load.start()
    try:
        load.wait_acknowledged(warmup_writes, load_timeout_ms)
        killed_s = cluster.kill(old.node_id)
        first = cluster.wait_for(lambda: load.first_acknowledged_after(killed_s),
                                 failover_wait_s, "a write sent after the kill acknowledged")
        load.wait_acknowledged(load.acknowledged + after_failover_writes, load_timeout_ms)
    finally:
        load.stop()
    new, new_status = cluster.wait_leader(old_status["epoch"], failover_wait_s)
    failover_s = first.acked_s - killed_s
    print(f"\nSIGKILL {old.node_id} (epoch {old_status['epoch']}): first write acknowledged "
          f"{failover_s * 1000:.0f} ms later (via {cluster.client_addresses()[first.node]}); "
          f"{new.node_id} leads epoch {new_status['epoch']}, {new_status['last_failover_ms']} "
          f"ms without a leader in its own view; {load.acknowledged} acknowledged, "
          f"{load.in_doubt} in doubt, {load.refused} refused ({load.errors})")
    assert failover_s <= failover_s_max, cluster.describe()
    with new.client() as client:
        assert load.missing_on(client) == []

    restarted_s = time.monotonic()
    cluster.start(old.node_id)
    rejoined = cluster.wait_rejoined(old.node_id, new, rejoin_timeout_s)
    print(f"{old.node_id} restarted: following {new.node_id} and caught up at "
          f"{rejoined['position']} {time.monotonic() - restarted_s:.1f} s after the restart; "
          f"{rejoined['divergent_total']} of its entries quarantined as divergent")
    led = new.status()
    assert (led["role"], led["epoch"]) == ("leader", new_status["epoch"]), led
    cluster.wait_converged()
    with old.client() as client:
        assert load.missing_on(client) == []


@dataclass
class QueuedWrite:
    """A SET sent to one node on a connection of its own at ``send_at_s``
    (``time.monotonic()``); its reply (True, or the error) and, after an OK, the position
    ``CHORUS.POSITION`` gives for it."""

    node: ClusterNode
    key: str
    send_at_s: float = 0.0
    reply: object = None
    position: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.client = self.node.client()    # connected now, while the node still answers
        self.thread = threading.Thread(target=self._send, name=self.key, daemon=True)

    @property
    def value(self) -> bytes:
        return f"value-{self.key}".encode()

    def send_at(self, at_s: float) -> None:
        self.send_at_s = at_s
        self.thread.start()

    def _send(self) -> None:
        time.sleep(max(0.0, self.send_at_s - time.monotonic()))
        try:
            self.reply = self.client.set(self.key, self.value)
        except redis.RedisError as e:       # an error reply, or (a failure) no reply at all
            self.reply = e
            return
        if self.reply is True:
            self.position = position_of(self.client.execute_command("CHORUS.POSITION"))

    def finish(self) -> None:
        self.thread.join(probe_join_timeout_s)
        assert not self.thread.is_alive(), f"{self.key}: no reply"
        self.client.close()


def test_b_a_paused_leader_acknowledges_only_what_a_new_leader_committed(cluster):
    old, old_status = cluster.current_leader()
    old_epoch = old_status["epoch"]
    queued = [QueuedWrite(old, f"paused:{i}")
              for i in range(writes_during_pause + writes_after_pause)]
    during, after = queued[:writes_during_pause], queued[writes_during_pause:]
    load = WriteLoad(cluster.client_addresses(), "pause")
    load.start()
    try:
        load.wait_acknowledged(warmup_writes, load_timeout_ms)
        with cluster.paused(old.node_id):
            paused_s = time.monotonic()
            for i, write in enumerate(during):
                write.send_at(paused_s + pause_s * i / len(during))
            new, new_status = cluster.wait_leader(old_epoch, pause_s, exclude=(old.node_id,))
            elected_s = time.monotonic() - paused_s
            time.sleep(max(0.0, paused_s + pause_s - time.monotonic()))    # the pause itself
        resumed_s = time.monotonic()
        for write in after:
            write.send_at(resumed_s)
        for write in queued:
            write.finish()
        load.wait_acknowledged(load.acknowledged + after_failover_writes, load_timeout_ms)
    finally:
        load.stop()
    print(f"\nSIGSTOP {old.node_id} (epoch {old_epoch}) for {pause_s:g} s: {new.node_id} led "
          f"epoch {new_status['epoch']} {elected_s * 1000:.0f} ms into the pause; replies of "
          f"{old.node_id} to the writes sent to it: "
          + ", ".join(f"{w.key}: {w.reply!r}" for w in queued))
    assert new_status["epoch"] > old_epoch
    with new.client() as client:
        for write in queued:
            if write.reply is True:
                # Forwarded to the new leader and committed there: never the paused one's OK.
                assert write.position[0] > old_epoch, (write.key, write.position)
                assert client.get(write.key) == write.value, write.key
            else:
                assert isinstance(write.reply, redis.ResponseError), (write.key, write.reply)
                assert error_code(write.reply) in PROMISES_NOTHING, (write.key, write.reply)
        assert load.missing_on(client) == []

    rejoined = cluster.wait_rejoined(old.node_id, new, rejoin_timeout_s)
    print(f"{old.node_id} resumed: following {new.node_id} and caught up at "
          f"{rejoined['position']} {time.monotonic() - resumed_s:.1f} s after SIGCONT; "
          f"{rejoined['divergent_total']} of its entries quarantined as divergent; load: "
          f"{load.acknowledged} acknowledged, {load.in_doubt} in doubt ({load.errors})")
    cluster.wait_converged()
