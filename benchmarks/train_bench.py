"""Time to quality: held-out fidelity against wall-clock and FLOPs for each training loop, on a proxy model whose
FLOP split matches FLUX.1-dev at 512 px.

    python benchmarks/train_bench.py [--rounds 8] [--per-round 4] [--seed 0] [--out docs/results/train_bench/seed-0]
    python benchmarks/train_bench.py --summarize docs/results/train_bench/seed-*/train_bench.json \
        --out docs/results/train_bench          # summary.md: median and range over the seeds

Proxy (CPU, random weights): a FLUX-dev-style transformer (6 blocks, width 128, 256 image + 16 text tokens), a
T5 teacher and CLIP sized so that, per reference update as counted by `FlopCounterMode` (printed first), text
encoders take ~1-2 % and the teacher's transformer forward ~1/3, as at real scale (`benchmarks/train_flops.py`).
Loops, all with one update per timestep (the paper):

- `reference`: the paper's loop, literally: teacher T5 + CLIP + student re-encode at every timestep, fresh noise;
- `on_the_fly`: `t5-compact train` without caches (encodes once per trajectory);
- `embedding_cache`: `t5-compact train --teacher_cache` (no text encoder but the student's);
- `pool N`: `--trajectory_cache` with N trajectories per prompt (no teacher pass at all), N = 1, 4, 16; and
  `pool N, on the fly` for the largest N (same pool, teacher run live: isolates the pool's effect on quality).

Variants are alternated round by round in one process (the order rotates each round) and all see the same
batches; after every round each student's held-out L_vision and prompt-specific fidelity `1 - L / L_null` are
measured (not timed). The report gives per variant: median seconds per trajectory (and spread), FLOPs per
trajectory, and the wall time / FLOPs at which it first reaches the reference loop's final fidelity, without and
with the one-off cost of recording its trajectory cache. Writes `train_bench.json`, `train_bench.md` and
`train_bench.png` (fidelity vs time and vs FLOPs) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from t5_compact.costs.flops import count_update
from t5_compact.costs.models import RunModels
from t5_compact.costs.update import UpdateShape
from t5_compact.distill import (
    NullStudent,
    PromptEncoder,
    TextEmbeds,
    build_heldout,
    heldout_vision_loss,
    make_adapter,
    mean_embedding,
    prompt_fidelity,
    vision_loss,
)
from t5_compact.tiny import (
    strengthen_text_pathway,
    tiny_clip_config,
    tiny_clip_tokenizer,
    tiny_compact_encoder,
    tiny_t5_tokenizer,
    tiny_teacher_t5,
)
from t5_compact.training.data import PromptSchedule, Source, Stage, step_generator
from t5_compact.training.models import FLUX_SCHEDULER
from t5_compact.training.step import StepContext, TeacherSource, train_step
from t5_compact.training.teacher_cache import TeacherCache, write_teacher_cache
from t5_compact.training.trajectories import TrajectoryPool, record_trajectories
from t5_compact.training.trajectory_cache import TrajectoryCache, merge_indices, write_trajectories

WIDTH = 64  # text width (joint_attention_dim)
SEQ = 16  # T5 tokens
RES = 32  # px (vae scale factor 1): 16 x 16 = 256 packed image tokens
STEPS = 8  # Euler steps per trajectory
BATCH = 4
LR = 1e-2
SUBJECTS = ("cat", "dog", "car", "house", "tree", "man", "woman", "panda", "book", "cup")
COLOURS = ("red", "blue", "green", "yellow", "black", "white")
PLACES = ("next to two trees", "on a table", "left of a house", "below a sign that says 'hello'")


def prompts() -> tuple[list[str], dict[str, list[str]]]:
    """16 training prompts and 8 held-out ones (other combinations of the same words), category `objects`."""
    combos = [f"a {c} {s} {p}" for s in SUBJECTS for c in COLOURS for p in PLACES]
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(combos), generator=gen).tolist()
    picked = [combos[i] for i in order[:24]]
    return picked[:16], {"objects": picked[16:]}


def build_proxy(seed: int = 0) -> dict:
    """Transformer, teacher T5, CLIP, tokenizers, adapter and prompt encoder of the proxy."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=WIDTH,
        pooled_projection_dim=32,
        axes_dims_rope=[8, 12, 12],
        guidance_embeds=True,
    )
    strengthen_text_pathway(transformer).eval().requires_grad_(False)
    torch.manual_seed(seed)
    teacher = tiny_teacher_t5(WIDTH, d_kv=16, d_ff=512, num_layers=8).requires_grad_(False)
    torch.manual_seed(seed)
    clip = CLIPTextModel(tiny_clip_config()).eval().requires_grad_(False)
    adapter = make_adapter("flux", transformer, FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae_scale_factor=1)
    encoder = PromptEncoder("flux", tiny_t5_tokenizer(), [tiny_clip_tokenizer()], [clip], SEQ)
    return {"transformer": transformer, "teacher": teacher, "clip": clip, "adapter": adapter, "encoder": encoder}


