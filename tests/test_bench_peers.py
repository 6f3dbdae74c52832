"""The peers of ``bench cluster`` (PostgreSQL with two standbys, a three-member etcd): what can
be checked without their binaries (pgbench's log and rate lines, the etcd request and response,
the configuration written for PostgreSQL, where the binaries are looked for and the reasons a
peer is skipped, the CPU time of a process tree on a made-up /proc), and one short real run of
each peer where its binaries are installed."""

from __future__ import annotations

import base64
import json
import os
import pwd
import tempfile
from pathlib import Path

import pytest
from rich.console import Console

from chorusdb.bench import peers
from chorusdb.bench.results import REPLICATED_SET

# pgbench 15 -l: client_id transaction_no time script_no time_epoch time_us
PGBENCH_LOG = """\
0 1 4210 0 1763810000 123456
1 1 3990 0 1763810000 124001
0 2 failed 0 1763810000 130000
2 1 12001 0 1763810000 131500
3 1 skipped 0 1763810000 132000

"""

# Debian 12's pgbench 15.18, verbatim but for the figures.
PGBENCH_15_OUTPUT = """\
transaction type: upsert.sql
scaling factor: 1
query mode: simple
number of clients: 32
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 56229
number of failed transactions: 0 (0.000%)
latency average = 5.601 ms
initial connection time = 97.470 ms
tps = 5689.412733 (without initial connection time)
"""

PGBENCH_14_OUTPUT = """\
latency average = 4.201 ms
tps = 7480.102000 (including connections establishing)
tps = 7533.250111 (excluding connections establishing)
"""

# etcd 3.4.23's gateway answering a put, verbatim.
ETCD_PUT_HEAD = (
    b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Headers: accept, content-type, authorization\r\n"
    b"Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"
    b"Access-Control-Allow-Origin: *\r\nContent-Type: application/json\r\n"
    b"Grpc-Metadata-Content-Type: application/grpc\r\nDate: Sun, 22 Nov 2026 11:30:41 GMT\r\n"
    b"Content-Length: 114\r\n\r\n")


def test_pgbench_log_gives_latencies_in_ms_and_counts_failed_and_skipped():
    latencies_ms, errors = peers.parse_pgbench_log(PGBENCH_LOG)
    assert latencies_ms == [4.21, 3.99, 12.001]
    assert errors == 2


@pytest.mark.parametrize("line", ["0 1 4210", "0 1 4.2ms 0 1763810000 123456"])
def test_unreadable_pgbench_log_lines_are_refused(line):
    with pytest.raises(peers.PeerError, match="pgbench log line"):
        peers.parse_pgbench_log(line + "\n")


def test_pgbench_rate_is_the_one_without_connection_time():
    assert peers.parse_pgbench_tps(PGBENCH_15_OUTPUT) == 5689.412733
    assert peers.parse_pgbench_tps(PGBENCH_14_OUTPUT) == 7533.250111
    with pytest.raises(peers.PeerError, match="no 'tps = ...' line"):
        peers.parse_pgbench_tps("latency average = 4.201 ms\n")


def test_pgbench_script_upserts_a_random_key_of_the_keyspace():
    assert peers.PGBENCH_SCRIPT.splitlines() == [
        "\\set k random(1, :keyspace)",
        "INSERT INTO kv (k, v) VALUES (:k, 'vvvvvvvvvvvvvvvv') ON CONFLICT (k) "
        "DO UPDATE SET v = EXCLUDED.v;"]
    argv = peers.pgbench_argv("pgbench", 5432, 10, Path("upsert.sql"), Path("logs/p"), 1000)
    joined = " ".join(argv)
    for flags in ("-n -c 32 -j 2 -T 10 -f upsert.sql -D keyspace=1000 -l",
                  "--log-prefix=logs/p -h 127.0.0.1 -p 5432 -U postgres postgres"):
        assert flags in joined


@pytest.mark.parametrize("level", peers.SYNCHRONOUS_COMMIT_LEVELS)
def test_postgres_conf_is_durable_quorum_replication_on_loopback_only(level):
    settings = dict(line.split(" = ", 1) for line in peers.postgres_conf_text(level).splitlines()
                    if " = " in line)
    assert settings == {
        "listen_addresses": "'127.0.0.1'", "unix_socket_directories": "''",
        "wal_level": "replica", "max_wal_senders": str(peers.max_wal_senders), "fsync": "on",
        "synchronous_commit": level, "synchronous_standby_names": "'ANY 1 (s1, s2)'",
        "hot_standby": "on"}
    assert peers.postgres_config_name(level) == f"sync {level}"
    assert peers.postgres_hba_text().splitlines() == [
        "host all all 127.0.0.1/32 trust", "host replication all 127.0.0.1/32 trust"]
    assert peers.standby_conninfo(6000, "s2").endswith("port=6000 user=postgres "
                                                      "application_name=s2")


