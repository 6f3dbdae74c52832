"""The ``[leader]`` section and the cluster secret in a node's config, and the configs that
``chorusdb up`` writes for a local cluster."""

from __future__ import annotations

import argparse
import dataclasses
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chorusdb.cli import up
from chorusdb.core.leader import LeaderSettings
from chorusdb.server.process import free_ports
from chorusdb.server.config import (
    LEADER_KEYS,
    ConfigError,
    load_config,
    parse_config,
)

SECRET = b"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="


def leader_doc(members: int = 3, leader: dict | None = None,
               member_keys: dict[str, dict] | None = None, **cluster) -> dict:
    """A leader-mode document for node n1 of ``members`` members; ``leader`` None: no section;
    ``member_keys`` adds keys to the tables of the members it names."""
    doc = {
        "node": {"id": "n1", "data_dir": "d"},
        "listen": {"client": "127.0.0.1:7001", "admin": "127.0.0.1:7201"},
        "cluster": {"id": "c", "mode": "leader", "members": [
            {"id": f"n{i}", "peer": f"127.0.0.1:{7100 + i}", "client": f"127.0.0.1:{7000 + i}",
             **(member_keys or {}).get(f"n{i}", {})}
            for i in range(1, members + 1)], **cluster},
    }
    if leader is not None:
        doc["leader"] = leader
    return doc


def error_for(doc: dict, base_dir: Path = Path(".")) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(doc, base_dir)
    assert "\n" not in str(caught.value)
    return caught.value


def test_every_leader_setting_is_a_config_key():
    from_members = {"client_addresses", "non_candidates", "priorities"}
    settable = {f.name for f in dataclasses.fields(LeaderSettings)} - from_members
    assert settable == set(LEADER_KEYS)


def test_a_full_leader_section_parses_to_its_settings():
    config = parse_config(leader_doc(leader={
        "write_quorum": 3, "election_quorum": 1, "initial_leader": "n2",
        "follower_writes": "redirect", "write_timeout_ms": 900, "heartbeat_interval_ms": 50,
        "election_timeout_min_ms": 101, "election_timeout_max_ms": 102,
        "switchover_timeout_ms": 51, "append_resend_ms": 300, "quorum_contact_ms": 700,
        "follower_disconnected_ms": 600, "log_retention_entries": 10,
        "log_retention_bytes": 2048, "log_retention_age_ms": 5000, "log_hold_entries_max": 10},
        member_keys={"n1": {"candidate": False}, "n2": {"candidate": True, "priority": 5},
                     "n3": {"priority": 0}}), Path("."))
    assert config.leader == LeaderSettings(
        write_quorum=3, election_quorum=1, initial_leader="n2", follower_writes="redirect",
        client_addresses=(("n1", "127.0.0.1:7001"), ("n2", "127.0.0.1:7002"),
                          ("n3", "127.0.0.1:7003")),
        non_candidates=("n1",), priorities=(("n2", 5),),
        write_timeout_ms=900, heartbeat_interval_ms=50, election_timeout_min_ms=101,
        election_timeout_max_ms=102, switchover_timeout_ms=51, append_resend_ms=300,
        quorum_contact_ms=700, follower_disconnected_ms=600, log_retention_entries=10,
        log_retention_bytes=2048, log_retention_age_ms=5000, log_hold_entries_max=10)
    assert config.election_quorum == 1 and config.write_quorum == 3
    assert [(m.id, m.candidate, m.priority) for m in config.members] == \
        [("n1", False, 0), ("n2", True, 5), ("n3", True, 0)]
    assert config.leader.quorum(3) == 3 and config.leader.leader(config.member_ids) == "n2"


