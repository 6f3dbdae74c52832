"""The smart client's sans-I/O parts: tokens, topology parsing, command classification, the
retry rules and backoff, and the engine's calls driven step by step against a scripted cluster
in virtual time (no sockets, no clock, a seeded random)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from redis.exceptions import (AuthenticationError, ConnectionError, ResponseError, TimeoutError,
                              TryAgainError)

from chorusdb.client import Client
from chorusdb.client.commands import (NON_IDEMPOTENT_COMMANDS, Kind, RequestIds, is_non_idempotent,
                                      kind_of, needs_request_id, new_request_id)
from chorusdb.client.engine import (Call, ClusterState, Exchange, Failed, Finished, Pause,
                                    Unreachable)
from chorusdb.client.errors import ClusterUnavailableError
from chorusdb.client.retry import (Failure, backoff_ms, backoff_ms_first, backoff_ms_max,
                                   classify, should_retry)
from chorusdb.client.settings import ClientSettings, ReadFrom, ReadOptions, member_down_ms
from chorusdb.client.token import ZERO, Token
from chorusdb.client.topology import Member, parse_topology

SEED = 20240601

# --- tokens ---------------------------------------------------------------------------------


def test_tokens_order_by_epoch_then_index():
    assert Token.parse("6:3") > Token.parse("5:900")
    assert Token.parse(b"5:900") > Token.parse("5:899")
    assert max(Token.parse("5:900"), Token.parse("6:3"), ZERO) == Token(6, 3)
    assert str(Token.parse("12:0")) == "12:0"
    assert ZERO == Token.parse("0:0")


@pytest.mark.parametrize("text", ["", "5", "5:", ":3", "a:1", "1:-2", "1:2:3", "-1:2"])
def test_malformed_tokens_are_refused(text):
    with pytest.raises(ValueError):
        Token.parse(text)


# --- topology -------------------------------------------------------------------------------

RESP2_TOPOLOGY = [b"node", b"n2", b"role", b"follower", b"epoch", 7, b"leader", b"n1",
                  b"applied", b"7:120", b"commit", b"7:121", b"lag_entries", 1,
                  b"staleness_ms", 3, b"later_field", b"ignored",
                  b"members", [[b"n3", b"127.0.0.1:7003"], [b"n1", b"127.0.0.1:7001"],
                               [b"n2", b"127.0.0.1:7002"]]]


def test_topology_parses_field_value_pairs_and_sorts_members():
    topology = parse_topology(RESP2_TOPOLOGY)
    assert (topology.node_id, topology.role, topology.epoch, topology.leader_id) == \
        ("n2", "follower", 7, "n1")
    assert (topology.applied, topology.commit) == (Token(7, 120), Token(7, 121))
    assert (topology.lag_entries, topology.staleness_ms) == (1, 3)
    assert [m.node_id for m in topology.members] == ["n1", "n2", "n3"]
    assert topology.leader == Member("n1", "127.0.0.1:7001")
    assert [m.node_id for m in topology.followers] == ["n2", "n3"]


def test_topology_accepts_decoded_strings_and_resp3_maps():
    decoded = [x.decode() if isinstance(x, bytes) else x for x in RESP2_TOPOLOGY[:-1]]
    decoded.append([["n1", "127.0.0.1:7001"]])
    assert parse_topology(decoded).leader == Member("n1", "127.0.0.1:7001")
    as_map = dict(zip(RESP2_TOPOLOGY[::2], RESP2_TOPOLOGY[1::2]))
    assert parse_topology(as_map) == parse_topology(RESP2_TOPOLOGY)


def test_topology_without_a_leader_and_of_a_standalone_node():
    electing = list(RESP2_TOPOLOGY)
    electing[7] = b""
    topology = parse_topology(electing)
    assert topology.leader is None and len(topology.followers) == 3
    standalone = parse_topology([b"node", b"s", b"role", b"standalone", b"epoch", 0,
                                 b"leader", b"s", b"members", [[b"s", b"127.0.0.1:6379"]]])
    assert standalone.leader == Member("s", "127.0.0.1:6379") and standalone.followers == ()


@pytest.mark.parametrize("reply", [b"OK", [b"node"], [b"node", b"n1", b"role", b"leader"],
                                   RESP2_TOPOLOGY[:-1] + [[]],
                                   RESP2_TOPOLOGY[:-1] + [[[b"n1"]]],
                                   RESP2_TOPOLOGY[:4] + [b"epoch", b"x"] + RESP2_TOPOLOGY[6:]])
def test_malformed_topology_is_refused(reply):
    with pytest.raises(ValueError, match="CHORUS.TOPOLOGY|member"):
        parse_topology(reply)


# --- commands -------------------------------------------------------------------------------


def test_command_kinds_come_from_the_server_table():
    assert kind_of(("GET", "k")) is Kind.READ
    assert kind_of((b"lrange", "k", 0, -1)) is Kind.READ
    assert kind_of(("SET", "k", "v")) is Kind.WRITE
    assert kind_of(("FLUSHDB",)) is Kind.WRITE
    for other in (("PING",), ("INFO", "replication"), ("CLIENT SETNAME", "x"),
                  ("CHORUS.WAITPOS", 1, 2, 3), ("NOSUCHCOMMAND",)):
        assert kind_of(other) is Kind.OTHER, other


def test_non_idempotent_writes_get_request_ids():
    for name in NON_IDEMPOTENT_COMMANDS:
        assert kind_of((name, "k", "1")) is Kind.WRITE, name
        assert needs_request_id((name, "k", "1"), RequestIds.NON_IDEMPOTENT), name
    assert needs_request_id(("SET", "k", "v", "GET"), RequestIds.NON_IDEMPOTENT)
    assert needs_request_id(("SET", "k", "v", "ex", 5, "nx"), RequestIds.NON_IDEMPOTENT)
    for idempotent in (("SET", "k", "v"), ("SET", "k", "GET"), ("SET", "k", "v", "XX"),
                       ("DEL", "a", "b"), ("EXPIRE", "k", 10), ("MSET", "a", 1)):
        assert not is_non_idempotent(idempotent), idempotent
        assert not needs_request_id(idempotent, RequestIds.NON_IDEMPOTENT), idempotent
        assert needs_request_id(idempotent, RequestIds.ALL), idempotent


def test_request_ids_are_32_hex_digits_and_differ():
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


# --- failures and backoff -------------------------------------------------------------------


@pytest.mark.parametrize("error, failure", [
    (ResponseError("NOTLEADER n1 127.0.0.1:7001"), Failure.NOT_LEADER),
    (TryAgainError("no leader", status_code="TRYAGAIN"), Failure.TRY_AGAIN),
    (ResponseError("TRYAGAIN switchover"), Failure.TRY_AGAIN),
    (ResponseError("NOQUORUM heard from 1 of 2"), Failure.NO_QUORUM),
    (ResponseError("INDOUBT write timed out"), Failure.IN_DOUBT),
    (ResponseError("WRONGTYPE Operation against a key"), Failure.DEFINITE),
    (ResponseError("ERR syntax error"), Failure.DEFINITE),
    (ConnectionError("refused"), Failure.UNREACHABLE),
    (TimeoutError("timed out"), Failure.UNREACHABLE),
    (AuthenticationError("invalid password"), Failure.DEFINITE),
])
def test_failures_are_classified(error, failure):
    assert classify(error) is failure


def test_retry_rules():
    definite_nothing = (Failure.NOT_LEADER, Failure.TRY_AGAIN, Failure.NO_QUORUM)
    for kind in Kind:
        for has_id in (False, True):
            for failure in definite_nothing:
                assert should_retry(failure, kind, has_id, sent=True)
            assert not should_retry(Failure.DEFINITE, kind, has_id, sent=True)
            assert not should_retry(Failure.DEFINITE, kind, has_id, sent=False)
            assert should_retry(Failure.UNREACHABLE, kind, has_id, sent=False)
    assert should_retry(Failure.IN_DOUBT, Kind.WRITE, True, sent=True)
    assert not should_retry(Failure.IN_DOUBT, Kind.WRITE, False, sent=True)
    assert should_retry(Failure.IN_DOUBT, Kind.READ, False, sent=True)
    # An idempotent write without an id may have been applied: a second SET or DEL after
    # another client's write would undo that write, so it is not sent again.
    assert not should_retry(Failure.UNREACHABLE, Kind.WRITE, False, sent=True)
    assert should_retry(Failure.UNREACHABLE, Kind.WRITE, True, sent=True)
    assert should_retry(Failure.UNREACHABLE, Kind.READ, False, sent=True)
    assert not should_retry(Failure.UNREACHABLE, Kind.OTHER, False, sent=True)


def test_backoff_grows_exponentially_within_bounds():
    rng = random.Random(SEED)
    for attempt in range(1, 40):
        step = min(backoff_ms_max, backoff_ms_first * 2 ** (attempt - 1))
        samples = [backoff_ms(attempt, rng) for _ in range(200)]
        assert step // 2 <= min(samples) and max(samples) <= step, (attempt, SEED)
        assert max(samples) - min(samples) > 0 or step < 2
    assert backoff_ms(1, rng) <= backoff_ms_first
    assert min(backoff_ms(30, rng) for _ in range(50)) >= backoff_ms_max // 2


# --- the engine against a scripted cluster --------------------------------------------------

LEADER, F2, F3 = "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"
ADDRESSES = {"n1": LEADER, "n2": F2, "n3": F3}


def topology_reply(leader: str = "n1", epoch: int = 1, node: str = "n1") -> list[object]:
    return [b"node", node.encode(), b"role", b"leader" if node == leader else b"follower",
            b"epoch", epoch, b"leader", leader.encode(), b"applied", b"1:1", b"commit", b"1:1",
            b"lag_entries", 0, b"staleness_ms", 0,
            b"members", [[n.encode(), a.encode()] for n, a in ADDRESSES.items()]]


Responder = Callable[[Exchange, int], "list[object] | Unreachable"]


class Script:
    """Drives calls in virtual time: answers each Exchange with ``respond`` and records it."""

    def __init__(self, respond: Responder, settings: ClientSettings | None = None,
                 token: Token = ZERO) -> None:
        ids = iter(range(1_000_000))
        self.state = ClusterState([LEADER], settings or ClientSettings(), token,
                                  random.Random(SEED), lambda: f"id{next(ids)}")
        self.respond = respond
        self.now_ms = 1_000
        self.exchanges: list[Exchange] = []
        self.paused_ms = 0

    def run(self, *args: object, read: ReadOptions = ReadOptions(), **options: object):
        call = Call(self.state, args, options, read, self.now_ms)
        for _ in range(10_000):
            action = call.next_action(self.now_ms)
            if isinstance(action, Exchange):
                self.exchanges.append(action)
                call.on_result(self.respond(action, self.now_ms), self.now_ms)
                self.now_ms += 1
            elif isinstance(action, Pause):
                assert action.ms > 0
                self.now_ms += action.ms
                self.paused_ms += action.ms
            elif isinstance(action, Finished):
                return action.value
            else:
                assert isinstance(action, Failed)
                return action.error
        raise AssertionError("the call never ended")

    def requests(self) -> list[Exchange]:
        """The exchanges other than topology requests."""
        return [e for e in self.exchanges if e.commands[0].args[0] != b"CHORUS.TOPOLOGY"]


def healthy(token: bytes = b"1:5", answer: object = b"value") -> Responder:
    """A cluster led by n1 that answers every command."""
    def respond(exchange: Exchange, now_ms: int) -> list[object]:
        names = [c.args[0] for c in exchange.commands]
        if names == [b"CHORUS.TOPOLOGY"]:
            node = next(n for n, a in ADDRESSES.items() if a == exchange.address)
            return [topology_reply(node=node)]
        return [token if n == b"CHORUS.TOKEN" else b"OK" if n == b"CHORUS.WAITPOS" else answer
                for n in names]
    return respond


def test_a_write_learns_the_topology_then_goes_to_the_leader_with_its_token():
    script = Script(healthy(token=b"1:7", answer=b"OK"))
    assert script.run("SET", "k", "v") == b"OK"
    assert [e.commands[0].args for e in script.exchanges] == \
        [(b"CHORUS.TOPOLOGY",), ("SET", "k", "v")]
    write = script.exchanges[1]
    assert write.address == LEADER
    assert [c.args for c in write.commands] == [("SET", "k", "v"), (b"CHORUS.TOKEN",)]
    assert script.state.token == Token(1, 7)


def test_a_non_idempotent_write_goes_as_chorus_once_parsed_by_its_own_name():
    script = Script(healthy(answer=3))
    assert script.run("INCR", "k") == 3
    once = script.requests()[0].commands[0]
    assert once.args == (b"CHORUS.ONCE", "id0", "INCR", "k") and once.callback_name == "INCR"
    assert script.run("SET", "k", "v", "GET", get=True) == 3   # as redis-py sends it
    assert script.requests()[1].commands[0].options == {"get": True}
    assert script.requests()[1].commands[0].args[:2] == (b"CHORUS.ONCE", "id1")


def test_a_read_waits_for_the_session_token_with_its_bounds():
    script = Script(healthy(), token=Token(4, 9))
    read = ReadOptions(ReadFrom.FOLLOWER, max_staleness_ms=200, max_lag_entries=5)
    assert script.run("GET", "k", read=read) == b"value"
    exchange = script.requests()[0]
    assert exchange.address in (F2, F3)
    assert [c.args for c in exchange.commands] == [
        (b"CHORUS.WAITPOS", 4, 9, ClientSettings().session_wait_ms, b"MAXLAG", 5,
         b"MAXSTALENESS", 200),
        ("GET", "k"), (b"CHORUS.TOKEN",)]
    assert script.state.token == Token(4, 9)        # the token never goes back


@pytest.mark.parametrize("read_from, expected", [
    (ReadFrom.LEADER, {LEADER}), (ReadFrom.FOLLOWER, {F2, F3}),
    (ReadFrom.ANY, {LEADER, F2, F3})])
def test_reads_are_spread_per_policy(read_from, expected):
    script = Script(healthy())
    for _ in range(12):
        script.run("GET", "k", read=ReadOptions(read_from))
    served = [e.address for e in script.requests()]
    assert set(served) == expected
    assert all(served.count(a) == 12 // len(expected) for a in expected)   # round robin


def test_follower_reads_fall_back_to_the_leader_when_no_follower_is_up():
    script = Script(healthy())
    script.run("PING")
    script.state.mark_down(F2, script.now_ms)
    script.state.mark_down(F3, script.now_ms)
    script.state.refresh_wanted = False
    script.run("GET", "k", read=ReadOptions(ReadFrom.FOLLOWER))
    assert script.requests()[-1].address == LEADER


def test_a_follower_behind_hands_the_read_to_the_leader_at_once():
    def respond(exchange: Exchange, now_ms: int) -> list[object]:
        if exchange.address != LEADER and exchange.commands[0].args[0] == b"CHORUS.WAITPOS":
            return [TryAgainError("n2 has not applied 1:9", status_code="TRYAGAIN"), b"stale",
                    b"1:3"]
        return healthy(token=b"1:9", answer=b"fresh")(exchange, now_ms)
    script = Script(respond, token=Token(1, 9))
    assert script.run("GET", "k", read=ReadOptions(ReadFrom.FOLLOWER)) == b"fresh"
    assert [e.address for e in script.requests()][-1] == LEADER
    assert len(script.requests()) == 2 and script.paused_ms == 0


def leadership_moves_to_n2(refused: list[object], served: list[object]) -> Responder:
    """n1 leads epoch 1 until a command reaches it: it answers ``refused`` (it was deposed) and
    from then on the topology names n2, at epoch 2, which answers ``served``."""
    moved = {"done": False}

    def respond(exchange: Exchange, now_ms: int) -> list[object]:
        names = [c.args[0] for c in exchange.commands]
        if names == [b"CHORUS.TOPOLOGY"]:
            return [topology_reply(leader="n2" if moved["done"] else "n1", epoch=2 if
                                   moved["done"] else 1)]
        if exchange.address == LEADER:
            moved["done"] = True
            return refused
        return served
    return respond


def test_notleader_refreshes_the_topology_and_retries_at_the_new_leader():
    script = Script(leadership_moves_to_n2([ResponseError(f"NOTLEADER n2 {F2}"), b"1:5"],
                                           [b"OK", b"2:1"]))
    assert script.run("SET", "k", "v") == b"OK"
    assert [e.address for e in script.requests()] == [LEADER, F2]
    assert script.state.token == Token(2, 1)
    assert 0 < script.paused_ms <= backoff_ms_first


def test_a_leader_read_asks_for_linearizability_and_follows_a_refusal_to_the_new_leader():
    refused = ResponseError(f"NOTLEADER n2 {F2}")        # n1 refuses the read, never serves it
    script = Script(leadership_moves_to_n2([refused, refused, b"1:5"],
                                           [b"OK", b"fresh", b"2:1"]))
    assert script.run("GET", "k", read=ReadOptions(ReadFrom.LEADER)) == b"fresh"
    assert [e.address for e in script.requests()] == [LEADER, F2]
    assert all(e.commands[0].args[-1] == b"LINEARIZABLE" for e in script.requests())
    assert script.state.token == Token(2, 1)


def test_a_write_with_an_id_is_retried_with_the_same_id_after_indoubt_and_a_lost_connection():
    replies = iter([[ResponseError("INDOUBT not confirmed"), b"1:4"],
                    Unreachable(ConnectionError("reset"), sent=True),
                    [5, b"1:6"]])

    def respond(exchange: Exchange, now_ms: int):
        if exchange.commands[0].args[0] == b"CHORUS.TOPOLOGY":
            return healthy()(exchange, now_ms)
        return next(replies)
    script = Script(respond)
    assert script.run("INCR", "k") == 5
    ids = {e.commands[0].args[1] for e in script.requests()}
    assert ids == {"id0"} and len(script.requests()) == 3


def test_an_indoubt_write_without_an_id_is_raised():
    def respond(exchange: Exchange, now_ms: int):
        if exchange.commands[0].args[0] == b"CHORUS.TOPOLOGY":
            return healthy()(exchange, now_ms)
        return [ResponseError("INDOUBT not confirmed"), b"1:4"]
    error = Script(respond).run("SET", "k", "v")
    assert isinstance(error, ResponseError) and str(error).startswith("INDOUBT")


def test_definite_errors_are_raised_at_once():
    def respond(exchange: Exchange, now_ms: int):
        if exchange.commands[0].args[0] == b"CHORUS.TOPOLOGY":
            return healthy()(exchange, now_ms)
        return [b"OK", ResponseError("WRONGTYPE Operation against a key"), b"1:4"]
    script = Script(respond)
    error = script.run("LRANGE", "k", 0, -1)
    assert isinstance(error, ResponseError) and "WRONGTYPE" in str(error)
    assert len(script.requests()) == 1 and script.state.token == Token(1, 4)


def test_a_dead_leader_is_marked_down_and_the_topology_asked_elsewhere():
    elected = {"n2": False}

    def respond(exchange: Exchange, now_ms: int):
        if exchange.address == LEADER:
            elected["n2"] = True
            return Unreachable(ConnectionError("refused"), sent=False)
        if exchange.commands[0].args[0] == b"CHORUS.TOPOLOGY":
            return [topology_reply(leader="n2" if elected["n2"] else "n1", node="n3",
                                   epoch=2 if elected["n2"] else 1)]
        return [b"OK", b"2:1"]
    script = Script(respond)
    script.state.observe_topology(parse_topology(topology_reply()), script.now_ms)
    assert script.run("SET", "k", "v") == b"OK"
    assert script.requests()[-1].address == F2
    assert LEADER not in [e.address for e in script.exchanges[1:]]


def test_a_higher_epoch_topology_wins_and_forgets_down_members():
    state = ClusterState([LEADER], ClientSettings())
    state.observe_topology(parse_topology(topology_reply(leader="n2", epoch=3)), 0)
    state.observe_topology(parse_topology(topology_reply(leader="n1", epoch=2)), 5)
    assert state.topology.leader_id == "n2" and not state.needs_refresh(5)
    state.mark_down(F2, 10)
    assert state.leader_address(10) is None and state.needs_refresh(10)
    assert state.leader_address(10 + member_down_ms) == F2
    state.observe_topology(parse_topology(topology_reply(leader="n2", epoch=4)), 20)
    assert state.leader_address(20) == F2


def test_the_topology_is_asked_again_after_topology_refresh_ms():
    script = Script(healthy(), ClientSettings(topology_refresh_ms=1000))
    script.run("GET", "k")
    script.now_ms += 990
    script.run("GET", "k")
    assert sum(e.commands[0].args[0] == b"CHORUS.TOPOLOGY" for e in script.exchanges) == 1
    script.now_ms += 1000
    script.run("GET", "k")
    assert sum(e.commands[0].args[0] == b"CHORUS.TOPOLOGY" for e in script.exchanges) == 2


def test_a_call_gives_up_at_its_deadline_naming_what_it_tried():
    def respond(exchange: Exchange, now_ms: int):
        if exchange.commands[0].args[0] == b"CHORUS.TOPOLOGY":
            return [topology_reply(leader="")]
        raise AssertionError("nothing can be sent without a leader")
    script = Script(respond, ClientSettings(retry_deadline_ms=3000))
    start_ms = script.now_ms
    error = script.run("INCR", "k")
    assert isinstance(error, ClusterUnavailableError)
    assert isinstance(error, ConnectionError)
    assert "INCR (request id id0)" in str(error) and "no leader known" in str(error)
    assert script.now_ms - start_ms <= 3000


def test_no_member_answering_gives_up_too():
    script = Script(lambda exchange, now_ms: Unreachable(ConnectionError("refused"), False),
                    ClientSettings(retry_deadline_ms=2000))
    error = script.run("GET", "k")
    assert isinstance(error, ClusterUnavailableError) and "refused" in str(error)


def test_other_commands_are_not_resent_after_a_lost_connection():
    def respond(exchange: Exchange, now_ms: int):
        if exchange.commands[0].args[0] == b"CHORUS.TOPOLOGY":
            return healthy()(exchange, now_ms)
        return Unreachable(TimeoutError("timed out"), sent=True)
    script = Script(respond)
    error = script.run("CHORUS.SWITCHOVER", "n2")
    assert isinstance(error, TimeoutError) and len(script.requests()) == 1


def test_settings_are_checked():
    with pytest.raises(ValueError, match="socket_timeout_ms"):
        ClientSettings(session_wait_ms=3000, socket_timeout_ms=2500)
    with pytest.raises(ValueError, match="retry_deadline_ms"):
        ClientSettings(retry_deadline_ms=0)
    with pytest.raises(ValueError, match="max_lag_entries"):
        ReadOptions(max_lag_entries=-1)
    with pytest.raises(ValueError, match="hosts"):
        ClusterState("127.0.0.1:7001", ClientSettings())
    with pytest.raises(ValueError, match="host:port"):
        ClusterState(["localhost"], ClientSettings())


def test_views_share_the_session_and_change_only_read_options():
    client = Client(["127.0.0.1:1"], session_token="3:4", read_from="follower")
    view = client.reading(max_staleness_ms=50)
    assert view.read_options == ReadOptions(ReadFrom.FOLLOWER, max_staleness_ms=50)
    assert client.read_options == ReadOptions(ReadFrom.FOLLOWER)
    view.advance_session("5:1")
    assert client.session_token == "5:1"
    client.advance_session("4:99")
    assert view.session_token == "5:1"
    client.close()
