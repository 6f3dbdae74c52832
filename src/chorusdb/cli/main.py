"""Entry point of the ``chorusdb`` command: one subcommand per module, argparse underneath.

Exit codes: 0 success; 1 a failure at run time (a checker found an anomaly, a node died);
2 bad usage or bad configuration, with one line on stderr naming the field.
"""

from __future__ import annotations

import argparse
import sys

from chorusdb import __version__
from chorusdb.cli import divergent, serve, status, switchover, up

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chorusdb",
        description="ChorusDB: a replicated key-value and event store that speaks the Redis "
                    "protocol.")
    parser.add_argument("--version", action="version", version=f"chorusdb {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.register(subparsers)
    up.register(subparsers)
    status.register(subparsers)
    divergent.register(subparsers)
    switchover.register(subparsers)
    # Imported here, not at the top: ``chorusdb serve`` need not load the simulator, the
    # benchmark harness or the chaos harness.
    from chorusdb.cli import bench, chaos, sim
    sim.register(subparsers)
    chaos.register(subparsers)
    bench.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.func(args) or 0)
