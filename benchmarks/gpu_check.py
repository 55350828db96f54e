"""GPU check at FLUX.1-dev size with random weights (no downloads): time and memory of one update per loop variant,
the 24 GB preset under a memory cap, the memory plan against what was measured, and bf16 precision parity.

    bash benchmarks/gpu_check.sh                                   # one H100 / H200 class GPU, ~5-8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu-check-tiny     # the same code on CPU, tiny

Writes `<out>/gpu_check.json` and `<out>/gpu_check.md`. Figures are for the device named in them.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch

from t5_compact.costs.measure import measure_update
from t5_compact.costs.memory import GiB, estimate_update_memory
from t5_compact.costs.models import RunSpec, build_models, real_spec, spec_from_config
from t5_compact.costs.update import VARIANTS, UpdateShape, adapter_for
from t5_compact.distill import TextEmbeds, vision_loss
from t5_compact.training.config import build_config, read_config_file

PRESET = Path(__file__).resolve().parent.parent / "examples" / "configs" / "flux-base-24gb.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny:flux models at 32 px (CPU smoke run)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--cap", default="24", help="memory cap in GiB for the preset run (CUDA only)")
    parser.add_argument("--skip-estimates", action="store_true", help="do not run the (CPU-bound) memory plan")
    parser.add_argument("--out", default="docs/results/gpu_check")
    return parser.parse_args(argv)


def _spec(tiny: bool) -> tuple[RunSpec, int]:
    if tiny:
        return RunSpec("flux", {}, {}, True, "tiny:flux"), 1
    return real_spec("black-forest-labs/FLUX.1-dev"), 8


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


def variants(args, spec: RunSpec, vae: int, shape: UpdateShape) -> list[dict]:
    """One update of each loop variant with / without gradient checkpointing: wall time, memory, and the plan."""
    rows = []
    with torch.device(args.device):
        models = build_models(spec, torch.bfloat16)
    for ckpt in (False, True):
        for variant in VARIANTS:
            kw = dict(autocast_dtype=torch.bfloat16, gradient_checkpointing=ckpt, vae_scale_factor=vae)
            m = measure_update(models, variant, shape, **kw)
            row = dict(variant=variant, checkpointing=ckpt, seconds=m.seconds, transient=m.transient_bytes)
            row.update(resident=m.resident_bytes, method=m.method)
            if not args.skip_estimates and variant == "embedding_cache":  # the teacher does not set the peak
                est = estimate_update_memory(
                    spec, "trajectory_cache", shape, gradient_checkpointing=ckpt, vae_scale_factor=vae
                )
                row["estimated_transient"] = est.transient
            rows.append(row)
            print(row, flush=True)
    del models
    _free()
    return rows


def parity(args, spec: RunSpec, vae: int, shape: UpdateShape, steps: int = 4) -> dict:
    """A student equal to the teacher: L_vision with the student pass under bf16 autocast, as `train_step` runs it
    (teacher velocity outside autocast, as `follow_teacher` runs it). 0 means the two paths agree exactly."""
    from t5_compact.distill import follow_teacher

    with torch.device(args.device):
        models = build_models(spec, torch.bfloat16)
    adapter = adapter_for(models, vae)
    gen = torch.Generator().manual_seed(0)
    t5 = torch.randn(1, shape.seq_len, models.text_width, generator=gen).to(args.device, torch.bfloat16)
    teacher = TextEmbeds(t5)
    latents = adapter.prepare_latents(1, shape.resolution, shape.resolution, generator=gen, device="cpu")
    losses = []
    kw = dict(num_steps=steps, height=shape.resolution, width=shape.resolution, guidance=3.5)
    for point in follow_teacher(adapter, teacher, latents.to(args.device), **kw):
        with torch.no_grad(), torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16):
            v = adapter.velocity(point.latents, point.t, teacher.with_t5(t5.float()), 3.5, **kw_hw(shape))
        losses.append(float(vision_loss(v, point.velocity).mean()))
    del models, adapter
    _free()
    return {"L_vision_per_step": losses, "zero": all(x == 0.0 for x in losses)}


def kw_hw(shape: UpdateShape) -> dict:
    return dict(height=shape.resolution, width=shape.resolution)


def preset(args, vae: int) -> dict:
    """The 24 GB preset's setup (fp8 storage, checkpointing, batch 1, embedding cache) at its largest resolution,
    under `set_per_process_memory_fraction` on CUDA; peak against the plan's."""
    config = build_config(read_config_file(PRESET), {"pretrained_model": "tiny:flux"} if args.tiny else {})
    spec = spec_from_config(config)
    res = 32 if args.tiny else max(int(s.get("resolution", config.resolution)) for s in config.stage_list())
    shape = UpdateShape(batch=config.train_batch_size, resolution=res, seq_len=config.max_sequence_length)
    out: dict = {"resolution": res, "cap_gib": None}
    if args.device.startswith("cuda"):
        cap = float(args.cap) * GiB
        total = torch.cuda.get_device_properties(torch.device(args.device)).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), torch.device(args.device))
        out["cap_gib"] = cap / GiB
    try:
        with torch.device(args.device):
            models = build_models(spec, torch.bfloat16)
        storage = getattr(torch, config.transformer_storage_dtype)
        models.transformer.enable_layerwise_casting(storage_dtype=storage, compute_dtype=torch.bfloat16)
        optimizer, out["optimizer"] = _optimizer(models.student, config.use_8bit_adam)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        m = measure_update(
            models,
            "embedding_cache",
            shape,
            autocast_dtype=torch.bfloat16,
            gradient_checkpointing=True,
            vae_scale_factor=vae,
            optimizer=optimizer,
        )
        out.update(seconds=m.seconds, transient=m.transient_bytes, resident=m.resident_bytes, fits=True)
        if args.device.startswith("cuda"):
            out["max_memory_allocated"] = torch.cuda.max_memory_allocated()
    except torch.OutOfMemoryError as err:
        out.update(fits=False, error=str(err).splitlines()[0])
    except RuntimeError as err:  # e.g. the adapter casting inputs to the fp8 storage dtype
        out.update(fits=None, error=f"{type(err).__name__}: {str(err).splitlines()[0]}")
    finally:
        if args.device.startswith("cuda"):
            torch.cuda.set_per_process_memory_fraction(1.0, torch.device(args.device))
        _free()
    if not args.skip_estimates:
        est = estimate_update_memory(
            spec,
            "trajectory_cache",
            shape,
            gradient_checkpointing=True,
            storage_dtype=getattr(torch, config.transformer_storage_dtype),
            use_8bit_adam=config.use_8bit_adam,
            vae_scale_factor=vae,
        )
        out.update(estimated_peak=est.peak, estimated_transient=est.transient)
    print(out, flush=True)
    return out


