"""Differential test: random command sequences against a ``Keyspace`` and against fakeredis.

A hypothesis state machine sends the same commands to both, over three keys and a handful of
values so that types collide (INCR on "x", GET on a list, ...), with TTLs on a virtual clock
that both sides read, and asserts equal replies, and after every step equal data (type, value
and time to live of every key). The keyspace is driven the way a core drives
it: ``execute``, then ``apply`` each effect at the next log index; after every step the writes
from ``take_changes`` must keep a mirror of storage equal to memory, and at the end a replica
that replays the log must hold the same data.

fakeredis reads ``time.time()`` in its command loop; the machine swaps that module attribute
for the virtual clock while it runs. Times are multiples of 250 ms (exact in binary floating
point, which fakeredis computes expiry in), and a remaining TTL is never an odd multiple of
500 ms, where fakeredis's ``round`` (half to even) and Redis's ``(ms + 500) / 1000`` differ.

Cases where fakeredis disagrees with Redis 7 are left out (Redis is followed; the unit tests
in ``test_keyspace.py`` cover them):

- SET, SETEX with a non-positive time: fakeredis says "invalid expire time in set", Redis
  "invalid expire time in 'set' command";
- EXPIRE and friends with a time equal to now: Redis deletes the key at once
  (``checkAlreadyExpired`` is ``when <= now``), fakeredis keeps it for that millisecond;
  times before now are compared;
- DECRBY -9223372036854775808: Redis answers "decrement would overflow";
- MSET with an odd number of arguments: fakeredis reports a scripting error;
- FLUSHDB SYNC (Redis 6.2+): fakeredis calls it a syntax error;
- PSETEX with milliseconds that are not whole seconds: fakeredis truncates the expiry;
- EXPIRE with both GT and LT: Redis has its own error text for that pair;
- EXPIRE with an unknown option *and* a bad time: Redis checks options first;
- SET with conflicting options and an invalid time: Redis reports the conflict first;
- SCAN cursors are opaque and differ (fakeredis sorts): only whole iterations are compared,
  and KEYS replies are compared as sets (both orders are unspecified in Redis).
"""

from __future__ import annotations

import fakeredis
import fakeredis._socket._base as fakeredis_socket
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chorusdb.core.api import ClientCommand
from chorusdb.core.commands import COMMANDS, check_arity
from chorusdb.core.keyspace import Keyspace
from chorusdb.core.model import ClearRecords, DeleteKeys, DeleteRecord, PutRecord, Record
from chorusdb.replies import Error, Simple

START_MS = 1_700_000_000_000
TTL_STEP_MS = 250

keys = st.sampled_from([b"a", b"b", b"c"])
values = st.sampled_from([
    b"", b"0", b"1", b"-1", b"10", b"x", b"007", b"-0", b"9223372036854775807",
    b"-9223372036854775808", b"\x00\xff",
])
integers = st.sampled_from([
    b"0", b"1", b"-1", b"7", b"9223372036854775807", b"-9223372036854775807", b"x", b"01",
    b"+1", b" 1", b"",
])
items = st.lists(st.sampled_from([b"i", b"j", b"", b"\x00"]), min_size=1, max_size=3)
# Milliseconds whose remainder modulo 1000 is 0, 250 or 750 (see the module docstring).
ttl_ms = st.sampled_from([ms for ms in range(TTL_STEP_MS, 6001, TTL_STEP_MS) if ms % 1000 != 500])
ttl_seconds = st.integers(1, 6)
expire_amounts = st.one_of(ttl_seconds, st.just(-1))
patterns = st.sampled_from([b"*", b"a", b"?", b"[ab]", b"[^a]", b"*[a-b]*", b"c*", b"\\a", b""])


class _VirtualTime:
    """Stands in for the ``time`` module inside fakeredis's command loop."""

    def __init__(self, machine: KeyspaceVersusFakeRedis) -> None:
        self.machine = machine

    def time(self) -> float:
        return self.machine.now_ms / 1000


