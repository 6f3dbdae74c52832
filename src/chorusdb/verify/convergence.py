"""Convergence: after heal and quiesce, every replica holds the same data.

The caller waits for the quiesce barrier, then collects each node's digest (``CHORUS DIGEST``
or the simulator's equivalent) and, to explain a mismatch, optionally each node's dump of
``key -> value``. Replicas converge when all digests are equal; when dumps are given they are
compared too (a dump is authoritative where digests are missing), and every key whose value
differs between nodes becomes one anomaly that lists each node's value (Redis's ``csvdump``
diff, in short). Whether the cluster reached the barrier in time is the caller's liveness
check, not this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from chorusdb.verify.history import Value
from chorusdb.verify.render import show_value
from chorusdb.verify.result import DIVERGENCE, Anomaly, CheckResult, make_result

divergent_keys_reported_max: Final = 20
"""Keys whose differing values are spelled out; the rest are counted."""

_MISSING: Final = "(missing)"


def check_convergence(
    digests: Mapping[str, str],
    dumps: Mapping[str, Mapping[bytes, Value]] | None = None,
) -> CheckResult:
    """Compare replicas by digest (node -> digest) and, if given, by dump (node -> key -> value)."""
    anomalies = []
    groups: dict[str, list[str]] = {}
    for node, digest in sorted(digests.items()):
        groups.setdefault(digest, []).append(node)
    if len(groups) > 1:
        listing = "; ".join(f"{', '.join(nodes)}: {digest}" for digest, nodes in groups.items())
        anomalies.append(Anomaly(DIVERGENCE, None, f"replica digests differ: {listing}"))
    divergent_keys = 0
    if dumps:
        nodes = sorted(dumps)
        keys = sorted({key for dump in dumps.values() for key in dump})
        for key in keys:
            values = [dumps[node].get(key) for node in nodes]
            if all(value == values[0] for value in values):
                continue
            divergent_keys += 1
            if divergent_keys > divergent_keys_reported_max:
                continue
            listing = "; ".join(
                f"{node}: {_MISSING if value is None else show_value(value)}"
                for node, value in zip(nodes, values, strict=True)
            )
            anomalies.append(Anomaly(DIVERGENCE, key, f"replicas disagree: {listing}"))
    stats = {"nodes": len(set(digests) | set(dumps or {})), "digest_groups": len(groups)}
    stats["divergent_keys"] = divergent_keys
    return make_result("convergence", anomalies, stats)