def new_student(seed: int = 0) -> torch.nn.Module:
    return tiny_compact_encoder(out_dim=WIDTH, seed=1 + seed).train()


def flop_split(proxy: dict) -> dict:
    """FLOPs of one update of each variant on the proxy, and the reference update's split by phase."""
    models = RunModels("flux", proxy["transformer"], proxy["teacher"], new_student(), [proxy["clip"]], "proxy")
    shape = UpdateShape(batch=BATCH, resolution=RES, seq_len=SEQ, guidance=3.5, cfg=False)
    counted = {v: count_update(models, v, shape, vae_scale_factor=1) for v in ("reference", "embedding_cache")}
    counted["trajectory_cache"] = count_update(models, "trajectory_cache", shape, vae_scale_factor=1)
    ref = counted["reference"]
    split = {phase: flops / ref.total for phase, flops in ref.parts.items()}
    per_update = {v: c.total for v, c in counted.items()}
    # per trajectory: our on-the-fly loop encodes once, then STEPS - 1 cached-embedding updates
    per_trajectory = {
        "reference": STEPS * per_update["reference"],
        "on_the_fly": per_update["reference"] + (STEPS - 1) * per_update["embedding_cache"],
        "embedding_cache": STEPS * per_update["embedding_cache"],
        "trajectory_cache": STEPS * per_update["trajectory_cache"],
    }
    teacher_pass = ref.parts["teacher_forward"]  # what recording one trajectory costs per timestep
    return {"reference_split": split, "per_trajectory": per_trajectory, "record_per_trajectory": STEPS * teacher_pass}


class NoAccelerator:
    """What `train_step` needs from an Accelerator, for one CPU process."""

    device = torch.device("cpu")
    scaler = None

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


class Reference:
    """The paper's loop, literally (REFERENCE.md section 2): every timestep re-encodes the prompt with the teacher,
    CLIP and the student in separate passes, then teacher forward, student forward + backward, update."""

    def __init__(self, proxy: dict, seed: int = 0):
        self.proxy, self.student, self.seed = proxy, new_student(seed), seed
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=LR, weight_decay=1e-3)

    def run(self, batch) -> None:
        adapter, encoder = self.proxy["adapter"], self.proxy["encoder"]
        size = len(batch.prompts)
        latents = adapter.prepare_latents(size, RES, RES, generator=step_generator(self.seed, batch.step, stream=1))
        scheduler = adapter.new_scheduler()
        for t in adapter.set_timesteps(scheduler, STEPS, RES, RES):
            ids = encoder.tokenize(batch.prompts)
            with torch.no_grad():
                teacher = self.proxy["teacher"](ids)[0]
                encoder.encode_clip(batch.prompts)  # the pooled vector is computed, then zeroed (paper, FLUX)
                v_t = adapter.velocity(latents, t, TextEmbeds(teacher), batch.guidance, height=RES, width=RES)
            v_s = adapter.velocity(latents, t, TextEmbeds(self.student(ids)[0]), batch.guidance, height=RES, width=RES)
            vision_loss(v_s, v_t).mean().backward()
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            latents = adapter.step(scheduler, v_t, t, latents)


