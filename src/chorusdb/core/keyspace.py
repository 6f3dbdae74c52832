"""The data of one node and the semantics of every data command, as Redis 7 defines them.

A ``Keyspace`` is a dict of key -> ``Record`` plus three indexes, and it separates deciding from
doing, so that every replication mode can put a log (and a quorum) in between:

- ``execute(command, now_ms)`` runs a data command against the current state *without changing
  it* and returns ``(reply, effects)``. Reads return no effects. A write returns the logical
  effects that carry it out (``core.model``); a write that fails, or that Redis would not
  propagate to its replicas (DEL of a missing key, PERSIST of a key without a TTL, an EXPIRE
  refused by NX/XX/GT/LT, LPOP of a missing key, ...), returns none.
- ``apply(effect, version)`` changes the state; ``version`` (the log index of the entry) is
  stored in the record. A core applies the effects of one command in order before it executes
  the next command; a follower applies the same effects from its log. ``EpochStart`` (the
  first entry of a leader's epoch) changes nothing: applying it is a no-op, and the core counts
  its entry as applied like any other.
- ``take_changes()`` hands the rows changed since the last call to storage, coalesced.

Effects are deterministic on their own: time is decided by ``execute`` and never by ``apply``.

- Expiry is absolute: ``EXPIRE k 10`` at ``now_ms`` becomes ``SetExpiry(k, now_ms + 10_000)``,
  ``SET k v EX 10`` a ``SetValue`` with that expiry, and an expiry that is already in the past
  becomes ``DeleteKeys`` (Redis deletes the key at once). ``INCR``, ``APPEND`` and the list
  commands keep the key's expiry; ``SET`` (without KEEPTTL), ``GETSET`` and ``MSET`` clear it.
- ``INCR`` is replicated as the value it produced, ``APPEND`` as the whole new value.
- ``PushItems(key, items, left)`` carries the items in the order the command named them; each is
  pushed in turn, so ``LPUSH k a b c`` applies as ``(c, b, a) + old`` and ``RPUSH`` as
  ``old + (a, b, c)``. ``PopItems`` never asks for more items than the list holds, and a list
  that becomes empty is deleted.
- A key whose expiry has passed is *missing* for every command (lazy expiry), but its record
  stays until the core reclaims it (``expired_keys`` -> ``DeleteKeys``). ``apply`` cannot know
  that the record it finds is dead, so a push onto an expired key is preceded by a
  ``DeleteKeys`` of it; every other write onto an expired key replaces the record whole.

A key is expired when ``now_ms > expire_at_ms`` (Redis's ``keyIsExpired``), so a key set to
expire at ``now_ms`` still exists for that millisecond; EXPIRE with a time ``<= now_ms`` deletes
(Redis's ``checkAlreadyExpired``).

Indexes kept beside the records, all updated by ``apply``:

- ``_changed``: keys changed since ``take_changes``, in order of first change, and whether a
  FLUSHDB happened (then the batch starts with ``ClearRecords``).
- ``_expiry_heap``: ``(expire_at_ms, key)`` for every key given an expiry; entries are not
  removed when a key's expiry changes, they are recognised as stale when they no longer match
  the record, and the heap is rebuilt when stale entries outnumber live ones. ``expired_keys``
  and ``live_count`` only look at the expired part of the heap, never at the whole keyspace.
- the SCAN order: every key gets a sequence number when it is created (a key deleted and
  created again gets a new one), and ``SCAN``'s cursor is the sequence number to continue from.
  A key that exists during a whole iteration is returned exactly once; keys created during an
  iteration may or may not be, as in Redis. The order is creation order, so it is deterministic;
  KEYS answers in the same order. Deleted keys leave a hole that is compacted away once holes
  outnumber keys, which keeps ``SCAN COUNT n`` at O(n + log N).

Glob patterns (KEYS, SCAN MATCH) follow Redis's ``stringmatchlen`` byte for byte: ``*``, ``?``,
``[abc]``, ``[^abc]``, ``[a-z]`` (with Redis's reversed ranges and signed-char comparisons),
``\\x`` escapes, unterminated classes, the empty key that only the empty pattern matches, and
the limit of 1000 nested ``*``. A pattern compiles to a regular expression whose ``*`` segments
are atomic groups, which matches in O(len(key) * len(pattern)) like Redis's own matcher (no
backtracking blow-up on hostile patterns).

Remembered requests (``CHORUS.ONCE request_id command ...``, exactly-once writes for clients
that retry): the wrapped write runs as usual and, when it has effects, they go into one
``Request`` effect that also remembers ``request_id`` with the encoded reply until
``now_ms + request_remembered_ms``, so the write and the memory of it are one log entry. A
retry with the same id, on this node or on any node that applied the entry (a new leader after
a failover too), answers the remembered reply and has no effects. A wrapped command that fails
or changes nothing is not remembered: its retry runs again, harmlessly.

- The table lives in storage as ordinary STRING records under ``REQUEST_KEY_PREFIX +
  request_id`` (the value is the encoded reply, the expiry the request's), so recovery, snapshots
  and ``take_changes`` carry it like the data; here the records sit in ``_requests``, apart from
  ``_records``, so no data command, count or digest sees them. ``items()`` returns both.
- A write whose effects would touch a key starting with the prefix is refused.
- Expired requests are reclaimed like expired keys: ``expired_keys`` returns their keys too
  (from a heap of their own, so ``live_count`` and ``expiring_count`` count user keys only)
  and ``DeleteKeys`` removes them. FLUSHDB keeps the table.
- Replies are encoded with msgpack (``encode_reply``): bulk strings, integers, nulls and arrays
  as themselves, ``Simple`` and ``Error`` as extension values; a write's reply has no other type.

Integers follow Redis's ``string2ll``: optional ``-``, no ``+``, no spaces, no leading zeros,
no ``-0``, signed 64-bit.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from chorusdb import limits
from chorusdb.core.api import ClientCommand
from chorusdb.core.commands import COMMANDS, DATA_CATEGORIES, resolve
from chorusdb.core.model import (
    NO_EXPIRY,
    ClearRecords,
    DeleteKeys,
    DeleteRecord,
    Effect,
    EpochStart,
    FlushAll,
    Kind,
    PopItems,
    PushItems,
    PutRecord,
    Record,
    Request,
    SetExpiry,
    SetValue,
    Write,
)
from chorusdb.replies import (
    INCR_OVERFLOW,
    NOT_AN_INTEGER,
    OK,
    SYNTAX_ERROR,
    WRONGTYPE,
    Error,
    Simple,
    wrong_arity,
)

# --- bounds ----------------------------------------------------------------------------------

list_items_max = limits.list_range_items_max
"""Items one list may hold: a whole list always fits in one LRANGE reply, and the record that
storage rewrites on every push stays bounded. Redis has no such bound (beyond memory)."""
glob_patterns_cached_max = 256          # compiled KEYS / SCAN MATCH patterns kept
glob_star_nesting_max = 1000            # Redis's stringmatchlen recursion bound
expiry_heap_stale_entries_slack = 1024  # stale heap entries tolerated before a rebuild
scan_holes_slack = 1024                 # holes in the SCAN order tolerated before compaction
scan_visits_per_count = 10              # SCAN visits at most COUNT * this slots (Redis's bound)
request_remembered_ms = 10 * 60 * 1000  # how long CHORUS.ONCE remembers a request's reply
request_id_bytes_max = 64               # a CHORUS.ONCE request id (16 random bytes in hex: 32)

REQUEST_KEY_PREFIX = b"\xffchorus:request:"
"""Storage keys of the remembered requests: this prefix, then the request id."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
_INT64_DIGITS_MAX = 20                  # len("-9223372036854775808")