def _normalise(reply: object) -> object:
    """Our reply in the shape redis-py gives fakeredis's (response callbacks removed)."""
    if isinstance(reply, Simple):
        return reply.text.encode()
    if isinstance(reply, Error):
        return ("error", reply.text[4:] if reply.text.startswith("ERR ") else reply.text)
    if isinstance(reply, list):
        return [_normalise(element) for element in reply]
    return reply


class KeyspaceVersusFakeRedis(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now_ms = START_MS
        self.saved_time = fakeredis_socket.time
        fakeredis_socket.time = _VirtualTime(self)  # type: ignore[assignment]
        self.redis = fakeredis.FakeRedis(server=fakeredis.FakeServer(), protocol=2,
                                         decode_responses=False)
        self.redis.response_callbacks.clear()
        self.keyspace = Keyspace({})
        self.log: list[object] = []
        self.storage: dict[bytes, Record] = {}

    def teardown(self) -> None:
        fakeredis_socket.time = self.saved_time  # type: ignore[assignment]
        replica = Keyspace({})
        for version, effect in enumerate(self.log, start=1):
            replica.apply(effect, version)
        assert replica.digest(self.now_ms) == self.keyspace.digest(self.now_ms)

    # --- driving both sides ---------------------------------------------------------------

    def ours(self, *words: bytes) -> object:
        command = ClientCommand(words[0].upper(), words[1:])
        assert check_arity(COMMANDS[command.name], len(words))
        reply, effects = self.keyspace.execute(command, self.now_ms)
        for effect in effects:
            self.log.append(effect)
            self.keyspace.apply(effect, len(self.log))
        return _normalise(reply)

    def theirs(self, *words: bytes) -> object:
        try:
            return self.redis.execute_command(*words)
        except redis.ResponseError as error:
            return ("error", str(error))

    def both(self, *words: bytes) -> object:
        ours = self.ours(*words)
        theirs = self.theirs(*words)
        assert ours == theirs, f"{words!r}: keyspace {ours!r}, fakeredis {theirs!r}"
        return ours

    # --- strings --------------------------------------------------------------------------

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        self.both(b"GET", key)

    @rule(key=keys, value=values,
          condition=st.sampled_from([(), (b"NX",), (b"XX",)]),
          get=st.booleans(),
          expiry=st.one_of(
              st.just(()), st.just((b"KEEPTTL",)),
              ttl_seconds.map(lambda s: (b"EX", b"%d" % s)),
              ttl_ms.map(lambda ms: (b"PX", b"%d" % ms)),
              ttl_seconds.map(lambda s: (b"EXAT", b"%d" % (START_MS // 1000 + s))),
              ttl_ms.map(lambda ms: (b"PXAT", b"%d" % (START_MS + ms))),
              st.just((b"EX", b"x")),
          ),
          order=st.permutations(range(3)))
    def set(self, key: bytes, value: bytes, condition: tuple[bytes, ...], get: bool,
            expiry: tuple[bytes, ...], order: list[int]) -> None:
        groups = [condition, (b"GET",) if get else (), expiry]
        options = [word for index in order for word in groups[index]]
        self.both(b"SET", key, value, *options)

    @rule(key=keys, value=values, options=st.sampled_from([
        (b"NX", b"XX"), (b"KEEPTTL", b"EX", b"5"), (b"EX", b"5", b"PX", b"250"),
        (b"EXAT", b"1", b"KEEPTTL"), (b"FOO",), (b"EX",),
    ]))
    def set_with_bad_options(self, key: bytes, value: bytes, options: tuple[bytes, ...]) -> None:
        self.both(b"SET", key, value, *options)

    @rule(key=keys, value=values)
    def setnx(self, key: bytes, value: bytes) -> None:
        self.both(b"SETNX", key, value)

    @rule(key=keys, seconds=ttl_seconds, value=values)
    def setex(self, key: bytes, seconds: int, value: bytes) -> None:
        self.both(b"SETEX", key, b"%d" % seconds, value)

    # fakeredis truncates a PSETEX expiry to whole seconds; Redis keeps the milliseconds.
    @rule(key=keys, milliseconds=ttl_seconds.map(lambda s: s * 1000), value=values)
    def psetex(self, key: bytes, milliseconds: int, value: bytes) -> None:
        self.both(b"PSETEX", key, b"%d" % milliseconds, value)

    @rule(key=keys, value=values)
    def getset(self, key: bytes, value: bytes) -> None:
        self.both(b"GETSET", key, value)

    @rule(key=keys)
    def getdel(self, key: bytes) -> None:
        self.both(b"GETDEL", key)

    @rule(chosen=st.lists(keys, min_size=1, max_size=4))
    def mget(self, chosen: list[bytes]) -> None:
        self.both(b"MGET", *chosen)

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=3))
    def mset(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.both(b"MSET", *[word for pair in pairs for word in pair])

    @rule(key=keys, name=st.sampled_from([b"INCR", b"DECR"]))
    def incr(self, key: bytes, name: bytes) -> None:
        self.both(name, key)

    @rule(key=keys, name=st.sampled_from([b"INCRBY", b"DECRBY"]), amount=integers)
    def incrby(self, key: bytes, name: bytes, amount: bytes) -> None:
        self.both(name, key, amount)

    @rule(key=keys, value=values)
    def append(self, key: bytes, value: bytes) -> None:
        self.both(b"APPEND", key, value)

    @rule(key=keys)
    def strlen(self, key: bytes) -> None:
        self.both(b"STRLEN", key)

    # --- keys and expiry ------------------------------------------------------------------

    @rule(chosen=st.lists(keys, min_size=1, max_size=4))
    def delete(self, chosen: list[bytes]) -> None:
        self.both(b"DEL", *chosen)

    @rule(chosen=st.lists(keys, min_size=1, max_size=4))
    def exists(self, chosen: list[bytes]) -> None:
        self.both(b"EXISTS", *chosen)

    @rule(key=keys, seconds=expire_amounts, options=st.sampled_from([
        (), (b"NX",), (b"XX",), (b"GT",), (b"LT",), (b"xx", b"gt"), (b"XX", b"LT"),
        (b"NX", b"XX"), (b"GT", b"NX"), (b"FOO",),
    ]))
    def expire(self, key: bytes, seconds: int, options: tuple[bytes, ...]) -> None:
        self.both(b"EXPIRE", key, b"%d" % seconds, *options)

    @rule(key=keys, milliseconds=ttl_ms,
          options=st.sampled_from([(), (b"GT",), (b"LT",), (b"NX",)]))
    def pexpire(self, key: bytes, milliseconds: int, options: tuple[bytes, ...]) -> None:
        self.both(b"PEXPIRE", key, b"%d" % milliseconds, *options)

    @rule(key=keys, offset_seconds=st.sampled_from([-2, -1, 1, 2, 3, 5, 8]))
    def expireat(self, key: bytes, offset_seconds: int) -> None:
        self.both(b"EXPIREAT", key, b"%d" % (self.now_ms // 1000 + offset_seconds))

    @rule(key=keys, offset_ms=st.one_of(ttl_ms, st.just(-250)))
    def pexpireat(self, key: bytes, offset_ms: int) -> None:
        self.both(b"PEXPIREAT", key, b"%d" % (self.now_ms + offset_ms))

    @rule(key=keys, name=st.sampled_from([b"TTL", b"PTTL", b"PERSIST", b"TYPE"]))
    def key_query(self, key: bytes, name: bytes) -> None:
        self.both(name, key)

    @rule(pattern=patterns)
    def keys_matching(self, pattern: bytes) -> None:
        ours = self.ours(b"KEYS", pattern)
        theirs = self.theirs(b"KEYS", pattern)
        assert isinstance(ours, list) and isinstance(theirs, list)
        assert sorted(ours) == sorted(theirs), pattern

    @rule(options=st.lists(st.sampled_from([
        (b"MATCH", b"[ab]"), (b"MATCH", b"*"), (b"COUNT", b"1"), (b"COUNT", b"2"),
        (b"TYPE", b"string"), (b"TYPE", b"LIST"),
    ]), max_size=2))
    def scan(self, options: list[tuple[bytes, bytes]]) -> None:
        words = [word for option in options for word in option]
        assert sorted(self.scan_all(self.ours, words)) == sorted(
            self.scan_all(self.theirs, words))

    @staticmethod
    def scan_all(send: object, words: list[bytes]) -> list[bytes]:
        cursor = b"0"
        found: list[bytes] = []
        for _ in range(100):
            reply = send(b"SCAN", cursor, *words)  # type: ignore[operator]
            assert isinstance(reply, list), reply
            cursor, batch = reply
            found.extend(batch)
            if cursor == b"0":
                return found
        raise AssertionError("SCAN did not finish")

    @rule(options=st.sampled_from([(), (), (), (b"ASYNC",), (b"NOW",)]))
    def dbsize_or_flushdb(self, options: tuple[bytes, ...]) -> None:
        self.both(b"DBSIZE")
        if options:
            self.both(b"FLUSHDB", *options)

    # --- lists ----------------------------------------------------------------------------

    @rule(key=keys, name=st.sampled_from([b"RPUSH", b"LPUSH"]), pushed=items)
    def push(self, key: bytes, name: bytes, pushed: list[bytes]) -> None:
        self.both(name, key, *pushed)

    @rule(key=keys, start=st.sampled_from([b"0", b"1", b"-1", b"-3", b"5", b"x"]),
          stop=st.sampled_from([b"0", b"-1", b"2", b"-5", b"100"]))
    def lrange(self, key: bytes, start: bytes, stop: bytes) -> None:
        self.both(b"LRANGE", key, start, stop)

    @rule(key=keys)
    def llen(self, key: bytes) -> None:
        self.both(b"LLEN", key)

    @rule(key=keys, name=st.sampled_from([b"LPOP", b"RPOP"]),
          count=st.sampled_from([(), (b"0",), (b"1",), (b"2",), (b"9",), (b"-1",), (b"x",)]))
    def pop(self, key: bytes, name: bytes, count: tuple[bytes, ...]) -> None:
        self.both(name, key, *count)

    # --- time and reclamation -------------------------------------------------------------

    @rule(seconds=st.integers(1, 4))
    def advance_clock(self, seconds: int) -> None:
        self.now_ms += seconds * 1000

    @rule()
    def reclaim_expired_keys(self) -> None:
        """The core's active expiry cycle: invisible to clients, so replies stay equal."""
        expired = self.keyspace.expired_keys(self.now_ms, 2)
        if expired:
            self.log.append(DeleteKeys(expired))
            self.keyspace.apply(DeleteKeys(expired), len(self.log))

    @invariant()
    def same_data(self) -> None:
        """Every key has the same type, value and time to live on both sides after every step."""
        for key in (b"a", b"b", b"c"):
            kind = self.both(b"TYPE", key)
            if kind == b"string":
                self.both(b"GET", key)
            elif kind == b"list":
                self.both(b"LRANGE", key, b"0", b"-1")
            self.both(b"PTTL", key)

    @invariant()
    def storage_mirrors_memory(self) -> None:
        for write in self.keyspace.take_changes():
            if isinstance(write, ClearRecords):
                self.storage.clear()
            elif isinstance(write, PutRecord):
                self.storage[write.key] = write.record
            else:
                assert isinstance(write, DeleteRecord)
                self.storage.pop(write.key, None)
        assert self.storage == self.keyspace._records


KeyspaceVersusFakeRedis.TestCase.settings = settings(
    derandomize=True, max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestKeyspaceVersusFakeRedis = KeyspaceVersusFakeRedis.TestCase
