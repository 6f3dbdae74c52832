"""Causality for multi-leader mode: version vectors, hybrid logical clocks, per-key versions and
their conflict policies, PN-counters, and the stability rule that lets tombstones go.

**Dots.** Every node numbers the writes it accepts 1, 2, 3, ... (its *origin sequence*). The pair
``(origin, seq)`` — a *dot* — names one write forever, on every node. A node's *version vector*
maps each origin to the highest sequence it holds; nodes pull each other's logs per origin in
order, so a vector ``{a: 5}`` means "holds a's writes 1..5", and ``covers((a, 3))`` is a
membership test, not a guess.

**Contexts.** A write carries the accepting node's vector at the moment it was written (its dot
included): its *context*, everything the writer had seen. Write ``w`` causally follows ``v``
exactly when ``w``'s context covers ``v``'s dot; if neither covers the other they are
concurrent: a conflict. Per key we keep the surviving versions and the join of the contexts
applied so far. A new write removes every held version its context covers, and a write whose dot
the key's joined context already covers is obsolete or a duplicate and changes nothing. This is
the dotted-version-vector discipline: because each version is judged by its own writer's context
(not by the vector of whichever replica happens to store it), a version is removed as soon as any
write that saw it arrives, so siblings are only ever truly concurrent writes and do not pile up
the way per-replica vectors make them (the "sibling explosion" of client-id-less vector clocks).
The result is the same in any order of arrival, with duplicates: the survivors are the applied
writes whose dot no other applied write's context covers, and the context is the join of all.

**Policies**, chosen per key prefix by the caller:

- ``SIBLINGS`` keeps every concurrent version (tombstones too) and GET shows the LWW winner among
  them; ``RESOLVER`` keeps the same set and hands it to an application function.
- ``LWW`` keeps a single version: the greatest ``(hlc, origin, seq)`` among everything applied.
  It does not drop a version because a later context covers it; it relies on the stamps: a
  hybrid logical clock (Kulkarni et al., 2014) ticks past every stamp a node has observed, so a
  causally later write always carries the larger stamp and "last writer" agrees with causality.
  With raw wall-clock stamps a node whose clock lags would lose to writes it already saw, which
  the tests demonstrate; that is why stamps come from ``hlc_now``/``hlc_observe`` only.

``siblings_max`` bounds the kept set: beyond it the versions that lose by the LWW order are
dropped and reported (so the caller can count or record them). The bound is lossy, and once it
drops a version the result may depend on arrival order when a later write would have removed a
kept sibling; under the bound the policy is exact.

**Counters** are PN-counters: per origin the total it added and the total it subtracted, merged
by per-origin maximum, so merges commute and repeat harmlessly and the value is the sum of all
increments whatever the order in which replicas met.

**Stability.** A tombstone must stay while a write concurrent with it may still arrive: forget it
too early and an older concurrent value resurrects here but not elsewhere. ``is_stable`` answers
"no concurrent write can still come": every member reported holding the dot, and this node
already holds everything each member wrote before its report (anything a member wrote after it
held the dot causally follows the dot, and is not concurrent with it).

Sans-I/O: time enters only as ``now_ms`` arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Dot = tuple[str, int]
"""``(origin node id, origin sequence >= 1)``: unique forever per write."""


@dataclass(frozen=True, slots=True)
class VersionVector:
    """origin -> highest sequence held; entries sorted by origin, every seq >= 1 (0 = absent)."""

    entries: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        origins = [origin for origin, _ in self.entries]
        assert origins == sorted(set(origins)), f"entries not sorted/unique: {self.entries}"
        assert all(seq >= 1 for _, seq in self.entries), f"sequence below 1: {self.entries}"

    def get(self, origin: str) -> int:
        for entry_origin, seq in self.entries:
            if entry_origin == origin:
                return seq
        return 0

    def covers(self, dot: Dot) -> bool:
        return dot[1] <= self.get(dot[0])

    def merge(self, other: VersionVector) -> VersionVector:
        merged = self.as_dict()
        for origin, seq in other.entries:
            merged[origin] = max(merged.get(origin, 0), seq)
        return VersionVector.of(merged)

    def with_sequence(self, origin: str, seq: int) -> VersionVector:
        assert seq >= 1, f"sequence {seq} of {origin!r} below 1"
        return self.merge(VersionVector(((origin, seq),)))

    def dominates(self, other: VersionVector) -> bool:
        return all(self.get(origin) >= seq for origin, seq in other.entries)

    @staticmethod
    def of(mapping: Mapping[str, int]) -> VersionVector:
        assert all(seq >= 0 for seq in mapping.values()), f"negative sequence: {dict(mapping)}"
        return VersionVector(tuple(sorted((o, s) for o, s in mapping.items() if s > 0)))

    def as_dict(self) -> dict[str, int]:
        return dict(self.entries)


EMPTY_VECTOR = VersionVector()


@dataclass(frozen=True, slots=True, order=True)
class Hlc:
    """Hybrid logical clock timestamp (Kulkarni et al.): wall_ms then logical, compared as a tuple.

    ``wall_ms`` is the greatest physical time the node has seen (its own clock or a peer's stamp);
    ``logical`` counts events within that millisecond, so stamps stay close to wall time yet
    always grow past everything observed.
    """

    wall_ms: int
    logical: int


ZERO_HLC = Hlc(0, 0)


def hlc_now(last: Hlc, now_ms: int) -> Hlc:
    """The stamp of a local event: greater than ``last``, ``wall_ms >= now_ms``."""
    wall_ms = max(last.wall_ms, now_ms)
    return Hlc(wall_ms, last.logical + 1 if wall_ms == last.wall_ms else 0)


def hlc_observe(last: Hlc, remote: Hlc, now_ms: int) -> Hlc:
    """The stamp after receiving ``remote``: greater than both ``last`` and ``remote``."""
    wall_ms = max(last.wall_ms, remote.wall_ms, now_ms)
    tied = [stamp.logical for stamp in (last, remote) if stamp.wall_ms == wall_ms]
    return Hlc(wall_ms, max(tied) + 1 if tied else 0)


@dataclass(frozen=True, slots=True)
class Version:
    """One write of a key: its dot, its HLC stamp, and its value (None: a delete, a tombstone)."""

    origin: str
    seq: int
    hlc: Hlc
    value: bytes | None

    def __post_init__(self) -> None:
        assert self.seq >= 1, f"sequence {self.seq} of {self.origin!r} below 1"

    @property
    def dot(self) -> Dot:
        return (self.origin, self.seq)

    def wins_over(self, other: Version) -> bool:
        """The LWW order: the greater ``(hlc, origin, seq)``; total, since dots are unique."""
        return _lww_order(self) > _lww_order(other)


def _lww_order(version: Version) -> tuple[Hlc, str, int]:
    return (version.hlc, version.origin, version.seq)


LWW = "lww"
SIBLINGS = "siblings"
RESOLVER = "resolver"
POLICIES = (LWW, SIBLINGS, RESOLVER)

Resolver = Callable[[tuple[Version, ...]], bytes | None]
"""Merges concurrent versions (sorted by dot, tombstones included) into the value GET shows."""


@dataclass(frozen=True, slots=True)
class VersionedValue:
    """A register key's replicated state.

    versions: the surviving versions, sorted by dot (origin, seq). With SIBLINGS and RESOLVER:
      every version no other applied write's context covers (concurrent siblings; tombstones
      included). With LWW: exactly one, the greatest by Version.wins_over among all applied.
    context: join of the contexts of every version applied to the key, with their dots.
    """

    versions: tuple[Version, ...]
    context: VersionVector

    def __post_init__(self) -> None:
        assert self.versions, "a versioned value holds at least one version"
        dots = [version.dot for version in self.versions]
        assert dots == sorted(set(dots)), f"versions not sorted/unique by dot: {dots}"
        assert all(self.context.covers(dot) for dot in dots), "context misses a held dot"


@dataclass(frozen=True, slots=True)
class Applied:
    """What apply_version did.

    state: the new state, or None when the version was already covered (a duplicate or an
      obsolete write): nothing changes.
    concurrent_with: the held versions that neither covered nor were covered by the new one
      (a conflict when non-empty). For LWW the losers are these plus the new version, minus
      the winner.
    dropped: versions (possibly the new one) removed only because more than siblings_max
      concurrent versions would otherwise be kept.
    """

    state: VersionedValue | None
    concurrent_with: tuple[Version, ...]
    dropped: tuple[Version, ...] = field(default=())


def apply_version(state: VersionedValue | None, version: Version, context: VersionVector,
                  policy: str, siblings_max: int) -> Applied:
    """Apply one write of a key. ``context`` is what the writer had seen when it wrote
    ``version``: usually its node's version vector, or the context a client read with the
    siblings (``CHORUS.SETCTX``). It need not cover the version's own dot, and should not
    where a client names what it supersedes: a vector entry ``{a: 9}`` would also cover an
    earlier sibling ``a:5`` the client never saw. The key's context gains the dot."""
    assert policy in POLICIES, f"unknown policy {policy!r}"
    assert siblings_max >= 1, f"siblings_max {siblings_max} below 1"
    if state is None:
        held, held_context = (), EMPTY_VECTOR
    elif state.context.covers(version.dot):
        return Applied(None, ())
    else:
        held, held_context = state.versions, state.context
    concurrent_with = tuple(old for old in held if not context.covers(old.dot))
    merged_context = held_context.merge(context).with_sequence(*version.dot)
    if policy == LWW:
        lww_winner = max((*held, version), key=_lww_order)
        return Applied(VersionedValue((lww_winner,), merged_context), concurrent_with)
    candidates = sorted((*concurrent_with, version), key=_lww_order, reverse=True)
    kept, dropped = candidates[:siblings_max], candidates[siblings_max:]
    survivors = tuple(sorted(kept, key=lambda v: v.dot))
    return Applied(VersionedValue(survivors, merged_context), concurrent_with,
                   tuple(sorted(dropped, key=lambda v: v.dot)))


