"""Benchmarks, side by side with the systems ChorusDB is measured against (not timed tests).

Each benchmark is a module with ``add_arguments(parser)`` and ``run(args) -> exit code``;
``add_benchmarks`` makes one subcommand of each, for both ``python -m chorusdb.bench NAME`` and
``chorusdb bench NAME``. Results are reported as ratios to the reference system, with the raw
figures in a JSON file, because absolute rates only mean something on the machine that made them.

- ``single``: one node against one redis-server under redis-benchmark (``bench.single``);
- ``cluster``: a 3-node leader cluster (W = 1, 2; fsync, os) against a Redis primary with two
  replicas (``bench.cluster``);
- ``multileader``: a 3-node multi-leader cluster with every node writing: throughput per node,
  replication delay, the conflict rate on hot keys (``bench.multileader``);
- ``failover``: how long a leader cluster takes to acknowledge writes again after its leader
  is SIGKILLed, over many trials (``bench.failover``; Redis Sentinel's figure is in its docs,
  not measured here).
"""

from __future__ import annotations

import argparse
import sys

from chorusdb.bench import cluster, failover, multileader, scale, single

EXIT_USAGE = 2
BENCHMARKS = {
    "single": (single, "one ChorusDB node against one redis-server under redis-benchmark"),
    "cluster": (cluster, cluster.SUMMARY),
    "failover": (failover, failover.SUMMARY),
    "scale": (scale, scale.SUMMARY),
    "multileader": (multileader, multileader.SUMMARY),
}


def add_benchmarks(subparsers: argparse._SubParsersAction) -> None:
    for name, (module, summary) in BENCHMARKS.items():
        parser = subparsers.add_parser(name, help=summary, description=summary)
        module.add_arguments(parser)
        parser.set_defaults(benchmark=module.run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the arguments name; usage help and exit 2 when they name none."""
    benchmark = getattr(args, "benchmark", None)
    if benchmark is None:
        print(f"name a benchmark: {', '.join(BENCHMARKS)} (--help for its options)",
              file=sys.stderr)
        return EXIT_USAGE
    return benchmark(args)
