"""`t5-compact eval` end to end on the tiny FLUX and SD3 pipelines, with a student that reproduces the teacher."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, T5EncoderModel

from t5_compact import T5CompactEncoder
from t5_compact.cli import main
from t5_compact.distill import PromptEncoder, adapter_from_pipeline, build_heldout, heldout_vision_loss
from t5_compact.evaluation import load_prompt_categories
from t5_compact.tiny import tiny_clip_config, tiny_clip_tokenizer, tiny_compact_encoder

PROMPTS = {
    "color": ["a red cat", "a blue dog on a green car"],
    "spatial": ["a cat left of a dog", "a book above a cup", "a tree next to a house"],
}


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts")
    (path / "color.txt").write_text("\n".join(PROMPTS["color"]) + "\n")
    (path / "spatial.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS["spatial"]))
    return path


def identity_student(teacher: T5EncoderModel) -> T5CompactEncoder:
    """The teacher's T5 weights plus a projector computing relu(x) - relu(-x) = x: outputs equal the teacher's."""
    width = teacher.config.d_model
    student = T5CompactEncoder.from_t5(teacher, projection_hidden_dim=2 * width, projection_out_dim=width)
    eye = torch.eye(width)
    with torch.no_grad():
        student.final_projection[0].weight.copy_(torch.cat([eye, -eye]))
        student.final_projection[3].weight.copy_(torch.cat([eye, -eye], dim=1))
    return student.eval()


@pytest.fixture(scope="module")
def students(tmp_path_factory, tiny_flux_dir) -> dict[str, Path]:
    """An exact copy of the teacher (`same`) and two random students of different sizes."""
    root = tmp_path_factory.mktemp("students")
    teacher = T5EncoderModel.from_pretrained(tiny_flux_dir / "text_encoder_2")
    identity_student(teacher).save_pretrained(root / "same")
    tiny_compact_encoder(seed=1).save_pretrained(root / "small")
    tiny_compact_encoder(seed=2, d_model=32, num_layers=3).save_pretrained(root / "big")
    return {p.name: p for p in root.iterdir()}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP model with its processor, saved like a hub checkpoint."""
    path = tmp_path_factory.mktemp("clip")
    vision = dict(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4
    )
    torch.manual_seed(0)
    config = CLIPConfig(text_config=tiny_clip_config().to_dict(), vision_config=vision, projection_dim=16)
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tiny_clip_tokenizer()).save_pretrained(path)
    return path


def run_eval(pipeline: Path, students: str, prompts: Path, out: Path, *extra: str) -> dict:
    argv = ["eval", "--pipeline", str(pipeline), "--students", students, "--prompts", str(prompts)]
    argv += ["--steps", "2", "--resolution", "32", "--dtype", "fp32", "--batch-size", "2", "--no-progress"]
    assert main([*argv, *extra, "--out", str(out)]) == 0
    return json.loads((out / "eval.json").read_text())


def test_prompt_categories_one_per_file(prompts_dir):
    assert load_prompt_categories(prompts_dir) == PROMPTS
    assert load_prompt_categories(f"{prompts_dir / 'color.txt'}", max_per_category=1) == {"color": ["a red cat"]}
    with pytest.raises(FileNotFoundError, match="no such prompt file"):
        load_prompt_categories(prompts_dir / "missing.txt")


