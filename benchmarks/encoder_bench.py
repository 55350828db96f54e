"""Encoder benchmark of the core issue: the T5-XXL encoder geometry vs T5-Base + projector, bf16, 2 threads.

Three encoders, alternating call by call in one process (run alone, the small model sits in cache and looks
faster): the T5-XXL encoder (random weights of its exact geometry, built without slow init), our
`T5CompactEncoder` in the Base geometry, and the same weights run by plain transformers (`T5EncoderModel` +
`torch.nn.Sequential` projector) to show our class is not slower. Parameters, bytes on disk (bf16), peak RSS (each
model in a fresh process), median encode latency at 77 and 512 tokens (batch 1). Prints a table and JSON and writes
`encoder_bench.{md,json,png}`. A thin script over `t5_compact.bench`; `t5-compact bench` is the general tool.

    python benchmarks/encoder_bench.py --out docs/results
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from t5_compact.bench import BenchSettings, build_encoder, parse_encoders, run_bench, to_markdown, write_outputs
from t5_compact.bench.latency import make_input_ids, time_encoders

ENCODERS = "t5-xxl,base,plain:base"
# Issue 2 item 8's baseline on this kind of machine (2 cores, bf16, plain transformers).
BASELINE = (
    "T5-XXL 4.76 B, 9.52 GB, 10.5 s / 512 tokens, 2.8 s / 77; T5-Base + projector 129.6 M, 0.26 GB, 0.32 s, 0.083 s"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per model and length (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per model and length first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--lengths", default="77,512", help="token lengths")
    parser.add_argument("--pair-repeats", type=int, default=20, help="timed calls of ours vs plain transformers")
    parser.add_argument("--encoders", default=ENCODERS, help=argparse.SUPPRESS)  # tests swap in tiny geometries
    parser.add_argument("--no-memory", action="store_true", help="skip peak RSS (a fresh process per model)")
    parser.add_argument("--out", default="docs/results", help="folder for encoder_bench.{md,json,png}")
    return parser.parse_args(argv)


def compare_with_plain(encoders: str, lengths: list[int], repeats: int, threads: int) -> tuple[bool, list[str]]:
    """Our encoder vs its plain-transformers twin (same seed, so same weights): are the outputs identical, and the
    median latency of each over `repeats` alternating calls (these two are cheap, so more repeats than above)."""
    specs = parse_encoders(encoders)
    ours = next(s for s in specs if s.kind == "compact")
    twin = next(s for s in specs if s.kind == "plain")
    torch.set_num_threads(threads)
    models = {"ours": build_encoder(ours, torch.bfloat16), "plain": build_encoder(twin, torch.bfloat16)}
    ids = make_input_ids(models["ours"].config.vocab_size, 77, 1, 0, "cpu")
    with torch.inference_mode():
        same = torch.equal(models["ours"](input_ids=ids)[0], models["plain"](input_ids=ids)[0])
    timings = time_encoders(models, [(length, 1) for length in lengths], repeats=repeats, warmup=2)
    lines = [f"Same weights, identical outputs (ours vs plain transformers): {same}."]
    for mine, plain in zip(timings["ours"], timings["plain"], strict=True):
        lines.append(
            f"{mine.length} tokens, median of {repeats} alternating calls: ours {mine.median:.4f} s, plain "
            f"transformers {plain.median:.4f} s (ours / plain = {mine.median / plain.median:.3f}; CPU time "
            f"{mine.cpu_median:.4f} s vs {plain.cpu_median:.4f} s)"
        )
    return same, lines


def main(args: argparse.Namespace) -> int:
    command = "python benchmarks/encoder_bench.py " + shlex.join(sys.argv[1:]) if __name__ == "__main__" else ""
    lengths = [int(x) for x in args.lengths.split(",")]
    settings = BenchSettings(
        encoders=parse_encoders(args.encoders),
        dtype="bf16",
        lengths=lengths,
        batch_sizes=[1],
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        memory=not args.no_memory,
        command=command.strip() or "python benchmarks/encoder_bench.py",
    )
    result = run_bench(settings)
    same, lines = compare_with_plain(args.encoders, lengths, args.pair_repeats, args.threads)
    result.meta["ours_vs_plain"] = lines
    result.meta["issue_baseline"] = BASELINE
    paths = write_outputs(result, args.out, stem="encoder_bench")
    extra = "\n## Our class vs plain transformers (same weights)\n\n" + "\n".join(f"- {x}" for x in lines)
    extra += f"\n\nBaseline quoted in issue 2 item 8 (same kind of machine): {BASELINE}.\n"
    paths["md"].write_text(to_markdown(result, chart=paths["png"].name) + extra)
    print(paths["md"].read_text())
    print(result.to_json())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
