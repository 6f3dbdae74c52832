"""``chorusdb divergent`` and ``chorusdb switchover``: their flags, what they send, how they
render the replies and what they tell the user when something is wrong; and the test
``chorusdb up`` uses to know its cluster takes writes.

No cluster runs: each "node" is a fake RESP server on loopback that answers canned replies
(encoded by the server's own ``wire.resp``), so the replies go through redis-py's parsing as
real ones do. A port that is bound but not listening stands for a node that is down.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

import hiredis
import pytest
from rich.console import Console

from chorusdb.cli import divergent, switchover, up
from chorusdb.cli.divergent import DivergentItem, NodeEntries, entry_table, list_table, utc_time
from chorusdb.cli.main import build_parser
from chorusdb.replies import OK, Error, Simple
from chorusdb.wire.resp import encode_reply

T0 = 1_700_000_000_000            # 2023-11-14 22:13:20 UTC
shutdown_poll_s = 0.02            # how often a fake node checks whether it is to stop
USER = "alice"


def item_reply(entry_id: int, **fields) -> list:
    """One entry as CHORUS.DIVERGENT answers it: field names and values, alternating."""
    item = {"id": entry_id, "epoch": 3, "index": 40 + entry_id, "leader": b"n1",
            "removed_at_ms": T0, "removed_by": b"n2", "verified": 1, "resolution": b"",
            "resolved_by": b"", "resolved_at_ms": 0,
            "command": f"SET k{entry_id} v PXAT {T0 + 5000}".encode(), **fields}
    return [word for name, value in item.items() for word in (name.encode(), value)]


class FakeNode(socketserver.ThreadingTCPServer):
    """Answers each command with ``replies[words]`` (words as sent, decoded), ``+OK`` to any
    other (redis-py's CLIENT SETINFO on connect); ``received`` keeps every command."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, replies: dict[tuple[str, ...], object]) -> None:
        super().__init__(("127.0.0.1", 0), _FakeNodeHandler)
        self.replies = replies
        self.received: list[tuple[str, ...]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    @property
    def commands(self) -> list[tuple[str, ...]]:
        """What was received besides redis-py's own connection set-up."""
        return [words for words in self.received if words[0].upper() != "CLIENT"]


class _FakeNodeHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        reader = hiredis.Reader()
        while data := self.request.recv(65536):
            reader.feed(data)
            while (command := reader.gets()) is not False:
                words = tuple(word.decode() for word in command)
                self.server.received.append(words)
                self.request.sendall(encode_reply(self.server.replies.get(words, OK), 2))


@contextmanager
def fake_nodes(*replies: dict[tuple[str, ...], object]):
    """One fake node per reply table; yields them."""
    with ExitStack() as stack:
        nodes = []
        for table in replies:
            node = stack.enter_context(FakeNode(table))
            threading.Thread(target=node.serve_forever, args=(shutdown_poll_s,),
                             daemon=True).start()
            stack.callback(node.shutdown)
            nodes.append(node)
        yield nodes


@pytest.fixture
def down():
    """The address of a node that is down: bound, not listening, so connecting is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{bound.getsockname()[1]}"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    """Tables one row per line, whatever terminal runs the tests; a known operator."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("USER", USER)
    monkeypatch.delenv("REDISCLI_AUTH", raising=False)


def run(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return args.func(args)


def words_of(text: str) -> str:
    return " ".join(text.split())


def rendered(table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


LIST_PENDING = ("CHORUS.DIVERGENT", "LIST", "PENDING")
LIST_ALL = ("CHORUS.DIVERGENT", "LIST", "ALL")


# --- parsing an entry --------------------------------------------------------------------------


def test_an_entry_is_parsed_from_its_field_value_array():
    item = DivergentItem.from_reply(item_reply(7, verified=0, resolution=b"discarded",
                                               resolved_by=b"bob@db1", resolved_at_ms=T0 + 1))
    assert item == DivergentItem(7, 3, 47, "n1", T0, "n2", False, "discarded", "bob@db1",
                                 T0 + 1, f"SET k7 v PXAT {T0 + 5000}")
    assert item.status == "discarded"
    assert DivergentItem.from_reply(item_reply(1)).status == "pending"
    extra = item_reply(2) + [b"shard", b"x"]           # fields this version does not know
    assert DivergentItem.from_reply(extra).id == 2


@pytest.mark.parametrize("reply, problem", [
    (item_reply(1)[:-2], "no field 'command'"),
    (item_reply(1)[:-1], "field names and values"),
    (b"OK", "field names and values"),
    (item_reply(1, epoch=b"three"), "invalid literal"),
])
def test_an_unreadable_entry_is_a_value_error(reply, problem):
    with pytest.raises(ValueError, match=problem):
        DivergentItem.from_reply(reply)


def test_times_are_shown_in_utc_and_zero_as_not_yet():
    assert utc_time(T0 + 7) == "2023-11-14 22:13:20.007"
    assert utc_time(0) == "-"


# --- divergent list ----------------------------------------------------------------------------


def test_list_table_has_one_row_per_entry_and_per_node_it_could_not_ask():
    pending = DivergentItem.from_reply(item_reply(2, leader=b""))
    discarded = DivergentItem.from_reply(item_reply(1, verified=0, resolution=b"discarded"))
    text = rendered(list_table([NodeEntries("127.0.0.1:7001", (pending, discarded)),
                                NodeEntries("127.0.0.1:7003", problem="unreachable")],
                               include_resolved=True))
    lines = [words_of(line) for line in text.splitlines() if line.strip()]
    assert lines[0] == "divergent entries"
    assert lines[1] == ("node id position leader removed at (UTC) removed by verified resolution "
                        "command")
    assert lines[3:] == [
        f"127.0.0.1:7001 1 3:41 n1 2023-11-14 22:13:20.000 n2 no discarded SET k1 v PXAT "
        f"{T0 + 5000}",
        f"127.0.0.1:7001 2 3:42 ? 2023-11-14 22:13:20.000 n2 yes pending SET k2 v PXAT "
        f"{T0 + 5000}",
        "127.0.0.1:7003 unreachable - - - - - - -"]


def test_a_command_with_brackets_is_shown_as_it_is():
    item = DivergentItem.from_reply(item_reply(1, command=b"SET [bold]k[/bold] v"))
    assert "SET [bold]k[/bold] v" in rendered(list_table([NodeEntries("n:1", (item,))], False))
    assert "SET [bold]k[/bold] v" in rendered(entry_table("n:1", item))


def test_list_asks_every_node_and_shows_the_ones_it_cannot_reach(down, capsys):
    with fake_nodes({LIST_PENDING: [item_reply(1), item_reply(2)]},
                    {LIST_PENDING: []},
                    {LIST_PENDING: Error("ERR unknown command 'CHORUS.DIVERGENT'")}) as nodes:
        addresses = [node.address for node in nodes]
        assert run("divergent", "list", "--nodes", ",".join([*addresses, down])) == 1
        assert [node.commands for node in nodes] == [[LIST_PENDING]] * 3
    out, err = capsys.readouterr()
    rows = [words_of(line) for line in out.splitlines() if line.strip()][3:]
    assert [row.split()[:3] for row in rows] == [
        [addresses[0], "1", "3:41"], [addresses[0], "2", "3:42"], [addresses[2], "error", "-"],
        [down, "unreachable", "-"]]
    assert "pending divergent entries" in out
    assert (f"chorusdb divergent list: {addresses[2]} answered: ERR unknown command "
            f"'CHORUS.DIVERGENT'; is it a leader-mode node of this version?") in err
    assert f"chorusdb divergent list: cannot reach {down}" in err
    assert "is the node running?" in err


def test_list_all_asks_for_resolved_entries_too_and_says_when_there_are_none(capsys):
    with fake_nodes({LIST_ALL: []}, {LIST_ALL: []}) as nodes:
        assert run("divergent", "list", "--all",
                   "--nodes", ",".join(node.address for node in nodes)) == 0
        assert [node.commands for node in nodes] == [[LIST_ALL]] * 2
    assert capsys.readouterr().out.strip() == "no divergent entries on 2 node(s)"


def test_a_reply_this_version_cannot_read_is_an_error_row(capsys):
    with fake_nodes({LIST_PENDING: [item_reply(1)[:-2]]}) as (node,):
        assert run("divergent", "list", "--nodes", node.address) == 1
    out, err = capsys.readouterr()
    assert f"{node.address} error" in words_of(out)
    assert "sent a reply this version cannot read: the entry has no field 'command'" in err


# --- divergent show, reapply, discard ------------------------------------------------------------


def test_show_prints_every_field_and_what_can_be_done(capsys):
    show = ("CHORUS.DIVERGENT", "SHOW", "4")
    with fake_nodes({show: item_reply(4, verified=0)}) as (node,):
        assert run("divergent", "show", "4", "--node", node.address) == 0
        assert node.commands == [show]
    out = words_of(capsys.readouterr().out)
    assert f"divergent entry 4 on {node.address}" in out
    for row in ("│ position │ 3:44 │", "│ written by leader │ n1 │",
                "│ removed at (UTC) │ 2023-11-14 22:13:20.000 │", "│ removed by the log of │ n2 │",
                "│ verified │ no: removed by a snapshot install;", "│ resolution │ pending │",
                "│ resolved by │ - │", "│ resolved at (UTC) │ - │",
                f"│ command │ SET k4 v PXAT {T0 + 5000} │"):
        assert row in out, row
    assert f"reapply: chorusdb divergent reapply 4 --node {node.address}" in out
    assert f"discard: chorusdb divergent discard 4 --node {node.address} --yes" in out


def test_show_of_a_resolved_entry_offers_nothing_more(capsys):
    show = ("CHORUS.DIVERGENT", "SHOW", "4")
    resolved = item_reply(4, resolution=b"reapplied", resolved_by=b"bob@db1",
                          resolved_at_ms=T0 + 60_000)
    with fake_nodes({show: resolved}) as (node,):
        assert run("divergent", "show", "4", "--node", node.address) == 0
    out = words_of(capsys.readouterr().out)
    assert "│ resolution │ reapplied │" in out and "│ resolved by │ bob@db1 │" in out
    assert "│ resolved at (UTC) │ 2023-11-14 22:14:20.000 │" in out
    assert "reapply:" not in out and "discard:" not in out


def test_an_error_reply_is_shown_as_sent_with_what_to_do_next(capsys):
    show = ("CHORUS.DIVERGENT", "SHOW", "9")
    with fake_nodes({show: Error("ERR no divergent entry 9")}) as (node,):
        assert run("divergent", "show", "9", "--node", node.address) == 1
    assert capsys.readouterr().err.strip() == (
        f"chorusdb divergent show: {node.address} answered: ERR no divergent entry 9; see the "
        f"node's entries with 'chorusdb divergent list --all --nodes {node.address}'")


def test_reapply_prints_the_writes_reply(capsys):
    reapply = ("CHORUS.DIVERGENT", "REAPPLY", "4")
    with fake_nodes({reapply: Simple("OK")}) as (node,):
        assert run("divergent", "reapply", "4", "--node", node.address) == 0
        assert node.commands == [reapply]
    assert capsys.readouterr().out.strip() == \
        f"entry 4 on {node.address} reapplied; the write answered: OK"


def test_a_reapply_in_doubt_warns_against_reapplying_blindly(capsys):
    reapply = ("CHORUS.DIVERGENT", "REAPPLY", "4")
    with fake_nodes({reapply: Error("INDOUBT the write was not confirmed in time")}) as (node,):
        assert run("divergent", "reapply", "4", "--node", node.address) == 1
    err = capsys.readouterr().err
    assert "answered: INDOUBT the write was not confirmed in time; the write may still have " \
           "been applied: look at its key before you reapply the entry again" in err


@pytest.mark.parametrize("reply, shown", [
    (3, "(integer) 3"), (None, "(nil)"), ([b"a", 2, None], "[a, (integer) 2, (nil)]"),
    (b"v", "v")])
def test_replies_are_described_as_redis_cli_shows_them(reply, shown):
    assert divergent.describe(reply) == shown


def test_discard_without_yes_refuses_and_sends_nothing(capsys):
    with fake_nodes({}) as (node,):
        assert run("divergent", "discard", "4", "--node", node.address) == divergent.EXIT_USAGE
        assert node.received == []
    err = capsys.readouterr().err
    assert err.startswith(f"chorusdb divergent discard: discarding entry 4 on {node.address} "
                          "gives its write up for good")
    assert err.strip().endswith(f"look at it with 'chorusdb divergent show 4 --node "
                                f"{node.address}', then add --yes")


def test_discard_with_yes_records_who_did_it(capsys):
    who = f"{USER}@{socket.gethostname()}"
    discard = ("CHORUS.DIVERGENT", "DISCARD", "4", who)
    with fake_nodes({discard: OK}) as (node,):
        assert run("divergent", "discard", "4", "--node", node.address, "--yes") == 0
        assert node.commands == [discard]
    assert capsys.readouterr().out.strip() == f"entry 4 on {node.address} discarded by {who}"


def test_a_node_that_is_down_is_reported_not_a_crash(down, capsys):
    assert run("divergent", "reapply", "4", "--node", down) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"chorusdb divergent reapply: cannot reach {down}")
    assert "'chorusdb up' starts a local one" in err


def test_an_authentication_error_asks_for_the_password(capsys):
    show = ("CHORUS.DIVERGENT", "SHOW", "1")
    with fake_nodes({show: Error("NOAUTH Authentication required.")}) as (node,):
        assert run("divergent", "show", "1", "--node", node.address) == 1
    assert "answered: NOAUTH Authentication required.; pass the nodes' clients.requirepass " \
           "with --password" in capsys.readouterr().err


def test_the_password_is_sent_before_the_command(monkeypatch):
    monkeypatch.setenv("REDISCLI_AUTH", "s3cret")
    with fake_nodes({LIST_PENDING: []}) as (node,):
        assert run("divergent", "list", "--nodes", node.address) == 0
        assert node.received[0] == ("AUTH", "s3cret")


@pytest.mark.parametrize("argv", [
    ["divergent"],
    ["divergent", "show", "4"],                                   # --node is required
    ["divergent", "show", "x4", "--node", "127.0.0.1:7001"],
    ["divergent", "reapply", "-1", "--node", "127.0.0.1:7001"],
    ["divergent", "discard", "4", "--node", "127.0.0.1"],
    ["divergent", "list", "--nodes", "127.0.0.1:7001,127.0.0.1:x"],
    ["divergent", "list", "--nodes", ","],
    ["divergent", "purge"],
])
def test_bad_divergent_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "usage: chorusdb divergent" in capsys.readouterr().err


def test_divergent_list_defaults_to_the_local_cluster():
    args = build_parser().parse_args(["divergent", "list"])
    assert args.nodes == up.local_client_addresses() == \
        ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    assert not args.all and args.password is None


# --- switchover ----------------------------------------------------------------------------------


INFO = ("INFO", "replication")


def info_reply(role: str, leader: str = "", link: str = "up") -> bytes:
    """An INFO replication section with the fields the switchover command reads."""
    if role == "leader":
        lines = ["role:master", "chorus_role:leader"]
    else:
        host, _, port = (leader or "?:0").rpartition(":")
        lines = ["role:slave", f"master_host:{host}", f"master_port:{port}",
                 f"master_link_status:{link}", f"chorus_role:{role}"]
    return ("# Replication\r\n" + "".join(f"{line}\r\n" for line in lines)).encode()


def test_switchover_goes_to_the_node_that_leads(capsys):
    handed = Simple("OK leadership handed to n2 at epoch 7")
    with fake_nodes({INFO: info_reply("follower")},
                    {INFO: info_reply("leader"), ("CHORUS.SWITCHOVER", "n2"): handed}) as nodes:
        follower, leader = nodes
        assert run("switchover", "--to", "n2",
                   "--node", f"{follower.address},{leader.address}") == 0
        assert follower.commands == [INFO]
        assert leader.commands == [INFO, ("CHORUS.SWITCHOVER", "n2")]
    assert capsys.readouterr().out.strip() == "OK leadership handed to n2 at epoch 7"


def test_switchover_finds_the_leader_a_follower_follows_and_passes_the_timeout(down, capsys):
    with fake_nodes({("CHORUS.SWITCHOVER", "n3", "2500"): Simple("OK leadership handed to n3 "
                                                                 "at epoch 4")}) as (leader,):
        with fake_nodes({INFO: info_reply("follower", leader.address, link="down")},
                        {INFO: info_reply("follower", leader.address)}) as followers:
            nodes = ",".join([down, *(f.address for f in followers)])
            assert run("switchover", "--to", "n3", "--node", nodes, "--timeout-ms", "2500") == 0
        assert leader.commands == [("CHORUS.SWITCHOVER", "n3", "2500")]
    assert "handed to n3" in capsys.readouterr().out


@pytest.mark.parametrize("reply, step", [
    (Error("TRYAGAIN n2 did not catch up within 5000 ms"),
     "nothing changed; run it again, or with a --timeout-ms longer than the time n2 needs to "
     "catch up"),
    (Error("ERR n2 is not a candidate"),
     "check that n2 is a member and a candidate that is up ('chorusdb status')"),
])
def test_a_refused_switchover_says_what_to_do_next(reply, step, capsys):
    with fake_nodes({INFO: info_reply("leader"), ("CHORUS.SWITCHOVER", "n2"): reply}) as (node,):
        assert run("switchover", "--to", "n2", "--node", node.address) == 1
    assert capsys.readouterr().err.strip() == (
        f"chorusdb switchover: the leader at {node.address} answered: {reply.text}; {step}")


def test_switchover_without_a_leader_sends_nothing(down, capsys):
    with fake_nodes({INFO: info_reply("candidate", link="down")}) as (node,):
        assert run("switchover", "--to", "n2", "--node", f"{node.address},{down}") == 1
        assert node.commands == [INFO]
    err = capsys.readouterr().err
    assert err.startswith(f"chorusdb switchover: no leader among {node.address}, {down}; "
                          f"cannot reach {down}")
    assert "if an election is under way, try again in a moment" in err
    assert run("switchover", "--to", "n2", "--node", down) == 1
    assert "is the cluster running? ('chorusdb up' starts a local one" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["switchover"],
    ["switchover", "--to", "n2", "--timeout-ms", "0"],
    ["switchover", "--to", "n2", "--timeout-ms", "soon"],
    ["switchover", "--to", "n2", "--node", "localhost"],
])
def test_bad_switchover_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "usage: chorusdb switchover" in capsys.readouterr().err


def test_switchover_defaults_to_the_local_cluster_and_the_leaders_timeout():
    args = build_parser().parse_args(["switchover", "--to", "n2"])
    assert args.node == up.local_client_addresses() and args.timeout_ms is None
    assert switchover.reply_wait_s_max > 5     # longer than the default switchover timeout


# --- chorusdb up: when the cluster takes writes -----------------------------------------------


def status(role: str, position: int, commit: int) -> dict:
    return {"role": role, "position": {"epoch": 2, "index": position},
            "commit_position": {"epoch": 2 if commit else 0, "index": commit}}


@pytest.mark.parametrize("document, writable", [
    (status("leader", 1, 1), True),           # the new epoch's first entry is committed
    (status("leader", 1, 0), False),          # elected, not yet followed by a quorum
    (status("standalone", 0, 0), True),
    (status("follower", 1, 1), False),
    (status("candidate", 0, 0), False),
    ({}, False),                              # not answering
])
def test_up_waits_for_a_leader_whose_commit_reached_its_log_end(document, writable):
    assert up.is_writable(document) is writable


def local_nodes(*clients: str) -> list[up.LocalNode]:
    return [up.LocalNode(f"n{i + 1}", Path(f"n{i + 1}.toml"), Path(f"n{i + 1}.log"), None,
                         client=client) for i, client in enumerate(clients)]


def failover_commands(nodes: list[up.LocalNode], roles: list[str]) -> list[str]:
    console = Console(record=True, width=40)          # narrower than the lines: never wrapped
    up.show_failover_commands(console, nodes,
                              {node.node_id: {"role": role} for node, role in zip(nodes, roles)})
    return console.export_text().splitlines()


def test_up_shows_the_failover_commands_with_the_flags_they_need():
    assert failover_commands(local_nodes(*up.local_client_addresses()),
                             ["follower", "follower", "leader"]) == [
        "divergent writes: chorusdb divergent list",
        "hand leadership over: chorusdb switchover --to n2"]
    assert failover_commands(local_nodes("127.0.0.1:9001", "127.0.0.1:9002"),
                             ["leader", "follower"]) == [
        "divergent writes: chorusdb divergent list --nodes 127.0.0.1:9001,127.0.0.1:9002",
        "hand leadership over: chorusdb switchover --to n2 --node 127.0.0.1:9001,127.0.0.1:9002"]
    assert failover_commands(local_nodes("127.0.0.1:7001"), ["leader"]) == \
        ["divergent writes: chorusdb divergent list --nodes 127.0.0.1:7001"]
