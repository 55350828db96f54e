"""`t5-compact train --config X --plan`: memory and FLOPs of a training config at its real size, before any download.

Nothing is loaded: the models are built from published configs (or a local folder's config.json) on fake / meta
tensors. Peak memory comes from `memory.estimate_update_memory` (torch's MemTracker under FakeTensorMode), FLOPs
from `flops.count_update` (FlopCounterMode on the meta device). Everything printed is an estimate for one process.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from ..distill import family_class
from ..training.config import ConfigError, TrainConfig
from .flops import count_update
from .memory import GiB, MemoryEstimate, estimate_update_memory, storage_bytes
from .models import RunSpec, build_models, spec_from_config
from .update import UpdateShape, adapter_for

DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HEADROOM = 1.0 * GiB  # CUDA context + allocator fragmentation, added before comparing with --gpu-memory


def parse_memory(text: str) -> int:
    """'24GB', '24GiB', '24G', '80' (GiB) -> bytes; GB is read as GiB, as GPU vendors label cards."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(g|gb|gib|m|mb|mib)?\s*", text.lower())
    if not match:
        raise ConfigError(f"--gpu-memory {text!r}: expected a size such as 24GB or 80GiB")
    value, unit = float(match.group(1)), (match.group(2) or "g")
    return int(value * (GiB if unit.startswith("g") else 2**20))


@dataclass
class Plan:
    """The estimate for one config (per process, at its largest resolution)."""

    config: TrainConfig
    spec: RunSpec
    variant: str
    resolution: int
    memory: dict[bool, MemoryEstimate]  # by gradient checkpointing
    flops: dict[int, dict[str, int]]  # resolution -> {variant: FLOPs per update}
    fp8_saving: int = 0
    cache_bytes: int = 0  # teacher-cache bytes read per trajectory (bf16)
    trajectory_bytes: dict[int, int] = field(default_factory=dict)  # resolution -> disk bytes of one trajectory
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return self.memory[self.config.gradient_checkpointing].peak


def _variant(config: TrainConfig) -> str:
    if config.trajectory_cache:
        return "trajectory_cache"
    return "embedding_cache" if config.teacher_cache else "reference"


def _shape(config: TrainConfig, resolution: int) -> UpdateShape:
    batch = config.train_batch_size
    if config.optimizer_step == "trajectory":  # batched timesteps per transformer pass
        batch *= config.timesteps_per_pass or config.num_inference_steps
    return UpdateShape(batch=batch, resolution=resolution, seq_len=config.max_sequence_length)


def make_plan(config: TrainConfig) -> Plan:
    """Estimate memory (with and without gradient checkpointing) and FLOPs per update for `config`."""
    spec = spec_from_config(config)
    weight_dtype = DTYPES[config.mixed_precision]
    autocast = None if weight_dtype == torch.float32 else weight_dtype
    resolutions = sorted({int(s.get("resolution", config.resolution)) for s in config.stage_list()})
    top = resolutions[-1]
    vae = 1 if spec.tiny else 8
    storage = getattr(torch, config.transformer_storage_dtype) if config.transformer_storage_dtype else None
    variant = _variant(config)
    # The teacher's encode and forward run without gradients before the student pass, whose peak is above theirs
    # (tests check that the variants' peaks agree at tiny size): trace the student pass, keep the teacher resident.
    memory = {
        ckpt: estimate_update_memory(
            spec,
            "trajectory_cache",
            _shape(config, top),
            weight_dtype=weight_dtype,
            autocast_dtype=autocast,
            gradient_checkpointing=ckpt,
            storage_dtype=storage,
            use_8bit_adam=config.use_8bit_adam,
            teacher_resident=not config.teacher_cache,
            vae_scale_factor=vae,
        )
        for ckpt in (False, True)
    }
    fp8_saving = 0
    if storage is None and weight_dtype != torch.float32:
        fp8 = storage_bytes(spec, weight_dtype, torch.float8_e4m3fn)[0]
        fp8_saving = storage_bytes(spec, weight_dtype, None)[0] - fp8
    with torch.device("meta"):
        models = build_models(spec, weight_dtype)
    flops = {}
    for res in resolutions:
        shape = _shape(config, res)
        counts = {
            v: count_update(
                models,
                v,
                shape,
                gradient_checkpointing=config.gradient_checkpointing,
                vae_scale_factor=vae,
                by_part=False,
            ).total
            for v in dict.fromkeys(("reference", variant, "trajectory_cache"))
        }
        flops[res] = counts
    cfg = models.transformer.config
    row = config.max_sequence_length * cfg.joint_attention_dim
    if spec.family == "sd3":
        row += 77 * cfg.pooled_projection_dim + cfg.pooled_projection_dim  # CLIP-L/G hidden states + pooled
    cache_bytes = config.train_batch_size * row * 2 if config.teacher_cache else 0
    notes = list(spec.notes)
    trajectory_bytes = {}
    if config.trajectories:
        from ..training.trajectory_cache import trajectory_bytes as one_trajectory

        adapter = adapter_for(models, vae)
        for res in resolutions:
            numel = math.prod(adapter.latent_shape(1, res, res))
            with_uncond = family_class(spec.family).uses_cfg
            trajectory_bytes[res] = one_trajectory(
                numel, config.num_inference_steps, config.trajectory_dtype, with_uncond
            )
    if config.optimizer_step == "trajectory":
        notes.append(f"optimizer_step trajectory: transformer passes of {_shape(config, top).batch} latents")
    return Plan(config, spec, variant, top, memory, flops, fp8_saving, cache_bytes, trajectory_bytes, notes)


