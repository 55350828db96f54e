"""`t5-compact bench` and `benchmarks/encoder_bench.py` on tiny geometries; exact sizes of the real geometries."""

from __future__ import annotations

import json
import math
import runpy
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import T5EncoderModel

from t5_compact import T5CompactEncoder
from t5_compact.bench import build_encoder, count_parameters, parse_encoders, plain_twin
from t5_compact.bench.latency import time_encoders
from t5_compact.bench.models import student_config, teacher_config
from t5_compact.bench.sizes import DISK_DTYPES, weight_bytes
from t5_compact.cli import main
from t5_compact.tiny import tiny_compact_encoder

REPO = Path(__file__).resolve().parents[1]


def test_parse_encoders_kinds_labels_and_errors(tiny_encoder_dir):
    specs = parse_encoders(f"t5-xxl, base, mine={tiny_encoder_dir}, plain:small, tiny")
    assert [(s.label, s.kind, s.random) for s in specs] == [
        ("t5-xxl", "t5", True),
        ("base", "compact", True),
        ("mine", "compact", False),
        ("small (plain transformers)", "plain", True),
        ("tiny", "compact", True),
    ]
    with pytest.raises(ValueError, match="duplicate labels"):
        parse_encoders("base,base")
    with pytest.raises(ValueError, match="needs a compact encoder"):
        parse_encoders("plain:t5-xxl")


def test_plain_t5_folder_is_detected_as_teacher(tmp_path):
    teacher = T5EncoderModel(teacher_config("tiny-t5"))
    teacher.save_pretrained(tmp_path / "t5")
    (spec,) = parse_encoders(f"teacher={tmp_path / 't5'}")
    assert spec.kind == "t5" and not spec.random
    model = build_encoder(spec, torch.float32)
    assert isinstance(model, T5EncoderModel) and not isinstance(model, T5CompactEncoder)
    assert count_parameters(model) == count_parameters(teacher)


def test_real_geometries_have_the_published_sizes():
    """Counted on the meta device: T5-XXL encoder 4.76 B (9.52 GB bf16), T5-Base + projector 129.6 M."""
    with torch.device("meta"):
        xxl = count_parameters(T5EncoderModel(teacher_config()))
        base = count_parameters(T5CompactEncoder(student_config("base")))
    assert round(xxl / 1e9, 2) == 4.76
    assert round(base / 1e6, 1) == 129.6
    assert weight_bytes(xxl)["bf16"] == 2 * xxl and round(weight_bytes(xxl)["bf16"] / 1e9, 2) == 9.52
    assert weight_bytes(base)["fp32"] == 4 * base
    if "fp8" in DISK_DTYPES:
        assert weight_bytes(base)["fp8"] == base


def test_random_base_builds_without_slow_init():
    start = time.perf_counter()
    (spec,) = parse_encoders("base")
    model = build_encoder(spec, torch.bfloat16)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"building T5-Base + projector took {elapsed:.1f} s"
    assert model.dtype == torch.bfloat16 and not model.training
    assert model.shared.weight is model.encoder.embed_tokens.weight  # ties restored after to_empty
    assert round(count_parameters(model) / 1e6, 1) == 129.6
    ids = torch.randint(2, 32128, (1, 16))
    with torch.inference_mode():
        out = model(input_ids=ids)[0]
    assert out.shape == (1, 16, 4096) and torch.isfinite(out).all() and out.float().std() > 0


