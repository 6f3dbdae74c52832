"""Real leader-mode clusters on loopback for the process tests: ``chorusdb serve`` nodes started
from generated TOML files, stopped by their own PID, and watched through redis-py and ``/status``.

Every member must know every other member's client and peer address before any of them starts,
so those ports are chosen up front: the harness binds port 0 on the node's own loopback address,
reads the ports the kernel gave and releases them (the node binds it again with SO_REUSEADDR). Each
cluster gets its own ``127.a.b.0/24`` (``a`` from the test process, ``b`` counting clusters), so
clusters of parallel test workers never compete for one address. The admin port is 0 and is read
from the ready line, so a node restarted on the same configuration gets a fresh one.

Each node's log (INFO level) goes to ``node.log`` in its directory; ``LeaderCluster.describe``
puts every node's ``/status`` and the end of its log in the message of a failed wait.

``Writer`` is the load of the crash and re-seed tests: one thread that alternates SETs of unique
values and RPUSHes of unique items on one connection and keeps what was acknowledged, so a test
can check that every acknowledged write reached a node (``bench.failover.missing_writes``).

For failover tests the leader moves: ``current_leader`` and ``wait_leader`` find it through every
running node's ``/status`` (the highest epoch whose leader reports itself so), and
``wait_rejoined`` waits until a restarted or resumed node follows that leader at its epoch,
position and commit position. Clients never retry a command on their own (redis-py does by
default after a time-out or a lost connection, which would send a write twice).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chorusdb.bench.failover import missing_writes
from chorusdb.server.process import free_ports, stop_process, wait_until_ready

node_ready_timeout_s = 30.0       # from exec to the ready line, on a loaded machine
node_stop_timeout_s = 15.0        # SIGTERM to exit before SIGKILL
socket_timeout_s = 10.0           # one redis-py or /status request
poll_interval_s = 0.05            # between two looks at a condition that is not true yet
log_tail_bytes = 3000             # of each node's log in a failure message
CLUSTER_ID = "process-test"
CLUSTER_SIZE = 3
LIST_KEY = "events"

_clusters = itertools.count()


def cluster_subnet() -> str:
    """``127.a.b``: ``a`` from this process, ``b`` a new number for each cluster."""
    return f"127.{os.getpid() % 250 + 1}.{next(_clusters) % 256}"


def wait_for(condition: Callable[[], object], timeout_s: float, what: str,
             describe: Callable[[], str] = lambda: "") -> object:
    """Poll ``condition`` until it returns something true (returned) or ``timeout_s`` passes
    (AssertionError naming ``what``, with ``describe()``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}\n{describe()}")
        time.sleep(poll_interval_s)


def position_of(text: bytes) -> tuple[int, int]:
    """``b"epoch:index"`` (``CHORUS.POSITION``) as numbers."""
    epoch, index = text.split(b":")
    return int(epoch), int(index)


def toml_value(value: object) -> str:
    """An int or a plain string in TOML (a JSON string is a TOML basic string)."""
    assert isinstance(value, (int, str)) and not isinstance(value, bool), value
    return json.dumps(value)


@dataclass
class ClusterNode:
    """One member: its fixed addresses and directory, and the process running it (if any)."""

    node_id: str
    host: str
    client_port: int
    peer_port: int
    directory: Path
    process: subprocess.Popen | None = None
    admin: str = ""

    @property
    def config_path(self) -> Path:
        return self.directory / "node.toml"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "node.log"

    @property
    def client_address(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, timeout_s: float = socket_timeout_s) -> redis.Redis:
        """A redis-py client on one connection, so per-connection state (the position of the
        last write, for WAIT and CHORUS.POSITION) is the state of this client; it sends each
        command once."""
        return redis.Redis(host=self.host, port=self.client_port, socket_timeout=timeout_s,
                           retry=Retry(NoBackoff(), 0), single_connection_client=True)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://{self.admin}/status",
                                    timeout=socket_timeout_s) as answer:
            return json.load(answer)

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(max(0, self.log_path.stat().st_size - log_tail_bytes))
            return f.read().decode("utf-8", "replace")


