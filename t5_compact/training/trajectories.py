"""A pool of `N` teacher trajectories per prompt: each (prompt, index) has its own noise seed and guidance.

With `trajectories: 0` (the paper) every step draws fresh noise. With `trajectories: N` the noise and guidance of
sample `i` of a batch are those of trajectory `j` of its prompt, `j` drawn per step: the same trajectory comes
back across epochs, which is what lets a trajectory cache (`trajectory_cache.py`) replace the teacher's forward
passes. Everything here is a pure function of (seed, prompt, resolution, index), so cache and on-the-fly agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..distill import FamilyAdapter, TextEmbeds, follow_teacher
from .data import Batch, step_generator
from .teacher_cache import prompt_key


def trajectory_key(prompt: str, resolution: int, index: int) -> str:
    """The cache key of trajectory `index` of `prompt` at `resolution` px."""
    return f"{prompt_key(prompt)}/{resolution}/{index}"


def trajectory_seed(seed: int, prompt: str, resolution: int, index: int) -> int:
    """The noise seed of a trajectory: a hash of the run seed, the prompt, the resolution and the index."""
    digest = hashlib.sha256(f"{seed}\0{resolution}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


@dataclass
class TrajectoryPool:
    """`size` trajectories per prompt, seeded by `seed`, with guidance drawn from `guidance_values`."""

    size: int
    seed: int
    guidance_values: Sequence[float]

    def guidance(self, prompt: str, resolution: int, index: int) -> float:
        seed = trajectory_seed(self.seed, prompt, resolution, index)
        return float(self.guidance_values[(seed >> 11) % len(self.guidance_values)])

    def noise(self, adapter: FamilyAdapter, prompt: str, resolution: int, index: int) -> torch.Tensor:
        """The initial latents `[1, ...]` (float32, CPU), drawn as the pipeline draws them."""
        gen = torch.Generator().manual_seed(trajectory_seed(self.seed, prompt, resolution, index))
        return adapter.prepare_latents(1, resolution, resolution, generator=gen, device="cpu")

    def picks(self, batch: Batch, rank: int = 0) -> list[int]:
        """The trajectory index of each sample of the batch (a function of seed, step and rank)."""
        gen = step_generator(self.seed, batch.step, rank, stream=3)
        return torch.randint(self.size, (len(batch.prompts),), generator=gen).tolist()

    def entries(self, prompts_by_resolution: dict[int, Sequence[str]]) -> list[tuple[str, int, int]]:
        """Every (prompt, resolution, index) of the pool, in a fixed order (what a trajectory cache holds)."""
        return [
            (prompt, res, j)
            for res, prompts in sorted(prompts_by_resolution.items())
            for prompt in dict.fromkeys(prompts)
            for j in range(self.size)
        ]


@torch.no_grad()
def record_trajectories(
    adapter: FamilyAdapter,
    teacher,
    negative: TextEmbeds | None,
    pool: TrajectoryPool,
    chunk: Sequence[tuple[str, int, int]],
    num_steps: int,
    storage: torch.dtype,
    device,
) -> dict:
    """Run the teacher along the trajectories `chunk` (prompt, resolution, index; one resolution) in one batch:
    `noise` (float32), `velocity` and, for CFG families, `uncond_velocity` `[n, num_steps, ...]` in `storage`, plus
    the `seed` and `guidance` lists. `teacher(prompts, device)` gives the conditioning (a `TeacherSource`);
    `negative` is the teacher's encoding of "" (CFG families) or None. Runs in the caller's autocast context."""
    prompts, res = [p for p, _, _ in chunk], chunk[0][1]
    noise = torch.cat([pool.noise(adapter, p, r, j) for p, r, j in chunk]).to(device)
    guidance = [pool.guidance(p, r, j) for p, r, j in chunk]
    steps = follow_teacher(
        adapter,
        teacher(prompts, device),
        noise,
        num_steps=num_steps,
        height=res,
        width=res,
        guidance=torch.tensor(guidance, device=device),
        negative=None if negative is None else TextEmbeds.cat([negative] * len(chunk)),
        always_uncond=True,
    )
    velocity, uncond = [], []
    for point in steps:
        velocity.append(point.velocity.to(storage))
        if point.uncond_velocity is not None:
            uncond.append(point.uncond_velocity.to(storage))
    out = {"noise": noise.float(), "velocity": torch.stack(velocity, dim=1)}
    if uncond:
        out["uncond_velocity"] = torch.stack(uncond, dim=1)
    seeds = [trajectory_seed(pool.seed, p, r, j) for p, r, j in chunk]
    return out | {"seed": seeds, "guidance": guidance}
