"""What every checker returns: a verdict, the anomalies that make it, and the evidence.

A checker never stops at the first problem: it reports every anomaly it finds (each with a
small witness, the history records that show it) so one failing run explains itself. An
anomaly that the run's configuration allows (a loss inside a declared loss window, such as an
async failover) moves to ``allowed`` with the reason; it does not fail the run, but it is
counted, because negative controls (runs that must show the allowed anomaly) need to see it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from chorusdb.verify.history import Op

# Anomaly kinds, shared by the checkers so reports and tests can name them.
LOST: Final = "lost"  # an acknowledged write is missing from the final state
UNEXPECTED: Final = "unexpected"  # a value nobody wrote (or whose write failed) was observed
DUPLICATED: Final = "duplicated"  # one write shows up twice
FUTURE_READ: Final = "future-read"  # a read saw a write invoked after the read completed
NOT_PREFIX: Final = "not-prefix"  # a read that is not a prefix of the longest read
STALE_READ: Final = "stale-read"  # a read misses a write that completed before it began
NONMONOTONIC_READ: Final = "nonmonotonic-read"  # a later read is shorter than an earlier one
APPEND_ORDER: Final = "append-order"  # appends ordered in real time land in the other order
NONLINEARIZABLE: Final = "nonlinearizable"  # no legal sequential order exists
UNDECIDED: Final = "undecided"  # the search budget ran out: neither a pass nor a proof
DIVERGENCE: Final = "divergence"  # replicas disagree after heal and quiesce
READ_YOUR_WRITES: Final = "read-your-writes"
MONOTONIC_READS: Final = "monotonic-reads"
MONOTONIC_WRITES: Final = "monotonic-writes"
WRITES_FOLLOW_READS: Final = "writes-follow-reads"


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One thing a correct system could not have produced (unless ``allowed_by`` says why).

    ``witness`` holds the few history records that show it, in history order.
    """

    kind: str
    key: bytes | None
    explanation: str
    witness: tuple[Op, ...] = ()
    allowed_by: str | None = None

    def allow(self, reason: str) -> Anomaly:
        """This anomaly, attributed to a loss the configuration allows."""
        return replace(self, allowed_by=reason)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one checker: valid when no anomaly is left unexplained."""

    name: str
    anomalies: tuple[Anomaly, ...] = ()
    allowed: tuple[Anomaly, ...] = ()
    stats: Mapping[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.anomalies

    def kinds(self) -> set[str]:
        """The kinds of the unexplained anomalies."""
        return {anomaly.kind for anomaly in self.anomalies}


def make_result(
    name: str, anomalies: Iterable[Anomaly], stats: Mapping[str, int] | None = None
) -> CheckResult:
    """A result that splits ``anomalies`` into unexplained and allowed ones."""
    found = tuple(anomalies)
    return CheckResult(
        name=name,
        anomalies=tuple(a for a in found if a.allowed_by is None),
        allowed=tuple(a for a in found if a.allowed_by is not None),
        stats=dict(stats or {}),
    )


def first_of_each_kind(
    anomalies: Iterable[Anomaly], limit: int
) -> tuple[list[Anomaly], Counter[str]]:
    """The first ``limit`` anomalies of each kind, and how many of each kind there were.

    For checkers where one fault shows up in many places (every later read of a key is stale):
    the report stays short and the counts stay exact.
    """
    kept: list[Anomaly] = []
    counts: Counter[str] = Counter()
    for anomaly in anomalies:
        counts[anomaly.kind] += 1
        if counts[anomaly.kind] <= limit:
            kept.append(anomaly)
    return kept, counts