def _optimizer(student: torch.nn.Module, eight_bit: bool) -> tuple[torch.optim.Optimizer, str]:
    from t5_compact.costs.memory import _initialise_optimizer

    name = "AdamW"
    cls = torch.optim.AdamW
    if eight_bit:
        try:
            import bitsandbytes as bnb

            cls, name = bnb.optim.AdamW8bit, "bitsandbytes AdamW8bit"
        except ImportError:
            name = "AdamW (bitsandbytes not installed: 8-bit Adam not measured)"
    optimizer = cls(student.parameters(), lr=1e-4)
    _initialise_optimizer(optimizer, student)
    return optimizer, name


def to_markdown(report: dict) -> str:
    mib = 2**20
    lines = [f"# GPU check on {report['device']} ({report['resolution']} px, batch 1, {report['tokens']} tokens)", ""]
    lines += ["| variant | checkpointing | s / update | transient MiB (measured) | transient MiB (plan) |"]
    lines += ["|---|---|---|---|---|"]
    for r in report["variants"]:
        est = f"{r['estimated_transient'] / mib:.0f}" if "estimated_transient" in r else "-"
        lines.append(
            f"| {r['variant']} | {r['checkpointing']} | {r['seconds']:.3f} | {r['transient'] / mib:.0f} | {est} |"
        )
    p = report["preset"]
    lines += ["", f"24 GB preset ({p.get('optimizer', '')}): {json.dumps(p)}", ""]
    lines += [f"Precision parity (student == teacher, bf16 autocast): {json.dumps(report['parity'])}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --device cpu --tiny for the CPU smoke run)")
    start = time.perf_counter()
    spec, vae = _spec(args.tiny)
    shape = UpdateShape(resolution=32 if args.tiny else args.resolution, seq_len=16 if args.tiny else 77)
    report = {"device": _device_name(args.device), "resolution": shape.resolution, "tokens": shape.seq_len}
    report["torch"] = torch.__version__
    report["variants"] = variants(args, spec, vae, shape)
    report["parity"] = parity(args, spec, vae, shape)
    report["preset"] = preset(args, vae)
    report["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text(to_markdown(report))
    print(f"wrote {out}/gpu_check.json and gpu_check.md in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
