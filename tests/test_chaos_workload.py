"""The chaos harness's clients and verdict: what a reply means for the history (the code the
simulator shares), divergent entries as the node lists them, which missing writes a divergent
table excuses, and a short real run against one ``chorusdb serve`` node judged valid."""

from __future__ import annotations

import random
import signal
import socket
import time

import pytest
import redis
from redis._parsers.base import BaseParser
from rich.console import Console

from chorusdb.chaos.report import judge, parse_divergent, render
from chorusdb.chaos.workload import ChaosWorkload, exchange, reply_value
from chorusdb.core.api import ClientCommand
from chorusdb.core.divergent import item_reply
from chorusdb.core.model import DivergentEntry, LogEntry, Position, PushItems, SetValue
from chorusdb.replies import OK, Error
from chorusdb.sim.runner import claims_of
from chorusdb.sim.workload import ClientLogic
from chorusdb.verify.history import FAIL, INFO, HistoryRecorder

NODES = ("n1", "n2", "n3")
LEADER_CLAIMS = claims_of("leader")


def client_logic(recorder: HistoryRecorder, seed: int = 7) -> ClientLogic:
    processes = iter(range(1, 100))
    return ClientLogic(endpoint="c1", home_node="n1", node_ids=NODES, rng=random.Random(seed),
                       new_process=lambda: next(processes), value_padding_bytes=0)


# --- replies -> outcomes (shared with the simulator) ----------------------------------------


def test_an_acknowledged_write_echoes_its_value_and_a_read_keeps_its_result():
    recorder = HistoryRecorder()
    logic = client_logic(recorder)
    f, command, value = "set", ClientCommand(b"SET", (b"reg-1", b"c1-1")), b"c1-1"
    recorder.invoke(logic.process, f, b"reg-1", value, time=1, node="n1")
    assert logic.record_reply(recorder, f, OK, time=2, node="n1").outcome == "ok"
    recorder.invoke(logic.process, "lrange", b"list-1", time=3, node="n1")
    logic.record_reply(recorder, "lrange", [b"a", b"b"], time=4, node="n1", stale=True)
    ops = recorder.history.operations()
    assert ops[0].output == b"c1-1" and command.args[1] == value
    assert ops[1].output == (b"a", b"b") and ops[1].stale
    assert logic.process == 1 and logic.target == "n1"


def test_a_definite_not_here_fails_and_roams_while_indoubt_is_unknown_under_a_new_process():
    recorder = HistoryRecorder()
    logic = client_logic(recorder)
    expected_roam = random.Random(7).choice(NODES)
    recorder.invoke(1, "rpush", b"list-1", b"c1-1", time=1, node="n1")
    settled = logic.record_reply(recorder, "rpush", Error("NOTLEADER leader is n2"), time=2,
                                 node="n1")
    assert settled.outcome == FAIL and logic.process == 1 and logic.target == expected_roam
    recorder.invoke(1, "set", b"reg-1", b"c1-2", time=3, node=logic.target)
    settled = logic.record_reply(recorder, "set", Error("INDOUBT not confirmed"), time=4,
                                 node=logic.target)
    assert settled.outcome == INFO and logic.process == 2
    recorder.invoke(2, "get", b"reg-1", time=5, node=logic.target)
    logic.record_lost_reply(recorder, time=6, error="timeout", node=logic.target)
    assert logic.process == 3
    assert [o.status for o in recorder.history.operations()] == [FAIL, INFO, INFO]


def test_a_reply_of_the_wrong_shape_is_unknown_and_reported():
    recorder = HistoryRecorder()
    logic = client_logic(recorder)
    recorder.invoke(1, "set", b"reg-1", b"c1-1", time=1, node="n1")
    settled = logic.record_reply(recorder, "set", 3, time=2, node="n1")
    assert settled.outcome == INFO and settled.malformed == "n1 answered set with 3"


