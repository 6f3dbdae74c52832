"""Lost acknowledged writes: does the final state hold everything that was acknowledged?

Run after heal and quiesce, on the value of every key the workload used (``final_values``; a
key that is absent does not exist). Outcomes, per key model (``models.model_for``):

- **list** (``rpush`` of unique elements): an ``ok`` element missing from the final list is
  **lost**; an element nobody pushed, or whose push failed definitely, is **unexpected**; an
  element present twice is **duplicated** (an unsafe retry); an ``info`` element present is
  **recovered** (counted, fine).
- **counter** (``incrby``): the final value must lie in ``[Σok + Σ(negative unknown deltas),
  Σok + Σ(positive unknown deltas)]`` (Maelstrom's pn-counter range). Below it, increments
  were **lost**; above it, more was applied than was asked (**unexpected**: a duplicate apply
  of a retried command, typically).
- **register** (``set``): the final value must have been written by a ``set`` that did not fail
  (else **unexpected**), and a register with an acknowledged ``set`` must not end up missing
  (else **lost**). Which write must win is linearizability's question, not this checker's.

Deletes: a write only has to survive when it was invoked after every ``del`` of its key had
completed; a ``del`` with an unknown outcome may have erased anything, so it leaves nothing
required on its key (unexpected values are still reported).

**Attribution.** A loss is *allowed* when the configuration permits it and a ``LossWindow``
says so: an acknowledged write is covered when the node that acknowledged it did so inside the
window (``start_time <= ack time <= end_time``). The simulator builds windows from what it
knows (a power loss with ``durability="os"`` loses acknowledgements since the last sync; an
async failover loses those past the promoted offset) and should also record them in the
history as notes, so a saved history re-checks alone (``loss_windows_from_notes``). A lost
element is allowed only if covered; a counter shortfall only if covered increments account for
all of it; a missing register only if every required ``set`` is covered. Anything else fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from chorusdb.verify.history import FAIL, OK, History, Operation, Value, records_of
from chorusdb.verify.models import COUNTER, ILLEGAL, LIST, REGISTER, counter_value, model_for
from chorusdb.verify.render import show_operation, show_value
from chorusdb.verify.result import (
    DUPLICATED,
    LOST,
    UNEXPECTED,
    Anomaly,
    CheckResult,
    make_result,
)

LOSS_WINDOW_NOTE: Final = "loss-window"
"""``f`` of a note declaring a loss window; its value holds the ``LossWindow`` fields."""


@dataclass(frozen=True, slots=True)
class LossWindow:
    """Acknowledgements by ``node`` (any node if ``None``) in [start_time, end_time] may be lost."""

    node: str | None
    start_time: int
    end_time: int
    reason: str

    def covers(self, operation: Operation) -> bool:
        completion = operation.completion
        return (
            completion is not None
            and completion.type == OK
            and (self.node is None or operation.node == self.node)
            and self.start_time <= completion.time <= self.end_time
        )


def loss_windows_from_notes(history: History) -> tuple[LossWindow, ...]:
    """The windows declared by ``loss-window`` notes, e.g. recorded as::

    {"p":"nemesis","type":"note","f":"loss-window","v":{"node":"n2","start_time":10,
     "end_time":90,"reason":"power loss, durability=os"},"t":95}
    """
    return tuple(
        LossWindow(
            node=note.value.get("node"),
            start_time=note.value["start_time"],
            end_time=note.value["end_time"],
            reason=note.value["reason"],
        )
        for note in history.notes(LOSS_WINDOW_NOTE)
    )


def check_lost_writes(
    history: History,
    final_values: Mapping[bytes, Value],
    loss_windows: Iterable[LossWindow] = (),
    *,
    deletes_merge: bool = False,
) -> CheckResult:
    """Compare the acknowledged writes of ``history`` with ``final_values`` (see module doc).

    ``deletes_merge``: writes merge rather than follow one order (multi-leader mode), so a
    ``del`` that completed before a ``set`` began may still be concurrent with it on the nodes
    and win; a register that ends up missing is then a loss only if no ``del`` of it could
    have applied. Lists and counters are judged as always: appends and increments merge
    without loss.
    """
    windows = tuple(loss_windows)
    anomalies: list[Anomaly] = []
    stats: Counter[str] = Counter()
    by_key = history.operations_by_key()
    for key, operations in by_key.items():
        if key is None:
            continue
        final = final_values.get(key)
        model = model_for(operations)
        stats["keys"] += 1
        if model is LIST:
            anomalies += _check_list(key, operations, final, windows, stats)
        elif model is COUNTER:
            anomalies += _check_counter(key, operations, final, windows, stats)
        elif model is REGISTER:
            anomalies += _check_register(key, operations, final, windows, stats, deletes_merge)
    for key, final in sorted(final_values.items()):
        if key not in by_key and final not in (None, (), b""):
            anomalies.append(
                Anomaly(UNEXPECTED, key, f"holds {show_value(final)} but no client wrote it")
            )
    stats["lost_allowed"] = sum(1 for a in anomalies if a.allowed_by and a.kind == LOST)
    return make_result("lost-writes", anomalies, stats)


def _deletion_horizon(operations: Sequence[Operation]) -> int | None:
    """Writes invoked after this record index must survive; ``None``: none has to."""
    horizon = -1
    for operation in operations:
        if operation.f == "del" and operation.status != FAIL:
            if operation.return_index is None:
                return None
            horizon = max(horizon, operation.return_index)
    return horizon


def _required(operation: Operation, horizon: int | None) -> bool:
    return operation.status == OK and horizon is not None and operation.call_index > horizon


def _covering_reason(operations: Iterable[Operation], windows: Sequence[LossWindow]) -> str | None:
    """The reasons of the windows covering every one of ``operations``, or ``None``."""
    reasons: list[str] = []
    for operation in operations:
        covering = [w.reason for w in windows if w.covers(operation)]
        if not covering:
            return None
        reasons += [r for r in covering if r not in reasons]
    return "; ".join(reasons) if reasons else None


def _check_list(
    key: bytes,
    operations: Sequence[Operation],
    final: Value,
    windows: Sequence[LossWindow],
    stats: Counter[str],
) -> list[Anomaly]:
    anomalies = []
    horizon = _deletion_horizon(operations)
    final_list = final if isinstance(final, tuple) else ()
    occurrences = Counter(final_list)
    pushes = {o.input: o for o in operations if o.f == "rpush"}
    for element in dict.fromkeys(final_list):  # each distinct element, in list order
        push = pushes.get(element)
        if occurrences[element] > 1:
            anomalies.append(
                Anomaly(
                    DUPLICATED,
                    key,
                    f"{show_value(element)} appears {occurrences[element]} times",
                    () if push is None else push.records,
                )
            )
        if push is None:
            anomalies.append(
                Anomaly(UNEXPECTED, key, f"{show_value(element)} is in the list; nobody pushed it")
            )
        elif push.status == FAIL:
            anomalies.append(
                Anomaly(
                    UNEXPECTED,
                    key,
                    f"{show_value(element)} is in the list but its push failed definitely",
                    push.records,
                )
            )
        elif push.status != OK:
            stats["recovered"] += 1
    for push in pushes.values():
        if not _required(push, horizon):
            continue
        stats["acknowledged"] += 1
        if push.input in occurrences:
            continue
        stats["lost"] += 1
        anomaly = Anomaly(
            LOST,
            key,
            f"acknowledged {show_operation(push)} is not in the final list "
            f"(length {len(final_list)})",
            push.records,
        )
        reason = _covering_reason([push], windows)
        anomalies.append(anomaly if reason is None else anomaly.allow(reason))
    return anomalies


def _check_counter(
    key: bytes,
    operations: Sequence[Operation],
    final: Value,
    windows: Sequence[LossWindow],
    stats: Counter[str],
) -> list[Anomaly]:
    horizon = _deletion_horizon(operations)
    total = counter_value(final)
    if total is ILLEGAL:
        return [Anomaly(UNEXPECTED, key, f"final value {show_value(final)} is not an integer")]
    assert isinstance(total, int)
    increments = [o for o in operations if o.f == "incrby" and o.status != FAIL]
    required = [o for o in increments if _required(o, horizon)]
    optional: list[int] = [o.input for o in increments if not _required(o, horizon)]
    acknowledged: int = sum(o.input for o in required)
    low = acknowledged + sum(d for d in optional if d < 0)
    high = acknowledged + sum(d for d in optional if d > 0)
    stats["acknowledged"] += len(required)
    if low <= total <= high:
        return []
    covered = [o for o in required if _covering_reason([o], windows) is not None]
    bound = (
        f"{total} is outside [{low}, {high}], the range {len(required)} acknowledged and "
        f"{len(optional)} unknown increments allow"
    )
    if total < low:
        stats["lost"] += 1
        anomaly = Anomaly(LOST, key, f"{bound}: acknowledged increments are missing")
        shortfall_covered: int = sum(o.input for o in covered if o.input > 0)
        explained = total >= low - shortfall_covered
    else:
        anomaly = Anomaly(
            UNEXPECTED, key, f"{bound}: more was applied than asked (a duplicate apply?)"
        )
        excess_covered: int = -sum(o.input for o in covered if o.input < 0)
        explained = total <= high + excess_covered
    reason = _covering_reason(covered, windows) if explained else None
    return [anomaly if reason is None else anomaly.allow(reason)]


def _check_register(
    key: bytes,
    operations: Sequence[Operation],
    final: Value,
    windows: Sequence[LossWindow],
    stats: Counter[str],
    deletes_merge: bool,
) -> list[Anomaly]:
    horizon = _deletion_horizon(operations)
    sets = [o for o in operations if o.f == "set"]
    required = [o for o in sets if _required(o, horizon)]
    stats["acknowledged"] += len(required)
    if final is None:
        if not required:
            return []
        if deletes_merge and any(o.f == "del" and o.status != FAIL for o in operations):
            stats["deleted_concurrently"] += 1
            return []
        stats["lost"] += 1
        anomaly = Anomaly(
            LOST,
            key,
            f"the key is missing although {len(required)} sets were acknowledged, the last "
            f"{show_operation(required[-1])}",
            records_of(required[-1:]),
        )
        reason = _covering_reason(required, windows)
        return [anomaly if reason is None else anomaly.allow(reason)]
    writers = [o for o in sets if o.input == final]
    if not any(o.status != FAIL for o in writers):
        why = "its set failed definitely" if writers else "nobody set it"
        return [
            Anomaly(
                UNEXPECTED, key, f"final value {show_value(final)}: {why}", records_of(writers)
            )
        ]
    if all(o.status != OK for o in writers):
        stats["recovered"] += 1
    return []
