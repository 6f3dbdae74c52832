"""``python -m chorusdb.bench cluster``: ChorusDB's leader mode side by side with Redis
replication, same run, same machine, same clients.

What runs, one group after another, each started fresh in a temporary directory on 127.0.0.1
and stopped by the PIDs of its processes before the next starts:

- Redis (``redis-server`` from PATH; skipped, with the command that installs it, if missing):
  a primary and two replicas (``--replicaof``), each with the reference configuration
  ``--save '' --appendonly yes --appendfsync everysec`` (``servers.start_redis_replicated``);
- ChorusDB, three ``chorusdb serve`` nodes in leader mode (``servers.start_chorusdb_cluster``),
  once for each of ``write_quorum`` 1, 2 and 3 with durability ``fsync`` and ``os``.

Then the peers (``--peers``, ``bench.peers``), each on its own workload of the same kind as "SET
on a replica" (a write acknowledged once a replica holds it): PostgreSQL 15 with two streaming
standbys and ``synchronous_standby_names = 'ANY 1 (s1, s2)'``, ``synchronous_commit =
remote_apply`` (pgbench upserts, 32 clients); etcd 3.4, three members (puts over its HTTP
gateway from 32 connections). A peer that is not installed is skipped with the command that
installs it.

On each group, against its primary (the leader):

1. The keyspace ``-r`` draws from is filled, so every SET overwrites a key and every GET finds
   one (``servers.preload_keyspace``).
2. ``redis-benchmark -t set|get -c 50 -P 1|16 -n N -r KEYSPACE -d 16 --csv``, run and parsed by
   ``single.measure``: ops/s, p50 and p99 from redis-benchmark itself.
3. "SET on a replica": 32 connections, each sending batches of 16 ``SET key value`` at a time
   and waiting for the batch before the next. On Redis every batch ends with ``WAIT 1 1000``,
   and an operation counts once that WAIT answered at least 1 (it errs when it answered 0); on
   ChorusDB with W = 2 the batch is the SETs alone, since each acknowledgement already means a
   follower holds the write durably; with W = 1 it is sent with ``WAIT 1 1000`` as on Redis.
   An operation's latency runs from sending its batch to the reply that confirms it (its own
   SET reply at W = 2, the batch's WAIT reply otherwise). Redis's WAIT promises a replica
   received the write (in memory); ChorusDB's promises a follower holds it durably.
4. Replication lag at half of peak load: a background load of SETs paced at half the group's
   ``SET -P 1`` rate from step 2 (8 connections, small batches every 2 ms, backlog dropped
   rather than burst), and meanwhile, one at a time, 500 samples: ``SET`` a fresh key on the
   leader; the lag is the time from its acknowledgement to when a follower (the followers in
   turn) shows it. On ChorusDB the sampler asks the leader ``CHORUS.POSITION`` and sends
   ``CHORUS.WAITPOS epoch index 1000`` to the follower, which answers once it applied the
   position: the figure includes that one extra round trip to the leader, so it errs high. On
   Redis the sampler polls ``GET`` on the replica back to back until the value shows, which
   errs high by up to one round trip. The figure's ops/s is the background load reached.

The drivers of steps 3 and 4 are asyncio on raw sockets with hiredis (uvloop when installed),
in this process: cheap enough per operation that the client is not what is measured.

Around every workload but the lag, the CPU time of every process of the group (all members, from
``/proc``) is read, and reported per 1,000 operations.

The output is a table (system, config, workload, ops/s, p50, p99, CPU s per 1,000 operations,
errors, ratio to Redis's figure for the same workload: ops/s over ops/s, for the lag p99 over
p99), the issue's goals
as pass/miss (``results.CLUSTER_GOALS``), a JSON file of every raw figure (``--json``, by
default under ``--output``), and a PNG plot beside it when matplotlib (the ``bench`` extra) is
installed. Exit code 0 whatever the figures are; 1 when a server or a run failed; 2 for bad
usage or a missing ``redis-benchmark``; 130 when interrupted (every server is stopped). What
happens around the measurements (finding the tools, the warnings, the exit codes, SIGTERM, the
JSON file's header) is ``bench.session``'s, the same as for ``bench single``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hiredis
from rich.console import Console

from chorusdb.bench import peers, results, servers, session, single
from chorusdb.bench.results import (REPLICATED_SET, REPLICATION_LAG, ClusterFigure, Run,
                                    redis_benchmark_workload)
from chorusdb.bench.servers import ReplicatedServers, ServerProcess, ServerStartError
from chorusdb.bench.session import UsageError

MEMBERS = 3                             # per group: a primary and two replicas
CHORUSDB_CONFIGS = {"w1-fsync": (1, "fsync"), "w1-os": (1, "os"),
                    "w2-fsync": (2, "fsync"), "w2-os": (2, "os"),
                    "w3-fsync": (3, "fsync"), "w3-os": (3, "os")}
TESTS = ("SET", "GET")
PIPELINES = (1, 16)
requests_default = 100_000      # per redis-benchmark run and per "SET on a replica" workload
requests_min = 1_000
requests_max = 20_000_000
quick_requests = 2_000
quick_keyspace_keys = 1_000
lag_samples_default = 500
quick_lag_samples = 20
replicated_connections = 32
replicated_batch_sets = 16
wait_replicas = 1
wait_timeout_ms = 1000
lag_load_fraction = 0.5         # of the group's SET -P 1 rate
load_connections = 8
load_tick_ms = 2                # the background load sends what is due this often
load_batch_commands_max = 256   # a connection further behind than this drops the backlog
lag_warmup_ms = 500             # of background load before the first sample
PEERS = {"postgres": peers.measure_postgres, "etcd": peers.measure_etcd}
peer_seconds_default = 10.0     # each peer's "SET on a replica" workload
peer_seconds_min, peer_seconds_max = 1.0, 600.0
quick_peer_seconds = 2.0
lag_sample_interval_ms = 5      # between one lag sample's end and the next one's start
lag_sample_timeout_ms = 1000    # a write not visible on the follower by then is an error
connect_timeout_s = 5.0
read_bytes_max = 256 * 1024     # per socket read of a driver connection
workload_timeout_s = 600.0      # one driver workload, end to end
INSTALL_REDIS = "sudo apt-get install redis-server"
INSTALL_TOOLS = f"{INSTALL_REDIS} (it brings redis-tools, which has redis-benchmark)"
MATPLOTLIB_MISSING = ("matplotlib is not installed (it comes with the bench extra: "
                      "pip install 'chorusdb[bench]'): no plot")
SUMMARY = "a 3-node ChorusDB leader cluster (W=1, W=2; fsync, os) against Redis replication"


class DriverError(RuntimeError):
    """A driver lost its connection or ran out of time: the workload measured nothing."""


@dataclass(frozen=True, slots=True)
class Settings:
    requests: int
    lag_samples: int
    keyspace_keys: int
    value_bytes: int
    configs: tuple[str, ...]            # keys of CHORUSDB_CONFIGS
    output_dir: Path
    json_path: Path | None              # None: under output_dir, named after the start time
    peers: tuple[str, ...] = ()         # keys of PEERS
    peer_seconds: float = 0.0

    def benchmark_settings(self) -> single.Settings:
        """What ``single.measure`` needs to build a redis-benchmark command line."""
        return single.Settings(
            durabilities=(), pipelines=PIPELINES, tests=TESTS, clients=single.clients_default,
            keyspace_keys=self.keyspace_keys, value_bytes=self.value_bytes, rounds=1,
            requests=self.requests, run_duration_s=0.0, output_dir=self.output_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=requests_default, metavar="N",
                        help=f"requests per redis-benchmark run and per 'SET on a replica' "
                             f"workload (default {requests_default:,}: a few minutes on 2 cores)")
    parser.add_argument("--lag-samples", type=int, default=lag_samples_default, metavar="N",
                        help=f"replication lag samples per group (default {lag_samples_default})")
    parser.add_argument("--configs", default=",".join(CHORUSDB_CONFIGS),
                        help=f"comma-separated ChorusDB clusters to run (default all: "
                             f"{','.join(CHORUSDB_CONFIGS)})")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"other replicated systems to run the 'SET on a replica' workload "
                             f"against (default {','.join(PEERS)}; 'none' for none); one that "
                             f"is not installed is skipped with the command that installs it")
    parser.add_argument("--peer-seconds", type=float, default=peer_seconds_default,
                        metavar="S", help=f"seconds each peer's workload runs (default "
                                          f"{peer_seconds_default:g})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {quick_requests:,} requests, {quick_lag_samples} lag "
                             f"samples, {quick_keyspace_keys:,} keys")
    parser.add_argument("--output", type=Path, default=Path("bench-results"),
                        help="directory for the JSON file and the plot (default ./bench-results)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="where the raw figures go (default OUTPUT/cluster-DATE.json)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The arguments checked; ``UsageError`` names the flag that is wrong."""
    if not requests_min <= args.requests <= requests_max:
        raise UsageError(f"--requests: expected {requests_min}..{requests_max}, got "
                         f"{args.requests}")
    if args.lag_samples < 1:
        raise UsageError(f"--lag-samples: expected at least 1, got {args.lag_samples}")
    configs = tuple(dict.fromkeys(c.strip() for c in args.configs.split(",") if c.strip()))
    if not configs or any(c not in CHORUSDB_CONFIGS for c in configs):
        raise UsageError(f"--configs: expected a comma-separated subset of "
                         f"{','.join(CHORUSDB_CONFIGS)}, got {args.configs!r}")
    peers = tuple(dict.fromkeys(p.strip() for p in args.peers.split(",")
                                if p.strip() and p.strip() != "none"))
    if any(p not in PEERS for p in peers):
        raise UsageError(f"--peers: expected a comma-separated subset of {','.join(PEERS)} "
                         f"or none, got {args.peers!r}")
    if not peer_seconds_min <= args.peer_seconds <= peer_seconds_max:
        raise UsageError(f"--peer-seconds: expected {peer_seconds_min:g}..{peer_seconds_max:g}, "
                         f"got {args.peer_seconds:g}")
    return Settings(
        requests=quick_requests if args.quick else args.requests,
        lag_samples=quick_lag_samples if args.quick else args.lag_samples,
        keyspace_keys=quick_keyspace_keys if args.quick else single.keyspace_keys_default,
        value_bytes=single.value_bytes_default, configs=configs, output_dir=args.output,
        json_path=args.json, peers=peers,
        peer_seconds=quick_peer_seconds if args.quick else args.peer_seconds)


