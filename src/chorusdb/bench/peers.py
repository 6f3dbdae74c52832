"""The other replicated systems ``bench cluster`` sets ChorusDB's leader mode beside: PostgreSQL
streaming replication with two standbys, and a three-member etcd 3.4 cluster, each started in a
temporary directory on 127.0.0.1, measured on one write workload, and stopped by the PIDs of its
processes on every way out.

Both answer ``results.REPLICATED_SET`` ("SET on a replica"): a write acknowledged only once
another member holds it. Each ``measure_*`` function returns a ``PeerResult`` (the
``ClusterFigure``, the CPU seconds the peer's server processes used while measured, the
operations counted) or, when its binaries are missing or cannot run here, a ``Skipped`` whose
one-line reason names the command that installs them. A peer that was found but failed to
start raises ``servers.ServerStartError``; one whose workload failed raises ``PeerError``.

PostgreSQL (``initdb``, ``postgres``, ``pg_basebackup``, ``pgbench``, ``psql``). ``postgres`` is
looked up on PATH, then under ``/usr/lib/postgresql/*/bin`` (newest first); the other tools are
taken from the directory ``postgres`` really lives in (a Debian symlink resolved), so they
match its version, then from PATH, then from those directories. The primary is initdb'd with
trust authentication on 127.0.0.1 only (``pg_hba.conf``: ``postgres_hba_text``) and the
settings of ``postgres_conf_text``: no Unix socket, ``wal_level = replica``, ``fsync = on``,
``synchronous_commit`` as asked (``remote_apply`` by default: a commit returns once one standby
has applied it, so a read there sees it; ``on``: once one standby has flushed it) and
``synchronous_standby_names = 'ANY 1 (s1, s2)'``. Two standbys are copied from it with
``pg_basebackup -R -X stream``, whose connection string carries ``application_name`` s1 and
s2, so ``-R`` writes it into their ``primary_conninfo``. The group counts as started once
``pg_stat_replication`` on the primary shows both standbys ``streaming`` with ``sync_state``
``quorum``. Each server is ``postgres -D DIR -p PORT`` itself (not ``pg_ctl``), so the PID the
benchmark holds is the postmaster's; SIGTERM is PostgreSQL's smart shutdown, SIGKILL follows
after ``peer_stop_grace_s``. PostgreSQL refuses to run as root: under root the server-side
tools run as the ``postgres`` user through ``setpriv`` (which execs, so the PID is still the
postmaster's), with the data directories in a directory of their own that user owns (the
caller's temporary directory is usually private to root), removed afterwards.

The workload: table ``kv (k integer PRIMARY KEY, v text)`` filled with the keyspace, then
``pgbench -n -c 32 -j 2 -T SECONDS -f upsert.sql -D keyspace=N -l``, where each transaction is
one ``INSERT ... ON CONFLICT (k) DO UPDATE`` of a random key (``PGBENCH_SCRIPT``), so every
write overwrites a row as every SET of the Redis workloads overwrites a key. The rate is
pgbench's own ``tps`` (without the connections' setup); p50 and p99 come from the
per-transaction logs (``-l``: one line per transaction, its latency in µs in the third field;
``failed`` or ``skipped`` there counts as an error).

etcd (``etcd`` on PATH). Three members, each with its client and peer URL on a free port of
127.0.0.1, its data directory, one ``--initial-cluster`` string, and etcd's default durability
(every raft entry fsync'd; ``--unsafe-no-fsync`` is not set). Started once ``GET /health``
answers ``{"health": "true"}`` on every member; the leader is the member whose
``/v3/maintenance/status`` names itself. The workload: 32 keep-alive HTTP/1.1 connections to
the leader's gRPC gateway, each sending one ``POST /v3/kv/put`` (JSON ``{"key": base64,
"value": base64}``, ``etcd_put_body``) at a time for the given seconds, keys drawn at random
from the keyspace (not preloaded: a put writes a new revision whether the key existed or not).
The client is a few lines of asyncio streams (uvloop when installed) rather than an HTTP
library: a put then costs the client tens of microseconds, not the hundreds a general client
spends, which on a 2-core machine would otherwise be CPU taken from the servers measured. An
answer other than 200 counts as an error.

CPU seconds (``process_tree_cpu_seconds``): ``/proc/PID/stat`` fields 14-17 (utime, stime and
cutime, cstime: the time of the children it reaped) summed over the group's server processes
and every live descendant of them (PostgreSQL forks a backend per connection), read before and
after the measurement. A descendant that exits is reaped by its parent, whose cutime then holds
its time, so nothing is lost or counted twice; after pgbench ends, the benchmark waits (at most
``backend_exit_timeout_s``) for its backends to be reaped before the second reading.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import json
import math
import os
import pwd
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from chorusdb.bench import results, servers
from chorusdb.bench.results import REPLICATED_SET, ClusterFigure
from chorusdb.bench.servers import HOST, ServerStartError, run_on_fast_loop
from chorusdb.server.process import free_ports, stop_process

connections = 32                    # concurrent clients of either peer, one write at a time each
pgbench_threads = 2                 # pgbench -j: one per core of the reference machine
value_bytes = 16                    # as redis-benchmark -d 16 in the other workloads
VALUE = "v" * value_bytes
peer_stop_grace_s = 10.0            # SIGTERM, then SIGKILL if still running after this
ready_poll_interval_s = 0.1
setup_command_timeout_s = 120.0     # one initdb, pg_basebackup, psql or --version run
postgres_ready_timeout_s = 30.0     # a started server answering queries
replication_ready_timeout_s = 30.0  # both standbys streaming, in the quorum
probe_timeout_s = 5.0               # one psql "SELECT 1" while a server starts
# pgbench's backends exit within milliseconds of it; an autovacuum worker may outlive them.
backend_exit_timeout_s = 1.0
workload_margin_s = 60.0            # a workload's run may exceed its seconds by this much
max_wal_senders = 8                 # two standbys, plus pg_basebackup's two while copying
etcd_ready_timeout_s = 30.0         # every member answering /health
health_request_timeout_s = 2.0      # one /health or /v3/maintenance/status request
connect_timeout_s = 5.0
etcd_members = 3

POSTGRES_SERVER = "postgres"
POSTGRES_TOOLS = ("initdb", POSTGRES_SERVER, "pg_basebackup", "pgbench", "psql")
POSTGRES_LIB_DIRS_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_USER = "postgres"          # the database superuser, and the OS user under root
STANDBY_NAMES = ("s1", "s2")
SYNCHRONOUS_COMMIT_LEVELS = ("remote_apply", "on")
synchronous_commit_default = "remote_apply"
PGBENCH_SCRIPT = (
    "\\set k random(1, :keyspace)\n"
    f"INSERT INTO kv (k, v) VALUES (:k, '{VALUE}') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;\n")
PGBENCH_LOG_ERRORS = ("failed", "serialization", "deadlock", "skipped")
# pgbench 15 prints "tps = 7512.123456 (without initial connection time)"; 13 and 14 printed
# the same figure as "(excluding connections establishing)".
PGBENCH_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without initial connection time|"
                         r"excluding connections establishing)\)$", re.MULTILINE)
INSTALL_POSTGRES = "sudo apt-get install postgresql"
INSTALL_ETCD = "sudo apt-get install etcd-server"
ETCD = "etcd"
ETCD_PUT_PATH = "/v3/kv/put"        # etcd 3.4's gateway; 3.3 had /v3beta, 3.2 /v3alpha
ETCD_STATUS_PATH = "/v3/maintenance/status"
ETCD_CLUSTER_TOKEN = "chorusdb-bench"
http_head_bytes_max = 16 * 1024     # of one HTTP response's status line and headers

# /proc/PID/stat after the ")" that closes the command name: field 3 is index 0, so the parent
# (field 4) is index 1 and cutime, cstime (fields 16, 17) indexes 13, 14.
PROC_PID_PPID_INDEX = 1
PROC_PID_CUTIME_INDEX, PROC_PID_CSTIME_INDEX = 13, 14


class PeerError(RuntimeError):
    """A peer's workload failed or printed something unreadable: it measured nothing."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A peer that cannot run here, and why, in one line naming what would fix it."""

    system: str
    reason: str


