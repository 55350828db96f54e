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

from ..distill import FamilyAdapter
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