# --- the drivers ------------------------------------------------------------------------------


def encode_command(*parts: bytes) -> bytes:
    """One command in RESP, as redis-benchmark and redis-py send it."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class RespConnection:
    """A client connection for the drivers: sends encoded commands, parses the replies with
    hiredis, and stamps each reply with the ``time.perf_counter()`` its bytes were read at."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    @classmethod
    async def open(cls, server: ServerProcess) -> RespConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(server.host, server.port), connect_timeout_s)
        return cls(reader, writer)

    async def exchange(self, payload: bytes, replies: int) -> list[tuple[object, float]]:
        """Send ``payload`` and read ``replies`` replies, each with the time it was read."""
        self._writer.write(payload)
        await self._writer.drain()
        received: list[tuple[object, float]] = []
        while len(received) < replies:
            data = await self._reader.read(read_bytes_max)
            if not data:
                raise DriverError("the server closed a driver's connection")
            read_at = time.perf_counter()
            self._parser.feed(data)
            reply = self._parser.gets()
            while reply is not False:
                received.append((reply, read_at))
                reply = self._parser.gets()
        assert len(received) == replies, (len(received), replies)
        return received

    def close(self) -> None:
        self._writer.close()


def _is_error(reply: object) -> bool:
    return isinstance(reply, hiredis.ReplyError)


