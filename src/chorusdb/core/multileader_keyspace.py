"""The data of a multi-leader node: every key is a ``ReplicatedValue`` that merges, never fails.

In multi-leader mode every node takes writes, so two nodes may change one key at the same time
and apply each other's writes in either order. Each part of a key is built so that the order
does not matter (``core.causal``):

- the **register** (SET, DEL, GET): the versions written to the key, with the causal context
  they carry, merged by ``causal.apply_version`` under the key's policy (``lww``, ``siblings``
  or ``resolver``); a DEL is a version without a value (a tombstone);
- the **counter** (INCRBY and friends): a PN-counter, each origin's running totals merged by
  maximum, so concurrent increments add up and never conflict;
- the **events** (RPUSH, LRANGE, LLEN): a grow-only list of events ordered by (stamp, origin,
  seq, position), so concurrent appends interleave the same way on every node.

A key holds whichever parts were written to it. A node refuses a local write that mixes kinds
(``WRONGTYPE``), but writes of two kinds made concurrently on two nodes both stay, each in its
part: nothing a node acknowledged is thrown away by a merge. GET shows the register's visible
value, or the counter's value when the key has no register.

``apply(effect, index)`` changes the state (the core has checked that the effect's dot is new
here) and returns the register's ``causal.Applied`` for conflict accounting; ``take_changes``
hands the changed keys to storage as ``PutRecord``/``DeleteRecord`` writes (``Kind.REPLICATED``
records); ``forget_tombstones`` removes tombstones the core found causally stable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from chorusdb.core.causal import (
    Applied,
    CounterValue,
    Dot,
    Hlc,
    Resolver,
    Version,
    VersionedValue,
    apply_version,
    visible_value,
)
from chorusdb.core.model import (
    NO_EXPIRY,
    CounterChanged,
    DeleteRecord,
    EventsAppended,
    Kind,
    PutRecord,
    Record,
    ReplicatedEffect,
    VersionWritten,
    Write,
)


@dataclass(frozen=True, slots=True, order=True)
class Event:
    """One item appended to a key's events, in the order every node lists them."""

    hlc: Hlc
    origin: str
    seq: int
    position: int
    item: bytes


@dataclass(frozen=True, slots=True)
class ReplicatedValue:
    """A multi-leader key's state: any of the three parts (module docstring)."""

    register: VersionedValue | None = None
    counter: CounterValue | None = None
    events: tuple[Event, ...] = ()

    def is_empty(self) -> bool:
        return self.register is None and self.counter is None and not self.events


EMPTY_VALUE = ReplicatedValue()


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """How concurrent register writes of a key prefix are resolved (``causal.POLICIES``)."""

    prefix: bytes
    policy: str
    resolver: Resolver | None = None