@dataclass(frozen=True, slots=True)
class PeerResult:
    """A peer's figure on ``REPLICATED_SET``; ``cpu_s`` is the user + system time of all its
    server processes (every member, backends included) during the workload."""

    figure: ClusterFigure           # its cpu_s_per_1k_ops set from cpu_s and operations
    cpu_s: float
    operations: int
    version: str
    pids: tuple[int, ...]


# --- CPU time of a process tree -------------------------------------------------------------------


def _proc_stat_fields(line: bytes) -> list[bytes]:
    """The fields of a ``/proc/PID/stat`` line after the command name (which may hold spaces
    and parentheses itself, hence the last ")")."""
    return line.rsplit(b")", 1)[1].split()


def process_tree(roots: Sequence[int], proc: Path = Path("/proc")) -> dict[int, list[bytes]]:
    """The ``/proc/PID/stat`` fields of the live ``roots`` and all their live descendants."""
    stats: dict[int, list[bytes]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = _proc_stat_fields((entry / "stat").read_bytes())
            except (FileNotFoundError, ProcessLookupError):     # exited while listed
                continue
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[PROC_PID_PPID_INDEX]), []).append(pid)
    tree: dict[int, list[bytes]] = {}
    pending = [pid for pid in roots if pid in stats]
    while pending:
        pid = pending.pop()
        tree[pid] = stats[pid]
        pending.extend(children.get(pid, ()))
    return tree


