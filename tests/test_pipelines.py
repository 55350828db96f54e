"""Stock diffusers with a compact encoder: FLUX and SD3 slots, inference, save/reload, CPU offload, `load_pipeline`."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from transformers import CLIPTextModel

import t5_compact
from t5_compact import T5CompactEncoder
from t5_compact.pipelines import ENCODER_SLOTS, detect_family, load_pipeline, pipeline_family
from t5_compact.tiny import tiny_clip_config, tiny_compact_encoder

PIPELINES = {"flux": FluxPipeline, "sd3": StableDiffusion3Pipeline}
SEQ = 16  # max_sequence_length for the tiny runs


@contextlib.contextmanager
def diffusers_warnings():
    """Collect the messages diffusers logs at WARNING and above while the block runs."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def run(pipe, seed: int = 0) -> np.ndarray:
    """Two denoising steps at 32x32; returns the images as a numpy array."""
    generator = torch.Generator("cpu").manual_seed(seed)
    out = pipe(
        "a red cat", num_inference_steps=2, height=32, width=32, max_sequence_length=SEQ, generator=generator,
        output_type="np",
    )  # fmt: skip
    return out.images


def t5_ids(pipe, family: str) -> torch.Tensor:
    tokenizer = pipe.tokenizer_2 if family == "flux" else pipe.tokenizer_3
    return tokenizer("a red cat", padding="max_length", max_length=SEQ, truncation=True, return_tensors="pt").input_ids


def t5_embeds(pipe, family: str) -> torch.Tensor:
    """The T5 part of the pipeline's own prompt embeddings."""
    if family == "flux":
        embeds, _, _ = pipe.encode_prompt("a red cat", prompt_2=None, max_sequence_length=SEQ)
        return embeds
    embeds, _, _, _ = pipe.encode_prompt(
        "a red cat", None, None, do_classifier_free_guidance=False, max_sequence_length=SEQ
    )
    return embeds[:, -SEQ:]  # SD3 appends the T5 tokens after the (padded) CLIP ones


