"""Differential test through the whole server: random command sequences sent over RESP to a real
``chorusdb serve`` process and to fakeredis, side by side, with equal replies required.

``test_keyspace_vs_fakeredis.py`` covers the command semantics in depth (with virtual time);
this one covers everything between the socket and the keyspace — parsing, dispatch, the
connection-level commands, the group commit, reply ordering and serialisation in both protocol
versions. Expiry is left out here because the two sides read different clocks; TTLs are long,
and TTL replies are compared as "none / missing / some".
"""

from __future__ import annotations

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from conftest import start_node, write_node_config

pytestmark = pytest.mark.process

keys = st.sampled_from([b"a", b"b", b"\x00k\xff"])
values = st.sampled_from([b"", b"0", b"1", b"-7", b"x", b"9223372036854775807", b"\x00\xff"])
integers = st.sampled_from([b"0", b"1", b"-3", b"x", b"9223372036854775807"])
items = st.lists(st.sampled_from([b"i", b"j", b"\x00"]), min_size=1, max_size=3)


def raw_call(connection, words: tuple[bytes, ...]) -> object:
    connection.send_command(*words)
    try:
        return connection.read_response()
    except redis.ResponseError as e:
        return ("error", str(e))


def normalise(words: tuple[bytes, ...], reply: object) -> object:
    name = words[0].upper()
    if name in (b"TTL", b"PTTL") and isinstance(reply, int) and reply > 0:
        return "positive"
    if name == b"KEYS" and isinstance(reply, list):
        return sorted(reply)
    if isinstance(reply, tuple) and reply[0] == "error":
        return ("error", reply[1].split(" ", 1)[0] if "wrong number" not in reply[1] else reply[1])
    return reply


class ServerVersusFakeRedis(RuleBasedStateMachine):
    server: tuple[str, int] = ("127.0.0.1", 0)

    @initialize(protocol=st.sampled_from([2, 3]))
    def connect(self, protocol: int) -> None:
        host, port = self.server
        self.ours = redis.Connection(host=host, port=port, protocol=protocol, socket_timeout=10)
        self.ours.connect()
        self.theirs = fakeredis.FakeRedis(protocol=protocol).connection_pool.get_connection()
        raw_call(self.theirs, (b"FLUSHALL",))
        assert raw_call(self.ours, (b"FLUSHDB",)) == raw_call(self.theirs, (b"FLUSHDB",))

    def teardown(self) -> None:
        if hasattr(self, "ours"):
            self.ours.disconnect()

    def both(self, *words: bytes) -> None:
        ours = normalise(words, raw_call(self.ours, words))
        theirs = normalise(words, raw_call(self.theirs, words))
        assert ours == theirs, f"{words!r}: chorusdb {ours!r} != fakeredis {theirs!r}"

    @rule(key=keys)
    def get(self, key):
        self.both(b"GET", key)

    @rule(key=keys, value=values, options=st.sampled_from(
        [(), (b"NX",), (b"XX",), (b"GET",), (b"EX", b"1000"), (b"NX", b"GET"), (b"KEEPTTL",)]))
    def set(self, key, value, options):
        self.both(b"SET", key, value, *options)

    @rule(key=keys, value=values)
    def setnx_getset(self, key, value):
        self.both(b"SETNX", key, value)
        self.both(b"GETSET", key, value)

    @rule(chosen=st.lists(keys, min_size=1, max_size=4))
    def multi_key(self, chosen):
        self.both(b"MGET", *chosen)
        self.both(b"EXISTS", *chosen)

    @rule(chosen=st.lists(keys, min_size=1, max_size=3))
    def delete(self, chosen):
        self.both(b"DEL", *chosen)

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=3))
    def mset(self, pairs):
        self.both(b"MSET", *[w for pair in pairs for w in pair])

    @rule(key=keys, name=st.sampled_from([b"INCR", b"DECR"]))
    def incr(self, key, name):
        self.both(name, key)

    @rule(key=keys, name=st.sampled_from([b"INCRBY", b"DECRBY"]), amount=integers)
    def incrby(self, key, name, amount):
        self.both(name, key, amount)

    @rule(key=keys, value=values)
    def append(self, key, value):
        self.both(b"APPEND", key, value)
        self.both(b"STRLEN", key)

    @rule(key=keys, name=st.sampled_from([b"TYPE", b"TTL", b"PTTL", b"PERSIST", b"GETDEL"]))
    def key_query(self, key, name):
        self.both(name, key)

    @rule(key=keys, seconds=st.sampled_from([b"1000", b"x"]))
    def expire(self, key, seconds):
        self.both(b"EXPIRE", key, seconds)

    @rule(key=keys, name=st.sampled_from([b"RPUSH", b"LPUSH"]), pushed=items)
    def push(self, key, name, pushed):
        self.both(name, key, *pushed)

    @rule(key=keys, start=st.sampled_from([b"0", b"1", b"-1", b"-2"]),
          stop=st.sampled_from([b"-1", b"0", b"1", b"5"]))
    def lrange(self, key, start, stop):
        self.both(b"LRANGE", key, start, stop)
        self.both(b"LLEN", key)

    @rule(key=keys, name=st.sampled_from([b"LPOP", b"RPOP"]),
          count=st.sampled_from([(), (b"1",), (b"2",), (b"0",)]))
    def pop(self, key, name, count):
        self.both(name, key, *count)

    @rule(pattern=st.sampled_from([b"*", b"a", b"?", b"[ab]"]))
    def keys_and_size(self, pattern):
        self.both(b"KEYS", pattern)
        self.both(b"DBSIZE")

    @rule(word=values)
    def connection_commands(self, word):
        self.both(b"PING")
        self.both(b"ECHO", word)
        self.both(b"SELECT", b"0")

    @rule(name=st.sampled_from([b"GET", b"SET", b"RPUSH", b"INCRBY"]))
    def wrong_arity(self, name):
        self.both(name)


@pytest.fixture(scope="module")
def running_server(tmp_path_factory):
    node = start_node(write_node_config(tmp_path_factory.mktemp("differential"), durability="os"))
    yield node
    node.process.kill()
    node.process.wait()


def test_server_matches_fakeredis(running_server):
    ServerVersusFakeRedis.server = (running_server.host, running_server.port)
    test_case = ServerVersusFakeRedis.TestCase
    test_case.settings = settings(max_examples=60, stateful_step_count=40, derandomize=True,
                                  deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])
    test_case().runTest()
