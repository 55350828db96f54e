"""Drop-in beyond FLUX / SD3: every tiny pipeline of `TINY_PIPELINES` with a compact encoder in its T5 slot.

Per pipeline: `load_pipeline` with the right width runs two steps; a wrong width is refused before the transformer
loads; stock `from_pretrained(..., <slot>=compact)` logs no type warning; masked-T5 pipelines get what plain
transformers T5 + projector give with the same mask; `save_pretrained` -> reload in a fresh process (one
subprocess for all pipelines).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from test_pipelines import diffusers_warnings
from transformers import T5Config, T5EncoderModel

from t5_compact import T5CompactEncoder
from t5_compact.errors import WidthMismatchError
from t5_compact.pipeline_slots import ENCODER_KINDS, STUDENT_CLASSES, find_t5_slot, passes_t5_mask, pipeline_class
from t5_compact.pipelines import load_pipeline, pipeline_t5_slot
from t5_compact.tiny import tiny_compact_encoder
from t5_compact.tiny_pipelines import TINY_CALLS, TINY_PIPELINES

NAMES = list(TINY_PIPELINES)
# Pipelines that pass a T5 attention mask to the encoder (the others encode the pad tokens too; LTX and CogVideoX
# encode them and LTX masks them only inside its transformer).
MASKED = {"ChromaPipeline", "PixArtSigmaPipeline", "HiDreamImagePipeline"}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every tiny pipeline saved with `save_pretrained` (with its tiny T5 teacher)."""
    root = tmp_path_factory.mktemp("tiny_any")
    dirs = {}
    for name, build in TINY_PIPELINES.items():
        build().save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


def two_steps(pipe, name: str) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(0)
    out = pipe(prompt="a red cat", num_inference_steps=2, generator=generator, **TINY_CALLS[name])
    return np.asarray(out[0])


@pytest.mark.parametrize("name", NAMES)
def test_load_pipeline_puts_the_encoder_in_the_annotated_slot_and_runs_two_steps(tiny_dirs, name, monkeypatch):
    encoder = tiny_compact_encoder()
    slot = pipeline_t5_slot(tiny_dirs[name])
    pipe = load_pipeline(tiny_dirs[name], encoder, torch_dtype=torch.float32)
    assert type(pipe).__name__ == name and getattr(pipe, slot.slot) is encoder
    calls = []
    monkeypatch.setattr(encoder, "forward", lambda *a, _f=encoder.forward, **k: calls.append(1) or _f(*a, **k))
    out = two_steps(pipe, name)
    assert calls and np.isfinite(out).all()  # the compact encoder did the encoding


@pytest.mark.parametrize("name", NAMES)
def test_wrong_width_is_refused_before_the_transformer_loads(tiny_dirs, tmp_path, name):
    base = tmp_path / name
    shutil.copytree(tiny_dirs[name], base)
    for weights in (base / "transformer").glob("*.safetensors"):
        weights.unlink()  # loading the transformer would now fail
    with pytest.raises(WidthMismatchError, match="outputs width 24 .*expects .*=32") as err:
        load_pipeline(base, tiny_compact_encoder(out_dim=24))
    assert "transformer/config.json" in str(err.value)
    with pytest.raises(Exception) as err:  # control: with the right width, loading gets to the missing weights
        load_pipeline(base, tiny_compact_encoder())
    assert not isinstance(err.value, WidthMismatchError)


@pytest.mark.parametrize("name", NAMES)
def test_stock_from_pretrained_takes_the_compact_encoder_without_a_type_warning(tiny_dirs, name):
    encoder = tiny_compact_encoder()
    slot = find_t5_slot(name).slot
    with diffusers_warnings() as warnings:
        pipe = getattr(diffusers, name).from_pretrained(tiny_dirs[name], **{slot: encoder})
    assert getattr(pipe, slot) is encoder
    assert not [w for w in warnings if "Expected types" in w], warnings