def process_tree_cpu_seconds(tree: dict[int, list[bytes]]) -> float:
    """User + system CPU seconds of the processes of ``tree`` and of the children they reaped."""
    ticks = sum(int(fields[index]) for fields in tree.values()
                for index in (servers.PROC_PID_UTIME_INDEX, servers.PROC_PID_STIME_INDEX,
                              PROC_PID_CUTIME_INDEX, PROC_PID_CSTIME_INDEX))
    return ticks / servers.CLOCK_TICKS_PER_S


# --- processes ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Group:
    """The server processes of one peer, stopped in reverse order of start by ``stop``."""

    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(process.pid for process in self.processes)

    def spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen:
        """Start a server in a new session (a Ctrl-C in the terminal reaches the benchmark
        only), its output to ``log_path``."""
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        self.logs.append(log_path)
        return process

    def check_running(self) -> None:
        for process, log in zip(self.processes, self.logs):
            if process.poll() is not None:
                raise ServerStartError(f"{' '.join(process.args)} exited with "
                                       f"{process.returncode}; its log:\n{log_tail(log)}")

    def poll_until(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Ask ``ready`` every ``ready_poll_interval_s`` until it says yes (True) or
        ``timeout_s`` passes (False); ``ServerStartError`` as soon as a server exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_running()
            if ready():
                return True
            time.sleep(ready_poll_interval_s)
        return False

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process, peer_stop_grace_s)


def log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-servers.log_tail_bytes:].decode("utf-8", "replace")