# --- error replies beyond those in chorusdb.replies (Redis 7's texts) ------------------------

DECREMENT_OVERFLOW = Error("ERR decrement would overflow")
MUST_BE_POSITIVE = Error("ERR value is out of range, must be positive")
INVALID_CURSOR = Error("ERR invalid cursor")
STRING_TOO_LONG = Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
EXPIRE_NX_CONFLICT = Error("ERR NX and XX, GT or LT options at the same time are not compatible")
EXPIRE_GT_LT_CONFLICT = Error("ERR GT and LT options at the same time are not compatible")
# ChorusDB's own bounds (Redis has none):
LIST_TOO_LONG = Error(f"ERR list would exceed the maximum of {list_items_max} items")
TOO_MANY_KEYS = Error(f"ERR KEYS would return more than {limits.keys_reply_items_max} keys, "
                      "use SCAN")
BAD_REQUEST_ID = Error(f"ERR CHORUS.ONCE request id must be 1 to {request_id_bytes_max} bytes")
RESERVED_KEY = Error(f"ERR keys starting with {REQUEST_KEY_PREFIX.decode('latin-1')!r} are "
                     "reserved for CHORUS.ONCE's request table")


def not_a_wrapped_write(name: bytes) -> Error:
    return Error(f"ERR CHORUS.ONCE wraps a data write command (SET, INCR, RPUSH, ...), not "
                 f"'{name.decode('utf-8', 'replace').lower()[:128]}'")


def invalid_expire_time(command_name: str) -> Error:
    return Error(f"ERR invalid expire time in '{command_name}' command")


def unsupported_option(option: bytes) -> Error:
    return Error(f"ERR Unsupported option {option.decode('utf-8', 'replace')}")


_INVALID_EXPIRE_TIME = {
    name: invalid_expire_time(name)
    for name in ("set", "setex", "psetex", "expire", "pexpire", "expireat", "pexpireat")
}

_STRING = Kind.STRING
_LIST = Kind.LIST
_TYPE_NAMES = {_STRING: b"string", _LIST: b"list"}
_TYPE_REPLIES = {_STRING: Simple("string"), _LIST: Simple("list")}
_TYPE_NONE = Simple("none")
_NO_EFFECTS: tuple[Effect, ...] = ()
_FLUSH_ALL = FlushAll()
_SECOND_MS = 1000
_ONCE = b"CHORUS.ONCE"


# --- remembered replies ----------------------------------------------------------------------

_REPLY_SIMPLE_TAG = 1
_REPLY_ERROR_TAG = 2
_WRITE_REPLY_LEAF_TYPES = frozenset({bytes, int, type(None), Simple, Error})


def _check_write_reply(reply: object) -> None:
    if type(reply) is list:
        for item in reply:
            _check_write_reply(item)
    else:
        assert type(reply) in _WRITE_REPLY_LEAF_TYPES, f"not a reply of a write: {reply!r:.80}"


def _reply_extension(value: object) -> msgpack.ExtType:
    if type(value) is Simple:
        return msgpack.ExtType(_REPLY_SIMPLE_TAG, value.text.encode())
    assert type(value) is Error, value
    return msgpack.ExtType(_REPLY_ERROR_TAG, value.text.encode())


def _reply_from_extension(tag: int, payload: bytes) -> Simple | Error:
    assert tag in (_REPLY_SIMPLE_TAG, _REPLY_ERROR_TAG), tag
    return (Simple if tag == _REPLY_SIMPLE_TAG else Error)(payload.decode())


def encode_reply(reply: object) -> bytes:
    """A write command's reply as ``Request.reply`` holds it (see the module docstring)."""
    _check_write_reply(reply)
    return msgpack.packb(reply, default=_reply_extension, use_bin_type=True)


def decode_reply(data: bytes) -> object:
    """The reply ``encode_reply`` encoded, with arrays as lists (as the RESP encoder wants)."""
    return msgpack.unpackb(data, ext_hook=_reply_from_extension, raw=False, use_list=True)


def request_key(request_id: bytes) -> bytes:
    """The storage key under which the reply of ``request_id`` is remembered."""
    return REQUEST_KEY_PREFIX + request_id


# Every key that starts with the prefix, and only those, sorts in [prefix, _REQUEST_KEYS_END):
# two comparisons, cheaper than a call of ``startswith`` on the path of every write.
_REQUEST_KEYS_END = REQUEST_KEY_PREFIX[:-1] + bytes((REQUEST_KEY_PREFIX[-1] + 1,))
_SINGLE_KEY_EFFECTS = frozenset({SetValue, PushItems, PopItems, SetExpiry})


def _touches_reserved_key(effects: tuple[Effect, ...]) -> bool:
    """Whether an effect would change a key of the request table (a ``Request``'s own effects
    were checked when its wrapped command ran)."""
    for effect in effects:
        kind = type(effect)
        if kind is DeleteKeys:
            if any(REQUEST_KEY_PREFIX <= key < _REQUEST_KEYS_END for key in effect.keys):
                return True
        elif kind in _SINGLE_KEY_EFFECTS and REQUEST_KEY_PREFIX <= effect.key < _REQUEST_KEYS_END:
            return True
    return False


# --- parsing ---------------------------------------------------------------------------------


def parse_int64(text: bytes) -> int | None:
    """``text`` as a signed 64-bit integer with Redis's ``string2ll`` strictness, or None."""
    if text.isdigit():
        if text[0] == 48 and len(text) > 1:          # leading zero
            return None
    elif not (text[:1] == b"-" and text[1:2] != b"0" and text[1:].isdigit()):
        return None
    if len(text) > _INT64_DIGITS_MAX:
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def list_range(items: Sequence[bytes], start: int, stop: int) -> list[bytes]:
    """LRANGE's items from ``start`` to ``stop`` inclusive, negative indexes counting from the
    end, out-of-range indexes clamped as Redis clamps them."""
    length = len(items)
    if start < 0:
        start = max(0, length + start)
    if stop < 0:
        stop += length
    if start > stop or start >= length:
        return []
    selected = list(items[start:stop + 1])
    assert len(selected) <= limits.list_range_items_max
    return selected