def plain_t5_with_projector(encoder: T5CompactEncoder, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The reference: transformers' own `T5EncoderModel` with the student's weights, then the student's projector."""
    fields = {k: v for k, v in encoder.config.to_dict().items() if not k.startswith("projection_")}
    t5 = T5EncoderModel(T5Config(**fields)).eval()
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("final_projection.")}
    t5.load_state_dict(state, strict=True)
    hidden = t5(input_ids=ids, attention_mask=mask)[0]
    return encoder.final_projection(hidden)


@pytest.mark.parametrize("name", NAMES)
def test_masked_t5_embeddings_equal_plain_t5_plus_projector_with_that_mask(tiny_dirs, name):
    encoder = tiny_compact_encoder()
    pipe = load_pipeline(tiny_dirs[name], encoder)
    seen = []
    hook = encoder.register_forward_hook(
        lambda _m, args, kwargs, out: seen.append((args, kwargs, out[0])), with_kwargs=True
    )
    two_steps(pipe, name)
    hook.remove()
    assert seen
    masked = False
    for args, kwargs, out in seen:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        masked |= mask is not None and bool((mask == 0).any())
        with torch.no_grad():
            expected = plain_t5_with_projector(encoder, ids, mask)
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
            if mask is not None and bool((mask == 0).any()):  # and the mask matters
                assert not torch.allclose(out, plain_t5_with_projector(encoder, ids, None), atol=1e-4)
    assert masked == (name in MASKED) == passes_t5_mask(name)


