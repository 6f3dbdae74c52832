"""Compact text for people: values, records, operations and checker results.

Used in anomaly explanations and by the simulator's command line. Everything is bounded: long
lists show their length and last few elements, and a result shows its first few anomalies with
their witnesses (the history records around the failure), then a count of the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from chorusdb.verify.history import NOTE, Op, Operation
from chorusdb.verify.result import CheckResult

rendered_list_items_max: Final = 6
"""Elements of a list value shown (the last ones, after the length of a longer list)."""

rendered_bytes_max: Final = 64
"""Bytes of one byte string shown before it is cut."""

rendered_anomalies_max: Final = 10
"""Anomalies shown per result (unexplained first), the rest counted."""


def show_value(value: object) -> str:
    """A short, unambiguous rendering of a record value."""
    if isinstance(value, bytes):
        text = repr(value[:rendered_bytes_max])[1:]
        return text + ("…" if len(value) > rendered_bytes_max else "")
    if isinstance(value, tuple | list):
        items = " ".join(show_value(v) for v in value[-rendered_list_items_max:])
        if len(value) > rendered_list_items_max:
            return f"[{len(value)} items: … {items}]"
        return f"[{items}]"
    return repr(value)


def show_record(record: Op) -> str:
    """One line for one record: ``#44 p3 ok rpush 'k7' 'c3-118' t=2.815400991 @n2``."""
    parts = [f"#{record.index}", f"p{record.process}" if record.type != NOTE else record.process]
    parts += [record.type, record.f]
    if record.key is not None:
        parts.append(show_value(record.key))
    if record.value is not None:
        parts.append(show_value(record.value) if record.type != NOTE else str(record.value))
    parts.append(f"t={record.time / 1e9:.9f}")
    if record.node is not None:
        parts.append(f"@{record.node}")
    if record.error is not None:
        parts.append(f"err={record.error!r}")
    return " ".join(str(p) for p in parts)


def show_operation(operation: Operation) -> str:
    """``p3 rpush('c3-118') -> ok [#41..#44]`` — an operation with its result and records.

    A result that only echoes the argument (a write) shows as ``ok``.
    """
    argument = "" if operation.input is None else show_value(operation.input)
    text = f"p{operation.process} {operation.f}({argument})"
    echoed = operation.input is not None and operation.output == operation.input
    if operation.status == "ok" and not echoed:
        text += f" -> {show_value(operation.output)}"
    else:
        text += f" -> {operation.status}"
    span = f"#{operation.call_index}.."
    span += "?" if operation.completion is None else f"#{operation.completion.index}"
    return f"{text} [{span}]"


def render_results(results: Iterable[CheckResult]) -> str:
    """A report of checker results: verdicts, stats, and anomalies with their witnesses."""
    lines = []
    for result in results:
        verdict = "ok" if result.valid else f"FAILED ({len(result.anomalies)} anomalies)"
        stats = " ".join(f"{name}={value}" for name, value in result.stats.items())
        allowed = f" allowed={len(result.allowed)}" if result.allowed else ""
        lines.append(f"{result.name}: {verdict}{allowed}  {stats}".rstrip())
        shown = (*result.anomalies, *result.allowed)[:rendered_anomalies_max]
        for anomaly in shown:
            key = "" if anomaly.key is None else f" key {show_value(anomaly.key)}"
            tag = f"allowed: {anomaly.allowed_by}" if anomaly.allowed_by else "ANOMALY"
            lines.append(f"  [{tag}] {anomaly.kind}{key}: {anomaly.explanation}")
            lines.extend(f"      {show_record(record)}" for record in anomaly.witness)
        hidden = len(result.anomalies) + len(result.allowed) - len(shown)
        if hidden > 0:
            lines.append(f"  ... and {hidden} more")
    return "\n".join(lines)
