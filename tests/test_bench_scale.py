"""``bench scale``'s pure parts: its arguments and their checks, the sizing of each axis, the
``/proc/PID/status`` parsing, the ``[leader]`` keys it adds to a cluster's configs, and the
tables, JSON document and plot built from made-up figures; and one smoke run of
``bench scale --quick`` on the keys and seeding axes against real processes (about 20 s). The
benchmark itself takes minutes and never runs here."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console

from chorusdb.bench import scale, servers, session
from chorusdb.cli.main import build_parser
from chorusdb.server.config import load_config


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", "scale", *argv])


# --- arguments ---------------------------------------------------------------------------------


def test_defaults_measure_every_axis_at_the_issue_sizes(tmp_path):
    settings = scale.settings_from(parse("--output", str(tmp_path)))
    assert settings.axes == ("value-size", "keys", "followers", "pipeline", "seeding")
    assert (settings.write_quorum, settings.durability) == (1, "os")
    assert settings.value_sizes_bytes == (100, 1024, 10 * 1024, 100 * 1024, 1024 * 1024)
    assert settings.key_counts == (10_000, 100_000, 1_000_000)
    assert settings.member_counts == (2, 3, 4, 5)
    assert settings.pipeline_depths == (1, 4, 16, 64)
    assert settings.seed_bytes == 256 * scale.MIB
    assert (settings.requests, settings.output_dir) == (scale.requests_default, tmp_path)
    assert parse().benchmark is scale.run


def test_large_adds_ten_million_keys_and_a_gibibyte_seed_and_quick_is_small():
    large = scale.settings_from(parse("--large"))
    assert large.key_counts[-1] == 10_000_000
    assert large.seed_bytes == 1024 * scale.MIB
    quick = scale.settings_from(parse("--quick", "--axes", "seeding,keys", "--write-quorum",
                                      "2", "--durability", "fsync"))
    assert quick.axes == ("seeding", "keys")
    assert (quick.write_quorum, quick.durability) == (2, "fsync")
    assert quick.requests == scale.quick_requests
    assert max(quick.key_counts) <= 10_000 and len(quick.value_sizes_bytes) == 2
    assert quick.seed_bytes == scale.quick_seed_mib * scale.MIB
    assert scale.settings_from(parse("--seed-mib", "3")).seed_bytes == 3 * scale.MIB


@pytest.mark.parametrize("argv, flag", [
    (("--axes", "value-size,latency"), "--axes"),
    (("--axes", ","), "--axes"),
    (("--write-quorum", "3"), "--write-quorum"),
    (("--write-quorum", "0"), "--write-quorum"),
    (("--durability", "none"), "--durability"),
    (("--requests", "10"), "--requests"),
    (("--seed-mib", "0"), "--seed-mib"),
    (("--quick", "--large"), "--large"),
])
def test_bad_settings_name_their_flag(argv, flag):
    with pytest.raises(scale.UsageError, match=f"^{flag}:"):
        scale.settings_from(parse(*argv))


def test_bad_usage_exits_2_before_anything_starts(capsys):
    args = parse("--axes", "nothing")
    assert args.benchmark(args) == session.EXIT_USAGE
    assert "--axes" in capsys.readouterr().err


# --- sizing ------------------------------------------------------------------------------------


def test_value_axis_keyspace_and_requests_shrink_for_big_values():
    assert scale.value_axis_keys(100) == scale.value_axis_keys_max
    assert scale.value_axis_keys(scale.MIB) * scale.MIB <= scale.value_axis_dataset_bytes
    assert scale.value_axis_keys(64 * scale.MIB) == scale.value_axis_keys_min
    assert scale.value_axis_requests(40_000, 100) == 40_000
    assert scale.value_axis_requests(40_000, 100 * 1024) * 100 * 1024 <= \
        scale.value_axis_run_bytes
    assert scale.value_axis_requests(40_000, 64 * scale.MIB) == scale.value_axis_requests_min


def test_deeper_pipelines_get_more_requests():
    sizes = [scale.pipeline_requests(40_000, depth) for depth in (1, 4, 16, 64)]
    assert sizes[0] == 40_000
    assert sizes == sorted(sizes) and sizes[-1] == 160_000


@pytest.mark.parametrize("seed_mib", [1, 4, 256, 1024])
def test_seed_plan_retains_far_fewer_entries_than_it_writes(seed_mib):
    plan = scale.SeedPlan.for_bytes(seed_mib * scale.MIB)
    assert plan.dataset_bytes == seed_mib * scale.MIB
    assert plan.retention_entries <= plan.hold_entries < plan.keys
    # The fill waits for the follower every hold / 2 entries, so the leader never holds more
    # unreplicated entries than it may: there is a batch to wait for.
    assert plan.hold_entries // 2 >= 1


# --- memory --------------------------------------------------------------------------------------

PROC_STATUS = """Name:\tpython3.11
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t  912340 kB
VmSize:\t  845000 kB
VmHWM:\t  204800 kB
VmRSS:\t  102400 kB
RssAnon:\t   90000 kB
Threads:\t3
"""


def test_reads_rss_and_its_peak_from_proc_status():
    assert scale.bytes_of_proc_status(PROC_STATUS, "VmRSS") == 100 * scale.MIB
    assert scale.bytes_of_proc_status(PROC_STATUS, "VmHWM") == 200 * scale.MIB
    with pytest.raises(ValueError, match="VmSwap"):
        scale.bytes_of_proc_status(PROC_STATUS, "VmSwap")


def test_reads_this_process_memory_from_proc():
    rss = scale.proc_status_bytes(os.getpid(), scale.PROC_STATUS_RSS)
    assert 0 < rss <= scale.proc_status_bytes(os.getpid(), scale.PROC_STATUS_PEAK_RSS)


def test_bytes_per_key_are_the_growth_over_the_fill():
    memory = scale.Memory(keys=1000, value_bytes=16, leader_rss_before_bytes=50_000_000,
                          leader_rss_bytes=50_300_000, follower_rss_before_bytes=40_000_000,
                          follower_rss_bytes=40_250_000, leader_peak_rss_bytes=51_000_000,
                          leader_sqlite_bytes=120_000)
    assert memory.leader_rss_bytes_per_key == 300
    assert memory.follower_rss_bytes_per_key == 250
    assert memory.sqlite_bytes_per_key == 120


def test_leader_keys_are_added_to_every_config_and_load(tmp_path):
    configs = servers.write_cluster_configs(tmp_path, 3, 1, "os")
    for config in configs:
        scale.add_leader_keys(config, {**scale.STABLE_LEADERSHIP, "log_retention_entries": 64,
                                       "log_hold_entries_max": 128})
    leader = load_config(configs[2]).leader
    assert (leader.election_timeout_min_ms, leader.election_timeout_max_ms) == (5_000, 10_000)
    assert (leader.log_retention_entries, leader.log_hold_entries_max) == (64, 128)
    assert (leader.write_quorum, leader.initial_leader) == (1, "n1")


def samples(*rows: tuple[float, int, int, str]) -> list[scale.SeedSample]:
    return [scale.SeedSample(*row) for row in rows]


def test_a_member_is_seeded_once_caught_up_at_both_ends_for_the_stable_time():
    polls = samples((0.5, 0, 0, "disconnected"), (1.0, 0, 0, "snapshotting"),
                    (2.0, 100, 0, "snapshotting"), (3.0, 100, 100, "streaming"),
                    (5.0, 100, 100, "streaming"), (6.0, 100, 100, "streaming"))
    assert scale.follow_seeding(polls, 100, 3.0) == (2.0, 3.0, 1, 0)
    assert scale.follow_seeding(polls[:-1], 100, 3.0) == (2.0, None, 1, 0)


def test_a_member_that_keeps_dropping_its_install_is_never_seeded():
    """What a 256 MiB seed did on this machine: the install applied, the leader called the
    member disconnected while its storage thread committed it, and the member dropped it."""
    polls = samples((1.3, 100, 0, "snapshotting"), (2.3, 100, 0, "disconnected"),
                    (2.7, 0, 0, "disconnected"), (4.8, 0, 100, "streaming"),
                    (7.0, 0, 100, "streaming"), (9.0, 100, 0, "disconnected"),
                    (9.4, 0, 0, "disconnected"), (11.0, 0, 100, "streaming"))
    assert scale.follow_seeding(polls, 100, 3.0) == (1.3, None, 2, 2)


def test_seed_timeout_grows_with_the_dataset():
    assert scale.seed_timeout_s(4 * scale.MIB) == scale.seed_timeout_s_min
    assert scale.seed_timeout_s(1024 * scale.MIB) == 512.0


# --- tables, JSON, plot ------------------------------------------------------------------------


def load(test: str, ops: float, p99: float, pipeline: int = 1) -> scale.Load:
    return scale.Load(test, pipeline, 40_000, 10_000, 16, ops, p99 / 4, p99, 3.0, 2.5)


def memory(keys: int, leader_mib: int) -> scale.Memory:
    return scale.Memory(keys, 16, 60 * scale.MIB, leader_mib * scale.MIB, 55 * scale.MIB,
                        (leader_mib - 4) * scale.MIB, (leader_mib + 10) * scale.MIB,
                        keys * 100)


CANNED = scale.Measured(
    points=[
        scale.Point("value-size", 100, 3, (load("SET", 6_100, 12.5), load("GET", 13_000, 4.0)),
                    memory(10_000, 70)),
        scale.Point("value-size", scale.MIB, 3, (load("SET", 21, 4_200), load("GET", 95, 900)),
                    memory(64, 420)),
        scale.Point("keys", 100_000, 3, (load("SET", 6_000, 13.0), load("GET", 12_500, 5.0)),
                    memory(100_000, 98)),
        scale.Point("followers", 2, 2, (load("SET", 14_900, 5.4),),
                    lag=scale.Lag(200, 1, 1.1, 17.6, 7_450.0, 7_300.0)),
        scale.Point("followers", 5, 5, (load("SET", 3_100, 40.0),),
                    lag=scale.Lag(200, 0, 2.5, 31.0, 1_550.0, 1_540.0)),
        scale.Point("pipeline", 16, 3, (load("SET", 17_400, 123.0, 16),
                                        load("GET", 82_500, 14.2, 16))),
    ],
    seeding=scale.Seeding(
        keys=65_536, value_bytes=4096, dataset_bytes=256 * scale.MIB, retention_entries=4096,
        hold_entries=8192, fill_s=7.2, leader_position_index=65_537,
        leader_log_first_index=57_346, timeout_s=128.0, start_to_ready_s=1.5,
        start_to_first_applied_s=3.1, start_to_seeded_s=17.5, installs=2, self_reseeds=1,
        reseed_reason="needed entry 1 but the log starts at 57346",
        new_member_reseed_reason="the log base 1:65537 is not in the history of n1",
        snapshot_chunks=260, new_member_rss_bytes=400 * scale.MIB,
        new_member_sqlite_bytes=588 * scale.MIB,
        samples=(scale.SeedSample(1.6, 0, 0, "snapshotting"),
                 scale.SeedSample(3.1, 65_537, 0, "snapshotting"),
                 scale.SeedSample(17.5, 65_537, 65_537, "streaming"))))


def rendered(table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_axis_tables_show_the_canned_figures():
    settings = scale.settings_from(parse())
    text = rendered(scale.axis_table("value-size", CANNED.points, settings))
    assert "1 MiB" in text and "100 B" in text and "4,200" in text and "420.0" in text
    assert "6,100" in text and "12.50" in text
    text = rendered(scale.axis_table("keys", CANNED.points, settings))
    # (98 - 60) MiB over 100,000 keys on the leader, (94 - 55) MiB on the follower
    assert "100,000" in text and "398" in text and "409" in text
    text = rendered(scale.axis_table("followers", CANNED.points, settings))
    assert "14,900" in text and "17.60" in text and "31.00" in text
    text = rendered(scale.axis_table("pipeline", CANNED.points, settings))
    assert "82,500" in text and "123" in text
    text = rendered(scale.seeding_table(CANNED.seeding, settings))
    assert "256.0 MiB" in text and "4,096/8,192" in text
    assert "14.6" in text and "16.0" in text     # 256 MiB over 17.5 s, and over 16 s
    assert CANNED.seeding.mib_per_s == pytest.approx(256 / 17.5)
    assert CANNED.seeding.first_install_mib_per_s == pytest.approx(256 / 3.1)
    never = replace(CANNED.seeding, start_to_seeded_s=None)
    assert "no (128)" in rendered(scale.seeding_table(never, settings))
    assert scale.seeding_line(never).startswith("seeding 256.0 MiB: NOT seeded within 128 s")


def test_progress_lines_name_the_axis_value():
    assert scale.point_line(CANNED.points[1]).startswith("value-size 1 MiB: SET -P 1 21 ops/s")
    assert "lag p99 31.00 ms" in scale.point_line(CANNED.points[4])
    assert scale.seeding_line(CANNED.seeding).startswith(
        "seeding 256.0 MiB: seeded 17.5 s after its launch (14.6 MiB/s; first applied 3.1 s")


def test_json_document_holds_every_figure_under_the_session_header(tmp_path):
    settings = scale.settings_from(parse("--output", str(tmp_path)))
    done = session.Session("scale", datetime(2026, 11, 22, 12, tzinfo=timezone.utc),
                           {"cores": 2, "load_average_1_5_15_before": [0.1, 0.1, 0.1]},
                           {"chorusdb": "0.1", "chorusdb_source": "abc1234"})
    document = json.loads(json.dumps(scale.document(CANNED, settings, done)))
    assert document["benchmark"] == "scale"
    assert document["versions"]["chorusdb_source"] == "abc1234"
    assert document["settings"]["axes"] == list(scale.AXES)
    assert len(document["points"]) == len(CANNED.points)
    keys_point = document["points"][2]
    assert keys_point["memory"]["leader_rss_bytes_per_key"] == pytest.approx(398.5, abs=0.1)
    assert keys_point["loads"][0]["ops_per_s"] == 6_000
    assert document["points"][3]["lag"]["p99_ms"] == 17.6
    assert document["seeding"]["mib_per_s"] == pytest.approx(14.63, abs=0.01)
    assert document["seeding"]["seeded"] is True
    assert document["seeding"]["samples"][-1] == {"at_s": 17.5, "applied_index": 65_537,
                                                  "durable_index": 65_537,
                                                  "leader_sees": "streaming"}
    assert "-r KEYS -d BYTES" in document["redis_benchmark_command"]


def test_plot_is_written_or_says_how_to_get_matplotlib(tmp_path):
    path = tmp_path / "scale.png"
    said = scale.write_plot(CANNED, path)
    if importlib.util.find_spec("matplotlib") is None:
        assert said == scale.cluster.MATPLOTLIB_MISSING and not path.exists()
        return
    assert said == f"plot: {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the smoke run -----------------------------------------------------------------------------


@pytest.mark.process
@pytest.mark.skipif(not shutil.which("redis-benchmark"),
                    reason=f"needs redis-benchmark: {scale.INSTALL_TOOLS}")
def test_scale_benchmark_smoke_run(tmp_path: Path):
    """Two key counts and a seeded member, on real processes, in a few seconds each."""
    args = parse("--quick", "--axes", "keys,seeding", "--output", str(tmp_path))
    assert args.func(args) == session.EXIT_OK
    [path] = tmp_path.glob("scale-*.json")
    document = json.loads(path.read_text())
    points = document["points"]
    assert [(p["axis"], p["x"]) for p in points] == [("keys", k) for k in scale.quick_key_counts]
    for point in points:
        assert [run["test"] for run in point["loads"]] == ["SET", "GET"]
        assert all(run["ops_per_s"] > 0 and run["p99_ms"] for run in point["loads"])
        assert point["memory"]["leader_rss_bytes"] > point["memory"]["leader_rss_before_bytes"]
        assert point["memory"]["leader_sqlite_bytes"] > 0
    seeding = document["seeding"]
    assert seeding["dataset_bytes"] == scale.quick_seed_mib * scale.MIB
    assert seeding["reseed_reason"].startswith("needed entry 1 but the log starts at")
    assert seeding["leader_log_first_index"] > 1
    assert seeding["seeded"] and seeding["mib_per_s"] > 0 and seeding["installs"] >= 1
    assert seeding["start_to_ready_s"] < seeding["start_to_first_applied_s"] <= \
        seeding["start_to_seeded_s"]
    assert seeding["new_member_sqlite_bytes"] > seeding["dataset_bytes"]
