"""Chroma and LTX-Video through the normal `t5-compact train` / `cache-teacher` / `eval`: tiny presets train and
resume exactly, the teacher cache keeps the T5 mask, validation images decode, real-size presets validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from t5_compact.cli import main as cli_main
from t5_compact.modeling_t5_compact import T5CompactEncoder
from t5_compact.training.config import build_config, read_config_file

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
pytestmark = pytest.mark.usefixtures("single_thread_fresh_accelerate")


@pytest.mark.parametrize("name", ["tiny-cpu-chroma", "tiny-cpu-ltx", "chroma-base", "ltx-base"])
def test_family_presets_validate(name):
    config = build_config(read_config_file(CONFIGS / f"{name}.yaml"), {})
    assert config.total_steps() > 0 and config.stage_list()
    family = "chroma" if "chroma" in name else "ltx"
    assert config.pretrained_model == "tiny:" + family if name.startswith("tiny") else "/" in config.pretrained_model


def _train(preset: str, out: Path, *extra: str) -> None:
    args = ["train", "--config", str(CONFIGS / f"{preset}.yaml"), "--output_dir", str(out), "--max_train_steps", "6"]
    args += ["--checkpointing_steps", "3", "--validation_steps", "3", "--report_to", "none", "--no-tqdm", *extra]
    assert cli_main(args) == 0
    AcceleratorState._reset_state(True)


@pytest.mark.parametrize("preset", ["tiny-cpu-chroma", "tiny-cpu-ltx"])
def test_tiny_preset_trains_and_resumes_exactly(tmp_path, preset):
    """6 steps of the shipped preset straight == 3 steps, then resume from checkpoint-3 for 3 more."""
    no_images = ["--validation_images_steps", "0"]
    _train(preset, tmp_path / "straight", *no_images)
    history = json.loads((tmp_path / "straight" / "heldout.json").read_text())
    assert [h["step"] for h in history] == [0, 3, 6] and history[-1]["L_vision"] != history[0]["L_vision"]
    assert all(v > 0 for h in history for v in h["L_vision"].values())
    checkpoint = tmp_path / "straight" / "checkpoint-3"
    _train(preset, tmp_path / "resumed", *no_images, "--resume", str(checkpoint))
    a = T5CompactEncoder.from_pretrained(tmp_path / "straight" / "student")
    b = T5CompactEncoder.from_pretrained(tmp_path / "resumed" / "student")
    assert a.out_dim == 32
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_chroma_validation_images_and_cached_teacher_with_mask(tmp_path):
    """cache-teacher stores the T5 mask; training from the cache equals training on the fly; images are written."""
    config = str(CONFIGS / "tiny-cpu-chroma.yaml")
    cache = tmp_path / "cache"
    assert (
        cli_main(["cache-teacher", "--config", config, "--teacher_cache", str(cache), "--max_train_steps", "4"]) == 0
    )
    index = json.loads((cache / "index.json").read_text())
    from safetensors import safe_open

    with safe_open(str(cache / index["shards"][0]), "pt") as fh:
        assert "mask" in fh.keys() and "clip" not in fh.keys()
    from t5_compact.training.teacher_cache import prompt_key

    assert prompt_key("") in index["prompts"]  # the CFG negative
    extra = ["--max_train_steps", "4", "--validation_images_steps", "4"]
    _train("tiny-cpu-chroma", tmp_path / "fly", *extra)
    _train("tiny-cpu-chroma", tmp_path / "cached", *extra, "--teacher_cache", str(cache))
    losses = [
        [json.loads(line)["loss"] for line in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
        for run in ("fly", "cached")
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    from t5_compact.training import validation

    grid = validation.image_array(tmp_path / "cached" / "validation" / "step-0000004.png")
    # two prompts x (teacher | student), 32 px tiles upscaled to 256 px, with the label column and header
    assert grid.shape == (validation.HEADER_HEIGHT + 2 * 256, validation.LABEL_WIDTH + 2 * 256, 3)


def test_ltx_decode_is_the_pipelines_first_frame():
    from t5_compact.distill import PromptEncoder, adapter_from_pipeline, sample
    from t5_compact.tiny_pipelines import tiny_ltx

    pipe = tiny_ltx()
    pipe.set_progress_bar_config(disable=True)
    adapter = adapter_from_pipeline(pipe, num_frames=1)
    cond = PromptEncoder.from_pipeline(pipe, max_sequence_length=16).encode(["a red cat"], pipe.text_encoder)
    latents = adapter.prepare_latents(1, 32, 32, generator=torch.Generator().manual_seed(1))
    final = sample(adapter, cond, latents, num_steps=2, height=32, width=32)
    ours = (adapter.decode(pipe.vae, final, 32, 32).clamp(-1, 1) + 1) / 2
    theirs = pipe(
        prompt_embeds=cond.t5,
        prompt_attention_mask=cond.mask,
        height=32,
        width=32,
        num_frames=1,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(1),
        output_type="pt",
    ).frames[:, 0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_eval_answers_does_a_flux_trained_student_work_on_chroma(tmp_path):
    """The users' question, by measurement (tiny scale: the mechanism, not an answer for the real models): a student
    trained on (tiny) FLUX and one trained on (tiny) Chroma, evaluated side by side on a Chroma pipeline folder."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from test_eval import identity_student

    from t5_compact.tiny_pipelines import tiny_chroma
    from t5_compact.training.models import FLUX_SCHEDULER

    chroma = tiny_chroma()
    chroma.scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    chroma.save_pretrained(tmp_path / "chroma")
    identity_student(chroma.text_encoder).save_pretrained(tmp_path / "same")
    for family in ("flux", "chroma"):
        preset = "tiny-cpu" if family == "flux" else "tiny-cpu-chroma"
        _train(preset, tmp_path / family, "--validation_images_steps", "0", "--checkpointing_steps", "100")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cat\na sign that says hello\n")
    students = ",".join(f"{n}_student={tmp_path / n / 'student'}" for n in ("flux", "chroma"))
    argv = ["eval", "--pipeline", str(tmp_path / "chroma"), "--prompts", str(prompts), "--out", str(tmp_path / "ev")]
    argv += ["--students", f"same={tmp_path / 'same'},{students}", "--steps", "2", "--resolution", "32"]
    assert cli_main([*argv, "--dtype", "fp32", "--guidance", "4.0", "--no-progress"]) == 0
    data = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert data["meta"]["family"] == "chroma" and data["meta"]["classifier_free_guidance"] is True
    summary = {s["label"]: s["summary"]["all"] for s in data["students"]}
    assert summary["same"]["l_vision"] == 0.0 and summary["same"]["latent_mse"] == 0.0
    for label in ("flux_student", "chroma_student"):
        assert 0 < summary[label]["l_vision"] < float("inf")
    assert "flux_student" in (tmp_path / "ev" / "eval.md").read_text()


