"""``chorusdb bench failover``: how long a leader-mode cluster takes to accept writes again after
its leader dies, and whether any acknowledged write is lost on the way.

One cluster serves every trial: ``--nodes`` ``chorusdb serve`` processes on 127.0.0.1 in leader
mode with the defaults of ``chorusdb up`` (``write_quorum`` a majority, durability ``fsync``),
started from ``servers.write_cluster_configs`` in a temporary directory. A trial:

1. Waits until the cluster is settled: a leader whose every follower streams, and every
   follower at the leader's epoch, position and commit position (``/status`` of each node).
2. Starts the write load (``WriteLoad``): ``--clients`` threads, each on its own redis-py
   connection, spread over the nodes (a follower forwards a write to the leader). Each sends
   one write at a time, alternately a SET of a unique key and an RPUSH of a unique item to
   its own list, and keeps what was acknowledged and when. A write answered with an error, or
   not answered within ``request_timeout_ms``, makes the client move on to the next node
   (or to the one a ``-NOTLEADER`` names) after a random pause of up to
   ``retry_backoff_ms_max`` (each client its own seeded ``random.Random``), so the clients'
   retries spread out instead of moving in step; redis-py's own retries are off, so no write
   is ever sent twice. ``-INDOUBT``, a time-out or a lost connection leave the write in doubt
   (it may or may not be applied); any other error is a definite refusal.
3. Once ``warmup_writes`` are acknowledged, SIGKILLs the leader and takes the time.
4. The failover time is from the kill to the first acknowledgement of a write *sent* after
   the kill (such a write can only be committed by a new leader; a reply that was merely late
   does not count). Meanwhile the survivors' ``/status`` is polled every ``poll_interval_ms``:
   the election time is from the kill to the end of the first poll that finds a new leader
   with its epoch's first entry committed (so it can acknowledge writes): late by up to one
   poll, so it can exceed the failover time by a few milliseconds. The load goes on for
   ``after_failover_writes`` more acknowledgements, then stops. No acknowledgement within
   ``failover_timeout_ms`` is recorded as no failover.
5. Reads every acknowledged write back from the new leader (``missing_writes``: a SET key
   must hold its value, a list must hold every acknowledged item in acknowledgement order):
   every one missing is an acknowledged write lost.
6. Restarts the killed node on its data directory and waits until the cluster is settled
   again (the rejoin time); entries it held that the new leader's log replaced are
   quarantined as divergent (counted, never acknowledged writes if nothing is lost).

The election time is the cluster's; the failover time is what its clients see, which adds
the time until a client sends a write that can succeed. A client whose write is stuck on its
way to the dead leader (a follower forwards it there until the follower's own election timer
fires, and answers it only after the forward times out) waits for ``request_timeout_ms``
before it tries elsewhere, so that time-out is kept short.

Output: one rich table row per trial, a summary with p50, p99 and max (nearest rank:
with 20 trials the p99 is the maximum) against the goals (p50 <= 1 s, p99 <= 2 s) and the
acknowledged writes lost (goal 0), a text histogram of the failover times, and every figure in
a JSON file under ``--output`` (``failover-DATE.json``, the header of ``bench.session``). No
Redis here, so neither ``redis-server`` nor ``redis-benchmark`` is needed. Exit code 0 whatever
the figures are; 1 when a node did not start or the cluster did not settle; 2 for bad usage;
130 when interrupted (every node this benchmark started is stopped, by PID).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich import box
from rich.console import Console
from rich.table import Table

from chorusdb import __version__
from chorusdb.bench import results, servers, session
from chorusdb.bench.servers import ServerProcess, ServerStartError
from chorusdb.bench.session import UsageError
from chorusdb.server.config import load_config
from chorusdb.server.process import stop_process

trials_default = 20
trials_max = 1000
nodes_default = 3
nodes_min = 3                   # one node is killed: the rest must still make a majority
nodes_max = 7                   # every node is a Python process on this machine
clients_default = 4
clients_max = 64
DURABILITY = "fsync"            # chorusdb up's default
warmup_writes = 200             # acknowledged before the leader is killed
after_failover_writes = 100     # acknowledged after the failover before the load stops
load_timeout_ms = 30_000        # for either batch of acknowledgements
failover_timeout_ms = 10_000    # kill -> first acknowledged write; beyond: no failover
settle_timeout_ms = 60_000      # for a leader, every follower streaming and caught up
request_timeout_ms = 250        # a write not answered by then is in doubt; the client moves on
connect_timeout_ms = 250
retry_backoff_ms_max = 50       # a random pause up to this after an error, before a retry
status_timeout_ms = 2000        # one GET /status
poll_interval_ms = 10           # between two looks at a condition that is not true yet
load_stop_timeout_ms = 5000     # for the client threads to finish their last write
check_batch_keys = 500          # keys per MGET when reading acknowledged SETs back
lost_examples_max = 5           # lost writes named in a trial's record
histogram_bin_ms = 100
histogram_bar_chars_max = 40
GOALS = (("p50", 0.50, 1000.0), ("p99", 0.99, 2000.0))   # label, fraction, bound in ms
LOST_GOAL = 0
IN_DOUBT_CODES = ("INDOUBT",)
SUMMARY = "SIGKILL the leader of a local leader cluster: time to the first acknowledged write"


class FailoverError(RuntimeError):
    """The cluster did not reach the state a trial needs in time; the message says which."""


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    trials: int
    nodes: int
    clients: int
    output_dir: Path
    json_path: Path | None              # None: under output_dir, named after the start time

    @property
    def write_quorum(self) -> int:
        return self.nodes // 2 + 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=trials_default, metavar="N",
                        help=f"leaders killed, one per trial (default {trials_default})")
    parser.add_argument("--nodes", type=int, default=nodes_default, metavar="N",
                        help=f"cluster size, {nodes_min}..{nodes_max} (default {nodes_default})")
    parser.add_argument("--clients", type=int, default=clients_default, metavar="N",
                        help=f"client threads writing, spread over the nodes (default "
                             f"{clients_default})")
    parser.add_argument("--output", type=Path, default=Path("bench-results"),
                        help="directory for the JSON file (default ./bench-results)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="where the figures go (default OUTPUT/failover-DATE.json)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The arguments checked; ``UsageError`` names the flag that is wrong."""
    for flag, value, low, high in (("--trials", args.trials, 1, trials_max),
                                   ("--nodes", args.nodes, nodes_min, nodes_max),
                                   ("--clients", args.clients, 1, clients_max)):
        if not low <= value <= high:
            raise UsageError(f"{flag}: expected {low}..{high}, got {value}")
    return Settings(trials=args.trials, nodes=args.nodes, clients=args.clients,
                    output_dir=args.output, json_path=args.json)


