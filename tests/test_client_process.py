"""``chorusdb.client`` against real three-node leader clusters on loopback (W = 2).

- routing: writes land on the leader, follower reads on the followers in turn, leader reads on
  the leader, ``any`` reads on every member (counted in each node's ``/metrics``);
- read-your-writes from followers, a few hundred times, with the sync client (RESP2, bytes) and
  the async one (RESP3, decoded replies); a
  session token handed to a second client carries the guarantee with it;
- a leader SIGKILLed during a stream of session writes and reads: every read still sees the
  session's last write, reads of a counter another client increments never go back, and both
  clients carry on under the new leader;
- INCRs from two threads across a leader SIGKILL: the acknowledged replies are exactly
  1..n and the counter ends at n (no INCR applied twice or lost), and a request id first used
  on the old leader, reused through the client on the new one, gets the remembered reply.

The module's cluster serves the tests that do not kill; each kill test starts its own. Every
process is stopped by its PID when its fixture ends.
"""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.request
from collections import Counter

import pytest
from redis.exceptions import RedisError

from chorusdb.client import AsyncClient, Client
from chorusdb.client.token import Token
from cluster_helpers import LeaderCluster, socket_timeout_s, streaming_cluster

pytestmark = pytest.mark.process

SEMI_SYNC = {"write_quorum": 2}
ryw_trials = 300                    # write then read from a follower, per client kind
handoff_trials = 40                 # a fresh client continues another's session
routed_commands = 60                # SETs, then as many GETs, per routing check
stream_before_kill = 100            # session write+read pairs before the SIGKILL
stream_after_kill = 100             # ... and after the kill was seen through
incr_before_kill = 100              # acknowledged INCRs before the SIGKILL
incr_after_kill = 100               # ... and after it
failover_wait_s = 15.0              # kill -> a new leader that has committed
retry_deadline_ms = 15_000          # the clients' deadline: a failover is well within it
stream_timeout_s = 60.0             # for a load thread to reach its count
METRIC_LINE = re.compile(r'^chorus_commands_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


def served(node) -> Counter:
    """Commands this node has answered, by name, from its ``/metrics``."""
    with urllib.request.urlopen(f"http://{node.admin}/metrics",
                                timeout=socket_timeout_s) as answer:
        text = answer.read().decode()
    counts: Counter = Counter()
    for match in METRIC_LINE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        counts[labels["command"]] += int(float(match["value"]))
    return counts


def seeds(cluster: LeaderCluster) -> list[str]:
    return [node.client_address for node in cluster.nodes.values()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with streaming_cluster(tmp_path_factory.mktemp("client") / "cluster", SEMI_SYNC) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(tmp_path):
    with streaming_cluster(tmp_path / "cluster", SEMI_SYNC) as cluster:
        yield cluster


# --- routing --------------------------------------------------------------------------------


def routed_counts(cluster: LeaderCluster, work) -> dict[str, Counter]:
    """What each node answered while ``work()`` ran."""
    before = {node_id: served(node) for node_id, node in cluster.nodes.items()}
    work()
    return {node_id: served(node) - before[node_id] for node_id, node in cluster.nodes.items()}


def test_writes_go_to_the_leader_and_reads_where_the_policy_says(cluster):
    # Seeded with a follower only: the rest comes from CHORUS.TOPOLOGY.
    with Client([cluster.nodes["n2"].client_address], read_from="follower") as client:
        def write_then_read() -> None:
            for i in range(routed_commands):
                client.set(f"route:{i}", i)
            for i in range(routed_commands):
                assert client.get(f"route:{i}") == str(i).encode()
        counts = routed_counts(cluster, write_then_read)
        assert [counts[n]["set"] for n in ("n1", "n2", "n3")] == [routed_commands, 0, 0], counts
        follower_gets = counts["n2"]["get"] + counts["n3"]["get"]
        assert follower_gets + counts["n1"]["get"] == routed_commands, counts
        assert counts["n1"]["get"] <= routed_commands // 10, counts   # fallbacks only
        assert min(counts["n2"]["get"], counts["n3"]["get"]) >= routed_commands // 3, counts

        def read(view) -> None:
            for i in range(routed_commands):
                assert view.get(f"route:{i}") == str(i).encode()
        counts = routed_counts(cluster, lambda: read(client.reading(read_from="leader")))
        assert [counts[n]["get"] for n in ("n1", "n2", "n3")] == [routed_commands, 0, 0], counts
        counts = routed_counts(cluster, lambda: read(client.reading(read_from="any")))
        assert all(counts[n]["get"] >= routed_commands // 6 for n in ("n1", "n2", "n3")), counts


# --- session guarantees ---------------------------------------------------------------------


def test_read_your_writes_from_followers(cluster):
    with Client(seeds(cluster), read_from="follower") as client:
        last_token = Token.parse(client.session_token)
        for i in range(ryw_trials):
            client.set("ryw", i)
            assert client.get("ryw") == str(i).encode(), f"trial {i}"
            length = client.rpush("ryw:list", i)
            assert client.llen("ryw:list") == length, f"trial {i}"
            token = Token.parse(client.session_token)
            assert token > last_token, f"trial {i}: {token} after {last_token}"
            last_token = token


def test_a_session_token_carries_the_session_to_another_client(cluster):
    with Client(seeds(cluster), read_from="leader") as writer:
        for i in range(handoff_trials):
            writer.set("handoff", f"v{i}")
            with Client(seeds(cluster), read_from="follower",
                        session_token=writer.session_token) as reader:
                assert reader.get("handoff") == f"v{i}".encode(), f"trial {i}"
                assert Token.parse(reader.session_token) >= Token.parse(writer.session_token)


def test_the_async_client_keeps_the_same_guarantees(cluster):
    async def scenario() -> None:
        # RESP3 and decoded replies: the token and topology arrive as str, in maps.
        async with AsyncClient(seeds(cluster), read_from="follower", protocol=3,
                               decode_responses=True) as client:
            for i in range(ryw_trials):
                await client.set("async", i)
                assert await client.get("async") == str(i), f"trial {i}"
            replies = await asyncio.gather(*(client.incr("async:counter") for _ in range(20)))
            assert sorted(replies) == list(range(1, 21))
            assert await client.reading(read_from="any").get("async:counter") == "20"
    asyncio.run(asyncio.wait_for(scenario(), stream_timeout_s))


# --- failover -------------------------------------------------------------------------------


class Load:
    """``step(i)`` called for i = 0, 1, ... in a thread until ``stop``; errors are kept."""

    def __init__(self, step) -> None:
        self.step = step
        self.done = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(self.done)
            except (RedisError, AssertionError) as e:
                self.errors.append(f"step {self.done}: {type(e).__name__}: {e}")
                return
            self.done += 1

    def wait_done(self, count: int, cluster: LeaderCluster) -> None:
        cluster.wait_for(lambda: self.done >= count or self.errors, stream_timeout_s,
                         f"{count} steps done")
        assert not self.errors, self.errors

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(stream_timeout_s)
        assert not self._thread.is_alive()


def test_sessions_survive_a_leader_sigkill(own_cluster):
    cluster = own_cluster
    old_epoch = cluster.leader.status()["epoch"]
    counted = Client(seeds(cluster), retry_deadline_ms=retry_deadline_ms)
    # request_ids="all": a SET cut off by the kill is retried on the new leader, applied once.
    session = Client(seeds(cluster), read_from="follower", retry_deadline_ms=retry_deadline_ms,
                     request_ids="all")
    seen_counter: list[int] = []

    def count(i: int) -> None:
        counted.incr("stream:counter")

    def session_step(i: int) -> None:
        session.set("stream:mine", i)
        assert session.get("stream:mine") == str(i).encode(), f"read-your-writes, step {i}"
        value = int(session.get("stream:counter") or 0)
        assert not seen_counter or value >= seen_counter[-1], \
            f"monotonic reads: {value} after {seen_counter[-1]}"
        seen_counter.append(value)
    try:
        counter_load, session_load = Load(count), Load(session_step)
        session_load.wait_done(stream_before_kill, cluster)
        cluster.kill("n1")
        new, status = cluster.wait_leader(old_epoch, failover_wait_s)
        session_load.wait_done(session_load.done + stream_after_kill, cluster)
        counter_load.wait_done(counter_load.done + 1, cluster)
        session_load.stop()
        counter_load.stop()
        assert not session_load.errors and not counter_load.errors
        assert Token.parse(session.session_token).epoch > old_epoch
        assert seen_counter[-1] > seen_counter[stream_before_kill]
        assert session.get("stream:mine") == str(session_load.done - 1).encode()
        print(f"\n{session_load.done} session steps, {counter_load.done} INCRs; {new.node_id} "
              f"leads epoch {status['epoch']}; session token {session.session_token}")
    finally:
        counted.close()
        session.close()


def test_incr_across_a_leader_sigkill_is_applied_exactly_once(own_cluster):
    cluster = own_cluster
    old_epoch = cluster.leader.status()["epoch"]
    request_id = "0123456789abcdef0123456789abcdef"
    with cluster.leader.client() as direct:      # applied on the old leader, reply "lost"
        assert direct.execute_command("CHORUS.ONCE", request_id, "INCR", "once") == 1
    client = Client(seeds(cluster), retry_deadline_ms=retry_deadline_ms)
    acknowledged: list[int] = []
    try:
        loads = [Load(lambda i: acknowledged.append(client.incr("counter"))) for _ in range(2)]
        cluster.wait_for(lambda: len(acknowledged) >= incr_before_kill, stream_timeout_s,
                         "INCRs acknowledged before the kill")
        cluster.kill("n1")
        new, _ = cluster.wait_leader(old_epoch, failover_wait_s)
        target = len(acknowledged) + incr_after_kill
        cluster.wait_for(lambda: len(acknowledged) >= target or any(l.errors for l in loads),
                         stream_timeout_s, "INCRs acknowledged after the kill")
        for load in loads:
            load.stop()
        assert [e for load in loads for e in load.errors] == []
        with new.client() as direct:
            final = int(direct.get("counter"))
        assert sorted(acknowledged) == list(range(1, len(acknowledged) + 1))
        assert final == len(acknowledged)

        # The same request again, now through the client: the new leader remembers it.
        client._state.request_id = lambda: request_id
        assert client.incr("once") == 1
        with new.client() as direct:
            assert direct.get("once") == b"1"
    finally:
        client.close()
