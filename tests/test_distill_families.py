"""The Chroma and LTX-Video families reproduce their pipelines' own latents (masked T5, CFG with a negative prompt,
LTX's video latents and shift), and the family registry makes a family one file plus a `register` line."""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from t5_compact.distill import (
    FAMILIES,
    ChromaAdapter,
    FamilyAdapter,
    FluxAdapter,
    PromptEncoder,
    SD3Adapter,
    TextEmbeds,
    adapter_from_pipeline,
    make_adapter,
    sample,
    trajectory_vision_losses,
)
from t5_compact.pipelines import ENCODER_SLOTS, detect_family
from t5_compact.tiny import tiny_compact_encoder
from t5_compact.tiny_pipelines import tiny_chroma, tiny_ltx
from t5_compact.training.models import FLUX_SCHEDULER, LTX_SCHEDULER

PROMPTS = ["a red cat", "two dogs on a car next to a tree"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup(build, dynamic_shift: bool):
    pipe = build()
    if dynamic_shift:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    pipe.set_progress_bar_config(disable=True)
    encoder = PromptEncoder.from_pipeline(pipe, max_sequence_length=16)
    return pipe, adapter_from_pipeline(pipe), encoder, pipe.text_encoder


@pytest.mark.parametrize("dynamic_shift", [True, False])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_chroma_trajectory_matches_pipeline_latents(dynamic_shift, guidance):
    pipe, adapter, encoder, teacher_t5 = _setup(tiny_chroma, dynamic_shift)
    teacher = encoder.encode(PROMPTS, teacher_t5)
    negative = TextEmbeds.cat([encoder.encode([""], teacher_t5)] * 2)
    assert teacher.mask is not None and (teacher.mask == 0).any()  # padded prompts: the mask matters
    height, width = 48, 32
    latents = adapter.prepare_latents(2, height, width, generator=torch.Generator().manual_seed(3))
    ours = sample(
        adapter, teacher, latents, num_steps=4, height=height, width=width, guidance=guidance, negative=negative
    )
    text_mask = lambda e: ChromaAdapter.transformer_mask(e.mask, 0)  # noqa: E731 - the pipeline's prompt mask
    theirs = pipe(
        prompt_embeds=teacher.t5,
        prompt_attention_mask=text_mask(teacher),
        negative_prompt_embeds=negative.t5,
        negative_prompt_attention_mask=text_mask(negative),
        height=height,
        width=width,
        num_inference_steps=4,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
    ).images
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


def test_chroma_prompt_encoding_matches_encode_prompt_with_its_masks():
    pipe, _, encoder, teacher_t5 = _setup(tiny_chroma, False)
    embeds, _, mask, *_ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False, max_sequence_length=16)
    ours = encoder.encode(PROMPTS, teacher_t5)
    torch.testing.assert_close(ours.t5, embeds)  # the T5 encoder ran with the token mask, as the pipeline's
    assert torch.equal(ChromaAdapter.transformer_mask(ours.mask, 0).to(mask.dtype), mask)


@pytest.mark.parametrize("ltx_shift", [True, False], ids=["ltx-shift", "default-scheduler"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_ltx_trajectory_matches_pipeline_latents(guidance, ltx_shift):
    pipe, adapter, encoder, teacher_t5 = _setup(tiny_ltx, False)
    if ltx_shift:  # LTX-Video's own sequence-length shift and terminal sigma (the tiny:ltx training model's)
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER)
        adapter = adapter_from_pipeline(pipe)
    assert adapter.vae_scale_factor == 4 and adapter.temporal_compression == 4 and adapter.num_frames == 9
    teacher = encoder.encode(PROMPTS, teacher_t5)
    negative = TextEmbeds.cat([encoder.encode([""], teacher_t5)] * 2)
    height, width = 64, 32  # LTXPipeline wants multiples of 32; non-square so packing must follow height / width
    latents = adapter.prepare_latents(2, height, width, generator=torch.Generator().manual_seed(5))
    assert latents.shape == adapter.latent_shape(2, height, width) == (2, 3 * 16 * 8, 8)
    ours = sample(
        adapter, teacher, latents, num_steps=4, height=height, width=width, guidance=guidance, negative=negative
    )
    theirs = pipe(
        prompt_embeds=teacher.t5,
        prompt_attention_mask=teacher.mask,
        negative_prompt_embeds=negative.t5,
        negative_prompt_attention_mask=negative.mask,
        height=height,
        width=width,
        num_frames=9,
        num_inference_steps=4,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(5),
        output_type="latent",
    ).frames
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    scheduler = adapter.new_scheduler()
    timesteps = adapter.set_timesteps(scheduler, 4, height, width)
    torch.testing.assert_close(timesteps, pipe.scheduler.timesteps)
    unshifted = torch.tensor([1000.0, 750.0, 500.0, 250.0])
    assert torch.allclose(timesteps, unshifted) != ltx_shift  # the shift really acts


def test_ltx_prompt_encoding_matches_encode_prompt():
    pipe, _, encoder, teacher_t5 = _setup(tiny_ltx, False)
    embeds, mask, _, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False, max_sequence_length=16)
    ours = encoder.encode(PROMPTS, teacher_t5)
    torch.testing.assert_close(ours.t5, embeds)  # LTX encodes the pad tokens too; it masks them in the transformer
    assert torch.equal(ours.mask.bool(), mask)