def parse_scan_cursor(text: bytes) -> int | None:
    """A SCAN cursor as Redis reads it (``strtoul``, base 10, nothing before or after), or None.

    ``strtoul`` accepts a sign (``-n`` wraps around to ``2**64 - n``), leading zeros, and the
    empty string (cursor 0).
    """
    digits = text[1:] if text[:1] in (b"+", b"-") else text
    if not digits:
        return 0 if not text else None
    if not digits.isdigit():
        return None
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) > _INT64_DIGITS_MAX:
        return None
    value = int(digits)
    if value > UINT64_MAX:
        return None
    return (-value) % (UINT64_MAX + 1) if text[:1] == b"-" else value


# --- glob patterns ---------------------------------------------------------------------------

_STAR = -1
_BACKSLASH, _OPEN, _CLOSE, _CARET, _DASH = b"\\[]^-"
_ALL_BYTES = frozenset(range(256))


def _signed_char(byte: int) -> int:
    """A byte as C's (signed) ``char``, which Redis's range comparisons use."""
    return byte - 256 if byte > 127 else byte


def _parse_class(pattern: bytes, index: int) -> tuple[frozenset[int], int]:
    """The bytes a ``[...]`` class starting after the ``[`` at ``index`` matches, and the index
    of the class's last pattern byte; a transcription of the class loop of ``stringmatchlen``."""
    length = len(pattern)
    negate = index < length and pattern[index] == _CARET
    if negate:
        index += 1
    members: set[int] = set()
    while True:
        if index < length and pattern[index] == _BACKSLASH and length - index >= 2:
            index += 1
            members.add(pattern[index])
        elif index < length and pattern[index] == _CLOSE:
            break
        elif index >= length:          # unterminated: the class runs to the end of the pattern
            index -= 1
            break
        elif length - index >= 3 and pattern[index + 1] == _DASH:
            start, end = _signed_char(pattern[index]), _signed_char(pattern[index + 2])
            if start > end:
                start, end = end, start
            members.update(b for b in range(256) if start <= _signed_char(b) <= end)
            index += 2
        else:
            members.add(pattern[index])
        index += 1
    return (_ALL_BYTES - members if negate else frozenset(members)), index


def _parse_glob(pattern: bytes) -> list[int | frozenset[int]]:
    """The pattern as tokens: ``_STAR`` (runs of ``*`` collapsed) or the set of bytes that one
    key byte may be."""
    tokens: list[int | frozenset[int]] = []
    index = 0
    length = len(pattern)
    while index < length:
        byte = pattern[index]
        if byte == 42:                                   # '*'
            if not tokens or tokens[-1] != _STAR:
                tokens.append(_STAR)
        elif byte == 63:                                 # '?'
            tokens.append(_ALL_BYTES)
        elif byte == _OPEN:
            members, index = _parse_class(pattern, index + 1)
            tokens.append(members)
        else:
            if byte == _BACKSLASH and length - index >= 2:
                index += 1
            tokens.append(frozenset((pattern[index],)))
        index += 1
    return tokens


def _byte_class_regex(members: frozenset[int]) -> bytes:
    if len(members) == 256:
        return b"."
    if not members:
        return b"(?!)"
    if len(members) == 1:
        return b"\\x%02x" % next(iter(members))
    if len(members) > 128:
        return b"[^" + b"".join(b"\\x%02x" % b for b in sorted(_ALL_BYTES - members)) + b"]"
    return b"[" + b"".join(b"\\x%02x" % b for b in sorted(members)) + b"]"


def _match_nothing(key: bytes) -> bool:
    return False


@functools.lru_cache(maxsize=glob_patterns_cached_max)
def glob_matcher(pattern: bytes) -> Callable[[bytes], bool]:
    """A function telling whether a key matches ``pattern`` exactly as Redis's
    ``stringmatchlen(pattern, key, nocase=0)`` does (see the module docstring).

    Callers treat the pattern ``*`` as "everything" before they get here, as Redis does: the
    matcher itself, like Redis's, does not match the empty key with ``*``.
    """
    tokens = _parse_glob(pattern)
    inner_stars = tokens[:-1].count(_STAR)
    if inner_stars > glob_star_nesting_max:
        return _match_nothing
    segments: list[list[bytes]] = [[]]
    for token in tokens:
        if token == _STAR:
            segments.append([])
        else:
            assert isinstance(token, frozenset)
            segments[-1].append(_byte_class_regex(token))
    parts = [b"".join(segments[0])]
    if len(segments) > 1:
        # Each fixed-length segment between two stars is matched at its leftmost place and
        # never revisited (atomic group): leftmost leaves the most room for the rest, so this
        # finds a match whenever one exists, in linear passes.
        parts.extend(b"(?>.*?" + b"".join(segment) + b")" for segment in segments[1:-1])
        parts.append(b".*" + b"".join(segments[-1]))
    match = re.compile(b"".join(parts) + b"\\Z", re.DOTALL).match
    if not pattern:
        return lambda key: not key
    return lambda key: bool(key) and match(key) is not None


# --- the keyspace ----------------------------------------------------------------------------

Handler = Callable[[tuple[bytes, ...], int], tuple[object, tuple[Effect, ...]]]


