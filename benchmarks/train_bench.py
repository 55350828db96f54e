"""Training throughput: our loop vs a literal version of the reference loop, with and without the teacher cache.

    python benchmarks/train_bench.py [--threads 2] [--batches 3] [--out results/train_bench.json]

Tiny config (tiny FLUX-dev-style transformer, tiny T5 teacher, tiny student, 32 px, 20 timesteps, batch 4), CPU:
trajectories/s, optimizer steps/s, time per trajectory and the share of time inside transformer forward passes.
The reference loop re-encodes the prompt with the teacher, CLIP and the student at every one of the 20 timesteps,
in separate passes, as the paper's script does. With a CUDA GPU, `--cuda` also runs a FLUX.1-dev-sized
transformer (random weights, bf16): step time and peak memory with gradient checkpointing on / off, and whether the
24 GB preset's setup fits under `torch.cuda.set_per_process_memory_fraction`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from t5_compact.distill import PromptEncoder, TextEmbeds, make_adapter, vision_loss
from t5_compact.tiny import tiny_compact_encoder, tiny_flux_components
from t5_compact.training.data import PromptSchedule, Source, Stage
from t5_compact.training.models import FLUX_SCHEDULER
from t5_compact.training.step import StepContext, TeacherSource, train_step
from t5_compact.training.teacher_cache import TeacherCache, write_teacher_cache

PROMPTS = [
    f"a {c} {o} next to {n} {o2}"
    for c in ("red", "blue", "green")
    for o in ("cat", "dog", "car")
    for n, o2 in (("two", "trees"), ("a", "house"))
]


class TransformerTimer:
    """Accumulates wall time spent inside the transformer's forward passes."""

    def __init__(self, module: torch.nn.Module):
        self.total = 0.0
        self._start = 0.0
        self._hooks = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def close(self) -> float:
        """Remove the hooks (variants run one after another on the same transformer); returns the total."""
        for hook in self._hooks:
            hook.remove()
        return self.total

    def _pre(self, *args):
        self._start = time.perf_counter()

    def _post(self, *args):
        self.total += time.perf_counter() - self._start


def setup(seq_len: int = 16):
    from diffusers import FlowMatchEulerDiscreteScheduler

    parts = tiny_flux_components(guidance_embeds=True)
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    adapter = make_adapter("flux", parts["transformer"], scheduler, vae_scale_factor=1)
    encoder = PromptEncoder("flux", parts["tokenizer_2"], [parts["tokenizer"]], [parts["text_encoder"]], seq_len)
    return parts, adapter, encoder


class _NoAccelerator:
    """What `train_step` needs from an Accelerator, for one CPU process."""

    device = torch.device("cpu")
    scaler = None

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def reference_loop(parts, adapter, encoder, batches, num_steps: int, res: int) -> dict:
    """The reference script's structure: every timestep re-encodes with teacher, CLIP and student (separately)."""
    student = tiny_compact_encoder().train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=1e-3)
    teacher_t5 = parts["text_encoder_2"]  # CLIP runs inside encoder.encode_clip
    timer = TransformerTimer(adapter.transformer)
    updates = 0
    start = time.perf_counter()
    for batch in batches:
        latents = adapter.prepare_latents(len(batch.prompts), res, res, generator=torch.Generator().manual_seed(0))
        scheduler = adapter.new_scheduler()
        timesteps = adapter.set_timesteps(scheduler, num_steps, res, res)
        for t in timesteps:
            ids = encoder.tokenize(batch.prompts)
            with torch.no_grad():
                teacher = teacher_t5(ids)[0]
                _, pooled = encoder.encode_clip(batch.prompts)
                pooled = torch.zeros_like(pooled)  # computed, then zeroed (as the reference does)
            student_t5 = student(ids)[0]
            with torch.no_grad():
                v_t = adapter.velocity(
                    latents, t, TextEmbeds(teacher, None, pooled), batch.guidance, height=res, width=res
                )
            v_s = adapter.velocity(
                latents, t, TextEmbeds(student_t5, None, pooled), batch.guidance, height=res, width=res
            )
            loss = vision_loss(v_s, v_t).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            updates += 1
            latents = adapter.step(scheduler, v_t, t, latents)
    elapsed = time.perf_counter() - start
    return _result(elapsed, len(batches), updates, timer.close())


