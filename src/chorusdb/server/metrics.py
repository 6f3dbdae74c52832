"""Prometheus metrics of one node, counted on the hot path as plain integers.

``prometheus_client``'s own Counter and Histogram take a lock and do several lookups per update;
at a hundred thousand commands a second that is a large share of one core. So the server counts
into plain ints and lists here, on the event-loop thread, and a custom collector turns them into
metric families only when ``/metrics`` is scraped.
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
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

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
