"""What every benchmark does around its measurements, written once: ``run`` takes a benchmark's
name, its argument checker, its measuring function, the errors that mean a server or a run
failed, and its report, and does the rest the same way for ``bench single`` and
``bench cluster``.

How a run goes around the measurements:

1. The arguments are checked (``UsageError``: one line naming the flag, exit 2).
2. ``redis-benchmark`` is looked up on PATH (without it nothing can be measured: say how to
   install it, exit 2), then ``redis-server`` (without it ChorusDB is still measured, but no
   ratio can be given: a warning with the install command).
3. The machine is described (``machine_facts``), with a warning when its 1-minute load is
   already above ``busy_load_average_min``: other work shares the cores, the figures suffer.
4. The start time and the git revision of the code measured are taken, the latter before any
   node loads that code.
5. The measuring function runs with SIGTERM turned into ``SystemExit``, so that its
   ``finally`` blocks stop every server on SIGTERM as they do on Ctrl-C. A failure of the
   benchmark's kinds prints one red line and exits 1; Ctrl-C exits 130. The previous SIGTERM
   handler is put back either way.
6. The load after the run, the redis-benchmark version and the source revision are added to
   what was measured, and the benchmark's report prints its figures and writes them, under a
   common JSON header (``Session.document_header``), with ``Session.write_document``. Exit 0
   whatever the figures are: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)

from chorusdb.bench import servers

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

git_timeout_s = 10.0
busy_load_average_min = 0.5         # a 1-minute load above this before the start is flagged

SettingsT = TypeVar("SettingsT")
MeasuredT = TypeVar("MeasuredT")


class UsageError(ValueError):
    """An argument is wrong; the message starts with the flag."""


def source_revision() -> str | None:
    """The git commit of the chorusdb being measured, ``+dirty`` with uncommitted changes in
    its source; None outside a git checkout. Figures are only comparable with their code."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source,
                                capture_output=True, text=True, timeout=git_timeout_s)
        changes = subprocess.run(   # read-only: no index refresh written back
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "."],
            cwd=source, capture_output=True, text=True, timeout=git_timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")


def _load_average_1_5_15() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_facts() -> dict:
    """What a reader needs to compare figures across machines, and the load before we start."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(),
            "load_average_1_5_15_before": _load_average_1_5_15()}


def progress_bar(status: Console) -> Progress:
    """The progress display of a benchmark's steps, on the status console."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=status)


@dataclass(frozen=True, slots=True)
class Session:
    """One benchmark run, once measured: what its report shares with every other report."""

    benchmark: str                      # "single", "cluster"
    started_at: datetime
    machine: dict                       # ``machine_facts`` with the load after the run
    versions: dict[str, str | None]     # per system, redis-benchmark, chorusdb_source

    @property
    def stamp(self) -> str:
        """The start time as it goes into file names."""
        return self.started_at.strftime("%Y%m%dT%H%M%SZ")

    def document_header(self, settings: Any, **more_settings: object) -> dict:
        """The first keys of the JSON document: which benchmark, when, how it was called, on
        what, with which versions and settings (``settings`` a dataclass with ``output_dir``,
        ``more_settings`` added after its fields)."""
        return {
            "benchmark": self.benchmark,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "argv": sys.argv, "machine": self.machine, "versions": self.versions,
            "settings": {**asdict(settings), "output_dir": str(settings.output_dir),
                         **more_settings},
        }

    def write_document(self, document: dict, path: Path, console: Console) -> None:
        """The JSON file of raw figures, and the line that says where it is and what code
        made it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        console.print(f"chorusdb source {self.versions['chorusdb_source'] or 'unknown'}; raw "
                      f"figures: {path}", highlight=False)


def _raise_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def run(benchmark: str, args: argparse.Namespace, *,
        settings_from: Callable[[argparse.Namespace], SettingsT],
        measure: Callable[[str, str | None, SettingsT, Console],
                          tuple[MeasuredT, dict[str, str]]],
        failures: tuple[type[Exception], ...],
        report: Callable[[SettingsT, MeasuredT, Session], None],
        install_tools: str | None, install_redis: str | None) -> int:
    """One benchmark from its arguments to its report (module docstring); the exit code.

    ``measure(redis_benchmark, redis_server or None, settings, status)`` returns what was
    measured and the versions of the systems, and raises one of ``failures`` when a server or
    a run failed; ``report(settings, measured, session)`` prints and writes the figures.
    ``install_tools`` and ``install_redis`` are the commands shown when ``redis-benchmark`` or
    ``redis-server`` is missing; ``None`` for a benchmark that uses neither (nothing is looked
    up, and ``measure`` gets ``None`` for both).
    """
    try:
        settings = settings_from(args)
    except UsageError as e:
        print(f"chorusdb bench {benchmark}: {e}", file=sys.stderr)
        return EXIT_USAGE
    status = Console(stderr=True)
    tool = redis_server = None
    if install_tools is not None:
        tool = shutil.which("redis-benchmark")
        if tool is None:
            print(f"chorusdb bench {benchmark}: redis-benchmark is not installed, and the "
                  f"benchmark cannot run without it. On Debian or Ubuntu: {install_tools}",
                  file=sys.stderr)
            return EXIT_USAGE
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            status.print(f"[yellow]redis-server is not installed: Redis is skipped and no "
                         f"ratio can be given. To compare, install it: {install_redis}"
                         f"[/yellow]")
    machine = machine_facts()
    load_before = machine["load_average_1_5_15_before"][0]
    if load_before > busy_load_average_min:
        status.print(f"[yellow]the machine is busy (1-minute load {load_before}): other work "
                     "shares the cores, and the figures will be lower and noisier[/yellow]")
    started_at = datetime.now(timezone.utc)
    revision = source_revision()        # before the nodes load the code
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        measured, versions = measure(tool, redis_server, settings, status)
    except failures as e:
        status.print(f"chorusdb bench {benchmark}: {e}", style="red", markup=False,
                     highlight=False)
        return EXIT_FAILED
    except KeyboardInterrupt:
        status.print("interrupted; every server was stopped")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    machine["load_average_1_5_15_after"] = _load_average_1_5_15()
    tools = {} if tool is None else {"redis-benchmark": servers.tool_version(tool)}
    report(settings, measured, Session(
        benchmark, started_at, machine, {**versions, **tools, "chorusdb_source": revision}))
    return EXIT_OK