def _run_tool(argv: list[str], what: str) -> str:
    """Run a setup command to its end; its stdout, or ``ServerStartError`` with its output."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=setup_command_timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ServerStartError(f"{what}: {argv[0]} did not finish within "
                               f"{setup_command_timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise ServerStartError(f"{what}: {' '.join(argv)} exited with {done.returncode}:\n"
                               f"{(done.stderr or done.stdout)[-servers.log_tail_bytes:]}")
    return done.stdout


def _peer_result(system: str, config: str, latencies_ms: list[float], ops_per_s: float,
                 how: str, errors: int, cpu_s: float, version: str,
                 pids: tuple[int, ...]) -> PeerResult:
    if not latencies_ms:
        raise PeerError(f"{system} ({config}): no write succeeded ({errors} errors)")
    figure = ClusterFigure(system, config, REPLICATED_SET, ops_per_s,
                           results.percentile(latencies_ms, 0.5),
                           results.percentile(latencies_ms, 0.99), how, errors,
                           cpu_s_per_1k_ops=cpu_s * results.ops_per_cpu_figure
                           / len(latencies_ms))
    return PeerResult(figure, cpu_s, len(latencies_ms), version, pids)


# --- PostgreSQL -----------------------------------------------------------------------------------


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def postgres_lib_dirs() -> list[Path]:
    """``/usr/lib/postgresql/*/bin``, the newest major version first."""
    def version(directory: Path) -> tuple[int, ...]:
        name = directory.parent.name
        return tuple(int(part) for part in name.split(".")) if \
            name.replace(".", "").isdigit() else (-1,)
    return sorted((Path(p) for p in glob.glob(POSTGRES_LIB_DIRS_GLOB)), key=version,
                  reverse=True)


def find_postgres_tools(path: str | None = None,
                        lib_dirs: Sequence[Path] | None = None) -> dict[str, str] | Skipped:
    """Each of ``POSTGRES_TOOLS`` by name, looked up as the module docstring says (``path``:
    a PATH to search instead of the environment's); ``Skipped`` naming those not found."""
    lib_dirs = postgres_lib_dirs() if lib_dirs is None else list(lib_dirs)

    def locate(tool: str, first_dirs: Sequence[Path]) -> str | None:
        for directory in first_dirs:
            if _executable(directory / tool):
                return str(directory / tool)
        found = shutil.which(tool, path=path)
        if found:
            return found
        return next((str(d / tool) for d in lib_dirs if _executable(d / tool)), None)

    server = locate(POSTGRES_SERVER, ())
    home = [Path(os.path.realpath(server)).parent] if server else []
    tools = {tool: locate(tool, home) for tool in POSTGRES_TOOLS}
    missing = [tool for tool, found in tools.items() if found is None]
    if missing:
        return Skipped("postgresql", f"{', '.join(missing)} not found on PATH nor in "
                                     f"{POSTGRES_LIB_DIRS_GLOB}; install with: "
                                     f"{INSTALL_POSTGRES}")
    return tools


def run_as_postgres_prefix() -> list[str] | Skipped:
    """What to put before a server-side command so it does not run as root: nothing unless
    this process is root; then ``setpriv`` to the ``postgres`` user, or ``Skipped``."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        return Skipped("postgresql", f"PostgreSQL refuses to run as root and there is no "
                                     f"'{POSTGRES_USER}' user to run it as ({INSTALL_POSTGRES} "
                                     "creates one)")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return Skipped("postgresql", "PostgreSQL refuses to run as root and setpriv (util-linux) "
                                     f"is missing to run it as '{POSTGRES_USER}': sudo apt-get "
                                     "install util-linux")
    return [setpriv, f"--reuid={POSTGRES_USER}", f"--regid={POSTGRES_USER}", "--init-groups",
            "--"]


def postgres_conf_text(synchronous_commit: str) -> str:
    """What is appended to the primary's ``postgresql.conf`` (the standbys copy it)."""
    assert synchronous_commit in SYNCHRONOUS_COMMIT_LEVELS, synchronous_commit
    return ("\n# chorusdb bench cluster\n"
            f"listen_addresses = '{HOST}'\n"
            "unix_socket_directories = ''\n"
            "wal_level = replica\n"
            f"max_wal_senders = {max_wal_senders}\n"
            "fsync = on\n"
            f"synchronous_commit = {synchronous_commit}\n"
            f"synchronous_standby_names = 'ANY 1 ({', '.join(STANDBY_NAMES)})'\n"
            "hot_standby = on\n")


def postgres_hba_text() -> str:
    """The primary's whole ``pg_hba.conf``: trust, on 127.0.0.1 only, for queries and
    replication."""
    return (f"host all all {HOST}/32 trust\n"
            f"host replication all {HOST}/32 trust\n")


def postgres_config_name(synchronous_commit: str) -> str:
    """Short, for the results table's config column: synchronous_standby_names is always
    'ANY 1 (s1, s2)', the figure's ``how`` says so."""
    return f"sync {synchronous_commit}"


def standby_conninfo(port: int, application_name: str) -> str:
    return f"host={HOST} port={port} user={POSTGRES_USER} application_name={application_name}"


def pgbench_argv(pgbench: str, port: int, seconds: int, script: Path, log_prefix: Path,
                 keyspace: int) -> list[str]:
    return [pgbench, "-n", "-c", str(connections), "-j", str(pgbench_threads), "-T",
            str(seconds), "-f", str(script), "-D", f"keyspace={keyspace}", "-l",
            f"--log-prefix={log_prefix}", "-h", HOST, "-p", str(port), "-U", POSTGRES_USER,
            POSTGRES_USER]


def parse_pgbench_log(text: str) -> tuple[list[float], int]:
    """The latencies (ms) of the transactions of a ``pgbench -l`` log, and how many failed or
    were skipped. A line: ``client_id transaction_no time script_no time_epoch time_us``, with
    ``time`` the transaction's latency in µs or ``failed``/``skipped``/..."""
    latencies_ms: list[float] = []
    errors = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 6:
            raise PeerError(f"a pgbench log line with fewer than 6 fields: {line!r}")
        if fields[2] in PGBENCH_LOG_ERRORS:
            errors += 1
        elif fields[2].isdigit():
            latencies_ms.append(int(fields[2]) / 1000)
        else:
            raise PeerError(f"a pgbench log line whose latency is {fields[2]!r}: {line!r}")
    return latencies_ms, errors


def parse_pgbench_tps(output: str) -> float:
    """pgbench's rate, without the time its connections took to open."""
    match = PGBENCH_TPS.search(output)
    if match is None:
        raise PeerError(f"no 'tps = ...' line in pgbench's output:\n{output}")
    return float(match.group(1))


class _Postgres:
    """The servers of one measurement and the commands that drive them."""

    def __init__(self, tools: dict[str, str], prefix: list[str], data_root: Path,
                 workdir: Path) -> None:
        self.tools = tools
        self.prefix = prefix
        self.data_root = data_root
        self.workdir = workdir
        self.group = Group()
        self.primary_port = 0

    def server_tool(self, tool: str, *args: str) -> list[str]:
        return [*self.prefix, self.tools[tool], *args]

    def psql(self, *commands: str) -> str:
        """Run each command in its own transaction on the primary; their output, unaligned."""
        argv = [self.tools["psql"], "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p",
                str(self.primary_port), "-U", POSTGRES_USER, "-d", POSTGRES_USER]
        for command in commands:
            argv += ["-c", command]
        return _run_tool(argv, "psql")

    def start_server(self, name: str, data_dir: Path, port: int) -> None:
        process = self.group.spawn(self.server_tool(POSTGRES_SERVER, "-D", str(data_dir), "-p",
                                                    str(port)),
                                   self.workdir / f"{name}.log")
        probe = [self.tools["psql"], "-X", "-A", "-t", "-h", HOST, "-p", str(port), "-U",
                 POSTGRES_USER, "-d", POSTGRES_USER, "-c", "SELECT 1"]

        def answers() -> bool:
            try:
                return subprocess.run(probe, capture_output=True, stdin=subprocess.DEVNULL,
                                      timeout=probe_timeout_s).returncode == 0
            except subprocess.TimeoutExpired:       # (killed by run) starting slowly: retry
                return False

        if self.group.poll_until(answers, postgres_ready_timeout_s):
            return
        raise ServerStartError(f"postgres {name} (pid {process.pid}) did not answer queries "
                               f"within {postgres_ready_timeout_s:.0f} s; its log:\n"
                               f"{log_tail(self.workdir / f'{name}.log')}")

    def start(self, synchronous_commit: str) -> None:
        """The primary and its standbys, both in the synchronous quorum."""
        ports = free_ports(1 + len(STANDBY_NAMES))
        self.primary_port = ports[0]
        primary = self.data_root / "primary"
        _run_tool(self.server_tool("initdb", "-D", str(primary), "-U", POSTGRES_USER,
                                   "-A", "trust", "--no-sync"), "initdb")
        with open(primary / "postgresql.conf", "a") as conf:     # owned by the server's user
            conf.write(postgres_conf_text(synchronous_commit))
        with open(primary / "pg_hba.conf", "w") as hba:
            hba.write(postgres_hba_text())
        self.start_server("primary", primary, self.primary_port)
        for name, port in zip(STANDBY_NAMES, ports[1:]):
            standby = self.data_root / name
            _run_tool(self.server_tool("pg_basebackup", "-D", str(standby), "-R", "-X",
                                       "stream", "-d", standby_conninfo(self.primary_port, name)),
                      f"pg_basebackup of standby {name}")
            self.start_server(name, standby, port)
        self.await_quorum()

    def await_quorum(self) -> None:
        wanted = {f"{name}|streaming|quorum" for name in STANDBY_NAMES}
        seen = [""]

        def in_quorum() -> bool:
            seen[0] = self.psql("SELECT application_name, state, sync_state "
                                "FROM pg_stat_replication")
            return wanted <= set(seen[0].split())

        if self.group.poll_until(in_quorum, replication_ready_timeout_s):
            return
        raise ServerStartError(f"postgresql: the standbys were not both streaming in the quorum "
                               f"within {replication_ready_timeout_s:.0f} s; "
                               f"pg_stat_replication: {seen[0].split()}")

    def fill(self, keyspace: int) -> None:
        self.psql("CREATE TABLE kv (k integer PRIMARY KEY, v text NOT NULL)",
                  f"INSERT INTO kv SELECT g, '{VALUE}' FROM generate_series(1, {keyspace}) g",
                  "VACUUM ANALYZE kv")

    def pgbench(self, seconds: int, keyspace: int) -> tuple[str, list[float], int]:
        """pgbench's output, the transactions' latencies (ms) and the failed ones."""
        script = self.workdir / "upsert.sql"
        script.write_text(PGBENCH_SCRIPT)
        log_dir = self.workdir / "pgbench-logs"
        log_dir.mkdir()
        argv = pgbench_argv(self.tools["pgbench"], self.primary_port, seconds, script,
                            log_dir / "pgbench_log", keyspace)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, cwd=self.workdir,
                                  timeout=seconds + workload_margin_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PeerError(f"pgbench ran over {seconds + workload_margin_s:.0f} s") from None
        if done.returncode != 0:
            raise PeerError(f"pgbench exited with {done.returncode}:\n"
                            f"{(done.stderr + done.stdout)[-servers.log_tail_bytes:]}")
        latencies_ms: list[float] = []
        errors = 0
        for log in sorted(log_dir.iterdir()):
            some, failed = parse_pgbench_log(log.read_text())
            latencies_ms += some
            errors += failed
        return done.stdout, latencies_ms, errors

    def await_backends_exit(self, before: set[int]) -> None:
        """Until no process of the tree is newer than ``before`` (pgbench's backends reaped),
        at most ``backend_exit_timeout_s``."""
        deadline = time.monotonic() + backend_exit_timeout_s
        while time.monotonic() < deadline and \
                set(process_tree(self.group.pids)) - before:
            time.sleep(ready_poll_interval_s)


def measure_postgres(workdir: Path, seconds: float, keyspace: int, console: Console,
                     synchronous_commit: str = synchronous_commit_default
                     ) -> PeerResult | Skipped:
    """PostgreSQL with two standbys on ``REPLICATED_SET`` for ``seconds`` (rounded up to whole
    seconds, as pgbench counts them), its table holding ``keyspace`` rows; ``workdir`` is a
    fresh directory for the logs (and, unless under root, the data). Every server is stopped
    by PID before it returns."""
    assert synchronous_commit in SYNCHRONOUS_COMMIT_LEVELS, synchronous_commit
    tools = find_postgres_tools()
    if isinstance(tools, Skipped):
        return tools
    prefix = run_as_postgres_prefix()
    if isinstance(prefix, Skipped):
        return prefix
    version = servers.tool_version(tools[POSTGRES_SERVER])
    config = postgres_config_name(synchronous_commit)
    whole_seconds = max(1, math.ceil(seconds))
    workdir.mkdir(parents=True, exist_ok=True)
    # Under root the data lives where the postgres user may reach it: a directory of its own.
    data_root = Path(tempfile.mkdtemp(prefix="chorusdb-bench-postgres-")) if prefix \
        else workdir / "data"
    peer = _Postgres(tools, prefix, data_root, workdir)
    try:
        if prefix:
            shutil.chown(data_root, POSTGRES_USER, POSTGRES_USER)
        else:
            data_root.mkdir()
        console.print(f"postgresql {version} ({config}): starting a primary and "
                      f"{len(STANDBY_NAMES)} standbys", highlight=False, markup=False)
        peer.start(synchronous_commit)
        peer.fill(keyspace)
        console.print(f"postgresql ({config}): pgbench, {connections} clients, "
                      f"{whole_seconds} s", highlight=False, markup=False)
        before_tree = process_tree(peer.group.pids)
        output, latencies_ms, errors = peer.pgbench(whole_seconds, keyspace)
        peer.await_backends_exit(set(before_tree))
        cpu_s = (process_tree_cpu_seconds(process_tree(peer.group.pids))
                 - process_tree_cpu_seconds(before_tree))
        how = (f"two standbys, synchronous_standby_names 'ANY 1 (s1, s2)'; pgbench -c "
               f"{connections} -j {pgbench_threads} -T {whole_seconds}, each transaction one "
               "INSERT ... ON CONFLICT DO UPDATE of a random preloaded key, latencies from its "
               "per-transaction log")
        return _peer_result("postgresql", config, latencies_ms, parse_pgbench_tps(output), how,
                            errors, cpu_s, version, peer.group.pids)
    finally:
        peer.group.stop()
        if prefix:
            # The servers are stopped; a killed one's children may still be exiting, and a file
            # they leave behind is not worth failing the benchmark over.
            shutil.rmtree(data_root, ignore_errors=True)


# --- etcd -----------------------------------------------------------------------------------------


def find_etcd(path: str | None = None) -> str | Skipped:
    found = shutil.which(ETCD, path=path)
    if found is None:
        return Skipped("etcd", f"{ETCD} not found on PATH; install with: {INSTALL_ETCD}")
    return found


def etcd_initial_cluster(names: Sequence[str], peer_ports: Sequence[int]) -> str:
    return ",".join(f"{name}=http://{HOST}:{port}" for name, port in zip(names, peer_ports))


def etcd_argv(etcd: str, name: str, data_dir: Path, client_port: int, peer_port: int,
              initial_cluster: str) -> list[str]:
    client_url, peer_url = f"http://{HOST}:{client_port}", f"http://{HOST}:{peer_port}"
    return [etcd, "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", ETCD_CLUSTER_TOKEN,
            "--logger", "zap", "--log-level", "warn"]


def etcd_put_body(key: bytes, value: bytes) -> bytes:
    """The JSON of a gateway put: key and value base64-encoded, as the gateway's protobuf
    mapping has ``bytes`` fields."""
    return json.dumps({"key": base64.b64encode(key).decode(),
                       "value": base64.b64encode(value).decode()},
                      separators=(",", ":")).encode()


def http_post(port: int, path: str, body: bytes) -> bytes:
    """One keep-alive HTTP/1.1 POST of a JSON body."""
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def parse_http_head(head: bytes) -> tuple[int, int]:
    """The status and ``Content-Length`` of a response's head (status line and headers, up to
    the blank line); ``PeerError`` for a body not sized that way (chunked)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise PeerError(f"not an HTTP/1.x status line: {lines[0]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(parts[1]), int(value.strip())
    raise PeerError(f"an HTTP response without Content-Length: {head!r}")


def _get_json(url: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type":
                                                              "application/json"})
    with urllib.request.urlopen(request, timeout=health_request_timeout_s) as response:
        return json.loads(response.read())


def _etcd_healthy(port: int) -> bool:
    try:
        return _get_json(f"http://{HOST}:{port}/health").get("health") == "true"
    except (OSError, ValueError):       # not listening, or no quorum yet (URLError is OSError)
        return False


def _etcd_leader_port(client_ports: Sequence[int]) -> int | None:
    """The client port of the member whose status names itself the leader; None while the
    members have not agreed on one."""
    for port in client_ports:
        try:
            status = _get_json(f"http://{HOST}:{port}{ETCD_STATUS_PATH}", b"{}")
        except (OSError, ValueError):
            return None
        if status.get("leader") and status["leader"] == status.get("header", {}).get(
                "member_id"):
            return port
    return None


def start_etcd(etcd: str, workdir: Path, group: Group) -> int:
    """Three members, every one healthy; the client port of the leader."""
    names = [f"m{number}" for number in range(1, etcd_members + 1)]
    ports = free_ports(2 * etcd_members)
    client_ports, peer_ports = ports[:etcd_members], ports[etcd_members:]
    initial_cluster = etcd_initial_cluster(names, peer_ports)
    for name, client_port, peer_port in zip(names, client_ports, peer_ports):
        group.spawn(etcd_argv(etcd, name, workdir / f"{name}.etcd", client_port, peer_port,
                              initial_cluster), workdir / f"{name}.log")
    deadline = time.monotonic() + etcd_ready_timeout_s
    while time.monotonic() < deadline:
        group.check_running()
        if all(_etcd_healthy(port) for port in client_ports):
            leader = _etcd_leader_port(client_ports)
            if leader is not None:
                return leader
        time.sleep(ready_poll_interval_s)
    raise ServerStartError(f"etcd: the {etcd_members} members were not all healthy with a "
                           f"leader within {etcd_ready_timeout_s:.0f} s; the first one's log:\n"
                           f"{log_tail(group.logs[0])}")


@dataclass(slots=True)
class PutRecord:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0


async def etcd_puts(port: int, seconds: float, keyspace: int, seed: int) -> PutRecord:
    """``connections`` connections putting random keys one at a time for ``seconds``."""
    record = PutRecord()
    value = VALUE.encode()
    started = time.perf_counter()
    deadline = started + seconds

    async def connection(number: int) -> None:
        rng = random.Random(seed * connections + number)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, limit=http_head_bytes_max), connect_timeout_s)
        try:
            while time.perf_counter() < deadline:
                key = servers.benchmark_key(rng.randrange(keyspace))
                sent = time.perf_counter()
                writer.write(http_post(port, ETCD_PUT_PATH, etcd_put_body(key, value)))
                head = await reader.readuntil(b"\r\n\r\n")
                status, length = parse_http_head(head)
                await reader.readexactly(length)
                if status == 200:
                    record.latencies_ms.append((time.perf_counter() - sent) * 1000)
                else:
                    record.errors += 1
        finally:
            writer.close()

    async def bounded() -> None:
        await asyncio.wait_for(asyncio.gather(*(connection(n) for n in range(connections))),
                               seconds + workload_margin_s)

    try:
        await bounded()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError) as e:
        raise PeerError(f"etcd puts: {type(e).__name__}: {e}") from None
    record.wall_s = time.perf_counter() - started
    return record


def measure_etcd(workdir: Path, seconds: float, keyspace: int, console: Console,
                 seed: int = 1) -> PeerResult | Skipped:
    """A three-member etcd on ``REPLICATED_SET`` for ``seconds``, keys drawn from ``keyspace``
    (``seed`` seeds the draws); ``workdir`` is a fresh directory for the data and logs. Every
    member is stopped by PID before it returns."""
    etcd = find_etcd()
    if isinstance(etcd, Skipped):
        return etcd
    version = servers.tool_version(etcd)
    config = f"{etcd_members} members"
    workdir.mkdir(parents=True, exist_ok=True)
    group = Group()
    try:
        console.print(f"etcd {version} ({config}): starting", highlight=False, markup=False)
        leader_port = start_etcd(etcd, workdir, group)
        console.print(f"etcd ({config}): puts from {connections} connections, {seconds:g} s",
                      highlight=False, markup=False)
        before = process_tree_cpu_seconds(process_tree(group.pids))
        record = run_on_fast_loop(etcd_puts(leader_port, seconds, keyspace, seed))
        cpu_s = process_tree_cpu_seconds(process_tree(group.pids)) - before
        how = (f"{connections} keep-alive HTTP/1.1 connections to the leader, one POST "
               f"{ETCD_PUT_PATH} of a random key at a time each")
        return _peer_result("etcd", config, record.latencies_ms,
                            len(record.latencies_ms) / record.wall_s, how, record.errors, cpu_s,
                            version, group.pids)
    finally:
        group.stop()
