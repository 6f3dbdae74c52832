"""Session guarantees per client process, on list keys.

On append-only list keys (no ``del``), positions come from the key's final order: its final
value when the caller has it, else its longest ``ok`` read. For every process, walking its
operations on a key in program order:

- **read-your-writes**: a read holds every element the process pushed with an ``ok`` before;
- **monotonic reads**: a read holds every element of the process's previous read;
- **monotonic writes**: the process's ``ok`` pushes stand in the final order in program order;
- **writes-follow-reads**: a push lands after every element the process has read before.

Elements missing from the final order (lost writes) have no position: the position rules skip
them and ``lost_writes`` reports them. A process is one client session here; after an ``info``
the workload continues under a new process, which starts a new session. Whether a mode owes
these guarantees (sticky or roaming sessions, failover) is the caller's claim, not this
checker's concern. Each rule reports its first ``anomalies_per_rule_max`` anomalies per key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Final

from chorusdb.verify.history import OK, History, Operation, Value, records_of
from chorusdb.verify.list_append import is_append_only_list, read_content
from chorusdb.verify.render import show_operation, show_value
from chorusdb.verify.result import (
    MONOTONIC_READS,
    MONOTONIC_WRITES,
    READ_YOUR_WRITES,
    WRITES_FOLLOW_READS,
    Anomaly,
    CheckResult,
    first_of_each_kind,
    make_result,
)

anomalies_per_rule_max: Final = 5
"""Anomalies reported per key and guarantee; the rest are only counted (``stats``)."""


def check_session(
    history: History, final_values: Mapping[bytes, Value] | None = None
) -> CheckResult:
    """Check the four session guarantees on every list key of ``history``."""
    anomalies: list[Anomaly] = []
    stats: Counter[str] = Counter()
    for key, operations in history.operations_by_key().items():
        if not is_append_only_list(operations):
            continue
        stats["keys"] += 1
        final_order = _final_order(key, operations, final_values)
        position = {element: i for i, element in enumerate(final_order)}
        by_process: dict[int, list[Operation]] = {}
        for operation in operations:
            by_process.setdefault(operation.process, []).append(operation)
        found: list[Anomaly] = []
        for process_operations in by_process.values():
            found += _check_process(key, process_operations, position)
        kept, counts = first_of_each_kind(found, anomalies_per_rule_max)
        anomalies += kept
        stats.update(counts)
    return make_result("session", anomalies, stats)


def _final_order(
    key: bytes | None,
    operations: Sequence[Operation],
    final_values: Mapping[bytes, Value] | None,
) -> tuple[object, ...]:
    if final_values is not None and key is not None and key in final_values:
        final = final_values[key]
        return final if isinstance(final, tuple) else ()
    reads = [o.output for o in operations if o.f == "lrange" and o.status == OK]
    return max((r for r in reads if isinstance(r, tuple)), key=len, default=())


def _check_process(
    key: bytes | None, operations: Sequence[Operation], position: Mapping[object, int]
) -> list[Anomaly]:
    anomalies = []
    acknowledged: list[Operation] = []  # this session's ok pushes so far
    previous_read: Operation | None = None
    previous_write: Operation | None = None  # the last ok push that has a position
    farthest_read: tuple[int, Operation] | None = None  # greatest position read, and the read
    for operation in operations:
        if operation.status != OK:
            continue
        session = f"p{operation.process}"
        if operation.f == "rpush":
            acknowledged.append(operation)
            at = position.get(operation.input)
            if at is None:
                continue
            if previous_write is not None and position[previous_write.input] > at:
                anomalies.append(
                    Anomaly(
                        MONOTONIC_WRITES,
                        key,
                        f"{show_operation(operation)} lands before {session}'s earlier "
                        f"{show_operation(previous_write)}",
                        records_of([previous_write, operation]),
                    )
                )
            if farthest_read is not None and farthest_read[0] > at:
                anomalies.append(
                    Anomaly(
                        WRITES_FOLLOW_READS,
                        key,
                        f"{show_operation(operation)} lands before elements {session} read "
                        f"earlier in {show_operation(farthest_read[1])}",
                        records_of([farthest_read[1], operation]),
                    )
                )
            previous_write = operation
        elif operation.f == "lrange":
            content = read_content(operation)
            held = set(content)
            missing = next((w for w in acknowledged if w.input not in held), None)
            if missing is not None:
                anomalies.append(
                    Anomaly(
                        READ_YOUR_WRITES,
                        key,
                        f"{show_operation(operation)} misses {show_value(missing.input)}, which "
                        f"{session} pushed earlier",
                        records_of([missing, operation]),
                    )
                )
            if previous_read is not None:
                forgotten = tuple(e for e in read_content(previous_read) if e not in held)
                if forgotten:
                    anomalies.append(
                        Anomaly(
                            MONOTONIC_READS,
                            key,
                            f"{show_operation(operation)} misses {show_value(forgotten)}, seen "
                            f"by {session}'s previous read {show_operation(previous_read)}",
                            records_of([previous_read, operation]),
                        )
                    )
            positions = [position[e] for e in content if e in position]
            if positions and (farthest_read is None or max(positions) > farthest_read[0]):
                farthest_read = (max(positions), operation)
            previous_read = operation
    return anomalies
