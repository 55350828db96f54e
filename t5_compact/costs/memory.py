"""Peak memory of one training update, estimated with fake tensors and torch's `MemTracker`.

The models are built under `FakeTensorMode` (shapes and dtypes, no storage), the optimizer state is created, then
one steady-state update of the configured loop runs under `torch.distributed._tools.mem_tracker.MemTracker`, which
records every live storage by kind (parameters, gradients, activations, temporaries, optimizer state). Two things
are added by rule rather than traced, and reported as such: fp8 storage of the frozen transformer (diffusers'
layerwise casting cannot run on fake tensors; the bytes come from applying it to a meta copy) and bitsandbytes'
8-bit AdamW state (2 bytes per parameter instead of AdamW's 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .models import RunModels, RunSpec, build_models
from .update import UpdateShape, adapter_for, make_scheduler, run_update

GiB = 2**30


def _mem_tracker_class():
    from torch.distributed._tools.mem_tracker import MemTracker

    class PeakMemTracker(MemTracker):
        """`MemTracker` for its global peak only: the per-module statistics are skipped. They snapshot every live
        storage at each module call (minutes at FLUX size), refuse a module called twice per iteration (the teacher
        and the student both call the transformer) and hook gradients on frozen parameters, which raises. The peak
        is recorded per operator and is unaffected; gradients are then counted with activations."""

        def _pre_fw_hook(self, module: nn.Module, inputs) -> None:
            pass

        def _post_fw_hook(self, module: nn.Module, inputs, outputs) -> None:
            pass

        def _pre_bw_hook(self, module: nn.Module, args) -> None:
            pass

        def _post_bw_hook(self, module: nn.Module, args) -> None:
            pass

    return PeakMemTracker


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def storage_bytes(spec: RunSpec, weight_dtype: torch.dtype, storage_dtype: torch.dtype | None) -> tuple[int, int]:
    """(transformer bytes as stored, largest single module's bytes in `weight_dtype`) with diffusers'
    `enable_layerwise_casting(storage_dtype, compute_dtype=weight_dtype)` applied to a meta copy."""
    with torch.device("meta"):
        transformer = build_models(spec, weight_dtype).transformer
    if storage_dtype is None or storage_dtype == weight_dtype:
        return param_bytes(transformer), 0
    transformer.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=weight_dtype)
    cast = [m for m in transformer.modules() if any(p.dtype == storage_dtype for p in m.parameters(recurse=False))]
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in cast), default=0)
    return param_bytes(transformer), largest * torch.empty((), dtype=weight_dtype).element_size()


@dataclass
class MemoryEstimate:
    """Bytes at the peak of one update, by kind; `notes` say what was added by rule."""

    traced: dict[str, int]
    transformer_stored: int
    transformer_traced: int
    resident: dict[str, int]
    optimizer_adjust: int = 0
    cast_buffer: int = 0
    optimizer_state: int = 0  # AdamW state held between updates (MemTracker's "Optstate" at the peak can also
    # hold the step's temporaries)
    notes: list[str] = field(default_factory=list)

    @property
    def transient(self) -> int:
        """Traced bytes at the peak that were not resident before the update (not parameters, buffers, state)."""
        t = self.traced
        return t["Total"] - t.get("Parameter", 0) - t.get("Buffer", 0) - self.optimizer_state

    @property
    def peak(self) -> int:
        adjust = self.transformer_stored - self.transformer_traced + self.optimizer_adjust + self.cast_buffer
        return self.traced["Total"] + adjust

    @property
    def activations(self) -> int:
        return self.traced.get("Activation", 0) + self.traced.get("Temp", 0)


def _fake_copy(models: RunModels, mode) -> RunModels:
    """Swap every parameter and buffer for a fake tensor of the same shape and dtype (in place; `Module.to` cannot)."""
    for module in [models.transformer, models.teacher_t5, models.student, *models.clips]:
        for sub in module.modules():
            for name, p in list(sub._parameters.items()):
                if p is not None:
                    sub._parameters[name] = nn.Parameter(mode.from_tensor(p.data), requires_grad=p.requires_grad)
            for name, b in list(sub._buffers.items()):
                if b is not None:
                    sub._buffers[name] = mode.from_tensor(b)
    return models


def _initialise_optimizer(optimizer: torch.optim.Optimizer, student: nn.Module) -> None:
    """Create AdamW's state (a steady-state update holds it during the backward pass)."""
    for p in student.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def estimate_update_memory(
    spec: RunSpec,
    variant: str,
    shape: UpdateShape,
    *,
    weight_dtype: torch.dtype = torch.bfloat16,
    autocast_dtype: torch.dtype | None = torch.bfloat16,
    gradient_checkpointing: bool = False,
    storage_dtype: torch.dtype | None = None,
    use_8bit_adam: bool = False,
    teacher_resident: bool = False,
    vae_scale_factor: int = 8,
    device: str = "cpu",
) -> MemoryEstimate:
    """Peak memory of one steady-state update of `variant` (`update.VARIANTS`) on one device.

    `teacher_resident`: the teacher T5 (and CLIP) stay loaded (training without a teacher cache)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    scheduler = make_scheduler(spec.family)
    mode = FakeTensorMode()
    # tiny.py also builds schedulers and VAEs, which fake tensors cannot: build for real, then swap in fakes.
    tiny = _fake_copy(build_models(spec, weight_dtype), mode) if spec.tiny else None
    with mode, torch.device(device):
        models: RunModels = tiny or build_models(spec, weight_dtype)
        if gradient_checkpointing:
            models.transformer.enable_gradient_checkpointing()
        adapter = adapter_for(models, vae_scale_factor, scheduler)
        optimizer = torch.optim.AdamW(models.student.parameters(), lr=1e-4)
        _initialise_optimizer(optimizer, models.student)
        state = sum(v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values() if v.dim())
        tracker = _mem_tracker_class()()
        resident = [models.transformer, models.student]
        if teacher_resident:
            resident += [models.teacher_t5, *models.clips]
        tracker.track_external(*resident, optimizer)

        with tracker:
            run_update(models, adapter, variant, shape, optimizer, autocast_dtype=autocast_dtype)
        peak = tracker.get_tracker_snapshot("peak")
    by_kind = {str(getattr(k, "value", k)): int(v) for k, v in next(iter(peak.values())).items()}
    traced_transformer = param_bytes(models.transformer)
    stored, cast_buffer = storage_bytes(spec, weight_dtype, storage_dtype)
    sizes = {"transformer": stored, "student": param_bytes(models.student)}
    if teacher_resident:
        sizes["teacher_t5"] = param_bytes(models.teacher_t5)
        sizes.update({f"clip_{i}": param_bytes(c) for i, c in enumerate(models.clips)})
    notes = []
    if storage_dtype is not None and storage_dtype != weight_dtype:
        notes.append(
            f"transformer stored in {str(storage_dtype).removeprefix('torch.')} by diffusers' layerwise casting "
            "(modules matching its skip patterns, e.g. `norm`, stay in the compute dtype); +1 module cast buffer"
        )
    optimizer_adjust = 0
    if use_8bit_adam:
        n = sum(p.numel() for p in models.student.parameters())
        optimizer_adjust = 2 * n - state
        notes.append("8-bit AdamW state counted as 2 bytes per student parameter (bitsandbytes; not traced)")
    return MemoryEstimate(by_kind, stored, traced_transformer, sizes, optimizer_adjust, cast_buffer, state, notes)