# --- the write load ---------------------------------------------------------------------------


def error_code(error: redis.ResponseError) -> str:
    """The first word of an error reply (redis-py strips the codes it knows, such as TRYAGAIN,
    from the message and keeps them in ``status_code``)."""
    return getattr(error, "status_code", None) or str(error).split(" ", 1)[0]


def client_for(host: str, port: int, timeout_ms: int) -> redis.Redis:
    """A redis-py client that connects on its first command (a node that is down is then an
    error of that command) and never sends a command twice (redis-py retries on a time-out or
    a lost connection by default, which would apply a write twice)."""
    return redis.Redis(host=host, port=port, socket_timeout=timeout_ms / 1000,
                       socket_connect_timeout=connect_timeout_ms / 1000,
                       retry=Retry(NoBackoff(), 0))


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged write: when it was sent and answered (``time.monotonic()``), and the
    index of the node whose client got the answer."""

    sent_s: float
    acked_s: float
    node: int


@dataclass
class WriteLoad:
    """``clients`` threads writing to the nodes at ``addresses`` until ``stop`` (module
    docstring, step 2). ``tag`` makes the keys and lists unique to this load."""

    addresses: Sequence[tuple[str, int]]
    tag: str
    clients: int = clients_default
    request_timeout_ms: int = request_timeout_ms
    acks: list[Ack] = field(default_factory=list, init=False)
    sets: list[tuple[bytes, bytes]] = field(default_factory=list, init=False)
    pushes: dict[bytes, list[bytes]] = field(default_factory=dict, init=False)   # per list
    in_doubt: int = field(default=0, init=False)
    refused: int = field(default=0, init=False)
    errors: dict[str, int] = field(default_factory=dict, init=False)   # by first word
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False, repr=False)

    @property
    def acknowledged(self) -> int:
        return len(self.acks)

    def start(self) -> WriteLoad:
        assert not self._threads, "started twice"
        for number in range(self.clients):
            list_key = f"{self.tag}:list:{number}".encode()
            self.pushes[list_key] = []
            thread = threading.Thread(target=self._client, args=(number, list_key),
                                      name=f"load-{self.tag}-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + load_stop_timeout_ms / 1000
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "a client thread did not stop"

    def _client(self, number: int, list_key: bytes) -> None:
        rng = random.Random(f"{self.tag}/{number}")
        node = number % len(self.addresses)
        client = client_for(*self.addresses[node], self.request_timeout_ms)
        try:
            for sequence in itertools.count():
                if self._stop.is_set():
                    return
                moved_to = self._write(client, node, number, sequence, list_key)
                if moved_to is not None:
                    client.close()
                    time.sleep(rng.uniform(0, retry_backoff_ms_max) / 1000)
                    node = moved_to
                    client = client_for(*self.addresses[node], self.request_timeout_ms)
        finally:
            client.close()

    def _write(self, client: redis.Redis, node: int, number: int, sequence: int,
               list_key: bytes) -> int | None:
        """One write; None when it was acknowledged, else the node to try next."""
        unique = f"{self.tag}:{number}:{sequence}".encode()
        sent_s = time.monotonic()
        try:
            if sequence % 2 == 0:
                assert client.set(unique, b"v-" + unique) is True
            else:
                client.rpush(list_key, b"i-" + unique)
        except redis.ResponseError as e:
            code = error_code(e)
            self._count_error(code, in_doubt=code in IN_DOUBT_CODES)
            return self._next_node(node, code, str(e))
        except redis.RedisError as e:           # a time-out or a lost connection
            self._count_error(type(e).__name__, in_doubt=True)
            return (node + 1) % len(self.addresses)
        with self._lock:
            self.acks.append(Ack(sent_s, time.monotonic(), node))
            if sequence % 2 == 0:
                self.sets.append((unique, b"v-" + unique))
            else:
                self.pushes[list_key].append(b"i-" + unique)
        return None

    def _count_error(self, code: str, in_doubt: bool) -> None:
        with self._lock:
            self.errors[code] = self.errors.get(code, 0) + 1
            if in_doubt:
                self.in_doubt += 1
            else:
                self.refused += 1

    def _next_node(self, node: int, code: str, message: str) -> int:
        """The node a ``-NOTLEADER <id> <host:port>`` names, if it is one of ours; else the
        next one."""
        words = message.split()
        if code == "NOTLEADER" and len(words) == 3:
            host, _, port = words[2].rpartition(":")
            if port.isdigit() and (host, int(port)) in self.addresses:
                return list(self.addresses).index((host, int(port)))
        return (node + 1) % len(self.addresses)

    def wait_acknowledged(self, count: int, timeout_ms: int) -> None:
        """Until ``count`` writes in all were acknowledged; ``FailoverError`` after
        ``timeout_ms``."""
        if wait_until(lambda: self.acknowledged >= count, timeout_ms) is None:
            raise FailoverError(f"only {self.acknowledged} of {count} writes acknowledged "
                                f"within {timeout_ms} ms; errors: {self.errors}")

    def first_acknowledged_after(self, since_s: float) -> Ack | None:
        """The first acknowledgement of a write sent at or after ``since_s`` (acknowledgements
        are kept in the order they arrived)."""
        with self._lock:
            acks = list(self.acks)
        return next((ack for ack in acks if ack.sent_s >= since_s), None)

    def missing_on(self, client: redis.Redis) -> list[str]:
        with self._lock:
            sets = list(self.sets)
            pushes = {key: list(items) for key, items in self.pushes.items()}
        return missing_writes(client, sets, pushes)


def missing_writes(client: redis.Redis, sets: Sequence[tuple[bytes, bytes]],
                   pushes: Mapping[bytes, Sequence[bytes]]) -> list[str]:
    """The acknowledged writes the node behind ``client`` does not show, one line each: SETs
    whose key holds another value, pushed items absent from their list or found before an
    item acknowledged earlier. Unacknowledged (in-doubt) items may sit anywhere in between."""
    missing = []
    for start in range(0, len(sets), check_batch_keys):
        batch = sets[start:start + check_batch_keys]
        values = client.mget([key for key, _ in batch])
        missing += [f"SET {key!r}={value!r}, found {found!r}"
                    for (key, value), found in zip(batch, values) if found != value]
    for list_key, items in pushes.items():
        at = {item: i for i, item in enumerate(client.lrange(list_key, 0, -1))}
        last = -1
        for item in items:
            where = at.get(item)
            if where is None:
                missing.append(f"RPUSH {list_key!r} {item!r}: absent")
            elif where < last:
                missing.append(f"RPUSH {list_key!r} {item!r}: before an item acknowledged "
                               f"earlier")
            else:
                last = where
    return missing


def wait_until(condition: Callable[[], object], timeout_ms: int) -> object:
    """Poll ``condition`` until it returns something true (returned) or ``timeout_ms`` passes
    (None)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(poll_interval_ms / 1000)


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class BenchNode:
    """One member: its config, admin address, and the process running it (if any)."""

    node_id: str
    config_path: Path
    admin: str
    server: ServerProcess | None = None
    incarnation: int = 1

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.process.poll() is None

    def status(self) -> dict | None:
        """``/status``, or None when the node does not answer."""
        if not self.running:
            return None
        try:
            with urllib.request.urlopen(f"http://{self.admin}/status",
                                        timeout=status_timeout_ms / 1000) as answer:
                return json.load(answer)
        except (OSError, ValueError):
            return None