class Ours:
    """`train_step` as `t5-compact train` runs it, with the given teacher source and trajectory pool / cache."""

    def __init__(self, proxy: dict, teacher: TeacherSource, seed: int = 0, pool=None, cache=None):
        self.student = new_student(seed)
        optimizer = torch.optim.AdamW(self.student.parameters(), lr=LR, weight_decay=1e-3)
        self.ctx = StepContext(
            NoAccelerator(),
            proxy["adapter"],
            proxy["encoder"],
            teacher,
            self.student,
            optimizer,
            torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
            num_steps=STEPS,
            seed=seed,
            pool=pool,
            trajectory_cache=cache,
        )

    def run(self, batch) -> None:
        train_step(self.ctx, batch)


def record_pool(proxy: dict, teacher: TeacherSource, pool: TrajectoryPool, train: list[str], folder: Path) -> float:
    """Record `pool` for every training prompt (fp32); returns the seconds it took."""
    entries = pool.entries({RES: train})
    meta = {"bench": pool.size}
    start = time.perf_counter()
    write_trajectories(
        folder,
        entries,
        lambda chunk: record_trajectories(
            proxy["adapter"], teacher, None, pool, chunk, STEPS, torch.float32, torch.device("cpu")
        ),
        meta,
        batch_size=8,
    )
    merge_indices(folder, meta)
    return time.perf_counter() - start


GUIDANCE = [2.0, 3.5, 5.0]


def evaluate(proxy: dict, student, heldout, null_loss: dict) -> dict:
    losses = heldout_vision_loss(
        proxy["adapter"], student, heldout, num_steps=STEPS, height=RES, width=RES, guidance=3.5, batch_size=8
    )
    fidelity = prompt_fidelity(losses, null_loss)
    return {"L_vision": statistics.mean(losses.values()), "fidelity": statistics.mean(fidelity.values())}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    proxy = build_proxy()
    flops = flop_split(proxy)
    split = flops["reference_split"]
    print(
        "proxy FLOP split per reference update: "
        + ", ".join(f"{phase} {100 * share:.1f}%" for phase, share in split.items())
    )
    train, heldout_prompts = prompts()
    encoder, teacher_t5 = proxy["encoder"], proxy["teacher"]
    schedule = PromptSchedule(
        [Stage("bench", [Source("objects", train)], 10**6, RES)], BATCH, GUIDANCE, seed=args.seed
    )
    total = args.rounds * args.per_round
    batches = [schedule.batch(i) for i in range(total)]
    tmp = Path(tempfile.mkdtemp(prefix="train_bench_"))
    write_teacher_cache(
        tmp / "embeddings",
        train + [p for ps in heldout_prompts.values() for p in ps],
        lambda b: encoder.encode(b, teacher_t5),
        {"bench": 1},
    )
    cached = TeacherSource(encoder, cache=TeacherCache(tmp / "embeddings"), zero_pooled=True)
    heldout = build_heldout(
        heldout_prompts,
        encoder,
        teacher_embeds={c: cached(ps, torch.device("cpu")) for c, ps in heldout_prompts.items()},
    )
    null = NullStudent(mean_embedding(train, lambda b: cached(b, torch.device("cpu")).t5))
    null_loss = heldout_vision_loss(
        proxy["adapter"], null, heldout, num_steps=STEPS, height=RES, width=RES, guidance=3.5, batch_size=8
    )
    record_seconds = {}
    variants = {
        "reference": Reference(proxy, args.seed),
        "on_the_fly": Ours(proxy, TeacherSource(encoder, teacher_t5, zero_pooled=True), args.seed),
        "embedding_cache": Ours(proxy, cached, args.seed),
    }
    for size in args.pools:
        pool = TrajectoryPool(size, args.seed, GUIDANCE)
        record_seconds[size] = record_pool(proxy, cached, pool, train, tmp / f"pool{size}")
        variants[f"pool {size}"] = Ours(proxy, cached, args.seed, pool, TrajectoryCache(tmp / f"pool{size}"))
    largest = max(args.pools)
    variants[f"pool {largest}, on the fly"] = Ours(
        proxy, cached, args.seed, TrajectoryPool(largest, args.seed, GUIDANCE)
    )
    names = list(variants)
    start_quality = evaluate(proxy, variants["reference"].student, heldout, null_loss)
    curves = {n: [{"trajectories": 0, "seconds": 0.0, **start_quality}] for n in names}
    chunk_seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        work = batches[r * args.per_round : (r + 1) * args.per_round]
        for name in order:
            begin = time.perf_counter()
            for batch in work:
                variants[name].run(batch)
            chunk_seconds[name].append((time.perf_counter() - begin) / len(work))
        for name in names:
            quality = evaluate(proxy, variants[name].student, heldout, null_loss)
            seconds = curves[name][-1]["seconds"] + chunk_seconds[name][-1] * len(work)
            curves[name].append({"trajectories": (r + 1) * args.per_round, "seconds": seconds, **quality})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {curves[n][-1]['fidelity']:.3f}" for n in names))
    return report(args, flops, null_loss, record_seconds, curves, chunk_seconds)


