"""``chorusdb bench multileader``: a 3-node multi-leader cluster with every node writing.

Three figures, each on a fresh cluster (durability ``fsync`` by default) on 127.0.0.1:

1. **Write throughput per node**: one ``redis-benchmark`` per node at once, each writing its own
   keys (``SET nK:__rand_int__ value``, ``-c 16 -P 16``), so no two nodes touch one key; the
   figure is each node's rate and the cluster's sum, with p50 and p99.
2. **Replication delay**: while every node takes a background load (``-c 4 -P 1``), a unique
   value is written on one node and another node is polled until it shows it; the delay is from
   the write's acknowledgement to the first poll that sees it (polls every
   ``poll_interval_s``, so the figure errs high by up to that much), nodes in turn.
3. **Conflict rate**: every node writes the same small set of hot keys at once; after the nodes
   converge (equal digests), each node's count of conflicts it applied, per 1,000 writes, and
   how many of the hot keys were left with more than one sibling.

Raw figures go to ``bench-results/multileader-DATE.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table

from chorusdb.bench import results, servers, session, single
from chorusdb.bench.servers import ServerProcess

SUMMARY = ("a 3-node multi-leader cluster with every node writing: throughput per node, "
           "replication delay, and the conflict rate on a hot key set")
MEMBERS = 3
requests_default = 100_000
delay_samples_default = 300
hot_keys_default = 10
throughput_clients, throughput_pipeline = 16, 16
background_clients = 4
poll_interval_s = 0.0005
delay_wait_s = 10.0
converge_wait_s = 60.0
ready_wait_s = 30.0
keyspace_keys = 100_000
value_bytes = 16
EXIT_OK, EXIT_USAGE = 0, 2


@dataclass(frozen=True, slots=True)
class NodeThroughput:
    node: str
    ops_per_s: float
    p50_ms: float | None
    p99_ms: float | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=requests_default,
                        help=f"SETs per node in the throughput run (default {requests_default:,})")
    parser.add_argument("--delay-samples", type=int, default=delay_samples_default,
                        help=f"replication delay samples (default {delay_samples_default})")
    parser.add_argument("--hot-keys", type=int, default=hot_keys_default,
                        help=f"keys every node writes in the conflict run (default "
                             f"{hot_keys_default})")
    parser.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    parser.add_argument("--output", type=Path, default=Path("bench-results"))


def run(args: argparse.Namespace) -> int:
    if args.requests < 1000 or args.delay_samples < 1 or args.hot_keys < 1:
        print("--requests must be at least 1,000, --delay-samples and --hot-keys at least 1")
        return EXIT_USAGE
    tool = shutil.which("redis-benchmark")
    if tool is None:
        print(f"redis-benchmark not found: {single.INSTALL_TOOLS}")
        return EXIT_USAGE
    console = Console()
    started = datetime.now(timezone.utc)
    document: dict = {"benchmark": "multileader",
                      "started_at": started.isoformat(timespec="seconds"),
                      "chorusdb_source": session.source_revision(),
                      "settings": {"requests": args.requests, "delay_samples": args.delay_samples,
                                   "hot_keys": args.hot_keys, "durability": args.durability},
                      "machine": session.machine_facts()}
    with tempfile.TemporaryDirectory(prefix="chorusdb-bench-multileader-") as tmp:
        console.print("throughput: every node writing its own keys")
        with cluster_of(Path(tmp) / "throughput", args.durability) as nodes:
            throughput = measure_throughput(tool, nodes, args.requests)
        console.print("replication delay under a background load on every node")
        with cluster_of(Path(tmp) / "delay", args.durability) as nodes:
            delays = measure_delay(tool, nodes, args.delay_samples)
        console.print("conflicts: every node writing the same hot keys")
        with cluster_of(Path(tmp) / "conflicts", args.durability) as nodes:
            conflicts = measure_conflicts(tool, nodes, args.requests // 4, args.hot_keys)
    document.update(throughput=[asdict(t) for t in throughput], delay_ms=delays,
                    delay=_summary(delays), conflicts=conflicts)
    console.print(report(throughput, delays, conflicts))
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"multileader-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=1))
    console.print(f"raw figures: {path}")
    return EXIT_OK


class cluster_of:
    """A started 3-node multi-leader cluster (context manager): its nodes, stopped by PID."""

    def __init__(self, directory: Path, durability: str) -> None:
        self.directory, self.durability = directory, durability
        self.nodes: list[tuple[ServerProcess, str]] = []

    def __enter__(self) -> list[tuple[ServerProcess, str]]:
        configs = servers.write_cluster_configs(self.directory, MEMBERS, 1, self.durability,
                                                mode="multi-leader")
        processes = [servers.spawn_node(c.parent, c) for c in configs]
        try:
            for process, config in zip(processes, configs):
                server = servers.await_node(process, config.parent, config, self.durability)
                self.nodes.append((server, _admin_address(config)))
            deadline = time.monotonic() + ready_wait_s
            while not all(_status(admin).get("taking_writes") for _, admin in self.nodes):
                if time.monotonic() > deadline:
                    raise servers.ServerStartError("the nodes did not all take writes within "
                                                   f"{ready_wait_s:.0f} s")
                time.sleep(0.05)
        except BaseException:
            for process in processes:
                servers.stop_process(process, servers.server_stop_timeout_s)
            raise
        return self.nodes

    def __exit__(self, *exc_info: object) -> None:
        for server, _ in self.nodes:
            servers.stop(server)


def _admin_address(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("admin = "):
            return line.split('"')[1]
    raise AssertionError(f"{config} names no admin address")


def _status(admin: str) -> dict:
    with urllib.request.urlopen(f"http://{admin}/status", timeout=5) as answer:
        return json.load(answer)


def _benchmark(tool: str, server: ServerProcess, key: str, requests: int, clients: int,
               pipeline: int, random_keys: int) -> subprocess.Popen:
    return subprocess.Popen(
        [tool, "-h", server.host, "-p", str(server.port), "-c", str(clients), "-P", str(pipeline),
         "-n", str(requests), "-r", str(random_keys), "--csv", "SET", key, "v" * value_bytes],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> results.CsvLine:
    out, err = process.communicate(timeout=single.benchmark_run_timeout_s)
    if process.returncode != 0:
        raise single.BenchmarkRunError(f"redis-benchmark exited {process.returncode}: {err[-500:]}")
    (line,) = results.parse_benchmark_csv(out).values()
    return line


def measure_throughput(tool: str, nodes: list[tuple[ServerProcess, str]],
                       requests: int) -> list[NodeThroughput]:
    runs = [_benchmark(tool, server, f"n{i}:__rand_int__", requests, throughput_clients,
                       throughput_pipeline, keyspace_keys)
            for i, (server, _) in enumerate(nodes, start=1)]
    lines = [_finish(process) for process in runs]
    return [NodeThroughput(f"n{i}", line.rps, line.p50_latency_ms, line.p99_latency_ms)
            for i, line in enumerate(lines, start=1)]


def measure_delay(tool: str, nodes: list[tuple[ServerProcess, str]], samples: int) -> list[float]:
    load = [_benchmark(tool, server, f"load{i}:__rand_int__", 10**8, background_clients, 1,
                       keyspace_keys) for i, (server, _) in enumerate(nodes, start=1)]
    clients = [redis.Redis(host=s.host, port=s.port, socket_timeout=5) for s, _ in nodes]
    delays = []
    try:
        time.sleep(1.0)                       # the load is running
        for sample in range(samples):
            writer, reader = clients[sample % MEMBERS], clients[(sample + 1) % MEMBERS]
            value = f"sample-{sample}"
            writer.set("delay-probe", value)
            acknowledged = time.perf_counter()
            deadline = acknowledged + delay_wait_s
            while reader.get("delay-probe") != value.encode():
                if time.perf_counter() > deadline:
                    raise single.BenchmarkRunError(f"sample {sample} not visible within "
                                                   f"{delay_wait_s:.0f} s")
                time.sleep(poll_interval_s)
            delays.append(round((time.perf_counter() - acknowledged) * 1000, 3))
    finally:
        for process in load:
            process.kill()
            process.wait()
        for client in clients:
            client.close()
    return delays


def measure_conflicts(tool: str, nodes: list[tuple[ServerProcess, str]], requests: int,
                      hot_keys: int) -> dict:
    runs = [_benchmark(tool, server, "hot:__rand_int__", requests, 4, 1, hot_keys)
            for server, _ in nodes]
    lines = [_finish(process) for process in runs]
    clients = [redis.Redis(host=s.host, port=s.port, socket_timeout=5) for s, _ in nodes]
    try:
        deadline = time.monotonic() + converge_wait_s
        while len({c.execute_command("CHORUS.DIGEST") for c in clients}) > 1:
            if time.monotonic() > deadline:
                raise single.BenchmarkRunError("the nodes did not converge")
            time.sleep(0.1)
        # redis-benchmark pads __rand_int__ to 12 digits.
        siblings = [len(clients[0].execute_command("CHORUS.SIBLINGS", f"hot:{k:012d}")[1])
                    for k in range(hot_keys)]
    finally:
        for client in clients:
            client.close()
    writes = requests * MEMBERS
    per_node = [_status(admin)["counters"]["conflicts"] for _, admin in nodes]
    return {"writes": writes, "hot_keys": hot_keys,
            "ops_per_s_per_node": [round(line.rps, 1) for line in lines],
            "conflicts_applied_per_node": per_node,
            "conflicts_per_1k_writes": round(sum(per_node) / MEMBERS / writes * 1000, 2),
            "keys_left_with_siblings": sum(1 for count in siblings if count > 1),
            "siblings_per_hot_key": siblings}


def _summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"count": len(ordered), "p50_ms": results.percentile(ordered, 0.5),
            "p99_ms": results.percentile(ordered, 0.99), "max_ms": ordered[-1]}


def report(throughput: list[NodeThroughput], delays: list[float], conflicts: dict) -> Table:
    table = Table(title="multi-leader, 3 nodes, every node writing")
    for column in ("figure", "value"):
        table.add_column(column)
    for node in throughput:
        table.add_row(f"SET/s on {node.node} (-c {throughput_clients} -P {throughput_pipeline})",
                      f"{node.ops_per_s:,.0f} (p50 {node.p50_ms} ms, p99 {node.p99_ms} ms)")
    table.add_row("SET/s, the cluster", f"{sum(n.ops_per_s for n in throughput):,.0f}")
    summary = _summary(delays)
    table.add_row("replication delay (write acknowledged -> visible on another node)",
                  f"p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
                  f"max {summary['max_ms']:.2f} ms over {summary['count']} samples")
    table.add_row(f"conflicts on {conflicts['hot_keys']} hot keys",
                  f"{conflicts['conflicts_per_1k_writes']} per 1,000 writes; "
                  f"{conflicts['keys_left_with_siblings']} keys left with siblings")
    return table
