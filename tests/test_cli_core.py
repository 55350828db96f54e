"""`t5-compact encode / generate / convert` on the tiny local pipelines, run in-process through `cli.main`."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoTokenizer

from t5_compact import T5CompactEncoder
from t5_compact.cli import main
from t5_compact.tiny import tiny_compact_encoder, tiny_t5_tokenizer

PROMPTS = ["a red cat", "a sign that says hello"]


@pytest.fixture
def dirs(tiny_flux_dir, tiny_sd3_dir):
    return {"flux": tiny_flux_dir, "sd3": tiny_sd3_dir}


# --- encode ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "slot"), [("flux", "tokenizer_2"), ("sd3", "tokenizer_3")])
def test_encode_with_the_pipelines_tokenizer_writes_the_embeddings(
    dirs, tiny_encoder_dir, tmp_path, capsys, family, slot
):
    out = tmp_path / "embeds.safetensors"
    args = ["encode", "--encoder", str(tiny_encoder_dir), "--pipeline", str(dirs[family]), *PROMPTS]
    assert main([*args, "--max-length", "16", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "prompt_embeds: (2, 16, 32) torch.float32" in stdout and "finite True" in stdout
    with safe_open(str(out), "pt") as fh:
        embeds, input_ids, metadata = fh.get_tensor("prompt_embeds"), fh.get_tensor("input_ids"), fh.metadata()
    assert json.loads(metadata["prompts"]) == PROMPTS and metadata["max_length"] == "16"
    tokenizer = AutoTokenizer.from_pretrained(dirs[family], subfolder=slot)
    expected_ids = tokenizer(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert torch.equal(input_ids, expected_ids.input_ids)
    with torch.no_grad():
        assert torch.equal(embeds, tiny_compact_encoder()(input_ids)[0])


def test_encode_default_length_is_the_pipelines(dirs, tiny_encoder_dir, capsys):
    for family, length in (("flux", 512), ("sd3", 256)):
        assert main(["encode", "--encoder", str(tiny_encoder_dir), "--pipeline", str(dirs[family]), "a cat"]) == 0
        assert f"prompt_embeds: (1, {length}, 32)" in capsys.readouterr().out


def test_encode_with_an_explicit_tokenizer_and_dtype(tiny_encoder_dir, tmp_path, capsys):
    tiny_t5_tokenizer().save_pretrained(tmp_path / "tok")
    args = ["encode", "--encoder", str(tiny_encoder_dir), "--tokenizer", str(tmp_path / "tok"), "a cat"]
    assert main([*args, "--max-length", "8", "--dtype", "bf16"]) == 0
    stdout = capsys.readouterr().out
    assert "prompt_embeds: (1, 8, 32) torch.bfloat16" in stdout and "tokens 3/8" in stdout


def test_encode_without_a_tokenizer_says_where_to_get_one(tiny_encoder_dir, capsys):
    assert main(["encode", "--encoder", str(tiny_encoder_dir), "a cat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t5-compact encode: error: ") and len(err.strip().splitlines()) == 1
    assert "no tokenizer found" in err and "--tokenizer PATH_OR_ID" in err and "--pipeline BASE" in err


def test_encode_reports_a_bad_encoder_in_one_line(dirs, tmp_path, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    assert main(["encode", "--encoder", str(garbage), "--pipeline", str(dirs["flux"]), "a cat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t5-compact encode: error: ") and str(garbage) in err and "safetensors" in err


# --- generate --------------------------------------------------------------------------------------------------------

TINY = ["--steps", "2", "--height", "32", "--width", "32", "--max-sequence-length", "16"]


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_generate_writes_an_image(dirs, tiny_encoder_dir, tmp_path, capsys, family):
    out = tmp_path / "out.png"
    args = ["generate", "--pipeline", str(dirs[family]), "--encoder", str(tiny_encoder_dir), "a red cat"]
    assert main([*args, "-o", str(out), *TINY, "--seed", "3"]) == 0
    assert Image.open(out).size == (32, 32)
    stdout = capsys.readouterr().out
    assert f"wrote {out} (32x32)" in stdout and ("FluxPipeline" if family == "flux" else "StableDiffusion3") in stdout
    if family == "flux":  # same seed, same image; another seed, another image
        again, other = tmp_path / "again.png", tmp_path / "other.png"
        assert main([*args, "-o", str(again), *TINY, "--seed", "3"]) == 0
        assert main([*args, "-o", str(other), *TINY, "--seed", "4"]) == 0
        assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))
        assert not np.array_equal(np.asarray(Image.open(other)), np.asarray(Image.open(out)))


def test_generate_several_prompts_with_cpu_offload(dirs, tiny_encoder_dir, tmp_path):
    args = ["generate", "--pipeline", str(dirs["flux"]), "--encoder", str(tiny_encoder_dir), *PROMPTS]
    assert main([*args, "-o", str(tmp_path / "img.png"), *TINY, "--cpu-offload", "--device", "cpu"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["img-0.png", "img-1.png"]


def test_generate_reports_a_width_mismatch(dirs, tmp_path, capsys):
    tiny_compact_encoder(out_dim=48).save_pretrained(tmp_path / "wide")
    args = ["generate", "--pipeline", str(dirs["sd3"]), "--encoder", str(tmp_path / "wide"), "a cat"]
    assert main([*args, "-o", str(tmp_path / "x.png"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "outputs width 48" in err and "joint_attention_dim=32" in err and str(tmp_path / "wide") in err
    assert not (tmp_path / "x.png").exists()


# --- convert ---------------------------------------------------------------------------------------------------------


def test_convert_command(tiny_encoder_dir, tmp_path, capsys):
    out = tmp_path / "student.safetensors"
    assert main(["convert", str(tiny_encoder_dir), str(out), "--dtype", "fp16"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert T5CompactEncoder.from_pretrained(out).dtype == torch.float16
    assert main(["convert", str(tiny_encoder_dir), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(tiny_encoder_dir), str(out), "--overwrite", "--dtype", "fp32"]) == 0
    assert T5CompactEncoder.from_pretrained(out).dtype == torch.float32
    assert main(["convert", str(out), str(tmp_path / "folder"), "--format", "folder"]) == 0
    assert (tmp_path / "folder" / "config.json").exists() and (tmp_path / "folder" / "model.safetensors").exists()


def test_cli_help_in_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "t5_compact.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("encode", "generate", "convert"):
        assert command in proc.stdout


def test_help_imports_neither_torch_nor_transformers():
    """`t5-compact --help` and every `t5-compact <cmd> --help` stay fast (< 1 s): no heavy import at all."""
    script = (
        "import contextlib, io, json, sys\n"
        "from t5_compact.cli import COMMANDS, main\n"
        "for argv in [['--help']] + [[c, '--help'] for c in COMMANDS]:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "import t5_compact.checkpoint, t5_compact.errors, t5_compact.geometry, t5_compact.loading\n"
        "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["torch"]  # torch only for `checkpoint`/`loading` (tensors), after the help


def test_lazy_package_keeps_the_public_names_and_the_auto_classes(tiny_encoder_dir):
    script = (
        "import t5_compact, json, sys\n"
        "light = 'transformers' not in sys.modules and 't5_compact.modeling_t5_compact' in sys.modules\n"
        "from t5_compact import T5CompactConfig, T5CompactEncoder, compact_config, load_pipeline, STUDENT_SIZES\n"
        "from transformers import AutoConfig, AutoModel\n"
        f"model = AutoModel.from_pretrained({str(tiny_encoder_dir)!r})\n"
        "print(json.dumps([light, type(model).__name__, sorted(set(t5_compact.__all__) - set(dir(t5_compact)))]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True, "T5CompactEncoder", []]


@pytest.mark.parametrize("name", ["diffusers_flux.py", "diffusers_sd3.py"])
def test_examples_import_cleanly_without_path_hacks(name):
    path = Path(__file__).parents[1] / "examples" / name
    source = path.read_text()
    assert "sys.path" not in source and "from t5_compact import T5CompactEncoder" in source
    namespace = runpy.run_path(str(path), run_name="example")  # imports only; main() needs the real models
    assert callable(namespace["main"])