def _flops_per_trajectory(name: str, flops: dict) -> int:
    per = flops["per_trajectory"]
    if name.startswith("pool") and "on the fly" not in name:
        return per["trajectory_cache"]
    if name.startswith("pool"):
        return per["embedding_cache"]
    return per[name]


def report(args, flops, null_loss, record_seconds, curves, chunk_seconds) -> dict:
    target = curves["reference"][-1]["fidelity"]
    ref_seconds = curves["reference"][-1]["seconds"]
    ref_flops = curves["reference"][-1]["trajectories"] * flops["per_trajectory"]["reference"]
    rows = {}
    for name, curve in curves.items():
        per_traj = _flops_per_trajectory(name, flops)
        size = int(name.split()[1].rstrip(",")) if name.startswith("pool") and "on the fly" not in name else 0
        record_s = record_seconds.get(size, 0.0)
        record_flops = size * 16 * flops["record_per_trajectory"] / BATCH if size else 0
        reached = next((p for p in curve[1:] if p["fidelity"] >= target), None)
        times = chunk_seconds[name]
        rows[name] = {
            "median_s_per_trajectory": statistics.median(times),
            "spread_s_per_trajectory": [min(times), max(times)],
            "flops_per_trajectory": per_traj,
            "final_L_vision": curve[-1]["L_vision"],
            "final_fidelity": curve[-1]["fidelity"],
            "record_seconds": record_s,
            "record_flops": record_flops,
            "reaches_reference_at_s": None if reached is None else reached["seconds"],
            "time_to_reference_quality": None if reached is None else reached["seconds"] / ref_seconds,
            "time_to_reference_quality_with_recording": None
            if reached is None
            else (reached["seconds"] + record_s) / ref_seconds,
            "flops_to_reference_quality": None if reached is None else reached["trajectories"] * per_traj / ref_flops,
        }
    return {
        "setup": {
            "rounds": args.rounds,
            "trajectories_per_round": args.per_round,
            "batch": BATCH,
            "steps": STEPS,
            "resolution": RES,
            "threads": args.threads,
            "seed": args.seed,
            "training_prompts": 16,
            "null_L_vision": null_loss,
        },
        "flops": flops,
        "variants": rows,
        "curves": curves,
    }


