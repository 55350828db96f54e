"""Step-following along the teacher's trajectory, and the vision loss L_vision computed on it."""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .adapters import FamilyAdapter
from .embeds import PromptEncoder, TextEmbeds


@dataclass
class TeacherStep:
    """One point of the teacher's trajectory: step `index`, scheduler timestep `t`, state `latents` (x_t, float32,
    no grad), the teacher's conditional velocity `velocity` there (the L_vision target) and, under classifier-free
    guidance, its unconditional velocity `uncond_velocity` (the target of the negative-prompt branch)."""

    index: int
    t: torch.Tensor
    latents: torch.Tensor
    velocity: torch.Tensor
    uncond_velocity: torch.Tensor | None = None


def uses_cfg(adapter: FamilyAdapter) -> bool:
    """True when the family samples with classifier-free guidance (a negative / "" prompt encoded by the same
    text encoders): asks the adapter (a `uses_cfg` attribute, property or method) when it has one, else SD3 does and
    FLUX does not."""
    flag = getattr(adapter, "uses_cfg", None)
    if callable(flag):
        flag = flag()
    return bool(flag) if flag is not None else adapter.family == "sd3"


def cfg_scale(guidance, batch: int, like: torch.Tensor) -> torch.Tensor:
    """The classifier-free guidance scale as `[B, 1, ...]` broadcastable against `like`."""
    g = torch.as_tensor(guidance, dtype=torch.float32, device=like.device).reshape(-1)
    g = g.expand(batch) if g.numel() == 1 else g
    return g.reshape(batch, *([1] * (like.dim() - 1)))


@torch.no_grad()
def follow_teacher(
    adapter: FamilyAdapter,
    teacher: TextEmbeds,
    latents: torch.Tensor,
    *,
    num_steps: int,
    height: int,
    width: int,
    guidance: torch.Tensor | float | None = None,
    negative: TextEmbeds | None = None,
    recorded: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
    always_uncond: bool = False,
) -> Generator[TeacherStep, None, torch.Tensor]:
    """Yield the teacher's trajectory from `latents` (pure noise) over the pipeline's `num_steps` timesteps.

    The generator returns the final latents (`StopIteration.value`; see `sample`).
    After each yield the state advances with the teacher's velocity: `x_{t-1} = scheduler.step(v_T, t, x_t)`.
    For CFG families (`uses_cfg(adapter)`: SD3, Chroma, LTX) with `negative` (the teacher's encoding of "") and
    `guidance > 1`, the advance uses classifier-free guidance `v_u + g (v_c - v_u)` as their pipelines do; the
    yielded target stays the conditional `v_c` and `uncond_velocity` carries `v_u`.

    `recorded` (a trajectory cache): the teacher's `(v_c, v_u)` per timestep, read instead of computed; the states
    are rebuilt from `latents` with the same scheduler steps, so float32 records give the very same trajectory.
    `always_uncond` computes `v_u` even where no sample is guided (`g <= 1`), for recording.

    Precision: the velocities are computed when the generator is resumed, under whatever autocast context the
    caller holds at that moment; callers resume it inside the same context as the student's pass (see `step.py`).
    """
    scheduler = adapter.new_scheduler()
    timesteps = adapter.set_timesteps(scheduler, num_steps, height, width, device=latents.device)
    x = latents.float()
    use_cfg = uses_cfg(adapter) and negative is not None and guidance is not None
    if use_cfg:
        g = cfg_scale(guidance, x.shape[0], x)
        use_cfg = bool((g > 1).any())
    want_uncond = use_cfg or (always_uncond and uses_cfg(adapter) and negative is not None)
    for i, t in enumerate(timesteps):
        if recorded is not None:
            v, v_uncond = recorded[i]
            v = v.to(x.device, torch.float32)
            v_uncond = v_uncond.to(x.device, torch.float32) if use_cfg else None
        else:
            v = adapter.velocity(x, t, teacher, guidance, height=height, width=width)
            v_uncond = adapter.velocity(x, t, negative, height=height, width=width) if want_uncond else None
        yield TeacherStep(i, t, x, v, v_uncond)
        if use_cfg:
            v = torch.where(g > 1, v_uncond + g * (v - v_uncond), v)
        x = adapter.step(scheduler, v, t, x)
    return x