def our_loop(parts, adapter, encoder, batches, num_steps: int, cache: TeacherCache | None, mode: str) -> dict:
    student = tiny_compact_encoder().train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=1e-3)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    teacher = TeacherSource(encoder, None if cache else parts["text_encoder_2"], cache, zero_pooled=True)
    ctx = StepContext(
        _NoAccelerator(),
        adapter,
        encoder,
        teacher,
        student,
        optimizer,
        lr_scheduler,
        num_steps=num_steps,
        optimizer_step=mode,
    )
    timer = TransformerTimer(adapter.transformer)
    updates = 0
    start = time.perf_counter()
    for batch in batches:
        updates += train_step(ctx, batch).updates
    elapsed = time.perf_counter() - start
    return _result(elapsed, len(batches), updates, timer.close())


def transformer_floor(adapter, encoder, batches, num_steps: int, res: int, batched: bool) -> dict:
    """Only the frozen-transformer work both loops share, nothing else: per trajectory the teacher's `num_steps`
    no-grad passes, plus the student's passes with backward to the embedding, one per timestep or (`batched`) all
    timesteps in one pass as the trajectory mode does. No encoders, no optimizer: a lower bound for either loop."""
    seq, width = encoder.max_sequence_length, adapter.text_width
    timer = TransformerTimer(adapter.transformer)
    start = time.perf_counter()
    for batch in batches:
        size = len(batch.prompts)
        teacher = TextEmbeds(torch.randn(size, seq, width))
        leaf = torch.randn(size, seq, width, requires_grad=True)
        latents = adapter.prepare_latents(size, res, res, generator=torch.Generator().manual_seed(0))
        scheduler = adapter.new_scheduler()
        points = []
        for t in adapter.set_timesteps(scheduler, num_steps, res, res):
            with torch.no_grad():
                v_t = adapter.velocity(latents, t, teacher, batch.guidance, height=res, width=res)
            if batched:
                points.append((latents, t, v_t))
            else:
                v_s = adapter.velocity(latents, t, TextEmbeds(leaf), batch.guidance, height=res, width=res)
                vision_loss(v_s, v_t).mean().backward()
            latents = adapter.step(scheduler, v_t, t, latents)
        if batched:
            x = torch.cat([p[0] for p in points])
            t = torch.cat([p[1].reshape(1).expand(size) for p in points])
            cond = TextEmbeds(leaf.repeat(len(points), 1, 1))
            v_s = adapter.velocity(x, t, cond, batch.guidance, height=res, width=res)
            vision_loss(v_s, torch.cat([p[2] for p in points])).mean().backward()
    elapsed = time.perf_counter() - start
    return _result(elapsed, len(batches), 0, timer.close())


def _result(elapsed: float, trajectories: int, updates: int, transformer: float) -> dict:
    return {
        "seconds_per_trajectory": elapsed / trajectories,
        "trajectories_per_s": trajectories / elapsed,
        "optimizer_steps_per_s": updates / elapsed,
        "transformer_forward_share": transformer / elapsed,
    }


def cpu_bench(args) -> dict:
    torch.set_num_threads(args.threads)
    parts, adapter, encoder = setup()
    stage = Stage("bench", [Source("quality", PROMPTS)], args.batches + 1, args.resolution)
    schedule = PromptSchedule([stage], args.batch_size, [2.0, 3.5, 5.0], seed=0)
    batches = [schedule.batch(i) for i in range(args.batches + 1)]
    warmup, batches = batches[:1], batches[1:]
    with tempfile.TemporaryDirectory() as tmp:
        write_teacher_cache(tmp, PROMPTS, lambda p: encoder.encode(p, parts["text_encoder_2"]), {"bench": 1})
        cache = TeacherCache(tmp)
        runs = {
            "reference (re-encode every timestep)": lambda b: reference_loop(
                parts, adapter, encoder, b, args.steps, args.resolution
            ),
            "ours, teacher on the fly, update per timestep": lambda b: our_loop(
                parts, adapter, encoder, b, args.steps, None, "timestep"
            ),
            "ours, teacher cache, update per timestep": lambda b: our_loop(
                parts, adapter, encoder, b, args.steps, cache, "timestep"
            ),
            "ours, teacher cache, update per trajectory": lambda b: our_loop(
                parts, adapter, encoder, b, args.steps, cache, "trajectory"
            ),
            "floor: transformer work only, per timestep": lambda b: transformer_floor(
                adapter, encoder, b, args.steps, args.resolution, batched=False
            ),
            "floor: transformer work only, batched": lambda b: transformer_floor(
                adapter, encoder, b, args.steps, args.resolution, batched=True
            ),
        }
        results = {}
        for name, fn in runs.items():
            fn(warmup)
            results[name] = fn(batches)
    ref = results["reference (re-encode every timestep)"]["seconds_per_trajectory"]
    for r in results.values():
        r["time_vs_reference"] = r["seconds_per_trajectory"] / ref
    return results