class LocalCluster:
    """The benchmark's cluster (module docstring): started, killed and restarted node by node,
    every process stopped by its PID in ``stop``."""

    def __init__(self, directory: Path, members: int, write_quorum: int) -> None:
        configs = servers.write_cluster_configs(directory, members, write_quorum, DURABILITY)
        self.nodes = [BenchNode(path.parent.name, path, str(load_config(path).admin))
                      for path in configs]

    def start(self) -> None:
        """Launch every node, then wait for each one's ready line."""
        launched = []
        try:
            for node in self.nodes:
                launched.append(servers.spawn_node(node.config_path.parent, node.config_path))
            for node, process in zip(self.nodes, launched):
                node.server = servers.await_node(process, node.config_path.parent,
                                                  node.config_path, DURABILITY)
        except BaseException:
            for process in launched:
                stop_process(process, servers.server_stop_timeout_s)
            raise

    def addresses(self) -> list[tuple[str, int]]:
        return [(n.server.host, n.server.port) for n in self.nodes]

    def kill(self, node: BenchNode) -> float:
        """SIGKILL ``node``; the ``time.monotonic()`` just before the signal left."""
        killed_s = time.monotonic()
        node.server.process.send_signal(signal.SIGKILL)
        node.server.process.wait(servers.server_stop_timeout_s)
        return killed_s

    def restart(self, node: BenchNode) -> None:
        """Start ``node`` again on its data directory; the previous process's stdout and log
        are kept beside the new ones (``stdout.1.txt``, ``chorusdb.1.log`` ...)."""
        assert not node.running, node.node_id
        directory = node.config_path.parent
        for name in ("stdout.txt", "chorusdb.log"):
            stem, suffix = name.split(".")
            (directory / name).rename(directory / f"{stem}.{node.incarnation}.{suffix}")
        node.incarnation += 1
        node.server = servers.await_node(servers.spawn_node(directory, node.config_path),
                                          directory, node.config_path, DURABILITY)

    def stop(self) -> None:
        for node in self.nodes:
            if node.server is not None:
                servers.stop(node.server)

    def statuses(self) -> dict[str, dict | None]:
        return {node.node_id: node.status() for node in self.nodes}

    def current_leader(self) -> tuple[BenchNode, dict] | None:
        """``leader`` of the statuses now, with its status."""
        statuses = self.statuses()
        leader = self.leader(statuses)
        return None if leader is None else (leader, statuses[leader.node_id])

    def leader(self, statuses: Mapping[str, dict | None]) -> BenchNode | None:
        """The node that reports itself leader at the highest epoch with its epoch's first
        entry committed (a leader that can acknowledge writes), if any."""
        leaders = [(s["epoch"], node) for node in self.nodes
                   if (s := statuses[node.node_id]) is not None and s["role"] == "leader"
                   and s["commit_position"]["epoch"] == s["epoch"]]
        return max(leaders, key=lambda pair: pair[0])[1] if leaders else None

    def settled(self) -> tuple[BenchNode, dict[str, dict]] | None:
        """The leader and every status, once every node runs, the leader's followers all
        stream, and each follower is at the leader's epoch, position and commit."""
        statuses = self.statuses()
        leader = self.leader(statuses)
        if leader is None or any(s is None for s in statuses.values()):
            return None
        led = statuses[leader.node_id]
        if len(led["members"]) != len(self.nodes) - 1 or \
                any(m["state"] != "streaming" for m in led["members"]):
            return None
        for node_id, s in statuses.items():
            if node_id != leader.node_id and (
                    s["role"], s["leader_id"], s["epoch"], s["position"], s["commit_position"]
            ) != ("follower", leader.node_id, led["epoch"], led["position"],
                  led["commit_position"]):
                return None
        return leader, statuses

    def wait_settled(self) -> tuple[BenchNode, dict[str, dict]]:
        settled = wait_until(self.settled, settle_timeout_ms)
        if settled is None:
            raise FailoverError(f"the cluster did not settle (a leader, every follower caught "
                                f"up) within {settle_timeout_ms} ms: "
                                f"{_brief(self.statuses())}")
        return settled


