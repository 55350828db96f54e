"""`benchmarks/train_bench.py`: its proxy has FLUX.1-dev's FLOP split, and a one-round run writes its report."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> dict:
    return runpy.run_path(str(REPO / "benchmarks" / "train_bench.py"), run_name="train_bench")


def test_proxy_flop_split_matches_flux_at_512px(bench):
    """Per reference update (FlopCounterMode): text encoders 1-2 %, teacher forward ~1/3, as FLUX.1-dev at 512 px
    (1.5 % / 32 % / 66 %, benchmarks/train_flops.py); the trajectory cache then costs <= 0.68x per trajectory."""
    flops = bench["flop_split"](bench["build_proxy"]())
    split = flops["reference_split"]
    assert 0.01 <= split["teacher_encode"] <= 0.02
    assert 0.30 <= split["teacher_forward"] <= 0.36
    per = flops["per_trajectory"]
    assert per["trajectory_cache"] / per["reference"] <= 0.68
    assert 0.97 <= per["on_the_fly"] / per["reference"] < 1


def test_one_round_writes_json_markdown_and_plot(bench, tmp_path):
    argv = ["--rounds", "1", "--per-round", "1", "--pools", "1", "--threads", "1", "--out", str(tmp_path)]
    assert bench["main"](argv) == 0
    result = json.loads((tmp_path / "train_bench.json").read_text())
    names = ["reference", "on_the_fly", "embedding_cache", "pool 1", "pool 1, on the fly"]
    assert list(result["variants"]) == names
    for name in names:
        row = result["variants"][name]
        assert row["median_s_per_trajectory"] > 0 and len(result["curves"][name]) == 2
    assert result["variants"]["pool 1"]["record_seconds"] > 0
    assert 0 < result["variants"]["reference"]["time_to_reference_quality"] <= 1.0  # reaches its own final fidelity
    table = (tmp_path / "train_bench.md").read_text()
    assert table.count("\n| ") == 1 + len(names) and "Noise floor" in table
    assert (tmp_path / "train_bench.png").stat().st_size > 0
    report = str(tmp_path / "train_bench.json")
    assert bench["main"](["--summarize", report, report, "--out", str(tmp_path / "all")]) == 0
    summary = (tmp_path / "all" / "summary.md").read_text()
    assert summary.startswith("Seeds 0, 0:") and "| pool 1 |" in summary and "(2/2)" in summary