def test_save_and_reload_in_a_fresh_process_for_every_pipeline(tiny_dirs, tmp_path):
    saved, sums = {}, {}
    ids = torch.tensor([[5, 9, 12, 1, 0, 0]])
    for name, base in tiny_dirs.items():
        encoder = tiny_compact_encoder(seed=len(saved))
        pipe = load_pipeline(base, encoder)
        pipe.save_pretrained(tmp_path / name)
        index = json.loads((tmp_path / name / "model_index.json").read_text())
        assert index[find_t5_slot(name).slot] == ["t5_compact.modeling_t5_compact", "T5CompactEncoder"]
        saved[name] = str(tmp_path / name)
        with torch.no_grad():
            sums[name] = float(encoder(ids)[0].double().sum())
    script = textwrap.dedent(
        f"""
        import json, torch
        import t5_compact  # registers the module diffusers recorded: t5_compact.modeling_t5_compact
        from diffusers import DiffusionPipeline
        from t5_compact.pipeline_slots import find_t5_slot
        out = {{}}
        for name, path in {saved!r}.items():
            pipe = DiffusionPipeline.from_pretrained(path)
            enc = getattr(pipe, find_t5_slot(pipe).slot)
            with torch.no_grad():
                s = float(enc(torch.tensor({ids.tolist()!r}))[0].double().sum())
            out[name] = [type(pipe).__name__, type(enc).__module__ + "." + type(enc).__name__, s]
        print(json.dumps(out))
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in saved:
        cls, enc_cls, total = result[name]
        assert cls == name and enc_cls == "t5_compact.modeling_t5_compact.T5CompactEncoder"
        assert total == pytest.approx(sums[name], rel=1e-6)


def test_umt5_slots_are_refused_in_one_line(tmp_path):
    index = {
        "_class_name": "WanPipeline",
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
    }
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"^WanPipeline: its text_encoder is a UMT5 encoder.*UMT5 student is needed"):
        load_pipeline(tmp_path, tiny_compact_encoder())
    assert find_t5_slot("AuraFlowPipeline").kind == "umt5"
    assert find_t5_slot("SkyReelsV2Pipeline").kind == "umt5"  # annotated T5 | UMT5; its checkpoints are UMT5
    assert set(STUDENT_CLASSES) == {"t5"} and set(ENCODER_KINDS.values()) == {"t5", "umt5"}


def test_slots_are_read_from_annotations_for_every_t5_pipeline():
    """Every installed diffusers pipeline whose `__init__` names T5EncoderModel gets a slot; a few by hand."""
    expected = {
        "FluxPipeline": "text_encoder_2",
        "FluxFillPipeline": "text_encoder_2",
        "StableDiffusion3Img2ImgPipeline": "text_encoder_3",
        "HiDreamImagePipeline": "text_encoder_3",
        "ChromaPipeline": "text_encoder",
        "MochiPipeline": "text_encoder",
        "HunyuanDiTPipeline": "text_encoder_2",  # `T5EncoderModel | None`
        "HunyuanImagePipeline": "text_encoder_2",  # a string annotation (`from __future__ import annotations`)
    }
    for name, slot in expected.items():
        assert find_t5_slot(name).slot == slot and find_t5_slot(name).kind == "t5", name
    t5_pipelines = [n for n in dir(diffusers) if n.endswith("Pipeline") and _declares("T5EncoderModel", n)]
    assert len(t5_pipelines) > 50
    for name in t5_pipelines:
        assert find_t5_slot(name).kind in ENCODER_KINDS.values()
    with pytest.raises(ValueError, match="StableDiffusionXLPipeline: declares no T5EncoderModel component"):
        find_t5_slot("StableDiffusionXLPipeline")


def _declares(cls_name: str, pipeline: str) -> bool:
    import inspect

    try:
        params = inspect.signature(pipeline_class(pipeline).__init__).parameters.values()
    except (ValueError, ImportError, AttributeError):
        return False
    return any(cls_name in str(p.annotation) for p in params)


def test_generate_cli_writes_an_image_for_chroma_and_a_gif_for_cogvideox(
    tiny_dirs, tiny_encoder_dir, tmp_path, capsys
):
    from PIL import Image

    from t5_compact.cli import main

    common = ["--encoder", str(tiny_encoder_dir), "--steps", "2", "--max-sequence-length", "16", "a red cat"]
    image = ["--height", "32", "--width", "32"]
    out = tmp_path / "chroma.png"
    assert main(["generate", "--pipeline", str(tiny_dirs["ChromaPipeline"]), *common, *image, "-o", str(out)]) == 0
    assert Image.open(out).size == (32, 32)
    video = ["--height", "16", "--width", "16", "--frames", "8", "-o", str(tmp_path / "cog.png")]
    assert main(["generate", "--pipeline", str(tiny_dirs["CogVideoXPipeline"]), *common, *video]) == 0
    gif = Image.open(tmp_path / "cog.gif")
    assert gif.n_frames > 1 and gif.size == (16, 16)  # PIL merges identical consecutive frames
    stdout = capsys.readouterr().out
    assert "ChromaPipeline on cpu" in stdout and "CogVideoXPipeline on cpu" in stdout and "(8 frames, 16x16)" in stdout


def test_encode_cli_uses_the_pipelines_tokenizer_length_and_mask(tiny_dirs, tiny_encoder_dir, tmp_path, capsys):
    from safetensors import safe_open

    from t5_compact.cli import main

    for name, length, masked in (("PixArtSigmaPipeline", 300, True), ("CogVideoXPipeline", 226, False)):
        out = tmp_path / f"{name}.safetensors"
        args = ["encode", "--encoder", str(tiny_encoder_dir), "--pipeline", str(tiny_dirs[name]), "a red cat"]
        assert main([*args, "--out", str(out)]) == 0
        stdout = capsys.readouterr().out
        assert f"prompt_embeds: (1, {length}, 32)" in stdout and ("mask applied" in stdout) == masked
        with safe_open(str(out), "pt") as fh:
            embeds, ids, mask = (fh.get_tensor(k) for k in ("prompt_embeds", "input_ids", "attention_mask"))
        with torch.no_grad():
            expected = tiny_compact_encoder()(ids, attention_mask=mask if masked else None)[0]
        torch.testing.assert_close(embeds, expected)


def test_ltx_example_imports_cleanly_without_path_hacks():
    import runpy

    path = Path(__file__).parents[1] / "examples" / "diffusers_ltx.py"
    source = path.read_text()
    assert "sys.path" not in source and "t5_compact.load_pipeline(" in source
    assert callable(runpy.run_path(str(path), run_name="example")["main"])  # main() needs the real models


def test_load_pipeline_takes_only_the_slots_student_class(tiny_dirs):
    from t5_compact.tiny import tiny_teacher_t5

    with pytest.raises(TypeError, match="FluxPipeline.text_encoder_2 takes a T5CompactEncoder, got T5EncoderModel"):
        load_pipeline(tiny_dirs["FluxPipeline"], tiny_teacher_t5())