def _brief(statuses: Mapping[str, dict | None]) -> str:
    """One clause per node for an error message: role, epoch, leader, position."""
    return "; ".join(
        f"{node_id} down or not answering" if s is None else
        f"{node_id} {s['role']} epoch {s['epoch']} leader {s['leader_id'] or '-'} at "
        f"{s['position']['epoch']}:{s['position']['index']} committed "
        f"{s['commit_position']['epoch']}:{s['commit_position']['index']}"
        for node_id, s in statuses.items())


# --- one trial ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trial:
    """What one trial measured (module docstring). ``failover_ms`` None: no write was
    acknowledged within ``failover_timeout_ms``; ``elected_ms`` None: no new leader was seen
    by then. ``leaderless_ms`` is the new leader's own count of its time without a leader
    (``/status`` ``last_failover_ms``), from its election timer firing to its epoch's first
    commit: the election proper, without the time it took to notice the leader was gone."""

    number: int
    killed: str
    old_epoch: int
    new_leader: str
    new_epoch: int
    failover_ms: float | None
    elected_ms: float | None
    first_ack_via: str              # the node whose client got the first acknowledgement
    leaderless_ms: int | None
    acknowledged: int
    in_doubt: int
    refused: int
    lost: int
    lost_examples: tuple[str, ...]
    rejoin_ms: float
    quarantined: int                # divergent entries the restarted node set aside
    errors: dict[str, int]