def _run_async(workload: Awaitable) -> object:
    """Run a driver on uvloop where it is installed, bounded by ``workload_timeout_s``."""
    async def bounded() -> object:
        try:
            return await asyncio.wait_for(workload, workload_timeout_s)
        except (OSError, asyncio.TimeoutError) as e:
            raise DriverError(f"{type(e).__name__}: {e}") from None

    return servers.run_on_fast_loop(bounded())


@dataclass(slots=True)
class LatencyRecord:
    """What a driver saw: operations confirmed (with their latencies) and errors."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0

    @property
    def ops_per_s(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else 0.0


def _set_batch(rng: random.Random, count: int, keyspace: int, value: bytes) -> bytes:
    return b"".join(encode_command(b"SET", servers.benchmark_key(rng.randrange(keyspace)), value)
                    for _ in range(count))


async def replicated_sets(server: ServerProcess, settings: Settings, with_wait: bool,
                          seed: int) -> LatencyRecord:
    """The "SET on a replica" workload (module docstring, step 3)."""
    batches = math.ceil(settings.requests / (replicated_connections * replicated_batch_sets))
    wait = encode_command(b"WAIT", b"%d" % wait_replicas, b"%d" % wait_timeout_ms) \
        if with_wait else b""
    value = b"x" * settings.value_bytes
    record = LatencyRecord()

    async def connection(number: int) -> None:
        rng = random.Random(seed * replicated_connections + number)
        conn = await RespConnection.open(server)
        try:
            for _ in range(batches):
                payload = _set_batch(rng, replicated_batch_sets, settings.keyspace_keys,
                                     value) + wait
                sent = time.perf_counter()
                replies = await conn.exchange(payload, replicated_batch_sets + bool(wait))
                if not with_wait:
                    for reply, read_at in replies:
                        if _is_error(reply):
                            record.errors += 1
                        else:
                            record.latencies_ms.append((read_at - sent) * 1000)
                    continue
                (replicas, confirmed_at), sets = replies[-1], replies[:-1]
                failed = sum(_is_error(reply) for reply, _ in sets)
                if _is_error(replicas) or replicas < wait_replicas:
                    failed = replicated_batch_sets
                record.errors += failed
                record.latencies_ms.extend([(confirmed_at - sent) * 1000]
                                           * (replicated_batch_sets - failed))
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(n) for n in range(replicated_connections)))
    record.wall_s = time.perf_counter() - started
    return record


@dataclass(slots=True)
class LagRecord:
    """The lag samples (acknowledged on the leader -> visible on a follower, and sent ->
    visible), the background load reached while they were taken, and the errors."""

    lag_ms: list[float] = field(default_factory=list)
    write_to_visible_ms: list[float] = field(default_factory=list)
    errors: int = 0
    load_target_ops_per_s: float = 0.0
    load_ops_per_s: float = 0.0
    load_sets_answered: int = 0
    load_errors: int = 0


async def _paced_load(server: ServerProcess, ops_per_s: float, settings: Settings, seed: int,
                      stop: asyncio.Event, record: LagRecord) -> None:
    """One connection's share of the background load: every ``load_tick_ms``, the SETs that
    are due at ``ops_per_s``; a backlog beyond ``load_batch_commands_max`` is dropped."""
    rng = random.Random(seed)
    value = b"x" * settings.value_bytes
    conn = await RespConnection.open(server)
    try:
        started = time.perf_counter()
        scheduled = 0
        while not stop.is_set():
            due = int(ops_per_s * (time.perf_counter() - started)) - scheduled
            if due <= 0:
                await asyncio.sleep(load_tick_ms / 1000)
                continue
            if due > load_batch_commands_max:
                scheduled += due - load_batch_commands_max
                due = load_batch_commands_max
            scheduled += due
            replies = await conn.exchange(
                _set_batch(rng, due, settings.keyspace_keys, value), due)
            errors = sum(_is_error(reply) for reply, _ in replies)
            record.load_errors += errors
            record.load_sets_answered += due - errors
    finally:
        conn.close()


async def _sample_lag(group: ReplicatedServers, number: int, leader: RespConnection,
                      followers: list[RespConnection], record: LagRecord) -> None:
    """One lag sample (module docstring, step 4) on the ``number``-th fresh key."""
    key, value = b"lag:%d" % number, b"%d" % number
    sent = time.perf_counter()
    [(reply, acknowledged)] = await leader.exchange(encode_command(b"SET", key, value), 1)
    if _is_error(reply):
        record.errors += 1
        return
    follower = followers[number % len(followers)]
    if group.system == "chorusdb":
        [(position, _)] = await leader.exchange(encode_command(b"CHORUS.POSITION"), 1)
        epoch, index = position.split(b":")
        [(answer, visible)] = await follower.exchange(encode_command(
            b"CHORUS.WAITPOS", epoch, index, b"%d" % lag_sample_timeout_ms), 1)
        if _is_error(answer):
            record.errors += 1
            return
    else:
        while True:
            [(answer, visible)] = await follower.exchange(encode_command(b"GET", key), 1)
            if answer == value:
                break
            if (visible - acknowledged) * 1000 > lag_sample_timeout_ms:
                record.errors += 1
                return
    record.lag_ms.append((visible - acknowledged) * 1000)
    record.write_to_visible_ms.append((visible - sent) * 1000)


async def lag_under_load(group: ReplicatedServers, settings: Settings, load_ops_per_s: float,
                         seed: int) -> LagRecord:
    """Replication lag samples under a paced background load (module docstring, step 4)."""
    record = LagRecord(load_target_ops_per_s=load_ops_per_s)
    stop = asyncio.Event()
    loads = [asyncio.ensure_future(_paced_load(group.primary, load_ops_per_s / load_connections,
                                               settings, seed * load_connections + n, stop,
                                               record))
             for n in range(load_connections)]
    leader = await RespConnection.open(group.primary)
    followers = [await RespConnection.open(replica) for replica in group.replicas]
    try:
        await asyncio.sleep(lag_warmup_ms / 1000)
        for load in loads:
            if load.done():
                load.result()                   # a load that failed at once fails the run
        answered_before, started = record.load_sets_answered, time.perf_counter()
        for number in range(settings.lag_samples):
            await _sample_lag(group, number, leader, followers, record)
            await asyncio.sleep(lag_sample_interval_ms / 1000)
        record.load_ops_per_s = ((record.load_sets_answered - answered_before)
                                 / (time.perf_counter() - started))
    finally:
        stop.set()
        for conn in (leader, *followers):
            conn.close()
        await asyncio.gather(*loads)
    return record


# --- one group, all workloads -------------------------------------------------------------------


@dataclass(slots=True)
class GroupResult:
    figures: list[ClusterFigure] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    replicated: dict = field(default_factory=dict)
    lag: dict = field(default_factory=dict)


def _latency_summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values),
            **{f"p{label}_ms": round(results.percentile(values, fraction), 3)
               for label, fraction in (("50", 0.5), ("90", 0.9), ("99", 0.99),
                                       ("99.9", 0.999), ("100", 1.0))}}


def _p(values: list[float], fraction: float) -> float | None:
    return results.percentile(values, fraction) if values else None


def per_1k_ops(cpu_s: float, operations: int) -> float | None:
    """CPU seconds per 1,000 operations (None when nothing was done)."""
    return cpu_s * results.ops_per_cpu_figure / operations if operations else None


def confirms_with_wait(group: ReplicatedServers) -> bool:
    """Whether a SET's acknowledgement alone does not yet mean a replica holds it."""
    return group.system == "redis" or group.write_quorum < 2


