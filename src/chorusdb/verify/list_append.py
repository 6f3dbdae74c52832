"""Fast checks for list-append histories: O(n log n) per key, each rule naming its anomaly.

With unique appended elements (``rpush``) and whole-list reads (``lrange``), every read of a
correct list is a prefix of one total order, so cheap rules catch almost every anomaly and
name it. Let ``L*`` be the longest ``ok`` read of the key (the final reads, in practice):

============  ==========================================================================
rule           what must hold
============  ==========================================================================
``prefix``     every read is a prefix of ``L*`` (else the order was not total: divergence)
``duplicates`` no read holds an element twice
``future``     every element read was pushed, by a push that did not fail, invoked before
               the read completed (else a value never written, or read from the future)
``stale``      every ``ok`` push that completed before a read began is in it
``monotonic``  a read that began after another completed is not shorter
``order``      ``ok`` pushes ordered in real time appear in that order in ``L*``
============  ==========================================================================

The first three hold in every mode that claims a consistent prefix (``CONVERGENT_RULES``); the
last three are the real-time ones that only linearizable reads promise (``REALTIME_RULES``).
Lost acknowledged pushes are ``lost_writes``'s job, with attribution. A list key that is also
deleted is not append-only: it is skipped (``stats["keys_skipped"]``) and left to the
linearizability search.

Real time is record order (``history``): A precedes B when A's completion record comes before
B's invocation record. The real-time rules sweep the reads and pushes sorted by these indices,
keeping a running maximum, so nothing is quadratic. A rule that fires on many reads of one key
reports the first ``anomalies_per_rule_max`` and counts the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

from chorusdb.verify.history import FAIL, OK, History, Operation, records_of
from chorusdb.verify.render import show_operation, show_value
from chorusdb.verify.result import (
    APPEND_ORDER,
    DUPLICATED,
    FUTURE_READ,
    NONMONOTONIC_READ,
    NOT_PREFIX,
    STALE_READ,
    UNEXPECTED,
    Anomaly,
    CheckResult,
    first_of_each_kind,
    make_result,
)

PREFIX: Final = "prefix"
NO_DUPLICATES: Final = "duplicates"
NO_FUTURE: Final = "future"
NO_STALE: Final = "stale"
MONOTONIC: Final = "monotonic"
APPEND_ORDER_RULE: Final = "order"
CONVERGENT_RULES: Final = frozenset({PREFIX, NO_DUPLICATES, NO_FUTURE})
REALTIME_RULES: Final = frozenset({NO_STALE, MONOTONIC, APPEND_ORDER_RULE})
ALL_RULES: Final = CONVERGENT_RULES | REALTIME_RULES

anomalies_per_rule_max: Final = 5
"""Anomalies reported per key and rule; the rest are only counted (``stats``)."""


def check_list_append(history: History, *, rules: Iterable[str] = ALL_RULES) -> CheckResult:
    """Apply ``rules`` to every key that holds a list (``rpush`` / ``lrange``)."""
    selected = frozenset(rules)
    assert selected <= ALL_RULES, f"unknown rules {sorted(selected - ALL_RULES)}"
    anomalies: list[Anomaly] = []
    stats: Counter[str] = Counter()
    for key, operations in history.operations_by_key().items():
        if not is_append_only_list(operations):
            stats["keys_skipped"] += any(o.f in ("rpush", "lrange") for o in operations)
            continue
        stats["keys"] += 1
        kept, counts = first_of_each_kind(
            _check_key(key, operations, selected), anomalies_per_rule_max
        )
        anomalies += kept
        stats.update(counts)
    return make_result("list-append", anomalies, stats)


def is_append_only_list(operations: Sequence[Operation]) -> bool:
    """Whether a key's operations are list appends and reads only (no ``del``)."""
    return {o.f for o in operations} <= {"rpush", "lrange"} and bool(operations)


def read_content(read: Operation) -> tuple[object, ...]:
    """The list an ``ok`` ``lrange`` returned."""
    content = read.output
    assert isinstance(content, tuple), f"lrange result {content!r} is not a list"
    return content


def _returned(operation: Operation) -> int:
    """The return index of an operation that completed (ok or fail)."""
    assert operation.return_index is not None
    return operation.return_index


def _check_key(
    key: bytes | None, operations: Sequence[Operation], rules: frozenset[str]
) -> list[Anomaly]:
    reads = [o for o in operations if o.f == "lrange" and o.status == OK]
    pushes = [o for o in operations if o.f == "rpush"]
    push_of = {o.input: o for o in pushes}
    longest = max(reads, key=lambda o: len(read_content(o)), default=None)
    order = () if longest is None else read_content(longest)
    position = {element: index for index, element in enumerate(order)}
    anomalies: list[Anomaly] = []
    for read in reads:
        anomalies += _check_read(key, read, longest, order, push_of, rules)
    if NO_STALE in rules:
        anomalies += _stale_reads(key, reads, pushes, order, position)
    if MONOTONIC in rules:
        anomalies += _shrinking_reads(key, reads)
    if APPEND_ORDER_RULE in rules:
        anomalies += _reordered_pushes(key, pushes, position)
    return anomalies


