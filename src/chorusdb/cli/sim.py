"""``chorusdb sim``: run the deterministic simulator over many seeds (see ``sim.command``)."""

from __future__ import annotations

import argparse

from chorusdb.sim import command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim", help="run the deterministic simulator: seeds, faults, checkers",
        description=command.DESCRIPTION)
    command.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``chorusdb sim``; returns the exit code (1: a seed failed, 2: bad usage)."""
    return command.run(args)