def run_trial(cluster: LocalCluster, number: int, clients: int,
              step: Callable[[str], None]) -> Trial:
    """One trial on a running cluster; it leaves the cluster running and settled."""
    step(f"trial {number}: waiting for a settled cluster")
    leader, statuses = cluster.wait_settled()
    old_epoch = statuses[leader.node_id]["epoch"]
    divergent_before = statuses[leader.node_id]["divergent_total"]
    addresses = cluster.addresses()
    load = WriteLoad(addresses, f"trial{number}", clients).start()
    try:
        step(f"trial {number}: {warmup_writes} writes, then SIGKILL {leader.node_id}")
        load.wait_acknowledged(warmup_writes, load_timeout_ms)
        killed_s = cluster.kill(leader)
        first, elected_s = _watch_failover(cluster, load, killed_s, old_epoch)
        if first is not None:
            load.wait_acknowledged(load.acknowledged + after_failover_writes,
                                   load_timeout_ms)
    finally:
        load.stop()
    step(f"trial {number}: reading {load.acknowledged:,} acknowledged writes back")
    elected = wait_until(cluster.current_leader, settle_timeout_ms)
    if elected is None:
        raise FailoverError(f"trial {number}: no new leader within {settle_timeout_ms} ms "
                            f"after {leader.node_id} was killed: {_brief(cluster.statuses())}")
    new_leader, new_status = elected
    with client_for(new_leader.server.host, new_leader.server.port,
                    status_timeout_ms) as client:
        missing = load.missing_on(client)
    step(f"trial {number}: restarting {leader.node_id}")
    restarted_s = time.monotonic()
    cluster.restart(leader)
    _, statuses = cluster.wait_settled()
    rejoin_ms = (time.monotonic() - restarted_s) * 1000
    return Trial(
        number=number, killed=leader.node_id, old_epoch=old_epoch,
        new_leader=new_leader.node_id, new_epoch=new_status["epoch"],
        failover_ms=None if first is None else round((first.acked_s - killed_s) * 1000, 3),
        elected_ms=None if elected_s is None else round((elected_s - killed_s) * 1000, 3),
        first_ack_via="" if first is None else cluster.nodes[first.node].node_id,
        leaderless_ms=new_status["last_failover_ms"], acknowledged=load.acknowledged,
        in_doubt=load.in_doubt, refused=load.refused, lost=len(missing),
        lost_examples=tuple(missing[:lost_examples_max]), rejoin_ms=round(rejoin_ms, 3),
        quarantined=statuses[leader.node_id]["divergent_total"] - divergent_before,
        errors=dict(sorted(load.errors.items())))


