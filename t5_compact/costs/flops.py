"""FLOPs of one optimizer update per loop variant, counted by `torch.utils.flop_counter.FlopCounterMode`.

Counted on the meta device: no weights, no compute, exact shapes. `FlopCounterMode` counts matrix products and
attention (2 FLOPs per multiply-add); elementwise ops, norms and the optimizer's arithmetic count as 0 (AdamW on a
130 M student is ~1e-5 of an update). Backward runs to the student's parameters only (the transformer is frozen).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import RunModels
from .update import PHASES, VARIANTS, UpdateShape, adapter_for, run_update

LOOPS = ("reference", "on_the_fly", "embedding_cache", "trajectory_cache")


@dataclass
class UpdateFlops:
    """Total FLOPs of one update of `variant` (one counter around all of it) and its parts (one counter each)."""

    variant: str
    total: int
    parts: dict[str, int] = field(default_factory=dict)


def count_update(
    models: RunModels,
    variant: str,
    shape: UpdateShape,
    *,
    gradient_checkpointing: bool = False,
    vae_scale_factor: int = 8,
    by_part: bool = True,
) -> UpdateFlops:
    """FLOPs of one update: `total` from one counter around the whole update; `parts` from a second run that
    counts each phase on its own (their sum equals `total` when no op is missed or counted twice)."""
    transformer = models.transformer
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    elif getattr(transformer, "is_gradient_checkpointing", False):
        transformer.disable_gradient_checkpointing()
    adapter = adapter_for(models, vae_scale_factor)
    optimizer = torch.optim.AdamW(models.student.parameters(), lr=1e-4, foreach=False)
    with FlopCounterMode(display=False) as counter:
        run_update(models, adapter, variant, shape, optimizer)
    parts: dict[str, int] = {}
    if by_part:

        @contextlib.contextmanager
        def phase(name: str):
            with FlopCounterMode(display=False) as part:
                yield
            parts[name] = parts.get(name, 0) + part.get_total_flops()

        run_update(models, adapter, variant, shape, optimizer, phase=phase)
    return UpdateFlops(variant, counter.get_total_flops(), {p: parts.get(p, 0) for p in PHASES})


@dataclass
class LoopFlops:
    """FLOPs per update of every loop at one setting, and their ratios to the reference loop."""

    model: str
    resolution: int
    gradient_checkpointing: bool
    num_steps: int
    per_update: dict[str, int]
    parts: dict[str, dict[str, int]]

    @property
    def ratios(self) -> dict[str, float]:
        ref = self.per_update["reference"]
        return {k: v / ref for k, v in self.per_update.items()}

    def as_dict(self) -> dict:
        return {**asdict(self), "ratios": self.ratios}


def on_the_fly(reference: int, embedding_cache: int, num_steps: int) -> float:
    """Per update of our on-the-fly loop: the teacher encodes once per `num_steps`-update trajectory."""
    return (reference + (num_steps - 1) * embedding_cache) / num_steps


def count_loops(
    models: RunModels,
    shape: UpdateShape,
    *,
    gradient_checkpointing: bool = False,
    num_steps: int = 20,
    vae_scale_factor: int = 8,
) -> LoopFlops:
    """Count one update of each variant in `VARIANTS` and derive the on-the-fly loop."""
    counted = {
        v: count_update(
            models, v, shape, gradient_checkpointing=gradient_checkpointing, vae_scale_factor=vae_scale_factor
        )
        for v in VARIANTS
    }
    per_update = {v: c.total for v, c in counted.items()}
    per_update["on_the_fly"] = round(on_the_fly(per_update["reference"], per_update["embedding_cache"], num_steps))
    per_update = {k: per_update[k] for k in LOOPS}
    return LoopFlops(
        models.name,
        shape.resolution,
        gradient_checkpointing,
        num_steps,
        per_update,
        {v: c.parts for v, c in counted.items()},
    )
