"""Per-key linearizability: the Wing-Gong search with Lowe's memo, porcupine style.

A history is linearizable when every operation can be given one instant between its call and
its return (any time after the call, for an unknown outcome) such that the operations, run in
that order against the key's sequential model (``models``), return what they returned.
Linearizability is compositional, so each key is checked alone (porcupine's partitioning):
this is what keeps an NP-complete problem cheap on real histories.

**The search** (Wing & Gong; Lowe's memoisation; the layout of porcupine's ``checkSingle``).
Calls and returns are laid out in real-time order in a doubly linked list. Walking from the
head, a call entry is a candidate to linearize next: if its step is legal in the current state
and the pair (set of linearized operations, new state) was never reached before, it is
linearized (its call and return are unlinked, the choice is pushed on a stack) and the walk
restarts at the head. Reaching a return entry means that operation had to be linearized by
now: undo the last choice (pop, relink) and try the entry after it. An empty stack at a return
proves the key illegal; an empty list means every operation found its place. The memo makes
each (set, state) pair explored once; the set is a Python int used as a bitset.

**Unknown outcomes** return at infinity: they can be placed anywhere after their call, and last
place is the same as never. Failed operations are dropped (nothing happened), and so are pure
reads with an unknown outcome (they changed nothing and showed nothing).

Four reductions keep the search small without changing any verdict; each removes only choices
for which a surviving choice is just as good:

- **Pruning** (etcd's robustness checker), when written values are unique and the model allows
  it (no compare-and-set): an unknown write whose value no read returned after its call is
  dropped (it can go last), and one whose value a read returned gets that read's return as its
  own (it took effect before the read). Otherwise each pending write doubles the search.
- **Observers first.** An operation that cannot change the state (a read, a failed compare)
  and is legal now can be linearized now: moving it earlier, within its interval, changes no
  state anyone sees. So when the subtree after it fails, the search backs up past it instead
  of trying the other candidates at that point.
- **Identical operations in order.** Operations with the same ``f``, argument and result have
  the same step; if A is called before B and returns no later, A can always go first (match
  them to their instants earliest-deadline-first). Equal reads and pending equal writes no
  longer multiply the search by their permutations.
- **Model lookahead** (``CompiledKey.unextended`` and ``resets``), for models whose states
  only grow between resets (lists, appended strings): a read still to come sees a longer
  state unless a reset comes first, and no reset still to come can come before a read that
  returns before that reset is called. So entering a state requires every such read whose
  result does not start with the state to be linearized already. Appends in a wrong order
  die at once instead of at the next read's return.

**Budget.** ``steps_max`` bounds the loop per key (``search_steps_per_key_max``); when it runs
out the key's verdict is *undecided*, reported as an anomaly: it is not a pass. The memo grows
with the steps (about 130 bytes each at most), so the budget bounds memory too.

**Witness.** For an illegal key the search keeps the deepest stack it ever had to unwind: the
longest linearizable prefix it found, and the operation whose return it then hit, which cannot
take effect after that prefix.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Final

from chorusdb.verify.history import FAIL, OK, History, Operation, records_of
from chorusdb.verify.models import ILLEGAL, CompiledKey, Model, State, StepFunction, model_for
from chorusdb.verify.render import show_operation
from chorusdb.verify.result import NONLINEARIZABLE, UNDECIDED, Anomaly, CheckResult, make_result

search_steps_per_key_max: Final = 2_000_000
"""Iterations of the search loop for one key before giving up: about 1.5 s and 260 MB at most."""

interchangeable_scan_max: Final = 8
"""Earlier identical operations examined when looking for one to linearize first."""

witness_prefix_operations_max: Final = 6
"""Operations of the longest legal prefix quoted in a witness (the last ones)."""

LINEARIZABLE: Final = "linearizable"
ILLEGAL_KEY: Final = "illegal"
UNDECIDED_KEY: Final = "undecided"


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """The search's answer for one key.

    ``order`` is a full linearization when ``outcome`` is ``LINEARIZABLE``, the longest
    linearizable prefix found when it is ``ILLEGAL_KEY`` (then ``blocked`` is the operation
    that cannot take effect after it), and empty when the budget ran out. ``state`` describes
    the model state after ``order``.
    """

    outcome: str
    model: str
    operations: int
    steps: int
    order: tuple[Operation, ...] = ()
    blocked: Operation | None = None
    state: str = ""


def check_key(
    operations: Sequence[Operation],
    model: Model | None = None,
    *,
    steps_max: int = search_steps_per_key_max,
) -> KeyVerdict:
    """Decide whether one key's operations are linearizable under ``model``.

    Args:
        operations: every operation on the key (any status; failed ones are ignored).
        model: the sequential specification; by default the one ``models.model_for`` picks.
        steps_max: the search budget.
    """
    model = model or model_for(operations)
    kept, return_positions = _prepare(operations, model)
    compiled = model.compile(kept)
    call_positions = [o.call_index for o in kept]
    outcome, steps, order, blocked = _search(
        compiled.steps,
        _Lookahead.of(compiled, call_positions, return_positions),
        [model.is_observer(o) for o in kept],
        call_positions,
        return_positions,
        _interchangeable_predecessors(kept, call_positions, return_positions),
        compiled.initial,
        steps_max,
    )
    state = compiled.initial
    for index in order:
        state = compiled.steps[index](state)
    return KeyVerdict(
        outcome=outcome,
        model=model.name,
        operations=len(kept),
        steps=steps,
        order=tuple(kept[i] for i in order),
        blocked=None if blocked is None else kept[blocked],
        state=compiled.describe_state(state),
    )


def check_linearizability(
    history: History,
    *,
    model: Model | None = None,
    steps_per_key_max: int = search_steps_per_key_max,
) -> CheckResult:
    """Check every key of ``history``; one anomaly per illegal or undecided key."""
    anomalies = []
    stats = {"keys": 0, "operations": 0, "keys_undecided": 0, "steps": 0, "steps_key_max": 0}
    for key, operations in history.operations_by_key().items():
        verdict = check_key(operations, model, steps_max=steps_per_key_max)
        stats["keys"] += 1
        stats["operations"] += verdict.operations
        stats["steps"] += verdict.steps
        stats["steps_key_max"] = max(stats["steps_key_max"], verdict.steps)
        if verdict.outcome == ILLEGAL_KEY:
            anomalies.append(_illegal_anomaly(key, verdict))
        elif verdict.outcome == UNDECIDED_KEY:
            stats["keys_undecided"] += 1
            anomalies.append(
                Anomaly(
                    UNDECIDED,
                    key,
                    f"the search gave up after {verdict.steps} steps on {verdict.operations} "
                    f"operations ({verdict.model} model): neither linearizable nor proved illegal",
                )
            )
    return make_result("linearizability", anomalies, stats)


def _illegal_anomaly(key: bytes | None, verdict: KeyVerdict) -> Anomaly:
    assert verdict.blocked is not None
    shown = verdict.order[-witness_prefix_operations_max:]
    explanation = (
        f"no order of the {verdict.operations} operations fits the {verdict.model} model: the "
        f"longest legal prefix places {len(verdict.order)} of them, leaving state "
        f"{verdict.state}, and then {show_operation(verdict.blocked)} cannot take effect "
        "before it returns"
    )
    return Anomaly(NONLINEARIZABLE, key, explanation, records_of((*shown, verdict.blocked)))


# --- preparation ----------------------------------------------------------------------------------

_NEVER: Final = float("inf")


def _prepare(
    operations: Sequence[Operation], model: Model
) -> tuple[list[Operation], list[float]]:
    """The operations the search needs, in call order, and the position of each one's return."""
    kept = [
        o
        for o in operations
        if o.status != FAIL and (o.status == OK or o.f not in model.reads)
    ]
    returns: list[float] = [_NEVER if o.return_index is None else o.return_index for o in kept]
    if model.prunable_write is None or not model.can_prune(kept):
        return kept, returns
    written = [o.input for o in kept if o.f == model.prunable_write]
    if len(set(written)) != len(written):
        return kept, returns
    seen_at: dict[Hashable, list[int]] = {}  # written value -> returns of reads that saw it
    for o in kept:
        if o.status == OK and o.f in model.reads:
            for value in model.observed(o):
                seen_at.setdefault(value, []).append(o.return_index)
    pruned: list[Operation] = []
    pruned_returns: list[float] = []
    for o, returned in zip(kept, returns, strict=True):
        if returned == _NEVER and o.f == model.prunable_write:
            sightings = sorted(seen_at.get(o.input, []))
            later = bisect_right(sightings, o.call_index)
            if later == len(sightings):
                continue  # nobody saw it after it began: it can go last, which is never
            returned = sightings[later] - 0.5  # it took effect before that read returned
        pruned.append(o)
        pruned_returns.append(returned)
    return pruned, pruned_returns