@torch.no_grad()
def sample(
    adapter: FamilyAdapter,
    cond: TextEmbeds,
    latents: torch.Tensor,
    *,
    num_steps: int,
    height: int,
    width: int,
    guidance: torch.Tensor | float | None = None,
    negative: TextEmbeds | None = None,
) -> torch.Tensor:
    """Final latents of the trajectory driven by `cond` (teacher or student), like `output_type="latent"`."""
    steps = follow_teacher(
        adapter, cond, latents, num_steps=num_steps, height=height, width=width, guidance=guidance, negative=negative
    )
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def vision_loss(student_velocity: torch.Tensor, teacher_velocity: torch.Tensor) -> torch.Tensor:
    """Per-sample L_vision `[B]`: the mean squared difference of the two velocity predictions (float32)."""
    diff = student_velocity.float() - teacher_velocity.float()
    return diff.pow(2).flatten(1).mean(dim=1)


def trajectory_vision_losses(
    adapter: FamilyAdapter,
    teacher: TextEmbeds,
    student_t5: torch.Tensor,
    latents: torch.Tensor,
    *,
    num_steps: int,
    height: int,
    width: int,
    guidance: torch.Tensor | float | None = None,
    negative: TextEmbeds | None = None,
) -> torch.Tensor:
    """L_vision `[B, num_steps]` of the student's T5 part `student_t5` along the teacher's trajectory.

    Differentiable in `student_t5` when called with grad enabled (the transformer is frozen, not detached)."""
    student = teacher.with_t5(student_t5)
    losses = []
    for step in follow_teacher(
        adapter,
        teacher,
        latents,
        num_steps=num_steps,
        height=height,
        width=width,
        guidance=guidance,
        negative=negative,
    ):
        v_s = adapter.velocity(step.latents, step.t, student, guidance, height=height, width=width)
        losses.append(vision_loss(v_s, step.velocity))
    return torch.stack(losses, dim=1)


@dataclass
class HeldoutSet:
    """Held-out prompts of one category: student token ids `[N, L]` and the teacher's conditioning (N rows)."""

    input_ids: torch.Tensor
    teacher: TextEmbeds


def build_heldout(
    prompts: Mapping[str, Sequence[str]],
    encoder: PromptEncoder,
    teacher_t5: nn.Module | None = None,
    teacher_embeds: Mapping[str, TextEmbeds] | None = None,
) -> dict[str, HeldoutSet]:
    """`HeldoutSet`s per category, the teacher part from `teacher_t5` (run here) or precomputed `teacher_embeds`."""
    out = {}
    for category, texts in prompts.items():
        if teacher_embeds is not None:
            teacher = teacher_embeds[category]
        elif teacher_t5 is not None:
            teacher = encoder.encode(texts, teacher_t5)
        else:
            raise ValueError("build_heldout needs teacher_t5 or teacher_embeds")
        out[category] = HeldoutSet(encoder.tokenize(texts), teacher)
    return out


def heldout_latents(
    adapter: FamilyAdapter, count: int, height: int, width: int, seed: int, device=None
) -> torch.Tensor:
    """Initial noise for held-out prompt `i` drawn from `torch.Generator().manual_seed(seed + i)` (CPU), so the
    metric does not depend on batch size or device."""
    rows = [
        adapter.prepare_latents(1, height, width, generator=torch.Generator().manual_seed(seed + i), device="cpu")
        for i in range(count)
    ]
    return torch.cat(rows).to(device or adapter.device)


