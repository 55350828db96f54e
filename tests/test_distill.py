"""The shared distillation core reproduces diffusers' own FLUX / SD3 sampling and computes L_vision correctly."""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from t5_compact.distill import (
    PromptEncoder,
    TextEmbeds,
    adapter_from_pipeline,
    build_heldout,
    follow_teacher,
    heldout_vision_loss,
    sample,
    trajectory_vision_losses,
)
from t5_compact.tiny import tiny_compact_encoder, tiny_pipeline
from t5_compact.training.models import FLUX_SCHEDULER

PROMPTS = ["a red cat", "two dogs on a car next to a tree"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny ops: several threads on a shared 2-core box are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup(family: str, dynamic_shift: bool, **kwargs):
    pipe = tiny_pipeline(family, **kwargs)
    if dynamic_shift:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    pipe.set_progress_bar_config(disable=True)
    adapter = adapter_from_pipeline(pipe)
    encoder = PromptEncoder.from_pipeline(pipe, max_sequence_length=16)
    teacher_t5 = pipe.text_encoder_2 if family == "flux" else pipe.text_encoder_3
    return pipe, adapter, encoder, teacher_t5


@pytest.mark.parametrize("dynamic_shift", [True, False])
@pytest.mark.parametrize("guidance_embeds", [True, False])
def test_flux_trajectory_matches_pipeline_latents(dynamic_shift, guidance_embeds):
    pipe, adapter, encoder, teacher_t5 = _setup("flux", dynamic_shift, guidance_embeds=guidance_embeds)
    teacher = encoder.encode(PROMPTS, teacher_t5)
    height, width = 48, 32  # non-square: packing and position ids must follow height / width
    latents = adapter.prepare_latents(2, height, width, generator=torch.Generator().manual_seed(3))
    ours = sample(adapter, teacher, latents, num_steps=5, height=height, width=width, guidance=4.0)
    theirs = pipe(
        prompt_embeds=teacher.t5,
        pooled_prompt_embeds=teacher.pooled,
        height=height,
        width=width,
        num_inference_steps=5,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
    ).images
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    scheduler = adapter.new_scheduler()
    timesteps = adapter.set_timesteps(scheduler, 5, height, width)
    torch.testing.assert_close(timesteps, pipe.scheduler.timesteps)


@pytest.mark.parametrize("dynamic_shift", [True, False])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sd3_trajectory_matches_pipeline_latents(dynamic_shift, guidance):
    pipe, adapter, encoder, teacher_t5 = _setup("sd3", dynamic_shift)
    teacher = encoder.encode(PROMPTS, teacher_t5)
    negative = TextEmbeds.cat([encoder.encode([""], teacher_t5)] * 2)
    height, width = 32, 24
    latents = adapter.prepare_latents(2, height, width, generator=torch.Generator().manual_seed(5))
    ours = sample(
        adapter, teacher, latents, num_steps=4, height=height, width=width, guidance=guidance, negative=negative
    )
    theirs = pipe(
        prompt_embeds=adapter.joint_embeds(teacher),
        pooled_prompt_embeds=teacher.pooled,
        negative_prompt_embeds=adapter.joint_embeds(negative),
        negative_pooled_prompt_embeds=negative.pooled,
        height=height,
        width=width,
        num_inference_steps=4,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(5),
        output_type="latent",
    ).images
    # The pipeline runs [uncond, cond] as one batch of 2B, we run two passes of B: fp32 rounding differs with the
    # batch shape (how depends on the CPU's kernels), and CFG (x5) amplifies it over the steps. Measured worst
    # element: 2.8e-5 on one Xeon, 6.2e-5 (2 of 6144 elements) on another; a wrong shift, sign or scale is ~1e-1.
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_sd3_joint_embeds_match_encode_prompt():
    pipe, adapter, encoder, teacher_t5 = _setup("sd3", False)
    pipe.tokenizer_3.model_max_length = 16
    embeds, _, pooled, _ = pipe.encode_prompt(
        PROMPTS, PROMPTS, PROMPTS, do_classifier_free_guidance=False, max_sequence_length=16
    )
    ours = encoder.encode(PROMPTS, teacher_t5)
    torch.testing.assert_close(adapter.joint_embeds(ours), embeds)
    torch.testing.assert_close(ours.pooled, pooled)


def test_flux_pooled_matches_encode_prompt():
    pipe, _, encoder, teacher_t5 = _setup("flux", False)
    t5, pooled, _ = pipe.encode_prompt(PROMPTS, PROMPTS, max_sequence_length=16)
    ours = encoder.encode(PROMPTS, teacher_t5)
    torch.testing.assert_close(ours.t5, t5)
    torch.testing.assert_close(ours.pooled, pooled)


def test_vision_loss_is_zero_for_teacher_and_differentiable_for_student():
    pipe, adapter, encoder, teacher_t5 = _setup("flux", True)
    teacher = encoder.encode(PROMPTS, teacher_t5)
    latents = adapter.prepare_latents(2, 32, 32, generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_steps=3, height=32, width=32, guidance=3.0)
    same = trajectory_vision_losses(adapter, teacher, teacher.t5, latents, **kwargs)
    assert same.shape == (2, 3) and same.abs().max() == 0
    student = tiny_compact_encoder()
    student_t5 = student(encoder.tokenize(PROMPTS))[0]
    losses = trajectory_vision_losses(adapter, teacher, student_t5, latents, **kwargs)
    assert (losses > 0).all()
    losses.mean().backward()
    assert student.final_projection[3].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in pipe.transformer.parameters())  # frozen, not trained


