"""The pure half of the benchmarks: redis-benchmark's CSV in, figures, ratios and tables out.

Nothing here starts a process or reads a clock, so the test suite checks it on literal text.

redis-benchmark 7.0 (Debian 12's redis-tools) prints, with ``--csv``, one header line and one
line per test, every field quoted::

    "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",...
    "SET","43290.04","0.800","0.112","0.783","1.143","1.991","3.727"

Older versions print only ``"test","rps"``; the latency columns are then ``None``. A run too
short for its clock prints ``"inf"`` as its rate, which is refused: it measured nothing.

A benchmark repeats every measurement a few rounds; ``summarize`` keeps the median rate of the
rounds (one slow round on a shared machine does not move it) and its spread, and divides each
ChorusDB median by the Redis median of the same test and pipeline depth.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.table import Table

REFERENCE_SYSTEM = "redis"
# The goal: ChorusDB with durability "os" reaches this fraction of Redis on SET -P 16.
goal_ratio_min = 0.35
GOAL_SYSTEM, GOAL_DURABILITY, GOAL_TEST, GOAL_PIPELINE = "chorusdb", "os", "SET", 16
ops_per_cpu_figure = 1000          # CPU seconds are reported per this many operations


class BenchmarkOutputError(ValueError):
    """redis-benchmark printed something that is not the CSV this module knows."""


@dataclass(frozen=True, slots=True)
class CsvLine:
    """One test's line of ``redis-benchmark --csv``; latencies in milliseconds."""

    test: str
    rps: float
    avg_latency_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None
    max_latency_ms: float | None


def _optional_float(row: dict[str, str], column: str) -> float | None:
    text = row.get(column)
    return None if text in (None, "") else float(text)


