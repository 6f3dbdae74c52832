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

The cluster benchmark (``bench.cluster``) reports ``ClusterFigure``s: one per (system, config,
workload), with a rate and per-operation latency percentiles (``percentile``: nearest rank).
``compare_with_redis`` adds the ratio to Redis's figure for the same workload: ops/s over
Redis's ops/s for the throughput workloads (higher is better), p99 over Redis's p99 for the
replication lag (lower is better). ``check_cluster_goals`` checks the issue's three goals.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

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


# --- the cluster benchmark ------------------------------------------------------------------------

REPLICATED_SET = "SET on a replica"       # Redis: SET + WAIT 1; ChorusDB W=2: SET; W=1: + WAIT 1
REPLICATION_LAG = "lag at half load"      # acknowledged on the leader -> visible on a follower
CHORUSDB_CONFIGS = ("W=1 fsync", "W=1 os", "W=2 fsync", "W=2 os", "W=3 fsync", "W=3 os")


def redis_benchmark_workload(test: str, pipeline: int) -> str:
    return f"{test} -P {pipeline}"


@dataclass(frozen=True, slots=True)
class ClusterFigure:
    """One workload against one replicated group, led from its primary.

    ``ops_per_s`` is the workload's rate (for the lag, the background load it ran under);
    ``p50_ms``/``p99_ms`` per operation (for the lag, the lag samples); ``errors`` counts
    operations answered with an error or left unconfirmed (a ``WAIT`` that counted no replica);
    ``how`` says how it was driven; ``cpu_s_per_1k_ops`` is the CPU every server process of the
    group (all members) used during the workload, per 1,000 operations (None: not measured).
    """

    system: str
    config: str
    workload: str
    ops_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    how: str
    errors: int = 0
    ratio_to_redis: float | None = None
    cpu_s_per_1k_ops: float | None = None


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 for p99) of a non-empty sample."""
    assert values and 0 < fraction <= 1, (len(values), fraction)
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def compare_with_redis(figures: Sequence[ClusterFigure]) -> list[ClusterFigure]:
    """The figures with ``ratio_to_redis`` set where Redis ran the same workload."""
    reference = {f.workload: f for f in figures if f.system == REFERENCE_SYSTEM}
    compared = []
    for figure in figures:
        redis_figure = reference.get(figure.workload)
        ratio = None
        if redis_figure is not None and figure.workload == REPLICATION_LAG:
            if figure.p99_ms is not None and redis_figure.p99_ms:
                ratio = figure.p99_ms / redis_figure.p99_ms
        elif redis_figure is not None:
            ratio = figure.ops_per_s / redis_figure.ops_per_s
        compared.append(replace(figure, ratio_to_redis=ratio))
    return compared


@dataclass(frozen=True, slots=True)
class ClusterGoal:
    """A goal on one workload of the ChorusDB configs named: ops/s at least ``ratio_min`` times
    what ``reference`` (a system) reached on the same workload, and/or a p99 of at most
    ``p99_ms_max``."""

    title: str
    configs: tuple[str, ...]
    workload: str
    ratio_min: float | None = None
    p99_ms_max: float | None = None
    reference: str = REFERENCE_SYSTEM


CLUSTER_GOALS = (
    ClusterGoal("SET on a replica >= 1.0x Redis SET + WAIT 1, p99 <= 5 ms", ("W=2 fsync",),
                REPLICATED_SET, ratio_min=1.0, p99_ms_max=5.0),
    ClusterGoal("SET on a replica >= 4x PostgreSQL sync replication", ("W=2 fsync",),
                REPLICATED_SET, ratio_min=4.0, reference="postgresql"),
    ClusterGoal("SET on a replica >= 8x etcd", ("W=2 fsync",), REPLICATED_SET, ratio_min=8.0,
                reference="etcd"),
    ClusterGoal("SET -P 16 >= 0.5x Redis", ("W=1 fsync", "W=1 os"),
                redis_benchmark_workload("SET", 16), ratio_min=0.5),
    ClusterGoal("GET -P 16 >= 0.4x Redis", ("W=1 fsync", "W=1 os"),
                redis_benchmark_workload("GET", 16), ratio_min=0.4),
    ClusterGoal("SET -P 1 >= 0.5x Redis", ("W=1 fsync", "W=1 os"),
                redis_benchmark_workload("SET", 1), ratio_min=0.5),
    ClusterGoal("lag p99 <= 2 ms at half of peak load", CHORUSDB_CONFIGS, REPLICATION_LAG,
                p99_ms_max=2.0),
)


@dataclass(frozen=True, slots=True)
class ClusterGoalResult:
    """One goal on one config: the ratio to the reference and the p99 it asks about (None:
    not measured, here or on the reference)."""

    goal: ClusterGoal
    config: str
    ratio: float | None
    p99_ms: float | None

    @property
    def measured(self) -> bool:
        return (self.goal.ratio_min is None or self.ratio is not None) and \
            (self.goal.p99_ms_max is None or self.p99_ms is not None)

    @property
    def met(self) -> bool | None:
        if not self.measured:
            return None
        return (self.goal.ratio_min is None or self.ratio >= self.goal.ratio_min) and \
            (self.goal.p99_ms_max is None or self.p99_ms <= self.goal.p99_ms_max)

    def sentence(self) -> str:
        where = f"goal [{self.config}] {self.goal.title}"
        if not self.measured:
            return f"{where}: not measured"
        shown = [f"{self.ratio:.2f}x"] if self.goal.ratio_min is not None else []
        if self.goal.p99_ms_max is not None:
            shown.append(f"p99 {self.p99_ms:.2f} ms")
        return f"{where}: {', '.join(shown)}, {'pass' if self.met else 'MISS'}"


def check_cluster_goals(figures: Sequence[ClusterFigure]) -> list[ClusterGoalResult]:
    """Every goal for every config it names; the ratio is computed against the goal's
    reference system (its first figure for the workload)."""
    by_key = {(f.system, f.config, f.workload): f for f in figures}
    references: dict[tuple[str, str], ClusterFigure] = {}
    for f in figures:
        references.setdefault((f.system, f.workload), f)
    checked = []
    for goal in CLUSTER_GOALS:
        reference = references.get((goal.reference, goal.workload))
        for config in goal.configs:
            figure = by_key.get(("chorusdb", config, goal.workload))
            ratio = None if figure is None or reference is None or not reference.ops_per_s \
                else figure.ops_per_s / reference.ops_per_s
            checked.append(ClusterGoalResult(goal, config, ratio,
                                             None if figure is None else figure.p99_ms))
    return checked


def cluster_table(figures: Sequence[ClusterFigure], title: str) -> Table:
    """The figures as a rich table, in the order given, narrow enough for an 80-column
    terminal (errors, rare, are listed apart: ``cluster_error_lines``). Latencies in ms, CPU in
    seconds per 1,000 operations (every process of the group), ×Redis the ratio."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for header in ("system", "config", "workload"):
        table.add_column(header, no_wrap=True)
    for header in ("ops/s", "p50", "p99", "CPU/1k", "×Redis"):
        table.add_column(header, justify="right", no_wrap=True)
    for f in figures:
        table.add_row(f.system, f.config, f.workload, f"{f.ops_per_s:,.0f}", _format_ms(f.p50_ms),
                      _format_ms(f.p99_ms),
                      "-" if f.cpu_s_per_1k_ops is None else f"{f.cpu_s_per_1k_ops:.3f}",
                      "-" if f.ratio_to_redis is None else f"{f.ratio_to_redis:.2f}x")
    return table


def cluster_error_lines(figures: Sequence[ClusterFigure]) -> list[str]:
    """One line per figure whose workload saw errors; they are not in its rates or latencies."""
    return [f"{f.system} {f.config} {f.workload}: {f.errors:,} operation(s) failed or "
            "unconfirmed, left out of its figures" for f in figures if f.errors]
