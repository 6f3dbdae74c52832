"""A real ``chorusdb serve`` process driven by redis-py (RESP2 and RESP3, with and without
hiredis), raw sockets and redis-cli: the commands of the foundation issue, durability across
SIGKILL, and bad input that must neither crash the server nor change data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import redis
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser

pytestmark = pytest.mark.process

CLIENT_VARIANTS = {
    "resp2-python": dict(protocol=2, parser_class=_RESP2Parser),
    "resp3-python": dict(protocol=3, parser_class=_RESP3Parser),
    "resp2-hiredis": dict(protocol=2, parser_class=_HiredisParser),
    "resp3-hiredis": dict(protocol=3, parser_class=_HiredisParser),
}
socket_timeout_s = 10.0


def client_for(node, variant: str = "resp2-hiredis", **kwargs) -> redis.Redis:
    pool = redis.ConnectionPool(host=node.host, port=node.port, socket_timeout=socket_timeout_s,
                                **CLIENT_VARIANTS[variant], **kwargs)
    return redis.Redis(connection_pool=pool)


@pytest.mark.parametrize("variant", CLIENT_VARIANTS)
def test_every_command_through_redis_py(node, variant):
    r = client_for(node, variant)
    assert r.ping() is True
    assert r.echo(b"he\x00llo") == b"he\x00llo"
    assert r.execute_command("SELECT", 0) in (b"OK", "OK", True)
    # strings
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True, get=True) == b"v"
    assert r.set("missing", "x", xx=True) is None
    assert r.set("ttl", "1", ex=100) is True
    assert 95 <= r.ttl("ttl") <= 100
    assert r.set("ttl", "2", keepttl=True) is True
    assert r.ttl("ttl") > 0
    assert r.set("ttl", "3", px=50_000) is True
    assert 40_000 < r.pttl("ttl") <= 50_000
    assert r.persist("ttl") is True and r.ttl("ttl") == -1
    assert r.expire("ttl", 100) is True and r.ttl("ttl") > 0
    assert r.pexpire("ttl", 100_000) is True
    assert r.ttl("nope") == -2 and r.pttl("nope") == -2
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "nope") == [b"1", b"2", None]
    assert r.incr("a") == 2 and r.incrby("a", 10) == 12
    assert r.decr("a") == 11 and r.decrby("a", 5) == 6
    assert r.append("b", "xyz") == 4 and r.get("b") == b"2xyz"
    assert r.strlen("b") == 4
    assert r.exists("a", "b", "a", "nope") == 3
    assert r.type("a") == b"string" and r.type("nope") == b"none"
    # lists
    assert r.rpush("l", "x", "y") == 2
    assert r.lpush("l", "w", "v") == 4
    assert r.lrange("l", 0, -1) == [b"v", b"w", b"x", b"y"]
    assert r.llen("l") == 4
    assert r.lpop("l") == b"v" and r.rpop("l") == b"y"
    assert r.lpop("l", 5) == [b"w", b"x"]
    assert r.exists("l") == 0
    assert r.type("ttl") == b"string"
    # keyspace
    assert sorted(r.keys("*")) == [b"a", b"b", b"k", b"ttl"]
    assert sorted(r.scan_iter(match="[ab]")) == [b"a", b"b"]
    assert r.dbsize() == 4
    assert r.delete("a", "nope") == 1
    # errors, with Redis's own texts
    r.rpush("list", "1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.get("list")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("b")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="unknown command 'NOSUCH'"):
        r.execute_command("NOSUCH", "x")
    # introspection
    info = r.info()
    assert info["redis_version"] and info["role"] == "master"
    assert "db0" in r.info("keyspace")
    assert r.execute_command("ROLE")[0] in (b"master", "master")
    assert r.client_setname("me") is True and r.client_getname() in (b"me", "me")
    assert isinstance(r.client_id(), int)
    assert any(c["name"] == "me" for c in r.client_list())
    assert r.command_count() > 30
    assert r.command()["get"]["arity"] == 2
    assert raw_command(r, "COMMAND", "INFO", "GET")[0][1] == 2
    docs = raw_command(r, "COMMAND", "DOCS", "SET")
    docs = dict(zip(docs[::2], docs[1::2])) if isinstance(docs, list) else docs
    assert b"set" in docs
    assert r.execute_command("WAIT", 0, 0) == 0
    position = r.execute_command("CHORUS.POSITION")
    assert position.split(b":")[1].isdigit() and int(position.split(b":")[1]) > 10
    assert r.flushdb() is True and r.dbsize() == 0


def raw_command(r: redis.Redis, *args):
    """Send a command and read its reply without redis-py's per-command reply parsing."""
    connection = r.connection_pool.get_connection()
    try:
        connection.send_command(*args)
        return connection.read_response()
    finally:
        r.connection_pool.release(connection)