def replicated_how(group: ReplicatedServers) -> str:
    return (f"{replicated_connections} connections x batches of {replicated_batch_sets} SETs"
            + (f" + WAIT {wait_replicas} {wait_timeout_ms}" if confirms_with_wait(group)
               else f" (acknowledged at W={group.write_quorum})"))


def measure_group(tool: str, group: ReplicatedServers, settings: Settings, seed: int,
                  step: Callable[[str], None], done: Callable[[], None],
                  say: Callable[[str], None]) -> GroupResult:
    """Every workload against one started group; the caller stops it."""
    name = f"{group.system} ({group.config})"
    out = GroupResult()
    step(f"{name}: filling {settings.keyspace_keys:,} keys")
    servers.preload_keyspace(group.primary, settings.keyspace_keys, settings.value_bytes)
    done()
    benchmark_settings = settings.benchmark_settings()

    def members_cpu_s() -> list[float]:
        return [servers.process_cpu_seconds(member.pid) for member in group.members]

    def group_cpu_s() -> float:
        return sum(members_cpu_s())

    for test in TESTS:
        for pipeline in PIPELINES:
            step(f"{name}: redis-benchmark {test} -P {pipeline}, {settings.requests:,} requests")
            cpu_before = group_cpu_s()
            run = single.measure(tool, group.primary, test, pipeline, settings.requests,
                                 benchmark_settings, 1)
            out.runs.append(run)
            out.figures.append(ClusterFigure(
                group.system, group.config, redis_benchmark_workload(test, pipeline), run.rps,
                run.p50_latency_ms, run.p99_latency_ms,
                f"redis-benchmark -c {single.clients_default} -P {pipeline} -t {test.lower()}",
                cpu_s_per_1k_ops=per_1k_ops(group_cpu_s() - cpu_before, run.requests)))
            say(f"{name} {test} -P {pipeline}: {run.rps:,.0f} ops/s")
            done()
    how = replicated_how(group)
    step(f"{name}: {REPLICATED_SET} ({how})")
    members_before = members_cpu_s()
    replicated = _run_async(replicated_sets(group.primary, settings, confirms_with_wait(group),
                                            seed))
    members_used = [after - before for before, after in zip(members_before, members_cpu_s())]
    replicated_cpu_s = sum(members_used)
    if not replicated.latencies_ms:
        raise DriverError(f"{name}: every '{REPLICATED_SET}' operation failed "
                          f"({replicated.errors} errors)")
    ops = len(replicated.latencies_ms)
    # Where the CPU of a replicated write goes, member by member (``members``: primary first).
    by_member = [{"pid": member.pid, "primary": member is group.primary,
                  "cpu_us_per_op": round(used / ops * 1e6, 1)}
                 for member, used in zip(group.members, members_used)]
    out.replicated = {"how": how, "ops": ops,
                      "errors": replicated.errors, "wall_s": round(replicated.wall_s, 3),
                      "ops_per_s": round(replicated.ops_per_s, 1),
                      "latency": _latency_summary(replicated.latencies_ms),
                      "cpu_by_member": by_member}
    out.figures.append(ClusterFigure(
        group.system, group.config, REPLICATED_SET, replicated.ops_per_s,
        _p(replicated.latencies_ms, 0.5), _p(replicated.latencies_ms, 0.99), how,
        replicated.errors,
        cpu_s_per_1k_ops=per_1k_ops(replicated_cpu_s, len(replicated.latencies_ms))))
    say(f"{name} {REPLICATED_SET}: {replicated.ops_per_s:,.0f} ops/s, "
        f"{replicated.errors} errors; CPU µs per write, primary first: "
        f"{', '.join(str(member['cpu_us_per_op']) for member in by_member)}")
    done()
    set_p1 = next(r.rps for r in out.runs if (r.test, r.pipeline) == ("SET", 1))
    load = set_p1 * lag_load_fraction
    step(f"{name}: {settings.lag_samples} lag samples under {load:,.0f} SET/s")
    lag = _run_async(lag_under_load(group, settings, load, seed))
    method = ("CHORUS.POSITION on the leader, then CHORUS.WAITPOS on a follower"
              if group.system == "chorusdb" else "GET polled on a replica")
    lag_how = (f"{settings.lag_samples} samples, followers in turn, {method}; background "
               f"load {load:,.0f} SET/s target ({lag_load_fraction:.0%} of SET -P 1)")
    out.lag = {"how": lag_how, **asdict(lag),
               "lag": _latency_summary(lag.lag_ms),
               "write_to_visible": _latency_summary(lag.write_to_visible_ms)}
    out.lag["lag_ms"] = [round(v, 4) for v in lag.lag_ms]
    out.lag["write_to_visible_ms"] = [round(v, 4) for v in lag.write_to_visible_ms]
    out.figures.append(ClusterFigure(
        group.system, group.config, REPLICATION_LAG, lag.load_ops_per_s, _p(lag.lag_ms, 0.5),
        _p(lag.lag_ms, 0.99), lag_how, lag.errors + lag.load_errors))
    say(f"{name} lag: p50 {_p(lag.lag_ms, 0.5) or 0:.3f} ms, p99 "
        f"{_p(lag.lag_ms, 0.99) or 0:.3f} ms under {lag.load_ops_per_s:,.0f} SET/s")
    done()
    return out