def parse_benchmark_csv(text: str) -> dict[str, CsvLine]:
    """The tests of one ``redis-benchmark --csv`` output, by test name (``"SET"``, ``"GET"``)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "test" not in rows[0] or "rps" not in rows[0]:
        raise BenchmarkOutputError(f"no CSV with \"test\" and \"rps\" columns in {text!r}")
    lines = {}
    for row in rows:
        try:
            rps = float(row["rps"])
            line = CsvLine(
                test=row["test"], rps=rps,
                avg_latency_ms=_optional_float(row, "avg_latency_ms"),
                p50_latency_ms=_optional_float(row, "p50_latency_ms"),
                p95_latency_ms=_optional_float(row, "p95_latency_ms"),
                p99_latency_ms=_optional_float(row, "p99_latency_ms"),
                max_latency_ms=_optional_float(row, "max_latency_ms"))
        except (TypeError, ValueError) as e:
            raise BenchmarkOutputError(f"unreadable line {row!r}: {e}") from e
        if not math.isfinite(rps) or rps <= 0:
            raise BenchmarkOutputError(
                f"test {row['test']} reports {row['rps']} requests/s: the run was too short to "
                "measure; give it more requests")
        lines[line.test] = line
    return lines


@dataclass(frozen=True, slots=True)
class Run:
    """One redis-benchmark invocation of one test against one system, with its CPU costs.

    ``server_cpu_s`` is the server process's user+system time during the run, ``client_cpu_s``
    redis-benchmark's, and ``machine_busy_cpu_s`` the whole machine's (every core, every
    process, interrupts included): what is left over is other work sharing the cores.
    """

    system: str
    durability: str
    test: str
    pipeline: int
    round: int
    requests: int
    rps: float
    avg_latency_ms: float | None
    p50_latency_ms: float | None
    p99_latency_ms: float | None
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    machine_busy_cpu_s: float


@dataclass(frozen=True, slots=True)
class Row:
    """The rounds of one (system, durability, test, pipeline), summarized."""

    system: str
    durability: str
    test: str
    pipeline: int
    rounds: int
    rps_median: float
    rps_min: float
    rps_max: float
    p50_latency_ms: float | None
    server_cpu_s_per_1k_ops: float
    client_cpu_s_per_1k_ops: float
    other_cores_median: float
    ratio_to_redis: float | None


def other_cores(run: Run) -> float:
    """Cores that processes other than the server and redis-benchmark kept busy, on average,
    during the run: the share of a shared machine this run did not get (kernel work for the
    loopback traffic counts here too, so it is rarely exactly 0)."""
    return max(0.0, run.machine_busy_cpu_s - run.server_cpu_s - run.client_cpu_s) / run.wall_s


def _median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _per_1k_ops(cpu_s: Sequence[float], requests: Sequence[int]) -> float:
    return sum(cpu_s) / sum(requests) * ops_per_cpu_figure


def summarize(runs: Sequence[Run]) -> list[Row]:
    """One row per (system, durability, test, pipeline), in the order they were first run.

    CPU per 1,000 operations pools the rounds (total CPU over total requests); ``other_cores``
    is the median of the rounds; the ratio is the
    system's median rate over Redis's median rate for the same test and pipeline depth (1 for
    Redis itself), ``None`` where Redis was not measured.
    """
    groups: dict[tuple[str, str, str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.system, run.durability, run.test, run.pipeline), []).append(run)
    medians = {key: statistics.median(r.rps for r in group) for key, group in groups.items()}
    reference = {(test, pipeline): rps for (system, _, test, pipeline), rps in medians.items()
                 if system == REFERENCE_SYSTEM}
    rows = []
    for key, group in groups.items():
        system, durability, test, pipeline = key
        redis_rps = reference.get((test, pipeline))
        ratio = None if redis_rps is None else medians[key] / redis_rps
        requests = [r.requests for r in group]
        rows.append(Row(
            system=system, durability=durability, test=test, pipeline=pipeline,
            rounds=len(group), rps_median=medians[key],
            rps_min=min(r.rps for r in group), rps_max=max(r.rps for r in group),
            p50_latency_ms=_median_or_none([r.p50_latency_ms for r in group]),
            server_cpu_s_per_1k_ops=_per_1k_ops([r.server_cpu_s for r in group], requests),
            client_cpu_s_per_1k_ops=_per_1k_ops([r.client_cpu_s for r in group], requests),
            other_cores_median=statistics.median(other_cores(r) for r in group),
            ratio_to_redis=ratio))
    return rows


@dataclass(frozen=True, slots=True)
class GoalVerdict:
    ratio: float
    ratio_min: float

    @property
    def met(self) -> bool:
        return self.ratio >= self.ratio_min

    def sentence(self) -> str:
        verdict = "met" if self.met else "NOT met"
        return (f"goal: {GOAL_SYSTEM} durability={GOAL_DURABILITY} {GOAL_TEST} -P "
                f"{GOAL_PIPELINE} >= {self.ratio_min:.2f}x Redis: {self.ratio:.2f}x, {verdict}")


def goal_verdict(rows: Sequence[Row]) -> GoalVerdict | None:
    """The issue's goal checked on the summary; ``None`` when either side was not measured."""
    for row in rows:
        if (row.system, row.durability, row.test, row.pipeline) == \
                (GOAL_SYSTEM, GOAL_DURABILITY, GOAL_TEST, GOAL_PIPELINE) \
                and row.ratio_to_redis is not None:
            return GoalVerdict(row.ratio_to_redis, goal_ratio_min)
    return None


def _format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def spread_percent(row: Row) -> float:
    """How far apart the rounds were: (max - min) / median, in percent."""
    return (row.rps_max - row.rps_min) / row.rps_median * 100


def summary_table(rows: Sequence[Row], title: str) -> Table:
    """The rows as a rich table, narrow enough for an 80-column terminal."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for header in ("system", "durability", "test"):
        table.add_column(header, no_wrap=True)
    for header in ("-P", "ops/s", "spread", "p50 ms", "CPU s/1k", "vs Redis"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.system, row.durability, row.test, str(row.pipeline), f"{row.rps_median:,.0f}",
            f"{spread_percent(row):.0f}%", _format_ms(row.p50_latency_ms),
            f"{row.server_cpu_s_per_1k_ops:.4f}",
            "-" if row.ratio_to_redis is None else f"{row.ratio_to_redis:.2f}x")
    return table