def _check_read(
    key: bytes | None,
    read: Operation,
    longest: Operation | None,
    order: tuple[object, ...],
    push_of: dict[object, Operation],
    rules: frozenset[str],
) -> list[Anomaly]:
    """The rules about one read alone: prefix, duplicates, future."""
    anomalies = []
    content = read_content(read)
    if PREFIX in rules and content != order[: len(content)]:
        assert longest is not None
        first_difference = next(
            i for i, (a, b) in enumerate(zip(content, order, strict=False)) if a != b
        )
        anomalies.append(
            Anomaly(
                NOT_PREFIX,
                key,
                f"read {show_operation(read)} differs from the longest read at index "
                f"{first_difference}: {show_value(content[first_difference])} where the longest "
                f"has {show_value(order[first_difference])}",
                records_of([read, longest]),
            )
        )
    if NO_DUPLICATES in rules:
        twice = [element for element, count in Counter(content).items() if count > 1]
        if twice:
            anomalies.append(
                Anomaly(
                    DUPLICATED,
                    key,
                    f"read {show_operation(read)} holds {show_value(tuple(twice))} more than once",
                    read.records,
                )
            )
    if NO_FUTURE in rules:
        for element in content:
            push = push_of.get(element)
            if push is None or push.status == FAIL:
                why = "nobody pushed it" if push is None else "its push failed definitely"
                anomalies.append(
                    Anomaly(
                        UNEXPECTED,
                        key,
                        f"read {show_operation(read)} holds {show_value(element)}: {why}",
                        records_of([read] if push is None else [read, push]),
                    )
                )
            elif read.return_index is not None and push.call_index > read.return_index:
                anomalies.append(
                    Anomaly(
                        FUTURE_READ,
                        key,
                        f"read {show_operation(read)} holds {show_value(element)}, pushed by "
                        f"{show_operation(push)} only after the read completed",
                        records_of([read, push]),
                    )
                )
    return anomalies


def _stale_reads(
    key: bytes | None,
    reads: Sequence[Operation],
    pushes: Sequence[Operation],
    order: tuple[object, ...],
    position: dict[object, int],
) -> list[Anomaly]:
    """Reads missing a push acknowledged before they began.

    Sweep reads by call index while admitting pushes by return index, keeping the push with
    the greatest position in ``L*`` (absent from ``L*`` counts as infinitely far). A read that
    is a prefix of ``L*`` holds exactly the first ``len`` elements, so it misses that push iff
    the position is at least its length; other reads (already ``not-prefix``) are checked by
    membership.
    """
    acknowledged = sorted((o for o in pushes if o.status == OK), key=_returned)
    anomalies = []
    admitted = 0
    farthest: Operation | None = None
    farthest_position = -1
    for read in sorted(reads, key=lambda o: o.call_index):
        while admitted < len(acknowledged) and _returned(acknowledged[admitted]) < read.call_index:
            push = acknowledged[admitted]
            admitted += 1
            push_position = position.get(push.input, len(position))
            if push_position >= farthest_position:
                farthest, farthest_position = push, push_position
        if farthest is None:
            continue
        content = read_content(read)
        if content == order[: len(content)]:
            missing = farthest if farthest_position >= len(content) else None
        else:
            in_read = set(content)
            missing = next(
                (p for p in acknowledged[:admitted] if p.input not in in_read), None
            )
        if missing is not None:
            anomalies.append(
                Anomaly(
                    STALE_READ,
                    key,
                    f"read {show_operation(read)} misses {show_value(missing.input)}, whose push "
                    "was acknowledged before the read began",
                    records_of([missing, read]),
                )
            )
    return anomalies


def _shrinking_reads(key: bytes | None, reads: Sequence[Operation]) -> list[Anomaly]:
    """Reads shorter than a read that completed before they began."""
    by_return = sorted(reads, key=_returned)
    anomalies = []
    admitted = 0
    longest: Operation | None = None
    for read in sorted(reads, key=lambda o: o.call_index):
        while admitted < len(by_return) and _returned(by_return[admitted]) < read.call_index:
            candidate = by_return[admitted]
            admitted += 1
            if longest is None or len(read_content(candidate)) > len(read_content(longest)):
                longest = candidate
        if longest is not None and len(read_content(read)) < len(read_content(longest)):
            anomalies.append(
                Anomaly(
                    NONMONOTONIC_READ,
                    key,
                    f"read {show_operation(read)} has {len(read_content(read))} elements, but "
                    f"{show_operation(longest)}, completed before it began, had "
                    f"{len(read_content(longest))}",
                    records_of([longest, read]),
                )
            )
    return anomalies


def _reordered_pushes(
    key: bytes | None, pushes: Sequence[Operation], position: dict[object, int]
) -> list[Anomaly]:
    """Pushes that completed before another began but stand after it in ``L*``."""
    placed = [o for o in pushes if o.status == OK and o.input in position]
    by_return = sorted(placed, key=_returned)
    anomalies = []
    admitted = 0
    latest: Operation | None = None
    for push in sorted(placed, key=lambda o: o.call_index):
        while admitted < len(by_return) and _returned(by_return[admitted]) < push.call_index:
            candidate = by_return[admitted]
            admitted += 1
            if latest is None or position[candidate.input] > position[latest.input]:
                latest = candidate
        if latest is not None and position[latest.input] > position[push.input]:
            anomalies.append(
                Anomaly(
                    APPEND_ORDER,
                    key,
                    f"{show_operation(latest)} completed before {show_operation(push)} began, "
                    f"yet stands after it in the longest read (index {position[latest.input]} > "
                    f"{position[push.input]})",
                    records_of([latest, push]),
                )
            )
    return anomalies
