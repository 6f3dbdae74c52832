"""Session guarantees of ``chorusdb.Client`` on a real leader-mode cluster whose replication a
proxy slows down or holds (``chaos.cluster.ChaosCluster``: every peer link crosses a proxy).

With W = 1 the leader acknowledges a write before any follower has it, so a plain client that
writes on the leader and reads on a follower would miss its own write whenever the leader's
links lag. The client's session token closes that gap: ``sessions`` threads, each its own
client reading from followers, write a unique value and read it back ``trials_total`` times in
all, first while every leader -> follower link is delayed (``Delay``), then while one of them is
held outright (``Blackhole``: that follower hears nothing, so its reads wait ``session_wait_ms``
and fall back to the leader). Each session also reads a counter that a separate writer keeps
incrementing, every ``counter_read_every`` trials, and must never see it go down (monotonic
reads across the followers it is spread over). The followers must have served a real share of
the reads, or the test proves nothing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

import chorusdb
from chorusdb.chaos.cluster import ChaosCluster
from chorusdb.chaos.nemesis import leader_and_epoch
from chorusdb.chaos.proxy import FORWARD, Blackhole, Delay
from cluster_helpers import wait_for

pytestmark = pytest.mark.process

trials_total = 10_000                   # write-then-read pairs, all sessions and phases together
sessions = 8                            # client threads, each its own session
held_phase_share = 0.2                  # of the trials, run while one follower is held
replication_delay_ms = 5                # added to every leader -> follower chunk
replication_jitter_ms = 3
session_wait_ms = 25                    # a held follower's reads fall back after this
start_timeout_s = 30.0
phase_timeout_s = 240.0                 # one phase of every session, on a loaded machine
counter_key = "session-clock"
clock_tick_s = 0.005                    # between two increments of the counter
counter_read_every = 4                  # trials per read of the counter
follower_read_share_min = 0.3           # of the GETs of the delayed phase


def _get_calls(address: tuple[str, int]) -> int:
    host, port = address
    stats = redis.Redis(host=host, port=port, socket_timeout=5).info("commandstats")
    return stats.get("cmdstat_get", {}).get("calls", 0)


class Sessions:
    """``sessions`` threads doing write-then-read trials; failures are collected, not raised,
    so every thread ends and the test reports them all."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.failures: list[str] = []
        self.clients = [chorusdb.Client(hosts, read_from="follower",
                                        session_wait_ms=session_wait_ms)
                        for _ in range(sessions)]
        self.lock = threading.Lock()

    def run_phase(self, phase: str, trials_per_session: int) -> None:
        threads = [threading.Thread(target=self._trials, args=(number, phase, trials_per_session))
                   for number in range(sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(phase_timeout_s)
        assert not any(thread.is_alive() for thread in threads), f"{phase}: sessions hang"

    def _trials(self, number: int, phase: str, trials: int) -> None:
        client = self.clients[number]
        last_clock = 0
        try:
            for trial in range(trials):
                key, value = f"{phase}:{number}:{trial}", f"v{trial}"
                client.set(key, value)
                seen = client.get(key)
                if seen != value.encode():
                    self._fail(f"{key}: wrote {value!r}, read {seen!r} "
                               f"(token {client.session_token})")
                if trial % counter_read_every:
                    continue
                clock = int(client.get(counter_key) or 0)
                if clock < last_clock:
                    self._fail(f"session {number}: counter went back from {last_clock} to "
                               f"{clock} (token {client.session_token})")
                last_clock = clock
        except Exception as error:           # noqa: BLE001 - reported with the others
            self._fail(f"session {number} stopped: {error!r}")

    def _fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)


def test_sessions_read_their_writes_and_never_go_back_while_replication_lags(tmp_path: Path):
    with ChaosCluster(tmp_path / "cluster", "leader", 3, write_quorum=1) as cluster:
        cluster.start_all()
        wait_for(lambda: leader_and_epoch(cluster)[0], start_timeout_s, "a leader")
        leader = leader_and_epoch(cluster)[0]
        followers = [node for node in cluster.node_ids if node != leader]
        hosts = [f"{host}:{port}" for host, port in
                 (cluster.client_address(node) for node in cluster.node_ids)]
        stop_clock = threading.Event()
        clock_client = chorusdb.Client(hosts)

        def tick_clock() -> None:
            while not stop_clock.wait(clock_tick_s):
                clock_client.incr(counter_key)

        clock = threading.Thread(target=tick_clock)
        clock.start()
        checked = Sessions(hosts)
        try:
            delay = Delay(replication_delay_ms, replication_jitter_ms)
            cluster.proxies.set_modes({(leader, node): delay for node in followers})
            before = {node: _get_calls(cluster.client_address(node)) for node in cluster.node_ids}
            held_trials = int(trials_total * held_phase_share) // sessions
            checked.run_phase("delayed", trials_total // sessions - held_trials)
            served = {node: _get_calls(cluster.client_address(node)) - before[node]
                      for node in cluster.node_ids}
            cluster.proxies.set_mode(leader, followers[-1], Blackhole(FORWARD))
            checked.run_phase("held", held_trials)
        finally:
            cluster.heal()
            stop_clock.set()
            clock.join(30)
        assert checked.failures == [], "\n".join(checked.failures[:20])
        follower_reads = sum(served[node] for node in followers)
        assert follower_reads >= follower_read_share_min * sum(served.values()), served
        assert leader_and_epoch(cluster)[0] == leader, "the leader changed: not the test's aim"