@pytest.mark.parametrize("build", [tiny_chroma, tiny_ltx])
def test_masked_families_train_the_student_through_the_mask(build):
    _, adapter, encoder, teacher_t5 = _setup(build, False)
    teacher = encoder.encode(PROMPTS, teacher_t5)
    latents = adapter.prepare_latents(2, 32, 32, generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_steps=2, height=32, width=32, guidance=4.0)
    assert trajectory_vision_losses(adapter, teacher, teacher.t5, latents, **kwargs).abs().max() == 0
    student = tiny_compact_encoder()
    losses = trajectory_vision_losses(
        adapter, teacher, adapter.encode_t5(student, encoder.tokenize(PROMPTS)), latents, **kwargs
    )
    assert (losses > 0).all()
    losses.mean().backward()
    assert student.final_projection[3].weight.grad.abs().sum() > 0
    # Text positions the transformer masks out do not move the loss: change the student's embeddings there.
    ids = encoder.tokenize(PROMPTS)
    out = adapter.encode_t5(student, ids).detach()
    keep = ChromaAdapter.transformer_mask(teacher.mask, 0) if adapter.family == "chroma" else teacher.mask.bool()
    noisy = torch.where(keep.unsqueeze(-1), out, out + 5.0)
    a = trajectory_vision_losses(adapter, teacher, out, latents, **kwargs)
    b = trajectory_vision_losses(adapter, teacher, noisy, latents, **kwargs)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_family_registry_and_adapter_properties():
    assert list(FAMILIES) == ["flux", "sd3", "chroma", "ltx"]
    assert {f: c.uses_cfg for f, c in FAMILIES.items()} == {"flux": False, "sd3": True, "chroma": True, "ltx": True}
    assert [f for f, c in FAMILIES.items() if c.clip_slots] == ["flux", "sd3"]
    assert SD3Adapter.needs_clip(zero_pooled=True) and not FluxAdapter.needs_clip(zero_pooled=True)
    assert FluxAdapter.needs_clip(zero_pooled=False) and not ChromaAdapter.needs_clip(zero_pooled=False)
    assert dict(ENCODER_SLOTS) == {
        "flux": "text_encoder_2",
        "sd3": "text_encoder_3",
        "chroma": "text_encoder",
        "ltx": "text_encoder",
    }
    assert detect_family("ChromaImg2ImgPipeline") == "chroma" and detect_family("LTXImageToVideoPipeline") == "ltx"
    with pytest.raises(ValueError, match="unknown family 'wan'; expected one of 'flux', 'sd3', 'chroma', 'ltx'"):
        make_adapter("wan", torch.nn.Linear(1, 1), FlowMatchEulerDiscreteScheduler())


def test_a_new_family_is_one_subclass_and_a_register_line(monkeypatch):
    """A family registered from outside the package is found by detect_family, make_adapter and PromptEncoder."""
    from t5_compact.distill import families

    class ToyAdapter(FluxAdapter):
        family = "toy"
        pipeline_prefixes = ("Toy",)

    monkeypatch.setitem(families.FAMILIES, "toy", ToyAdapter)
    pipe, _, _, _ = _setup(tiny_chroma, False)
    assert detect_family("ToyPipeline") == "toy" and ENCODER_SLOTS["toy"] == "text_encoder_2"
    adapter = make_adapter("toy", pipe.transformer, pipe.scheduler)
    assert isinstance(adapter, ToyAdapter) and isinstance(adapter, FamilyAdapter)
    assert PromptEncoder("toy", pipe.tokenizer).spec is ToyAdapter
