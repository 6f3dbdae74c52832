"""Leader mode seen from outside: ROLE, INFO replication, /metrics and ``chorusdb status``.

Three real ``LeaderCore``s are driven in-process through their contract (propose, tick, ready,
advance, step; messages routed by hand, some links cut) and each is put inside a ``Node`` that
is never started, so the replies are built by the server's own code from real ``status()``
documents. Only states a short in-process run cannot reach (a follower in the middle of
receiving a multi-chunk snapshot) are made by editing a real status document. The command line
is run against a fake admin API on loopback that serves such a document, and against ports
that refuse connections.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis._parsers.helpers import parse_info
from rich.console import Console

from chorusdb.cli.main import build_parser
from chorusdb.cli.status import host_port_list, render
from chorusdb.core.api import ClientCommand, CoreConfig
from chorusdb.core.leader import LeaderCore, LeaderSettings
from chorusdb.core.leader_messages import AppendReply
from chorusdb.core.model import ZERO_POSITION, RecoveredState
from chorusdb.core.standalone import StandaloneCore
from chorusdb.server.config import Address, Member, NodeConfig
from chorusdb.server.connection_commands import ConnectionState, run_connection_command
from chorusdb.server.node import Node

T0 = 1_700_000_000_000
MEMBERS = ("n1", "n2", "n3")
WRITES = 3
LOG_END = WRITES + 1        # the leader's EpochStart at index 1, then the writes
settle_rounds_max = 50


class Cluster:
    """Three leader-mode cores (n1 leads) and a hand-driven network between them."""

    def __init__(self, settings: LeaderSettings) -> None:
        recovered = RecoveredState({}, {}, ZERO_POSITION)
        self.settings = settings
        self.cores = {m: LeaderCore(CoreConfig(m, MEMBERS, settings=settings), recovered,
                                    random.Random(1), T0) for m in MEMBERS}
        self.now = T0
        self.cores["n1"].tick(T0)           # the initial leader runs for epoch 1 at once

    def elect(self, cut: frozenset[str] = frozenset()) -> None:
        self.settle(self.now, cut)
        assert self.cores["n1"].role == "leader"

    def settle(self, now_ms: int, cut: frozenset[str] = frozenset(),
               muted: frozenset[str] = frozenset()) -> None:
        """Carry out Readys until none is left. Members in ``cut`` neither run nor receive;
        what members in ``muted`` send is lost."""
        for _ in range(settle_rounds_max):
            busy = [m for m, core in self.cores.items() if m not in cut and core.has_ready()]
            if not busy:
                return
            for member in busy:
                core = self.cores[member]
                ready = core.ready()
                core.advance(ready)
                for message in ready.messages:
                    if message.target not in cut and member not in muted:
                        self.cores[message.target].step(message, now_ms)
        raise AssertionError(f"the cluster did not settle in {settle_rounds_max} rounds")

    def tick(self, now_ms: int, cut: frozenset[str] = frozenset(),
             muted: frozenset[str] = frozenset()) -> None:
        """Tick every member not in ``cut`` up to ``now_ms`` in heartbeat steps, settling after
        each (one long jump would look like a leader gone silent)."""
        while self.now < now_ms:
            self.now = min(now_ms, self.now + self.settings.heartbeat_interval_ms)
            for member, core in self.cores.items():
                if member not in cut:
                    core.tick(self.now)
            self.settle(self.now, cut, muted)


def writes_with_n3_cut(**settings) -> Cluster:
    """W = 2; n3 never hears from the leader while it commits three SETs with n2."""
    cluster = Cluster(LeaderSettings(write_quorum=2, **settings))
    cut = frozenset({"n3"})
    cluster.elect(cut)
    for i in range(WRITES):         # one at a time: a small log hold admits one unsafe entry
        cluster.cores["n1"].propose(ClientCommand(b"SET", (f"k{i}".encode(), b"v")), i + 1,
                                    T0 + 10)
        cluster.settle(T0 + 10, cut)
    return cluster


def n3_reseeding() -> Cluster:
    """As ``writes_with_n3_cut``, but the leader keeps one entry, so n3 needs a snapshot; n3
    answers the leader once (a snapshot waits for a follower that answers), then its answers
    are lost: the leader streams the snapshot and hears no acknowledgement."""
    cluster = writes_with_n3_cut(log_retention_entries=1, log_hold_entries_max=1)
    later = T0 + 1500           # past the retention check and the resend timer
    cluster.tick(later, frozenset({"n3"}))
    cluster.settle(later, frozenset({"n3"}))
    cluster.cores["n1"].step(AppendReply("n3", "n1", 1, ZERO_POSITION, ZERO_POSITION, False,
                                         cluster.cores["n3"]._incarnation, -1, ZERO_POSITION),
                             later + 100)
    cluster.tick(later + 100, muted=frozenset({"n3"}))
    return cluster


def node_of(core, member: str, mode: str = "leader") -> Node:
    """A node that is never started, with ``core`` in place and member i's client port
    7001 + i."""
    members = tuple(Member(m, Address("127.0.0.1", 7101 + i), Address("127.0.0.1", 7001 + i))
                    for i, m in enumerate(MEMBERS if mode == "leader" else (member,)))
    me = next(m for m in members if m.id == member)
    settings = core.settings if isinstance(core, LeaderCore) else LeaderSettings()
    node = Node(NodeConfig(node_id=member, data_dir=Path("unused"), client=me.client,
                           peer=me.peer, admin=Address("127.0.0.1", me.client.port + 200),
                           cluster_id="demo", mode=mode, secret_file=None, members=members,
                           leader=settings))
    node.core = core
    return node


class StatusCore:
    """A core that only reports a given status document."""

    def __init__(self, status: dict) -> None:
        self._status = status

    def status(self) -> dict:
        return self._status


def standalone_node(writes: int) -> Node:
    core = StandaloneCore(CoreConfig("n1", ("n1",)), RecoveredState({}, {}, ZERO_POSITION),
                          random.Random(1), T0)
    for i in range(writes):
        core.propose(ClientCommand(b"SET", (f"k{i}".encode(), b"v")), i + 1, T0)
    core.advance(core.ready())
    return node_of(core, "n1", mode="standalone")


def command(node: Node, name: bytes, *args: bytes) -> object:
    return run_connection_command(node, ConnectionState(1, authenticated=True), name,
                                  [name, *args])


def info_replication(node: Node) -> dict:
    return parse_info(command(node, b"INFO", b"replication"))


# --- ROLE ----------------------------------------------------------------------------------


def test_role_on_the_leader_lists_the_streaming_followers_with_string_fields():
    cluster = writes_with_n3_cut()
    assert command(node_of(cluster.cores["n1"], "n1"), b"ROLE") == [
        b"master", LOG_END, [[b"127.0.0.1", b"7002", str(LOG_END).encode()]]]


def test_role_leaves_out_a_follower_that_is_being_reseeded():
    cluster = n3_reseeding()
    assert [m["state"] for m in cluster.cores["n1"].status()["members"]] == \
        ["streaming", "snapshotting"]
    followers = command(node_of(cluster.cores["n1"], "n1"), b"ROLE")[2]
    assert [port for _, port, _ in followers] == [b"7002"]


def test_role_on_a_follower_names_the_leader_and_the_state_of_its_link():
    cluster = writes_with_n3_cut(follower_disconnected_ms=3000)     # the default is 1000
    follower = node_of(cluster.cores["n2"], "n2")
    assert command(follower, b"ROLE") == [b"slave", b"127.0.0.1", 7001, b"connected", LOG_END]
    cluster.cores["n2"].tick(T0 + 10 + 3000)
    assert command(follower, b"ROLE")[3] == b"connected"
    cluster.cores["n2"].tick(T0 + 10 + 3001)
    assert command(follower, b"ROLE")[3] == b"connect"
    receiving = StatusCore(dict(cluster.cores["n2"].status(), snapshot_receiving="1/4"))
    assert command(node_of(receiving, "n2"), b"ROLE")[3] == b"sync"


def test_role_on_a_follower_that_knows_no_leader_yet():
    cluster = writes_with_n3_cut()
    assert command(node_of(cluster.cores["n3"], "n3"), b"ROLE") == \
        [b"slave", b"?", 0, b"connect", 0]


def test_role_on_a_standalone_node_lists_no_replicas():
    assert command(standalone_node(writes=2), b"ROLE") == [b"master", 2, []]


# --- INFO replication ------------------------------------------------------------------------


def test_info_replication_on_the_leader_parses_with_redis_py():
    cluster = writes_with_n3_cut()
    info = info_replication(node_of(cluster.cores["n1"], "n1"))
    assert info["role"] == "master"
    assert info["connected_slaves"] == 1            # n3 never answered: not connected
    assert info["slave0"] == {"ip": "127.0.0.1", "port": 7002, "state": "online",
                              "offset": LOG_END, "lag": 0}
    assert "slave1" not in info
    assert info["master_repl_offset"] == LOG_END
    assert len(info["master_replid"]) == 40 and int(info["master_replid"], 16) >= 0
    assert {k: info[k] for k in ("chorus_role", "chorus_epoch", "chorus_leader_id",
                                 "chorus_write_quorum", "chorus_commit_index",
                                 "chorus_applied_index", "chorus_log_entries")} == {
        "chorus_role": "leader", "chorus_epoch": 1, "chorus_leader_id": "n1",
        "chorus_write_quorum": 2, "chorus_commit_index": LOG_END,
        "chorus_applied_index": LOG_END, "chorus_log_entries": LOG_END}
    assert info["chorus_follower0"] == {
        "id": "n2", "state": "streaming", "durable_index": LOG_END, "applied_index": LOG_END,
        "lag_entries": 0, "lag_ms": 0, "last_answer_ms_ago": 0, "reseeds": 0}
    assert info["chorus_follower1"]["id"] == "n3"
    assert info["chorus_follower1"]["state"] == "disconnected"
    assert info["chorus_follower1"]["lag_entries"] == LOG_END
    assert info["chorus_follower1"]["last_answer_ms_ago"] == -1


def test_info_replication_counts_a_reseeding_follower_as_connected_but_not_online():
    cluster = n3_reseeding()
    info = info_replication(node_of(cluster.cores["n1"], "n1"))
    assert info["connected_slaves"] == 2
    assert [info["slave0"]["state"], info["slave1"]["state"]] == ["online", "send_bulk"]
    assert info["slave1"]["port"] == 7003 and info["slave1"]["lag"] == 0   # it answered now
    assert info["chorus_follower1"]["reseeds"] == 0      # counted once the snapshot is in


def test_info_replication_on_a_follower_parses_with_redis_py():
    cluster = writes_with_n3_cut()
    leader_info = info_replication(node_of(cluster.cores["n1"], "n1"))
    follower = node_of(cluster.cores["n2"], "n2")
    info = info_replication(follower)
    assert {k: info[k] for k in (
        "role", "master_host", "master_port", "master_link_status",
        "master_last_io_seconds_ago", "master_sync_in_progress", "slave_repl_offset",
        "slave_read_only", "connected_slaves", "chorus_role", "chorus_commit_index",
        "chorus_applied_index", "chorus_follower_writes")} == {
        "role": "slave", "master_host": "127.0.0.1", "master_port": 7001,
        "master_link_status": "up", "master_last_io_seconds_ago": 0,
        "master_sync_in_progress": 0, "slave_repl_offset": LOG_END, "slave_read_only": 0,
        "connected_slaves": 0, "chorus_role": "follower", "chorus_commit_index": LOG_END,
        "chorus_applied_index": LOG_END, "chorus_follower_writes": "forward"}
    assert "master_link_down_since_seconds" not in info
    assert info["master_replid"] == leader_info["master_replid"]
    cluster.cores["n2"].tick(T0 + 10 + 2500)
    info = info_replication(follower)
    assert info["master_link_status"] == "down"
    assert info["master_last_io_seconds_ago"] == info["master_link_down_since_seconds"] == 2
    receiving = StatusCore(dict(cluster.cores["n2"].status(), snapshot_receiving="1/4"))
    assert info_replication(node_of(receiving, "n2"))["master_sync_in_progress"] == 1


def test_a_follower_that_redirects_writes_is_read_only():
    cluster = writes_with_n3_cut(follower_writes="redirect")
    assert info_replication(node_of(cluster.cores["n2"], "n2"))["slave_read_only"] == 1


def test_info_replication_on_a_standalone_node():
    info = info_replication(standalone_node(writes=2))
    assert info["role"] == "master" and info["connected_slaves"] == 0
    assert info["master_repl_offset"] == 2 and info["chorus_role"] == "standalone"
    assert not any(k.startswith(("slave", "chorus_follower")) for k in info)


# --- /metrics ----------------------------------------------------------------------------------


def samples(node: Node) -> dict[tuple[str, tuple], float]:
    """``(sample name, sorted labels without node) -> value`` of the node's /metrics text."""
    text = node.metrics.exposition(node.core.status()).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels.pop("node") == node.config.node_id, sample
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_of_a_leader_show_positions_followers_and_counters():
    cluster = n3_reseeding()
    found = samples(node_of(cluster.cores["n1"], "n1"))
    status = cluster.cores["n1"].status()
    assert found[("chorus_log_position_index", ())] == LOG_END
    assert found[("chorus_commit_index", ())] == LOG_END
    assert found[("chorus_applied_index", ())] == LOG_END
    assert found[("chorus_epoch", ())] == 1 and found[("chorus_is_leader", ())] == 1
    assert found[("chorus_log_entries", ())] == 1 and found[("chorus_log_first_index", ())] == 4
    assert found[("chorus_log_bytes", ())] == status["log"]["bytes"] > 0
    assert found[("chorus_replication_inflight_entries", ())] == status["inflight_entries"]
    n2, n3 = (("follower", "n2"),), (("follower", "n3"),)
    assert found[("chorus_follower_lag_entries", n2)] == 0
    assert found[("chorus_follower_lag_entries", n3)] == LOG_END
    assert found[("chorus_follower_lag_seconds", n3)] == status["members"][1]["lag_ms"] / 1000
    assert found[("chorus_follower_reseeds_total", n2)] == 0
    assert found[("chorus_follower_reseeds_total", n3)] == 0   # in progress: counted once complete
    assert {state: found[("chorus_follower_state", (("follower", "n3"), ("state", state)))]
            for state in ("streaming", "snapshotting", "disconnected")} == \
        {"streaming": 0, "snapshotting": 1, "disconnected": 0}
    counters = status["replication"]
    for name, value in counters.items():
        assert found[(f"chorus_replication_{name}_total", ())] == value, name
    assert counters["snapshot_chunks_sent"] >= 1 and counters["entries_sent"] >= LOG_END
    assert found[("chorus_replication_entries_per_append", ())] == pytest.approx(
        counters["entries_sent"] / counters["append_messages_sent"])
    assert ("chorus_leader_last_contact_seconds", ()) not in found
    assert ("chorus_connected_clients", ()) in found      # the node's own metrics are kept