def test_random_fill_has_t5_scales():
    """Weights ~ 1/sqrt(fan_in), queries a further 1/sqrt(d_kv) (T5's init; without it softmax underflows into
    denormals and CPU timings are several times too slow), norms one; deterministic."""
    (spec,) = parse_encoders("tiny")
    model = build_encoder(spec, torch.float32, seed=3)
    attention = model.encoder.block[0].layer[0].SelfAttention
    fan_in, d_kv = model.config.d_model, model.config.d_kv
    assert attention.k.weight.std().item() == pytest.approx(fan_in**-0.5, rel=0.1)
    assert attention.q.weight.std().item() == pytest.approx((fan_in * d_kv) ** -0.5, rel=0.1)
    assert torch.equal(model.encoder.final_layer_norm.weight, torch.ones(fan_in))
    again = build_encoder(spec, torch.float32, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plain_twin_gives_identical_outputs(dtype):
    ours = tiny_compact_encoder().to(dtype)
    twin = plain_twin(ours)
    assert count_parameters(twin) == count_parameters(ours)
    ids = torch.randint(2, 256, (2, 12))
    with torch.inference_mode():
        assert torch.equal(ours(input_ids=ids)[0], twin(input_ids=ids)[0])


class _Recorder(nn.Module):
    """A real (trivial) encoder that records the order of its calls."""

    def __init__(self, name: str, log: list[str]):
        super().__init__()
        self.name, self.log = name, log
        self.config = type("Config", (), {"vocab_size": 10})()
        self.proj = nn.Embedding(10, 2)

    def forward(self, input_ids):
        self.log.append(self.name)
        return (self.proj(input_ids),)


def test_latency_alternates_models_in_rotating_order():
    log: list[str] = []
    models = {n: _Recorder(n, log) for n in "abc"}
    timings = time_encoders(models, [(8, 1)], repeats=3, warmup=1)
    assert log == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(t[0].times) == 3 and t[0].median > 0 for t in timings.values())


def test_bench_command_on_tiny_geometries(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "--encoders", "tiny-t5,tiny", "--lengths", "16,64", "--batch-sizes", "1,2"]
    argv += ["--repeats", "2", "--threads", "2", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"bench.md", "bench.json", "bench.png"}
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "bench.json").read_text())
    assert data["reference"] == "tiny-t5"
    teacher, student = data["encoders"]
    with torch.device("meta"):
        assert teacher["params"] == count_parameters(T5EncoderModel(teacher_config("tiny-t5")))
        assert student["params"] == count_parameters(T5CompactEncoder(student_config("tiny")))
    for enc in (teacher, student):
        assert enc["disk_bytes"]["bf16"] == 2 * enc["params"] and enc["disk_bytes"]["fp32"] == 4 * enc["params"]
        # the written file is the weights plus a small JSON header
        assert 0 < enc["disk_bytes_written"] - enc["disk_bytes"]["bf16"] < 32_000
        assert [(t["length"], t["batch"]) for t in enc["timings"]] == [(16, 1), (16, 2), (64, 1), (64, 2)]
        assert all(math.isfinite(t["median_s"]) and t["median_s"] > 0 for t in enc["timings"])
        assert len(enc["timings"][0]["times_s"]) == 2
        memory = enc["memory"]
        assert memory["method"] in ("VmHWM", "ru_maxrss") and memory["peak_bytes"] >= memory["loaded_bytes"] > 0
    # the weights show up in the measured resident memory of the fresh process
    assert teacher["memory"]["loaded_bytes"] >= 0.9 * teacher["disk_bytes"]["bf16"]
    ratios = student["ratios_vs_reference"]
    assert ratios["params"] == pytest.approx(teacher["params"] / student["params"])
    assert ratios["params"] > 10 and ratios["disk_bf16"] == pytest.approx(ratios["params"])
    assert ratios["latency_64x2"] == pytest.approx(
        teacher["timings"][3]["median_s"] / student["timings"][3]["median_s"]
    )
    assert teacher["ratios_vs_reference"]["latency_16x1"] == 1.0
    md = (out / "bench.md").read_text()
    assert "CPU:" in md and "| tiny |" in md and "Ratios to tiny-t5" in md and "![size vs latency](bench.png)" in md
    assert "t5-compact bench --encoders tiny-t5,tiny" in md


def test_encoder_bench_script_on_tiny_geometries(tmp_path):
    script = runpy.run_path(str(REPO / "benchmarks" / "encoder_bench.py"), run_name="encoder_bench")
    args = script["parse_args"](
        ["--encoders", "tiny-t5,tiny,plain:tiny", "--repeats", "2", "--pair-repeats", "3", "--no-memory"]
        + ["--out", str(tmp_path)]
    )
    assert script["main"](args) == 0  # 0 only when ours and plain transformers give identical outputs
    data = json.loads((tmp_path / "encoder_bench.json").read_text())
    assert [e["label"] for e in data["encoders"]] == ["tiny-t5", "tiny", "tiny (plain transformers)"]
    assert data["meta"]["dtype"] == "bf16" and data["meta"]["threads"] == 2 and data["meta"]["lengths"] == [77, 512]
    md = (tmp_path / "encoder_bench.md").read_text()
    assert "identical outputs (ours vs plain transformers): True" in md
    assert (tmp_path / "encoder_bench.png").exists()
