"""Tests of core/causal.py: version vectors against a dict model, HLC monotonicity, the order
independence of apply_version over simulated causal histories (every policy), the raw-clock
counterexample that shows why stamps are HLCs, PN-counters, siblings_max and stability."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from chorusdb.core.causal import (
    EMPTY_COUNTER,
    EMPTY_VECTOR,
    LWW,
    POLICIES,
    RESOLVER,
    SIBLINGS,
    ZERO_HLC,
    Hlc,
    Version,
    VersionedValue,
    VersionVector,
    apply_version,
    hlc_now,
    hlc_observe,
    is_stable,
    visible_value,
    winner,
)

PROPERTY = settings(derandomize=True, deadline=None, max_examples=150)
ORIGINS = ("a", "b", "c", "d")
vector_dicts = st.dictionaries(st.sampled_from(ORIGINS), st.integers(0, 5))


# --- version vectors ---------------------------------------------------------------------------

@PROPERTY
@given(vector_dicts, vector_dicts, vector_dicts)
def test_vector_merge_is_a_pointwise_max_join(x, y, z):
    a, b, c = VersionVector.of(x), VersionVector.of(y), VersionVector.of(z)
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    expected = {o: max(x.get(o, 0), y.get(o, 0)) for o in ORIGINS}
    assert a.merge(b) == VersionVector.of(expected)


@PROPERTY
@given(vector_dicts, vector_dicts, st.sampled_from(ORIGINS), st.integers(1, 6))
def test_vector_queries_agree_with_the_dict_model(x, y, origin, seq):
    a, b = VersionVector.of(x), VersionVector.of(y)
    assert a.as_dict() == {o: s for o, s in x.items() if s > 0}
    assert all(s >= 1 for _, s in a.entries)
    assert a.covers((origin, seq)) == (seq <= x.get(origin, 0))
    assert a.dominates(b) == all(x.get(o, 0) >= s for o, s in y.items())
    assert a.with_sequence(origin, seq).get(origin) == max(x.get(origin, 0), seq)


def test_vector_of_drops_zeros_and_sorts():
    assert VersionVector.of({"b": 2, "a": 0, "c": 1}).entries == (("b", 2), ("c", 1))
    assert VersionVector.of({"a": 0}) == EMPTY_VECTOR
    assert EMPTY_VECTOR.get("a") == 0 and not EMPTY_VECTOR.covers(("a", 1))


# --- hybrid logical clocks ---------------------------------------------------------------------

hlcs = st.builds(Hlc, st.integers(0, 1000), st.integers(0, 5))
clock_events = st.lists(st.tuples(st.integers(0, 1000), st.none() | hlcs), max_size=40)


@PROPERTY
@given(clock_events)
def test_hlc_grows_past_every_event_whatever_the_clock_does(events):
    last = ZERO_HLC
    for now_ms, remote in events:
        stamp = hlc_now(last, now_ms) if remote is None else hlc_observe(last, remote, now_ms)
        assert stamp > last
        assert stamp.wall_ms >= now_ms
        if remote is not None:
            assert stamp > remote
        last = stamp


def test_hlc_observe_ties_take_the_greater_logical():
    assert hlc_observe(Hlc(10, 3), Hlc(10, 7), 5) == Hlc(10, 8)
    assert hlc_observe(Hlc(10, 3), Hlc(9, 7), 5) == Hlc(10, 4)
    assert hlc_observe(Hlc(10, 3), Hlc(12, 7), 5) == Hlc(12, 8)
    assert hlc_observe(Hlc(10, 3), Hlc(12, 7), 20) == Hlc(20, 0)
    assert hlc_now(Hlc(10, 3), 5) == Hlc(10, 4)
    assert hlc_now(Hlc(10, 3), 11) == Hlc(11, 0)


# --- a small multi-leader simulation -----------------------------------------------------------

@dataclass
class Write:
    key: str
    version: Version
    context: VersionVector


@dataclass
class Node:
    name: str
    skew_ms: int
    vector: VersionVector = EMPTY_VECTOR
    last_stamp: Hlc = ZERO_HLC
    log: list[Write] = field(default_factory=list)   # arrival order: causally consistent


def simulate(node_count: int, skews_ms: list[int], steps, stamps: str = "hlc") -> list[Write]:
    """Run ``steps`` (write or pull) on ``node_count`` nodes; return every write made.

    A write takes the next sequence of its node and the node's vector (with the new dot) as its
    context. A pull copies a prefix of another node's log, in that log's order, so every node's
    log holds each write after everything in its context. ``stamps="wall"`` stamps writes with
    the skewed wall clock alone (no HLC), the bug the negative test shows.
    """
    nodes = [Node(ORIGINS[i], skews_ms[i]) for i in range(node_count)]
    writes: list[Write] = []
    now_ms = 0
    for is_write, actor, source, key, advance_ms, tombstone, prefix in steps:
        node = nodes[actor % node_count]
        now_ms += advance_ms
        local_ms = now_ms + node.skew_ms
        if is_write:
            seq = node.vector.get(node.name) + 1
            node.vector = node.vector.with_sequence(node.name, seq)
            node.last_stamp = hlc_now(node.last_stamp, local_ms)
            stamp = node.last_stamp if stamps == "hlc" else Hlc(local_ms, 0)
            value = None if tombstone else f"{node.name}{seq}".encode()
            write = Write(f"k{key}", Version(node.name, seq, stamp, value), node.vector)
            node.log.append(write)
            writes.append(write)
            continue
        for write in nodes[source % node_count].log[:prefix]:
            if not node.vector.covers(write.version.dot):
                node.vector = node.vector.merge(write.context)
                node.last_stamp = hlc_observe(node.last_stamp, write.version.hlc, local_ms)
                node.log.append(write)
    return writes


steps_strategy = st.lists(
    st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 3), st.integers(0, 1),
              st.integers(0, 30), st.integers(0, 4).map(lambda n: n == 0), st.integers(0, 12)),
    min_size=10, max_size=40)
skews_strategy = st.lists(st.integers(-100, 100), min_size=4, max_size=4)


def apply_all(writes: list[Write], policy: str, siblings_max: int) -> VersionedValue | None:
    state = None
    for write in writes:
        applied = apply_version(state, write.version, write.context, policy, siblings_max)
        if applied.state is not None:
            state = applied.state
    return state


def arrival_orders(writes: list[Write], seed: int) -> list[list[Write]]:
    """The written order, its reverse, and shuffles with duplicates."""
    rng = random.Random(seed)
    orders = [writes, writes[::-1]]
    for _ in range(4):
        order = writes + rng.choices(writes, k=len(writes) // 2)
        rng.shuffle(order)
        orders.append(order)
    return orders


def covered_by_another(write: Write, writes: list[Write]) -> bool:
    return any(other is not write and other.context.covers(write.version.dot) for other in writes)


@PROPERTY
@given(st.integers(2, 4), skews_strategy, steps_strategy, st.integers(0, 2**32))
def test_apply_version_is_order_independent_and_exact(node_count, skews_ms, steps, seed):
    writes = simulate(node_count, skews_ms, steps)
    for key in ("k0", "k1"):
        key_writes = [w for w in writes if w.key == key]
        if not key_writes:
            continue
        joined = EMPTY_VECTOR
        for write in key_writes:
            joined = joined.merge(write.context)
        for policy in POLICIES:
            results = {repr(apply_all(order, policy, len(key_writes)))
                       for order in arrival_orders(key_writes, seed)}
            assert len(results) == 1, f"{policy}: order changes the result (seed {seed})"
            state = apply_all(key_writes, policy, len(key_writes))
            assert state.context == joined
            if policy == LWW:
                best = max(key_writes, key=lambda w: (w.version.hlc, w.version.origin,
                                                      w.version.seq))
                assert state.versions == (best.version,)
            else:
                expected = sorted((w.version for w in key_writes
                                   if not covered_by_another(w, key_writes)),
                                  key=lambda v: v.dot)
                assert list(state.versions) == expected


@PROPERTY
@given(st.integers(2, 4), skews_strategy, steps_strategy)
def test_hlc_stamps_make_every_causally_later_write_win(node_count, skews_ms, steps):
    writes = simulate(node_count, skews_ms, steps)
    for earlier, later in itertools.permutations(writes, 2):
        if later.context.covers(earlier.version.dot):
            assert later.version.wins_over(earlier.version)


def test_raw_wall_clock_stamps_let_a_causally_later_write_lose():
    # Node a's clock runs 100 ms ahead of b's. b pulls a's write, then overwrites the key.
    steps = [(True, 0, 0, 0, 10, False, 0),    # a writes k0 at its local 110
             (False, 1, 0, 0, 5, False, 1),    # b pulls a's write
             (True, 1, 1, 0, 5, False, 0)]     # b writes k0 at its local 20: it saw a's write
    for stamps, later_wins in (("wall", False), ("hlc", True)):
        first, second = simulate(2, [100, 0, 0, 0], steps, stamps=stamps)
        assert second.context.covers(first.version.dot)
        assert second.version.wins_over(first.version) == later_wins
        state = apply_all([first, second], LWW, 1)
        assert winner(state) == (second.version if later_wins else first.version)


# --- tombstones, visibility, siblings_max --------------------------------------------------------

def test_tombstones_are_versions():
    put = Version("a", 1, Hlc(10, 0), b"x")
    delete = Version("b", 1, Hlc(20, 0), None)
    for policy in (SIBLINGS, RESOLVER):
        state = apply_all([Write("k", put, VersionVector.of({"a": 1})),
                           Write("k", delete, VersionVector.of({"b": 1}))], policy, 8)
        assert state.versions == (put, delete)
    state = apply_all([Write("k", put, VersionVector.of({"a": 1})),
                       Write("k", delete, VersionVector.of({"b": 1}))], SIBLINGS, 8)
    assert visible_value(state, SIBLINGS) is None
    rewrite = Version("a", 2, Hlc(30, 0), b"y")
    applied = apply_version(state, rewrite, VersionVector.of({"a": 2, "b": 1}), SIBLINGS, 8)
    assert applied.state.versions == (rewrite,)
    assert applied.concurrent_with == ()
    assert visible_value(applied.state, SIBLINGS) == b"y"
    covered_delete = apply_version(applied.state, delete, VersionVector.of({"b": 1}), SIBLINGS, 8)
    assert covered_delete.state is None


def test_visible_value_calls_the_resolver_only_for_siblings():
    calls = []

    def concatenate(versions):
        calls.append(versions)
        return b"+".join(v.value or b"-" for v in versions)

    one = apply_version(None, Version("b", 1, Hlc(5, 0), b"q"), VersionVector.of({"b": 1}),
                        RESOLVER, 8)
    assert visible_value(one.state, RESOLVER, concatenate) == b"q" and calls == []
    two = apply_version(one.state, Version("a", 1, Hlc(9, 0), None), VersionVector.of({"a": 1}),
                        RESOLVER, 8)
    assert [v.dot for v in two.concurrent_with] == [("b", 1)]
    assert visible_value(two.state, RESOLVER, concatenate) == b"-+q"
    assert calls == [two.state.versions]
    assert visible_value(two.state, LWW) is None


def test_siblings_max_keeps_the_greatest_whatever_the_order():
    concurrent = [Write("k", Version(o, 1, Hlc(stamp, 0), o.encode()), VersionVector.of({o: 1}))
                  for o, stamp in zip("abcde", (50, 10, 40, 30, 20))]
    expected_kept = sorted((w.version for w in concurrent if w.version.origin in "acd"),
                           key=lambda v: v.dot)
    for order in itertools.permutations(concurrent):
        state, dropped = None, []
        for write in order:
            applied = apply_version(state, write.version, write.context, SIBLINGS, 3)
            state = applied.state
            dropped.extend(applied.dropped)
        assert list(state.versions) == expected_kept
        assert sorted(v.origin for v in dropped) == ["b", "e"]


def test_lww_reports_the_concurrent_loser():
    first = Version("a", 1, Hlc(10, 0), b"x")
    state = apply_version(None, first, VersionVector.of({"a": 1}), LWW, 1).state
    loser = apply_version(state, Version("b", 1, Hlc(5, 0), b"y"), VersionVector.of({"b": 1}),
                          LWW, 1)
    assert loser.concurrent_with == (first,) and loser.state.versions == (first,)
    assert loser.state.context == VersionVector.of({"a": 1, "b": 1})


# --- PN-counters -------------------------------------------------------------------------------

counter_ops = st.lists(st.tuples(st.integers(0, 2), st.integers(-5, 5),
                                 st.booleans(), st.integers(0, 2)), max_size=40)


@PROPERTY
@given(counter_ops, st.integers(0, 2**32))
def test_counter_merges_converge_on_the_sum_of_all_adds(ops, seed):
    replicas = [EMPTY_COUNTER] * 3
    for replica, delta, also_merge, peer in ops:
        replicas[replica] = replicas[replica].add(ORIGINS[replica], delta)
        if also_merge:
            replicas[peer] = replicas[peer].merge(replicas[replica])
    for x, y in itertools.product(replicas, repeat=2):
        assert x.merge(y) == y.merge(x)
        assert x.merge(x) == x
    order = replicas * 2
    random.Random(seed).shuffle(order)
    merged = EMPTY_COUNTER
    for replica in order:
        merged = merged.merge(replica)
    assert merged.value() == sum(delta for _, delta, _, _ in ops), f"seed {seed}"
    for index, origin in enumerate(ORIGINS[:3]):
        added = sum(d for r, d, _, _ in ops if r == index and d > 0)
        subtracted = -sum(d for r, d, _, _ in ops if r == index and d < 0)
        assert merged.of_origin(origin) == (added, subtracted)


# --- stability ---------------------------------------------------------------------------------

def test_a_dot_is_stable_only_once_every_earlier_concurrent_write_is_here():
    dot = ("a", 2)
    own = VersionVector.of({"a": 2, "b": 1, "c": 3})          # this node is "a"
    reports = {"a": own,
               "b": VersionVector.of({"a": 2, "b": 1}),
               "c": VersionVector.of({"a": 2, "c": 4})}     # c wrote (c, 4) before it held the dot
    assert all(report.covers(dot) for report in reports.values())
    assert not is_stable(dot, own, reports)
    caught_up = own.with_sequence("c", 4)
    assert is_stable(dot, caught_up, {**reports, "a": caught_up})
    assert not is_stable(("a", 3), caught_up, {**reports, "a": caught_up})