def _watch_failover(cluster: LocalCluster, load: WriteLoad, killed_s: float,
                    old_epoch: int) -> tuple[Ack | None, float | None]:
    """After the kill: the first acknowledgement of a write sent after it, and the time of the
    first poll that found a leader of a later epoch (module docstring, step 4); None for
    either not seen within ``failover_timeout_ms``."""
    first, elected_s = None, None
    deadline = killed_s + failover_timeout_ms / 1000
    while (first is None or elected_s is None) and time.monotonic() < deadline:
        if elected_s is None:
            found = cluster.current_leader()
            if found is not None and found[1]["epoch"] > old_epoch:
                elected_s = time.monotonic()
        first = first or load.first_acknowledged_after(killed_s)
        time.sleep(poll_interval_ms / 1000)
    return first, elected_s


# --- figures (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoalCheck:
    """A figure against its upper bound; ``unit`` "ms" (``value`` ``math.inf`` when a trial
    without failover made it unmeasurable) or "writes"."""

    title: str
    value: float
    bound: float
    unit: str

    @property
    def met(self) -> bool:
        return self.value <= self.bound

    def sentence(self) -> str:
        shown = f"{_ms(self.value)} ms" if self.unit == "ms" else f"{self.value:,.0f}"
        return f"goal: {self.title}: {shown}, {'met' if self.met else 'MISSED'}"


