"""``chorusdb chaos``: run a real local cluster under real faults and judge its history
(``chaos.run``). Exit codes: 0 no forbidden anomaly, 1 an anomaly (or a liveness or quiesce
failure), 2 bad usage, 130 interrupted (every process the run started is stopped either way).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from rich.console import Console

from chorusdb.chaos.nemesis import NEMESES
from chorusdb.chaos.run import ChaosSettings, run
from chorusdb.core.modes import CORES, core_class

EXIT_OK, EXIT_ANOMALY, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_NODES = {"standalone": 1}
default_nodes_replicated = 3
seed_max = 2**31 - 1
DESCRIPTION = ("Start a real local cluster (chorusdb serve processes on 127.0.0.1, every peer "
               "link through a proxy), run clients against it while faults strike, heal, read "
               "every node, and judge the history with the simulator's checkers.")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("chaos", help="a real local cluster under real faults, checked",
                              description=DESCRIPTION)
    p.add_argument("--mode", default="leader", help=f"replication mode ({', '.join(CORES)})")
    p.add_argument("--nodes", type=int, default=0, help="cluster size (default: the mode's)")
    p.add_argument("--write-quorum", type=int, default=0,
                   help="leader mode's W (default: a majority)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    p.add_argument("--nemesis", default=",".join(NEMESES),
                   help=f"comma-separated fault kinds from {','.join(NEMESES)} (default: all)")
    p.add_argument("--interval", type=float, default=5.0,
                   help="mean seconds between faults (default 5)")
    p.add_argument("--seed", type=int, default=None, help="drives every random choice "
                   "(default: a random one, printed)")
    p.add_argument("--bug", default="", help="switch on a known core bug (see chorusdb sim "
                   "--list-bugs): the run should then fail")
    p.add_argument("--clients", type=int, default=6, help="client threads (default 6)")
    p.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="folder for the evidence (default: a new one under the temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the artifacts of a passing run")
    p.add_argument("--client", choices=("plain", "session"), default="plain",
                   help="plain redis-py connections homed on each node (default), or "
                        "chorusdb.Client sessions, whose session guarantees are checked too")
    p.set_defaults(func=main)


def settings_from(args: argparse.Namespace) -> ChaosSettings:
    """The run's settings; ``ValueError`` naming the flag when one is wrong."""
    if args.mode not in CORES:
        raise ValueError(f"--mode: one of {', '.join(CORES)}")
    nodes = args.nodes or DEFAULT_NODES.get(args.mode, default_nodes_replicated)
    if nodes < 1 or (args.mode == "standalone" and nodes != 1):
        raise ValueError("--nodes: at least 1, and exactly 1 for standalone")
    if args.write_quorum and (args.mode == "standalone" or not 1 <= args.write_quorum <= nodes):
        raise ValueError("--write-quorum: leader mode only, from 1 to the number of nodes")
    kinds = tuple(k for k in args.nemesis.split(",") if k and k != "none")
    unknown = sorted(set(kinds) - set(NEMESES))
    if unknown:
        raise ValueError(f"--nemesis: unknown kinds {unknown}; choose from {','.join(NEMESES)}")
    if args.duration <= 0 or args.interval <= 0 or args.clients < 1:
        raise ValueError("--duration, --interval and --clients must be positive")
    if args.bug and args.bug not in core_class(args.mode).KNOWN_BUGS:
        raise ValueError(f"--bug: {args.bug!r} is not a known bug of {args.mode} "
                         f"(chorusdb sim --mode {args.mode} --list-bugs)")
    if args.client == "session" and args.durability == "os":
        raise ValueError("--client session: a session client's history does not name the node "
                         "that acknowledged a write, which judging an 'os' power loss needs; "
                         "use --durability fsync")
    seed = args.seed if args.seed is not None else random.SystemRandom().randint(1, seed_max)
    return ChaosSettings(mode=args.mode, nodes=nodes, write_quorum=args.write_quorum,
                         duration_s=args.duration, nemeses=kinds, interval_s=args.interval,
                         seed=seed, bug=args.bug, clients=args.clients,
                         durability=args.durability, artifacts_dir=args.artifacts,
                         keep=args.keep, session_clients=args.client == "session")


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValueError as e:
        print(f"chorusdb chaos: {e}", file=sys.stderr)
        return EXIT_USAGE
    console = Console()
    console.print(f"chaos: {settings.replay_command()}")
    try:
        outcome = run(settings, console)
    except KeyboardInterrupt:
        console.print("interrupted; every process this run started was stopped")
        return EXIT_INTERRUPTED
    if outcome.artifacts is not None:
        console.print(f"artifacts (history, nemesis log, node logs and data, report): "
                      f"{outcome.artifacts}")
    if not outcome.valid:
        console.print(f"[red]FAILED[/red]; replay: {settings.replay_command()}")
        return EXIT_ANOMALY
    console.print("[green]no forbidden anomaly[/green]")
    return EXIT_OK
