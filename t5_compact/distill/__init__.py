"""Step-following vision distillation math, shared by `t5-compact train` and `t5-compact eval`.

Stable API (keep these signatures):

    adapter = adapter_from_pipeline(pipe)                       # Flux / StableDiffusion3 / Chroma / LTX pipelines
    adapter = make_adapter(family, transformer, scheduler, vae_scale_factor=8, **options)
        .family ("flux" | "sd3" | "chroma" | "ltx"), .text_width, .uses_guidance_embedding, .device, .dtype
        class attributes: .uses_cfg, .clip_slots, .clip_hidden, .text_mask, .encoder_mask, .t5_slot, .needs_clip()
        .encode_t5(model, ids) -> the T5 part as the pipeline encodes it (with the token mask for Chroma)
        .prepare_latents(batch_size, height, width, generator=None, device=None) -> float32 noise, as the pipeline
        .new_scheduler(); .set_timesteps(scheduler, num_steps, height, width, device=None) -> timesteps (with shift)
        .velocity(latents, t, cond: TextEmbeds, guidance=None, *, height, width) -> float32 velocity
        .step(scheduler, velocity, t, latents) -> next latents (scheduler.step, float32)

    TextEmbeds(t5, clip=None, pooled=None, mask=None)           # SD3 clip = CLIP-L/G hidden; mask: Chroma / LTX
    encoder = PromptEncoder.from_pipeline(pipe, max_sequence_length=77, with_clip=True)
        .tokenize(prompts) -> T5 ids; .encode_clip(prompts) -> (clip, pooled); .encode(prompts, t5) -> TextEmbeds

    follow_teacher(adapter, teacher, latents, *, num_steps, height, width, guidance=None, negative=None)
        -> iterator of TeacherStep(index, t, latents, velocity); advances with the teacher's prediction
    sample(adapter, cond, latents, *, num_steps, height, width, guidance=None, negative=None) -> final latents
    vision_loss(v_student, v_teacher) -> [B]
    trajectory_vision_losses(adapter, teacher, student_t5, latents, *, num_steps, height, width, guidance=None,
                             negative=None) -> [B, num_steps]   (differentiable in student_t5)

    heldout = build_heldout({category: [prompts]}, encoder, teacher_t5=..., teacher_embeds=None)
    heldout_vision_loss(adapter, student, heldout, *, num_steps=20, height=512, width=512, guidance=3.5, seed=0,
                        batch_size=4, zero_pooled=True, negative=None) -> {category: mean L_vision}

    heldout_branch_losses(..., negative=None, negative_ids=None) -> {"cond": {...}, "uncond": {...}}  (SD3: the
                        negative-prompt branch, student "" vs teacher "" along the same guided trajectories)
    NullStudent(mean_embedding(prompts, encode)); prompt_fidelity(L_student, L_null) -> {category: 1 - L_s / L_null}

`heldout_vision_loss` is the held-out metric training logs (`heldout/L_vision/<category>`) and eval reports.
Guidance: FLUX-dev's guidance embedding value; ignored by schnell-style FLUX; for SD3, Chroma and LTX the
classifier-free scale, applied only when `negative` (the teacher's encoding of "") is given.

Families live in `distill.families` (one file each, plus a `register` line); see `families/__init__.py`.
"""

from .embeds import PromptEncoder, TextEmbeds, t5_token_mask
from .families import (
    FAMILIES,
    ChromaAdapter,
    FamilyAdapter,
    FluxAdapter,
    LTXAdapter,
    SD3Adapter,
    adapter_from_pipeline,
    family_class,
    make_adapter,
    register,
    vae_scale_factor_from_config,
)
from .null import NullStudent, mean_embedding, prompt_fidelity
from .trajectory import (
    HeldoutSet,
    TeacherStep,
    build_heldout,
    follow_teacher,
    heldout_branch_losses,
    heldout_latents,
    heldout_vision_loss,
    sample,
    trajectory_vision_losses,
    uses_cfg,
    vision_loss,
)

__all__ = [
    "FAMILIES",
    "ChromaAdapter",
    "FamilyAdapter",
    "FluxAdapter",
    "LTXAdapter",
    "HeldoutSet",
    "NullStudent",
    "PromptEncoder",
    "SD3Adapter",
    "TeacherStep",
    "TextEmbeds",
    "adapter_from_pipeline",
    "build_heldout",
    "family_class",
    "follow_teacher",
    "heldout_branch_losses",
    "heldout_latents",
    "heldout_vision_loss",
    "make_adapter",
    "mean_embedding",
    "prompt_fidelity",
    "register",
    "sample",
    "t5_token_mask",
    "trajectory_vision_losses",
    "uses_cfg",
    "vae_scale_factor_from_config",
    "vision_loss",
]