@dataclass(frozen=True, slots=True)
class Spread:
    """Nearest-rank percentiles of one figure over the trials (``math.inf`` where a trial
    did not get that far)."""

    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, times_ms: Sequence[float]) -> Spread:
        return cls(results.percentile(times_ms, 0.5), results.percentile(times_ms, 0.99),
                   max(times_ms))

    def text(self) -> str:
        return f"p50 {_ms(self.p50_ms)} ms, p99 {_ms(self.p99_ms)} ms, max {_ms(self.max_ms)} ms"


@dataclass(frozen=True, slots=True)
class Summary:
    trials: int
    without_failover: int
    failover: Spread
    elected: Spread
    lost: int
    goals: tuple[GoalCheck, ...]


def times_ms(trials: Sequence[Trial], figure: str = "failover_ms") -> list[float]:
    """Each trial's ``figure``; ``math.inf`` where it is None (longer than any bound)."""
    return [math.inf if (value := getattr(t, figure)) is None else value for t in trials]


def summarize(trials: Sequence[Trial]) -> Summary:
    failover = times_ms(trials)
    lost = sum(t.lost for t in trials)
    goals = tuple(GoalCheck(f"failover {label} <= {bound / 1000:g} s",
                            results.percentile(failover, fraction), bound, "ms")
                  for label, fraction, bound in GOALS)
    return Summary(trials=len(trials),
                   without_failover=sum(t.failover_ms is None for t in trials),
                   failover=Spread.of(failover), elected=Spread.of(times_ms(trials, "elected_ms")),
                   lost=lost,
                   goals=(*goals, GoalCheck(f"acknowledged writes lost <= {LOST_GOAL}", lost,
                                            LOST_GOAL, "writes")))


def _ms(value: float | None) -> str:
    return "none" if value is None or math.isinf(value) else f"{value:,.0f}"