def markdown(result: dict) -> str:
    split = result["flops"]["reference_split"]
    lines = [
        "Proxy FLOP split per reference update: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in split.items()),
        "",
        "| loop | s / trajectory (median, range) | FLOPs / traj. vs ref. | final fidelity | time to ref. quality "
        "| with recording | FLOPs to ref. quality |",
        "|---|---|---|---|---|---|---|",
    ]
    ref_flops = result["variants"]["reference"]["flops_per_trajectory"]

    def ratio(x):
        return "not reached" if x is None else f"{x:.2f}×"

    variants = result["variants"]
    for name, r in variants.items():
        lo, hi = r["spread_s_per_trajectory"]
        lines.append(
            f"| {name} | {r['median_s_per_trajectory']:.3f} ({lo:.3f}–{hi:.3f}) "
            f"| {r['flops_per_trajectory'] / ref_flops:.2f}× | {r['final_fidelity']:.3f} "
            f"| {ratio(r['time_to_reference_quality'])} | {ratio(r['time_to_reference_quality_with_recording'])} "
            f"| {ratio(r['flops_to_reference_quality'])} |"
        )
    same = [("reference", "on_the_fly")] + [
        (n, f"{n}, on the fly") for n in variants if f"{n}, on the fly" in variants
    ]
    floor = max(abs(variants[a]["final_fidelity"] - variants[b]["final_fidelity"]) for a, b in same)
    pairs = ", ".join(f"{a} vs {b}" for a, b in same)
    lines += [
        "",
        f"Noise floor: loops that compute the same updates and differ only in their random streams (dropout, the "
        f"order of floating-point sums) end {floor:.3f} apart in final fidelity ({pairs}"
        "); differences in fidelity below that are not findings.",
    ]
    return "\n".join(lines) + "\n"


def summarize(results: list[dict]) -> str:
    """One table over several seeds' results: the median and range of each figure; "reached" counts the seeds in
    which a loop reached that seed's reference final fidelity (the median treats a miss as never)."""
    seeds = [r["setup"].get("seed", 0) for r in results]
    lines = [
        f"Seeds {', '.join(map(str, seeds))}: median (min–max) over the seeds.",
        "",
        "| loop | s / trajectory | final fidelity | time to ref. quality (reached) | with recording |",
        "|---|---|---|---|---|",
    ]

    def stats(values, fmt):
        finite = sorted(v if v is not None else float("inf") for v in values)
        med = statistics.median(finite)
        cell = "not reached" if med == float("inf") else fmt(med)
        known = [v for v in finite if v != float("inf")]
        return f"{cell} ({fmt(known[0])}–{fmt(known[-1])})" if len(known) > 1 else cell

    for name in results[0]["variants"]:
        rows = [r["variants"][name] for r in results]
        reached = f"({sum(row['time_to_reference_quality'] is not None for row in rows)}/{len(rows)})"
        lines.append(
            f"| {name} | {stats([x['median_s_per_trajectory'] for x in rows], lambda v: f'{v:.2f} s')} "
            f"| {stats([x['final_fidelity'] for x in rows], lambda v: f'{v:.3f}')} "
            f"| {stats([x['time_to_reference_quality'] for x in rows], lambda v: f'{v:.2f}×')} {reached} "
            f"| {stats([x['time_to_reference_quality_with_recording'] for x in rows], lambda v: f'{v:.2f}×')} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in result["curves"].items():
        per = result["variants"][name]["flops_per_trajectory"]
        axes[0].plot([p["seconds"] for p in curve], [p["fidelity"] for p in curve], marker=".", label=name)
        axes[1].plot([p["trajectories"] * per for p in curve], [p["fidelity"] for p in curve], marker=".")
    target = result["variants"]["reference"]["final_fidelity"]
    for ax, xlabel in zip(axes, ("training wall time (s, CPU)", "training FLOPs"), strict=True):
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out prompt-specific fidelity")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Time to quality on the FLUX-split proxy (dotted: the reference loop's final fidelity)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=4, help="trajectories per variant per round")
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="student init, batches, noise, dropout and pools")
    parser.add_argument("--out", type=Path, default=Path("docs/results/train_bench/seed-0"))
    parser.add_argument(
        "--summarize", type=Path, nargs="+", help="train_bench.json files of several seeds: write summary.md to --out"
    )
    args = parser.parse_args(argv)
    if args.summarize:
        table = summarize([json.loads(path.read_text()) for path in args.summarize])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.md").write_text(table)
        print(table)
        return 0
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_bench.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.out / "train_bench.md").write_text(table)
    plot(result, args.out / "train_bench.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