def winner(state: VersionedValue) -> Version:
    """The greatest held version by ``wins_over``: what GET shows under LWW and SIBLINGS."""
    return max(state.versions, key=_lww_order)


def visible_value(state: VersionedValue, policy: str,
                  resolver: Resolver | None = None) -> bytes | None:
    """The value a read shows (None: the key reads as absent)."""
    assert policy in POLICIES, f"unknown policy {policy!r}"
    if policy != RESOLVER:
        return winner(state).value
    if len(state.versions) == 1:
        return state.versions[0].value
    assert resolver is not None, "the resolver policy needs a resolver"
    return resolver(state.versions)


@dataclass(frozen=True, slots=True)
class CounterValue:
    """A counter key: per origin the total it added and the total it subtracted (both >= 0),
    sorted by origin, origins with both totals 0 left out. value = sum(p) - sum(n).

    Only ``origin`` itself grows its own totals (``add``); replicas combine by ``merge``.
    """

    totals: tuple[tuple[str, int, int], ...]

    def __post_init__(self) -> None:
        origins = [origin for origin, _, _ in self.totals]
        assert origins == sorted(set(origins)), f"totals not sorted/unique: {self.totals}"
        assert all(p >= 0 and n >= 0 and p + n > 0 for _, p, n in self.totals), self.totals

    def value(self) -> int:
        return sum(p - n for _, p, n in self.totals)

    def of_origin(self, origin: str) -> tuple[int, int]:
        for entry_origin, p, n in self.totals:
            if entry_origin == origin:
                return (p, n)
        return (0, 0)

    def add(self, origin: str, delta: int) -> CounterValue:
        p, n = self.of_origin(origin)
        grown = (p + delta, n) if delta >= 0 else (p, n - delta)
        return self._with({origin: grown})

    def merge(self, other: CounterValue) -> CounterValue:
        return self._with({origin: (p, n) for origin, p, n in other.totals})

    def _with(self, incoming: Mapping[str, tuple[int, int]]) -> CounterValue:
        """Per origin the maximum of the held and the incoming totals."""
        totals = {origin: (p, n) for origin, p, n in self.totals}
        for origin, (p, n) in incoming.items():
            held_p, held_n = totals.get(origin, (0, 0))
            totals[origin] = (max(held_p, p), max(held_n, n))
        return CounterValue(tuple(sorted((o, p, n) for o, (p, n) in totals.items() if p + n > 0)))


EMPTY_COUNTER = CounterValue(())


def is_stable(dot: Dot, own_vector: VersionVector,
              reports: Mapping[str, VersionVector]) -> bool:
    """True when every member is known to hold ``dot`` AND this node holds everything each member
    wrote before it did: for every member m in ``reports`` (the latest vector m reported about
    itself; this node's own id maps to ``own_vector``): ``reports[m].covers(dot)`` and
    ``own_vector.get(m) >= reports[m].get(m)``. Only then can no write concurrent with ``dot``
    still arrive here, so a tombstone at ``dot`` may be forgotten without resurrection or
    divergence."""
    assert reports, "reports must name every member, this node included"
    return all(report.covers(dot) and own_vector.get(member) >= report.get(member)
               for member, report in reports.items())
