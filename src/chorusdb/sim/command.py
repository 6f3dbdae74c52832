"""The simulator's command line: ``chorusdb sim`` and ``python -m chorusdb.sim``.

``chorusdb sim --mode M --seeds N [--seed S] [--nodes K] [--faults LIST] [--bug NAME]
[--durability fsync|os]`` runs seeds ``S .. S+N-1`` (``S`` defaults to 1; ``--seed S`` alone
runs that one seed) with a progress bar, prints one line per failing seed as it happens, then a
summary table (seeds, operations and their outcomes, faults by kind, anomalies by checker,
problems, probes, speed) and, for the first failing seeds, the witness from the history and the
command that replays the seed. The exit code is 1 when any seed failed, 2 on bad usage.

``chorusdb sim --mode M --list-bugs`` prints the known bugs the simulator can switch on in that
mode, one name per line: the core's ``KNOWN_BUGS`` and the simulator's own (``SIM_BUGS``).

The argument definitions live here rather than in ``cli/`` so that ``python -m chorusdb.sim``
works without the simulator importing the layer above it; ``cli.sim`` registers them as the
``sim`` subcommand.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chorusdb.sim.params import DURABILITIES, FAULT_KINDS, SimConfig
from chorusdb.sim.runner import SeedReport, bug_write_quorum, known_bugs, run_seed

DESCRIPTION = ("Run whole simulated clusters of real cores under faults, one seed each, and "
               "check every history; exits 1 when a seed fails.")
EXIT_FAILED = 1
EXIT_USAGE = 2
default_seed_count = 100
witnesses_shown_max = 3          # failing seeds whose witness is printed in full


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", required=True, help="replication mode (e.g. standalone)")
    parser.add_argument("--seeds", type=int, help=f"how many seeds (default {default_seed_count}, "
                                                  "or 1 with --seed)")
    parser.add_argument("--seed", type=int, help="the first seed (default 1)")
    parser.add_argument("--nodes", type=int, default=0, help="cluster size (default: the mode's)")
    parser.add_argument("--faults", help=f"comma-separated fault kinds allowed, from "
                                         f"{','.join(FAULT_KINDS)} (default: all; 'none')")
    parser.add_argument("--bug", default="", help="switch on a known bug (see --list-bugs)")
    parser.add_argument("--write-quorum", type=int, default=0,
                        help="leader mode: members that hold a write before it is acknowledged "
                             "(default: a majority)")
    parser.add_argument("--durability", choices=DURABILITIES, default="fsync",
                        help="when a write is acknowledged: after fsync, or in the page cache")
    parser.add_argument("--list-bugs", action="store_true",
                        help="list the known bugs of the mode, one per line, and exit")


def config_from(args: argparse.Namespace) -> SimConfig:
    """The ``SimConfig`` the arguments ask for; ``ValueError`` with the reason if invalid."""
    bugs = known_bugs(args.mode)        # raises ValueError for an unknown mode
    if args.bug and args.bug not in bugs:
        raise ValueError(f"unknown bug {args.bug!r} for mode {args.mode}; see --list-bugs")
    faults = FAULT_KINDS
    if args.faults is not None:
        asked = {kind for kind in args.faults.split(",") if kind and kind != "none"}
        unknown = sorted(asked - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; choose from {list(FAULT_KINDS)}")
        faults = tuple(kind for kind in FAULT_KINDS if kind in asked)   # one order, one run
    if args.nodes < 0:
        raise ValueError("--nodes must be at least 1")
    if args.mode == "standalone" and args.nodes > 1:
        raise ValueError("--nodes: a standalone cluster is one node (standalone nodes do not "
                         "replicate, so several would disagree)")
    if args.write_quorum and (args.mode != "leader" or args.write_quorum < 0
                              or args.write_quorum > (args.nodes or 3)):
        raise ValueError("--write-quorum: leader mode only, from 1 to the number of nodes")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    write_quorum = args.write_quorum or (bug_write_quorum(args.mode, args.bug) if args.bug else 0)
    return SimConfig(mode=args.mode, durability=args.durability, nodes=args.nodes,
                     faults=faults, bug=args.bug, write_quorum=write_quorum)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    err = Console(stderr=True)
    try:
        config = config_from(args)
    except ValueError as error:
        err.print(f"chorusdb sim: {error}", markup=False)
        return EXIT_USAGE
    if args.list_bugs:
        for name in known_bugs(config.mode):
            print(name)
        return 0
    first = 1 if args.seed is None else args.seed
    count = args.seeds if args.seeds is not None else (1 if args.seed is not None
                                                       else default_seed_count)
    out = Console()
    summary = Summary()
    started = time.perf_counter()
    # The bar shows on a terminal only and vanishes when done; failing seeds print above it.
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=out,
                  transient=True) as progress:
        task = progress.add_task(f"{config.mode}/{config.durability}", total=count)
        for seed in range(first, first + count):
            report = run_seed(config, seed)
            summary.add(report)
            if report.failed:
                progress.console.print(report.headline(), markup=False, highlight=False,
                                       soft_wrap=True)
            progress.advance(task)
    elapsed_s = time.perf_counter() - started
    out.print(summary.table(config, elapsed_s))
    for report in summary.failures[:witnesses_shown_max]:
        out.rule(f"seed {report.seed}")
        out.print(report.explain(), markup=False, highlight=False, soft_wrap=True)
    return EXIT_FAILED if summary.failures else 0


class Summary:
    """Totals over many seeds, for the table."""

    def __init__(self) -> None:
        self.seeds = 0
        self.failures: list[SeedReport] = []
        self.operations = 0
        self.events = 0
        self.outcomes: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.anomalies: dict[str, int] = {}
        self.allowed: dict[str, int] = {}
        self.problems = 0
        self.probes: dict[str, int] = {}

    def add(self, report: SeedReport) -> None:
        self.seeds += 1
        self.operations += report.operations
        self.events += report.events
        self.problems += len(report.problems)
        if report.failed:
            self.failures.append(report)
        for totals, counts in ((self.outcomes, report.outcomes), (self.faults, report.faults),
                               (self.anomalies, report.anomalies), (self.allowed, report.allowed),
                               (self.probes, report.probes)):
            for name, count in counts.items():
                totals[name] = totals.get(name, 0) + count

    def table(self, config: SimConfig, elapsed_s: float) -> Table:
        table = Table(title=f"chorusdb sim: {config.mode}, durability {config.durability}"
                            + (f", bug {config.bug}" if config.bug else ""), show_header=False)
        table.add_column("what", style="bold")
        table.add_column("count")
        rate = self.seeds / elapsed_s if elapsed_s > 0 else 0.0
        table.add_row("seeds", f"{self.seeds} run, {len(self.failures)} failed, "
                               f"{rate:.1f} seeds/s")
        table.add_row("operations", f"{self.operations} ({_counts(self.outcomes)})")
        table.add_row("events", str(self.events))
        table.add_row("faults", _counts(self.faults) or "none")
        unexplained = {name: count for name, count in self.anomalies.items() if count}
        table.add_row("anomalies", _counts(unexplained) or "none")
        table.add_row("allowed", _counts(self.allowed) or "none")
        table.add_row("problems", str(self.problems))
        table.add_row("probes", _counts(dict(sorted(self.probes.items()))) or "none")
        return table


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chorusdb.sim", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