@pytest.mark.parametrize("members, majority", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_leader_mode_defaults_to_majorities_and_the_first_member(members, majority):
    for leader in (None, {}, {"write_quorum": "majority", "election_quorum": "majority"}):
        config = parse_config(leader_doc(members, leader), Path("."))
        assert config.leader.quorum(members) == config.write_quorum == majority
        assert config.election_quorum == config.leader.votes_needed(members) == majority
        assert config.leader.election_quorum == majority
        assert config.leader.initial_leader == "n1"
        assert config.leader.non_candidates == config.leader.priorities == ()
        assert all(m.candidate and m.priority == 0 for m in config.members)
        defaults = LeaderSettings()
        assert config.leader.heartbeat_interval_ms == defaults.heartbeat_interval_ms
        assert (config.leader.election_timeout_min_ms, config.leader.election_timeout_max_ms,
                config.leader.switchover_timeout_ms) == \
            (defaults.election_timeout_min_ms, defaults.election_timeout_max_ms,
             defaults.switchover_timeout_ms)
        assert config.leader.retention() == defaults.retention()
        assert dict(config.leader.client_addresses)[f"n{members}"] == f"127.0.0.1:{7000 + members}"


@pytest.mark.parametrize("leader, field", [
    ({"write_quorums": 2}, "leader.write_quorums"),
    ({"client_addresses": []}, "leader.client_addresses"),
    ({"write_quorum": 0}, "leader.write_quorum"),
    ({"write_quorum": 4}, "leader.write_quorum"),
    ({"write_quorum": "two"}, "leader.write_quorum"),
    ({"write_quorum": True}, "leader.write_quorum"),
    ({"election_quorum": 0}, "leader.election_quorum"),
    ({"election_quorum": 4}, "leader.election_quorum"),
    ({"election_quorum": "most"}, "leader.election_quorum"),
    ({"initial_leader": "n9"}, "leader.initial_leader"),
    ({"initial_leader": ""}, "leader.initial_leader"),
    ({"follower_writes": "bounce"}, "leader.follower_writes"),
    ({"write_timeout_ms": 0}, "leader.write_timeout_ms"),
    ({"heartbeat_interval_ms": -1}, "leader.heartbeat_interval_ms"),
    ({"append_resend_ms": 1.5}, "leader.append_resend_ms"),
    ({"quorum_contact_ms": "1000"}, "leader.quorum_contact_ms"),
    ({"follower_disconnected_ms": False}, "leader.follower_disconnected_ms"),
    ({"log_retention_entries": 0}, "leader.log_retention_entries"),
    ({"log_retention_bytes": 0}, "leader.log_retention_bytes"),
    ({"log_retention_age_ms": 0}, "leader.log_retention_age_ms"),
    ({"log_hold_entries_max": 0}, "leader.log_hold_entries_max"),
    ({"heartbeat_interval_ms": 1000}, "leader.quorum_contact_ms"),
    ({"heartbeat_interval_ms": 500, "follower_disconnected_ms": 500},
     "leader.follower_disconnected_ms"),
    ({"heartbeat_interval_ms": 500, "quorum_contact_ms": 600, "follower_disconnected_ms": 600,
      "write_timeout_ms": 500}, "leader.write_timeout_ms"),
    ({"log_retention_entries": 2_000_000}, "leader.log_hold_entries_max"),
    ({"election_timeout_min_ms": 0}, "leader.election_timeout_min_ms"),
    ({"election_timeout_min_ms": "500"}, "leader.election_timeout_min_ms"),
    ({"election_timeout_min_ms": 200}, "leader.election_timeout_min_ms"),   # 2 x heartbeat
    ({"heartbeat_interval_ms": 300}, "leader.election_timeout_min_ms"),
    ({"election_timeout_max_ms": 500}, "leader.election_timeout_max_ms"),   # = min
    ({"election_timeout_min_ms": 1200}, "leader.election_timeout_max_ms"),
    ({"election_timeout_max_ms": 2.5}, "leader.election_timeout_max_ms"),
    ({"switchover_timeout_ms": 0}, "leader.switchover_timeout_ms"),
    ({"switchover_timeout_ms": True}, "leader.switchover_timeout_ms"),
    ({"switchover_timeout_ms": 100}, "leader.switchover_timeout_ms"),       # = heartbeat
    ({"election_quorum": True}, "leader.election_quorum"),
    ({"non_candidates": ["n2"]}, "leader.non_candidates"),
    ({"priorities": {"n2": 1}}, "leader.priorities"),
])
def test_a_bad_leader_value_names_its_field(leader, field):
    error = error_for(leader_doc(leader=leader))
    assert error.field == field and str(error).startswith(f"{field}: ")


def test_the_election_timeouts_must_leave_two_heartbeats_and_a_range():
    config = parse_config(leader_doc(leader={"heartbeat_interval_ms": 10,
                                             "election_timeout_min_ms": 21,
                                             "election_timeout_max_ms": 22,
                                             "switchover_timeout_ms": 11}), Path("."))
    assert (config.leader.election_timeout_min_ms, config.leader.election_timeout_max_ms) == \
        (21, 22)
    assert "more than 2 x leader.heartbeat_interval_ms (20), got 20" in str(
        error_for(leader_doc(leader={"heartbeat_interval_ms": 10, "election_timeout_min_ms": 20})))
    assert "more than leader.election_timeout_min_ms (700), got 700" in str(
        error_for(leader_doc(leader={"election_timeout_min_ms": 700,
                                     "election_timeout_max_ms": 700})))


@pytest.mark.parametrize("member_keys, field", [
    ({"n2": {"candidate": "no"}}, "cluster.members[1].candidate"),
    ({"n2": {"candidate": 0}}, "cluster.members[1].candidate"),
    ({"n3": {"priority": -1}}, "cluster.members[2].priority"),
    ({"n3": {"priority": 1.5}}, "cluster.members[2].priority"),
    ({"n3": {"priority": "high"}}, "cluster.members[2].priority"),
    ({"n3": {"priority": False}}, "cluster.members[2].priority"),
    ({"n2": {"candidates": False}}, "cluster.members[1].candidates"),
    ({"n1": {"admin": "127.0.0.1:7201"}}, "cluster.members[0].admin"),
    ({m: {"candidate": False} for m in ("n1", "n2", "n3")}, "cluster.members"),
])
def test_a_bad_member_value_names_its_field(member_keys, field):
    error = error_for(leader_doc(member_keys=member_keys))
    assert error.field == field and str(error).startswith(f"{field}: ")


def test_the_initial_leader_is_a_candidate():
    not_n1 = {"n1": {"candidate": False}}
    assert parse_config(leader_doc(member_keys=not_n1), Path(".")).leader.initial_leader == "n2"
    error = error_for(leader_doc(leader={"initial_leader": "n1"}, member_keys=not_n1))
    assert error.field == "leader.initial_leader" and "a candidate member id (n2, n3)" in str(error)
    config = parse_config(leader_doc(leader={"initial_leader": "n3"}, member_keys=not_n1),
                          Path("."))
    assert config.leader.initial_leader == "n3" and config.leader.non_candidates == ("n1",)


def test_members_may_vote_without_being_candidates():
    only_n3 = {"n1": {"candidate": False}, "n2": {"candidate": False}}
    config = parse_config(leader_doc(leader={"election_quorum": 3}, member_keys=only_n3),
                          Path("."))
    assert config.leader.non_candidates == ("n1", "n2") and config.election_quorum == 3


@pytest.mark.parametrize("key, value", [("candidate", True), ("priority", 1)])
def test_candidate_and_priority_need_leader_mode(key, value):
    doc = leader_doc(1, member_keys={"n1": {key: value}})
    doc["cluster"]["mode"] = "standalone"
    error = error_for(doc)
    assert error.field == f"cluster.members[0].{key}"
    assert 'only with cluster.mode = "leader"' in str(error)


def test_leader_settings_need_leader_mode():
    doc = leader_doc(1, leader={"write_quorum": 1})
    doc["cluster"]["mode"] = "standalone"
    error = error_for(doc)
    assert error.field == "leader" and 'need cluster.mode = "leader"' in str(error)
    assert error_for(leader_doc(leader=[1])).field == "leader"     # not a table


def test_the_peer_listener_defaults_to_this_members_peer_address():
    assert str(parse_config(leader_doc(), Path(".")).peer) == "127.0.0.1:7101"
    doc = leader_doc()
    doc["listen"]["peer"] = "127.0.0.1:9101"          # a proxy sits at the member address
    assert str(parse_config(doc, Path(".")).peer) == "127.0.0.1:9101"


def test_whether_acknowledged_writes_may_be_lost_follows_w_plus_q():
    def may_lose(write_quorum, election_quorum, durability="fsync"):
        doc = leader_doc(leader={"write_quorum": write_quorum, "election_quorum": election_quorum})
        doc["storage"] = {"durability": durability}
        return parse_config(doc, Path(".")).may_lose_acknowledged_writes
    assert may_lose(1, 2) and may_lose(2, 1) and not may_lose(2, 2) and not may_lose(1, 3)
    assert may_lose(3, 3, durability="os")
    assert may_lose("majority", 1) and not may_lose("majority", "majority")


def test_a_standalone_node_may_lose_writes_only_with_os_durability():
    for durability, lossy in (("fsync", False), ("os", True)):
        doc = leader_doc(1)
        doc["cluster"]["mode"] = "standalone"
        doc["storage"] = {"durability": durability}
        config = parse_config(doc, Path("."))
        assert config.may_lose_acknowledged_writes is lossy
        assert (config.write_quorum, config.election_quorum) == (1, 1)


# --- the cluster secret ----------------------------------------------------------------------


def test_the_secret_is_read_at_load_without_trailing_whitespace(tmp_path):
    (tmp_path / "cluster.secret").write_bytes(SECRET + b" \n\n")
    config = parse_config(leader_doc(secret_file="cluster.secret"), tmp_path)
    assert config.cluster_secret == SECRET and config.secret_file == tmp_path / "cluster.secret"
    assert SECRET.decode() not in repr(config)


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read"),
    (b"\n", "holds 0 bytes"),
    (b"short\n", "holds 5 bytes"),
    (b"x" * 5000, "larger than"),
])
def test_an_unusable_secret_file_says_how_to_make_one(tmp_path, content, problem):
    path = tmp_path / "cluster.secret"
    if content is not None:
        path.write_bytes(content)
    error = error_for(leader_doc(secret_file="cluster.secret"), tmp_path)
    assert error.field == "cluster.secret_file" and problem in str(error)
    assert f"head -c 32 /dev/urandom | base64 > {path}" in str(error)


