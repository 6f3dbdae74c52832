"""Hand-made histories, one per anomaly: every bad one is caught by the right checker, with the
right kind, and its good twin passes. Then mutants: generated linearizable histories pass, and
the same histories with one read changed into an impossible one are rejected.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from generated_histories import generate, mutate_read

from chorusdb.verify.check import CLAIMS, FinalState, check_all
from chorusdb.verify.convergence import check_convergence
from chorusdb.verify.history import ECHO, History, HistoryRecorder, Value
from chorusdb.verify.linearizability import (
    ILLEGAL_KEY,
    LINEARIZABLE,
    check_key,
    check_linearizability,
)
from chorusdb.verify.list_append import CONVERGENT_RULES, check_list_append
from chorusdb.verify.lost_writes import (
    LOSS_WINDOW_NOTE,
    LossWindow,
    check_lost_writes,
    loss_windows_from_notes,
)
from chorusdb.verify.render import render_results
from chorusdb.verify.result import (
    APPEND_ORDER,
    DIVERGENCE,
    DUPLICATED,
    FUTURE_READ,
    LOST,
    MONOTONIC_READS,
    MONOTONIC_WRITES,
    NONLINEARIZABLE,
    NONMONOTONIC_READ,
    NOT_PREFIX,
    READ_YOUR_WRITES,
    STALE_READ,
    UNDECIDED,
    UNEXPECTED,
    WRITES_FOLLOW_READS,
)
from chorusdb.verify.session import check_session

K = b"k"


class Script:
    """Writes a history by hand; each call is one record, one microsecond after the last."""

    def __init__(self) -> None:
        self.recorder = HistoryRecorder()
        self.now = 0

    def tick(self) -> int:
        self.now += 1000
        return self.now

    def invoke(self, p: int, f: str, value: Value = None, *, key: bytes = K) -> Script:
        self.recorder.invoke(p, f, key, value, time=self.tick(), node="n1")
        return self

    def ok(self, p: int, value: Any = ECHO) -> Script:
        self.recorder.ok(p, time=self.tick(), value=value, node="n1")
        return self

    def fail(self, p: int) -> Script:
        self.recorder.fail(p, time=self.tick(), error="NOTLEADER")
        return self

    def info(self, p: int) -> Script:
        self.recorder.info(p, time=self.tick(), error="timeout")
        return self

    def op(self, p: int, f: str, value: Value = None, result: Any = ECHO, **key: bytes) -> Script:
        """An operation that completes before anything else happens (``ok`` with ``result``)."""
        return self.invoke(p, f, value, **key).ok(p, result)

    @property
    def history(self) -> History:
        return self.recorder.history


# --- lost writes ----------------------------------------------------------------------------------


def _pushed_ab() -> Script:
    return Script().op(1, "rpush", b"a").op(2, "rpush", b"b")


def test_lost_list_element_is_caught_and_its_twin_passes() -> None:
    """An acknowledged push missing from the final list is lost; present, it is fine."""
    bad = check_lost_writes(_pushed_ab().history, {K: (b"a",)})
    assert bad.kinds() == {LOST}
    assert b"b" in [r.value for r in bad.anomalies[0].witness]
    assert check_lost_writes(_pushed_ab().history, {K: (b"a", b"b")}).valid


def test_loss_inside_a_declared_window_is_allowed_and_counted() -> None:
    """A loss acknowledged by the window's node inside the window is allowed, with its reason."""
    script = _pushed_ab()
    ack_time = script.history[3].time
    window = LossWindow("n1", ack_time - 10, ack_time + 10, "power loss, durability=os")
    result = check_lost_writes(script.history, {K: (b"a",)}, [window])
    assert result.valid
    assert [a.allowed_by for a in result.allowed] == ["power loss, durability=os"]
    assert result.stats["lost_allowed"] == 1


@pytest.mark.parametrize(
    "window",
    [
        LossWindow("n2", 0, 10**9, "another node's power loss"),
        LossWindow("n1", 0, 1000, "a window that closed before the acknowledgement"),
    ],
)
def test_loss_outside_any_window_still_fails(window: LossWindow) -> None:
    """A window of another node, or one that closed before the ack, explains nothing."""
    result = check_lost_writes(_pushed_ab().history, {K: (b"a",)}, [window])
    assert result.kinds() == {LOST}


