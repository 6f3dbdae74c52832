"""Multi-leader mode served by real processes: the pull protocol over peer frames, concurrent
writes kept as siblings through a partition, and the status and metrics a user looks at."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from chorusdb.chaos.cluster import ChaosCluster

pytestmark = pytest.mark.process

wait_s = 15.0


def until(condition, what: str):
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            result = condition()
        except redis.ResponseError:       # -TRYAGAIN while a node learns its own writes
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {wait_s} s: {what}")


def test_siblings_from_a_partition_merge_and_every_node_shows_them(tmp_path: Path):
    with ChaosCluster(tmp_path, "multi-leader", 3) as cluster:
        cluster.start_all()
        clients = {n: redis.Redis(*cluster.client_address(n), socket_timeout=5)
                   for n in cluster.node_ids}
        until(lambda: clients["n1"].set("base", "0"), "n1 takes a write")
        # A node takes writes once it has heard every member since it started; cut off
        # before that, it would refuse them for the whole partition.
        until(lambda: all((cluster.status(n) or {}).get("taking_writes")
                          for n in cluster.node_ids), "every node takes writes")
        cluster.block({(a, b) for a in cluster.node_ids for b in cluster.node_ids if a != b})
        until(lambda: clients["n1"].set("k", "from-n1"), "n1 takes a write cut off")
        until(lambda: clients["n2"].set("k", "from-n2"), "n2 takes a write cut off")
        assert clients["n1"].get("k") == b"from-n1" and clients["n2"].get("k") == b"from-n2"
        cluster.heal()
        digests = until(lambda: len({c.execute_command("CHORUS.DIGEST")
                                     for c in clients.values()}) == 1 and
                        clients["n3"].get("k"), "the nodes converge")
        assert digests in (b"from-n1", b"from-n2")
        context, versions = clients["n3"].execute_command("CHORUS.SIBLINGS", "k")
        assert sorted(value for _, _, value in versions) == [b"from-n1", b"from-n2"]
        assert clients["n3"].execute_command("CHORUS.SETCTX", "k", context, "merged") == b"OK"
        until(lambda: all(c.get("k") == b"merged" for c in clients.values()), "the merge spreads")
        status = cluster.status("n1")
        assert status["mode"] == "multi-leader" and status["role"] == "peer"
        assert {m["id"] for m in status["members"]} == {"n2", "n3"}
        assert status["counters"]["conflicts"] >= 1
        admin = cluster.admin_address("n1")
        metrics = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
        assert 'chorus_multileader_conflicts_total{node="n1"}' in metrics
        assert 'chorus_multileader_entries_behind{node="n1",peer="n2"}' in metrics
        assert json.loads(urllib.request.urlopen(f"http://{admin}/health", timeout=5).read())


def test_chorusdb_status_shows_a_multi_leader_node_and_its_peers(tmp_path: Path):
    from chorusdb.cli.status import members_table, node_table
    from rich.console import Console
    with ChaosCluster(tmp_path, "multi-leader", 3) as cluster:
        cluster.start_all()
        client = redis.Redis(*cluster.client_address("n2"), socket_timeout=5)
        until(lambda: client.set("k", "v"), "n2 takes a write")
        status = until(lambda: (s := cluster.status("n1")) and s["vector"].get("n2") and s,
                       "n1 pulls n2's write")
        console = Console(width=160, record=True)
        console.print(node_table(status))
        console.print(members_table(status))
        text = console.export_text()
        assert "holds writes" in text and "n2:1" in text and "peers of n1" in text
        assert "pulled from it" in text and "taking writes" in text
