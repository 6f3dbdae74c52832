"""``python -m chorusdb.bench NAME [options]``: the same benchmarks as ``chorusdb bench NAME``."""

import argparse

from chorusdb.bench import add_benchmarks, run

parser = argparse.ArgumentParser(prog="python -m chorusdb.bench",
                                 description="ChorusDB benchmarks, side by side with Redis.")
add_benchmarks(parser.add_subparsers(dest="benchmark_name", metavar="BENCHMARK"))
raise SystemExit(run(parser.parse_args()))