def test_metrics_of_a_follower_have_no_follower_families():
    cluster = writes_with_n3_cut()
    cluster.cores["n2"].tick(T0 + 10 + 1500)
    found = samples(node_of(cluster.cores["n2"], "n2"))
    assert found[("chorus_is_leader", ())] == 0
    assert found[("chorus_applied_index", ())] == LOG_END
    assert found[("chorus_leader_last_contact_seconds", ())] == 1.5
    assert found[("chorus_replication_entries_received_total", ())] == LOG_END
    assert not any(name.startswith("chorus_follower_") for name, _ in found)


def test_metrics_of_a_standalone_node_show_positions_only():
    found = samples(standalone_node(writes=2))
    assert found[("chorus_log_position_index", ())] == 2
    assert found[("chorus_applied_index", ())] == 2 and found[("chorus_is_leader", ())] == 1
    assert not any(name.startswith(("chorus_follower_", "chorus_replication_", "chorus_log_e"))
                   for name, _ in found)


# --- chorusdb status -----------------------------------------------------------------------


def rendered(results: list[tuple[str, dict | None]]) -> str:
    console = Console(record=True, width=120)
    render(console, results)
    return console.export_text()


def test_status_of_one_leader_shows_its_facts_and_each_follower():
    cluster = n3_reseeding()
    text = rendered([("127.0.0.1:7201", node_of(cluster.cores["n1"], "n1").status())])
    assert "node n1 of cluster demo" in text and "followers of n1" in text
    words = " ".join(text.split())         # a wrapped cell continues on the next lines
    assert "│ applied │ 1:4 │" in words and "│ log │ 1 entries from index 4," in words
    assert "n2 streaming 1:4 0 0 0 ms ago 0" in words
    assert ("n3 snapshotting (chunk 0/1) 0:0 4 0 0 ms ago 0: needed entry 1 but the log starts "
            "at 4 (a follower fell more than 1 entries behind)") in words
    assert "│ elections │ 1 started, 1 won, 0 lost │" in words


