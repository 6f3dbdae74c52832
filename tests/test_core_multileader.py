"""Multi-leader core scenarios: a few cores, an in-test network that delivers (or drops) every
message each round, and an in-memory store per node so that a restart recovers what was
persisted. Virtual time advances by one pull interval per round."""

from __future__ import annotations

import random

import pytest

from chorusdb.core.api import ClientCommand, CoreConfig
from chorusdb.core.causal import LWW, RESOLVER, Version
from chorusdb.core.leader import LeaderCore
from chorusdb.core.multileader import (
    MultiLeaderCore,
    MultiLeaderSettings,
    clock_samples_per_peer,
    parse_vector,
    pull_sources,
)
from chorusdb.core.multileader_keyspace import KeyPolicy
from chorusdb.core.standalone import StandaloneCore
from chorusdb.replies import Error, Simple
from chorusdb.storage.memory_store import MemoryStore

OK = Simple("OK")
START_MS = 1_000_000


def longest(versions: tuple[Version, ...]) -> bytes | None:
    """A deterministic resolver: the longest value, ties by value."""
    values = [v.value for v in versions if v.value is not None]
    return max(values, key=lambda value: (len(value), value)) if values else None


class Cluster:
    def __init__(self, members: tuple[str, ...], settings: MultiLeaderSettings | None = None,
                 bugs: frozenset[str] = frozenset()) -> None:
        self.members = members
        self.settings = settings or MultiLeaderSettings()
        self.bugs = bugs
        self.now_ms = START_MS
        self.clock_skew_ms = {m: 0 for m in members}
        self.stores = {m: MemoryStore() for m in members}
        self.cores = {m: self._start(m) for m in members}
        self.cut: set[str] = set()           # nodes whose messages are dropped both ways
        self._request_ids = iter(range(1, 10**9))
        self._outbox: list[object] = []      # messages of Readys taken by ``call``
        self.run(len(members) + 1)           # a node takes writes once it heard every member

    def _start(self, member: str) -> MultiLeaderCore:
        config = CoreConfig(member, self.members, bugs=self.bugs, settings=self.settings)
        return MultiLeaderCore(config, self.stores[member].recover(), random.Random(member),
                               self.clock(member))

    def clock(self, member: str) -> int:
        return self.now_ms + self.clock_skew_ms[member]

    def restart(self, member: str) -> None:
        """Start ``member`` again from its store and let it hear from its peers."""
        self.cores[member] = self._start(member)
        self.run(len(self.members) + 1)

    def _drain(self, member: str) -> list[object]:
        core = self.cores[member]
        messages: list[object] = []
        while core.has_ready():
            ready = core.ready()
            self.stores[member].commit(ready.writes)
            messages += ready.messages
            core.advance(ready)
            if not (ready.writes or ready.messages or ready.replies):
                break
        return messages

    def run(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            self.now_ms += self.settings.pull_interval_ms
            inbox, self._outbox = self._outbox, []
            for member, core in self.cores.items():
                core.tick(self.clock(member))
                inbox += self._drain(member)
            for message in inbox:
                if message.source not in self.cut and message.target not in self.cut:
                    self.cores[message.target].step(message, self.clock(message.target))

    def call(self, member: str, *words: bytes) -> object:
        request_id = next(self._request_ids)
        core = self.cores[member]
        core.propose(ClientCommand(words[0].upper(), tuple(words[1:])), request_id,
                     self.clock(member))
        ready = core.ready()
        self.stores[member].commit(ready.writes)
        self._outbox += ready.messages
        core.advance(ready)
        (reply,) = [r.value for r in ready.replies if r.request_id == request_id]
        return reply

    def everywhere(self, *words: bytes) -> list[object]:
        return [self.call(member, *words) for member in self.members]

    def digests(self) -> set[object]:
        return set(self.everywhere(b"CHORUS.DIGEST"))


THREE = ("a", "b", "c")


@pytest.mark.parametrize("topology", ["all", "star", "ring"])
def test_writes_on_every_node_reach_every_node_in_each_topology(topology):
    cluster = Cluster(("a", "b", "c", "d"), MultiLeaderSettings(topology=topology))
    for member in cluster.members:
        assert cluster.call(member, b"SET", b"from-" + member.encode(), member.encode()) == OK
    cluster.run(12)
    for member in cluster.members:
        assert cluster.everywhere(b"GET", b"from-" + member.encode()) == [member.encode()] * 4
    assert len(cluster.digests()) == 1
    vectors = {tuple(core.status()["vector"].items()) for core in cluster.cores.values()}
    assert vectors == {(("a", 1), ("b", 1), ("c", 1), ("d", 1))}


def test_pull_sources_follow_the_topology():
    members = ("a", "b", "c", "d")
    assert pull_sources("b", members, "all") == ("a", "c", "d")
    assert pull_sources("a", members, "star") == ("b", "c", "d")
    assert pull_sources("c", members, "star") == ("a",)
    assert pull_sources("a", members, "ring") == ("d",)
    assert pull_sources("c", members, "ring") == ("b",)


def test_concurrent_writes_become_siblings_and_a_context_write_replaces_exactly_those():
    cluster = Cluster(THREE)
    cluster.call("a", b"SET", b"k", b"base")
    cluster.run()
    cluster.call("a", b"SET", b"k", b"from-a")
    cluster.call("b", b"SET", b"k", b"from-b")
    cluster.run()
    context, versions = cluster.call("c", b"CHORUS.SIBLINGS", b"k")
    assert sorted(value for _, _, value in versions) == [b"from-a", b"from-b"]
    assert len(set(cluster.everywhere(b"GET", b"k"))) == 1       # the same winner everywhere
    # A third concurrent write on a, made before a sees the merge, survives the merge.
    cluster.call("a", b"SET", b"k", b"from-a-again")
    assert cluster.call("c", b"CHORUS.SETCTX", b"k", context, b"merged") == OK
    cluster.run()
    siblings = cluster.everywhere(b"CHORUS.SIBLINGS", b"k")
    assert len({repr(s) for s in siblings}) == 1
    assert sorted(value for _, _, value in siblings[0][1]) == [b"from-a-again", b"merged"]
    assert cluster.cores["a"].counters["conflicts"] >= 1
    assert len(cluster.digests()) == 1


def test_a_context_write_keeps_an_earlier_sibling_of_its_own_origin_it_did_not_see():
    cluster = Cluster(THREE)
    cluster.call("a", b"SET", b"k", b"a1")
    cluster.call("b", b"SET", b"k", b"b1")
    cluster.run()
    # A client saw only b's version and writes through a with that context: a1 must stay.
    context_b_only = b"b:%d" % cluster.cores["b"].vector.get("b")
    assert parse_vector(context_b_only) is not None
    cluster.call("a", b"CHORUS.SETCTX", b"k", context_b_only, b"replaces-b1")
    cluster.run()
    _, versions = cluster.call("c", b"CHORUS.SIBLINGS", b"k")
    assert sorted(value for _, _, value in versions) == [b"a1", b"replaces-b1"]


def test_lww_keeps_the_greatest_stamp_and_records_the_conflict():
    settings = MultiLeaderSettings(policies=(KeyPolicy(b"last:", LWW),))
    cluster = Cluster(THREE, settings)
    cluster.call("a", b"SET", b"last:k", b"older")
    cluster.now_ms += 5
    cluster.call("b", b"SET", b"last:k", b"newer")
    cluster.run()
    assert cluster.everywhere(b"GET", b"last:k") == [b"newer"] * 3
    assert all(len(cluster.call(m, b"CHORUS.SIBLINGS", b"last:k")[1]) == 1 for m in THREE)
    conflicts = cluster.call("a", b"CHORUS.CONFLICTS")
    assert conflicts and conflicts[0][0] == b"last:k" and conflicts[0][1] == b"lww"
    assert conflicts[0][3].startswith(b"b:")


def test_a_node_whose_clock_runs_ahead_refuses_lww_writes_only():
    settings = MultiLeaderSettings(policies=(KeyPolicy(b"last:", LWW),), clock_offset_ms_max=500)
    cluster = Cluster(THREE, settings)
    cluster.clock_skew_ms["a"] = 2_000
    cluster.run(clock_samples_per_peer)     # the samples from before the jump age out
    refused = cluster.call("a", b"SET", b"last:k", b"v")
    assert isinstance(refused, Error) and refused.text.startswith("TRYAGAIN")
    assert cluster.call("a", b"SET", b"kept:k", b"v") == OK      # siblings keys need no clock
    assert cluster.call("b", b"SET", b"last:k", b"v") == OK      # b is not ahead of a majority
    cluster.clock_skew_ms["a"] = 0
    cluster.run(cluster.settings.peer_heard_recently_ms // cluster.settings.pull_interval_ms)
    assert cluster.call("a", b"SET", b"last:k", b"w") == OK


def test_the_resolver_policy_shows_what_the_function_picks_on_every_node():
    settings = MultiLeaderSettings(policies=(KeyPolicy(b"doc:", RESOLVER, longest),))
    cluster = Cluster(THREE, settings)
    cluster.call("a", b"SET", b"doc:1", b"short")
    cluster.call("b", b"SET", b"doc:1", b"much longer")
    cluster.call("c", b"SET", b"doc:1", b"medium")
    cluster.run()
    assert cluster.everywhere(b"GET", b"doc:1") == [b"much longer"] * 3


def test_counters_add_up_and_event_lists_read_the_same_everywhere():
    cluster = Cluster(THREE)
    assert cluster.call("a", b"INCRBY", b"n", b"5") == 5
    assert cluster.call("b", b"INCRBY", b"n", b"7") == 7
    assert cluster.call("c", b"DECR", b"n") == -1
    for member in THREE:
        cluster.call(member, b"RPUSH", b"events", member.encode() + b"1", member.encode() + b"2")
    cluster.run()
    assert cluster.everywhere(b"GET", b"n") == [b"11"] * 3
    lists = cluster.everywhere(b"LRANGE", b"events", b"0", b"-1")
    assert lists[0] == lists[1] == lists[2] and sorted(lists[0]) == [
        b"a1", b"a2", b"b1", b"b2", b"c1", b"c2"]
    assert lists[0].index(b"a1") + 1 == lists[0].index(b"a2")   # one RPUSH stays together
    assert cluster.everywhere(b"LLEN", b"events") == [6] * 3


def test_a_tombstone_stays_until_every_member_has_it_then_goes():
    cluster = Cluster(THREE)
    cluster.call("a", b"SET", b"k", b"v")
    cluster.run()
    cluster.cut = {"c"}
    assert cluster.call("a", b"DEL", b"k") == 1
    cluster.run(20)
    assert cluster.call("a", b"EXISTS", b"k") == 0
    assert cluster.cores["a"].status()["tombstones_pending"] == 1    # c has not got it
    cluster.cut = set()
    cluster.run(20)
    assert [core.status()["tombstones_pending"] for core in cluster.cores.values()] == [0, 0, 0]
    assert [len(core.keyspace) for core in cluster.cores.values()] == [0, 0, 0]
    assert len(cluster.digests()) == 1


def test_the_early_tombstone_bug_forgets_before_the_cut_member_has_it():
    cluster = Cluster(THREE, bugs=frozenset({"tombstone_removed_early"}))
    cluster.call("a", b"SET", b"k", b"v")
    cluster.run()
    cluster.cut = {"c"}
    cluster.call("a", b"DEL", b"k")
    cluster.run(10)
    assert len(cluster.cores["a"].keyspace) == 0


def test_a_restart_continues_the_sequence_and_the_checkpoints():
    cluster = Cluster(THREE)
    cluster.call("a", b"SET", b"k1", b"1")
    cluster.run()
    cluster.restart("a")
    assert cluster.cores["a"].vector.get("a") == 1
    cluster.call("a", b"SET", b"k2", b"2")
    cluster.restart("b")
    cluster.run()
    assert cluster.everywhere(b"GET", b"k2") == [b"2"] * 3
    assert cluster.cores["b"].counters["writes_pulled"] == 1     # from its checkpoint on
    assert len(cluster.digests()) == 1


def test_without_a_persisted_sequence_a_restarted_node_writes_are_skipped_by_its_peers():
    cluster = Cluster(THREE, bugs=frozenset({"sequence_not_persisted"}))
    cluster.call("a", b"SET", b"k1", b"1")
    cluster.run()
    cluster.restart("a")
    cluster.call("a", b"SET", b"k2", b"2")
    cluster.run()
    assert cluster.call("b", b"GET", b"k2") is None          # a:1 again: b thinks it has it


def test_commands_outside_the_mode_are_refused_with_what_is_supported():
    cluster = Cluster(THREE)
    reply = cluster.call("a", b"LPUSH", b"l", b"x")
    assert isinstance(reply, Error) and "not supported in multi-leader mode" in reply.text
    reply = cluster.call("a", b"SET", b"k", b"v", b"EX", b"10")
    assert isinstance(reply, Error) and "SET key value" in reply.text
    cluster.call("a", b"INCR", b"n")
    assert cluster.call("a", b"SET", b"n", b"x").text.startswith("WRONGTYPE")
    reply = cluster.call("a", b"CHORUS.SETCTX", b"k", b"nonsense", b"v")
    assert isinstance(reply, Error) and "origin:seq" in reply.text


@pytest.mark.parametrize("core_class", [StandaloneCore, LeaderCore])
def test_other_modes_answer_the_multi_leader_commands_with_an_error(core_class):
    from chorusdb.core.model import ZERO_POSITION, RecoveredState
    core = core_class(CoreConfig("a", ("a",)), RecoveredState({}, {}, ZERO_POSITION),
                      random.Random(1), START_MS)
    core.propose(ClientCommand(b"CHORUS.SIBLINGS", (b"k",)), 1, START_MS)
    if core_class is LeaderCore:
        for step in range(40):
            core.tick(START_MS + step * 100)
            ready = core.ready()
            core.advance(ready)
            if ready.replies:
                break
    else:
        ready = core.ready()
    (reply,) = [r.value for r in ready.replies if r.request_id == 1]
    assert isinstance(reply, Error) and "multi-leader" in reply.text
