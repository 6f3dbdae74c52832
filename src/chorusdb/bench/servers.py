"""The servers under test: started in temporary directories on 127.0.0.1, filled, measured, and
stopped by their own PID.

- Redis runs with the issue's reference configuration: ``--save '' --appendonly yes
  --appendfsync everysec`` (an append-only file written on every command, fsync'd once a
  second), on a port found free by binding port 0.
- A ChorusDB node runs as ``python -m chorusdb serve`` from a TOML file whose listen ports are
  0; its one stdout line ``chorusdb ready node=... client=HOST:PORT admin=...`` gives the port.
  Its stdout and stderr go to files in its directory, so a chatty server never blocks on a full
  pipe and its log is there to read when it fails.
- Every server starts in a new session, so a Ctrl-C in the terminal reaches the benchmark only;
  the benchmark then stops each server with SIGTERM (SIGKILL after a grace period), by PID.

Replicated groups (``ReplicatedServers``, for ``bench.cluster``): a Redis primary with replicas
started with ``--replicaof``, each with the same reference configuration; or a ChorusDB cluster
in leader mode, one ``chorusdb serve`` per member with a fixed set of free ports (the members'
addresses are in every config, so they cannot be 0), a random cluster secret, and the first
member as the leader. All members are launched before any is waited for. A group counts as
started once ``ROLE`` on the primary lists every replica and ``ROLE`` on each replica says its
link is ``connected`` (ChorusDB answers ``ROLE`` in Redis's shape), so the first measured
write is not refused for want of a quorum nor left behind by a replica still syncing.

CPU time comes from ``/proc``: ``/proc/PID/stat`` fields 14 and 15 (utime, stime, in clock
ticks) are the whole process, every thread included (ChorusDB's SQLite thread too); the first
line of ``/proc/stat`` is the whole machine. Linux only, as the benchmark is.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path

import redis

import chorusdb
from chorusdb import __version__
from chorusdb.server.process import free_ports, parse_ready_line, stop_process

redis_ready_timeout_s = 10.0
node_ready_timeout_s = 30.0
server_stop_timeout_s = 15.0
ready_poll_interval_s = 0.05
connect_timeout_s = 1.0
tool_version_timeout_s = 10.0
preload_timeout_s = 30.0            # per pipelined batch of SETs
preload_batch_keys = 1000           # SETs per round trip while filling the keyspace
log_tail_bytes = 2000               # of a server's log, shown when it fails to start
replication_ready_timeout_s = 30.0  # for every replica of a group to be linked and synced
secret_random_bytes = 32            # of a benchmark cluster's secret

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# /proc/stat's first line: cpu user nice system idle iowait irq softirq steal [guest ...]
PROC_STAT_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
# /proc/PID/stat after the ")" closing the command name: field 3 is index 0, so utime (field 14)
# is index 11 and stime (field 15) index 12.
PROC_PID_UTIME_INDEX, PROC_PID_STIME_INDEX = 11, 12
HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """A server under test did not become ready; the message carries its log's tail."""


@dataclass
class ServerProcess:
    system: str
    durability: str
    version: str
    process: subprocess.Popen
    host: str
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe(self) -> str:
        return f"{self.system} ({self.durability}) pid {self.pid} at {self.host}:{self.port}"


@dataclass
class ReplicatedServers:
    """A primary (leader) and its replicas (followers); ``config`` names the group's settings
    in reports (``W=2 fsync``, ``everysec``); ``write_quorum`` is how many members hold a write
    when it is acknowledged (1 for Redis: its replication is asynchronous)."""

    system: str
    config: str
    primary: ServerProcess
    write_quorum: int = 1
    replicas: list[ServerProcess] = field(default_factory=list)

    @property
    def members(self) -> list[ServerProcess]:
        return [self.primary, *self.replicas]


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


def tool_version(executable: str) -> str:
    """``7.0.15`` from ``redis-server --version`` or ``redis-benchmark --version``."""
    out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                         timeout=tool_version_timeout_s).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
        if word[:1].isdigit():
            return word
    return out.strip()