def test_redis_py_errors_and_replies_become_the_servers_own_values():
    set_command = ClientCommand(b"SET", (b"k", b"v"))
    get_command = ClientCommand(b"GET", (b"k",))
    assert reply_value(set_command, b"OK") == OK
    assert reply_value(get_command, b"OK") == b"OK"
    for text in ("ERR wrong number of arguments for 'get' command", "TRYAGAIN no leader is known",
                 "NOTLEADER leader is n2 at 127.0.0.1:7002", "INDOUBT write not confirmed"):
        assert reply_value(get_command, BaseParser.parse_error(text)) == Error(text)


def test_a_node_that_does_not_listen_refuses_before_anything_is_sent():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = redis.Connection(host="127.0.0.1", port=port, socket_connect_timeout=1.0)
    result = exchange(connection, ClientCommand(b"GET", (b"k",)))
    assert result.refused and result.lost is None


# --- divergent entries ----------------------------------------------------------------------


def divergent_entry(entry_id: int, index: int, effect: object) -> list:
    return item_reply(DivergentEntry(entry_id, LogEntry(Position(2, index), effect), "n1",
                                     1_700_000_000_000, "n2", True))


def test_divergent_entries_parse_from_the_nodes_own_reply():
    reply = [divergent_entry(1, 7, PushItems(b"list-1", (b"c1-4", b"c2-9"), False)),
             divergent_entry(2, 8, SetValue(b"ctr-1", b"15", 0))]
    first, second = parse_divergent(reply)
    assert first == {"id": 1, "epoch": 2, "index": 7, "leader": "n1",
                     "removed_at_ms": 1_700_000_000_000, "removed_by": "n2", "verified": True,
                     "resolution": "", "resolved_by": "", "resolved_at_ms": 0,
                     "command": b"RPUSH list-1 c1-4 c2-9"}
    assert second["command"] == b"SET ctr-1 15"
    as_map = dict(zip(reply[0][0::2], reply[0][1::2]))
    assert parse_divergent([as_map]) == [first]
    with pytest.raises(ValueError, match="no field 'command'"):
        parse_divergent([reply[0][:-2]])
    with pytest.raises(ValueError):
        parse_divergent(Error("ERR nope"))


# --- which missing writes a divergent table excuses -----------------------------------------


class Run:
    """A hand-written history: client operations, one after another."""

    def __init__(self) -> None:
        self.recorder = HistoryRecorder()
        self.clock = 0
        self.process = 0

    def op(self, f: str, key: bytes, argument: object, result: object = None,
           node: str = "n1") -> None:
        self.process += 1
        self.clock += 10
        self.recorder.invoke(self.process, f, key, argument, time=self.clock, node=node)
        if f in ("set", "rpush"):
            self.recorder.ok(self.process, time=self.clock + 5, node=node)
        else:
            self.recorder.ok(self.process, time=self.clock + 5, value=result, node=node)

    def judge(self, final: dict, divergent: dict, may_lose: bool):
        reads = {node: final for node in NODES}
        digests = {node: "same" for node in NODES}
        return judge(self.recorder.history, reads, digests, "leader", LEADER_CLAIMS,
                     {node: parse_divergent(entries) for node, entries in divergent.items()},
                     may_lose)


def lost_push_run() -> Run:
    run = Run()
    run.op("rpush", b"list-1", b"c1-1")
    run.op("rpush", b"list-1", b"c1-2")
    run.op("lrange", b"list-1", None, (b"c1-1", b"c1-2"), node="n2")   # answered before the loss
    return run


QUARANTINED_PUSH = {"n2": [divergent_entry(4, 3, PushItems(b"list-1", (b"c1-2",), False))]}


def test_a_lost_push_found_in_a_divergent_table_is_excused_only_when_loss_is_allowed():
    final = {b"list-1": (b"c1-1",)}
    excused = lost_push_run().judge(final, QUARANTINED_PUSH, may_lose=True)
    assert excused.valid, excused.witness
    assert excused.allowed == {"lost-writes": 1} and excused.damaged_keys == 1
    (write,) = excused.lost_writes
    assert write.excused and write.destination == "n2 divergent #4 (2:3)"
    promised = lost_push_run().judge(final, QUARANTINED_PUSH, may_lose=False)
    assert not promised.valid and promised.anomalies["lost-writes"] == 1
    (write,) = promised.lost_writes
    assert not write.excused and write.destination == "n2 divergent #4 (2:3)"