def _interchangeable_predecessors(
    kept: Sequence[Operation], calls: Sequence[int], returns: Sequence[float]
) -> list[int]:
    """For each operation, the index of an identical one that may be linearized first, or -1.

    Two operations are identical when they have the same ``f``, argument and result (or both
    an unknown result): their steps are the same function. If A is called before B and returns
    no later, some linearization (if any exists) places A before B: match the identical
    operations to the instants used for them earliest-deadline-first, which never picks B
    while A is available. So the search may refuse B until A is placed, which cuts the
    permutations of equal reads and of pending equal writes. One such A per operation is
    enough (any subset of these constraints is sound); the scan back is bounded.
    """
    predecessors = [-1] * len(kept)
    groups: dict[tuple[object, ...], list[int]] = {}
    for index, operation in enumerate(kept):
        known = operation.status == OK
        signature = (operation.f, operation.input, known, operation.output if known else None)
        group = groups.setdefault(signature, [])
        for candidate in reversed(group[-interchangeable_scan_max:]):
            if calls[candidate] < calls[index] and returns[candidate] <= returns[index]:
                predecessors[index] = candidate
                break
        group.append(index)
    return predecessors


# --- the search -----------------------------------------------------------------------------------


def _linked_events(
    call_positions: list[int], return_positions: list[float]
) -> tuple[list[int], list[int], list[int], list[int]]:
    """The doubly linked list of calls and returns in real-time order, as parallel arrays.

    Entry 0 is the head and entry ``2n + 1`` the tail; entries 1..2n are the events. Returns
    (next, previous, operation of each entry, matching return entry of each call entry, 0 for
    a return entry).
    """
    count = len(call_positions)
    events = sorted(
        [(call_positions[i], 0, i) for i in range(count)]
        + [(return_positions[i], 1, i) for i in range(count)]
    )
    tail = 2 * count + 1
    next_entry = list(range(1, tail + 2))
    previous_entry = list(range(-1, tail + 1))
    operation_of = [0] * (tail + 1)
    return_entry_of = [0] * count
    for entry, (_, is_return, index) in enumerate(events, start=1):
        operation_of[entry] = index
        if is_return:
            return_entry_of[index] = entry
    matching_return = [0] * (tail + 1)
    for entry, (_, is_return, index) in enumerate(events, start=1):
        if not is_return:
            matching_return[entry] = return_entry_of[index]
    return next_entry, previous_entry, operation_of, matching_return