STEPS_PER_GROUP = 2 + len(TESTS) * len(PIPELINES) + 2    # start, fill, runs; replicated, lag


def _measure_all(tool: str, redis_server: str | None, settings: Settings, status: Console
                 ) -> tuple[tuple[list[ClusterFigure], dict], dict[str, str]]:
    """Start, measure and stop each group in turn; a group is stopped whatever happens."""
    plans: list[tuple[str, Callable[[Path], ReplicatedServers]]] = []
    if redis_server:
        plans.append(("redis (everysec)", lambda d: servers.start_redis_replicated(
            d, redis_server, MEMBERS - 1)))
    for config in settings.configs:
        write_quorum, durability = CHORUSDB_CONFIGS[config]
        plans.append((f"chorusdb (W={write_quorum} {durability})",
                      lambda d, w=write_quorum, dur=durability:
                      servers.start_chorusdb_cluster(d, MEMBERS, w, dur)))
    figures: list[ClusterFigure] = []
    raw: dict = {}
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="chorusdb-bench-cluster-") as tmp, \
            session.progress_bar(status) as progress:
        task = progress.add_task("starting",
                                 total=STEPS_PER_GROUP * len(plans) + len(settings.peers))

        def step(description: str) -> None:
            progress.update(task, description=description)

        def say(line: str) -> None:
            progress.console.print(line, highlight=False, markup=False)

        for seed, (name, start) in enumerate(plans, start=1):
            step(f"starting {name}: {MEMBERS} processes")
            group = start(Path(tmp) / f"group{seed}")
            try:
                progress.advance(task)
                say(f"started {name}: pids "
                    f"{', '.join(str(s.pid) for s in group.members)}")
                result = measure_group(tool, group, settings, seed, step,
                                       lambda: progress.advance(task), say)
            finally:
                servers.stop_group(group)
            versions[group.system] = group.primary.version
            figures.extend(result.figures)
            raw[f"{group.system} {group.config}"] = {
                "pids": [s.pid for s in group.members],
                "redis_benchmark_runs": [asdict(r) for r in result.runs],
                "replicated_set": result.replicated, "replication_lag": result.lag}
        for name in settings.peers:
            step(f"{name}: {REPLICATED_SET} for {settings.peer_seconds:g} s")
            measured = PEERS[name](Path(tmp) / name, settings.peer_seconds,
                                   settings.keyspace_keys, progress.console)
            progress.advance(task)
            if isinstance(measured, peers.Skipped):
                say(f"{name} skipped: {measured.reason}")
                raw[name] = {"skipped": measured.reason}
                continue
            figure = measured.figure
            figures.append(figure)
            versions[figure.system] = measured.version
            raw[f"{figure.system} {figure.config}"] = {
                "pids": list(measured.pids), "cpu_s": measured.cpu_s,
                "operations": measured.operations, "replicated_set": asdict(figure)}
            say(f"{figure.system} ({figure.config}) {REPLICATED_SET}: "
                f"{figure.ops_per_s:,.0f} ops/s")
    return (figures, raw), versions