class ReplicatedKeyspace:
    """Key -> ``ReplicatedValue``; see the module docstring."""

    def __init__(self, records: dict[bytes, Record], policies: tuple[KeyPolicy, ...],
                 default_policy: KeyPolicy, siblings_max: int) -> None:
        self._values: dict[bytes, ReplicatedValue] = {}
        self._versions: dict[bytes, int] = {}
        for key, record in records.items():
            assert record.kind is Kind.REPLICATED and type(record.value) is ReplicatedValue, key
            self._values[key] = record.value
            self._versions[key] = record.version
        # Longest prefix first, so the most specific policy wins.
        self._policies = tuple(sorted(policies, key=lambda p: len(p.prefix), reverse=True))
        self._default_policy = default_policy
        self.siblings_max = siblings_max
        self._changed: dict[bytes, None] = {}
        self.tombstoned: set[bytes] = {k for k, v in self._values.items() if _has_tombstone(v)}

    # --- reading -------------------------------------------------------------------------------

    def policy_of(self, key: bytes) -> KeyPolicy:
        for policy in self._policies:
            if key.startswith(policy.prefix):
                return policy
        return self._default_policy

    def value(self, key: bytes) -> ReplicatedValue:
        return self._values.get(key, EMPTY_VALUE)

    def register_value(self, key: bytes) -> bytes | None:
        """The register's visible value under the key's policy (``None``: none, or deleted)."""
        register = self.value(key).register
        if register is None:
            return None
        policy = self.policy_of(key)
        return visible_value(register, policy.policy, policy.resolver)

    def get(self, key: bytes) -> bytes | None:
        """What GET shows: the register's value, else the counter's (as Redis shows INCR's)."""
        value = self.value(key)
        shown = self.register_value(key)
        if shown is None and value.counter is not None and value.register is None:
            return b"%d" % value.counter.value()
        return shown

    def exists(self, key: bytes) -> bool:
        value = self.value(key)
        return (self.register_value(key) is not None or value.counter is not None
                or bool(value.events))

    def events(self, key: bytes) -> tuple[bytes, ...]:
        return tuple(event.item for event in self.value(key).events)

    def live_keys(self) -> list[bytes]:
        return [key for key in self._values if self.exists(key)]

    def __len__(self) -> int:
        return len(self._values)

    def digest(self) -> str:
        """SHA-256 (hex) over every key's parts: its register versions (dot, stamp, value),
        counter totals and events. Contexts are left out: a node that forgot a stable
        tombstone holds the same versions with a smaller context. A register of tombstones
        only reads as absent and is on its way out (``forget_tombstones``), so it counts as
        absent: nodes do not forget a stable tombstone at the same moment."""
        digest = hashlib.sha256()
        for key in sorted(self._values):
            value = self._values[key]
            register = value.register
            if register is not None and all(v.value is None for v in register.versions):
                value = replace(value, register=None)
                if value.is_empty():
                    continue
            digest.update(b"k%d:%s" % (len(key), key))
            if value.register is not None:
                for version in value.register.versions:
                    digest.update(_version_bytes(version))
            if value.counter is not None:
                for origin, added, subtracted in value.counter.totals:
                    digest.update(b"c%s:%d:%d;" % (origin.encode(), added, subtracted))
            for event in value.events:
                digest.update(b"e%d.%d:%s:%d:%d:%d:%s" % (
                    event.hlc.wall_ms, event.hlc.logical, event.origin.encode(), event.seq,
                    event.position, len(event.item), event.item))
        return digest.hexdigest()

    # --- changing ------------------------------------------------------------------------------

    def apply(self, effect: ReplicatedEffect, index: int) -> Applied | None:
        """Apply one replicated write (its dot is new here); returns the register's
        ``Applied`` for a ``VersionWritten``, ``None`` for the other kinds."""
        key = effect.key
        value = self.value(key)
        applied = None
        kind = type(effect)
        if kind is VersionWritten:
            applied = apply_version(value.register, effect.version, effect.context,
                                    self.policy_of(key).policy, self.siblings_max)
            if applied.state is None:
                return applied          # covered by the key's context: nothing changes
            value = replace(value, register=applied.state)
            if _has_tombstone(value):
                self.tombstoned.add(key)
        elif kind is CounterChanged:
            totals = CounterValue(((effect.origin, effect.added, effect.subtracted),))
            value = replace(value, counter=totals if value.counter is None
                            else value.counter.merge(totals))
        else:
            assert kind is EventsAppended, effect
            added = tuple(Event(effect.hlc, effect.origin, effect.seq, position, item)
                          for position, item in enumerate(effect.items))
            value = replace(value, events=tuple(sorted(value.events + added)))
        self._values[key] = value
        self._versions[key] = index
        self._changed[key] = None
        return applied

    def forget_tombstones(self, key: bytes, stable: Callable[[Dot], bool]) -> int:
        """Drop the key's register when it holds only tombstones and ``stable`` accepts every
        one of their dots (the key goes too when no other part is left); returns how many
        tombstones went. A tombstone beside a live sibling stays: it may be what GET shows,
        and it goes with the write that supersedes both."""
        value = self._values.get(key)
        register = None if value is None else value.register
        if register is None or not _has_tombstone(value):
            self.tombstoned.discard(key)
            return 0
        versions = register.versions
        if any(v.value is not None or not stable(v.dot) for v in versions):
            return 0
        value = replace(value, register=None)
        if value.is_empty():
            del self._values[key]
        else:
            self._values[key] = value
        self.tombstoned.discard(key)
        self._changed[key] = None
        return len(versions)

    def take_changes(self) -> list[Write]:
        writes: list[Write] = []
        for key in self._changed:
            value = self._values.get(key)
            if value is None:
                writes.append(DeleteRecord(key))
            else:
                writes.append(PutRecord(key, Record(Kind.REPLICATED, value, NO_EXPIRY,
                                                    self._versions[key])))
        self._changed = {}
        return writes


def _has_tombstone(value: ReplicatedValue) -> bool:
    return value.register is not None and any(v.value is None for v in value.register.versions)


def _version_bytes(version: Version) -> bytes:
    shown = b"-" if version.value is None else b"%d:%s" % (len(version.value), version.value)
    return b"v%s:%d:%d.%d:%s;" % (version.origin.encode(), version.seq, version.hlc.wall_ms,
                                   version.hlc.logical, shown)