@pytest.fixture
def dirs(tiny_flux_dir, tiny_sd3_dir):
    return {"flux": tiny_flux_dir, "sd3": tiny_sd3_dir}


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_from_pretrained_with_compact_encoder_no_error_no_warning(dirs, tiny_encoder, family):
    slot = ENCODER_SLOTS[family]
    with diffusers_warnings() as warnings:
        pipe = PIPELINES[family].from_pretrained(dirs[family], **{slot: tiny_encoder})
    assert getattr(pipe, slot) is tiny_encoder
    assert not [w for w in warnings if "Expected types" in w], warnings
    # Control: the capture works, a PreTrainedModel that is not a T5EncoderModel does trigger the warning.
    with diffusers_warnings() as warnings:
        PIPELINES[family].from_pretrained(dirs[family], **{slot: CLIPTextModel(tiny_clip_config())})
    assert any("Expected types" in w and slot in w for w in warnings), warnings

    images = run(pipe)
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()
    with torch.no_grad():  # the pipeline's T5 embeddings are the compact encoder's output
        assert torch.equal(t5_embeds(pipe, family), tiny_encoder(t5_ids(pipe, family))[0])


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_save_and_reload_restores_the_compact_encoder(dirs, tiny_encoder, tmp_path, family):
    slot = ENCODER_SLOTS[family]
    pipe = PIPELINES[family].from_pretrained(dirs[family], **{slot: tiny_encoder})
    before = run(pipe)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index[slot] == ["t5_compact.modeling_t5_compact", "T5CompactEncoder"]
    reloaded = PIPELINES[family].from_pretrained(tmp_path)
    encoder = getattr(reloaded, slot)
    assert type(encoder) is T5CompactEncoder and not encoder.training
    for (name, a), b in zip(tiny_encoder.state_dict().items(), encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert np.array_equal(run(reloaded), before)


def test_reload_in_a_fresh_process_needs_only_import_t5_compact(tiny_flux_dir, tiny_encoder, tmp_path):
    FluxPipeline.from_pretrained(tiny_flux_dir, text_encoder_2=tiny_encoder).save_pretrained(tmp_path / "pipe")
    script = textwrap.dedent(
        f"""
        import json, sys
        from diffusers import FluxPipeline
        path = {str(tmp_path / "pipe")!r}
        try:  # diffusers imports no module just because model_index.json names it
            FluxPipeline.from_pretrained(path)
            without = "loaded"
        except ValueError as err:
            without = str(err)
        import t5_compact  # registers the module diffusers recorded: t5_compact.modeling_t5_compact
        pipe = FluxPipeline.from_pretrained(path)
        enc = pipe.text_encoder_2
        out = enc(pipe.tokenizer_2("a red cat", return_tensors="pt").input_ids)[0]
        print(json.dumps({{"without": without, "cls": type(enc).__module__ + "." + type(enc).__name__,
                           "sum": float(out.double().sum())}}))
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "import t5_compact.modeling_t5_compact" in result["without"]
    assert result["cls"] == "t5_compact.modeling_t5_compact.T5CompactEncoder"
    ids = (
        FluxPipeline.from_pretrained(tiny_flux_dir, text_encoder_2=tiny_encoder)
        .tokenizer_2("a red cat", return_tensors="pt")
        .input_ids
    )
    with torch.no_grad():
        assert result["sum"] == pytest.approx(float(tiny_encoder(ids)[0].double().sum()), rel=1e-6)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_enable_model_cpu_offload(dirs, tiny_encoder, family):
    slot = ENCODER_SLOTS[family]
    pipe = PIPELINES[family].from_pretrained(dirs[family], **{slot: tiny_encoder})
    expected = run(pipe)
    # CPU-only torch: diffusers refuses to guess an accelerator, but takes an explicit device.
    pipe.enable_model_cpu_offload(device="cpu")
    models = [m for m in pipe.model_cpu_offload_seq.split("->") if isinstance(pipe.components.get(m), torch.nn.Module)]
    assert ENCODER_SLOTS[family] in models and len(pipe._all_hooks) == len(models)
    assert hasattr(tiny_encoder, "_hf_hook")  # the compact encoder is one of the offloaded models
    assert pipe._execution_device.type == "cpu"
    assert np.array_equal(run(pipe), expected)
    pipe.maybe_free_model_hooks()


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_load_pipeline_puts_the_encoder_in_its_slot_and_casts_it(dirs, family):
    encoder = tiny_compact_encoder()
    assert encoder.dtype == torch.float32
    pipe = load_pipeline(dirs[family], encoder, torch_dtype=torch.bfloat16)
    assert isinstance(pipe, PIPELINES[family])
    assert getattr(pipe, ENCODER_SLOTS[family]) is encoder
    assert pipe.transformer.dtype == torch.bfloat16 and encoder.dtype == torch.bfloat16
    images = run(pipe)  # a fp32 encoder beside a bf16 transformer would fail here with a dtype error
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()


def test_load_pipeline_from_paths(tiny_flux_dir, tiny_sd3_dir, tiny_encoder_dir):
    assert t5_compact.load_pipeline is load_pipeline  # the public entry point
    for base, family in ((tiny_flux_dir, "flux"), (tiny_sd3_dir, "sd3")):
        pipe = load_pipeline(str(base), str(tiny_encoder_dir), device="cpu", dtype="fp32")
        encoder = getattr(pipe, ENCODER_SLOTS[family])
        assert type(encoder) is T5CompactEncoder and encoder.name_or_path == str(tiny_encoder_dir)
        assert pipeline_family(base) == family
    with pytest.raises(TypeError, match="pass the compact encoder as `encoder`"):
        load_pipeline(tiny_flux_dir, tiny_encoder_dir, text_encoder_2=None)


def test_detect_family():
    assert detect_family(FluxPipeline) == "flux" and detect_family("FluxImg2ImgPipeline") == "flux"
    assert detect_family("StableDiffusion3Pipeline") == "sd3" and detect_family(StableDiffusion3Pipeline) == "sd3"
    assert detect_family("ChromaPipeline") == "chroma" and detect_family("LTXPipeline") == "ltx"
    with pytest.raises(ValueError, match="StableDiffusionXLPipeline: not a FLUX, Stable Diffusion 3, Chroma or LTX"):
        detect_family("StableDiffusionXLPipeline")
