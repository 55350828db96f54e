"""`t5-compact export`: the shareable folder, the model card (metadata round-trips through `ModelCard.load`), the
ComfyUI file, degrading without a training record, and hub pushes that fail in one line before anything remote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from comfyui_nodes.loader import inspect_compact_file
from t5_compact import T5CompactEncoder
from t5_compact.cli import main
from t5_compact.export import export, read_training_info
from t5_compact.model_card import card_data
from t5_compact.tiny import tiny_compact_encoder
from t5_compact.training.loop import export_student

ROOT = Path(__file__).resolve().parents[1]
# The layout issue 8's `training_info.json` records (format version 1), tiny figures.
INFO = {
    "format": "t5-compact-training-info",
    "version": 1,
    "pipeline": {"family": "flux", "id": "black-forest-labs/FLUX.1-dev", "revision": None},
    "teacher": {"id": "google/t5-v1_1-xxl", "dtype": "bfloat16"},
    "max_sequence_length": 512,
    "steps": 60,
    "stages": [{"name": "all", "steps": 60, "resolution": 64, "categories": ["semantics", "text"]}],
    "init_from": "google/flan-t5-base",
    "mixed_precision": "bf16",
    "seed": 0,
    "heldout": {
        "seed": 1234,
        "guidance": 3.5,
        "resolution": 64,
        "step": 60,
        "L_vision": {"semantics": 0.0012, "text": 0.0031},
        "L_null": {"semantics": 0.003, "text": 0.004},
        "fidelity": {"semantics": 0.6, "text": 0.225},
    },
}
BENCH = {
    "meta": {"hardware": "test CPU", "device": "cpu", "dtype": "bf16", "command": "t5-compact bench --encoders base"},
    "reference": "base",
    "encoders": [
        {
            "label": "base",
            "params": 129_600_000,
            "disk_bytes": {"bf16": 259_000_000},
            "memory": {"peak_bytes": 368_000_000},
            "timings": [{"length": 77, "batch": 1, "median_s": 0.78}],
        }
    ],
}


@pytest.fixture
def student(tmp_path: Path) -> Path:
    folder = tmp_path / "run" / "student"
    tiny_compact_encoder(out_dim=32).save_pretrained(folder)
    (folder / "training_info.json").write_text(json.dumps(INFO))
    return folder


def test_export_folder_card_and_comfyui_file(student: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH))
    out = export(student, tmp_path / "my-student", comfyui=True, bench=bench)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "my-student-comfyui.safetensors"] + [
        "training_info.json"
    ]
    ids = torch.tensor([[5, 6, 7, 1]])
    with torch.no_grad():
        want = T5CompactEncoder.from_pretrained(student)(ids).last_hidden_state
        got = T5CompactEncoder.from_pretrained(out)(ids).last_hidden_state
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert inspect_compact_file(out / "my-student-comfyui.safetensors").config["projection_out_dim"] == 32
    assert read_training_info(out) == INFO

    card = ModelCard.load(out / "README.md")
    config = T5CompactEncoder.from_pretrained(out).config.to_dict()
    assert card.data.to_dict() == card_data(config, INFO).to_dict()
    meta = card.data.to_dict()
    assert meta["library_name"] == "t5-compact" and meta["license"] == "apache-2.0"
    assert meta["base_model"] == "google/flan-t5-base" and meta["pipeline_tag"] == "feature-extraction"
    assert {"t5-compact", "flux", "comfyui"} <= set(meta["tags"])
    assert meta["distilled_for"] == "black-forest-labs/FLUX.1-dev"
    text = card.text
    assert "| T5-XXL encoder | 24 | 4096 | 4096 | 4.76 B | 9.52 GB |" in text
    assert "| semantics | 0.0012 | 0.003 | 0.600 |" in text and "| text | 0.0031 | 0.004 | 0.225 |" in text
    assert "Teacher: `google/t5-v1_1-xxl` (bfloat16)" in text and "| all | 60 | 64 | semantics, text |" in text
    assert "| base | 129.6 M | 259 MB | 368 MB | 0.78 s |" in text and "t5-compact bench --encoders base" in text
    assert 'FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", text_encoder_2=compact' in text
    assert "`my-student-comfyui.safetensors` in `ComfyUI/models/text_encoders/`" in text
    assert "@inproceedings{wang2025scaling" in text


def test_export_without_training_info_degrades(tmp_path: Path) -> None:
    student = tmp_path / "student"
    tiny_compact_encoder().save_pretrained(student)
    out = export(student, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = ModelCard.load(out / "README.md")
    assert "base_model" not in card.data.to_dict() and card.data.library_name == "t5-compact"
    assert "its training is not recorded here" in card.text and "Held-out fidelity" not in card.text
    assert "t5-compact convert" in card.text  # how to make the ComfyUI file


def test_push_offline_fails_in_one_line_before_anything(student: Path, tmp_path: Path) -> None:
    """The real CLI in a fresh process with HF_HUB_OFFLINE=1: one line, exit 2, nothing written."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "t5_compact.cli", "export", str(student), str(out), "--push-to-hub", "me/tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "t5-compact export: error: --push-to-hub me/tiny: HF_HUB_OFFLINE is set; unset it to publish"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--push-to-hub", "me/tiny"], "me/tiny: no Hugging Face token; run `hf auth login` or set HF_TOKEN"),
        (["--push-to-hub", "tiny"], "--push-to-hub 'tiny': expected OWNER/NAME"),
        (["--bench", "BENCH"], "bench.json: not a readable bench.json"),
    ],
)
def test_bad_push_or_bench_fails_in_one_line(student, tmp_path, monkeypatch, capsys, args, message) -> None:
    import huggingface_hub

    import t5_compact.sources

    monkeypatch.setattr(t5_compact.sources, "is_offline", lambda: False)  # online, but no token
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    (tmp_path / "bench.json").write_text("{not json")
    args = [str(tmp_path / "bench.json") if a == "BENCH" else a for a in args]
    assert main(["export", str(student), str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_existing_out_is_not_replaced_without_overwrite(student: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert main(["export", str(student), str(tmp_path / "taken")]) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(student), str(student.parent), "--overwrite"]) == 2  # never deletes the student
    assert "this is (or holds) the student itself" in capsys.readouterr().err and student.is_dir()
    assert main(["export", str(student), str(tmp_path / "taken"), "--overwrite"]) == 0
    assert not (tmp_path / "taken" / "x").exists() and (tmp_path / "taken" / "README.md").is_file()


def test_push_uses_create_repo_and_upload_folder(student: Path, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    import t5_compact.export as export_module

    calls = []
    monkeypatch.setattr(export_module, "check_hub_access", lambda repo_id: calls.append(("check", repo_id)))
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)))
    out = export(student, tmp_path / "out", push_to_hub="me/tiny", private=True, comfyui=True)
    assert calls[0] == ("check", "me/tiny")
    assert calls[1] == ("create", "me/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls[2][1]["repo_id"] == "me/tiny" and calls[2][1]["folder_path"] == str(out)
    assert (out / "tiny-comfyui.safetensors").is_file()  # named after the hub repo
    assert 'T5CompactEncoder.from_pretrained("me/tiny"' in (out / "README.md").read_text()


def test_train_export_writes_the_same_card(student: Path, tmp_path: Path) -> None:
    folder = tmp_path / "final" / "student"
    folder.mkdir(parents=True)
    (folder / "training_info.json").write_text(json.dumps(INFO))
    export_student(T5CompactEncoder.from_pretrained(student), folder)
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "google/flan-t5-base" and "| semantics | 0.0012 | 0.003 | 0.600 |" in card.text
