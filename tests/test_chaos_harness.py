"""The chaos harness on its own: each link-proxy mode against plain sockets, then real
``chorusdb serve`` clusters through the proxies — election, a partition that elects another
leader, kill/start/terminate, pause/resume, clock skew (and its refusal without the flag), the
``--bug`` flag, and a teardown that leaves no process behind however the harness ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chorusdb.chaos.cluster import ChaosCluster
from chorusdb.chaos.proxy import BACKWARD, BOTH, FORWARD, Blackhole, Delay, LinkProxies, Pass, \
    Reset
from chorusdb.server.config import load_config
from cluster_helpers import wait_for as wait_until
from conftest import write_node_config

pytestmark = pytest.mark.process

socket_timeout_s = 5.0          # a plain socket or redis-py request that should succeed
held_s = 0.3                    # how long a held direction is watched for bytes that must not come
failover_timeout_s = 15.0
# The defaults (heartbeat 100 ms, elections after 500..1000 ms): faster timers make a loaded
# 2-core machine elect needlessly, as a leader whose follower answered late steps down.
FAST_ELECTIONS = {"heartbeat_interval_ms": 100, "election_timeout_min_ms": 500,
                  "election_timeout_max_ms": 1000}


# --- the proxies, with plain sockets ------------------------------------------------------------


@pytest.fixture
def proxied():
    """A target listening socket behind the proxy of link ("a", "b"), one connection through
    it: (proxies, dialer's socket, target's accepted socket)."""
    with socket.create_server(("127.0.0.1", 0)) as target, \
            LinkProxies({("a", "b"): target.getsockname()[:2]}) as proxies:
        dialer = socket.create_connection(proxies.address("a", "b"), timeout=socket_timeout_s)
        target.settimeout(socket_timeout_s)
        acceptor, _ = target.accept()
        acceptor.settimeout(socket_timeout_s)
        with dialer, acceptor:
            yield proxies, dialer, acceptor


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def receives_nothing(sock: socket.socket) -> bool:
    sock.settimeout(held_s)
    try:
        return not sock.recv(100)     # b"" would be a close, which a held direction hides too
    except TimeoutError:
        return True
    finally:
        sock.settimeout(socket_timeout_s)


def test_pass_carries_both_directions(proxied):
    proxies, dialer, acceptor = proxied
    assert proxies.mode("a", "b") == Pass()
    dialer.sendall(b"hello")
    assert receive_exactly(acceptor, 5) == b"hello"
    acceptor.sendall(b"world")
    assert receive_exactly(dialer, 5) == b"world"


@pytest.mark.parametrize("direction", [FORWARD, BACKWARD, BOTH])
def test_blackhole_holds_its_direction_and_delivers_in_order_on_heal(proxied, direction):
    proxies, dialer, acceptor = proxied
    proxies.set_mode("a", "b", Blackhole(direction))
    dialer.sendall(b"f1")
    acceptor.sendall(b"b1")
    dialer.sendall(b"f2")
    held = {FORWARD: direction in (FORWARD, BOTH), BACKWARD: direction in (BACKWARD, BOTH)}
    for sock, way in ((acceptor, FORWARD), (dialer, BACKWARD)):
        if held[way]:
            assert receives_nothing(sock), way
        else:
            expected = b"f1f2" if way == FORWARD else b"b1"
            assert receive_exactly(sock, len(expected)) == expected
    proxies.heal()
    if held[FORWARD]:
        assert receive_exactly(acceptor, 4) == b"f1f2"
    if held[BACKWARD]:
        assert receive_exactly(dialer, 2) == b"b1"


def test_a_blackholed_link_still_accepts_and_holds_new_connections(proxied):
    proxies, _, _ = proxied
    proxies.set_mode("a", "b", Blackhole(BOTH))
    with socket.create_connection(proxies.address("a", "b"), timeout=socket_timeout_s) as late:
        late.sendall(b"x")
        assert receives_nothing(late)
        proxies.heal()
        late.sendall(b"y")          # the connection survived the partition


def test_delay_holds_each_chunk_for_its_time_and_keeps_order(proxied):
    proxies, dialer, acceptor = proxied
    proxies.set_mode("a", "b", Delay(150, 50))
    started = time.monotonic()
    for i in range(5):
        dialer.sendall(b"%d" % i)
        time.sleep(0.01)
    assert receive_exactly(acceptor, 1) == b"0"
    assert time.monotonic() - started >= 0.1
    assert receive_exactly(acceptor, 4) == b"1234"
    started = time.monotonic()
    acceptor.sendall(b"back")
    assert receive_exactly(dialer, 4) == b"back"
    assert time.monotonic() - started >= 0.1


def test_reset_sends_rst_to_both_ends_then_passes(proxied):
    proxies, dialer, acceptor = proxied
    proxies.set_mode("a", "b", Reset())
    for sock in (dialer, acceptor):
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
    assert proxies.mode("a", "b") == Pass()
    with socket.create_connection(proxies.address("a", "b"), timeout=socket_timeout_s) as again:
        again.sendall(b"x")         # accepted; the target's listener is the fixture's


def test_a_dead_target_resets_the_dialer():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        address = placeholder.getsockname()[:2]          # closed: nothing listens there now
    with LinkProxies({("a", "b"): address}) as proxies, pytest.raises(ConnectionResetError):
        # The reset may come before connect() has returned: then connect() raises it.
        with socket.create_connection(proxies.address("a", "b"),
                                      timeout=socket_timeout_s) as dialer:
            dialer.recv(100)


def test_stop_closes_the_proxy_ports():
    with socket.create_server(("127.0.0.1", 0)) as target:
        proxies = LinkProxies({("a", "b"): target.getsockname()[:2]})
        proxies.start()
        address = proxies.address("a", "b")
        proxies.stop()
        proxies.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=socket_timeout_s)


# --- a real three-node leader cluster through the proxies ---------------------------------------


def client(address: tuple[str, int]) -> redis.Redis:
    return redis.Redis(host=address[0], port=address[1], socket_timeout=socket_timeout_s,
                       retry=Retry(NoBackoff(), 0), single_connection_client=True)


def wait_for(condition, timeout_s: float, what: str, cluster: ChaosCluster | None = None):
    """``cluster_helpers.wait_for``, describing a failure with every node's status."""
    def statuses() -> str:
        return "" if cluster is None else str({n: cluster.status(n) for n in cluster.node_ids})
    return wait_until(condition, timeout_s, what, statuses)


