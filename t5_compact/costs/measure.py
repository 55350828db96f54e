"""Measure what `memory.estimate_update_memory` estimates: one real update with real (random) weights.

CUDA: `torch.cuda.max_memory_allocated` over the update, minus what was allocated before it. CPU: the peak of live
bytes allocated through torch's CPU allocator during the update, from the profiler's memory events (the process RSS
is useless here: glibc keeps freed heap, and trimming it returns pages the update then re-faults). Both compare with
the estimate's transient part: everything at the peak except parameters, buffers and optimizer state, which are
resident before the update. A warm-up update runs first.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import torch

from .memory import _initialise_optimizer
from .models import RunModels
from .update import UpdateShape, adapter_for, run_update


@dataclass
class MeasuredUpdate:
    """Transient bytes of one update (peak over the update minus what was resident before it), its wall time."""

    transient_bytes: int
    resident_bytes: int
    seconds: float
    method: str


def measure_update(
    models: RunModels,
    variant: str,
    shape: UpdateShape,
    *,
    autocast_dtype: torch.dtype | None = None,
    gradient_checkpointing: bool = False,
    vae_scale_factor: int = 8,
    optimizer: torch.optim.Optimizer | None = None,
) -> MeasuredUpdate:
    """Run one warm-up and one measured update of `variant` on `models` (real tensors, on their device)."""
    if gradient_checkpointing:
        models.transformer.enable_gradient_checkpointing()
    elif getattr(models.transformer, "is_gradient_checkpointing", False):
        models.transformer.disable_gradient_checkpointing()
    adapter = adapter_for(models, vae_scale_factor)
    if optimizer is None:
        optimizer = torch.optim.AdamW(models.student.parameters(), lr=1e-4)
        _initialise_optimizer(optimizer, models.student)
    device = str(adapter.device)

    def update() -> None:
        run_update(models, adapter, variant, shape, optimizer, autocast_dtype=autocast_dtype)

    update()  # warm-up: thread pools, kernels, lazily created buffers
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        update()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return MeasuredUpdate(torch.cuda.max_memory_allocated() - resident, resident, seconds, "max_memory_allocated")
    start = time.perf_counter()
    peak = _cpu_allocator_peak(update)
    return MeasuredUpdate(peak, 0, time.perf_counter() - start, "profiler CPU allocator events")


def _cpu_allocator_peak(fn) -> int:
    """Peak of live bytes allocated through torch's CPU allocator while `fn` runs (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak
