"""``chorusdb bench NAME``: the benchmarks of ``chorusdb.bench`` (``single``: one node against
one redis-server under redis-benchmark; ``cluster``: a 3-node leader cluster against a Redis
primary with two replicas; ``failover``: the time a leader cluster takes to acknowledge writes
again after its leader is SIGKILLed). Same options as ``python -m chorusdb.bench NAME``."""

from __future__ import annotations

import argparse

from chorusdb.bench import add_benchmarks
from chorusdb.bench import run as run_benchmark


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmarks side by side with Redis (not tests)")
    add_benchmarks(p.add_subparsers(dest="benchmark_name", metavar="BENCHMARK"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_benchmark(args)