def test_status_of_several_nodes_shows_one_row_each_and_the_leaders_followers():
    cluster = writes_with_n3_cut()
    results = [(f"127.0.0.1:720{i + 1}", node_of(cluster.cores[m], m).status())
               for i, m in enumerate(MEMBERS)]
    text = rendered([*results, ("127.0.0.1:7299", None)])
    nodes, followers = text.split("followers of n1")
    rows = {line.split()[0]: line.split() for line in nodes.splitlines() if line.split()}
    assert rows["n1"][1:] == ["leader", "1", "n1", "1:4", "1:4", "1:4", "3"]
    assert rows["n2"][1:] == ["follower", "1", "n1", "1:4", "1:4", "1:4", "3"]
    assert rows["n3"][1:] == ["follower", "0", "-", "0:0", "0:0", "0:0", "0"]
    assert rows["127.0.0.1:7299"][1] == "unreachable"
    assert "followers of" not in followers
    assert "n3 disconnected (never answered) 0:0 4 10 never 0" in " ".join(followers.split())


def test_status_command_takes_several_addresses_and_fails_on_an_unreachable_one(capsys):
    # Bound, not listening: connecting is refused at once.
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in (first, second)]
        args = build_parser().parse_args(["status", "--admin", ", ".join(addresses)])
        assert args.admin == addresses
        assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert [line.split()[:2] for line in out.splitlines() if "unreachable" in line] == \
        [[address, "unreachable"] for address in addresses]
    assert all(f"cannot reach http://{address}/status" in err for address in addresses)