# --- output ----------------------------------------------------------------------------------------

WORKLOAD_ORDER = (*(redis_benchmark_workload(t, p) for t in TESTS for p in PIPELINES),
                  REPLICATED_SET, REPLICATION_LAG)


def ordered(figures: list[ClusterFigure]) -> list[ClusterFigure]:
    """By workload, then in the order the groups ran (Redis first)."""
    return sorted(figures, key=lambda f: WORKLOAD_ORDER.index(f.workload))


def write_plot(figures: list[ClusterFigure], path: Path) -> str:
    """A PNG of the figures: ops/s per workload, the lag percentiles per group, and every
    group's throughput against its p99 latency, per workload. Returns what happened, for the
    report."""
    try:
        import matplotlib
    except ImportError:
        return MATPLOTLIB_MISSING
    matplotlib.use("Agg")
    from matplotlib import pyplot

    groups = list(dict.fromkeys(f"{f.system} {f.config}" for f in figures))
    by_key = {(f"{f.system} {f.config}", f.workload): f for f in figures}
    throughput = WORKLOAD_ORDER[:-1]
    fig, (rates, lags, tradeoff) = pyplot.subplots(1, 3, figsize=(20, 5),
                                                   gridspec_kw={"width_ratios": [3, 1, 2]})
    markers = "osD^v<>pX*"
    for number, workload in enumerate(throughput):
        points = [(f.ops_per_s, f.p99_ms, f"{f.system} {f.config}") for f in figures
                  if f.workload == workload and f.p99_ms]
        if points:
            tradeoff.scatter([p[0] for p in points], [p[1] for p in points],
                             marker=markers[number % len(markers)], label=workload)
            for ops, p99, label in points:
                tradeoff.annotate(label, (ops, p99), fontsize=6)
    tradeoff.set_xscale("log")
    tradeoff.set_yscale("log")
    tradeoff.set_xlabel("ops/s (log)")
    tradeoff.set_ylabel("p99 ms (log)")
    tradeoff.legend(fontsize="small")
    tradeoff.set_title("throughput against p99 latency")
    width = 0.8 / len(groups)
    for number, group in enumerate(groups):
        xs = [i + number * width for i in range(len(throughput))]
        rates.bar(xs, [by_key[group, w].ops_per_s if (group, w) in by_key else 0
                       for w in throughput], width, label=group)
        lag = by_key.get((group, REPLICATION_LAG))
        if lag is not None and lag.p99_ms is not None:
            lags.bar([number], [lag.p99_ms], 0.6)
            lags.plot([number], [lag.p50_ms], "k_", markersize=20)
    rates.set_xticks([i + 0.4 - width / 2 for i in range(len(throughput))], throughput)
    rates.set_yscale("log")
    rates.set_ylabel("ops/s (log scale)")
    rates.legend(fontsize="small")
    rates.set_title("throughput against the primary / leader")
    lags.set_xticks(range(len(groups)), groups, rotation=60, ha="right", fontsize="small")
    lags.set_ylabel("ms")
    lags.set_title("replication lag p99 (bar), p50 (line)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot.close(fig)
    return f"plot: {path}"


def run(args: argparse.Namespace) -> int:
    """The whole benchmark (see the module docstring); returns the exit code."""
    return session.run("cluster", args, settings_from=settings_from, measure=_measure_all,
                       failures=(ServerStartError, single.BenchmarkRunError, DriverError,
                                 peers.PeerError),
                       report=_report, install_tools=INSTALL_TOOLS, install_redis=INSTALL_REDIS)


def _report(settings: Settings, measured: tuple[list[ClusterFigure], dict],
            done: session.Session) -> None:
    """The table, the errors and the goals to the terminal; every raw figure to the JSON file
    (``--json``, or ``cluster-DATE.json`` under ``--output``) and the plot beside it."""
    figures, raw = measured
    figures = ordered(results.compare_with_redis(figures))
    goals = results.check_cluster_goals(figures)
    machine = done.machine
    console = Console()
    console.print(results.cluster_table(
        figures, title=f"{MEMBERS} members each, on {machine['cores']} cores; "
                       f"-r {settings.keyspace_keys} -d {settings.value_bytes}, "
                       f"{settings.requests:,} requests per run"))
    console.print("p50, p99: ms. CPU/1k: CPU seconds of every process of the group per 1,000 "
                  "operations. ×Redis: ops/s over Redis's ops/s (higher is better). For the lag: "
                  "ops/s is the background load it ran under, p50 and p99 the lag, and ×Redis "
                  "its p99 over Redis's (lower is better)", highlight=False)
    for line in results.cluster_error_lines(figures):
        console.print(line, style="yellow", highlight=False, markup=False)
    for goal in goals:
        console.print(goal.sentence(), highlight=False, markup=False)
    console.print(f"1-minute load average {machine['load_average_1_5_15_before'][0]} before, "
                  f"{machine['load_average_1_5_15_after'][0]} after, on "
                  f"{machine['cores']} cores", highlight=False)
    json_path = settings.json_path or settings.output_dir / f"cluster-{done.stamp}.json"
    document = {
        **done.document_header(
            settings, json_path=str(json_path), members=MEMBERS,
            redis_benchmark_clients=single.clients_default,
            replicated_connections=replicated_connections,
            replicated_batch_sets=replicated_batch_sets, lag_load_fraction=lag_load_fraction,
            load_connections=load_connections),
        "redis_benchmark_command": " ".join(single.benchmark_argv(
            "redis-benchmark", servers.HOST, "PORT", "SET|GET", "1|16", settings.requests,
            settings.benchmark_settings())),
        "figures": [asdict(f) for f in figures],
        "goals": [{"goal": g.goal.title, "config": g.config, "ratio": g.ratio, "p99_ms": g.p99_ms,
                   "reference": g.goal.reference, "met": g.met}
                  for g in goals],
        "groups": raw,
    }
    done.write_document(document, json_path, console)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    console.print(write_plot(figures, settings.output_dir / f"cluster-{done.stamp}.png"),
                  highlight=False, markup=False)