class Keyspace:
    """The in-memory state of one node and the data commands; see the module docstring.

    The keyspace owns ``records`` (it mutates the dict it is given: the records of the request
    table, under ``REQUEST_KEY_PREFIX``, move out of it into the keyspace's own table).
    """

    __slots__ = (
        "_records", "_changed", "_cleared", "_expiry_heap", "_expiring_count",
        "_scan_keys", "_scan_sequences", "_scan_sequence_of", "_scan_next_sequence",
        "_scan_holes", "_handlers", "_appliers", "_requests", "_request_expiry_heap",
    )

    def __init__(self, records: dict[bytes, Record]) -> None:
        self._records = records
        self._changed: dict[bytes, None] = {}
        self._cleared = False
        self._expiry_heap: list[tuple[int, bytes]] = []
        self._expiring_count = 0
        self._scan_keys: list[bytes | None] = []
        self._scan_sequences: list[int] = []
        self._scan_sequence_of: dict[bytes, int] = {}
        self._scan_next_sequence = 1          # cursor 0 means "from the start"
        self._scan_holes = 0
        request_keys: list[bytes] = []
        for key, record in records.items():
            # Pair assertions with storage: what comes back is what apply() would have built.
            assert isinstance(record.kind, Kind), (key, record)
            assert record.kind is _STRING or record.value, f"empty list stored at {key!r}"
            if key.startswith(REQUEST_KEY_PREFIX):
                request_keys.append(key)
                continue
            self._scan_add(key)
            if record.expire_at_ms != NO_EXPIRY:
                self._expiry_heap.append((record.expire_at_ms, key))
        self._expiring_count = len(self._expiry_heap)
        heapq.heapify(self._expiry_heap)
        self._requests = {key: records.pop(key) for key in request_keys}
        for key, record in self._requests.items():
            assert record.kind is _STRING and record.expire_at_ms != NO_EXPIRY, (key, record)
        self._request_expiry_heap: list[tuple[int, bytes]] = []
        self._rebuild_request_expiry_heap()
        self._handlers: dict[bytes, Handler] = {
            b"GET": self._get, b"SET": self._set, b"SETNX": self._setnx,
            b"SETEX": self._setex, b"PSETEX": self._psetex, b"GETSET": self._getset,
            b"GETDEL": self._getdel, b"MGET": self._mget, b"MSET": self._mset,
            b"INCR": self._incr, b"DECR": self._decr, b"INCRBY": self._incrby,
            b"DECRBY": self._decrby, b"APPEND": self._append, b"STRLEN": self._strlen,
            b"DEL": self._del, b"EXISTS": self._exists, b"EXPIRE": self._expire,
            b"PEXPIRE": self._pexpire, b"EXPIREAT": self._expireat,
            b"PEXPIREAT": self._pexpireat, b"TTL": self._ttl, b"PTTL": self._pttl,
            b"PERSIST": self._persist, b"TYPE": self._type, b"KEYS": self._keys,
            b"SCAN": self._scan, b"DBSIZE": self._dbsize, b"FLUSHDB": self._flushdb,
            b"RPUSH": self._rpush, b"LPUSH": self._lpush, b"LRANGE": self._lrange,
            b"LLEN": self._llen, b"LPOP": self._lpop, b"RPOP": self._rpop,
            _ONCE: self._once,
        }
        assert self._handlers.keys() == {
            name for name, spec in COMMANDS.items() if spec.category in DATA_CATEGORIES
        }
        self._appliers: dict[type, Callable[[Any, int], None]] = {
            SetValue: self._apply_set_value, PushItems: self._apply_push_items,
            PopItems: self._apply_pop_items, DeleteKeys: self._apply_delete_keys,
            SetExpiry: self._apply_set_expiry, FlushAll: self._apply_flush_all,
            EpochStart: self._apply_epoch_start, Request: self._apply_request,
        }

    # --- the interface the cores use ----------------------------------------------------------

    def execute(self, command: ClientCommand, now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        """Run the data command (arity already checked) against the current state, unchanged.

        Returns the reply (a ``chorusdb.replies`` value) and the effects that carry the command
        out, in the order they must be applied (a tuple: often shared, never to be mutated).
        A write that would change a key of the request table is refused.
        """
        result = self._handlers[command.name](command.args, now_ms)
        effects = result[1]
        if effects:
            if len(effects) == 1 and type(effects[0]) in _SINGLE_KEY_EFFECTS:   # most writes
                refused = REQUEST_KEY_PREFIX <= effects[0].key < _REQUEST_KEYS_END
            else:
                refused = _touches_reserved_key(effects)
            if refused:
                return RESERVED_KEY, _NO_EFFECTS
        return result

    def apply(self, effect: Effect, version: int) -> None:
        """Change the state by one effect of the log entry at index ``version``."""
        self._appliers[type(effect)](effect, version)

    def take_changes(self) -> list[Write]:
        """The storage writes for everything ``apply`` changed since the last call: one write
        per key with its final state, in order of first change, after a ``ClearRecords`` if a
        FLUSHDB happened in between (then every row of the request table follows it again:
        FLUSHDB keeps the table, and ``ClearRecords`` removes every row)."""
        records = self._records
        requests = self._requests
        writes: list[Write] = []
        if self._cleared:
            writes.append(ClearRecords())
        for key in self._changed:
            record = records.get(key)
            if record is None:
                record = requests.get(key)
            if record is not None:
                writes.append(PutRecord(key, record))
            elif not self._cleared:            # after ClearRecords the row is already gone
                writes.append(DeleteRecord(key))
        self._changed = {}
        self._cleared = False
        return writes

    def expired_keys(self, now_ms: int, limit: int) -> tuple[bytes, ...]:
        """Up to ``limit`` keys whose expiry has passed, earliest expiry first (ties by key):
        user keys and the keys of expired remembered requests alike.

        Does not change the state: the core reclaims them with a ``DeleteKeys`` effect, and
        until it does they are returned again.
        """
        assert limit > 0
        found = heapq.merge(
            _expired_entries(self._expiry_heap, self._records, now_ms, limit),
            _expired_entries(self._request_expiry_heap, self._requests, now_ms, limit))
        return tuple(key for _, key in itertools.islice(found, limit))

    def digest(self, now_ms: int) -> str:
        """SHA-256 (hex) of the live keys in key order with their kind, value and expiry:
        replicas that hold the same data have the same digest, whatever the record versions."""
        records = self._records
        digest = hashlib.sha256()
        for key in sorted(self._live_keys(now_ms)):
            record = records[key]
            digest.update(b"%d:%s%d:%d:" % (len(key), key, record.kind, record.expire_at_ms))
            if record.kind is _STRING:
                digest.update(b"%d:%s" % (len(record.value), record.value))
            else:
                digest.update(b"%d:" % len(record.value))
                for item in record.value:
                    digest.update(b"%d:%s" % (len(item), item))
        return digest.hexdigest()

    def items(self) -> list[tuple[bytes, Record]]:
        """Every key with its record (expired ones not reclaimed yet too), the request table's
        included: a consistent copy for a snapshot, since records are immutable and only the
        list is new. ``Keyspace(dict(items))`` is this keyspace again."""
        return [*self._records.items(), *self._requests.items()]

    def __len__(self) -> int:
        """Keys held, including expired ones not reclaimed yet."""
        return len(self._records)

    def holds_records(self) -> bool:
        """Whether anything is held that the expiry cycle may have to reclaim: a key, or a
        remembered request."""
        return bool(self._records or self._requests)

    def live_count(self, now_ms: int) -> int:
        """Keys that exist at ``now_ms`` (DBSIZE); costs O(expired keys not yet reclaimed)."""
        return len(self._records) - len(self._expired_set(now_ms))

    def expiring_count(self) -> int:
        """Keys that have an expiry (INFO keyspace's ``expires``), expired ones not yet
        reclaimed included, as in Redis."""
        return self._expiring_count

    def get_record(self, key: bytes, now_ms: int) -> Record | None:
        """The record of ``key``, or None if it is missing or expired."""
        record = self._records.get(key)
        if record is not None and record.expire_at_ms and now_ms > record.expire_at_ms:
            return None
        return record

    # --- helpers ------------------------------------------------------------------------------

    _live = get_record

    def _live_keys(self, now_ms: int) -> list[bytes]:
        expired = self._expired_set(now_ms)
        if not expired:
            return list(self._records)
        return [key for key in self._records if key not in expired]

    def _expired_set(self, now_ms: int) -> set[bytes]:
        """Keys expired at ``now_ms``: a walk of the heap's expired top, pruned at the first
        entry of every branch that has not expired."""
        heap = self._expiry_heap
        records = self._records
        expired: set[bytes] = set()
        pending = [0] if heap else []
        while pending:
            index = pending.pop()
            expire_at, key = heap[index]
            if expire_at >= now_ms:
                continue
            record = records.get(key)
            if record is not None and record.expire_at_ms == expire_at:
                expired.add(key)
            pending.extend(child for child in (2 * index + 1, 2 * index + 2)
                           if child < len(heap))
        return expired

    # --- strings ------------------------------------------------------------------------------

    def _get(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._records.get(args[0])
        if record is None or (record.expire_at_ms and now_ms > record.expire_at_ms):
            return None, _NO_EFFECTS
        if record.kind is not _STRING:
            return WRONGTYPE, _NO_EFFECTS
        return record.value, _NO_EFFECTS

    def _set(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        if len(args) == 2:
            return OK, (SetValue(args[0], args[1], NO_EXPIRY),)
        return self._set_with_options(args, now_ms)

    def _set_with_options(self, args: tuple[bytes, ...],
                          now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        """SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT time|KEEPTTL], parsed as Redis's
        ``parseExtendedStringArgumentsOrReply`` does (a repeated option is allowed, the last
        expiry wins, conflicting ones are a syntax error)."""
        condition = b""
        return_old = False
        keep_ttl = False
        expiry_option = b""
        expiry_text = b""
        index = 2
        count = len(args)
        while index < count:
            option = args[index].upper()
            if option == b"NX" and condition != b"XX":
                condition = option
            elif option == b"XX" and condition != b"NX":
                condition = option
            elif option == b"GET":
                return_old = True
            elif option == b"KEEPTTL" and not expiry_option:
                keep_ttl = True
            elif (option in _SET_EXPIRY_OPTIONS and not keep_ttl
                  and expiry_option in (b"", option) and index + 1 < count):
                expiry_option = option
                index += 1
                expiry_text = args[index]
            else:
                return SYNTAX_ERROR, _NO_EFFECTS
            index += 1
        expire_at = NO_EXPIRY
        if expiry_option:
            unit_ms, relative = _SET_EXPIRY_OPTIONS[expiry_option]
            parsed = _expiry_for_set(expiry_text, unit_ms, relative, now_ms, "set")
            if isinstance(parsed, Error):
                return parsed, _NO_EFFECTS
            expire_at = parsed
        key = args[0]
        record = self._live(key, now_ms)
        reply: object = OK
        if return_old:
            if record is not None and record.kind is not _STRING:
                return WRONGTYPE, _NO_EFFECTS
            reply = record.value if record is not None else None
        if (condition == b"NX" and record is not None) or (condition == b"XX" and record is None):
            return (reply if return_old else None), _NO_EFFECTS
        if keep_ttl and record is not None:
            expire_at = record.expire_at_ms
        return reply, self._set_effects(key, args[1], expire_at, now_ms)

    def _set_effects(self, key: bytes, value: bytes, expire_at: int,
                     now_ms: int) -> tuple[Effect, ...]:
        """What setting ``key`` to ``value`` until ``expire_at`` comes to: a ``SetValue``, or a
        ``DeleteKeys`` when the expiry has already passed (the key ends up missing)."""
        if expire_at == NO_EXPIRY or expire_at >= now_ms:
            return (SetValue(key, value, expire_at),)
        return (DeleteKeys((key,)),) if key in self._records else _NO_EFFECTS

    def _setnx(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        if self._live(args[0], now_ms) is not None:
            return 0, _NO_EFFECTS
        return 1, (SetValue(args[0], args[1], NO_EXPIRY),)

    def _setex(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._set_with_ttl(args, now_ms, _SECOND_MS, "setex")

    def _psetex(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._set_with_ttl(args, now_ms, 1, "psetex")

    def _set_with_ttl(self, args: tuple[bytes, ...], now_ms: int, unit_ms: int,
                      command_name: str) -> tuple[object, tuple[Effect, ...]]:
        """SETEX / PSETEX key time value."""
        expire_at = _expiry_for_set(args[1], unit_ms, True, now_ms, command_name)
        if isinstance(expire_at, Error):
            return expire_at, _NO_EFFECTS
        return OK, (SetValue(args[0], args[2], expire_at),)

    def _getset(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._live(args[0], now_ms)
        if record is None:
            return None, (SetValue(args[0], args[1], NO_EXPIRY),)
        if record.kind is not _STRING:
            return WRONGTYPE, _NO_EFFECTS
        return record.value, (SetValue(args[0], args[1], NO_EXPIRY),)

    def _getdel(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._live(args[0], now_ms)
        if record is None:
            return None, _NO_EFFECTS
        if record.kind is not _STRING:
            return WRONGTYPE, _NO_EFFECTS
        return record.value, (DeleteKeys((args[0],)),)

    def _mget(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        values: list[object] = []
        for key in args:
            record = self._live(key, now_ms)
            values.append(record.value if record is not None and record.kind is _STRING
                          else None)
        return values, _NO_EFFECTS

    def _mset(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        if len(args) % 2:
            return wrong_arity("mset"), _NO_EFFECTS
        return OK, tuple(SetValue(args[index], args[index + 1], NO_EXPIRY)
                         for index in range(0, len(args), 2))

    def _incr(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._increment(args[0], 1, now_ms)

    def _decr(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._increment(args[0], -1, now_ms)

    def _incrby(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        increment = parse_int64(args[1])
        if increment is None:
            return NOT_AN_INTEGER, _NO_EFFECTS
        return self._increment(args[0], increment, now_ms)

    def _decrby(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        decrement = parse_int64(args[1])
        if decrement is None:
            return NOT_AN_INTEGER, _NO_EFFECTS
        if decrement == INT64_MIN:              # its negation does not fit in 64 bits
            return DECREMENT_OVERFLOW, _NO_EFFECTS
        return self._increment(args[0], -decrement, now_ms)

    def _increment(self, key: bytes, increment: int,
                   now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._live(key, now_ms)
        if record is None:
            current = 0
            expire_at = NO_EXPIRY
        else:
            if record.kind is not _STRING:
                return WRONGTYPE, _NO_EFFECTS
            parsed = parse_int64(record.value)  # type: ignore[arg-type]
            if parsed is None:
                return NOT_AN_INTEGER, _NO_EFFECTS
            current = parsed
            expire_at = record.expire_at_ms
        result = current + increment
        if not INT64_MIN <= result <= INT64_MAX:
            return INCR_OVERFLOW, _NO_EFFECTS
        return result, (SetValue(key, b"%d" % result, expire_at),)

    def _append(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        key, suffix = args
        record = self._live(key, now_ms)
        if record is None:
            return len(suffix), (SetValue(key, suffix, NO_EXPIRY),)
        if record.kind is not _STRING:
            return WRONGTYPE, _NO_EFFECTS
        if len(record.value) + len(suffix) > limits.value_bytes_max:
            return STRING_TOO_LONG, _NO_EFFECTS
        value = record.value + suffix  # type: ignore[operator]
        return len(value), (SetValue(key, value, record.expire_at_ms),)

    def _strlen(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._live(args[0], now_ms)
        if record is None:
            return 0, _NO_EFFECTS
        if record.kind is not _STRING:
            return WRONGTYPE, _NO_EFFECTS
        return len(record.value), _NO_EFFECTS

    # --- keys and expiry ------------------------------------------------------------------------

    def _del(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        deleted = tuple(key for key in dict.fromkeys(args) if self._live(key, now_ms) is not None)
        if not deleted:
            return 0, _NO_EFFECTS
        return len(deleted), (DeleteKeys(deleted),)

    def _exists(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return sum(self._live(key, now_ms) is not None for key in args), _NO_EFFECTS

    def _expire(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._expire_generic(args, now_ms, _SECOND_MS, True, "expire")

    def _pexpire(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._expire_generic(args, now_ms, 1, True, "pexpire")

    def _expireat(self, args: tuple[bytes, ...],
                  now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._expire_generic(args, now_ms, _SECOND_MS, False, "expireat")

    def _pexpireat(self, args: tuple[bytes, ...],
                   now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._expire_generic(args, now_ms, 1, False, "pexpireat")

    def _expire_generic(self, args: tuple[bytes, ...], now_ms: int, unit_ms: int, relative: bool,
                        command_name: str) -> tuple[object, tuple[Effect, ...]]:
        """EXPIRE and friends, in the order of Redis's ``expireGenericCommand``: options, then
        the time, then the key."""
        options: set[bytes] = set()
        for option in args[2:]:
            upper = option.upper()
            if upper not in _EXPIRE_OPTIONS:
                return unsupported_option(option), _NO_EFFECTS
            options.add(upper)
        if b"NX" in options and len(options) > 1:
            return EXPIRE_NX_CONFLICT, _NO_EFFECTS
        if b"GT" in options and b"LT" in options:
            return EXPIRE_GT_LT_CONFLICT, _NO_EFFECTS
        when = parse_int64(args[1])
        if when is None:
            return NOT_AN_INTEGER, _NO_EFFECTS
        if unit_ms == _SECOND_MS:
            if not _INT64_MIN_SECONDS <= when <= _INT64_MAX_SECONDS:
                return _INVALID_EXPIRE_TIME[command_name], _NO_EFFECTS
            when *= _SECOND_MS
        base_ms = now_ms if relative else 0
        if when > INT64_MAX - base_ms:
            return _INVALID_EXPIRE_TIME[command_name], _NO_EFFECTS
        when += base_ms
        key = args[0]
        record = self._live(key, now_ms)
        if record is None:
            return 0, _NO_EFFECTS
        if options:
            current = record.expire_at_ms
            if b"NX" in options and current != NO_EXPIRY:
                return 0, _NO_EFFECTS
            if b"XX" in options and current == NO_EXPIRY:
                return 0, _NO_EFFECTS
            if b"GT" in options and (current == NO_EXPIRY or when <= current):
                return 0, _NO_EFFECTS
            if b"LT" in options and current != NO_EXPIRY and when >= current:
                return 0, _NO_EFFECTS
        if when <= now_ms:
            return 1, (DeleteKeys((key,)),)
        return 1, (SetExpiry(key, when),)

    def _ttl(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._time_to_live(args[0], now_ms, _SECOND_MS)

    def _pttl(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._time_to_live(args[0], now_ms, 1)

    def _time_to_live(self, key: bytes, now_ms: int,
                      unit_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._live(key, now_ms)
        if record is None:
            return -2, _NO_EFFECTS
        if record.expire_at_ms == NO_EXPIRY:
            return -1, _NO_EFFECTS
        remaining_ms = max(0, record.expire_at_ms - now_ms)
        if unit_ms == 1:
            return remaining_ms, _NO_EFFECTS
        return (remaining_ms + unit_ms // 2) // unit_ms, _NO_EFFECTS   # Redis rounds TTL

    def _persist(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._live(args[0], now_ms)
        if record is None or record.expire_at_ms == NO_EXPIRY:
            return 0, _NO_EFFECTS
        return 1, (SetExpiry(args[0], NO_EXPIRY),)

    def _type(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._live(args[0], now_ms)
        if record is None:
            return _TYPE_NONE, _NO_EFFECTS
        return _TYPE_REPLIES[record.kind], _NO_EFFECTS

    def _keys(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        pattern = args[0]
        keys = self._live_keys(now_ms)
        if pattern != b"*":
            matches = glob_matcher(pattern)
            keys = [key for key in keys if matches(key)]
        if len(keys) > limits.keys_reply_items_max:
            return TOO_MANY_KEYS, _NO_EFFECTS
        return keys, _NO_EFFECTS

    def _scan(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        """SCAN cursor [MATCH pattern] [COUNT count] [TYPE type] over the creation order.

        ``COUNT`` bounds the keys examined (before MATCH and TYPE filter them), as in Redis;
        it is capped at ``limits.scan_count_max``. An unknown TYPE matches nothing (Redis 7).
        """
        cursor = parse_scan_cursor(args[0])
        if cursor is None:
            return INVALID_CURSOR, _NO_EFFECTS
        count = 10
        matches: Callable[[bytes], bool] | None = None
        type_name: bytes | None = None
        index = 1
        while index < len(args):
            option = args[index].upper()
            if index + 1 >= len(args) or option not in (b"COUNT", b"MATCH", b"TYPE"):
                return SYNTAX_ERROR, _NO_EFFECTS
            value = args[index + 1]
            if option == b"COUNT":
                parsed = parse_int64(value)
                if parsed is None:
                    return NOT_AN_INTEGER, _NO_EFFECTS
                if parsed < 1:
                    return SYNTAX_ERROR, _NO_EFFECTS
                count = min(parsed, limits.scan_count_max)
            elif option == b"MATCH":
                matches = None if value == b"*" else glob_matcher(value)
            else:
                type_name = value.lower()
            index += 2
        records = self._records
        keys = self._scan_keys
        position = bisect_left(self._scan_sequences, cursor)
        end = min(len(keys), position + count * scan_visits_per_count)
        found: list[bytes] = []
        examined = 0
        while position < end and examined < count:
            key = keys[position]
            position += 1
            if key is None:
                continue
            examined += 1
            record = records[key]
            if record.expire_at_ms and now_ms > record.expire_at_ms:
                continue
            if type_name is not None and _TYPE_NAMES[record.kind] != type_name:
                continue
            if matches is not None and not matches(key):
                continue
            found.append(key)
        next_cursor = self._scan_sequences[position] if position < len(keys) else 0
        return [b"%d" % next_cursor, found], _NO_EFFECTS

    def _dbsize(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self.live_count(now_ms), _NO_EFFECTS

    def _flushdb(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        """FLUSHDB [ASYNC|SYNC]; always an effect, as Redis always propagates it."""
        if len(args) > 1 or (args and args[0].upper() not in (b"ASYNC", b"SYNC")):
            return SYNTAX_ERROR, _NO_EFFECTS
        return OK, (_FLUSH_ALL,)

    # --- remembered requests ---------------------------------------------------------------------

    def _once(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        """CHORUS.ONCE request_id command [args...] (see the module docstring)."""
        request_id = args[0]
        if not request_id or len(request_id) > request_id_bytes_max:
            return BAD_REQUEST_ID, _NO_EFFECTS
        wrapped = ClientCommand(args[1].upper(), args[2:])
        spec = resolve(wrapped.name, wrapped.args)
        if isinstance(spec, Error):
            return spec, _NO_EFFECTS
        if not spec.is_write or wrapped.name == _ONCE:
            return not_a_wrapped_write(wrapped.name), _NO_EFFECTS
        remembered = self._requests.get(request_key(request_id))
        if remembered is not None and now_ms <= remembered.expire_at_ms:
            return decode_reply(remembered.value), _NO_EFFECTS  # type: ignore[arg-type]
        reply, effects = self.execute(wrapped, now_ms)
        if not effects:
            return reply, _NO_EFFECTS
        return reply, (Request(request_id, encode_reply(reply), now_ms + request_remembered_ms,
                               effects),)

    # --- lists --------------------------------------------------------------------------------

    def _rpush(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._push(args, now_ms, False)

    def _lpush(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._push(args, now_ms, True)

    def _push(self, args: tuple[bytes, ...], now_ms: int,
              left: bool) -> tuple[object, tuple[Effect, ...]]:
        key = args[0]
        items = args[1:]
        record = self._records.get(key)
        reclaim = record is not None and record.expire_at_ms != NO_EXPIRY and (
            now_ms > record.expire_at_ms)
        if record is None or reclaim:
            length = len(items)
        elif record.kind is not _LIST:
            return WRONGTYPE, _NO_EFFECTS
        else:
            length = len(record.value) + len(items)
        if length > list_items_max:
            return LIST_TOO_LONG, _NO_EFFECTS
        push = PushItems(key, items, left)
        return length, ((DeleteKeys((key,)), push) if reclaim else (push,))

    def _lrange(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        start = parse_int64(args[1])
        stop = parse_int64(args[2])
        if start is None or stop is None:
            return NOT_AN_INTEGER, _NO_EFFECTS
        record = self._live(args[0], now_ms)
        if record is None:
            return [], _NO_EFFECTS
        if record.kind is not _LIST:
            return WRONGTYPE, _NO_EFFECTS
        return list_range(record.value, start, stop), _NO_EFFECTS

    def _llen(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        record = self._live(args[0], now_ms)
        if record is None:
            return 0, _NO_EFFECTS
        if record.kind is not _LIST:
            return WRONGTYPE, _NO_EFFECTS
        return len(record.value), _NO_EFFECTS

    def _lpop(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._pop(args, now_ms, True, "lpop")

    def _rpop(self, args: tuple[bytes, ...], now_ms: int) -> tuple[object, tuple[Effect, ...]]:
        return self._pop(args, now_ms, False, "rpop")

    def _pop(self, args: tuple[bytes, ...], now_ms: int, left: bool,
             command_name: str) -> tuple[object, tuple[Effect, ...]]:
        """LPOP / RPOP key [count]: without a count, one item or nil; with one, an array (empty
        for count 0) or nil when the key is missing (Redis 7's null array)."""
        if len(args) > 2:
            return wrong_arity(command_name), _NO_EFFECTS
        count = 1
        if len(args) == 2:
            # Redis's getPositiveLongFromObjectOrReply gives one message for both failures.
            parsed = parse_int64(args[1])
            if parsed is None or parsed < 0:
                return MUST_BE_POSITIVE, _NO_EFFECTS
            count = parsed
        key = args[0]
        record = self._live(key, now_ms)
        if record is None:
            return None, _NO_EFFECTS
        if record.kind is not _LIST:
            return WRONGTYPE, _NO_EFFECTS
        items = record.value
        assert items, "an empty list is never stored"
        if len(args) == 1:
            return (items[0] if left else items[-1]), (PopItems(key, 1, left),)
        if count == 0:
            return [], _NO_EFFECTS
        count = min(count, len(items))
        popped = list(items[:count]) if left else list(items[:-count - 1:-1])
        return popped, (PopItems(key, count, left),)

    # --- apply ----------------------------------------------------------------------------------

    def _apply_set_value(self, effect: SetValue, version: int) -> None:
        key = effect.key
        records = self._records
        old = records.get(key)
        expire_at = effect.expire_at_ms
        records[key] = Record(_STRING, effect.value, expire_at, version)
        self._changed[key] = None
        if old is None:
            self._scan_add(key)
            if expire_at != NO_EXPIRY:
                self._expiry_changed(key, NO_EXPIRY, expire_at)
        elif expire_at != old.expire_at_ms:
            self._expiry_changed(key, old.expire_at_ms, expire_at)

    def _apply_push_items(self, effect: PushItems, version: int) -> None:
        key = effect.key
        records = self._records
        old = records.get(key)
        pushed = effect.items[::-1] if effect.left else effect.items
        if old is None:
            records[key] = Record(_LIST, pushed, NO_EXPIRY, version)
            self._scan_add(key)
        else:
            assert old.kind is _LIST, f"push onto a {old.kind.name} at {key!r}"
            items = pushed + old.value if effect.left else old.value + pushed  # type: ignore
            records[key] = Record(_LIST, items, old.expire_at_ms, version)
        self._changed[key] = None

    def _apply_pop_items(self, effect: PopItems, version: int) -> None:
        key = effect.key
        old = self._records.get(key)
        assert old is not None, f"pop from missing key {key!r}"
        assert old.kind is _LIST, f"pop from a {old.kind.name} at {key!r}"
        assert 0 < effect.count <= len(old.value)
        remaining = (old.value[effect.count:] if effect.left
                     else old.value[:len(old.value) - effect.count])
        if remaining:
            self._records[key] = Record(_LIST, remaining, old.expire_at_ms, version)
            self._changed[key] = None
        else:
            self._delete(key)

    def _apply_delete_keys(self, effect: DeleteKeys, version: int) -> None:
        records = self._records
        for key in effect.keys:
            if key in records:
                self._delete(key)
            elif key in self._requests:         # an expired request reclaimed
                del self._requests[key]
                self._changed[key] = None

    def _apply_set_expiry(self, effect: SetExpiry, version: int) -> None:
        key = effect.key
        old = self._records.get(key)
        assert old is not None, f"expiry set on missing key {key!r}"
        self._records[key] = Record(old.kind, old.value, effect.expire_at_ms, version)
        self._changed[key] = None
        if effect.expire_at_ms != old.expire_at_ms:
            self._expiry_changed(key, old.expire_at_ms, effect.expire_at_ms)

    def _apply_flush_all(self, effect: FlushAll, version: int) -> None:
        self._records.clear()
        self._changed = dict.fromkeys(self._requests)    # rewritten after ClearRecords
        self._cleared = True
        self._expiry_heap.clear()
        self._expiring_count = 0
        self._scan_keys.clear()
        self._scan_sequences.clear()
        self._scan_sequence_of.clear()
        self._scan_holes = 0          # sequence numbers go on: old cursors stay meaningful

    def _apply_epoch_start(self, effect: EpochStart, version: int) -> None:
        """An epoch's first entry holds no data: nothing changes, no row is written."""

    def _apply_request(self, effect: Request, version: int) -> None:
        assert effect.effects, effect
        appliers = self._appliers
        for inner in effect.effects:
            assert type(inner) is not Request and type(inner) is not EpochStart, effect
            appliers[type(inner)](inner, version)
        key = request_key(effect.request_id)
        self._requests[key] = Record(_STRING, effect.reply, effect.expire_at_ms, version)
        self._changed[key] = None
        heap = self._request_expiry_heap
        heapq.heappush(heap, (effect.expire_at_ms, key))
        if len(heap) > 2 * len(self._requests) + expiry_heap_stale_entries_slack:
            self._rebuild_request_expiry_heap()

    def _delete(self, key: bytes) -> None:
        record = self._records.pop(key)
        self._changed[key] = None
        if record.expire_at_ms != NO_EXPIRY:
            self._expiring_count -= 1
        self._scan_remove(key)

    # --- indexes --------------------------------------------------------------------------------

    def _expiry_changed(self, key: bytes, old_expire_at: int, new_expire_at: int) -> None:
        assert old_expire_at != new_expire_at
        if new_expire_at == NO_EXPIRY:
            self._expiring_count -= 1
            return
        if old_expire_at == NO_EXPIRY:
            self._expiring_count += 1
        heap = self._expiry_heap
        heapq.heappush(heap, (new_expire_at, key))
        if len(heap) > 2 * self._expiring_count + expiry_heap_stale_entries_slack:
            self._rebuild_expiry_heap()

    def _rebuild_expiry_heap(self) -> None:
        records = self._records
        current = {key: expire_at for expire_at, key in self._expiry_heap
                   if key in records and records[key].expire_at_ms == expire_at}
        assert len(current) == self._expiring_count
        self._expiry_heap = [(expire_at, key) for key, expire_at in current.items()]
        heapq.heapify(self._expiry_heap)

    def _rebuild_request_expiry_heap(self) -> None:
        """Every remembered request expires: the heap is one entry per request, none stale."""
        heap = [(record.expire_at_ms, key) for key, record in self._requests.items()]
        heapq.heapify(heap)
        self._request_expiry_heap = heap

    def _scan_add(self, key: bytes) -> None:
        sequence = self._scan_next_sequence
        self._scan_next_sequence = sequence + 1
        self._scan_sequence_of[key] = sequence
        self._scan_keys.append(key)
        self._scan_sequences.append(sequence)

    def _scan_remove(self, key: bytes) -> None:
        position = bisect_left(self._scan_sequences, self._scan_sequence_of.pop(key))
        assert self._scan_keys[position] == key
        self._scan_keys[position] = None
        self._scan_holes += 1
        if self._scan_holes > scan_holes_slack and 2 * self._scan_holes > len(self._scan_keys):
            kept = [(key, sequence) for key, sequence in
                    zip(self._scan_keys, self._scan_sequences) if key is not None]
            self._scan_keys = [key for key, _ in kept]
            self._scan_sequences = [sequence for _, sequence in kept]
            self._scan_holes = 0


def _expired_entries(heap: list[tuple[int, bytes]], records: dict[bytes, Record], now_ms: int,
                     limit: int) -> list[tuple[int, bytes]]:
    """Up to ``limit`` ``(expire_at, key)`` of ``heap`` whose key in ``records`` has expired,
    in heap order. Stale and duplicate entries met on the way are dropped; the rest stay."""
    found: list[tuple[int, bytes]] = []
    seen: set[bytes] = set()
    while heap and len(found) < limit and heap[0][0] < now_ms:
        entry = heapq.heappop(heap)
        expire_at, key = entry
        record = records.get(key)
        if record is None or record.expire_at_ms != expire_at or key in seen:
            continue                        # stale or duplicate entry: drop it for good
        seen.add(key)
        found.append(entry)
    for entry in found:
        heapq.heappush(heap, entry)
    return found


_SET_EXPIRY_OPTIONS = {
    b"EX": (_SECOND_MS, True), b"PX": (1, True),
    b"EXAT": (_SECOND_MS, False), b"PXAT": (1, False),
}
_EXPIRE_OPTIONS = frozenset({b"NX", b"XX", b"GT", b"LT"})
# C's LLONG_MAX / 1000 and LLONG_MIN / 1000 (division truncates towards zero).
_INT64_MAX_SECONDS = INT64_MAX // _SECOND_MS
_INT64_MIN_SECONDS = -(-INT64_MIN // _SECOND_MS)


def _expiry_for_set(text: bytes, unit_ms: int, relative: bool, now_ms: int,
                    command_name: str) -> int | Error:
    """The absolute expiry of SET EX/PX/EXAT/PXAT, SETEX and PSETEX, as Redis's
    ``getExpireMillisecondsOrReply`` computes it: the time must be positive and not overflow."""
    value = parse_int64(text)
    if value is None:
        return NOT_AN_INTEGER
    if value <= 0 or value > INT64_MAX // unit_ms:
        return _INVALID_EXPIRE_TIME[command_name]
    value *= unit_ms
    if relative:
        value += now_ms
        if value > INT64_MAX:
            return _INVALID_EXPIRE_TIME[command_name]
    return value
