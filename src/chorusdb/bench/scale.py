"""``python -m chorusdb.bench scale``: how a ChorusDB leader-mode cluster's throughput, latency
and memory grow along five axes, one axis after another.

Every cluster is started fresh in a temporary directory on 127.0.0.1 from
``servers.write_cluster_configs`` (``--write-quorum``, 1 by default; ``--durability``, ``os``
by default; the first member leads), as ``servers.start_chorusdb_cluster`` does but with
election timeouts of 5-10 s instead of 0.5-1 s (``STABLE_LEADERSHIP``: a fill of large values
on a shared 2-core machine otherwise sets off elections, and this benchmark is not about
failover), and stopped by the PIDs of its processes before the next one starts. Throughput
and latency come from ``redis-benchmark -c 50 --csv`` against the leader (``single.measure``:
ops/s, p50 and p99 as redis-benchmark reports them); memory from
``/proc/PID/status`` (``VmRSS``, the resident set now; ``VmHWM``, its peak since the process
started), every thread of the node included. Before a workload runs, the keyspace it draws from
(``-r``) is filled through a raw socket, pipelined in batches bounded by keys and bytes
(``fill``), and every follower is waited for until it applied the leader's position
(``CHORUS.WAITPOS``), on the way and at the end, so each measurement starts from the same steady
state on every member.

The axes (``AXES``):

1. ``value-size``: values of 100 B, 1 KiB, 10 KiB, 100 KiB and 1 MiB (``-d``), 3 members each.
   The keyspace holds ``value_axis_dataset_bytes`` at most (so 1 MiB values do not need GiBs),
   and a run sends at most ``value_axis_run_bytes`` of values, so a point takes seconds whatever
   the size. SET and GET -P 1; the leader's RSS after the fill and its peak after the runs.
2. ``keys``: 10^4, 10^5 and 10^6 keys of 16 bytes (10^7 with ``--large``: the fill alone then
   takes many minutes), 3 members. The RSS of the leader and of a follower before and after the
   fill give the bytes each key costs in memory (the fill's log entries included: every node
   keeps the newest ``log_retention_entries``, 100,000 by default, in memory as well as in
   SQLite); the leader's SQLite files (database and WAL) after the fill the bytes it costs on
   disk. SET and GET -P 1 over that keyspace.
3. ``followers``: clusters of 2 to 5 members (1 to 4 followers), 10^4 keys; SET -P 1, then the
   replication lag under a background load of half that SET rate: ``cluster.lag_under_load``,
   which asks the leader ``CHORUS.POSITION`` after each acknowledged SET and sends
   ``CHORUS.WAITPOS`` to a follower (the followers in turn); the figure includes that extra
   round trip, so it errs high.
4. ``pipeline``: SET and GET at -P 1, 4, 16 and 64 with 50 clients, 10^5 keys, one cluster.
5. ``seeding``: how fast a new member is seeded from a snapshot. A 3-member cluster starts with
   only the leader and one follower; the leader is filled with ``--seed-mib`` of 4 KiB values
   (256 MiB by default, 1 GiB with ``--large``) while the third member is down, with a log
   retention (``[leader] log_retention_entries`` and ``log_hold_entries_max``) far shorter than
   the fill, and the benchmark waits until the leader trimmed its log past the third member's
   need. The third member then starts empty and must be seeded from a snapshot; its ``/status``
   and the leader's are polled from its launch until it is seeded: its ``applied_position``
   and, at the leader, its ``durable_position`` (a follower acknowledges only what it
   committed to SQLite) both at the leader's position, with the leader streaming to it, for
   ``seed_stable_s`` on end. The seeding rate is the dataset's MiB over the time from launch
   to the start of that stretch (the time from its ready line, and to its first install, are
   reported too). Installs (its applied position reaching the leader's) and self re-seeds
   (falling back after that: the member dropped its data and asked to be seeded again) are
   counted, and the reasons both ends give (``reseed_reason``) kept. A member not seeded
   within ``seed_timeout_s`` (60 s, or 0.5 s per MiB of the dataset if longer) is reported as
   such, with its samples, not as a failure.

Output: a rich table per axis; a JSON file of every raw figure under ``--output``
(``scale-DATE.json``, with ``bench.session``'s header: machine, load, versions, git commit);
and, when matplotlib is installed (the ``bench`` extra), ``scale-DATE.png``: one panel per axis,
throughput and p99 against the axis value, log scales where the range is wide, and the
seeded member's applied position against time. What happens around the measurements (the
tools, the warnings, the exit codes, SIGTERM) is ``bench.session``'s; ``redis-server`` is not
used (the session's warning when it is missing can be ignored). Exit code 0 whatever the
figures are; 1 when a server or a run failed; 2 for bad usage or a missing
``redis-benchmark``; 130 when interrupted (every server is stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hiredis
import redis
from rich import box
from rich.console import Console
from rich.table import Table

from chorusdb import __version__
from chorusdb.bench import cluster, results, servers, session, single
from chorusdb.bench.failover import BenchNode
from chorusdb.bench.servers import ReplicatedServers, ServerProcess, ServerStartError
from chorusdb.bench.session import UsageError
from chorusdb.server.config import load_config
from chorusdb.storage.sqlite_store import store_file_name

VALUE_SIZE, KEYS, FOLLOWERS, PIPELINE, SEEDING = AXES = (
    "value-size", "keys", "followers", "pipeline", "seeding")
DURABILITIES = ("os", "fsync")
KIB, MIB = 1024, 1024 * 1024
TESTS = ("SET", "GET")

members_default = 3                     # per cluster of the value-size, keys, pipeline axes
clients = 50                            # redis-benchmark -c
value_sizes_bytes = (100, KIB, 10 * KIB, 100 * KIB, MIB)
quick_value_sizes_bytes = (100, 10 * KIB)
key_counts = (10_000, 100_000, 1_000_000)
large_key_count = 10_000_000
quick_key_counts = (1_000, 10_000)
member_counts = (2, 3, 4, 5)
quick_member_counts = (2, 3)
pipeline_depths = (1, 4, 16, 64)
quick_pipeline_depths = (1, 16)
small_value_bytes = single.value_bytes_default      # the keys, followers and pipeline axes
followers_axis_keys = 10_000
pipeline_axis_keys = 100_000
quick_axis_keys = 1_000                 # the followers and pipeline axes under --quick
value_axis_dataset_bytes = 64 * MIB     # the value-size axis's keyspace holds at most this
value_axis_keys_max = 10_000
value_axis_keys_min = 16
value_axis_run_bytes = 128 * MIB        # of values one value-size run sends at most
requests_default = 40_000               # per run (the value-size axis: fewer for big values)
requests_min = 1_000
requests_max = 20_000_000
quick_requests = 1_000
value_axis_requests_min = 200           # even 1 MiB values: 4 requests per client
pipeline_requests_exponent = 1 / 3     # a -P D run gets --requests x D ** this (deeper is faster)
lag_samples_default = 200
quick_lag_samples = 20
lag_load_fraction = cluster.lag_load_fraction
seed_mib_default = 256
seed_mib_large = 1024
quick_seed_mib = 4
seed_mib_max = 64 * 1024
seed_value_bytes = 4 * KIB
seed_retention_divisor = 16             # log_retention_entries = seeded keys / this
seed_hold_factor = 2                    # log_hold_entries_max = retention entries x this
seed_retention_entries_min = 16
fill_batch_keys_max = 1_000             # SETs per pipelined batch of a fill
fill_batch_bytes_max = 1 * MIB          # of values per batch
fill_settle_keys_max = 20_000           # a fill waits for the followers this often ...
fill_settle_bytes_max = 16 * MIB        # ... or after this many bytes of values
fill_timeout_s = 120.0                  # per batch of a fill
read_bytes_max = 256 * KIB              # per socket read of a fill
catch_up_timeout_s = 600.0              # for a follower to apply what the fill wrote
catch_up_wait_ms = 1_000                # one CHORUS.WAITPOS; repeated until the above
command_timeout_s = 5.0                 # a redis-py command other than WAITPOS
leader_status_timeout_s = 30.0          # for the seeding leader to trim its log
seed_timeout_s_min = 60.0               # for the new member to be seeded, at least ...
seed_timeout_s_per_mib = 0.5            # ... and this long per MiB of the dataset
seed_stable_s = 3.0                     # caught up at both ends this long counts as seeded
STREAMING = "streaming"                 # the leader's word for a follower it streams to
status_poll_interval_s = 0.05
# Every cluster here runs with election timeouts ten times the defaults: on a shared 2-core
# machine, a follower busy with a fill of large values can miss the leader's heartbeats for the
# default 500 ms, and an election in the middle of a measurement measures the election (which
# is ``bench failover``'s subject). The leader steps down after the same minimum without word
# from its followers, so this keeps it leading too. The write timeout is raised for the same
# reason: at 5,592,406 keys the keyspace's dicts resize together and a full collection runs,
# which stalled the leader's event loop for 2.45 s, past the default 2 s, and a fill of 10^7
# keys lost 1,000 writes to -INDOUBT (docs/performance.md, "How it scales").
STABLE_LEADERSHIP = {"election_timeout_min_ms": 5_000, "election_timeout_max_ms": 10_000,
                     "write_timeout_ms": 10_000}
lag_timeout_s = 600.0
PROC_STATUS_RSS, PROC_STATUS_PEAK_RSS = "VmRSS", "VmHWM"
PROC_STATUS_UNITS = {"kB": KIB}
INSTALL_TOOLS = single.INSTALL_TOOLS
INSTALL_REDIS = single.INSTALL_REDIS
SUMMARY = ("how a ChorusDB leader cluster's throughput, latency and memory grow with value size, "
           "keys, followers, pipeline depth, and how fast a new member is seeded")


class ScaleError(RuntimeError):
    """A fill, a catch-up or the seeding did not complete: that axis measured nothing."""


@dataclass(frozen=True, slots=True)
class Settings:
    axes: tuple[str, ...]
    write_quorum: int
    durability: str
    requests: int
    lag_samples: int
    value_sizes_bytes: tuple[int, ...]
    key_counts: tuple[int, ...]
    member_counts: tuple[int, ...]
    pipeline_depths: tuple[int, ...]
    followers_axis_keys: int
    pipeline_axis_keys: int
    seed_bytes: int
    output_dir: Path

    def benchmark_settings(self, keyspace_keys: int, value_bytes: int) -> single.Settings:
        """What ``single.measure`` needs to build a redis-benchmark command line."""
        return single.Settings(
            durabilities=(self.durability,), pipelines=self.pipeline_depths, tests=TESTS,
            clients=clients, keyspace_keys=keyspace_keys, value_bytes=value_bytes, rounds=1,
            requests=self.requests, run_duration_s=0.0, output_dir=self.output_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--axes", default=",".join(AXES),
                        help=f"comma-separated axes to measure, in this order (default all: "
                             f"{','.join(AXES)})")
    parser.add_argument("--write-quorum", type=int, default=1, metavar="W",
                        help="members that hold a write before it is acknowledged: 1 or 2 "
                             "(default 1; every cluster has at least 2 members, and the "
                             "seeding cluster fills with one of its 3 down)")
    parser.add_argument("--durability", default="os",
                        help=f"storage durability of every node: {' or '.join(DURABILITIES)} "
                             f"(default os)")
    parser.add_argument("--requests", type=int, default=requests_default, metavar="N",
                        help=f"requests per redis-benchmark run (default {requests_default:,}; "
                             f"fewer for big values, more for deep pipelines)")
    parser.add_argument("--seed-mib", type=int, metavar="MIB",
                        help=f"MiB of {seed_value_bytes // KIB} KiB values the seeded member "
                             f"receives (default {seed_mib_default}; {seed_mib_large} with "
                             f"--large)")
    parser.add_argument("--large", action="store_true",
                        help=f"also {large_key_count:,} keys on the keys axis (the fill alone "
                             f"takes many minutes on 2 cores) and a {seed_mib_large} MiB seed")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run, seconds per axis: {quick_requests:,} requests, two "
                             f"points per axis, {quick_key_counts[-1]:,} keys at most, a "
                             f"{quick_seed_mib} MiB seed")
    parser.add_argument("--output", type=Path, default=Path("bench-results"),
                        help="directory for the JSON file and the plot (default ./bench-results)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The arguments checked; ``UsageError`` names the flag that is wrong."""
    axes = tuple(dict.fromkeys(a.strip() for a in args.axes.split(",") if a.strip()))
    if not axes or any(a not in AXES for a in axes):
        raise UsageError(f"--axes: expected a comma-separated subset of {','.join(AXES)}, "
                         f"got {args.axes!r}")
    if args.write_quorum not in (1, 2):
        raise UsageError(f"--write-quorum: expected 1 or 2, got {args.write_quorum}")
    if args.durability not in DURABILITIES:
        raise UsageError(f"--durability: expected one of {', '.join(DURABILITIES)}, got "
                         f"{args.durability!r}")
    if not requests_min <= args.requests <= requests_max:
        raise UsageError(f"--requests: expected {requests_min}..{requests_max}, got "
                         f"{args.requests}")
    if args.quick and args.large:
        raise UsageError("--large: not with --quick")
    seed_mib = (args.seed_mib if args.seed_mib is not None else
                quick_seed_mib if args.quick else seed_mib_large if args.large
                else seed_mib_default)
    if not 1 <= seed_mib <= seed_mib_max:
        raise UsageError(f"--seed-mib: expected 1..{seed_mib_max}, got {seed_mib}")
    quick = args.quick
    return Settings(
        axes=axes, write_quorum=args.write_quorum, durability=args.durability,
        requests=quick_requests if quick else args.requests,
        lag_samples=quick_lag_samples if quick else lag_samples_default,
        value_sizes_bytes=quick_value_sizes_bytes if quick else value_sizes_bytes,
        key_counts=(quick_key_counts if quick else
                    key_counts + ((large_key_count,) if args.large else ())),
        member_counts=quick_member_counts if quick else member_counts,
        pipeline_depths=quick_pipeline_depths if quick else pipeline_depths,
        followers_axis_keys=quick_axis_keys if quick else followers_axis_keys,
        pipeline_axis_keys=quick_axis_keys if quick else pipeline_axis_keys,
        seed_bytes=seed_mib * MIB, output_dir=args.output)