def test_a_directory_is_not_a_secret_file(tmp_path):
    (tmp_path / "cluster.secret").mkdir()
    assert error_for(leader_doc(secret_file="cluster.secret"), tmp_path).field == \
        "cluster.secret_file"


def test_standalone_never_reads_the_secret_file(tmp_path):
    doc = leader_doc(1, secret_file="missing.secret")
    doc["cluster"]["mode"] = "standalone"
    config = parse_config(doc, tmp_path)
    assert config.cluster_secret == b""


def test_several_members_may_run_without_a_secret():
    config = parse_config(leader_doc(3), Path("."))
    assert config.secret_file is None and config.cluster_secret == b""


@pytest.mark.parametrize("cluster_keys, leader_section, field", [
    ("", "[leader]\nwrite_quorum = 4\n", "leader.write_quorum"),
    ('secret_file = "nowhere.secret"\n', "", "cluster.secret_file"),
], ids=["write_quorum", "secret_file"])
def test_serve_exits_2_with_one_line_naming_the_field(tmp_path, cluster_keys, leader_section,
                                                      field):
    members = "".join(f'[[cluster.members]]\nid = "n{i}"\npeer = "127.0.0.1:0"\n'
                      f'client = "127.0.0.1:0"\n' for i in (1, 2, 3))
    path = tmp_path / "n1.toml"
    path.write_text('[node]\nid = "n1"\ndata_dir = "d"\n[listen]\nclient = "127.0.0.1:0"\n'
                    'admin = "127.0.0.1:0"\n[cluster]\nid = "c"\nmode = "leader"\n'
                    f"{cluster_keys}{members}{leader_section}")
    done = subprocess.run([sys.executable, "-m", "chorusdb", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and field in lines[0], done.stderr
    assert not (tmp_path / "d").exists()


# --- the configs of chorusdb up ----------------------------------------------------------------


def test_up_writes_three_configs_that_agree(tmp_path):
    paths = up.write_configs(tmp_path, 3, "leader", 0, "os", 2)
    configs = [load_config(path) for path in paths]
    assert [c.node_id for c in configs] == ["n1", "n2", "n3"]
    first = configs[0]
    for config in configs:
        assert (config.cluster_id, config.mode, config.members) == \
            (first.cluster_id, "leader", first.members)
        assert config.write_quorum == 2 and config.leader.initial_leader == "n1"
        assert config.durability == "os" and config.secret_file == tmp_path / "cluster.secret"
        assert config.cluster_secret == first.cluster_secret and len(config.cluster_secret) >= 32
        member = dict(zip(config.member_ids, config.members))[config.node_id]
        assert (member.client, member.peer) == (config.client, config.peer)
        assert config.data_dir == tmp_path / config.node_id
    ports = [a.port for c in configs for a in (c.client, c.peer, c.admin)]
    assert len(set(ports)) == 9 and 0 not in ports
    assert stat.S_IMODE((tmp_path / "cluster.secret").stat().st_mode) == 0o600
    up.write_configs(tmp_path, 3, "leader", 0, "os")          # a rerun keeps the secret
    again = load_config(paths[0])
    assert again.cluster_secret == first.cluster_secret and again.write_quorum == 2


def test_up_with_a_base_port_uses_consecutive_ports(tmp_path):
    base = free_ports(1)[0]
    if not all(up.port_is_free(base + offset + i) for offset in (0, 100, 200) for i in (0, 1)):
        pytest.skip(f"ports near {base} are taken")
    configs = [load_config(p) for p in up.write_configs(tmp_path, 2, "leader", base, "fsync")]
    assert [(c.client.port, c.peer.port, c.admin.port) for c in configs] == \
        [(base, base + 100, base + 200), (base + 1, base + 101, base + 201)]


def test_up_with_one_node_writes_a_standalone_config_without_a_secret(tmp_path):
    (path,) = up.write_configs(tmp_path, 1, "standalone", 0, "fsync")
    config = load_config(path)
    assert config.mode == "standalone" and config.secret_file is None
    assert not (tmp_path / "cluster.secret").exists()


def test_up_refuses_a_data_dir_that_holds_another_cluster(tmp_path):
    up.write_configs(tmp_path, 3, "leader", 0, "fsync")
    up.refuse_another_cluster(tmp_path, "leader", 3)
    up.refuse_another_cluster(tmp_path / "elsewhere", "standalone", 1)
    for mode, count in (("standalone", 1), ("leader", 5)):
        with pytest.raises(SystemExit, match="holds a leader cluster of 3 node"):
            up.refuse_another_cluster(tmp_path, mode, count)


@pytest.mark.parametrize("argv, problem", [
    (["--nodes", "0"], "--nodes"),
    (["--nodes", "3", "--mode", "standalone"], "--nodes"),
    (["--mode", "paxos"], "--mode"),
    (["--write-quorum", "4"], "--write-quorum"),
    (["--nodes", "1", "--write-quorum", "1"], "--write-quorum"),
    (["--base-port", "65400"], "--base-port"),
])
def test_up_flags_are_checked_before_anything_starts(tmp_path, argv, problem, capsys):
    parser = argparse.ArgumentParser()
    up.register(parser.add_subparsers())
    args = parser.parse_args(["up", "--data-dir", str(tmp_path / "data"), *argv])
    assert up.run(args) == up.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"chorusdb up: {problem}")
    assert not (tmp_path / "data").exists()