def test_loss_windows_come_back_from_notes() -> None:
    """A saved history re-checks alone: its loss windows are notes in it."""
    script = _pushed_ab()
    window = {"node": "n1", "start_time": 0, "end_time": 10**6, "reason": "async failover"}
    script.recorder.note("nemesis", LOSS_WINDOW_NOTE, window, time=script.tick())
    expected = LossWindow("n1", 0, 10**6, "async failover")
    assert loss_windows_from_notes(script.history) == (expected,)


def test_unexpected_and_duplicated_elements_in_the_final_list() -> None:
    """Twice-present, never-pushed and definitely-failed elements are each reported."""
    script = _pushed_ab().invoke(3, "rpush", b"c").fail(3)
    result = check_lost_writes(script.history, {K: (b"a", b"b", b"b", b"c", b"z")})
    assert sorted(a.kind for a in result.anomalies) == [DUPLICATED, UNEXPECTED, UNEXPECTED]
    explanations = " ".join(a.explanation for a in result.anomalies)
    assert "push failed definitely" in explanations
    assert "nobody pushed it" in explanations


def test_unknown_push_may_or_may_not_survive() -> None:
    """An info push present is recovered, absent is fine."""
    script = _pushed_ab().invoke(3, "rpush", b"c").info(3)
    recovered = check_lost_writes(script.history, {K: (b"a", b"b", b"c")})
    assert recovered.valid
    assert recovered.stats["recovered"] == 1
    assert check_lost_writes(script.history, {K: (b"a", b"b")}).valid


def test_a_delete_releases_what_came_before_it() -> None:
    """Only writes invoked after every delete completed must survive."""
    script = _pushed_ab().op(3, "del").op(1, "rpush", b"c")
    assert check_lost_writes(script.history, {K: (b"c",)}).valid
    assert check_lost_writes(script.history, {K: ()}).kinds() == {LOST}


def _counter() -> Script:
    script = Script().op(1, "incrby", 5, 5, key=b"n").op(2, "incrby", 2, 7, key=b"n")
    return script.invoke(3, "incrby", 100, key=b"n").info(3)


@pytest.mark.parametrize(
    ("final", "kind"), [(b"7", None), (b"107", None), (b"5", LOST), (b"200", UNEXPECTED)]
)
def test_counter_range(final: bytes, kind: str | None) -> None:
    """A counter ends within [sum of acknowledged, + any subset of the unknown increments]."""
    result = check_lost_writes(_counter().history, {b"n": final})
    assert result.kinds() == ({kind} if kind else set())


def test_counter_shortfall_inside_a_window_is_allowed() -> None:
    """A counter shortfall is allowed only if covered increments account for all of it."""
    history = _counter().history
    second_ack = history[3]
    window = LossWindow("n1", second_ack.time, second_ack.time, "async failover")
    assert check_lost_writes(history, {b"n": b"5"}, [window]).valid
    assert check_lost_writes(history, {b"n": b"0"}, [window]).kinds() == {LOST}


def test_register_lost_and_never_written() -> None:
    """A register ends with a value some non-failed set wrote, and not missing if one was acked."""
    script = Script().op(1, "set", b"x", key=b"r").invoke(2, "set", b"y", key=b"r").fail(2)
    assert check_lost_writes(script.history, {b"r": b"x"}).valid
    assert check_lost_writes(script.history, {}).kinds() == {LOST}
    assert check_lost_writes(script.history, {b"r": b"y"}).kinds() == {UNEXPECTED}
    assert check_lost_writes(script.history, {b"r": b"x", b"q": b"?"}).kinds() == {UNEXPECTED}


# --- list-append rules ----------------------------------------------------------------------------


def _list_kinds(script: Script) -> set[str]:
    return check_list_append(script.history).kinds()