# --- sizing ---------------------------------------------------------------------------------------


def value_axis_keys(value_bytes: int) -> int:
    """The keyspace of one value-size point: ``value_axis_dataset_bytes`` at most, bounded."""
    return max(value_axis_keys_min, min(value_axis_keys_max,
                                        value_axis_dataset_bytes // value_bytes))


def value_axis_requests(requests: int, value_bytes: int) -> int:
    """Requests of one value-size run: ``requests``, or fewer when that would send more than
    ``value_axis_run_bytes`` of values (never fewer than ``value_axis_requests_min``)."""
    return min(requests, max(value_axis_requests_min, value_axis_run_bytes // value_bytes))


def pipeline_requests(requests: int, depth: int) -> int:
    """Requests of one pipeline run: deeper pipelines go faster, so they get more."""
    return int(round(requests * depth ** pipeline_requests_exponent, -2))


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """The seeding axis's dataset and the retention that makes the third member need a
    snapshot: the leader keeps ``hold_entries`` for a follower that lags, far fewer than
    ``keys``, so it trims past the absent member's need."""

    keys: int
    value_bytes: int
    retention_entries: int
    hold_entries: int

    @classmethod
    def for_bytes(cls, seed_bytes: int) -> SeedPlan:
        keys = max(1, seed_bytes // seed_value_bytes)
        retention = max(seed_retention_entries_min, keys // seed_retention_divisor)
        return cls(keys, seed_value_bytes, retention, retention * seed_hold_factor)

    @property
    def dataset_bytes(self) -> int:
        return self.keys * self.value_bytes


# --- memory ---------------------------------------------------------------------------------------


def bytes_of_proc_status(text: str, name: str) -> int:
    """One memory field (``VmRSS``, ``VmHWM``) of a ``/proc/PID/status`` text, in bytes."""
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == name:
            number, unit = rest.split()
            return int(number) * PROC_STATUS_UNITS[unit]
    raise ValueError(f"no {name} line in /proc/PID/status")


def proc_status_bytes(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return bytes_of_proc_status(f.read(), name)


def rss_bytes(server: ServerProcess) -> int:
    return proc_status_bytes(server.pid, PROC_STATUS_RSS)


def peak_rss_bytes(server: ServerProcess) -> int:
    return proc_status_bytes(server.pid, PROC_STATUS_PEAK_RSS)


def sqlite_bytes(server: ServerProcess) -> int:
    """The size of a node's SQLite files (database, WAL, shared memory index) now."""
    data_dir = server.log_path.parent / "data"      # ``data_dir = "data"`` in its config
    return sum(p.stat().st_size for p in data_dir.glob(f"{store_file_name}*"))


# --- filling and waiting --------------------------------------------------------------------------


def _read_replies(conn: socket.socket, parser: hiredis.Reader, count: int) -> list:
    replies: list = []
    while len(replies) < count:
        data = conn.recv(read_bytes_max)
        if not data:
            raise ScaleError("the leader closed the fill's connection")
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            replies.append(reply)
    return replies


def _position(conn: socket.socket, parser: hiredis.Reader, server: ServerProcess
              ) -> tuple[bytes, bytes]:
    """``CHORUS.POSITION`` on a fill's connection: where its last write landed."""
    conn.sendall(cluster.encode_command(b"CHORUS.POSITION"))
    [position] = _read_replies(conn, parser, 1)
    if isinstance(position, hiredis.ReplyError):
        raise ScaleError(f"CHORUS.POSITION on {server.describe()}: {position}")
    epoch, index = position.split(b":")
    return epoch, index


def fill(leader: ServerProcess, followers: list[ServerProcess], keys: int, value_bytes: int,
         settle_keys_max: int = fill_settle_keys_max) -> None:
    """SET every key redis-benchmark's ``-r keys`` can pick to a value of ``value_bytes``,
    pipelined in batches of at most ``fill_batch_keys_max`` keys and ``fill_batch_bytes_max``
    bytes, and wait until every follower applied them: after the last batch, and every
    ``settle_keys_max`` keys or ``fill_settle_bytes_max`` bytes on the way, because at W = 1
    nothing else stops the fill from running ahead of the followers until one of them misses
    the leader's heartbeats, or the leader holds more entries not yet on enough members to
    survive a failover than ``log_hold_entries_max`` (it then refuses writes)."""
    value = b"x" * value_bytes
    settle_every = max(1, min(settle_keys_max, fill_settle_bytes_max // value_bytes))
    batch = max(1, min(fill_batch_keys_max, fill_batch_bytes_max // value_bytes, settle_every))
    parser = hiredis.Reader()
    with socket.create_connection((leader.host, leader.port), timeout=fill_timeout_s) as conn:
        unsettled = 0
        for start in range(0, keys, batch):
            count = min(batch, keys - start)
            conn.sendall(b"".join(
                cluster.encode_command(b"SET", servers.benchmark_key(i), value)
                for i in range(start, start + count)))
            failed = [r for r in _read_replies(conn, parser, count)
                      if isinstance(r, hiredis.ReplyError)]
            if failed:
                raise ScaleError(f"filling {leader.describe()}: {len(failed)} SETs failed, "
                                 f"the first with {failed[0]}")
            unsettled += count
            if unsettled >= settle_every or start + count == keys:
                position = _position(conn, parser, leader)
                for follower in followers:
                    await_applied(follower, position)
                unsettled = 0


def await_applied(follower: ServerProcess, position: tuple[bytes, bytes]) -> None:
    """Wait until ``follower`` applied ``position`` (``CHORUS.WAITPOS``, repeated)."""
    client = redis.Redis(host=follower.host, port=follower.port,
                         socket_timeout=command_timeout_s + catch_up_wait_ms / 1000,
                         socket_connect_timeout=command_timeout_s)
    deadline = time.monotonic() + catch_up_timeout_s
    try:
        while True:
            try:
                client.execute_command("CHORUS.WAITPOS", *position, catch_up_wait_ms)
                return
            except redis.exceptions.ResponseError as e:     # not there yet (or re-seeding)
                if time.monotonic() > deadline:
                    raise ScaleError(f"{follower.describe()} did not apply "
                                     f"{b':'.join(position).decode()} within "
                                     f"{catch_up_timeout_s:.0f} s: {e}") from None
    finally:
        client.close()


# --- the figures ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """One redis-benchmark run against the leader."""

    test: str
    pipeline: int
    requests: int
    keyspace_keys: int
    value_bytes: int
    ops_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    wall_s: float
    leader_cpu_s: float


@dataclass(frozen=True, slots=True)
class Memory:
    """Memory of the leader and of its first follower: before the fill (just started), after
    it (every follower caught up), and the leader's peak once the runs are over."""

    keys: int
    value_bytes: int
    leader_rss_before_bytes: int
    leader_rss_bytes: int
    follower_rss_before_bytes: int
    follower_rss_bytes: int
    leader_peak_rss_bytes: int
    leader_sqlite_bytes: int

    @property
    def leader_rss_bytes_per_key(self) -> float:
        return (self.leader_rss_bytes - self.leader_rss_before_bytes) / self.keys

    @property
    def follower_rss_bytes_per_key(self) -> float:
        return (self.follower_rss_bytes - self.follower_rss_before_bytes) / self.keys

    @property
    def sqlite_bytes_per_key(self) -> float:
        return self.leader_sqlite_bytes / self.keys


@dataclass(frozen=True, slots=True)
class Lag:
    """Replication lag samples (``cluster.lag_under_load``) summarised."""

    samples: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    load_target_ops_per_s: float
    load_ops_per_s: float


@dataclass(frozen=True, slots=True)
class Point:
    """Everything measured at one value of one axis (``x``: bytes, keys, members or depth)."""

    axis: str
    x: int
    members: int
    loads: tuple[Load, ...]
    memory: Memory | None = None
    lag: Lag | None = None

    def load(self, test: str, pipeline: int = 1) -> Load | None:
        return next((run for run in self.loads if (run.test, run.pipeline) == (test, pipeline)),
                    None)


@dataclass(frozen=True, slots=True)
class SeedSample:
    """One poll of the seeding: the new member's applied position, and what the leader's
    ``/status`` says of it."""

    at_s: float                         # since the member's launch
    applied_index: int
    durable_index: int                  # at the leader
    leader_sees: str                    # streaming, snapshotting, disconnected


@dataclass(frozen=True, slots=True)
class Seeding:
    """The seeding axis: the dataset, how long the new member took, and what it said.

    Times run from the new member's launch: to its ready line; to the first poll whose
    ``applied_position`` reaches the leader's position (the install is applied in memory and
    handed to its storage thread); and to the start of the first ``seed_stable_s`` during
    which every poll finds it applied there *and* the leader's ``/status`` finds it streaming
    with its durable position there (a follower acknowledges only what it committed to
    SQLite): seeded, durably and for good. ``installs`` counts the times its applied position
    reached the leader's, ``self_reseeds`` the times it then fell back (the member dropped its
    data and asked to be seeded again: ``new_member_reseed_reason``). None: not within
    ``timeout_s``."""

    keys: int
    value_bytes: int
    dataset_bytes: int
    retention_entries: int
    hold_entries: int
    fill_s: float
    leader_position_index: int
    leader_log_first_index: int
    timeout_s: float
    start_to_ready_s: float
    start_to_first_applied_s: float | None
    start_to_seeded_s: float | None
    installs: int
    self_reseeds: int
    reseed_reason: str                  # the leader's, for this member
    new_member_reseed_reason: str       # the member's own, if it asked to be seeded again
    snapshot_chunks: int | None         # as the new member's /status counted them
    new_member_rss_bytes: int
    new_member_sqlite_bytes: int
    samples: tuple[SeedSample, ...]

    @property
    def mib_per_s(self) -> float | None:
        """The seeding rate: the dataset over the time from launch to seeded."""
        if self.start_to_seeded_s is None:
            return None
        return self.dataset_bytes / MIB / self.start_to_seeded_s

    @property
    def mib_per_s_from_ready(self) -> float | None:
        if self.start_to_seeded_s is None:
            return None
        return self.dataset_bytes / MIB / (self.start_to_seeded_s - self.start_to_ready_s)

    @property
    def first_install_mib_per_s(self) -> float | None:
        """The dataset over the time from launch to its first install (applied in memory)."""
        if self.start_to_first_applied_s is None:
            return None
        return self.dataset_bytes / MIB / self.start_to_first_applied_s


def follow_seeding(samples: list[SeedSample], target: int, stable_s: float
                   ) -> tuple[float | None, float | None, int, int]:
    """From the polls so far: when the member first applied ``target``, when it was seeded
    (the first sample of a run of good samples lasting ``stable_s``; None while there is
    none), and how many installs and self re-seeds the polls show."""
    first_applied = seeded = good_since = None
    installs = self_reseeds = 0
    previous = 0
    for sample in samples:
        if sample.applied_index >= target > previous:
            installs += 1
            first_applied = sample.at_s if first_applied is None else first_applied
        elif sample.applied_index < target <= previous:
            self_reseeds += 1
        previous = sample.applied_index
        good = (sample.applied_index >= target and sample.durable_index >= target
                and sample.leader_sees == STREAMING)
        good_since = (sample.at_s if good_since is None else good_since) if good else None
        if seeded is None and good_since is not None and sample.at_s - good_since >= stable_s:
            seeded = good_since
    return first_applied, seeded, installs, self_reseeds


@dataclass(slots=True)
class Measured:
    points: list[Point] = field(default_factory=list)
    seeding: Seeding | None = None


# --- measuring ------------------------------------------------------------------------------------


def add_leader_keys(config: Path, keys: dict[str, int]) -> None:
    """Add ``keys`` to the ``[leader]`` table of a config ``servers.write_cluster_configs``
    wrote."""
    text = config.read_text()
    assert text.count("[leader]\n") == 1, config
    config.write_text(text.replace(
        "[leader]\n", "[leader]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())))


def start_cluster(directory: Path, members: int, settings: Settings, started: int | None = None,
                  **leader_keys: int) -> tuple[ReplicatedServers, list[Path]]:
    """A leader-mode cluster of ``members`` (``servers.write_cluster_configs``, with
    ``STABLE_LEADERSHIP`` and ``leader_keys`` added to every ``[leader]`` table), of which the
    first ``started`` (all by default) are started and streaming; its configs. Nothing is left
    running if one fails."""
    configs = servers.write_cluster_configs(directory, members, settings.write_quorum,
                                            settings.durability)
    for config in configs:
        add_leader_keys(config, {**STABLE_LEADERSHIP, **leader_keys})
    group = servers.start_written_cluster(configs, settings.write_quorum, settings.durability,
                                          started)
    return group, configs


@contextmanager
def running_cluster(directory: Path, members: int, settings: Settings
                    ) -> Iterator[ReplicatedServers]:
    group, _ = start_cluster(directory, members, settings)
    try:
        yield group
    finally:
        servers.stop_group(group)


def run_load(tool: str, group: ReplicatedServers, settings: Settings, test: str, pipeline: int,
             requests: int, keyspace_keys: int, value_bytes: int) -> Load:
    run = single.measure(tool, group.primary, test, pipeline, requests,
                         settings.benchmark_settings(keyspace_keys, value_bytes), 1)
    return Load(test, pipeline, requests, keyspace_keys, value_bytes, run.rps,
                run.p50_latency_ms, run.p99_latency_ms, run.wall_s, run.server_cpu_s)


def memory_point(tool: str, group: ReplicatedServers, settings: Settings, keys: int,
                 value_bytes: int, requests: int, step: Callable[[str], None]
                 ) -> tuple[tuple[Load, ...], Memory]:
    """Fill ``keys`` keys, read the memory, then SET and GET -P 1 over that keyspace."""
    leader, follower = group.primary, group.replicas[0]
    leader_before, follower_before = rss_bytes(leader), rss_bytes(follower)
    step(f"filling {keys:,} keys of {value_bytes:,} B")
    fill(group.primary, group.replicas, keys, value_bytes)
    leader_after, follower_after = rss_bytes(leader), rss_bytes(follower)
    on_disk = sqlite_bytes(leader)
    loads = []
    for test in TESTS:
        step(f"{test} -P 1 over {keys:,} keys of {value_bytes:,} B, {requests:,} requests")
        loads.append(run_load(tool, group, settings, test, 1, requests, keys, value_bytes))
    memory = Memory(keys, value_bytes, leader_before, leader_after, follower_before,
                    follower_after, peak_rss_bytes(leader), on_disk)
    return tuple(loads), memory


def measure_value_size(tool: str, settings: Settings, directory: Path,
                       step: Callable[[str], None], done: Callable[[Point], None]) -> None:
    for value_bytes in settings.value_sizes_bytes:
        step(f"value size {value_bytes:,} B: starting {members_default} members")
        with running_cluster(directory / f"value-{value_bytes}", members_default,
                             settings) as group:
            loads, memory = memory_point(
                tool, group, settings, value_axis_keys(value_bytes), value_bytes,
                value_axis_requests(settings.requests, value_bytes),
                lambda what: step(f"value size {value_bytes:,} B: {what}"))
        done(Point(VALUE_SIZE, value_bytes, members_default, loads, memory))


def measure_keys(tool: str, settings: Settings, directory: Path, step: Callable[[str], None],
                 done: Callable[[Point], None]) -> None:
    for keys in settings.key_counts:
        step(f"{keys:,} keys: starting {members_default} members")
        with running_cluster(directory / f"keys-{keys}", members_default, settings) as group:
            loads, memory = memory_point(tool, group, settings, keys, small_value_bytes,
                                         settings.requests,
                                         lambda what: step(f"{keys:,} keys: {what}"))
        done(Point(KEYS, keys, members_default, loads, memory))


def _lag(group: ReplicatedServers, settings: Settings, load_ops_per_s: float, seed: int) -> Lag:
    lag_settings = cluster.Settings(
        requests=settings.requests, lag_samples=settings.lag_samples,
        keyspace_keys=settings.followers_axis_keys, value_bytes=small_value_bytes, configs=(),
        output_dir=settings.output_dir, json_path=None)

    async def bounded() -> cluster.LagRecord:
        return await asyncio.wait_for(
            cluster.lag_under_load(group, lag_settings, load_ops_per_s, seed), lag_timeout_s)

    try:
        record = asyncio.run(bounded())
    except (OSError, asyncio.TimeoutError) as e:
        raise cluster.DriverError(f"lag samples: {type(e).__name__}: {e}") from None
    lags = record.lag_ms
    return Lag(len(lags), record.errors + record.load_errors,
               results.percentile(lags, 0.5) if lags else None,
               results.percentile(lags, 0.99) if lags else None,
               record.load_target_ops_per_s, record.load_ops_per_s)


def measure_followers(tool: str, settings: Settings, directory: Path,
                      step: Callable[[str], None], done: Callable[[Point], None]) -> None:
    keys = settings.followers_axis_keys
    for members in settings.member_counts:
        name = f"{members} members"
        step(f"{name}: starting")
        with running_cluster(directory / f"members-{members}", members, settings) as group:
            step(f"{name}: filling {keys:,} keys")
            fill(group.primary, group.replicas, keys, small_value_bytes)
            step(f"{name}: SET -P 1, {settings.requests:,} requests")
            load = run_load(tool, group, settings, "SET", 1, settings.requests, keys,
                            small_value_bytes)
            step(f"{name}: {settings.lag_samples} lag samples under "
                 f"{load.ops_per_s * lag_load_fraction:,.0f} SET/s")
            lag = _lag(group, settings, load.ops_per_s * lag_load_fraction, members)
        done(Point(FOLLOWERS, members, members, (load,), lag=lag))


def measure_pipeline(tool: str, settings: Settings, directory: Path,
                     step: Callable[[str], None], done: Callable[[Point], None]) -> None:
    keys = settings.pipeline_axis_keys
    step(f"pipeline: starting {members_default} members")
    with running_cluster(directory / "pipeline", members_default, settings) as group:
        step(f"pipeline: filling {keys:,} keys")
        fill(group.primary, group.replicas, keys, small_value_bytes)
        for depth in settings.pipeline_depths:
            requests = pipeline_requests(settings.requests, depth)
            loads = []
            for test in TESTS:
                step(f"pipeline: {test} -P {depth}, {requests:,} requests")
                loads.append(run_load(tool, group, settings, test, depth, requests, keys,
                                      small_value_bytes))
            done(Point(PIPELINE, depth, members_default, tuple(loads)))


def seed_timeout_s(dataset_bytes: int) -> float:
    return max(seed_timeout_s_min, seed_timeout_s_per_mib * dataset_bytes / MIB)


def _await_status(node: BenchNode, condition: Callable[[dict], object], timeout_s: float,
                  what: str) -> dict:
    """``node``'s ``/status`` once ``condition`` holds for it; ``ScaleError`` naming ``what``
    after ``timeout_s``, or when the node exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = node.status()
        if status is not None and condition(status):
            return status
        if not node.running:
            raise ScaleError(f"{node.node_id} exited while waiting for {what}")
        time.sleep(status_poll_interval_s)
    raise ScaleError(f"{node.node_id}: no {what} within {timeout_s:.0f} s; last /status: "
                     f"{node.status()}")


def measure_seeding(settings: Settings, directory: Path, step: Callable[[str], None]
                    ) -> Seeding:
    """The seeding axis (module docstring, axis 5); every node it started is stopped."""
    plan = SeedPlan.for_bytes(settings.seed_bytes)
    step(f"seeding: starting 2 of {members_default} members, the third down")
    group, configs = start_cluster(directory, members_default, settings, started=2,
                                   log_retention_entries=plan.retention_entries,
                                   log_hold_entries_max=plan.hold_entries)
    nodes = [
        BenchNode(path.parent.name, path, str(load_config(path).admin), server)
        for path, server in zip(configs, (*group.members, None))]
    leader, newcomer = nodes[0], nodes[-1]
    try:
        step(f"seeding: filling {plan.dataset_bytes / MIB:,.0f} MiB "
             f"({plan.keys:,} keys of {plan.value_bytes // KIB} KiB)")
        fill_started = time.monotonic()
        fill(group.primary, group.replicas, plan.keys, plan.value_bytes,
             settle_keys_max=plan.hold_entries // 2)
        fill_s = time.monotonic() - fill_started
        step("seeding: waiting for the leader to trim its log")
        led = _await_status(leader, lambda s: s["log"]["first_index"] > 1,
                            leader_status_timeout_s, "log trimmed")
        target = led["position"]["index"]
        step(f"seeding: {newcomer.node_id} starting, to be seeded with "
             f"{plan.dataset_bytes / MIB:,.0f} MiB")
        started = time.monotonic()
        process = servers.spawn_node(newcomer.config_path.parent, newcomer.config_path)
        newcomer.server = servers.await_node(process, newcomer.config_path.parent,
                                             newcomer.config_path, settings.durability)
        ready_s = time.monotonic() - started
        timeout_s = seed_timeout_s(plan.dataset_bytes)
        samples: list[SeedSample] = []
        chunks: int | None = None
        seeded = None
        while seeded is None and time.monotonic() - started < timeout_s:
            joining, leading = newcomer.status(), leader.status()
            if not newcomer.running or not leader.running:
                raise ScaleError(f"a member exited while {newcomer.node_id} was seeded")
            if joining is not None and leading is not None:
                member = next(m for m in leading["members"] if m["id"] == newcomer.node_id)
                samples.append(SeedSample(
                    round(time.monotonic() - started, 3), joining["applied_position"]["index"],
                    member["durable_position"]["index"], member["state"]))
                if joining.get("snapshot_receiving"):
                    chunks = int(joining["snapshot_receiving"].split("/")[1])
                seeded = follow_seeding(samples, target, seed_stable_s)[1]
            time.sleep(status_poll_interval_s)
        first_applied, seeded, installs, self_reseeds = follow_seeding(samples, target,
                                                                       seed_stable_s)
        joining, leading = newcomer.status() or {}, leader.status() or {}
        member = next((m for m in leading.get("members", ()) if m["id"] == newcomer.node_id),
                      {})
        return Seeding(
            plan.keys, plan.value_bytes, plan.dataset_bytes, plan.retention_entries,
            plan.hold_entries, round(fill_s, 3), target, led["log"]["first_index"], timeout_s,
            round(ready_s, 3), first_applied, seeded, installs, self_reseeds,
            member.get("reseed_reason", ""), joining.get("reseed_reason", ""), chunks,
            rss_bytes(newcomer.server), sqlite_bytes(newcomer.server), tuple(samples))
    finally:
        for node in reversed(nodes):
            if node.server is not None:
                servers.stop(node.server)


AXIS_MEASURES = {VALUE_SIZE: measure_value_size, KEYS: measure_keys,
                 FOLLOWERS: measure_followers, PIPELINE: measure_pipeline}


def steps_of(settings: Settings, axis: str) -> int:
    """Progress steps of one axis: one per point, one for the seeding."""
    return {VALUE_SIZE: len(settings.value_sizes_bytes), KEYS: len(settings.key_counts),
            FOLLOWERS: len(settings.member_counts), PIPELINE: len(settings.pipeline_depths),
            SEEDING: 1}[axis]


def _measure_all(tool: str, redis_server: str | None, settings: Settings, status: Console
                 ) -> tuple[Measured, dict[str, str]]:
    """Each axis in turn, each point on a fresh cluster (the pipeline axis: one cluster)."""
    measured = Measured()
    with tempfile.TemporaryDirectory(prefix="chorusdb-bench-scale-") as tmp, \
            session.progress_bar(status) as progress:
        task = progress.add_task("starting",
                                 total=sum(steps_of(settings, a) for a in settings.axes))

        def step(description: str) -> None:
            progress.update(task, description=description)

        def done(point: Point) -> None:
            measured.points.append(point)
            progress.console.print(point_line(point), highlight=False, markup=False)
            progress.advance(task)

        for axis in settings.axes:
            directory = Path(tmp) / axis
            if axis == SEEDING:
                measured.seeding = measure_seeding(settings, directory, step)
                progress.console.print(seeding_line(measured.seeding), highlight=False,
                                       markup=False)
                progress.advance(task)
            else:
                AXIS_MEASURES[axis](tool, settings, directory, step, done)
    return measured, {"chorusdb": __version__}


# --- output ---------------------------------------------------------------------------------------


def _size(value_bytes: int) -> str:
    """100 B, 1 KiB, 10 KiB, 1 MiB."""
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if value_bytes >= scale and value_bytes % scale == 0:
            return f"{value_bytes // scale} {unit}"
    return f"{value_bytes} B"


def _mib(value_bytes: float) -> str:
    return f"{value_bytes / MIB:,.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _ops(load: Load | None) -> str:
    return "-" if load is None else f"{load.ops_per_s:,.0f}"


AXIS_LABELS = {VALUE_SIZE: "value size", KEYS: "keys", FOLLOWERS: "members",
               PIPELINE: "-P depth"}


def axis_value(axis: str, x: int) -> str:
    return _size(x) if axis == VALUE_SIZE else f"{x:,}"


def point_line(point: Point) -> str:
    """One line per point as it is measured, for the progress display."""
    parts = [f"{run.test} -P {run.pipeline} {run.ops_per_s:,.0f} ops/s p99 {_ms(run.p99_ms)} ms"
             for run in point.loads]
    if point.memory is not None:
        parts.append(f"leader RSS {_mib(point.memory.leader_rss_bytes)} MiB")
    if point.lag is not None:
        parts.append(f"lag p99 {_ms(point.lag.p99_ms)} ms")
    return f"{point.axis} {axis_value(point.axis, point.x)}: " + ", ".join(parts)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def seeding_line(seeding: Seeding) -> str:
    """What became of the new member, in one line."""
    first = (f"first applied {seeding.start_to_first_applied_s:.1f} s after its launch"
             if seeding.start_to_first_applied_s is not None else "never applied")
    if seeding.start_to_seeded_s is None:
        return (f"seeding {_mib(seeding.dataset_bytes)} MiB: NOT seeded within "
                f"{seeding.timeout_s:.0f} s ({first}; {seeding.installs} installs, "
                f"{seeding.self_reseeds} self re-seeds)")
    return (f"seeding {_mib(seeding.dataset_bytes)} MiB: seeded {seeding.start_to_seeded_s:.1f} s "
            f"after its launch ({seeding.mib_per_s:.1f} MiB/s; {first}; {seeding.installs} "
            f"installs, {seeding.self_reseeds} self re-seeds)")


def _table(title: str, headers: tuple[str, ...]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column(headers[0], no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    return table


def axis_table(axis: str, points: list[Point], settings: Settings) -> Table:
    """One axis's points as a table: ops/s and latencies in ms, memory in MiB and bytes."""
    rows = [p for p in points if p.axis == axis]
    cluster_words = f"W={settings.write_quorum} {settings.durability}"
    if axis == VALUE_SIZE:
        table = _table(f"value size: {members_default} members, {cluster_words}, -c {clients} "
                       f"-P 1", ("value", "keys", "SET/s", "SET p50", "SET p99", "GET/s",
                                 "GET p50", "GET p99", "leader MiB", "peak MiB"))
        for p in rows:
            s, g, m = p.load("SET"), p.load("GET"), p.memory
            table.add_row(_size(p.x), f"{m.keys:,}", _ops(s), _ms(s.p50_ms), _ms(s.p99_ms),
                          _ops(g), _ms(g.p50_ms), _ms(g.p99_ms), _mib(m.leader_rss_bytes),
                          _mib(m.leader_peak_rss_bytes))
    elif axis == KEYS:
        table = _table(f"keys of {small_value_bytes} B: {members_default} members, "
                       f"{cluster_words}, -c {clients} -P 1",
                       ("keys", "SET/s", "SET p99", "GET/s", "GET p99", "leader MiB",
                        "follower MiB", "B/key leader", "B/key follower", "B/key SQLite"))
        for p in rows:
            s, g, m = p.load("SET"), p.load("GET"), p.memory
            table.add_row(f"{p.x:,}", _ops(s), _ms(s.p99_ms), _ops(g), _ms(g.p99_ms),
                          _mib(m.leader_rss_bytes), _mib(m.follower_rss_bytes),
                          f"{m.leader_rss_bytes_per_key:,.0f}",
                          f"{m.follower_rss_bytes_per_key:,.0f}",
                          f"{m.sqlite_bytes_per_key:,.0f}")
    elif axis == FOLLOWERS:
        table = _table(f"followers: {cluster_words}, SET -c {clients} -P 1; lag under "
                       f"{lag_load_fraction:.0%} of that rate",
                       ("members", "SET/s", "SET p50", "SET p99", "lag p50", "lag p99",
                        "lag samples", "errors"))
        for p in rows:
            s, lag = p.load("SET"), p.lag
            table.add_row(f"{p.x}", _ops(s), _ms(s.p50_ms), _ms(s.p99_ms), _ms(lag.p50_ms),
                          _ms(lag.p99_ms), f"{lag.samples}", f"{lag.errors}")
    else:
        assert axis == PIPELINE, axis
        table = _table(f"pipeline: {members_default} members, {cluster_words}, -c {clients}, "
                       f"{settings.pipeline_axis_keys:,} keys",
                       ("-P", "SET/s", "SET p50", "SET p99", "GET/s", "GET p50", "GET p99"))
        for p in rows:
            s, g = p.load("SET", p.x), p.load("GET", p.x)
            table.add_row(f"{p.x}", _ops(s), _ms(s.p50_ms), _ms(s.p99_ms), _ops(g),
                          _ms(g.p50_ms), _ms(g.p99_ms))
    return table


def seeding_table(seeding: Seeding, settings: Settings) -> Table:
    table = _table(f"seeding a new member: W={settings.write_quorum} {settings.durability}",
                   ("dataset", "keys", "retention", "fill s", "ready s", "1st applied s",
                    "seeded s", "MiB/s", "from ready", "installs", "self re-seeds"))
    table.add_row(f"{_mib(seeding.dataset_bytes)} MiB", f"{seeding.keys:,}",
                  f"{seeding.retention_entries:,}/{seeding.hold_entries:,}",
                  f"{seeding.fill_s:.1f}", f"{seeding.start_to_ready_s:.1f}",
                  _seconds(seeding.start_to_first_applied_s),
                  _seconds(seeding.start_to_seeded_s) if seeding.start_to_seeded_s is not None
                  else f"no ({seeding.timeout_s:.0f})",
                  _rate(seeding.mib_per_s), _rate(seeding.mib_per_s_from_ready),
                  f"{seeding.installs}", f"{seeding.self_reseeds}")
    return table


def point_document(point: Point) -> dict:
    """A point's raw figures, with the derived bytes per key."""
    document = asdict(point)
    if point.memory is not None:
        document["memory"].update(
            leader_rss_bytes_per_key=round(point.memory.leader_rss_bytes_per_key, 1),
            follower_rss_bytes_per_key=round(point.memory.follower_rss_bytes_per_key, 1),
            sqlite_bytes_per_key=round(point.memory.sqlite_bytes_per_key, 1))
    return document


def seeding_document(seeding: Seeding) -> dict:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {**asdict(seeding), "seeded": seeding.start_to_seeded_s is not None,
            "mib_per_s": rounded(seeding.mib_per_s),
            "mib_per_s_from_ready": rounded(seeding.mib_per_s_from_ready),
            "first_install_mib_per_s": rounded(seeding.first_install_mib_per_s)}


def document(measured: Measured, settings: Settings, done: session.Session) -> dict:
    return {
        **done.document_header(settings, clients=clients, members=members_default,
                               lag_load_fraction=lag_load_fraction),
        "redis_benchmark_command": " ".join(single.benchmark_argv(
            "redis-benchmark", servers.HOST, "PORT", "SET|GET", "DEPTH", "N",
            settings.benchmark_settings("KEYS", "BYTES"))),
        "points": [point_document(p) for p in measured.points],
        "seeding": None if measured.seeding is None else seeding_document(measured.seeding),
    }


plot_columns_max = 3
plot_panel_inches = (4.8, 3.6)      # width, height
plot_dpi = 80


def _plot_axis(panel, axis: str, points: list[Point]) -> None:
    """ops/s (solid, left scale) and p99 (dashed, right scale) of one axis's points."""
    latency = panel.twinx()
    for test, colour in zip(TESTS, ("tab:blue", "tab:orange")):
        runs = [(p.x, run) for p in points
                if (run := p.load(test, p.x if axis == PIPELINE else 1)) is not None]
        if runs:
            panel.plot([x for x, _ in runs], [run.ops_per_s for _, run in runs], "o-",
                       color=colour, label=f"{test} ops/s")
            latency.plot([x for x, _ in runs], [run.p99_ms or math.nan for _, run in runs],
                         "s--", color=colour, alpha=0.6, label=f"{test} p99")
    if axis == FOLLOWERS:
        latency.plot([p.x for p in points], [p.lag.p99_ms or math.nan for p in points],
                     "^:", color="tab:green", label="replication lag p99")
    else:                                   # sizes, key counts and depths grow geometrically
        panel.set_xscale("log")
    if axis == VALUE_SIZE:                  # ops/s spans orders of magnitude too
        panel.set_yscale("log")
    panel.set_xticks([p.x for p in points], [axis_value(axis, p.x) for p in points])
    panel.minorticks_off()
    latency.set_yscale("log")
    panel.set_xlabel(AXIS_LABELS[axis] + ("" if axis == FOLLOWERS else " (log scale)"))
    panel.set_ylabel("ops/s" + (" (log)" if axis == VALUE_SIZE else ""))
    latency.set_ylabel("p99 ms (log), dashed")
    panel.set_title(AXIS_LABELS[axis])
    handles, labels = panel.get_legend_handles_labels()
    more_handles, more_labels = latency.get_legend_handles_labels()
    panel.legend(handles + more_handles, labels + more_labels, fontsize="x-small")


def _plot_seeding(panel, seeding: Seeding) -> None:
    """The new member's applied position and its durable position at the leader, as
    fractions of the leader's position, against time."""
    times = [sample.at_s for sample in seeding.samples]
    target = seeding.leader_position_index
    panel.plot(times, [sample.applied_index / target for sample in seeding.samples], "-",
               color="tab:purple", label="applied on the member")
    panel.plot(times, [sample.durable_index / target for sample in seeding.samples], "--",
               color="tab:green", alpha=0.7, label="durable, as the leader sees it")
    panel.axvline(seeding.start_to_ready_s, color="grey", linestyle=":", label="ready line")
    if seeding.start_to_seeded_s is not None:
        panel.axvline(seeding.start_to_seeded_s, color="black", linestyle="-.", label="seeded")
    panel.set_xlim(left=0)
    panel.set_xlabel("s since the member's launch")
    panel.set_ylabel("position / leader's position")
    panel.set_title(f"seeding {_mib(seeding.dataset_bytes)} MiB: " + (
        f"{seeding.mib_per_s:.1f} MiB/s" if seeding.mib_per_s is not None else
        f"not seeded in {seeding.timeout_s:.0f} s"))
    panel.legend(fontsize="x-small")


def write_plot(measured: Measured, path: Path) -> str:
    """A PNG with one panel per measured axis (``_plot_axis``) and one for the seeding
    (``_plot_seeding``), at most ``plot_columns_max`` a row. Returns what happened, for the
    report."""
    try:
        import matplotlib
    except ImportError:
        return cluster.MATPLOTLIB_MISSING
    matplotlib.use("Agg")
    from matplotlib import pyplot

    axes = [a for a in AXIS_LABELS if any(p.axis == a for p in measured.points)]
    panels = len(axes) + (measured.seeding is not None)
    if not panels:
        return "no plot: nothing was measured"
    columns = min(panels, plot_columns_max)
    rows = math.ceil(panels / columns)
    fig, grid = pyplot.subplots(rows, columns, squeeze=False, figsize=(
        plot_panel_inches[0] * columns, plot_panel_inches[1] * rows))
    cells = list(grid.flat)
    for panel, axis in zip(cells, axes):
        _plot_axis(panel, axis, sorted((p for p in measured.points if p.axis == axis),
                                       key=lambda p: p.x))
    if measured.seeding is not None:
        _plot_seeding(cells[len(axes)], measured.seeding)
    for unused in cells[panels:]:
        unused.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=plot_dpi)
    pyplot.close(fig)
    return f"plot: {path}"


def run(args: argparse.Namespace) -> int:
    """The whole benchmark (see the module docstring); returns the exit code."""
    return session.run("scale", args, settings_from=settings_from, measure=_measure_all,
                       failures=(ServerStartError, single.BenchmarkRunError, cluster.DriverError,
                                 ScaleError),
                       report=_report, install_tools=INSTALL_TOOLS,
                       install_redis=INSTALL_REDIS)


def _report(settings: Settings, measured: Measured, done: session.Session) -> None:
    """A table per axis and the load to the terminal; every raw figure to ``scale-DATE.json``
    under ``--output``, and the plot beside it."""
    console = Console()
    for axis in settings.axes:
        if axis == SEEDING:
            if measured.seeding is not None:
                seeding = measured.seeding
                console.print(seeding_table(seeding, settings))
                console.print(seeding_line(seeding), highlight=False, markup=False,
                              style=None if seeding.start_to_seeded_s is not None else "yellow")
                console.print(f"the leader re-seeded it because: {seeding.reseed_reason}",
                              highlight=False, markup=False)
                if seeding.new_member_reseed_reason:
                    console.print(f"the member asked to be re-seeded because: "
                                  f"{seeding.new_member_reseed_reason}",
                                  highlight=False, markup=False)
        else:
            console.print(axis_table(axis, measured.points, settings))
    console.print("ops/s and p50/p99 (ms) from redis-benchmark against the leader; MiB: "
                  "resident set (VmRSS) after the fill, peak: VmHWM after the runs; B/key: "
                  "RSS growth over the fill / keys, SQLite files / keys", highlight=False)
    machine = done.machine
    console.print(f"1-minute load average {machine['load_average_1_5_15_before'][0]} before, "
                  f"{machine['load_average_1_5_15_after'][0]} after, on "
                  f"{machine['cores']} cores", highlight=False)
    done.write_document(document(measured, settings, done),
                        settings.output_dir / f"scale-{done.stamp}.json", console)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    console.print(write_plot(measured, settings.output_dir / f"scale-{done.stamp}.png"),
                  highlight=False, markup=False)
