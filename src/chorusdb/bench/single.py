"""``python -m chorusdb.bench single``: one ChorusDB node against one redis-server, same run,
same machine, same client.

How a run goes (step 1, the exit codes, the signals and the JSON file's header are
``bench.session``'s, the same for every benchmark):

1. Find ``redis-benchmark`` (without it nothing can be measured: say how to install it, exit 2)
   and ``redis-server`` (without it ChorusDB is still measured, but no ratio can be given).
2. Start Redis with the issue's reference configuration (``servers.start_redis``) and one
   standalone ChorusDB node per durability, each in its own temporary directory.
3. Fill the keyspace ``-r`` draws from on every server, so every SET overwrites a key and every
   GET finds one: all systems measure the same steady state, not a growing table.
4. Size the runs: unless ``--requests`` fixes it, a short calibration run of each (system, test,
   pipeline) gives its rate, and the measured runs get that rate times ``--seconds`` requests.
5. Measure in rounds. A round runs every (system, pipeline, test) once, as one
   ``redis-benchmark -t TEST -c 50 -n N -P DEPTH -r KEYSPACE -d BYTES --csv``; the order of the
   systems rotates from round to round so that a burst of load from elsewhere on this shared
   machine does not always land on the same system. Around each run the server's CPU time, the
   client's, and the machine's are read, so the report can say what an operation costs and
   how much of the machine other work took.
6. Summarize (``results.summarize``: median of the rounds, ratio to Redis), print the table and
   the verdict on the issue's goal, and write every raw figure to a JSON file under ``--output``.

Every server is stopped by its own PID in a ``finally``, also on Ctrl-C and SIGTERM. The exit
code is 0 whatever the figures are (a benchmark, not a test); 1 when a server or a run failed;
2 for bad usage or a missing ``redis-benchmark``; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from chorusdb.bench import results, servers, session
from chorusdb.bench.results import BenchmarkOutputError, Run
from chorusdb.bench.servers import ServerProcess, ServerStartError
from chorusdb.bench.session import UsageError

TESTS = ("SET", "GET")
PIPELINES_DEFAULT = (1, 16)
DURABILITIES = ("os", "fsync")
clients_default = 50
keyspace_keys_default = 100_000
value_bytes_default = 16
rounds_default = 3
run_duration_s_default = 4.0
quick_run_duration_s = 1.0
# Below this redis-benchmark's rates are noise (or "inf"). Also the size of a calibration run:
# about 40 ms on Redis pipelined (a rate good to a few tens of percent, enough to size the real
# runs), a few seconds on a system that does 5k requests/s.
requests_min = 20_000
requests_max = 20_000_000
benchmark_run_timeout_s = 300.0
command_output_tail_chars = 2000

INSTALL_TOOLS = "apt-get install -y redis-tools"
INSTALL_REDIS = "apt-get install -y redis-server"


class BenchmarkRunError(RuntimeError):
    """redis-benchmark failed (an error reply, a crash, a time-out): that run measured nothing."""


@dataclass(frozen=True, slots=True)
class Settings:
    durabilities: tuple[str, ...]
    pipelines: tuple[int, ...]
    tests: tuple[str, ...]
    clients: int
    keyspace_keys: int
    value_bytes: int
    rounds: int
    requests: int | None            # fixed per run, or None: sized by calibration
    run_duration_s: float
    output_dir: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, metavar="N",
                        help="requests per measured run (default: sized from a calibration "
                             "run so that each run lasts --seconds)")
    parser.add_argument("--seconds", type=float, default=run_duration_s_default,
                        help=f"target duration of each measured run (default "
                             f"{run_duration_s_default:g})")
    parser.add_argument("--rounds", type=int, default=rounds_default,
                        help=f"measurements of each figure; the median is reported (default "
                             f"{rounds_default})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: 1 round of {quick_run_duration_s:g} s runs")
    parser.add_argument("--clients", type=int, default=clients_default,
                        help=f"redis-benchmark -c (default {clients_default})")
    parser.add_argument("--pipelines", default=",".join(map(str, PIPELINES_DEFAULT)),
                        help="comma-separated redis-benchmark -P depths (default 1,16)")
    parser.add_argument("--tests", default=",".join(TESTS).lower(),
                        help="comma-separated subset of set,get (default set,get)")
    parser.add_argument("--durability", default=",".join(DURABILITIES),
                        help="comma-separated ChorusDB durabilities to run (default os,fsync)")
    parser.add_argument("--keyspace", type=int, default=keyspace_keys_default,
                        help=f"redis-benchmark -r: keys drawn at random (default "
                             f"{keyspace_keys_default})")
    parser.add_argument("--value-bytes", type=int, default=value_bytes_default,
                        help=f"redis-benchmark -d (default {value_bytes_default})")
    parser.add_argument("--output", type=Path, default=Path("bench-results"),
                        help="directory for the JSON file of raw figures (default "
                             "./bench-results)")


def _csv_choice(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    wrong = [c for c in chosen if c not in allowed]
    if not chosen or wrong:
        raise UsageError(f"{flag}: expected a comma-separated subset of {','.join(allowed)}, "
                         f"got {text!r}")
    return tuple(dict.fromkeys(chosen))


def settings_from(args: argparse.Namespace) -> Settings:
    """The arguments checked; ``UsageError`` names the flag that is wrong."""
    try:
        pipelines = tuple(dict.fromkeys(int(p) for p in args.pipelines.split(",")))
    except ValueError:
        raise UsageError(f"--pipelines: expected comma-separated integers, got "
                         f"{args.pipelines!r}") from None
    for flag, value, low in (("--pipelines", min(pipelines), 1), ("--clients", args.clients, 1),
                             ("--keyspace", args.keyspace, 1),
                             ("--value-bytes", args.value_bytes, 1),
                             ("--rounds", args.rounds, 1)):
        if value < low:
            raise UsageError(f"{flag}: expected at least {low}, got {value}")
    if args.requests is not None and not requests_min <= args.requests <= requests_max:
        raise UsageError(f"--requests: expected {requests_min}..{requests_max}, got "
                         f"{args.requests}")
    if not args.seconds > 0:
        raise UsageError(f"--seconds: expected a positive duration, got {args.seconds}")
    tests = _csv_choice(args.tests.upper(), TESTS, "--tests")
    return Settings(
        durabilities=_csv_choice(args.durability, DURABILITIES, "--durability"),
        pipelines=pipelines, tests=tests, clients=args.clients, keyspace_keys=args.keyspace,
        value_bytes=args.value_bytes, rounds=1 if args.quick else args.rounds,
        requests=args.requests,
        run_duration_s=quick_run_duration_s if args.quick else args.seconds,
        output_dir=args.output)


def benchmark_argv(tool: str, host: str, port: int | str, test: str, pipeline: int | str,
                   requests: int | str, settings: Settings) -> list[str]:
    """The redis-benchmark command line of one run (placeholders allowed, for the report)."""
    return [tool, "-h", host, "-p", str(port), "-t", test.lower(),
            "-c", str(settings.clients), "-n", str(requests), "-P", str(pipeline),
            "-r", str(settings.keyspace_keys), "-d", str(settings.value_bytes), "--csv"]


def _tail(text: str) -> str:
    return text[-command_output_tail_chars:].strip()


def measure(tool: str, server: ServerProcess, test: str, pipeline: int, requests: int,
            settings: Settings, round_number: int) -> Run:
    """One redis-benchmark run of one test, with the CPU the server, client and machine spent."""
    argv = benchmark_argv(tool, server.host, server.port, test, pipeline, requests, settings)
    server_cpu_before = servers.process_cpu_seconds(server.pid)
    machine_before = servers.machine_busy_cpu_seconds()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=benchmark_run_timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchmarkRunError(f"{shlex.join(argv)} did not finish in "
                                f"{benchmark_run_timeout_s:.0f} s") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    wall_s = time.monotonic() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if server.process.poll() is not None:
        raise BenchmarkRunError(f"{server.describe()} exited with {server.process.returncode} "
                                f"during {shlex.join(argv)}")
    server_cpu_s = servers.process_cpu_seconds(server.pid) - server_cpu_before
    machine_busy_cpu_s = servers.machine_busy_cpu_seconds() - machine_before
    if process.returncode != 0:
        raise BenchmarkRunError(f"{shlex.join(argv)} exited with {process.returncode}:\n"
                                f"{_tail(out + err)}")
    try:
        line = results.parse_benchmark_csv(out)[test]
    except (BenchmarkOutputError, KeyError) as e:
        raise BenchmarkRunError(f"{shlex.join(argv)}: {e}\n{_tail(out + err)}") from None
    client_cpu_s = (children_after.ru_utime + children_after.ru_stime
                    - children_before.ru_utime - children_before.ru_stime)
    return Run(system=server.system, durability=server.durability, test=test,
               pipeline=pipeline, round=round_number, requests=requests, rps=line.rps,
               avg_latency_ms=line.avg_latency_ms, p50_latency_ms=line.p50_latency_ms,
               p99_latency_ms=line.p99_latency_ms, wall_s=round(wall_s, 3),
               server_cpu_s=round(server_cpu_s, 3), client_cpu_s=round(client_cpu_s, 3),
               machine_busy_cpu_s=round(machine_busy_cpu_s, 3))


def requests_for(rps: float, run_duration_s: float) -> int:
    """Requests that take about ``run_duration_s`` at ``rps``, rounded to 1,000, bounded."""
    wanted = round(rps * run_duration_s, -3)
    return int(min(max(wanted, requests_min), requests_max))


def rotated(items: list, by: int) -> list:
    """The list started ``by`` places later, wrapping around: round r runs system r first."""
    shift = by % len(items)
    return items[shift:] + items[:shift]


def run(args: argparse.Namespace) -> int:
    """The whole benchmark (see the module docstring); returns the exit code."""
    return session.run("single", args, settings_from=settings_from, measure=_measure_all,
                       failures=(ServerStartError, BenchmarkRunError), report=_report,
                       install_tools=INSTALL_TOOLS, install_redis=INSTALL_REDIS)


def _report(settings: Settings, measured: tuple[list[Run], list[Run]],
            done: session.Session) -> None:
    """The table, the verdict on the goal and the other load to the terminal; every raw
    figure to ``single-DATE.json`` under ``--output``."""
    runs, calibration = measured
    cores = done.machine["cores"]
    rows = results.summarize(runs)
    verdict = results.goal_verdict(rows)
    console = Console()
    console.print(results.summary_table(
        rows, title=f"redis-benchmark -c {settings.clients} -r {settings.keyspace_keys} -d "
                    f"{settings.value_bytes}: median of {settings.rounds} round(s), "
                    f"{cores} cores"))
    if verdict is not None:
        console.print(verdict.sentence())
    elsewhere = [results.other_cores(r) for r in runs]
    console.print(f"other processes kept {statistics.median(elsewhere):.2f} of "
                  f"{cores} cores busy during the median run, {max(elsewhere):.2f} "
                  "at worst; the spread column shows what that did to the rates",
                  highlight=False)
    document = {
        **done.document_header(settings),
        "benchmark_command": shlex.join(benchmark_argv(
            "redis-benchmark", servers.HOST, "PORT", "SET|GET", "DEPTH", "N", settings)),
        "calibration": [asdict(r) for r in calibration],
        "runs": [asdict(r) for r in runs],
        "summary": [asdict(r) for r in rows],
        "goal": None if verdict is None else {"ratio": verdict.ratio,
                                              "ratio_min": verdict.ratio_min,
                                              "met": verdict.met},
    }
    done.write_document(document, settings.output_dir / f"single-{done.stamp}.json", console)


def _measure_all(tool: str, redis_server: str | None, settings: Settings, status: Console
                 ) -> tuple[tuple[list[Run], list[Run]], dict[str, str]]:
    """Start the servers, fill, calibrate and measure; the servers are stopped whatever happens.

    Returns the measured runs and the calibration runs, and the versions of the systems.
    """
    kinds = ([("redis", "everysec")] if redis_server else []) + \
        [("chorusdb", durability) for durability in settings.durabilities]
    combos = [(pipeline, test) for pipeline in settings.pipelines for test in settings.tests]
    steps = 2 * len(kinds) + len(kinds) * len(combos) * (
        settings.rounds + (0 if settings.requests else 1))
    cores = os.cpu_count() or 1
    running: list[ServerProcess] = []
    measured: list[Run] = []
    calibration: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="chorusdb-bench-") as tmp, \
            session.progress_bar(status) as progress:
        task = progress.add_task("starting", total=steps)

        def step(description: str) -> None:
            progress.update(task, description=description)

        try:
            for system, durability in kinds:
                step(f"starting {system} ({durability})")
                directory = Path(tmp) / f"{system}-{durability}"
                running.append(servers.start_redis(directory, redis_server)
                               if system == "redis"
                               else servers.start_chorusdb(directory, durability))
                progress.advance(task)
            for server in running:
                step(f"filling {settings.keyspace_keys:,} keys into {server.system} "
                     f"({server.durability})")
                servers.preload_keyspace(server, settings.keyspace_keys, settings.value_bytes)
                progress.advance(task)
            requests: dict[tuple[str, str, str, int], int] = {}
            for server in running:
                for pipeline, test in combos:
                    key = (server.system, server.durability, test, pipeline)
                    if settings.requests:
                        requests[key] = settings.requests
                        continue
                    step(f"calibrating {server.system} ({server.durability}) {test} "
                         f"-P {pipeline}")
                    trial = measure(tool, server, test, pipeline, requests_min, settings, 0)
                    calibration.append(trial)
                    requests[key] = requests_for(trial.rps, settings.run_duration_s)
                    progress.advance(task)
            for round_number in range(1, settings.rounds + 1):
                for server in rotated(running, round_number - 1):
                    for pipeline, test in combos:
                        key = (server.system, server.durability, test, pipeline)
                        step(f"round {round_number}/{settings.rounds}: {server.system} "
                             f"({server.durability}) {test} -P {pipeline}, "
                             f"{requests[key]:,} requests")
                        result = measure(tool, server, test, pipeline, requests[key],
                                         settings, round_number)
                        measured.append(result)
                        progress.console.print(
                            f"round {round_number} {server.system}/{server.durability} {test} "
                            f"-P {pipeline}: {result.rps:,.0f} ops/s; CPU s server "
                            f"{result.server_cpu_s:.2f}, machine {result.machine_busy_cpu_s:.2f}"
                            f"/{result.wall_s * cores:.2f}", highlight=False)
                        progress.advance(task)
        finally:
            for server in running:
                servers.stop(server)
    versions = {server.system: server.version for server in running}
    return (measured, calibration), versions