class _Lookahead:
    """The reads that must be linearized before the search may enter a state (module doc)."""

    def __init__(
        self,
        unextended: Callable[[State], int],
        resets: Sequence[tuple[int, int]],
        return_positions: Sequence[float],
    ) -> None:
        self._unextended = unextended
        self._resets = sorted(resets)  # (call position, bit), in call order
        by_return = sorted(range(len(return_positions)), key=return_positions.__getitem__)
        self._return_order = [return_positions[i] for i in by_return]
        self._returned_before = [0]  # [k]: bitset of the k operations that return first
        for index in by_return:
            self._returned_before.append(self._returned_before[-1] | 1 << index)

    @classmethod
    def of(
        cls,
        compiled: CompiledKey,
        call_positions: Sequence[int],
        return_positions: Sequence[float],
    ) -> _Lookahead | None:
        if compiled.unextended is None:
            return None
        resets = [(call_positions[i], 1 << i) for i in compiled.resets]
        return cls(compiled.unextended, resets, return_positions)

    def required_reads(self, state: State, linearized: int) -> int:
        blocking = self._unextended(state)
        if not blocking:
            return 0
        for call_position, bit in self._resets:
            if not linearized & bit:  # the first reset still to come
                bound = bisect_left(self._return_order, call_position)
                return blocking & self._returned_before[bound]
        return blocking