def _log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-log_tail_bytes:].decode("utf-8", "replace")


def _spawn(argv: list[str], directory: Path, log_name: str, stdout_name: str | None = None,
           env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    log_path = directory / log_name
    stdout_path = directory / stdout_name if stdout_name else log_path
    with open(log_path, "wb") as log, open(stdout_path, "ab") as stdout:
        process = subprocess.Popen(argv, cwd=directory, stdout=stdout, stderr=log, env=env,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return process, log_path


def _environment_importing_this_chorusdb() -> dict[str, str]:
    """The environment with this ``chorusdb`` first on ``PYTHONPATH``, so the node runs the code
    the benchmark came from (a source checkout with a relative PYTHONPATH included)."""
    source_root = str(Path(chorusdb.__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH", "")
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (source_root, inherited) if p)}


def start_redis(directory: Path, redis_server: str,
                replica_of: ServerProcess | None = None) -> ServerProcess:
    """redis-server with the reference configuration, ready to answer PING; with
    ``replica_of``, a replica of that server (``--replicaof``)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # A primary streams its first sync to replicas at once instead of waiting 5 s for more of
    # them to connect; this changes only how a replica starts, not what is measured.
    replication = ["--repl-diskless-sync-delay", "0"] if replica_of is None else \
        ["--replicaof", replica_of.host, str(replica_of.port)]
    version = tool_version(redis_server)
    process, log_path = _spawn(
        [redis_server, "--bind", HOST, "--port", str(port), "--dir", str(directory),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
         "--daemonize", "no", "--logfile", "", *replication],
        directory, "redis.log")
    server = ServerProcess("redis", "everysec", version, process, HOST, port, log_path)
    try:
        _await_ping(server)
    except BaseException:           # not ready, or interrupted: nothing is left running
        stop(server)
        raise
    return server


def _await_ping(server: ServerProcess) -> None:
    deadline = time.monotonic() + redis_ready_timeout_s
    client = redis.Redis(host=server.host, port=server.port,
                         socket_connect_timeout=connect_timeout_s)
    try:
        while time.monotonic() < deadline and server.process.poll() is None:
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:     # not listening yet, or loading
                time.sleep(ready_poll_interval_s)
    finally:
        client.close()
    raise ServerStartError(f"redis-server did not answer PING on {server.host}:{server.port} "
                           f"within {redis_ready_timeout_s:.0f} s; its log:\n"
                           f"{_log_tail(server.log_path)}")


def write_node_config(directory: Path, durability: str) -> Path:
    path = directory / "node.toml"
    path.write_text(
        '[node]\nid = "n1"\ndata_dir = "data"\n\n'
        f'[listen]\nclient = "{HOST}:0"\nadmin = "{HOST}:0"\n\n'
        '[cluster]\nid = "bench"\nmode = "standalone"\n\n'
        f'[storage]\ndurability = "{durability}"\n')
    return path


def spawn_node(directory: Path, config: Path) -> subprocess.Popen:
    process, _ = _spawn(
        [sys.executable, "-m", "chorusdb", "serve", "--config", str(config),
         "--log-level", "WARNING"],
        directory, "chorusdb.log", stdout_name="stdout.txt",
        env=_environment_importing_this_chorusdb())
    return process


def await_node(process: subprocess.Popen, directory: Path, config: Path,
                durability: str) -> ServerProcess:
    """The node once its ready line is in its stdout file; stopped, and ``ServerStartError``
    with its log's tail, if it exits or is not ready in time (stopped too if interrupted)."""
    try:
        return _read_ready_line(process, directory, config, durability)
    except BaseException:
        stop_process(process, server_stop_timeout_s)
        raise


def _read_ready_line(process: subprocess.Popen, directory: Path, config: Path,
                     durability: str) -> ServerProcess:
    stdout_path = directory / "stdout.txt"
    log_path = directory / "chorusdb.log"
    deadline = time.monotonic() + node_ready_timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        for line in stdout_path.read_text().splitlines():
            fields = parse_ready_line(line)
            if fields is not None:
                host, port = fields["client"].rsplit(":", 1)
                return ServerProcess("chorusdb", durability, __version__, process, host,
                                     int(port), log_path)
        time.sleep(ready_poll_interval_s)
    exited = process.poll()
    raise ServerStartError(
        f"chorusdb serve --config {config} "
        f"{'exited with ' + str(exited) if exited is not None else 'was not ready'} within "
        f"{node_ready_timeout_s:.0f} s; its log:\n{_log_tail(log_path)}")


def start_chorusdb(directory: Path, durability: str) -> ServerProcess:
    """One standalone ChorusDB node with the given durability, ready for clients."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_node_config(directory, durability)
    return await_node(spawn_node(directory, config), directory, config, durability)


def start_redis_replicated(directory: Path, redis_server: str,
                           replicas: int) -> ReplicatedServers:
    """A Redis primary and ``replicas`` replicas, each in its own directory under
    ``directory``, every replica synced; nothing is left running if one fails."""
    group = ReplicatedServers("redis", "everysec", start_redis(directory / "primary",
                                                               redis_server))
    try:
        for number in range(1, replicas + 1):
            group.replicas.append(start_redis(directory / f"replica{number}", redis_server,
                                              replica_of=group.primary))
        await_replication(group)
    except BaseException:
        stop_group(group)
        raise
    return group


def write_cluster_configs(directory: Path, members: int, write_quorum: int,
                          durability: str, mode: str = "leader") -> list[Path]:
    """A cluster's configs (``n1/node.toml`` ...) and its secret (``cluster.secret``,
    owner-only): in leader mode ``n1`` is the leader; in multi-leader mode (``write_quorum``
    unused) every member takes writes, with the mode's default settings."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "cluster.secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(secrets.token_bytes(secret_random_bytes)) + b"\n")
    ports = free_ports(3 * members)
    node_ids = [f"n{number}" for number in range(1, members + 1)]
    clients, peers, admins = (ports[:members], ports[members:2 * members],
                              ports[2 * members:])
    member_tables = "".join(
        f'\n[[cluster.members]]\nid = "{node_id}"\npeer = "{HOST}:{peer}"\n'
        f'client = "{HOST}:{client}"\n' for node_id, client, peer in zip(node_ids, clients, peers))
    paths = []
    for node_id, client, peer, admin in zip(node_ids, clients, peers, admins):
        path = directory / node_id / "node.toml"
        path.parent.mkdir()
        path.write_text(
            f'[node]\nid = "{node_id}"\ndata_dir = "data"\n\n'
            f'[listen]\nclient = "{HOST}:{client}"\npeer = "{HOST}:{peer}"\n'
            f'admin = "{HOST}:{admin}"\n\n'
            f'[cluster]\nid = "bench"\nmode = "{mode}"\nsecret_file = "../{secret.name}"\n'
            f'{member_tables}\n'
            + (f'[leader]\nwrite_quorum = {write_quorum}\ninitial_leader = "{node_ids[0]}"\n\n'
               if mode == "leader" else "")
            + f'[storage]\ndurability = "{durability}"\n')
        paths.append(path)
    return paths


def start_chorusdb_cluster(directory: Path, members: int, write_quorum: int,
                           durability: str) -> ReplicatedServers:
    """A leader-mode cluster of ``members`` nodes, every follower streaming; nothing is left
    running if one fails."""
    configs = write_cluster_configs(directory, members, write_quorum, durability)
    return start_written_cluster(configs, write_quorum, durability)


def start_written_cluster(configs: list[Path], write_quorum: int, durability: str,
                          started: int | None = None) -> ReplicatedServers:
    """Start the members whose configs ``write_cluster_configs`` wrote (the first ``started``
    of them; all by default) and wait until every follower streams; nothing is left running if
    one fails."""
    processes: list[subprocess.Popen] = []
    try:
        for config in configs[:started]:        # all launched before any is waited for
            processes.append(spawn_node(config.parent, config))
        ready = [await_node(process, config.parent, config, durability)
                 for process, config in zip(processes, configs)]
        group = ReplicatedServers("chorusdb", f"W={write_quorum} {durability}", ready[0],
                                  write_quorum, ready[1:])
        await_replication(group)
    except BaseException:
        for process in processes:
            stop_process(process, server_stop_timeout_s)
        raise
    return group


def _replication_ready(group: ReplicatedServers) -> bool:
    """``ROLE`` on the primary lists every replica, and each replica's link is connected."""
    def role(server: ServerProcess) -> list:
        client = redis.Redis(host=server.host, port=server.port,
                             socket_timeout=connect_timeout_s,
                             socket_connect_timeout=connect_timeout_s)
        try:
            return client.execute_command("ROLE")
        finally:
            client.close()

    primary = role(group.primary)
    if primary[0] != b"master" or len(primary[2]) < len(group.replicas):
        return False        # (a ChorusDB member answers as a replica until it is elected)
    return all(role(replica)[3] == b"connected" for replica in group.replicas)


def await_replication(group: ReplicatedServers) -> None:
    """Wait until every replica of ``group`` is linked and synced; ``ServerStartError`` with
    the primary's log tail after ``replication_ready_timeout_s``."""
    deadline = time.monotonic() + replication_ready_timeout_s
    while time.monotonic() < deadline:
        for server in group.members:
            if server.process.poll() is not None:
                raise ServerStartError(f"{server.describe()} exited with "
                                       f"{server.process.returncode} while its group started; "
                                       f"its log:\n{_log_tail(server.log_path)}")
        try:
            if _replication_ready(group):
                return
        except redis.exceptions.RedisError:      # loading, or not listening yet
            pass
        time.sleep(ready_poll_interval_s)
    raise ServerStartError(
        f"{group.system} ({group.config}): the replicas were not all linked within "
        f"{replication_ready_timeout_s:.0f} s; the primary's log:\n"
        f"{_log_tail(group.primary.log_path)}")


def stop(server: ServerProcess) -> int:
    return stop_process(server.process, server_stop_timeout_s)


def stop_group(group: ReplicatedServers) -> None:
    """Stop the replicas, then the primary, each by its PID."""
    for server in reversed(group.members):
        stop(server)


def preload_keyspace(server: ServerProcess, keyspace: int, value_bytes: int) -> None:
    """SET every key redis-benchmark's ``-r keyspace`` can pick, so each GET finds its key and
    each SET overwrites one: both systems then measure the same steady state."""
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=preload_timeout_s,
                         socket_connect_timeout=connect_timeout_s)
    value = b"x" * value_bytes
    try:
        for start in range(0, keyspace, preload_batch_keys):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + preload_batch_keys, keyspace)):
                pipe.set(benchmark_key(i), value)
            pipe.execute()
    finally:
        client.close()


def benchmark_key(index: int) -> bytes:
    """The key redis-benchmark sends for ``key:__rand_int__`` when it draws ``index``."""
    return b"key:%012d" % index


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads included."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return cpu_seconds_of_proc_pid_stat(f.read())


def cpu_seconds_of_proc_pid_stat(line: bytes) -> float:
    """utime + stime of one ``/proc/PID/stat`` line. The command name, in parentheses, may hold
    spaces and parentheses itself, so the fields are counted from the last ")"."""
    fields = line.rsplit(b")", 1)[1].split()
    ticks = int(fields[PROC_PID_UTIME_INDEX]) + int(fields[PROC_PID_STIME_INDEX])
    return ticks / CLOCK_TICKS_PER_S


def machine_busy_cpu_seconds() -> float:
    """CPU seconds every core of the machine has spent not idle since boot."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(fields[i]) for i in PROC_STAT_BUSY_FIELDS) / CLOCK_TICKS_PER_S


def run_on_fast_loop(workload: Coroutine) -> object:
    """Run a client driver to its end on uvloop where it is installed (cheaper per operation,
    so the client takes less of the CPU the servers are measured on), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(workload)
    return uvloop.run(workload)