def test_eval_flux_end_to_end(tmp_path, tiny_flux_dir, students, prompts_dir, clip_dir):
    names = f"same={students['same']},small={students['small']},big={students['big']}"
    data = run_eval(tiny_flux_dir, names, prompts_dir, tmp_path / "a", "--clip-model", str(clip_dir))
    out = tmp_path / "a"
    for name in ("eval.md", "eval.json", "by_category.png", "scaling.png", "grids/color.png", "grids/spatial.png"):
        assert (out / name).stat().st_size > 0, name
    by_label = {s["label"]: s for s in data["students"]}
    assert set(by_label) == {"same", "small", "big"}
    assert data["meta"]["prompts_per_category"] == {"color": 2, "spatial": 3}

    # A student whose embeddings equal the teacher's follows the teacher exactly.
    same = by_label["same"]["summary"]
    for category in ("color", "spatial", "all"):
        assert same[category]["l_vision"] == 0.0 and same[category]["fidelity"] == 1.0
        assert same[category]["latent_mse"] == 0.0
        assert same[category]["psnr"] == "inf" and same[category]["ssim"] == 1.0
    # Random students do not, and every number is finite.
    for label in ("small", "big"):
        summary = by_label[label]["summary"]
        for category in ("color", "spatial", "all"):
            row = summary[category]
            assert 0 < row["l_vision"] < math.inf and 0 < row["latent_mse"] < math.inf
            assert math.isfinite(row["psnr"]) and -1 <= row["ssim"] < 1
            assert 0 <= row["clip"] <= 100
            null = data["null_student"]["l_vision"].get(category)
            if category != "all":
                assert row["fidelity"] == pytest.approx(1 - row["l_vision"] / null)
            assert row["l_vision_uncond"] is None  # FLUX: no negative-prompt branch
        assert len(by_label[label]["per_prompt"]) == 5
    assert by_label["big"]["params"] > by_label["small"]["params"]
    assert set(data["teacher_clip"]) == {"color", "spatial", "all"}
    # The teacher's CLIP score equals the identical student's (same images).
    assert data["teacher_clip"]["all"] == pytest.approx(same["all"]["clip"])

    md = (out / "eval.md").read_text()
    assert "| color |" in md and "| all |" in md and "heldout_branch_losses" in md and "grids/color.png" in md
    assert "| Category | null student | same | small | big |" in md and "Prompt-specific fidelity" in md

    # L_vision is the shared distill function's number, called directly here with the same settings.
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux_dir)
    encoder = PromptEncoder.from_pipeline(pipe, max_sequence_length=77)
    heldout = build_heldout(load_prompt_categories(prompts_dir, 8), encoder, teacher_t5=pipe.text_encoder_2)
    student = T5CompactEncoder.from_pretrained(students["small"], torch_dtype=torch.float32)
    direct = heldout_vision_loss(
        adapter_from_pipeline(pipe),
        student,
        heldout,
        num_steps=2,
        height=32,
        width=32,
        guidance=3.5,
        batch_size=2,
        zero_pooled=False,
    )
    for category, value in direct.items():
        assert by_label["small"]["summary"][category]["l_vision"] == pytest.approx(value, rel=1e-6)


def test_eval_rejects_a_student_of_the_wrong_width(tmp_path, tiny_flux_dir, prompts_dir, capsys):
    tiny_compact_encoder(out_dim=48).save_pretrained(tmp_path / "wide")
    argv = ["eval", "--pipeline", str(tiny_flux_dir), "--students", str(tmp_path / "wide"), "--prompts"]
    assert main([*argv, str(prompts_dir), "--steps", "2", "--resolution", "32", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("t5-compact eval: error: ") and "joint_attention_dim=32" in err


def test_eval_is_deterministic(tmp_path, tiny_flux_dir, students, prompts_dir):
    names = f"small={students['small']}"
    extra = ("--seeds", "0,1", "--teacher", str(tiny_flux_dir / "text_encoder_2"))
    first = run_eval(tiny_flux_dir, names, prompts_dir, tmp_path / "1", *extra)
    second = run_eval(tiny_flux_dir, names, prompts_dir, tmp_path / "2", *extra)
    assert first["students"] == second["students"]
    assert len(first["students"][0]["per_prompt"]) == 10  # 5 prompts x 2 seeds
    grids = [(tmp_path / run / "grids" / "color.png").read_bytes() for run in ("1", "2")]
    assert grids[0] == grids[1]


def test_eval_sd3_with_classifier_free_guidance(tmp_path, tiny_sd3_dir, students, prompts_dir):
    identity_student(T5EncoderModel.from_pretrained(tiny_sd3_dir / "text_encoder_3")).save_pretrained(tmp_path / "s")
    data = run_eval(tiny_sd3_dir, f"same={tmp_path / 's'},small={students['small']}", prompts_dir, tmp_path / "out")
    tmp_path = tmp_path / "out"
    assert data["meta"]["family"] == "sd3" and data["meta"]["classifier_free_guidance"] is True
    same, small = (s["summary"]["all"] for s in data["students"])
    # guided sampling with the student's own prompt and "" embeddings: identical for the identical student
    assert same["l_vision"] == 0.0 and same["latent_mse"] == 0.0 and same["psnr"] == "inf"
    assert same["l_vision_uncond"] == 0.0 and same["fidelity"] == 1.0
    assert 0 < small["l_vision"] < math.inf and math.isfinite(small["psnr"])
    assert 0 < small["l_vision_uncond"] < math.inf and small["fidelity"] < 1
    assert (tmp_path / "grids" / "spatial.png").exists()
