"""FLOPs per optimizer update of each training loop at real size, counted on the meta device (no weights, no GPU).

    python benchmarks/train_flops.py --out docs/results/train_flops            # FLUX.1-dev and SD3.5-Medium
    python benchmarks/train_flops.py --models tiny:flux --resolutions 32 --seq-len 16 --out /tmp/tiny

Builds the published FLUX.1-dev / SD3.5-Medium transformers, the T5-XXL teacher (and SD3's CLIP-L/G) and a
flan-t5-base student on the meta device and counts one update of each loop variant with
`torch.utils.flop_counter.FlopCounterMode` (see `t5_compact.costs.flops`), with and without gradient checkpointing
of the frozen transformer, at each resolution. Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from t5_compact.costs.flops import LOOPS, LoopFlops, count_loops
from t5_compact.costs.models import KNOWN_TRANSFORMERS, TINY_SOURCES, RunSpec, build_models, real_spec
from t5_compact.costs.update import UpdateShape

LABELS = {
    "reference": "reference loop (T5-XXL re-encode every update)",
    "on_the_fly": "ours, teacher on the fly (encode once per trajectory)",
    "embedding_cache": "ours, embedding cache (`cache-teacher`)",
    "trajectory_cache": "trajectory cache (no teacher forward)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choices = sorted(KNOWN_TRANSFORMERS) + sorted(TINY_SOURCES)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=choices,
        default=["black-forest-labs/FLUX.1-dev", "stabilityai/stable-diffusion-3.5-medium"],
    )
    parser.add_argument("--resolutions", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--seq-len", type=int, default=77, help="T5 tokens (the paper: 77)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--num-steps", type=int, default=20, help="timesteps per trajectory")
    parser.add_argument("--student-size", default="base", choices=("small", "base", "large", "xl"))
    parser.add_argument("--out", default="docs/results/train_flops", help="writes OUT.json and OUT.md")
    return parser.parse_args(argv)


def _models(name: str, student_size: str):
    if name in TINY_SOURCES:
        family = TINY_SOURCES[name][0]
        return build_models(RunSpec(family, {}, {}, True, name, family == "sd3")), 1
    with torch.device("meta"):
        return build_models(real_spec(name, student_size)), 8


def to_markdown(results: list[LoopFlops], args: argparse.Namespace) -> str:
    lines = [
        "# Training FLOPs per optimizer update (counted, meta device)",
        "",
        f"`python benchmarks/train_flops.py` - batch {args.batch}, {args.seq_len} T5 tokens, "
        f"{args.num_steps}-step trajectories, flan-t5-{args.student_size} student; TFLOP per update "
        "(x reference). `FlopCounterMode` counts matmuls and attention; elementwise ops count 0.",
        "",
        "| model | px | checkpointing | " + " | ".join(LOOPS) + " |",
        "|---|---|---|" + "---|" * len(LOOPS),
    ]
    for r in results:
        cells = [f"{r.per_update[k] / 1e12:.2f} ({r.ratios[k]:.3f}x)" for k in LOOPS]
        ckpt = "yes" if r.gradient_checkpointing else "no"
        lines.append(f"| {r.model} | {r.resolution} | {ckpt} | " + " | ".join(cells) + " |")
    lines += ["", "Parts of the reference update (TFLOP):", ""]
    lines += ["| model | px | checkpointing | T5-XXL (+CLIP) encode | teacher forward | student fwd+bwd |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in results:
        p = r.parts["reference"]
        ckpt = "yes" if r.gradient_checkpointing else "no"
        lines.append(
            f"| {r.model} | {r.resolution} | {ckpt} | {p['teacher_encode'] / 1e12:.3f} | "
            f"{p['teacher_forward'] / 1e12:.2f} | {p['student'] / 1e12:.2f} |"
        )
    lines += ["", "Loops: " + "; ".join(f"`{k}`: {v}" for k, v in LABELS.items()) + "."]
    lines += [
        'SD3: the teacher forward is two transformer passes (conditional and "" for classifier-free guidance) and '
        "the encode includes CLIP-L/G. FLUX: CLIP is not run (its pooled vector is zeroed, as in the paper)."
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[LoopFlops] = []
    for name in args.models:
        models, vae_factor = _models(name, args.student_size)
        for res in args.resolutions:
            for ckpt in (False, True):
                start = time.perf_counter()
                shape = UpdateShape(batch=args.batch, resolution=res, seq_len=args.seq_len)
                r = count_loops(
                    models, shape, gradient_checkpointing=ckpt, num_steps=args.num_steps, vae_scale_factor=vae_factor
                )
                results.append(r)
                ratios = ", ".join(f"{k} {v:.3f}x" for k, v in r.ratios.items())
                print(f"{name} {res}px ckpt={ckpt}: {r.per_update['reference'] / 1e12:.2f} TFLOP reference; {ratios}")
                print(f"  counted in {time.perf_counter() - start:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"settings": vars(args), "results": [r.as_dict() for r in results]}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(results, args))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