def cuda_bench(args) -> dict:
    """FLUX.1-dev-sized transformer (random, bf16): step time / peak memory with checkpointing on and off, and the
    24 GB preset (fp8 storage + checkpointing + batch 1) under a 24 GB memory fraction."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from t5_compact.configuration_t5_compact import compact_config
    from t5_compact.modeling_t5_compact import T5CompactEncoder

    device = torch.device("cuda")
    out = {"device": torch.cuda.get_device_name(0)}
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):  # FLUX.1-dev geometry (diffusers defaults), random weights, built on the GPU
        transformer = FluxTransformer2DModel(guidance_embeds=True).requires_grad_(False)
    torch.set_default_dtype(torch.float32)
    adapter = make_adapter("flux", transformer, FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER))

    def one(checkpointing: bool, batch: int, fraction: float | None) -> dict:
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        else:
            transformer.disable_gradient_checkpointing()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        if fraction is not None:
            torch.cuda.set_per_process_memory_fraction(fraction)
        try:
            student = T5CompactEncoder(compact_config("base")).to(device).train()
            optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
            ids = torch.randint(0, 32128, (batch, 77), device=device)
            teacher = TextEmbeds(torch.randn(batch, 77, 4096, device=device, dtype=torch.bfloat16))
            latents = adapter.prepare_latents(batch, 512, 512, device=device)
            scheduler = adapter.new_scheduler()
            timesteps = adapter.set_timesteps(scheduler, 20, 512, 512, device=device)
            times = []
            for t in timesteps[:4]:
                torch.cuda.synchronize()
                start = time.perf_counter()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    with torch.no_grad():
                        v_t = adapter.velocity(latents, t, teacher, 3.5, height=512, width=512)
                    v_s = adapter.velocity(latents, t, teacher.with_t5(student(ids)[0]), 3.5, height=512, width=512)
                    loss = vision_loss(v_s, v_t).mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                latents = adapter.step(scheduler, v_t, t, latents)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            result = {
                "ok": True,
                "seconds_per_timestep_update": sum(times[1:]) / len(times[1:]),
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
            del student, optimizer
        except torch.OutOfMemoryError as err:
            result = {"ok": False, "error": str(err).splitlines()[0]}
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
        return result

    total = torch.cuda.get_device_properties(0).total_memory
    out["bf16_checkpointing_off_batch1"] = one(False, 1, None)
    out["bf16_checkpointing_on_batch1"] = one(True, 1, None)
    # the 24 GB preset: fp8 storage of the frozen transformer (layerwise casting) + checkpointing + batch 1
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    out["preset_24gb_under_24gib_fraction"] = one(True, 1, min(1.0, 24 * 2**30 / total))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=3, help="measured trajectories per variant")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="Euler steps per trajectory")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--cuda", action="store_true", help="also run the FLUX.1-dev-size GPU part")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = {"cpu": cpu_bench(args), "threads": args.threads}
    if args.cuda:
        report["cuda"] = cuda_bench(args) if torch.cuda.is_available() else "no CUDA device"
    for name, r in report["cpu"].items():
        print(
            f"{name:50s} {r['seconds_per_trajectory']:7.3f} s/traj  {r['trajectories_per_s']:6.2f} traj/s  "
            f"{r['optimizer_steps_per_s']:7.2f} opt/s  transformer fwd {100 * r['transformer_forward_share']:4.1f}%"
            f"  x{r['time_vs_reference']:.2f} of reference time"
        )
    if "cuda" in report:
        print(json.dumps(report["cuda"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