def test_trajectory_advances_with_teacher_prediction():
    _, adapter, encoder, teacher_t5 = _setup("flux", True)
    teacher = encoder.encode(PROMPTS, teacher_t5)
    latents = adapter.prepare_latents(2, 32, 32, generator=torch.Generator().manual_seed(0))
    steps = list(follow_teacher(adapter, teacher, latents, num_steps=3, height=32, width=32, guidance=3.0))
    scheduler = adapter.new_scheduler()
    adapter.set_timesteps(scheduler, 3, 32, 32)
    sigmas = scheduler.sigmas
    for i in range(2):
        expected = steps[i].latents + (sigmas[i + 1] - sigmas[i]) * steps[i].velocity
        torch.testing.assert_close(steps[i + 1].latents, expected)


def test_heldout_vision_loss_is_deterministic_and_batch_size_independent():
    _, adapter, encoder, teacher_t5 = _setup("flux", True)
    heldout = build_heldout({"colour": PROMPTS, "text": ["a sign that says hello"]}, encoder, teacher_t5=teacher_t5)
    student = tiny_compact_encoder()
    kwargs = dict(num_steps=3, height=32, width=32, guidance=3.5, seed=7)
    a = heldout_vision_loss(adapter, student, heldout, batch_size=1, **kwargs)
    b = heldout_vision_loss(adapter, student, heldout, batch_size=4, **kwargs)
    assert set(a) == {"colour", "text"} and all(v > 0 for v in a.values())
    assert a == pytest.approx(b, rel=1e-5)
    teacher_as_student = heldout_vision_loss(adapter, teacher_t5, heldout, **kwargs)
    assert all(v == 0 for v in teacher_as_student.values())


def test_flux_velocity_reuses_constants_only_for_matching_shapes():
    """Position ids / zero pooled vectors kept across calls: alternating resolutions, batches and text lengths give
    exactly what a fresh adapter computes."""
    pipe, adapter, _, _ = _setup("flux", dynamic_shift=True)
    t = torch.tensor(500.0)
    for batch, res, seq in [(2, 32, 16), (3, 48, 16), (2, 32, 9), (2, 32, 16)]:
        x = adapter.prepare_latents(batch, res, res, generator=torch.Generator().manual_seed(res))
        cond = TextEmbeds(torch.randn(batch, seq, adapter.text_width, generator=torch.Generator().manual_seed(seq)))
        got = adapter.velocity(x, t, cond, 3.5, height=res, width=res)
        fresh = adapter_from_pipeline(pipe).velocity(x, t, cond, 3.5, height=res, width=res)
        torch.testing.assert_close(got, fresh, rtol=0, atol=0)
