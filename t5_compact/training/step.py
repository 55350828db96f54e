"""One training step: a prompt batch, its teacher trajectory, and the student's updates along it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..distill import FamilyAdapter, PromptEncoder, TextEmbeds, follow_teacher, vision_loss
from .data import Batch, step_generator, step_seed
from .teacher_cache import TeacherCache


class TeacherSource:
    """The teacher's conditioning for prompts: read from a cache, or computed on the fly (T5 and CLIP, no grad)."""

    def __init__(
        self,
        encoder: PromptEncoder,
        teacher_t5: nn.Module | None = None,
        cache: TeacherCache | None = None,
        zero_pooled: bool = True,
    ):
        if (teacher_t5 is None) == (cache is None):
            raise ValueError("TeacherSource needs exactly one of teacher_t5 and cache")
        self.encoder, self.teacher_t5, self.cache, self.zero_pooled = encoder, teacher_t5, cache, zero_pooled

    def __call__(self, prompts: list[str], device: torch.device) -> TextEmbeds:
        if self.cache is not None:
            embeds = self.cache.get(prompts)
        elif self.zero_pooled and self.encoder.spec.clip_slots and not self.encoder.spec.clip_hidden:
            # FLUX takes only CLIP's pooled vector, which is zeroed: running CLIP would compute it to drop it.
            with torch.no_grad():
                ids = self.encoder.tokenize(prompts).to(next(self.teacher_t5.parameters()).device)
                embeds = TextEmbeds(self.teacher_t5(ids)[0])
        else:
            embeds = self.encoder.encode(prompts, self.teacher_t5)
        embeds = embeds.to(device)
        return embeds.without_pooled() if self.zero_pooled else embeds


@dataclass
class StepResult:
    """Per-sample L_vision averaged over the trajectory, the mean loss, last grad norm, number of updates."""

    per_sample: torch.Tensor
    loss: float
    grad_norm: float
    updates: int
    extras: dict = field(default_factory=dict)


@dataclass
class StepContext:
    """Everything `train_step` uses (built once by the loop)."""

    accelerator: object
    adapter: FamilyAdapter
    encoder: PromptEncoder
    teacher: TeacherSource
    student: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    num_steps: int
    optimizer_step: str = "timestep"
    max_grad_norm: float | None = 1.0
    embedding_loss_weight: float = 0.0
    seed: int = 0
    negative: TextEmbeds | None = None  # CFG families (SD3, Chroma, LTX): the teacher's encoding of ""
    timesteps_per_pass: int = 0  # trajectory mode: timesteps scored per student pass (0: all at once)


def _update(ctx: StepContext, params: list[nn.Parameter]) -> torch.Tensor | float:
    """Clip, step, zero. Returns the grad norm as returned (a tensor: no host sync here; `float` it once per batch)."""
    norm = 0.0
    if ctx.max_grad_norm:
        norm = ctx.accelerator.clip_grad_norm_(params, ctx.max_grad_norm)
    ctx.optimizer.step()
    ctx.lr_scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    return norm


def _aux_loss(ctx: StepContext, student_t5: torch.Tensor, teacher: TextEmbeds) -> torch.Tensor:
    return ctx.embedding_loss_weight * (student_t5.float() - teacher.t5.float()).pow(2).mean()


def train_step(ctx: StepContext, batch: Batch, rank: int = 0) -> StepResult:
    """Run one batch: teacher trajectory from seeded noise, L_vision at every timestep, optimizer update(s).

    `optimizer_step="timestep"` (the paper) updates after every timestep, re-encoding the prompt with the updated
    student; `"trajectory"` encodes once, scores all timesteps in batched transformer passes, accumulates their
    gradients at the embedding and updates once. Any batch size works (latents are drawn for `len(batch.prompts)`)."""
    acc, adapter = ctx.accelerator, ctx.adapter
    device = acc.device
    torch.manual_seed(step_seed(ctx.seed, batch.step, rank, stream=2))  # dropout: a function of the step
    size = len(batch.prompts)
    teacher = ctx.teacher(batch.prompts, device)
    ids = ctx.encoder.tokenize(batch.prompts).to(device)
    res = batch.resolution
    noise_gen = step_generator(ctx.seed, batch.step, rank, stream=1)
    latents = adapter.prepare_latents(size, res, res, generator=noise_gen, device="cpu").to(device)
    negative = None
    if ctx.negative is not None:
        negative = TextEmbeds.cat([ctx.negative.to(device)] * size)
    kwargs = dict(num_steps=ctx.num_steps, height=res, width=res, guidance=batch.guidance, negative=negative)
    per_step, norms = [], []
    ctx.student.train()
    params = list(ctx.student.parameters())  # built once per batch, not at every update
    if ctx.optimizer_step == "timestep":
        for point in follow_teacher(adapter, teacher, latents, **kwargs):
            with acc.autocast():
                student_t5 = adapter.encode_t5(ctx.student, ids)
                v = adapter.velocity(
                    point.latents, point.t, teacher.with_t5(student_t5), batch.guidance, height=res, width=res
                )
                losses = vision_loss(v, point.velocity)
                loss = losses.mean()
                if ctx.embedding_loss_weight:
                    loss = loss + _aux_loss(ctx, student_t5, teacher)
            acc.backward(loss)
            norms.append(_update(ctx, params))
            per_step.append(losses.detach())
    else:
        # The teacher's trajectory does not depend on the student: run it first (sequential, no grad), then score
        # the student at all its points in batched passes (`timesteps_per_pass` timesteps each) at fixed weights.
        points = list(follow_teacher(adapter, teacher, latents, **kwargs))
        with acc.autocast():
            student_t5 = adapter.encode_t5(ctx.student, ids)
        leaf = student_t5.detach().requires_grad_(True)
        chunk = ctx.timesteps_per_pass or len(points)
        for first in range(0, len(points), chunk):
            group = points[first : first + chunk]
            x = torch.cat([p.latents for p in group])
            t = torch.cat([p.t.reshape(1).expand(size) for p in group])
            cond = TextEmbeds.cat([teacher.with_t5(leaf)] * len(group))
            with acc.autocast():
                v = adapter.velocity(x, t, cond, batch.guidance, height=res, width=res)
                losses = vision_loss(v, torch.cat([p.velocity for p in group])).view(len(group), size)
            acc.backward(losses.mean(dim=1).sum() / ctx.num_steps)  # stops at `leaf`: no student / DDP work here
            per_step.extend(losses.detach())
        scale = acc.scaler.get_scale() if getattr(acc, "scaler", None) is not None else 1.0
        surrogate = (student_t5.float() * (leaf.grad.float() / scale)).sum()
        if ctx.embedding_loss_weight:
            surrogate = surrogate + _aux_loss(ctx, student_t5, teacher)
        acc.backward(surrogate)
        norms.append(_update(ctx, params))
    per_sample = torch.stack(per_step, dim=1).mean(dim=1)
    return StepResult(per_sample, float(per_sample.mean()), float(norms[-1]), len(norms))
