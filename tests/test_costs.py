"""Cost accounting (`t5_compact.costs`): FLOPs per update, the memory estimator against measured memory, `--plan`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from t5_compact.costs.flops import count_update, on_the_fly
from t5_compact.costs.measure import measure_update
from t5_compact.costs.memory import estimate_update_memory, storage_bytes
from t5_compact.costs.models import FLUX_DEV, RunSpec, build_models, real_spec
from t5_compact.costs.plan import parse_memory
from t5_compact.costs.update import UpdateShape, adapter_for
from t5_compact.training.trajectory_cache import trajectory_bytes

TINY_SHAPE = UpdateShape(batch=2, resolution=32, seq_len=16)
# A small FLUX-style geometry big enough for memory to be dominated by tensors, not bookkeeping.
MID = RunSpec(
    "flux",
    dict(
        attention_head_dim=64,
        num_attention_heads=4,
        num_layers=1,
        num_single_layers=2,
        in_channels=64,
        joint_attention_dim=256,
        pooled_projection_dim=64,
        patch_size=1,
        guidance_embeds=True,
        axes_dims_rope=(8, 28, 28),
    ),
    dict(d_model=128, d_ff=256, d_kv=32, num_heads=4, num_layers=2, vocab_size=1000),
    name="mid",
    teacher=dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=1, vocab_size=1000),
)


@pytest.fixture(scope="module")
def tiny_flux():
    return build_models(RunSpec("flux", {}, {}, True, "tiny:flux"))


def test_parts_add_up_and_checkpointing_adds_one_forward(tiny_flux):
    plain = count_update(tiny_flux, "reference", TINY_SHAPE, vae_scale_factor=1)
    assert plain.total == sum(plain.parts.values())  # one counter around the update = the phases counted apart
    assert min(plain.parts["teacher_encode"], plain.parts["teacher_forward"], plain.parts["student"]) > 0
    ckpt = count_update(tiny_flux, "reference", TINY_SHAPE, gradient_checkpointing=True, vae_scale_factor=1)
    extra = ckpt.parts["student"] - plain.parts["student"]
    # recomputation repeats the transformer blocks' forward (not the embedders): just under one teacher forward
    assert 0.9 * plain.parts["teacher_forward"] < extra <= plain.parts["teacher_forward"]
    assert ckpt.parts["teacher_forward"] == plain.parts["teacher_forward"]


def test_loop_variants_are_ordered(tiny_flux):
    totals = {
        v: count_update(tiny_flux, v, TINY_SHAPE, vae_scale_factor=1, by_part=False).total
        for v in ("reference", "embedding_cache", "trajectory_cache")
    }
    fly = on_the_fly(totals["reference"], totals["embedding_cache"], 20)
    assert totals["reference"] > fly > totals["embedding_cache"] > totals["trajectory_cache"] > 0


def test_real_flux_teacher_forward_matches_the_analytic_count():
    with torch.device("meta"):
        models = build_models(real_spec("black-forest-labs/FLUX.1-dev"))
    assert sum(p.numel() for p in models.transformer.parameters()) == pytest.approx(11.9e9, rel=0.01)
    counted = count_update(models, "trajectory_cache", UpdateShape(), by_part=False).total
    # student forward + backward to the embedding at 512 px, 77 tokens (REFERENCE.md section 7: 30.98 TFLOP)
    assert counted / 1e12 == pytest.approx(30.98, rel=0.01)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_memory_estimate_matches_measured_cpu_allocator_peak(checkpointing):
    shape = UpdateShape(batch=2, resolution=128, seq_len=16)
    kw = dict(weight_dtype=torch.float32, gradient_checkpointing=checkpointing)
    estimate = estimate_update_memory(MID, "embedding_cache", shape, autocast_dtype=None, **kw)
    measured = measure_update(
        build_models(MID, torch.float32), "embedding_cache", shape, gradient_checkpointing=checkpointing
    )
    assert estimate.transient == pytest.approx(measured.transient_bytes, rel=0.05)


def test_teacher_phases_do_not_set_the_peak():
    spec = RunSpec("flux", {}, {}, True, "tiny:flux")
    peaks = {
        v: estimate_update_memory(spec, v, TINY_SHAPE, vae_scale_factor=1, teacher_resident=True).peak
        for v in ("reference", "embedding_cache", "trajectory_cache")
    }
    assert peaks["reference"] == peaks["embedding_cache"] == peaks["trajectory_cache"]


def test_fp8_storage_keeps_norm_modules_in_bf16():
    spec = real_spec("black-forest-labs/FLUX.1-dev")
    bf16, _ = storage_bytes(spec, torch.bfloat16, None)
    fp8, cast = storage_bytes(spec, torch.bfloat16, torch.float8_e4m3fn)
    assert bf16 / 2**30 == pytest.approx(22.17, rel=0.01)
    assert fp8 / 2**30 == pytest.approx(14.1, rel=0.02)  # not ~11 GiB: adaLN `norm*.linear` stay bf16
    assert 0 < cast < 0.2 * 2**30
    assert FLUX_DEV["num_single_layers"] == 38


def test_parse_memory():
    assert parse_memory("24GB") == 24 * 2**30
    assert parse_memory("512MiB") == 512 * 2**20
    with pytest.raises(ValueError, match="--gpu-memory"):
        parse_memory("lots")


def test_train_plan_loads_nothing_and_says_whether_it_fits(tmp_path, capsys, monkeypatch):
    from t5_compact.commands.train import main, parse_args
    from t5_compact.costs import plan as plan_module

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parent.parent / "examples" / "configs" / "tiny-cpu.yaml"
    made = []
    monkeypatch.setattr(plan_module, "make_plan", lambda c, _f=plan_module.make_plan: made.append(_f(c)) or made[-1])
    assert main(parse_args(["--config", str(config), "--plan", "--gpu-memory", "24GB"])) == 0
    out = capsys.readouterr().out
    assert "ESTIMATED" in out and "FITS in" in out and "FLOPs per optimizer update" in out
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
    small = plan_module.render(made[0], parse_memory("1MiB"))
    assert "DOES NOT FIT" in small and "gradient_checkpointing: true" in small and "teacher_cache" in small


def test_plan_of_an_unknown_model_names_it(capsys):
    from t5_compact.commands.train import main, parse_args

    config = Path(__file__).resolve().parent.parent / "examples" / "configs" / "tiny-cpu.yaml"
    args = parse_args(["--config", str(config), "--pretrained_model", "someone/unknown-model", "--plan"])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "someone/unknown-model" in err and "geometry unknown without downloading" in err


def test_plan_of_a_trajectory_cache_run_prints_its_loop_and_disk(tmp_path, capsys, monkeypatch):
    """A trajectory-cache config plans the student-only loop and the cache's size per trajectory (FLUX.1-dev at
    512 px: 2.88 MB, the bf16 velocities of 20 steps + the float32 noise)."""
    from t5_compact.commands.train import main, parse_args

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parent.parent / "examples" / "configs" / "tiny-cpu.yaml"
    flags = ["--trajectory_cache", "traj", "--trajectories", "2", "--plan"]
    assert main(parse_args(["--config", str(config), *flags])) == 0
    out = capsys.readouterr().out
    assert "trajectory cache (2 per prompt: no teacher pass" in out and "MB per trajectory at" in out
    assert not (tmp_path / "traj").exists()
    with torch.device("meta"):
        models = build_models(real_spec("black-forest-labs/FLUX.1-dev"))
    numel = math.prod(adapter_for(models).latent_shape(1, 512, 512))  # what the plan measures a trajectory by
    assert trajectory_bytes(numel, 20, "bfloat16", with_uncond=False) / 1e6 == pytest.approx(2.88, rel=0.01)