def test_stale_read() -> None:
    """A read missing a push acknowledged before it began is stale; a concurrent one is not."""
    bad = Script().op(1, "rpush", b"a").op(2, "lrange", result=())
    assert _list_kinds(bad) == {STALE_READ}
    concurrent = Script().invoke(1, "rpush", b"a").op(2, "lrange", result=()).ok(1)
    assert _list_kinds(concurrent) == set()


def test_nonmonotonic_read() -> None:
    """A read shorter than one completed before it began moves backwards in time."""
    def script(second_read: tuple[bytes, ...]) -> Script:
        pushes = Script().invoke(1, "rpush", b"a").invoke(2, "rpush", b"b")
        reads = pushes.op(3, "lrange", result=(b"a", b"b")).op(4, "lrange", result=second_read)
        return reads.ok(1).ok(2)

    assert _list_kinds(script((b"a",))) == {NONMONOTONIC_READ}
    assert _list_kinds(script((b"a", b"b"))) == set()


def test_out_of_order_appends() -> None:
    """Pushes ordered in real time must appear in that order."""
    def script(final: tuple[bytes, ...]) -> Script:
        return Script().op(1, "rpush", b"a").op(2, "rpush", b"b").op(3, "lrange", result=final)

    assert _list_kinds(script((b"b", b"a"))) == {APPEND_ORDER}
    assert _list_kinds(script((b"a", b"b"))) == set()


def test_reading_the_future_and_never_written_values() -> None:
    """Elements read before their push began, never pushed, or whose push failed."""
    future = Script().op(1, "lrange", result=(b"a",)).op(2, "rpush", b"a")
    assert FUTURE_READ in _list_kinds(future)
    invented = Script().op(1, "lrange", result=(b"q",))
    assert _list_kinds(invented) == {UNEXPECTED}
    failed = Script().invoke(2, "rpush", b"a").fail(2).op(1, "lrange", result=(b"a",))
    assert _list_kinds(failed) == {UNEXPECTED}


def test_reads_that_are_not_prefixes_and_duplicates() -> None:
    """Reads of one total order are prefixes of the longest read and hold no element twice."""
    pushes = Script().invoke(1, "rpush", b"a").invoke(2, "rpush", b"b")
    diverged = pushes.op(3, "lrange", result=(b"a", b"b")).op(4, "lrange", result=(b"b",))
    assert NOT_PREFIX in check_list_append(diverged.history, rules=CONVERGENT_RULES).kinds()
    doubled = Script().op(1, "rpush", b"a").op(2, "lrange", result=(b"a", b"a"))
    assert DUPLICATED in _list_kinds(doubled)


def test_convergent_rules_ignore_real_time() -> None:
    """A stale follower read is no anomaly for a mode that only claims a consistent prefix."""
    stale = Script().op(1, "rpush", b"a").op(2, "lrange", result=())
    assert check_list_append(stale.history, rules=CONVERGENT_RULES).valid


# --- convergence ----------------------------------------------------------------------------------


def test_divergence_with_dumps() -> None:
    """Different digests fail; dumps name each differing key with every node's value."""
    assert check_convergence({"n1": "d1", "n2": "d1", "n3": "d1"}).valid
    assert check_convergence({"n1": "d1", "n2": "d1", "n3": "d2"}).kinds() == {DIVERGENCE}
    dumps = {"n1": {K: (b"a",), b"j": b"1"}, "n2": {K: (b"a", b"b"), b"j": b"1"}, "n3": {}}
    result = check_convergence({"n1": "d1", "n2": "d2", "n3": "d3"}, dumps)
    assert result.kinds() == {DIVERGENCE}
    by_key = {a.key: a.explanation for a in result.anomalies}
    assert set(by_key) == {None, K, b"j"}
    assert "n3: (missing)" in by_key[b"j"]
    assert result.stats["divergent_keys"] == 2


# --- session guarantees ---------------------------------------------------------------------------


def test_read_your_writes() -> None:
    """A session reads its own acknowledged pushes; another session need not."""
    bad = Script().op(1, "rpush", b"a").op(1, "lrange", result=())
    assert check_session(bad.history).kinds() == {READ_YOUR_WRITES}
    good = Script().op(1, "rpush", b"a").op(1, "lrange", result=(b"a",))
    assert check_session(good.history).valid
    other_session = Script().op(1, "rpush", b"a").op(2, "lrange", result=())
    assert check_session(other_session.history).valid