def _search(
    steps: list[StepFunction],
    lookahead: _Lookahead | None,
    observers: list[bool],
    call_positions: list[int],
    return_positions: list[float],
    predecessors: list[int],
    initial: State,
    steps_max: int,
) -> tuple[str, int, list[int], int | None]:
    """Wing-Gong search over one key; returns (outcome, steps, order or prefix, blocked)."""
    next_entry, previous_entry, operation_of, matching_return = _linked_events(
        call_positions, return_positions
    )
    tail = 2 * len(steps) + 1  # as laid out by _linked_events
    bits = [1 << i for i in range(len(steps))]
    required = [0 if p < 0 else 1 << p for p in predecessors]
    linearized = 0
    state = initial
    seen: set[tuple[int, State]] = set()
    stack: list[tuple[int, State, bool]] = []  # (call entry, state before it, observer?)
    deepest = -1
    prefix: list[int] = []
    blocked: int | None = None
    budget = steps_max
    entry = next_entry[0]
    while next_entry[0] != tail:
        budget -= 1
        if budget < 0:
            return UNDECIDED_KEY, steps_max, [], None
        return_entry = matching_return[entry]
        if return_entry:  # a call: try to linearize it now
            operation = operation_of[entry]
            new_state = steps[operation](state)
            if new_state is not ILLEGAL:
                new_linearized = linearized | bits[operation]
                need = required[operation]
                if lookahead is not None:
                    need |= lookahead.required_reads(new_state, new_linearized)
                memo_key = (new_linearized, new_state)
                if new_linearized & need == need and memo_key not in seen:
                    seen.add(memo_key)
                    stack.append((entry, state, observers[operation]))
                    linearized = new_linearized
                    state = new_state
                    for lifted in (entry, return_entry):  # unlink the call and its return
                        before, after = previous_entry[lifted], next_entry[lifted]
                        next_entry[before] = after
                        previous_entry[after] = before
                    entry = next_entry[0]
                    continue
            entry = next_entry[entry]
            continue
        # A return of an operation not yet linearized: undo choices. An observer that was legal
        # where it was placed needs no alternative (module docstring), so undo past it too.
        if len(stack) > deepest:
            deepest = len(stack)
            prefix = [operation_of[e] for e, _, _ in stack]
            blocked = operation_of[entry]
        observer = True
        while observer:
            if not stack:
                return ILLEGAL_KEY, steps_max - budget, prefix, blocked
            entry, state, observer = stack.pop()
            linearized ^= bits[operation_of[entry]]
            for relinked in (matching_return[entry], entry):  # the reverse of the unlinking
                next_entry[previous_entry[relinked]] = relinked
                previous_entry[next_entry[relinked]] = relinked
        entry = next_entry[entry]
    return LINEARIZABLE, steps_max - budget, [operation_of[e] for e, _, _ in stack], None
