"""``chorusdb bench multileader``, as a user runs it, in a few seconds."""

from __future__ import annotations

import json
import shutil

import pytest

from chorusdb.bench import multileader
from chorusdb.cli.main import build_parser


@pytest.mark.process
@pytest.mark.skipif(shutil.which("redis-benchmark") is None,
                    reason=f"needs redis-benchmark: {multileader.single.INSTALL_TOOLS}")
def test_a_small_run_reports_every_figure(tmp_path):
    args = build_parser().parse_args(["bench", "multileader", "--requests", "3000",
                                      "--delay-samples", "6", "--hot-keys", "3",
                                      "--output", str(tmp_path)])
    assert args.func(args) == 0
    (path,) = tmp_path.glob("multileader-*.json")
    document = json.loads(path.read_text())
    assert [t["node"] for t in document["throughput"]] == ["n1", "n2", "n3"]
    assert all(t["ops_per_s"] > 0 for t in document["throughput"])
    assert document["delay"]["count"] == 6 and all(d >= 0 for d in document["delay_ms"])
    conflicts = document["conflicts"]
    assert conflicts["writes"] == 3 * (3000 // 4)
    assert conflicts["siblings_per_hot_key"] and all(n >= 1 for n in
                                                     conflicts["siblings_per_hot_key"])


def test_bad_arguments_exit_2_with_what_to_fix(tmp_path, capsys):
    args = build_parser().parse_args(["bench", "multileader", "--requests", "10",
                                      "--output", str(tmp_path)])
    assert args.func(args) == 2
    assert "--requests must be at least 1,000" in capsys.readouterr().out
