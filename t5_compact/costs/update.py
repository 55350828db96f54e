"""One optimizer update of each training-loop variant, on whatever tensors the models hold (meta, fake or real).

The update drives the frozen transformer through the same `FamilyAdapter.velocity` and `vision_loss` that training
uses (`training/step.py`), so counted FLOPs and tracked memory follow the real call graph. Values are irrelevant:
only shapes, dtypes and the graph matter. Loop variants, per update (one timestep of the 20-step trajectory):

- `reference`: the paper's literal loop: T5-XXL (and CLIP where used) re-encode the prompt at every update, then
  the teacher forward, then the student forward + backward through the frozen transformer.
- `embedding_cache`: the teacher's embeddings come from a cache (`cache-teacher`): teacher forward + student.
- `trajectory_cache`: latents and teacher velocities come from a trajectory cache: the student pass only.

Ours on the fly encodes once per trajectory: its first update is a `reference` update, the others are
`embedding_cache` updates (see `flops.on_the_fly`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..distill import TextEmbeds, make_adapter, vision_loss
from .models import RunModels

VARIANTS = ("reference", "embedding_cache", "trajectory_cache")
PHASES = ("teacher_encode", "teacher_forward", "student", "optimizer")
CLIP_TOKENS = 77


@dataclass
class UpdateShape:
    """Batch size, resolution (px), text tokens, FLUX guidance; `cfg`: SD3 teacher also runs the "" branch."""

    batch: int = 1
    resolution: int = 512
    seq_len: int = 77
    guidance: float = 3.5
    cfg: bool = True


def make_scheduler(family: str):
    """FLUX.1's / SD3's flow-matching Euler scheduler (build it outside fake-tensor mode: it reads its sigmas)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..training.models import FLUX_SCHEDULER

    return FlowMatchEulerDiscreteScheduler(**(FLUX_SCHEDULER if family == "flux" else {}))


def adapter_for(models: RunModels, vae_scale_factor: int = 8, scheduler=None):
    """A training adapter around the models' transformer."""
    scheduler = scheduler or make_scheduler(models.family)
    return make_adapter(models.family, models.transformer, scheduler, vae_scale_factor)


def _teacher_embeds(models: RunModels, shape: UpdateShape, dtype: torch.dtype, device) -> TextEmbeds:
    t5 = torch.randn(shape.batch, shape.seq_len, models.text_width, dtype=dtype, device=device)
    if models.family == "flux":
        return TextEmbeds(t5)
    pooled_dim = models.transformer.config.pooled_projection_dim
    clip = torch.randn(shape.batch, CLIP_TOKENS, pooled_dim, dtype=dtype, device=device)
    return TextEmbeds(t5, clip, torch.randn(shape.batch, pooled_dim, dtype=dtype, device=device))


def run_update(
    models: RunModels,
    adapter,
    variant: str,
    shape: UpdateShape,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    autocast_dtype: torch.dtype | None = None,
    phase: Callable[[str], contextlib.AbstractContextManager] = lambda name: contextlib.nullcontext(),
    max_grad_norm: float | None = 1.0,
) -> None:
    """One update of `variant` (see the module docstring); `phase(name)` wraps each of `PHASES` (a phase may come
    twice: SD3's teacher runs its conditional and "" branches; each block calls the transformer once)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown loop variant {variant!r}; expected one of {VARIANTS}")
    device, dtype = adapter.device, adapter.dtype
    if dtype.itemsize == 1:  # fp8 storage (layerwise casting): inputs are made in the compute dtype
        dtype = torch.bfloat16
    size, res = shape.batch, shape.resolution
    ids = torch.zeros(size, shape.seq_len, dtype=torch.long, device=device)
    teacher = _teacher_embeds(models, shape, dtype, device)
    if variant == "reference":
        with phase("teacher_encode"), torch.no_grad():
            models.teacher_t5(ids)
            for clip in models.clips:
                clip(torch.zeros(size, CLIP_TOKENS, dtype=torch.long, device=device), output_hidden_states=True)
    x = torch.randn(adapter.latent_shape(size, res, res), device=device)
    t = torch.tensor(500.0, device=device)
    guidance = shape.guidance if adapter.uses_guidance_embedding else None
    if variant == "trajectory_cache":
        target = torch.randn(x.shape, device=device)
    else:
        with phase("teacher_forward"), torch.no_grad():
            target = adapter.velocity(x, t, teacher, guidance, height=res, width=res)
        if models.family == "sd3" and shape.cfg:  # the "" branch of classifier-free guidance
            with phase("teacher_forward"), torch.no_grad():
                adapter.velocity(x, t, _teacher_embeds(models, shape, dtype, device), height=res, width=res)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with phase("student"):
        with autocast:
            student_t5 = models.student(ids)[0]
            v = adapter.velocity(x, t, teacher.with_t5(student_t5), guidance, height=res, width=res)
            loss = vision_loss(v, target).mean()
        loss.backward()
    if optimizer is not None:
        with phase("optimizer"):
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(models.student.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
