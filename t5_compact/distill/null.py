"""The null student (the teacher's mean embedding for every prompt) and prompt-specific fidelity.

A student can lower L_vision a lot by learning only the average embedding. The null student is that baseline: it
ignores the prompt and outputs the teacher's mean T5 embedding over the training prompts (per token position).
Prompt-specific fidelity `1 - L_student / L_null` then says how much of the prompt a student carries: 1 is the
teacher, 0 is no better than ignoring the prompt, negative is worse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn


class NullStudent(nn.Module):
    """Outputs `embedding` `[L, W]` for every prompt: `forward(input_ids)[0]` is `[B, L, W]`."""

    def __init__(self, embedding: torch.Tensor):
        super().__init__()
        self.register_buffer("embedding", embedding.detach().float().clone())

    def forward(self, input_ids: torch.Tensor, **_) -> tuple[torch.Tensor]:
        if input_ids.shape[1] != self.embedding.shape[0]:
            raise ValueError(f"null student holds {self.embedding.shape[0]} tokens, got input_ids {input_ids.shape}")
        return (self.embedding.to(input_ids.device).expand(input_ids.shape[0], -1, -1),)


def mean_embedding(
    prompts: Sequence[str], encode: Callable[[list[str]], torch.Tensor], batch_size: int = 16, limit: int = 0
) -> torch.Tensor:
    """Mean `[L, W]` (float32) of `encode(batch) -> [B, L, W]` over `prompts`; with `limit > 0`, over at most that
    many prompts taken evenly spaced (deterministic) from the list."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("mean_embedding needs at least one prompt")
    if 0 < limit < len(prompts):
        prompts = [prompts[i * len(prompts) // limit] for i in range(limit)]
    total = None
    for start in range(0, len(prompts), batch_size):
        part = encode(prompts[start : start + batch_size]).float().sum(dim=0)
        total = part if total is None else total + part
    return total / len(prompts)


def prompt_fidelity(student: Mapping[str, float], null: Mapping[str, float]) -> dict[str, float]:
    """`1 - L_student / L_null` per category present in both (NaN where L_null is 0)."""
    return {c: 1.0 - student[c] / null[c] if null[c] > 0 else float("nan") for c in student if c in null}