@contextmanager
def admin_serving(status: dict):
    """A fake admin API on loopback whose /status is ``status``; yields its address."""
    body = json.dumps(status).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_status_command_fetches_each_node_and_prints_json_keyed_by_address(capsys):
    cluster = writes_with_n3_cut()
    leader_status = node_of(cluster.cores["n1"], "n1").status()
    with admin_serving(leader_status) as admin, socket.socket() as refused:
        refused.bind(("127.0.0.1", 0))
        down = f"127.0.0.1:{refused.getsockname()[1]}"
        for extra in ([], ["--json"]):
            args = build_parser().parse_args(["status", "--admin", f"{admin},{down}", *extra])
            assert args.func(args) == 1
    table, document = capsys.readouterr().out.split("\n{", 1)
    assert "followers of n1" in table and "unreachable" in table
    assert json.loads("{" + document) == {admin: leader_status, down: None}


def test_addresses_are_split_on_commas_and_kept_once_in_order():
    assert host_port_list("a:1, b:2,a:1") == ["a:1", "b:2"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["status", "--admin", ","])


# --- failover facts, from status documents -------------------------------------------------------
# Made by hand in the shape of ``LeaderCore.status()``: these check how INFO, /metrics and
# ``chorusdb status`` show the facts, whatever run of elections produced them.