def test_monotonic_reads() -> None:
    """A session never reads less than it read before."""
    bad = Script().op(2, "rpush", b"a").op(1, "lrange", result=(b"a",)).op(1, "lrange", result=())
    assert check_session(bad.history).kinds() == {MONOTONIC_READS}
    good = Script().op(2, "rpush", b"a").op(1, "lrange", result=()).op(1, "lrange", result=(b"a",))
    assert check_session(good.history).valid


def test_monotonic_writes() -> None:
    """A session's pushes land in the final order in program order."""
    script = Script().op(1, "rpush", b"a").op(1, "rpush", b"b")
    assert check_session(script.history, {K: (b"b", b"a")}).kinds() == {MONOTONIC_WRITES}
    assert check_session(script.history, {K: (b"a", b"b")}).valid


def test_writes_follow_reads() -> None:
    """A session's push lands after what it read before."""
    script = Script().op(2, "rpush", b"a").op(1, "lrange", result=(b"a",)).op(1, "rpush", b"b")
    assert check_session(script.history, {K: (b"b", b"a")}).kinds() == {WRITES_FOLLOW_READS}
    assert check_session(script.history, {K: (b"a", b"b")}).valid


# --- linearizability ------------------------------------------------------------------------------


def _register_read_after(value: bytes) -> Script:
    writes = Script().op(1, "set", b"x").op(2, "set", b"y")
    return writes.op(3, "get", result=value)


def test_nonlinearizable_register() -> None:
    """Reading x after set y completed (which followed set x) is not linearizable."""
    result = check_linearizability(_register_read_after(b"x").history)
    assert result.kinds() == {NONLINEARIZABLE}
    assert "p3 get() -> 'x'" in result.anomalies[0].explanation
    assert check_linearizability(_register_read_after(b"y").history).valid


def test_read_concurrent_with_a_write_may_see_either_value() -> None:
    """A read concurrent with a write may see the old or the new value."""
    for seen in (b"x", b"y"):
        script = Script().op(1, "set", b"x").invoke(2, "set", b"y").op(3, "get", result=seen).ok(2)
        assert check_linearizability(script.history).valid


def test_an_unknown_write_explains_a_read() -> None:
    """An info write may have taken effect; a failed one did not; neither before it began."""
    explained = Script().invoke(1, "set", b"x").info(1).op(2, "get", result=b"x")
    assert check_linearizability(explained.history).valid
    failed = Script().invoke(1, "set", b"x").fail(1).op(2, "get", result=b"x")
    assert check_linearizability(failed.history).kinds() == {NONLINEARIZABLE}
    too_early = Script().op(2, "get", result=b"x").invoke(1, "set", b"x").info(1)
    assert check_linearizability(too_early.history).kinds() == {NONLINEARIZABLE}


def test_identical_writes_with_nested_intervals() -> None:
    """Two ``set x``: the long one must take effect after ``set y`` for the last read to see x.

    Guards the symmetry reduction among identical operations: it may order A before B only
    when A is called first *and* returns no later than B, never when B is nested inside A.
    """
    script = Script().invoke(1, "set", b"x").op(2, "set", b"x").op(3, "set", b"y")
    script.op(4, "get", result=b"x").ok(1)
    assert check_linearizability(script.history).valid
    script = Script().invoke(1, "set", b"x").op(2, "set", b"x").ok(1).op(3, "set", b"y")
    script.op(4, "get", result=b"x")
    assert check_linearizability(script.history).kinds() == {NONLINEARIZABLE}


def test_a_pending_delete_suspends_the_list_lookahead() -> None:
    """While a ``del`` may still come, a later read need not start with the current list."""
    script = Script().op(1, "rpush", b"a").invoke(3, "del")
    script.op(2, "lrange", result=(b"a",)).op(4, "lrange", result=()).ok(3)
    script.op(1, "rpush", b"b").op(2, "lrange", result=(b"b",))
    assert check_linearizability(script.history).valid
    script.op(4, "lrange", result=(b"a", b"b"))
    assert check_linearizability(script.history).kinds() == {NONLINEARIZABLE}


