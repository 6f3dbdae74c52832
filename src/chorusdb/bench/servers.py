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

CPU time comes from ``/proc``: ``/proc/PID/stat`` fields 14 and 15 (utime, stime, in clock
ticks) are the whole process, every thread included (ChorusDB's SQLite thread too); the first
line of ``/proc/stat`` is the whole machine. Linux only, as the benchmark is.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

import chorusdb
from chorusdb import __version__
from chorusdb.server.process import parse_ready_line, stop_process

redis_ready_timeout_s = 10.0
node_ready_timeout_s = 30.0
server_stop_timeout_s = 15.0
ready_poll_interval_s = 0.05
connect_timeout_s = 1.0
tool_version_timeout_s = 10.0
preload_timeout_s = 30.0            # per pipelined batch of SETs
preload_batch_keys = 1000           # SETs per round trip while filling the keyspace
log_tail_bytes = 2000               # of a server's log, shown when it fails to start

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


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


def start_redis(directory: Path, redis_server: str) -> ServerProcess:
    """redis-server with the reference configuration, ready to answer PING."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process, log_path = _spawn(
        [redis_server, "--bind", HOST, "--port", str(port), "--dir", str(directory),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
         "--daemonize", "no", "--logfile", ""],
        directory, "redis.log")
    server = ServerProcess("redis", "everysec", tool_version(redis_server), process, HOST, port,
                           log_path)
    deadline = time.monotonic() + redis_ready_timeout_s
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=connect_timeout_s)
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.ping():
                    return server
            except redis.exceptions.ConnectionError:     # not listening yet, or loading
                time.sleep(ready_poll_interval_s)
    finally:
        client.close()
    stop(server)
    raise ServerStartError(f"redis-server did not answer PING on {HOST}:{port} within "
                           f"{redis_ready_timeout_s:.0f} s; its log:\n{_log_tail(log_path)}")


def write_node_config(directory: Path, durability: str) -> Path:
    path = directory / "node.toml"
    path.write_text(
        '[node]\nid = "n1"\ndata_dir = "data"\n\n'
        f'[listen]\nclient = "{HOST}:0"\nadmin = "{HOST}:0"\n\n'
        '[cluster]\nid = "bench"\nmode = "standalone"\n\n'
        f'[storage]\ndurability = "{durability}"\n')
    return path


def start_chorusdb(directory: Path, durability: str) -> ServerProcess:
    """One standalone ChorusDB node with the given durability, ready for clients."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_node_config(directory, durability)
    process, log_path = _spawn(
        [sys.executable, "-m", "chorusdb", "serve", "--config", str(config),
         "--log-level", "WARNING"],
        directory, "chorusdb.log", stdout_name="stdout.txt",
        env=_environment_importing_this_chorusdb())
    stdout_path = directory / "stdout.txt"
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
    stop_process(process, server_stop_timeout_s)
    raise ServerStartError(
        f"chorusdb serve --config {config} "
        f"{'exited with ' + str(exited) if exited is not None else 'was not ready'} within "
        f"{node_ready_timeout_s:.0f} s; its log:\n{_log_tail(log_path)}")


def stop(server: ServerProcess) -> int:
    return stop_process(server.process, server_stop_timeout_s)


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