def failover_status(**changes) -> dict:
    """A follower's status in leader mode after three elections, two of them lost."""
    document = {
        "role": "follower", "epoch": 7, "leader_id": "n1",
        "position": {"epoch": 7, "index": 12}, "commit_position": {"epoch": 7, "index": 12},
        "applied_position": {"epoch": 7, "index": 12}, "write_quorum": 2,
        "election_quorum": 2, "may_lose_acknowledged_writes": False,
        "candidate": True, "priority": 3, "elections": {"started": 3, "won": 1, "lost": 2},
        "leaderless_ms": 0, "last_failover_ms": 840, "switchover": None,
        "follower_writes": "forward", "members": [], "divergent_entries": 2,
        "divergent_total": 5, "keys": 4, "expires": 0,
        "log": {"first_index": 1, "entries": 12, "bytes": 600}, "leader_contact_ms_ago": 20,
        "snapshot_receiving": None, "inflight_entries": 0, "replication": {},
    }
    return {**document, **changes}


LEADERLESS = {"role": "candidate", "leader_id": None, "leaderless_ms": 1500,
              "last_failover_ms": None, "candidate": False, "leader_contact_ms_ago": 1500,
              "switchover": {"target": "n3", "state": "catching up", "elapsed_ms": 120}}
FAILOVER_INFO_PREFIXES = ("chorus_elections", "chorus_leaderless", "chorus_last_failover",
                          "chorus_candidate", "chorus_priority", "chorus_switchover",
                          "chorus_divergent_total")