def trial_table(trials: Sequence[Trial], title: str) -> Table:
    """One row per trial, narrow enough for an 80-column terminal."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="elected, failover: ms from the SIGKILL to a new leader seen in "
                          "/status, to the first acknowledged write; rejoin: s from the "
                          "restart to caught up")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("killed", no_wrap=True)
    table.add_column("epochs", no_wrap=True)
    for header in ("elected", "failover", "acked", "in doubt", "lost", "rejoin"):
        table.add_column(header, justify="right", no_wrap=True)
    for t in trials:
        table.add_row(str(t.number), f"{t.killed}→{t.new_leader}",
                      f"{t.old_epoch}→{t.new_epoch}", _ms(t.elected_ms), _ms(t.failover_ms),
                      f"{t.acknowledged:,}", f"{t.in_doubt:,}",
                      f"[red]{t.lost}[/red]" if t.lost else "0", f"{t.rejoin_ms / 1000:.1f}")
    return table


def summary_lines(summary: Summary) -> list[str]:
    """The summary and one line per goal, met or missed."""
    lines = [f"failover over {summary.trials} trials (SIGKILL -> first acknowledged write "
             f"sent after it): {summary.failover.text()}",
             f"election (SIGKILL -> a new leader seen in /status): {summary.elected.text()}"]
    if summary.without_failover:
        lines.append(f"{summary.without_failover} trial(s) had no write acknowledged within "
                     f"{failover_timeout_ms:,} ms of the kill")
    return lines + [goal.sentence() for goal in summary.goals]


def histogram_lines(times_ms: Sequence[float], bin_ms: float = histogram_bin_ms,
                    width: int = histogram_bar_chars_max) -> list[str]:
    """A text histogram: one line per ``bin_ms`` wide bin from the first occupied to the last,
    bars scaled so the fullest is ``width`` characters; trials without failover (``inf``) get
    a line of their own."""
    finite = [t for t in times_ms if not math.isinf(t)]
    counts: dict[int, int] = {}
    for t in finite:
        counts[int(t // bin_ms)] = counts.get(int(t // bin_ms), 0) + 1
    rows = [(f"{b * bin_ms:>6,.0f} - {(b + 1) * bin_ms:>6,.0f} ms", counts.get(b, 0))
            for b in (range(min(counts), max(counts) + 1) if counts else ())]
    unmeasured = len(times_ms) - len(finite)
    if unmeasured:
        rows.append((f"{'no failover':>18}", unmeasured))
    fullest = max((count for _, count in rows), default=0)
    return [f"{label} |{'#' * math.ceil(count * width / fullest) if count else ''} {count}"
            for label, count in rows]


# --- the run ----------------------------------------------------------------------------------


STEPS_PER_TRIAL = 4     # settle, load and kill, read back, restart


def measure(settings: Settings, status: Console) -> list[Trial]:
    """Start the cluster, run every trial, stop the cluster whatever happens."""
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="chorusdb-bench-failover-") as tmp, \
            session.progress_bar(status) as progress:
        task = progress.add_task(f"starting {settings.nodes} nodes",
                                 total=1 + STEPS_PER_TRIAL * settings.trials)
        cluster = LocalCluster(Path(tmp) / "cluster", settings.nodes, settings.write_quorum)
        try:
            cluster.start()
            progress.advance(task)

            def step(description: str) -> None:
                progress.update(task, description=description)
                progress.advance(task)

            for number in range(1, settings.trials + 1):
                trial = run_trial(cluster, number, settings.clients, step)
                trials.append(trial)
                progress.console.print(
                    f"trial {number}: killed {trial.killed} (epoch {trial.old_epoch}), "
                    f"{trial.new_leader} leads epoch {trial.new_epoch} (seen after "
                    f"{_ms(trial.elected_ms)} ms); first write acknowledged "
                    f"{_ms(trial.failover_ms)} ms after the kill; "
                    f"{trial.acknowledged:,} acknowledged, {trial.lost} lost; rejoined in "
                    f"{trial.rejoin_ms / 1000:.1f} s", highlight=False, markup=False)
        finally:
            cluster.stop()
    return trials


def report(settings: Settings, trials: list[Trial], done: session.Session) -> None:
    """The table, the summary, the goals and the histogram to the terminal; every figure to
    the JSON file."""
    console = Console()
    summary = summarize(trials)
    console.print(trial_table(trials, title=(
        f"{settings.nodes} nodes (W={settings.write_quorum}, {DURABILITY}), {settings.clients} "
        f"clients, on {done.machine['cores']} cores")))
    for line in summary_lines(summary):
        console.print(line, highlight=False, markup=False,
                      style="red" if line.endswith("MISSED") else None)
    for line in histogram_lines(times_ms(trials)):
        console.print(line, highlight=False, markup=False)
    json_path = settings.json_path or settings.output_dir / f"failover-{done.stamp}.json"
    document = {
        **done.document_header(
            settings, json_path=str(json_path), write_quorum=settings.write_quorum,
            durability=DURABILITY, warmup_writes=warmup_writes,
            after_failover_writes=after_failover_writes, request_timeout_ms=request_timeout_ms,
            failover_timeout_ms=failover_timeout_ms),
        "summary": {**asdict(summary),
                    "goals": [{**asdict(g), "met": g.met} for g in summary.goals]},
        "trials": [asdict(t) for t in trials],
    }
    done.write_document(_finite(document), json_path, console)


def _finite(value: object) -> object:
    """``value`` with every infinite float as None (JSON has no infinity)."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def run(args: argparse.Namespace) -> int:
    """The whole benchmark (module docstring); the exit code."""
    def measured(tool: None, redis_server: None, settings: Settings,
                 status: Console) -> tuple[list[Trial], dict[str, str]]:
        return measure(settings, status), {"chorusdb": __version__}

    return session.run("failover", args, settings_from=settings_from, measure=measured,
                       failures=(ServerStartError, FailoverError), report=report,
                       install_tools=None, install_redis=None)
