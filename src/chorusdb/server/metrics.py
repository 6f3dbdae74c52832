"""Prometheus metrics of one node, counted on the hot path as plain integers.

``prometheus_client``'s own Counter and Histogram take a lock and do several lookups per update;
at a hundred thousand commands a second that is a large share of one core. So the server counts
into plain ints and lists here, on the event-loop thread, and a custom collector turns them into
metric families only when ``/metrics`` is scraped.

Replication is not counted here at all: the core already keeps its positions, its view of each
follower and its counters, and ``StatusCollector`` turns one ``core.status()`` taken at scrape
time into gauges and counters (``chorus_commit_index``, ``chorus_follower_lag_entries{follower}``,
``chorus_replication_entries_sent_total``, ...). A family appears only when the mode reports
the fact it is made of, so a standalone node shows positions but no followers and no elections.

Failover (leader mode): ``chorus_elections_{started,won,lost}_total``,
``chorus_leaderless_seconds`` (0 while a leader is known), ``chorus_last_failover_seconds``
(from losing a leader to knowing the next; absent until the first failover), and the
quarantined writes: ``chorus_divergent_entries`` (pending) and
``chorus_divergent_entries_total`` (the entries quarantined here, resolved or not).
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

# Upper bounds of the command latency buckets, in seconds (from arrival to reply written).
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                     0.5, 1.0, 2.5)
# Upper bounds of the group-commit size buckets, in writes per transaction.
BATCH_BUCKETS_WRITES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


class _Histogram:
    """Counts per bucket plus sum; ``observe`` is one bisect and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        running = 0
        out = []
        for bound, count in zip(self.bounds, self.counts):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class NodeMetrics:
    """Everything ``/metrics`` shows about a node; see the module docstring."""

    def __init__(self, node_id: str, mode: str) -> None:
        self.node_id = node_id
        self.mode = mode
        self.command_latency: dict[str, _Histogram] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.connected_clients = 0
        self.connections_total = 0
        self.rejected_connections = 0
        self.protocol_errors = 0
        self.transactions = 0
        self.fsyncs = 0
        self.writes_persisted = 0
        self.group_commit_batches = _Histogram(BATCH_BUCKETS_WRITES)
        self.commit_seconds = 0.0
        self.durability_fsync = True

    def observe_command(self, name: str, seconds: float) -> None:
        histogram = self.command_latency.get(name)
        if histogram is None:
            histogram = self.command_latency[name] = _Histogram(LATENCY_BUCKETS_S)
        histogram.observe(seconds)

    def on_commit(self, transactions_merged: int, writes: int, seconds: float) -> None:
        """Called by the storage thread's hand-off after each group commit."""
        self.transactions += 1
        if self.durability_fsync:
            self.fsyncs += 1
        self.writes_persisted += writes
        self.group_commit_batches.observe(writes)
        self.commit_seconds += seconds

    def exposition(self, core_status: dict) -> bytes:
        """The text of ``/metrics``: these counters and the replication facts of
        ``core_status`` (the core's ``status()`` now)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        registry.register(StatusCollector(self.node_id, core_status))
        return generate_latest(registry)

    def collect(self):
        commands = CounterMetricFamily("chorus_commands", "Commands answered, by command",
                                       labels=["node", "command"])
        latency = HistogramMetricFamily("chorus_command_latency_seconds",
                                        "Time from a command's arrival to its reply being written",
                                        labels=["node", "command"])
        for name in sorted(self.command_latency):
            histogram = self.command_latency[name]
            buckets = histogram.buckets()
            commands.add_metric([self.node_id, name], buckets[-1][1])
            latency.add_metric([self.node_id, name], buckets, histogram.total)
        yield commands
        yield latency
        for metric, help_text, value in (
            ("chorus_received_bytes", "Bytes received from clients", self.bytes_in),
            ("chorus_sent_bytes", "Bytes sent to clients", self.bytes_out),
            ("chorus_connections", "Client connections accepted", self.connections_total),
            ("chorus_rejected_connections", "Client connections refused (clients.max)",
             self.rejected_connections),
            ("chorus_protocol_errors", "Client connections closed for a protocol error",
             self.protocol_errors),
            ("chorus_storage_transactions", "SQLite transactions committed (group commits)",
             self.transactions),
            ("chorus_storage_fsyncs", "Commits made durable with an fsync", self.fsyncs),
            ("chorus_storage_writes", "Rows and log entries written", self.writes_persisted),
            ("chorus_storage_commit_seconds", "Time spent committing", self.commit_seconds),
        ):
            family = CounterMetricFamily(metric, help_text, labels=["node"])
            family.add_metric([self.node_id], value)
            yield family
        batches = HistogramMetricFamily("chorus_group_commit_writes",
                                        "Writes per group-commit transaction", labels=["node"])
        batches.add_metric([self.node_id], self.group_commit_batches.buckets(),
                           self.group_commit_batches.total)
        yield batches
        clients = GaugeMetricFamily("chorus_connected_clients", "Connected clients",
                                    labels=["node"])
        clients.add_metric([self.node_id], self.connected_clients)
        yield clients


# Every state a follower can be in on its leader (``LeaderCore.status``), so that
# ``chorus_follower_state`` shows the others as 0 and a change of state is one query.
FOLLOWER_STATES = ("streaming", "snapshotting", "disconnected")

_REPLICATION_COUNTER_HELP = {
    "append_messages_sent": "Append messages sent to followers, heartbeats included",
    "entries_sent": "Log entries sent to followers, resends included",
    "snapshot_chunks_sent": "Snapshot chunks sent to followers being re-seeded",
    "snapshot_bytes_sent": "Snapshot bytes sent to followers being re-seeded",
    "snapshots_installed": "Snapshots this follower installed",
    "entries_received": "Log entries this follower appended from its leader",
    "writes_refused_no_quorum": "Writes refused before they were appended (-NOQUORUM)",
    "replies_in_doubt": "Writes answered -INDOUBT: appended, not confirmed in time",
    "forwarded_writes": "Writes this follower forwarded to its leader",
}


_ELECTION_HELP = {
    "started": "Elections this node started as a candidate",
    "won": "Elections this node won",
    "lost": "Elections this node started and did not win",
}


class StatusCollector:
    """The replication metrics in one ``core.status()`` dict; see the module docstring.

    Per-batch sizes are not observable from outside the core, so
    ``chorus_replication_entries_per_append`` is the mean since the node started
    (entries sent / Append messages sent, heartbeats included), not a histogram.
    """

    def __init__(self, node_id: str, status: dict) -> None:
        self.node_id = node_id
        self.status = status

    def _gauge(self, name: str, help_text: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, help_text, labels=["node"])
        family.add_metric([self.node_id], value)
        return family

    def collect(self):
        status = self.status
        position = status["position"]["index"]
        applied = status.get("applied_position", status["position"])["index"]
        yield self._gauge("chorus_log_position_index", "Index of the last entry in the log",
                          position)
        yield self._gauge("chorus_commit_index", "Index up to which writes are acknowledged",
                          status["commit_position"]["index"])
        yield self._gauge("chorus_applied_index", "Index of the last entry applied to the data",
                          applied)
        yield self._gauge("chorus_epoch", "Leader epoch (term) this node is in", status["epoch"])
        yield self._gauge("chorus_is_leader", "1 if this node is its cluster's leader",
                          int(status["leader_id"] == self.node_id))
        yield from self._failover(status)
        if "log" in status:
            log = status["log"]
            yield self._gauge("chorus_log_first_index", "Index of the oldest entry kept",
                              log["first_index"])
            yield self._gauge("chorus_log_entries", "Entries kept in the log", log["entries"])
            yield self._gauge("chorus_log_bytes", "Estimated bytes of the entries kept",
                              log["bytes"])
        if status.get("leader_contact_ms_ago") is not None:
            yield self._gauge("chorus_leader_last_contact_seconds",
                              "Seconds since this follower last heard from its leader",
                              status["leader_contact_ms_ago"] / 1000)
        if "inflight_entries" in status:
            yield self._gauge("chorus_replication_inflight_entries",
                              "Entries sent to followers and not yet confirmed",
                              status["inflight_entries"])
        yield from self._followers(status["members"])
        if "vector" in status:
            yield from self._multi_leader(status)
        if "replication" in status:
            yield from self._replication(status["replication"])

    def _counter(self, name: str, help_text: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, help_text, labels=["node"])
        family.add_metric([self.node_id], value)
        return family

    def _failover(self, status: dict):
        """Elections, time without a leader and divergent entries, as far as reported."""
        elections = status.get("elections")
        if elections is not None:
            for outcome, help_text in _ELECTION_HELP.items():
                yield self._counter(f"chorus_elections_{outcome}", help_text, elections[outcome])
        if "leaderless_ms" in status:
            yield self._gauge("chorus_leaderless_seconds",
                              "Seconds this node has been without a known leader (0: it knows one)",
                              status["leaderless_ms"] / 1000)
        if status.get("last_failover_ms") is not None:
            yield self._gauge("chorus_last_failover_seconds",
                              "Seconds the last failover took, from losing the leader to knowing "
                              "the next", status["last_failover_ms"] / 1000)
        if "divergent_entries" in status:
            yield self._gauge("chorus_divergent_entries",
                              "Divergent entries pending: removed from the log, neither "
                              "reapplied nor discarded", status["divergent_entries"])
        if "divergent_total" in status:
            yield self._counter("chorus_divergent_entries",
                                "Divergent entries quarantined on this node, resolved or not",
                                status["divergent_total"])

    def _multi_leader(self, status: dict):
        """A multi-leader node's families: its conflicts and merges, and per peer it pulls
        from, how far behind it is and when it last heard from it."""
        counters = status["counters"]
        yield self._counter("chorus_multileader_conflicts",
                            "Concurrent writes of one key this node applied", counters["conflicts"])
        yield self._counter("chorus_multileader_siblings_dropped",
                            "Concurrent versions dropped beyond siblings_max (data lost: raise "
                            "it or resolve siblings)", counters["siblings_dropped"])
        yield self._counter("chorus_multileader_writes_refused_clock_ahead",
                            "lww writes refused because this node's clock ran ahead of its peers",
                            counters["writes_refused_clock_ahead"])
        yield self._gauge("chorus_multileader_tombstones_pending",
                          "Keys holding deletes not yet known to every member",
                          status["tombstones_pending"])
        labels = ["node", "peer"]
        behind = GaugeMetricFamily("chorus_multileader_entries_behind",
                                   "Entries of the peer's log not yet pulled", labels=labels)
        contact = GaugeMetricFamily("chorus_multileader_peer_last_contact_seconds",
                                    "Seconds since the peer last answered or asked",
                                    labels=labels)
        for member in status["members"]:
            behind.add_metric([self.node_id, member["id"]], member["entries_behind"])
            if member["last_contact_ms"] is not None:
                contact.add_metric([self.node_id, member["id"]], member["last_contact_ms"] / 1000)
        yield from (behind, contact)

    def _followers(self, members: list[dict]):
        """Per-follower families, on a leader (the members it streams to)."""
        members = [m for m in members if "lag_entries" in m]
        if not members:
            return
        labels = ["node", "follower"]
        lag_entries = GaugeMetricFamily("chorus_follower_lag_entries",
                                        "Entries the follower has not confirmed durable",
                                        labels=labels)
        lag_seconds = GaugeMetricFamily("chorus_follower_lag_seconds",
                                        "How long the follower has been behind the log end",
                                        labels=labels)
        state = GaugeMetricFamily("chorus_follower_state",
                                  "1 for the follower's current state, 0 for the others",
                                  labels=[*labels, "state"])
        reseeds = CounterMetricFamily("chorus_follower_reseeds",
                                      "Times the follower was re-seeded from a snapshot",
                                      labels=labels)
        for member in members:
            follower = [self.node_id, member["id"]]
            lag_entries.add_metric(follower, member["lag_entries"])
            lag_seconds.add_metric(follower, member["lag_ms"] / 1000)
            for name in sorted({*FOLLOWER_STATES, member["state"]}):
                state.add_metric([*follower, name], int(member["state"] == name))
            reseeds.add_metric(follower, member["reseeds"])
        yield from (lag_entries, lag_seconds, state, reseeds)

    def _replication(self, counters: dict[str, int]):
        for name in sorted(counters):
            yield self._counter(f"chorus_replication_{name}",
                                _REPLICATION_COUNTER_HELP.get(name, f"Replication counter {name}"),
                                counters[name])
        appends = counters.get("append_messages_sent", 0)
        yield self._gauge("chorus_replication_entries_per_append",
                          "Mean entries per Append message since start (heartbeats included)",
                          counters.get("entries_sent", 0) / appends if appends else 0)