def test_a_lost_push_no_table_holds_is_an_anomaly_even_when_loss_is_allowed():
    other = {"n2": [divergent_entry(4, 3, PushItems(b"list-1", (b"c9-9",), False))]}
    verdict = lost_push_run().judge({b"list-1": (b"c1-1",)}, other, may_lose=True)
    assert not verdict.valid and verdict.anomalies["lost-writes"] == 1
    (write,) = verdict.lost_writes
    assert not write.excused and write.destination == "silently gone"
    console = Console(record=True, width=160)
    render(verdict, console, [("faults", "2 partitions [n1] | [n2 n3]")])
    text = console.export_text()
    assert "silently gone" in text and "INVALID" in text and "[n1] | [n2 n3]" in text


def counter_run() -> Run:
    run = Run()
    run.op("incrby", b"ctr-1", 10, 10)
    run.op("incrby", b"ctr-1", 5, 15)
    return run


def test_a_counter_shortfall_is_excused_by_the_set_of_the_lost_increments_result():
    matching = {"n1": [divergent_entry(1, 2, SetValue(b"ctr-1", b"15", 0))]}
    verdict = counter_run().judge({b"ctr-1": b"10"}, matching, may_lose=True)
    assert verdict.valid, verdict.witness
    (write,) = verdict.lost_writes
    assert write.excused and "result" in write.what and write.where[0].entry_id == 1
    unrelated = {"n1": [divergent_entry(1, 2, SetValue(b"ctr-1", b"99", 0))]}
    verdict = counter_run().judge({b"ctr-1": b"10"}, unrelated, may_lose=True)
    assert not verdict.valid and verdict.lost_writes[0].destination == "silently gone"


def test_a_missing_register_is_excused_by_its_quarantined_set():
    run = Run()
    run.op("set", b"reg-1", b"c1-1")
    holding = {"n3": [divergent_entry(9, 2, SetValue(b"reg-1", b"c1-1", 0))]}
    verdict = run.judge({}, holding, may_lose=True)
    assert verdict.valid, verdict.witness
    assert verdict.lost_writes[0].destination == "n3 divergent #9 (2:2)"
    assert not run.judge({}, holding, may_lose=False).valid


# --- a real run -------------------------------------------------------------------------------


@pytest.mark.process
def test_a_short_real_run_through_a_pause_against_one_node_is_judged_valid(node):
    addresses = {"n1": (node.host, node.port)}
    recorder = HistoryRecorder()
    workload = ChaosWorkload(addresses, recorder, random.Random(2024), clients=4, timeout_s=0.5)
    workload.start()
    time.sleep(1.0)
    node.process.send_signal(signal.SIGSTOP)       # every command in flight times out
    workload.note("nemesis", "pause", node="n1")
    time.sleep(1.0)
    node.process.send_signal(signal.SIGCONT)
    workload.note("nemesis", "resume", node="n1")
    time.sleep(0.5)
    workload.stop()
    counts = workload.counts()
    assert counts["ok"] > 100 and counts["info"] > 0, counts
    assert set(workload.keys().values()) == {"register", "list", "counter"}
    reads = workload.final_reads(addresses)
    assert set(reads["n1"]) == set(workload.keys())
    digests = workload.digests(addresses)
    assert len(digests["n1"]) >= 16 and not digests["n1"].startswith(("error", "no digest"))
    divergent = redis.Redis(host=node.host, port=node.port).execute_command(
        "CHORUS.DIVERGENT", "LIST", "ALL")
    verdict = judge(recorder.history, reads, digests, "standalone", claims_of("standalone"),
                    {"n1": parse_divergent(divergent)}, may_lose=False,
                    problems=workload.malformed_replies)
    assert verdict.valid, verdict.witness
    assert set(verdict.anomalies) == {"linearizability", "list-append", "lost-writes",
                                      "convergence", "session"}
    assert [note.f for note in recorder.history.notes()] == ["pause", "resume"]
