"""One training step: a prompt batch, its teacher trajectory, and the student's updates along it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..distill import FamilyAdapter, PromptEncoder, TextEmbeds, follow_teacher, vision_loss
from ..distill.trajectory import cfg_scale
from .data import Batch, step_generator, step_seed
from .teacher_cache import TeacherCache
from .trajectories import TrajectoryPool
from .trajectory_cache import TrajectoryCache


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
    timesteps_per_pass: int = 1  # trajectory mode: timesteps scored per batched pass (0: all at once)
    negative_ids: torch.Tensor | None = None  # the student's token ids of "" `[1, L]` (with `negative`)
    uncond_loss: str = "both"  # CFG families: both | guided | none (see TrainConfig.uncond_loss)
    pool: TrajectoryPool | None = None  # `trajectories: N`: noise and guidance of the sample's pooled trajectory
    trajectory_cache: TrajectoryCache | None = None  # the pool's recorded teacher velocities (no teacher passes)


def _start(ctx: StepContext, batch: Batch, rank: int, device) -> tuple[torch.Tensor, object, list | None]:
    """(initial latents, guidance, recorded teacher velocities or None) of the batch: fresh seeded noise and the
    batch's guidance, or each sample's pooled trajectory (its noise and guidance; its velocities from the cache)."""
    size, res = len(batch.prompts), batch.resolution
    if ctx.pool is None:
        gen = step_generator(ctx.seed, batch.step, rank, stream=1)
        return (
            ctx.adapter.prepare_latents(size, res, res, generator=gen, device="cpu").to(device),
            batch.guidance,
            None,
        )
    picks = ctx.pool.picks(batch, rank)
    if ctx.trajectory_cache is not None:
        noise, guidance, recorded = ctx.trajectory_cache.get(batch.prompts, res, picks)
    else:
        noise = torch.cat([ctx.pool.noise(ctx.adapter, p, res, j) for p, j in zip(batch.prompts, picks, strict=True)])
        guidance = [ctx.pool.guidance(p, res, j) for p, j in zip(batch.prompts, picks, strict=True)]
        recorded = None
    return noise.to(device), torch.tensor(guidance, dtype=torch.float32, device=device), recorded


def _repeat_guidance(guidance, size: int, times: int):
    """Per-sample guidance for `times` stacked copies of a batch of `size` (scalars and None pass through)."""
    if guidance is None or torch.as_tensor(guidance).numel() == 1:
        return guidance
    return torch.as_tensor(guidance).reshape(-1).expand(size).repeat(times)


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


def _encode(ctx: StepContext, ids: torch.Tensor, with_negative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The student's embeddings of the batch and, if asked, of "" (one forward pass for both)."""
    if not with_negative:
        return ctx.adapter.encode_t5(ctx.student, ids), None
    out = ctx.adapter.encode_t5(ctx.student, torch.cat([ids, ctx.negative_ids.to(ids.device)]))
    return out[: len(ids)], out[len(ids) :]


