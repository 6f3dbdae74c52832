"""One entry point for a run: the checkers a replication mode's claims call for.

A replication mode claims a set of properties (what it guarantees under faults, and what it
must never do); each claim runs these checkers:

=====================  ==================================================================
claim                  checkers
=====================  ==================================================================
``linearizable``       ``linearizability`` on every key, and ``list_append`` with all rules
``consistent_prefix``  ``list_append`` with the convergent rules (prefix, duplicates, future)
``no_lost_writes``     ``lost_writes`` against ``final_state.values``, with loss windows
``no_lost_merged_``    the same, where writes merge (multi-leader): a register may end
``writes``             missing where a delete may have been concurrent with its last set
``convergence``        ``convergence`` of ``final_state.digests`` / ``final_state.dumps``
``session``            ``session`` on list keys, ordered by ``final_state.values``
=====================  ==================================================================

A mode's ``linearizable`` claim covers every operation but the reads a replica answered stale
(``Op.stale``, a follower's default); those are held to the ``consistent_prefix`` rules.

An anomaly a mode allows only under stated faults (an async failover losing acknowledged
writes) is expressed as a ``LossWindow``: allowed, attributed and counted. The claim stays;
only a property the mode never promises is left out (async modes do not claim
``linearizable``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from chorusdb.verify.convergence import check_convergence
from chorusdb.verify.history import NOTE, History, Value
from chorusdb.verify.linearizability import check_linearizability
from chorusdb.verify.list_append import (
    ALL_RULES,
    CONVERGENT_RULES,
    NO_DUPLICATES,
    NO_FUTURE,
    check_list_append,
)
from chorusdb.verify.lost_writes import LossWindow, check_lost_writes
from chorusdb.verify.result import CheckResult
from chorusdb.verify.session import check_session

LINEARIZABLE: Final = "linearizable"
CONSISTENT_PREFIX: Final = "consistent_prefix"
NO_LOST_WRITES: Final = "no_lost_writes"
CONVERGENCE: Final = "convergence"
SESSION: Final = "session"
NO_LOST_MERGED_WRITES: Final = "no_lost_merged_writes"
"""``no_lost_writes`` where writes merge instead of following one order (multi-leader): every
acknowledged append and increment survives, every final value was written by someone, and a
register is missing only where a delete may have been concurrent with its last set."""
CLAIMS: Final = frozenset({LINEARIZABLE, CONSISTENT_PREFIX, NO_LOST_WRITES, CONVERGENCE, SESSION,
                           NO_LOST_MERGED_WRITES})


@dataclass(frozen=True, slots=True)
class FinalState:
    """What the run observed after heal and quiesce.

    ``values``: every key the workload used -> its final value (from the linearizable read, or
    from one replica; absent means the key does not exist). ``digests``: node -> data digest.
    ``dumps``: node -> key -> value, optional, to show where replicas differ.
    """

    values: Mapping[bytes, Value] = field(default_factory=dict)
    digests: Mapping[str, str] = field(default_factory=dict)
    dumps: Mapping[str, Mapping[bytes, Value]] = field(default_factory=dict)


def check_all(
    history: History,
    *,
    final_state: FinalState,
    loss_windows: Iterable[LossWindow] = (),
    claims: Iterable[str],
) -> list[CheckResult]:
    """Run the checkers ``claims`` call for (module docstring), in a fixed order."""
    claimed = frozenset(claims)
    if not claimed <= CLAIMS:
        raise ValueError(f"unknown claims {sorted(claimed - CLAIMS)}; known: {sorted(CLAIMS)}")
    results = []
    if LINEARIZABLE in claimed:
        current = history.without_stale_reads()
        results.append(check_linearizability(current))
        results.append(check_list_append(current, rules=ALL_RULES))
        if current is not history and CONSISTENT_PREFIX in claimed:
            results.append(check_list_append(history, rules=CONVERGENT_RULES))
    elif CONSISTENT_PREFIX in claimed:
        results.append(check_list_append(history, rules=CONVERGENT_RULES))
    if NO_LOST_WRITES in claimed:
        results.append(check_lost_writes(history, final_state.values, loss_windows))
    elif NO_LOST_MERGED_WRITES in claimed:
        results.append(check_lost_writes(history, final_state.values, loss_windows,
                                         deletes_merge=True))
    if CONVERGENCE in claimed:
        results.append(check_convergence(final_state.digests, final_state.dumps))
    if SESSION in claimed:
        results.append(check_session(history, final_state.values))
    return results


CLAIMS_VOIDED_BY_LOSS: Final = frozenset({LINEARIZABLE, CONSISTENT_PREFIX, SESSION})
"""Claims about what reads showed, not held on keys a loss damaged: a correct node may have
shown a value that it then lost (a power loss under "os", a failover under W + Q <= N)."""
DAMAGED_KEY_RULES: Final = frozenset({NO_DUPLICATES, NO_FUTURE})
"""The list-append rules still held on damaged keys: no element twice, none nobody wrote."""


def check_with_damage(
    history: History,
    *,
    final_state: FinalState,
    claims: frozenset[str],
    loss_windows: Iterable[LossWindow] = (),
    damaged: frozenset[bytes] | None = frozenset(),
) -> list[CheckResult]:
    """``check_all``, where the keys in ``damaged`` (``None``: every key) get only the claims a
    loss leaves standing: the read-based claims on the other keys, ``DAMAGED_KEY_RULES`` on
    them, and every other claim on all keys."""
    loss_windows = tuple(loss_windows)
    if damaged is not None and not damaged:
        return check_all(history, final_state=final_state, loss_windows=loss_windows,
                         claims=claims)
    per_key = claims & CLAIMS_VOIDED_BY_LOSS
    results = check_all(history, final_state=final_state, loss_windows=loss_windows,
                        claims=claims - per_key)
    if per_key:
        def is_damaged(key: bytes) -> bool:
            return damaged is None or key in damaged

        results += check_all(_restricted(history, lambda key: not is_damaged(key)),
                             final_state=final_state, claims=per_key)
        results.append(check_list_append(_restricted(history, is_damaged),
                                         rules=DAMAGED_KEY_RULES))
    return results


def _restricted(history: History, keep: Callable[[bytes], bool]) -> History:
    """The notes and the operations on the keys ``keep`` accepts, in order, renumbered."""
    return history.filtered(lambda record: record.type == NOTE
                            or (record.key is not None and keep(record.key)))