def _fake_tools(directory: Path, tools: tuple[str, ...]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        (directory / tool).write_text("#!/bin/sh\n")
        (directory / tool).chmod(0o755)


def test_postgres_tools_missing_everywhere_skip_with_the_install_command(tmp_path):
    skipped = peers.find_postgres_tools(path=str(tmp_path), lib_dirs=[])
    assert isinstance(skipped, peers.Skipped)
    assert skipped.reason == ("initdb, postgres, pg_basebackup, pgbench, psql not found on PATH "
                              "nor in /usr/lib/postgresql/*/bin; install with: sudo apt-get "
                              "install postgresql")


def test_postgres_tools_come_from_where_postgres_really_lives_then_path_then_lib_dirs(tmp_path):
    """The Debian layout: ``postgres`` on PATH is a symlink into /usr/lib/postgresql/15/bin,
    ``pgbench`` on PATH is a wrapper; the tools next to the real ``postgres`` win."""
    real, newer, on_path = tmp_path / "15" / "bin", tmp_path / "16" / "bin", tmp_path / "bin"
    _fake_tools(real, peers.POSTGRES_TOOLS)
    _fake_tools(newer, ("psql",))
    _fake_tools(on_path, ("pgbench",))
    (on_path / "postgres").symlink_to(real / "postgres")
    tools = peers.find_postgres_tools(path=str(on_path), lib_dirs=[newer, real])
    assert tools == {tool: str(real / tool) for tool in peers.POSTGRES_TOOLS}
    elsewhere = tmp_path / "elsewhere"
    _fake_tools(elsewhere, ("postgres",))
    tools = peers.find_postgres_tools(path=f"{elsewhere}{os.pathsep}{on_path}",
                                      lib_dirs=[newer, real])
    assert (tools["postgres"], tools["pgbench"], tools["psql"], tools["initdb"]) == \
        (str(elsewhere / "postgres"), str(on_path / "pgbench"), str(newer / "psql"),
         str(real / "initdb"))


def test_lib_dirs_are_newest_version_first(monkeypatch, tmp_path):
    for version in ("9.6", "15", "13", "16"):
        (tmp_path / version / "bin").mkdir(parents=True)
    monkeypatch.setattr(peers, "POSTGRES_LIB_DIRS_GLOB", str(tmp_path / "*" / "bin"))
    assert [d.parent.name for d in peers.postgres_lib_dirs()] == ["16", "15", "13", "9.6"]


def test_postgres_runs_as_the_postgres_user_only_under_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert peers.run_as_postgres_prefix() == []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: object())
    monkeypatch.setattr(peers.shutil, "which", lambda name, path=None: "/usr/bin/setpriv")
    assert peers.run_as_postgres_prefix() == [
        "/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    monkeypatch.setattr(peers.shutil, "which", lambda name, path=None: None)
    skipped = peers.run_as_postgres_prefix()
    assert isinstance(skipped, peers.Skipped) and "setpriv (util-linux) is missing" in \
        skipped.reason

    def no_user(name):
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", no_user)
    skipped = peers.run_as_postgres_prefix()
    assert isinstance(skipped, peers.Skipped)
    assert skipped.reason == ("PostgreSQL refuses to run as root and there is no 'postgres' "
                              "user to run it as (sudo apt-get install postgresql creates one)")


def test_missing_binaries_skip_each_peer_before_anything_starts(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(peers, "POSTGRES_LIB_DIRS_GLOB", str(tmp_path / "none" / "*" / "bin"))
    console = Console(quiet=True)
    postgres = peers.measure_postgres(tmp_path / "pg", 1, 10, console)
    etcd = peers.measure_etcd(tmp_path / "etcd", 1, 10, console)
    assert isinstance(postgres, peers.Skipped) and postgres.system == "postgresql"
    assert postgres.reason.endswith("install with: sudo apt-get install postgresql")
    assert etcd == peers.Skipped("etcd", "etcd not found on PATH; install with: "
                                         "sudo apt-get install etcd-server")
    assert not (tmp_path / "pg").exists() and not (tmp_path / "etcd").exists()


def test_etcd_members_find_each_other_on_loopback():
    cluster = peers.etcd_initial_cluster(["m1", "m2", "m3"], [7001, 7002, 7003])
    assert cluster == "m1=http://127.0.0.1:7001,m2=http://127.0.0.1:7002,m3=http://127.0.0.1:7003"
    argv = peers.etcd_argv("etcd", "m2", Path("/d/m2.etcd"), 6002, 7002, cluster)
    options = dict(zip(argv[1::2], argv[2::2]))
    assert options == {
        "--name": "m2", "--data-dir": "/d/m2.etcd",
        "--listen-client-urls": "http://127.0.0.1:6002",
        "--advertise-client-urls": "http://127.0.0.1:6002",
        "--listen-peer-urls": "http://127.0.0.1:7002",
        "--initial-advertise-peer-urls": "http://127.0.0.1:7002",
        "--initial-cluster": cluster, "--initial-cluster-state": "new",
        "--initial-cluster-token": peers.ETCD_CLUSTER_TOKEN, "--logger": "zap",
        "--log-level": "warn"}
    assert "--unsafe-no-fsync" not in argv


def test_etcd_put_is_base64_json_posted_to_the_v3_gateway():
    body = peers.etcd_put_body(b"key:000000000042", b"v" * 16)
    decoded = {name: base64.b64decode(value) for name, value in json.loads(body).items()}
    assert decoded == {"key": b"key:000000000042", "value": b"v" * 16}
    request = peers.http_post(2379, "/v3/kv/put", body)
    head, _, sent_body = request.partition(b"\r\n\r\n")
    assert sent_body == body
    assert head.split(b"\r\n") == [
        b"POST /v3/kv/put HTTP/1.1", b"Host: 127.0.0.1:2379", b"Content-Type: application/json",
        b"Content-Length: %d" % len(body)]


def test_http_response_heads():
    assert peers.parse_http_head(ETCD_PUT_HEAD) == (200, 114)
    assert peers.parse_http_head(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 7\r\n\r\n") == \
        (400, 7)
    with pytest.raises(peers.PeerError, match="without Content-Length"):
        peers.parse_http_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(peers.PeerError, match="not an HTTP/1.x status line"):
        peers.parse_http_head(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")


def _stat(pid: int, name: str, ppid: int, utime: int, stime: int, cutime: int,
          cstime: int) -> str:
    # pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    # stime cutime cstime ...
    return (f"{pid} ({name}) S {ppid} 1 1 0 -1 4194560 10 0 0 0 {utime} {stime} {cutime} "
            f"{cstime} 20 0 1 0 100 1000 10\n")


def test_cpu_of_a_process_tree_counts_live_descendants_and_reaped_children(tmp_path):
    stats = {
        100: _stat(100, "postgres", 1, 10, 5, 300, 100),        # reaped backends: 400 ticks
        101: _stat(101, "postgres: checkpointer ", 100, 2, 3, 0, 0),
        102: _stat(102, "postgres: postgres (x) idle", 100, 40, 10, 0, 0),
        103: _stat(103, "grand) child", 102, 1, 1, 7, 0),
        200: _stat(200, "etcd", 1, 1000, 1000, 0, 0),           # not in the tree
        300: _stat(300, "postgres", 1, 20, 0, 0, 0),            # a second root
    }
    for pid, line in stats.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(line)
    (tmp_path / "self").mkdir()
    tree = peers.process_tree([100, 300, 999], proc=tmp_path)
    assert sorted(tree) == [100, 101, 102, 103, 300]
    ticks = 15 + 400 + 5 + 50 + 9 + 20
    assert peers.process_tree_cpu_seconds(tree) == ticks / peers.servers.CLOCK_TICKS_PER_S


def test_cpu_of_this_process_is_read_from_the_real_proc():
    tree = peers.process_tree([os.getpid()])
    assert os.getpid() in tree and peers.process_tree_cpu_seconds(tree) > 0


PEERS = {"postgresql": peers.measure_postgres, "etcd": peers.measure_etcd}


@pytest.mark.process
@pytest.mark.parametrize("system", PEERS)
def test_each_peer_measures_a_few_seconds_and_leaves_nothing_running(system, tmp_path):
    """A real run of the peer (about 10 s for PostgreSQL, 5 s for etcd), skipped with its
    reason where its binaries are not installed."""
    leftovers_before = set(Path(tempfile.gettempdir()).glob("chorusdb-bench-postgres-*"))
    measured = PEERS[system](tmp_path, 2.0, 1000, Console(quiet=True))
    if isinstance(measured, peers.Skipped):
        pytest.skip(measured.reason)
    figure = measured.figure
    assert (figure.system, figure.workload, figure.errors) == (system, REPLICATED_SET, 0)
    assert figure.ops_per_s > 0 and 0 < figure.p50_ms <= figure.p99_ms
    assert measured.operations > 0 and measured.cpu_s > 0
    assert figure.cpu_s_per_1k_ops == pytest.approx(measured.cpu_s / measured.operations * 1000)
    assert len(measured.pids) == 3
    for pid in measured.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert set(Path(tempfile.gettempdir()).glob("chorusdb-bench-postgres-*")) == leftovers_before