def test_hello_switches_protocol(node):
    answer = raw_exchange(node, b"HELLO 3\r\nGET nope\r\nHELLO 2\r\nGET nope\r\nHELLO 4\r\n")
    assert answer.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
    assert answer.endswith(b"_\r\n*14\r\n" + answer.split(b"*14\r\n", 1)[1].split(b"$-1")[0]
                           + b"$-1\r\n-NOPROTO unsupported protocol version\r\n")


def test_requirepass_makes_auth_required(node_factory):
    node = node_factory(requirepass="s3cret")
    anonymous = client_for(node, "resp2-python")
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("k")
    with pytest.raises(redis.AuthenticationError):
        client_for(node, "resp2-python", password="wrong").get("k")
    for variant in CLIENT_VARIANTS:
        r = client_for(node, variant, password="s3cret")
        assert r.set("k", variant) is True and r.get("k") == variant.encode()


def test_acknowledged_writes_survive_sigkill(node_factory):
    node = node_factory(durability="fsync")
    r = client_for(node)
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"key:{i}", f"value:{i}")
        pipe.rpush("events", f"e{i}")
        pipe.incrby("counter", 3)
    pipe.set("expiring", "x", ex=1000)
    pipe.delete("key:0")
    pipe.execute()
    r.close()
    node.kill()
    again = node_factory.restart(node)
    r = client_for(again)
    assert r.get("key:0") is None
    assert r.get("key:1999") == b"value:1999"
    assert r.dbsize() == 1999 + 3
    assert r.lrange("events", 0, -1) == [f"e{i}".encode() for i in range(2000)]
    assert r.get("counter") == b"6000"
    assert 900 < r.ttl("expiring") <= 1000
    before = r.execute_command("CHORUS.POSITION")
    r.set("after-restart", "1")
    after = r.execute_command("CHORUS.POSITION")
    assert int(after.split(b":")[1]) == int(before.split(b":")[1]) + 1


def test_sigterm_stops_cleanly_and_keeps_data(node_factory):
    node = node_factory(durability="os")
    r = client_for(node)
    r.set("k", "v")
    assert node.terminate() == 0
    r = client_for(node_factory.restart(node))
    assert r.get("k") == b"v"


def raw_exchange(node, payload: bytes, *, read_bytes: int = 65536) -> bytes:
    """Send raw bytes, return what the server answers until it closes or goes quiet."""
    with socket.create_connection((node.host, node.port), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(1.0)
        chunks = []
        try:
            while True:
                chunk = s.recv(read_bytes)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


@pytest.mark.parametrize("garbage, expected", [
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"-ERR Protocol error"),
    (b"*1\r\n$99999999999\r\n", b"-ERR Protocol error: invalid bulk length"),
    (b"*99999999999\r\n", b"-ERR Protocol error: invalid multibulk length"),
    (b'SET "unbalanced v\r\n', b"-ERR Protocol error: unbalanced quotes"),
    (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length"),
])
def test_malformed_resp_gets_an_error_and_a_closed_connection(node, garbage, expected):
    answer = raw_exchange(node, b"SET before 1\r\n" + garbage + b"SET after 1\r\n")
    assert answer.startswith(b"+OK\r\n" + expected), answer
    r = client_for(node)
    assert r.get("before") == b"1" and r.get("after") is None
    assert r.ping()


def test_inline_commands_work(node):
    assert raw_exchange(node, b"SET inline 'a b'\r\nGET inline\r\n") == b"+OK\r\n$3\r\na b\r\n"


def test_binary_keys_and_values_round_trip(node):
    r = client_for(node, "resp3-python")
    key, value = b"k\x00\xff\xfe", bytes(range(256)) * 4
    assert r.set(key, value) is True
    assert r.get(key) == value
    assert r.rpush(b"\x00list", b"\x00", b"\xff") == 2
    assert r.lrange(b"\x00list", 0, -1) == [b"\x00", b"\xff"]


def test_disconnect_mid_command_changes_nothing(node):
    with socket.create_connection((node.host, node.port)) as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\nonly")
    r = client_for(node)
    assert r.get("half") is None and r.ping()


def test_a_flood_of_pipelined_commands_is_answered_in_order(node):
    count = 50_000
    payload = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\nf%d\r\n$1\r\nv\r\n" % (len(b"f%d" % i), i)
                       for i in range(count))
    with socket.create_connection((node.host, node.port), timeout=30) as s:
        s.sendall(payload + b"*1\r\n$6\r\nDBSIZE\r\n")
        expected = b"+OK\r\n" * count + b":%d\r\n" % count
        received = b""
        while len(received) < len(expected):
            chunk = s.recv(1 << 20)
            assert chunk, "server closed the connection"
            received += chunk
    assert received == expected