def test_counter_model() -> None:
    """INCRBY results and reads must fit one order of the increments (info ones optional)."""
    good = Script().op(1, "incrby", 5, 5).invoke(2, "incrby", 2).info(2).op(3, "get", result=b"7")
    assert check_linearizability(good.history).valid
    bad = Script().op(1, "incrby", 5, 5).op(2, "incrby", 2, 7).op(3, "get", result=b"5")
    assert check_linearizability(bad.history).kinds() == {NONLINEARIZABLE}


def test_budget_exhaustion_is_undecided_not_a_pass() -> None:
    """A search that runs out of steps reports the key undecided, which is not valid."""
    rng = random.Random(7)
    history, _ = generate(rng, kind="register", processes=6, operations=60)
    result = check_linearizability(history, steps_per_key_max=3)
    assert not result.valid
    assert result.kinds() == {UNDECIDED}
    assert result.stats["keys_undecided"] == 1


# --- mutants --------------------------------------------------------------------------------------

MUTANT_SEEDS = range(150)


@pytest.mark.parametrize("kind", ["register", "list"])
def test_generated_histories_pass_and_their_mutants_fail(kind: str) -> None:
    """A linearizable history passes every check; one impossible read makes it illegal."""
    mutants = 0
    for seed in MUTANT_SEEDS:
        rng = random.Random(seed)
        history, final = generate(rng, kind=kind, processes=5, operations=60)
        verdict = check_key(history.operations())
        assert verdict.outcome == LINEARIZABLE, f"seed {seed}: {verdict}"
        results = check_all(
            history,
            final_state=FinalState(values={K: final}, digests={"n1": "d", "n2": "d"}),
            claims=CLAIMS,
        )
        assert all(r.valid for r in results), f"seed {seed}:\n{render_results(results)}"
        mutant = mutate_read(rng, history)
        if mutant is None:
            continue
        mutants += 1
        verdict = check_key(mutant.operations())
        assert verdict.outcome == ILLEGAL_KEY, f"seed {seed}: mutant passed"
        if kind == "list":
            assert not check_list_append(mutant).valid, f"seed {seed}: fast checks missed it"
    assert mutants >= len(MUTANT_SEEDS) * 0.9


def test_list_searches_stay_near_linear() -> None:
    """The list model's lookahead (a list must be a prefix of every read still to come) stops
    the search from trying every order of the pushes in flight: without it, some of these
    histories of 6 clients need more than 200 000 steps.
    """
    for seed in range(40):
        history, _ = generate(random.Random(seed), kind="list", processes=6, operations=100)
        verdict = check_key(history.operations(), steps_max=200_000)
        assert verdict.outcome == LINEARIZABLE, f"seed {seed}"
        assert verdict.steps < 2_000, f"seed {seed}: {verdict.steps} steps"


# --- check_all and the report ---------------------------------------------------------------------


def test_check_all_runs_what_the_claims_call_for() -> None:
    """Each claim runs its checkers, in a fixed order; an unknown claim is an error."""
    history = _pushed_ab().history
    state = FinalState(values={K: (b"a", b"b")}, digests={"n1": "d"})
    names = [r.name for r in check_all(history, final_state=state, claims=CLAIMS)]
    assert names == ["linearizability", "list-append", "lost-writes", "convergence", "session"]
    prefix_only = check_all(history, final_state=state, claims={"consistent_prefix"})
    assert [r.name for r in prefix_only] == ["list-append"]
    with pytest.raises(ValueError, match="unknown claims"):
        check_all(history, final_state=state, claims={"serializable"})


def test_report_shows_anomalies_with_their_witness() -> None:
    """The text report gives the verdict line, each anomaly, and its witness records."""
    script = _pushed_ab()
    results = check_all(
        script.history, final_state=FinalState(values={K: (b"a",)}), claims={"no_lost_writes"}
    )
    report = render_results(results)
    assert report.splitlines()[0].startswith("lost-writes: FAILED (1 anomalies)")
    assert "[ANOMALY] lost key 'k'" in report
    assert "#3 p2 ok rpush 'k' 'b'" in report