def _gib(n: int) -> str:
    if abs(n) < GiB:
        return f"{n / 2**20:6.2f} MiB"
    return f"{n / GiB:6.2f} GiB"


def render(plan: Plan, gpu_memory: int | None = None) -> str:
    """The plan as text (every figure is an estimate; the tools that produced it are named)."""
    c, m = plan.config, plan.memory[plan.config.gradient_checkpointing]
    loop = {
        "reference": "teacher on the fly (T5-XXL loaded)",
        "embedding_cache": "embedding cache (no T5-XXL)",
        "trajectory_cache": f"trajectory cache ({c.trajectories} per prompt: no teacher pass, no T5-XXL)",
    }
    lines = [
        f"t5-compact train --plan: {c.pretrained_model} ({plan.spec.family}), student {c.init_from or c.student_size}",
        f"  loop: {loop[plan.variant]}, batch {c.train_batch_size}/process, {c.max_sequence_length} tokens, "
        f"{plan.resolution} px (largest stage), mixed_precision {c.mixed_precision}, "
        f"gradient_checkpointing {c.gradient_checkpointing}, 8-bit Adam {c.use_8bit_adam}",
        "  ESTIMATED, nothing loaded: FakeTensorMode + torch MemTracker for memory, FlopCounterMode (meta) for FLOPs",
        "",
        "  parameters (as stored):",
    ]
    compute = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}[c.mixed_precision]
    stored = c.transformer_storage_dtype or compute
    for name, size in m.resident.items():
        dtype = stored if name == "transformer" else ("float32 (master)" if name == "student" else compute)
        lines.append(f"    {name:<14}{_gib(size)}  {dtype}")
    opt = m.optimizer_state + m.optimizer_adjust
    lines += [
        f"    {'optimizer':<14}{_gib(opt)}  {'8-bit AdamW' if c.use_8bit_adam else 'AdamW fp32 (2 states)'}",
        "  activations + temporaries of one update at the peak (incl. the student's float32 gradients):",
        f"    without gradient checkpointing {_gib(plan.memory[False].activations)}",
        f"    with gradient checkpointing    {_gib(plan.memory[True].activations)}",
        f"  estimated peak per device: {_gib(plan.memory[False].peak)} without / "
        f"{_gib(plan.memory[True].peak)} with gradient checkpointing  -> configured: {_gib(plan.peak).strip()}",
    ]
    lines += [f"  note: {n}" for n in m.notes + plan.notes]
    if plan.cache_bytes:
        lines.append(f"  cache reads: {plan.cache_bytes / 2**20:.2f} MiB of teacher embeddings per trajectory (bf16)")
    for res, size in plan.trajectory_bytes.items():
        lines.append(
            f"  trajectory cache: {size / 1e6:.2f} MB per trajectory at {res} px ({c.trajectory_dtype} velocities), "
            f"x {c.trajectories} per prompt of that stage"
        )
    lines.append("  FLOPs per optimizer update (TFLOP, x reference loop):")
    for res, counts in plan.flops.items():
        ref = counts["reference"]
        cells = ", ".join(f"{k} {v / 1e12:.4g} ({v / ref:.3f}x)" for k, v in counts.items())
        lines.append(f"    {res} px: {cells}")
    if gpu_memory is not None:
        lines += ["", *fit_lines(plan, gpu_memory)]
    return "\n".join(lines)


def fit_lines(plan: Plan, gpu_memory: int) -> list[str]:
    """Whether the configured peak (+ headroom) fits `gpu_memory`, and what to change if not."""
    c = plan.config
    need = plan.peak + HEADROOM
    verdict = "FITS" if need <= gpu_memory else "DOES NOT FIT"
    lines = [f"  {verdict} in {_gib(gpu_memory).strip()}: needs ~{_gib(need).strip()} (peak + 1 GiB headroom)"]
    if need <= gpu_memory:
        return lines
    options = []
    peak = plan.peak
    if not c.gradient_checkpointing:
        options.append(("gradient_checkpointing: true", plan.memory[True].peak - plan.memory[False].peak))
    if plan.fp8_saving:
        options.append(("transformer_storage_dtype: float8_e4m3fn", -plan.fp8_saving))
    if not c.use_8bit_adam:
        n = plan.memory[c.gradient_checkpointing].resident["student"] // 4
        options.append(("use_8bit_adam: true (pip install bitsandbytes)", 2 * n - 8 * n))
    if not c.teacher_cache:
        teacher = sum(v for k, v in plan.memory[False].resident.items() if k not in ("transformer", "student"))
        options.append(("teacher_cache: DIR (run cache-teacher first)", -teacher))
    if c.train_batch_size > 1:
        options.append(("train_batch_size: 1", None))
    options.append(("a lower stage resolution", None))
    lines.append("  change (estimated effect on the peak):")
    for option, delta in options:
        effect = "smaller activations" if delta is None else f"{_gib(delta).strip()} -> ~{_gib(peak + delta).strip()}"
        lines.append(f"    {option}: {effect}")
    return lines