def test_chroma_trains_under_two_process_ddp(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (DDP over gloo on CPU) with the Chroma preset."""
    import os
    import subprocess

    out = tmp_path / "run"
    cmd = ["accelerate", "launch", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--multi_gpu", "-m", "t5_compact.cli", "train", "--config"]
    cmd += [str(CONFIGS / "tiny-cpu-chroma.yaml"), "--output_dir", str(out), "--max_train_steps", "2"]
    cmd += ["--train_batch_size", "2", "--validation_images_steps", "0", "--checkpointing_steps", "2", "--no-tqdm"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rng_files = sorted(p.name for p in (out / "checkpoint-2").glob("random_states_*"))
    assert rng_files == ["random_states_0.pkl", "random_states_1.pkl"]
    history = json.loads((out / "heldout.json").read_text())
    assert all(v > 0 for h in history for v in h["L_vision"].values())
    assert T5CompactEncoder.from_pretrained(out / "student").out_dim == 32


@pytest.mark.parametrize("family", ["chroma", "ltx"])
def test_components_load_from_a_saved_pipeline_folder(tmp_path, family):
    """The non-tiny path (a diffusers folder, as for the real models): classes from the configs, VAE factors from
    the VAE config equal the pipeline's own, the T5 slot and tokenizer of the family."""
    from t5_compact.distill import adapter_from_pipeline
    from t5_compact.tiny_pipelines import tiny_chroma, tiny_ltx
    from t5_compact.training.models import load_components

    pipe = (tiny_chroma if family == "chroma" else tiny_ltx)()
    pipe.save_pretrained(tmp_path / "pipe")
    values = {"pretrained_model": str(tmp_path / "pipe"), "sources": [{"prompts": ["a cat"]}], "max_train_steps": 1}
    config = build_config(values, {})
    parts = load_components(config, load_teacher=True, need_clip=False, device="cpu", weight_dtype=torch.float32)
    expected = adapter_from_pipeline(pipe)
    assert parts.family == family and type(parts.adapter) is type(expected)
    assert parts.adapter.vae_scale_factor == expected.vae_scale_factor
    assert getattr(parts.adapter, "temporal_compression", None) == getattr(expected, "temporal_compression", None)
    ids = parts.prompt_encoder.tokenize(["a red cat"])
    mask = (ids != 0).long() if family == "chroma" else None  # Chroma encodes with the mask, LTX without
    got = parts.prompt_encoder.encode(["a red cat"], parts.teacher_t5).t5
    torch.testing.assert_close(got, pipe.text_encoder(ids, attention_mask=mask)[0])
    assert parts.vae_loader().__class__ is pipe.vae.__class__