class LeaderCluster:
    """``CLUSTER_SIZE`` leader-mode members ``n1``, ``n2``, ..., ``n1`` the leader. ``leader`` is
    the ``[leader]`` table of every node, ``per_node`` adds keys to one node's table
    (``follower_writes`` is each follower's own choice). Nothing runs until ``start``."""

    def __init__(self, directory: Path, leader: dict[str, object],
                 per_node: dict[str, dict[str, object]] | None = None) -> None:
        subnet = cluster_subnet()
        self.nodes: dict[str, ClusterNode] = {}
        for i in range(1, CLUSTER_SIZE + 1):
            host = f"{subnet}.{i}"
            client_port, peer_port = free_ports(2, host)
            self.nodes[f"n{i}"] = ClusterNode(f"n{i}", host, client_port, peer_port,
                                              directory / f"n{i}")
        directory.mkdir(parents=True)
        secret = directory / "cluster.secret"
        secret.write_bytes(os.urandom(24).hex().encode())
        for node in self.nodes.values():
            node.directory.mkdir(parents=True)
            settings = {**leader, **(per_node or {}).get(node.node_id, {})}
            node.config_path.write_text(self._config(node, secret, settings))
        self._started: list[subprocess.Popen] = []

    def _config(self, node: ClusterNode, secret: Path, settings: dict[str, object]) -> str:
        members = "".join(f'[[cluster.members]]\nid = "{m.node_id}"\n'
                          f'peer = "{m.host}:{m.peer_port}"\nclient = "{m.client_address}"\n\n'
                          for m in self.nodes.values())
        leader = "".join(f"{key} = {toml_value(value)}\n" for key, value in settings.items())
        return (f'[node]\nid = "{node.node_id}"\ndata_dir = "data"\n\n'
                f'[listen]\nclient = "{node.client_address}"\n'
                f'peer = "{node.host}:{node.peer_port}"\nadmin = "{node.host}:0"\n\n'
                f'[cluster]\nid = "{CLUSTER_ID}"\nmode = "leader"\n'
                f'secret_file = {toml_value(str(secret))}\n\n{members}[leader]\n{leader}')

    @property
    def leader(self) -> ClusterNode:
        return self.nodes["n1"]

    # --- processes ------------------------------------------------------------------------

    def start(self, *node_ids: str) -> None:
        """Start the given members (all when none is named) at once and wait for their ready
        lines."""
        nodes = [self.nodes[n] for n in node_ids] if node_ids else list(self.nodes.values())
        for node in nodes:
            assert not node.running, node.node_id
            with open(node.log_path, "ab") as log:
                node.process = subprocess.Popen(
                    [sys.executable, "-m", "chorusdb", "serve", "--config", str(node.config_path),
                     "--log-level", "INFO"], stdout=subprocess.PIPE, stderr=log, text=True)
            self._started.append(node.process)
        for node in nodes:
            fields = wait_until_ready(node.process, node_ready_timeout_s)
            assert fields is not None, f"{node.node_id} did not start:\n{node.log_tail()}"
            assert fields["client"] == node.client_address, fields
            node.admin = fields["admin"]

    def kill(self, node_id: str) -> float:
        """SIGKILL: the node gets no chance to flush or say goodbye. Returns the
        ``time.monotonic()`` just before the signal left."""
        node = self.nodes[node_id]
        killed_s = time.monotonic()
        node.process.kill()
        node.process.wait(node_stop_timeout_s)
        return killed_s

    @contextmanager
    def paused(self, node_id: str) -> Iterator[None]:
        """SIGSTOP the node for the ``with`` block; SIGCONT however the block ends."""
        pid = self.nodes[node_id].process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def stop_all(self) -> None:
        """Stop every process this cluster started, by its PID (SIGTERM, then SIGKILL)."""
        for process in self._started:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)     # a paused node cannot handle SIGTERM
                stop_process(process, node_stop_timeout_s)

    # --- observing ------------------------------------------------------------------------

    def describe(self) -> str:
        """Every node's /status (or why there is none) and the end of its log."""
        parts = []
        for node in self.nodes.values():
            try:
                status = json.dumps(node.status(), sort_keys=True) if node.running else "down"
            except OSError as e:
                status = f"/status failed: {e}"
            parts.append(f"--- {node.node_id} ({node.client_address}): {status}\n"
                         f"{node.log_tail()}")
        return "\n".join(parts)

    def wait_for(self, condition: Callable[[], object], timeout_s: float, what: str) -> object:
        return wait_for(condition, timeout_s, what, self.describe)

    def client_addresses(self) -> list[tuple[str, int]]:
        return [(node.host, node.client_port) for node in self.nodes.values()]

    def current_leader(self, exclude: tuple[str, ...] = ()) -> tuple[ClusterNode, dict] | None:
        """The running node (none of ``exclude``: a paused one would not answer) that reports
        itself leader at the highest epoch, with its status; None while there is none."""
        leaders = []
        for node in self.nodes.values():
            if node.running and node.node_id not in exclude:
                try:
                    status = node.status()
                except OSError:         # restarting: its admin port is not open yet
                    continue
                if status["role"] == "leader":
                    leaders.append((status["epoch"], node.node_id, status))
        if not leaders:
            return None
        _, node_id, status = max(leaders)
        return self.nodes[node_id], status

    def wait_leader(self, above_epoch: int, timeout_s: float,
                    exclude: tuple[str, ...] = ()) -> tuple[ClusterNode, dict]:
        """Until a node leads an epoch above ``above_epoch`` and has committed its first entry
        (so it can acknowledge writes); that node and its status."""
        def elected() -> tuple[ClusterNode, dict] | None:
            found = self.current_leader(exclude)
            if found is None:
                return None
            epoch = found[1]["epoch"]
            return found if epoch > above_epoch and \
                found[1]["commit_position"]["epoch"] == epoch else None
        return self.wait_for(elected, timeout_s, f"a leader of an epoch above {above_epoch}")

    def wait_rejoined(self, node_id: str, leader: ClusterNode, timeout_s: float) -> dict:
        """Until ``node_id`` follows ``leader`` at its epoch, position and commit position (the
        writes have stopped) and the leader sees it streaming; its status."""
        node = self.nodes[node_id]

        def rejoined() -> dict | None:
            led, status = leader.status(), node.status()
            member = next((m for m in led["members"] if m["id"] == node_id), None)
            caught_up = (status["role"], status["leader_id"], status["epoch"],
                         status["position"], status["commit_position"]) == \
                ("follower", leader.node_id, led["epoch"], led["position"],
                 led["commit_position"])
            return status if caught_up and member and member["state"] == "streaming" else None
        return self.wait_for(rejoined, timeout_s,
                             f"{node_id} follows {leader.node_id} and has caught up")

    def member_status(self, node_id: str) -> dict:
        """What the leader's /status says of follower ``node_id``."""
        return next(m for m in self.leader.status()["members"] if m["id"] == node_id)

    def wait_streaming(self, timeout_s: float = 20.0) -> None:
        """Until ``leader`` leads and sees every follower streaming (so W = 2 writes have a
        quorum). Until it is elected it reports no members at all, which is not "all
        streaming"."""
        def streaming() -> bool:
            status = self.leader.status()
            members = status["members"]
            return status["role"] == "leader" and len(members) == len(self.nodes) - 1 and \
                all(m["state"] == "streaming" for m in members)
        self.wait_for(streaming, timeout_s, f"{self.leader.node_id} leads, every follower "
                                            f"streaming")

    def digests(self) -> dict[str, bytes]:
        digests = {}
        for node in self.nodes.values():
            with node.client() as client:
                digests[node.node_id] = client.execute_command("CHORUS.DIGEST")
        return digests

    def wait_converged(self, timeout_s: float = 20.0) -> bytes:
        """Until every node is running and CHORUS.DIGEST is the same on all; the digest."""
        def converged() -> bytes | None:
            assert all(node.running for node in self.nodes.values()), self.describe()
            digests = set(self.digests().values())
            return digests.pop() if len(digests) == 1 else None
        return self.wait_for(converged, timeout_s, "the same CHORUS.DIGEST on every node")