def test_admin_endpoints(node):
    client_for(node).set("k", "v")
    base = f"http://{node.admin}"
    assert json.load(urllib.request.urlopen(f"{base}/health"))["ok"] is True
    status = json.load(urllib.request.urlopen(f"{base}/status"))
    for field in ("node_id", "cluster_id", "mode", "role", "epoch", "leader_id", "position",
                  "commit_position", "write_quorum", "election_quorum",
                  "may_lose_acknowledged_writes", "members", "divergent_entries"):
        assert field in status, field
    assert status["role"] == "standalone" and status["position"]["index"] >= 1
    metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
    for name in ("chorus_commands_total", "chorus_command_latency_seconds_bucket",
                 "chorus_received_bytes_total", "chorus_storage_fsyncs_total",
                 "chorus_group_commit_writes_bucket", "chorus_connected_clients"):
        assert name in metrics, name
    assert 'command="set"' in metrics


@pytest.mark.parametrize("content, field", [
    ("[node]\nid = \"n1\"\n", "node.data_dir"),
    ("[node]\nid = \"n1\"\ndata_dir = \"d\"\n[listen]\nclient = \"nonsense\"\n", "listen.client"),
    ("[node]\nid = \"n1\"\ndata_dir = \"d\"\n[listen]\nclient = \"127.0.0.1:0\"\n"
     "admin = \"127.0.0.1:0\"\n[storage]\ndurability = \"sometimes\"\n", "storage.durability"),
    ("[node\n", "valid TOML"),
])
def test_bad_config_exits_2_naming_the_field(tmp_path, content, field):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    done = subprocess.run([sys.executable, "-m", "chorusdb", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], done.stderr


def test_status_command_prints_a_table(node):
    done = subprocess.run([sys.executable, "-m", "chorusdb", "status", "--admin", node.admin],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "standalone" in done.stdout and "n1" in done.stdout


def test_redis_cli_works(node):
    if shutil.which("redis-cli") is None:
        if os.environ.get("CHORUSDB_REQUIRE_REDIS_CLI"):
            pytest.fail("redis-cli is required here but missing: apt-get install redis-tools")
        pytest.skip("redis-cli is not installed (apt-get install redis-tools)")
    def cli(*args: str) -> str:
        return subprocess.run(["redis-cli", "-h", node.host, "-p", str(node.port), *args],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    assert cli("SET", "k", "v") == "OK"
    assert cli("GET", "k") == "v"
    assert cli("RPUSH", "l", "a", "b") == "2"
    assert cli("LRANGE", "l", "0", "-1") == "a\nb"
    assert cli("INCR", "n") == "1"
    assert "redis_version" in cli("INFO", "server")
    assert cli("-3", "PING") == "PONG"
    assert cli("DBSIZE") == "3"


def restore_ctrl_c() -> None:
    """In the child: Ctrl-C as a terminal delivers it. A shell that starts the test run as a
    background job makes every process it starts ignore SIGINT, and Python keeps an ignored
    SIGINT ignored, so ``up`` would never see the Ctrl-C this test sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_up(data_dir, *args: str) -> tuple[subprocess.Popen, dict[str, dict]]:
    """Run ``chorusdb up`` until it has listed its nodes: {node id: {pid, role, port}}."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chorusdb", "up", "--data-dir", str(data_dir), "--base-port", "0",
         *args], stdout=subprocess.PIPE, text=True, preexec_fn=restore_ctrl_c)
    nodes: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line or line.startswith("stop: Ctrl-C"):
            break
        if line.startswith("│ n"):
            node_id, pid, role = (cell.strip() for cell in line.split("│")[1:4])
            nodes[node_id] = {"pid": int(pid), "role": role}
        elif ": redis-cli -h" in line:
            nodes[line.split(":")[0]]["port"] = int(line.split("-p ")[1].split()[0])
    return process, nodes


def assert_all_stopped(nodes: dict[str, dict]) -> None:
    for node in nodes.values():
        with pytest.raises(ProcessLookupError):
            os.kill(node["pid"], 0)


def test_up_starts_three_leader_nodes_and_restarts_them_on_their_data(tmp_path):
    process, nodes = start_up(tmp_path / "up")
    try:
        assert sorted(nodes) == ["n1", "n2", "n3"], nodes
        assert [nodes[n]["role"] for n in ("n1", "n2", "n3")] == ["leader", "follower", "follower"]
        leader, follower = (redis.Redis(port=nodes[n]["port"], socket_timeout=10)
                            for n in ("n1", "n2"))
        assert leader.set("k", "v") is True and follower.set("k2", "v2") is True
        assert leader.get("k2") == b"v2"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    assert_all_stopped(nodes)
    process, nodes = start_up(tmp_path / "up")
    try:
        for node in nodes.values():
            r = redis.Redis(port=node["port"], socket_timeout=10)
            assert (r.get("k"), r.get("k2")) == (b"v", b"v2")
    finally:
        process.terminate()
        assert process.wait(30) == 0
    assert_all_stopped(nodes)


def test_clients_beyond_the_limit_are_refused(node_factory):
    node = node_factory(clients_max=2)
    first, second = client_for(node), client_for(node)
    assert first.ping() and second.ping()
    assert raw_exchange(node, b"").startswith(b"-ERR max number of clients reached")
    first.connection_pool.disconnect()

    def ping() -> bytes:
        try:
            return raw_exchange(node, b"PING\r\n")
        except ConnectionResetError:      # refused, and our PING made the close a reset
            return b"-ERR max number of clients reached (reset)"

    deadline = time.monotonic() + 10      # the server notices the disconnect asynchronously
    answer = ping()
    while answer != b"+PONG\r\n" and time.monotonic() < deadline:
        assert answer.startswith(b"-ERR max number of clients reached"), answer
        time.sleep(0.05)
        answer = ping()
    assert answer == b"+PONG\r\n"


def test_idle_clients_are_disconnected(node_factory):
    node = node_factory(idle_timeout_s=1)
    with socket.create_connection((node.host, node.port), timeout=10) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(100) == b"+PONG\r\n"
        started = time.monotonic()
        assert s.recv(100) == b""          # closed by the server
        assert 0.5 < time.monotonic() - started < 8


def test_a_client_that_does_not_read_its_replies_is_paused_not_buffered(node):
    """More pipelined commands than limits.pending_replies_max, sent by a client that reads
    nothing until it has sent everything: the server pauses it, then answers them all."""
    from chorusdb import limits
    count = limits.pending_replies_max * 2 + 10
    payload = b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n" * count
    with socket.create_connection((node.host, node.port), timeout=60) as s:
        s.sendall(payload)
        expected_tail = b":%d\r\n" % count
        received = bytearray()
        while not received.endswith(expected_tail):
            chunk = s.recv(1 << 20)
            assert chunk, "server closed the connection"
            received += chunk
    assert received.count(b"\r\n") == count
    assert client_for(node).get("n") == str(count).encode()


def test_up_with_one_node_runs_it_standalone_and_stops_it_on_sighup(tmp_path):
    process, nodes = start_up(tmp_path / "up", "--nodes", "1")
    try:
        assert list(nodes) == ["n1"] and nodes["n1"]["role"] == "standalone", nodes
        assert redis.Redis(port=nodes["n1"]["port"], socket_timeout=10).ping()
    finally:
        process.send_signal(signal.SIGHUP)
        assert process.wait(30) == 0
    assert_all_stopped(nodes)