def test_info_replication_shows_elections_failover_times_and_divergent_entries():
    info = info_replication(node_of(StatusCore(failover_status()), "n2"))
    assert {k: v for k, v in info.items() if k.startswith(FAILOVER_INFO_PREFIXES)} == {
        "chorus_elections_started": 3, "chorus_elections_won": 1, "chorus_elections_lost": 2,
        "chorus_leaderless_ms": 0, "chorus_last_failover_ms": 840, "chorus_candidate": 1,
        "chorus_priority": 3, "chorus_divergent_total": 5}
    assert info["chorus_divergent_entries"] == 2 and info["chorus_epoch"] == 7


def test_info_replication_while_no_leader_is_known_and_a_switchover_runs():
    info = info_replication(node_of(StatusCore(failover_status(**LEADERLESS)), "n2"))
    assert info["chorus_role"] == "candidate" and info["chorus_leader_id"] == ""
    assert info["master_link_status"] == "down"
    assert info["chorus_leaderless_ms"] == 1500 and info["chorus_last_failover_ms"] == -1
    assert info["chorus_candidate"] == 0
    assert info["chorus_switchover"] == {"target": "n3", "state": "catching_up",
                                         "elapsed_ms": 120}


def test_info_replication_of_a_standalone_node_has_no_failover_fields():
    info = info_replication(standalone_node(writes=1))
    assert not any(k.startswith(FAILOVER_INFO_PREFIXES) for k in info)
    assert info["chorus_divergent_entries"] == 0


def test_metrics_show_elections_failover_times_and_divergent_entries():
    found = samples(node_of(StatusCore(failover_status()), "n2"))
    assert {name: value for (name, _), value in found.items()
            if name.startswith(("chorus_elections", "chorus_leaderless", "chorus_last_failover",
                                "chorus_divergent", "chorus_epoch"))} == {
        "chorus_epoch": 7, "chorus_elections_started_total": 3,
        "chorus_elections_won_total": 1, "chorus_elections_lost_total": 2,
        "chorus_leaderless_seconds": 0, "chorus_last_failover_seconds": 0.84,
        "chorus_divergent_entries": 2, "chorus_divergent_entries_total": 5}
    leaderless = samples(node_of(StatusCore(failover_status(**LEADERLESS)), "n2"))
    assert leaderless[("chorus_leaderless_seconds", ())] == 1.5
    assert ("chorus_last_failover_seconds", ()) not in leaderless     # none yet


def test_metrics_of_a_standalone_node_have_no_elections():
    found = samples(standalone_node(writes=1))
    assert not any(name.startswith(("chorus_elections", "chorus_leaderless",
                                    "chorus_last_failover")) for name, _ in found)
    assert found[("chorus_divergent_entries", ())] == 0
    assert ("chorus_divergent_entries_total", ()) not in found


def node_document(status: dict) -> dict:
    """A /status document around a core's status, as ``Node.status`` builds it."""
    return {"node_id": "n2", "cluster_id": "demo", "mode": "leader", **status}


def test_status_of_one_node_shows_its_failover_facts():
    words = " ".join(rendered([("127.0.0.1:7202", node_document(failover_status()))]).split())
    for row in ("│ candidate │ yes, priority 3 │", "│ elections │ 3 started, 1 won, 2 lost │",
                "│ last failover │ took 840 ms │", "│ divergent entries │ 2 pending of 5 │"):
        assert row in words, row
    assert "without a leader" not in words and "switchover" not in words
    words = " ".join(rendered([("127.0.0.1:7202",
                                node_document(failover_status(**LEADERLESS)))]).split())
    for row in ("│ leader │ none known │", "│ candidate │ no, priority 3 │",
                "│ without a leader │ for 1500 ms │", "│ last failover │ none yet │",
                "│ switchover │ to n3: catching up for 120 ms │"):
        assert row in words, row


def test_status_of_a_standalone_node_shows_no_failover_facts():
    document = node_document(standalone_node(writes=1).core.status())
    document.update(mode="standalone", write_quorum=1, election_quorum=1,
                    may_lose_acknowledged_writes=False)
    words = " ".join(rendered([("127.0.0.1:7201", document)]).split())
    assert "│ divergent entries │ 0 pending │" in words
    assert not any(row in words for row in ("elections", "candidate", "last failover"))