def leader(cluster: ChaosCluster, among: tuple[str, ...] | None = None,
           above_epoch: int = 0) -> tuple[str, int] | None:
    """The node of ``among`` leading the highest epoch above ``above_epoch`` and having
    committed its first entry there (so it takes writes), with that epoch."""
    found = []
    for node_id in among or cluster.node_ids:
        status = cluster.status(node_id)
        if status and status["role"] == "leader" and status["epoch"] > above_epoch \
                and status["commit_position"]["epoch"] == status["epoch"]:
            found.append((status["epoch"], node_id))
    return (max(found)[1], max(found)[0]) if found else None


def all_follow(cluster: ChaosCluster, leader_id: str) -> bool:
    statuses = [cluster.status(n) for n in cluster.node_ids]
    return all(s is not None and s["leader_id"] == leader_id for s in statuses) and \
        [s["role"] for s in statuses].count("leader") == 1


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def process_state(pid: int) -> str:
    """The state letter of ``/proc/PID/stat`` (``T``: stopped by a signal)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with ChaosCluster(tmp_path_factory.mktemp("chaos") / "cluster", "leader", 3,
                      write_quorum=2, leader_settings=FAST_ELECTIONS) as running:
        running.start_all()
        yield running


@pytest.fixture
def settled(cluster) -> tuple[str, list[str]]:
    """The cluster with every node running and following one leader: (leader, followers)."""
    for node_id in cluster.node_ids:
        if not cluster.is_running(node_id):
            cluster.start(node_id)
    cluster.heal()
    leader_id, _ = wait_for(lambda: leader(cluster), failover_timeout_s, "a leader", cluster)
    wait_for(lambda: all_follow(cluster, leader_id), failover_timeout_s,
             f"every node follows {leader_id}", cluster)
    return leader_id, [n for n in cluster.node_ids if n != leader_id]


def test_nodes_dial_their_peers_through_the_proxies_and_elect_a_leader(cluster, settled):
    leader_id, _ = settled
    for node_id in cluster.node_ids:
        config = load_config(cluster.config_path(node_id))
        assert config.debug_commands is False          # the flag comes from the command line
        for member in config.members:
            expected = (config.peer.host, config.peer.port) if member.id == node_id \
                else cluster.proxies.address(node_id, member.id)
            assert (member.peer.host, member.peer.port) == expected
            assert (member.client.host, member.client.port) == cluster.client_address(member.id)
    with client(cluster.client_address(leader_id)) as r:
        assert r.set("elected", "yes") is True
        assert r.get("elected") == b"yes"
    assert set(cluster.pids()) == set(cluster.node_ids)
    assert cluster.log_path(leader_id).exists() and cluster.data_dir(leader_id).is_dir()


def test_isolating_the_leader_elects_another_which_takes_writes(cluster, settled):
    old_leader, others = settled
    epoch = cluster.status(old_leader)["epoch"]
    cluster.block({(old_leader, o) for o in others} | {(o, old_leader) for o in others})
    try:
        new_leader, new_epoch = wait_for(
            lambda: leader(cluster, tuple(others), above_epoch=epoch), failover_timeout_s,
            f"a leader among {others} above epoch {epoch}", cluster)
        with client(cluster.client_address(new_leader)) as r:
            assert r.set("after-partition", "1") is True
    finally:
        cluster.heal()
    wait_for(lambda: all_follow(cluster, new_leader), failover_timeout_s,
             f"{old_leader} follows {new_leader} after heal", cluster)
    assert cluster.status(old_leader)["epoch"] >= new_epoch


def test_kill_terminate_and_start(cluster, settled):
    _, (first, second) = settled
    pid = cluster.pids()[first]
    cluster.kill(first)
    assert not cluster.is_running(first) and not pid_alive(pid)
    assert cluster.status(first) is None and first not in cluster.pids()
    assert cluster.terminate(second) == 0              # SIGTERM: a clean exit
    assert not cluster.is_running(second)
    cluster.start(first)
    cluster.restart_gracefully(first)
    cluster.start(second)
    assert cluster.pids()[first] != pid
    # With both followers down the leader lost its quorum and may have stepped down.
    leader_id, _ = wait_for(lambda: leader(cluster), failover_timeout_s, "a leader", cluster)
    wait_for(lambda: all_follow(cluster, leader_id), failover_timeout_s,
             f"every node follows {leader_id}", cluster)
    with client(cluster.client_address(leader_id)) as r:
        assert r.set("after-restarts", "1") is True


def test_pause_and_resume(cluster, settled):
    leader_id, (follower, _) = settled
    pid = cluster.pids()[follower]
    cluster.pause(follower)
    try:
        assert cluster.is_running(follower) and cluster.is_paused(follower)
        wait_for(lambda: process_state(pid) == "T", socket_timeout_s, f"{follower} stopped")
        assert cluster.status(follower) is None
        # W = 2 of the other two. On a loaded machine leadership may still move between them:
        # a refusal or an in-doubt answer is asked again (SET of one value is idempotent).
        def written() -> bool:
            found = leader(cluster, among=tuple(n for n in cluster.node_ids if n != follower))
            if found is None:
                return False
            with client(cluster.client_address(found[0])) as r:
                try:
                    return r.set("while-paused", "1") is True
                except redis.ResponseError as e:
                    if str(e).split(" ", 1)[0] in ("INDOUBT", "TRYAGAIN", "NOTLEADER",
                                                   "NOQUORUM"):
                        return False
                    raise
        wait_for(written, failover_timeout_s, "a write acknowledged while a follower is paused")
    finally:
        cluster.resume(follower)
    assert not cluster.is_paused(follower)
    wait_for(lambda: cluster.status(follower), failover_timeout_s, f"{follower} answers again")


# --- clock skew, the --bug flag and teardown on small clusters ---------------------------------


def test_skew_moves_the_clock_forward_and_stalls_it_backward(tmp_path):
    with ChaosCluster(tmp_path / "skew", "standalone", 1) as single:
        single.start_all()
        with client(single.client_address("n1")) as r:
            assert r.set("k", "v", px=60_000) is True
            assert single.skew("n1", 5000) == 5000
            assert 50_000 < r.pttl("k") <= 55_000
            assert single.skew("n1", -5000) == 0       # back to the wall clock: it stalls
            stalled = r.pttl("k")
            time.sleep(0.3)
            assert r.pttl("k") == stalled
            with pytest.raises(redis.ResponseError, match="usage: CHORUS.DEBUG CLOCKSKEW"):
                r.execute_command("CHORUS.DEBUG", "CLOCKSKEW")
            with pytest.raises(redis.ResponseError, match="not an integer"):
                r.execute_command("CHORUS.DEBUG", "CLOCKSKEW", "soon")


def test_skew_is_refused_without_the_flag_and_changes_nothing(node):
    with client((node.host, node.port)) as r:
        assert r.set("k", "v", px=60_000) is True
        with pytest.raises(redis.ResponseError) as refused:
            r.execute_command("CHORUS.DEBUG", "CLOCKSKEW", 100_000)
        assert str(refused.value) == ("debug commands are disabled; start the node with "
                                      "--enable-debug-commands")
        assert r.get("k") == b"v"                      # 100 s later it would have expired
        assert "chorus.debug" not in [name.lower() for name in r.command_list()]


@pytest.mark.parametrize("flags, complaint", [
    (["--bug", "ack_before_persist"], "--bug needs --enable-debug-commands"),
    (["--enable-debug-commands", "--bug", "no_such_bug"], "unknown bug 'no_such_bug'"),
    (["--enable-debug-commands", "--bug", "ack_before_durable"],   # a leader-mode bug
     "unknown bug 'ack_before_durable' for mode standalone"),
])
def test_a_bad_bug_flag_exits_2_with_one_line(tmp_path, flags, complaint):
    config = write_node_config(tmp_path / "node")
    done = subprocess.run([sys.executable, "-m", "chorusdb", "serve", "--config", str(config),
                           *flags], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert complaint in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_close_stops_every_process_it_started_paused_ones_too(tmp_path):
    nodes = ChaosCluster(tmp_path / "close", "leader", 2, leader_settings=FAST_ELECTIONS)
    nodes.start_all()
    first_pids = nodes.pids()
    nodes.kill("n2")
    nodes.start("n2")
    nodes.pause("n1")
    pids = set(first_pids.values()) | set(nodes.pids().values())
    assert len(pids) == 3
    nodes.close()
    nodes.close()
    assert not any(map(pid_alive, pids))
    assert nodes.pids() == {}
    for address in (nodes.client_address("n1"), nodes.proxies.address("n1", "n2")):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=socket_timeout_s)


def test_an_exception_inside_with_stops_every_process_and_the_bug_is_on(tmp_path):
    with pytest.raises(RuntimeError, match="the run failed"):
        with ChaosCluster(tmp_path / "bug", "standalone", 1, bug="ack_before_persist") as single:
            single.start_all()
            pids = list(single.pids().values())
            assert "KNOWN BUG switched on: ack_before_persist" in \
                single.log_path("n1").read_text()
            raise RuntimeError("the run failed")
    assert pids and not any(map(pid_alive, pids))


HARNESS_SCRIPT = """
import json, sys, time
from pathlib import Path
from chorusdb.chaos.cluster import ChaosCluster
cluster = ChaosCluster(Path(sys.argv[1]), "standalone", 1)
cluster.start_all()
print(json.dumps(list(cluster.pids().values())), flush=True)
time.sleep(60)
"""


def test_sigterm_to_the_harness_stops_its_nodes(tmp_path):
    harness = subprocess.Popen([sys.executable, "-c", HARNESS_SCRIPT, str(tmp_path / "sig")],
                               stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(harness.stdout.readline())
        assert pids and all(map(pid_alive, pids))
        harness.send_signal(signal.SIGTERM)
        assert harness.wait(30) == 128 + signal.SIGTERM
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
        harness.stdout.close()
    assert not any(map(pid_alive, pids))