@contextmanager
def streaming_cluster(directory: Path, leader: dict[str, object]) -> Iterator[LeaderCluster]:
    """A three-node cluster whose initial leader streams to both followers; every process it
    started is stopped on the way out."""
    cluster = LeaderCluster(directory, leader)
    try:
        cluster.start()
        cluster.wait_streaming()
        yield cluster
    finally:
        cluster.stop_all()


@dataclass
class Writer:
    """A thread of unpipelined writes to one node until ``stop``: SETs of ``tag:i`` to a unique
    value and RPUSHes of unique items, alternately. Acknowledged ones are kept in order; any
    error reply or connection error is kept in ``failures`` (such a write may or may not have
    been applied)."""

    node: ClusterNode
    tag: str
    sets: list[tuple[bytes, bytes]] = field(default_factory=list)
    pushes: list[bytes] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def acknowledged(self) -> int:
        return len(self.sets) + len(self.pushes)

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, name=f"writer-{self.tag}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with self.node.client() as client:
            for i in itertools.count():
                if self._stop.is_set():
                    break
                try:
                    if i % 2 == 0:
                        key, value = f"{self.tag}:{i}".encode(), f"value-{self.tag}-{i}".encode()
                        if client.set(key, value) is True:
                            self.sets.append((key, value))
                        else:
                            self.failures.append(f"write {i}: SET did not answer OK")
                    else:
                        item = f"item-{self.tag}-{i}".encode()
                        client.rpush(LIST_KEY, item)
                        self.pushes.append(item)
                except redis.RedisError as e:
                    self.failures.append(f"write {i}: {e!r}")

    def wait_acknowledged(self, count: int, timeout_s: float, cluster: LeaderCluster) -> None:
        """Until ``count`` writes in all were acknowledged."""
        wait_for(lambda: self.acknowledged >= count, timeout_s,
                 f"{count} writes acknowledged by {self.node.node_id}",
                 lambda: f"last failures: {self.failures[-3:]}\n{cluster.describe()}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(socket_timeout_s * 2)
        assert not self._thread.is_alive(), "the writer did not stop"

    def missing_on(self, node: ClusterNode) -> list[str]:
        """Acknowledged writes ``node`` does not show: SETs whose key holds another value, and
        pushed items absent from the list or out of their order."""
        with node.client() as client:
            return missing_writes(client, self.sets, {LIST_KEY.encode(): self.pushes})