@torch.no_grad()
def heldout_branch_losses(
    adapter: FamilyAdapter,
    student: nn.Module,
    heldout: Mapping[str, HeldoutSet],
    *,
    num_steps: int = 20,
    height: int = 512,
    width: int = 512,
    guidance: float | None = 3.5,
    seed: int = 0,
    batch_size: int = 4,
    zero_pooled: bool = True,
    negative: TextEmbeds | None = None,
    negative_ids: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Mean L_vision per category (over prompts and timesteps) along the teacher's trajectories, per branch.

    `"cond"`: the student's prompt embedding against the teacher's (what training logs as `heldout/L_vision`).
    `"uncond"` (only with `negative` and `negative_ids`, the student's token ids of ""): the negative-prompt branch,
    the velocity with the student's "" embedding against the teacher's `v_u` at the same points of the same guided
    trajectories. Fixed noise per prompt (`heldout_latents(seed)`), fixed `guidance`, no gradients. `zero_pooled`
    drops the pooled CLIP vector (the paper's FLUX setting) for teacher and student alike."""
    was_training = student.training
    student.eval()
    device = adapter.device
    with_uncond = negative is not None and negative_ids is not None
    sums: dict[str, dict[str, list[float]]] = {"cond": {}, **({"uncond": {}} if with_uncond else {})}
    size = dict(height=height, width=width)
    try:
        student_negative = adapter.encode_t5(student, negative_ids.to(device)) if with_uncond else None
        for category, data in heldout.items():
            for branch in sums.values():
                branch[category] = [0.0, 0]
            latents_all = heldout_latents(adapter, len(data.input_ids), height, width, seed, device)
            for start in range(0, len(data.input_ids), batch_size):
                rows = slice(start, start + batch_size)
                teacher = data.teacher[rows].to(device)
                if zero_pooled:
                    teacher = teacher.without_pooled()
                cond = teacher.with_t5(adapter.encode_t5(student, data.input_ids[rows].to(device)))
                count = teacher.t5.shape[0]
                neg = None
                if negative is not None:
                    neg = TextEmbeds.cat([negative.to(device)] * count)
                    neg = neg.without_pooled() if zero_pooled else neg
                steps = follow_teacher(
                    adapter, teacher, latents_all[rows], num_steps=num_steps, guidance=guidance, negative=neg, **size
                )
                for step in steps:
                    v = adapter.velocity(step.latents, step.t, cond, guidance, **size)
                    sums["cond"][category][0] += vision_loss(v, step.velocity).sum().item()
                    sums["cond"][category][1] += count
                    if with_uncond and step.uncond_velocity is not None:
                        student_neg = neg.with_t5(student_negative.expand(count, -1, -1))
                        v_u = adapter.velocity(step.latents, step.t, student_neg, **size)
                        sums["uncond"][category][0] += vision_loss(v_u, step.uncond_velocity).sum().item()
                        sums["uncond"][category][1] += count
    finally:
        student.train(was_training)
    return {
        branch: {c: total / count for c, (total, count) in values.items() if count} for branch, values in sums.items()
    }


def heldout_vision_loss(
    adapter: FamilyAdapter,
    student: nn.Module,
    heldout: Mapping[str, HeldoutSet],
    *,
    num_steps: int = 20,
    height: int = 512,
    width: int = 512,
    guidance: float | None = 3.5,
    seed: int = 0,
    batch_size: int = 4,
    zero_pooled: bool = True,
    negative: TextEmbeds | None = None,
) -> dict[str, float]:
    """Mean L_vision per category of `student`'s prompt embeddings along the teacher's trajectories (the `"cond"`
    branch of `heldout_branch_losses`). This is the number training logs as `heldout/L_vision/<category>` and
    `t5-compact eval` reports."""
    return heldout_branch_losses(
        adapter,
        student,
        heldout,
        num_steps=num_steps,
        height=height,
        width=width,
        guidance=guidance,
        seed=seed,
        batch_size=batch_size,
        zero_pooled=zero_pooled,
        negative=negative,
    )["cond"]