def _branch_losses(
    ctx: StepContext, v_c, target_c, v_u, target_u, guidance, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample conditional L_vision `[B]`, the loss to minimise). With a negative-prompt branch (`v_u`):
    `both` adds its L_vision at the same latents; `guided` scores the guided velocity `v_u + g (v_c - v_u)`."""
    losses = vision_loss(v_c, target_c)
    if v_u is None:
        return losses, losses.mean()
    if ctx.uncond_loss == "guided":
        g = cfg_scale(guidance, size, v_c)
        g = torch.where(g > 1, g, torch.ones_like(g))  # no guidance at g <= 1, as in follow_teacher
        guided = vision_loss(v_u + g * (v_c - v_u), target_u + g * (target_c - target_u))
        return losses, guided.mean()
    return losses, losses.mean() + vision_loss(v_u, target_u).mean()


def train_step(ctx: StepContext, batch: Batch, rank: int = 0) -> StepResult:
    """Run one batch: teacher trajectory from seeded noise, L_vision at every timestep, optimizer update(s).

    `optimizer_step="timestep"` (the paper) updates after every timestep, re-encoding the prompt with the updated
    student; `"trajectory"` encodes once, scores the timesteps in batched transformer passes (`timesteps_per_pass`
    at a time), accumulates their gradients at the embedding and updates once. Any batch size works (latents are
    drawn for `len(batch.prompts)`). The teacher's velocities run under the same autocast context as the student's
    pass, so a student reproducing the teacher's embedding scores exactly 0 whatever `mixed_precision` is. For
    classifier-free-guidance families the negative-prompt ("") branch is distilled as `uncond_loss` says. With a
    trajectory pool (`ctx.pool`) each sample follows its pooled trajectory, read from `ctx.trajectory_cache` (no
    teacher transformer pass at all) when there is one."""
    acc, adapter = ctx.accelerator, ctx.adapter
    device = acc.device
    torch.manual_seed(step_seed(ctx.seed, batch.step, rank, stream=2))  # dropout: a function of the step
    size = len(batch.prompts)
    teacher = ctx.teacher(batch.prompts, device)
    ids = ctx.encoder.tokenize(batch.prompts).to(device)
    res = batch.resolution
    latents, guidance, recorded = _start(ctx, batch, rank, device)
    negative = None
    if ctx.negative is not None:
        negative = TextEmbeds.cat([ctx.negative.to(device)] * size)
    kwargs = dict(
        num_steps=ctx.num_steps, height=res, width=res, guidance=guidance, negative=negative, recorded=recorded
    )
    per_step, norms = [], []
    ctx.student.train()
    params = list(ctx.student.parameters())  # built once per batch, not at every update
    with_negative = negative is not None and ctx.negative_ids is not None and ctx.uncond_loss != "none"
    if ctx.optimizer_step == "timestep":
        steps = follow_teacher(adapter, teacher, latents, **kwargs)
        while True:
            with acc.autocast():  # the teacher's pass (run on resuming the generator) in the student's context
                point = next(steps, None)
                if point is None:
                    break
                student_t5, student_neg = _encode(ctx, ids, with_negative and point.uncond_velocity is not None)
                v = adapter.velocity(
                    point.latents, point.t, teacher.with_t5(student_t5), guidance, height=res, width=res
                )
                v_u = None
                if student_neg is not None:
                    neg = negative.with_t5(student_neg.expand(size, -1, -1))
                    v_u = adapter.velocity(point.latents, point.t, neg, height=res, width=res)
                losses, loss = _branch_losses(ctx, v, point.velocity, v_u, point.uncond_velocity, guidance, size)
                if ctx.embedding_loss_weight:
                    loss = loss + _aux_loss(ctx, student_t5, teacher)
            acc.backward(loss)
            norms.append(_update(ctx, params))
            per_step.append(losses.detach())
    else:
        # The teacher's trajectory does not depend on the student: run it first (sequential, no grad), then score
        # the student at its points in batched passes (`timesteps_per_pass` timesteps each) at fixed weights.
        with acc.autocast():
            points = list(follow_teacher(adapter, teacher, latents, **kwargs))
            student_t5, student_neg = _encode(ctx, ids, with_negative and points[0].uncond_velocity is not None)
        leaf = student_t5.detach().requires_grad_(True)
        neg_leaf = None if student_neg is None else student_neg.detach().requires_grad_(True)
        chunk = ctx.timesteps_per_pass or len(points)
        for first in range(0, len(points), chunk):
            group = points[first : first + chunk]
            x = torch.cat([p.latents for p in group])
            t = torch.cat([p.t.reshape(1).expand(size) for p in group])
            cond = TextEmbeds.cat([teacher.with_t5(leaf)] * len(group))
            g_rep = _repeat_guidance(guidance, size, len(group))
            with acc.autocast():
                v = adapter.velocity(x, t, cond, g_rep, height=res, width=res)
                v_u, target_u = None, None
                if neg_leaf is not None:
                    neg = TextEmbeds.cat([negative.with_t5(neg_leaf.expand(size, -1, -1))] * len(group))
                    v_u = adapter.velocity(x, t, neg, height=res, width=res)
                    target_u = torch.cat([p.uncond_velocity for p in group])
                target = torch.cat([p.velocity for p in group])
                losses, loss = _branch_losses(ctx, v, target, v_u, target_u, g_rep, size * len(group))
            acc.backward(loss * len(group) / ctx.num_steps)  # stops at the leaves: no student / DDP work here
            per_step.extend(losses.detach().view(len(group), size))
        scale = acc.scaler.get_scale() if getattr(acc, "scaler", None) is not None else 1.0
        surrogate = (student_t5.float() * (leaf.grad.float() / scale)).sum()
        if neg_leaf is not None:
            surrogate = surrogate + (student_neg.float() * (neg_leaf.grad.float() / scale)).sum()
        if ctx.embedding_loss_weight:
            surrogate = surrogate + _aux_loss(ctx, student_t5, teacher)
        acc.backward(surrogate)
        norms.append(_update(ctx, params))
    per_sample = torch.stack(per_step, dim=1).mean(dim=1)
    return StepResult(per_sample, float(per_sample.mean()), float(norms[-1]), len(norms))
