"""`t5-compact bench`: compare T5-XXL and compact encoders: size, memory and encode latency, with ratios."""

from __future__ import annotations

import argparse
import shlex

HELP = "Benchmark encoders side by side: parameters, bytes on disk, peak memory, encode latency (markdown/JSON/PNG)."


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoders",
        default="t5-xxl,base",
        help="comma-separated [LABEL=]SOURCE: t5-xxl (T5-XXL geometry, random weights), small/base/large/xl "
        "(student geometries), a compact checkpoint (folder, .safetensors, hub id), a plain T5 encoder (folder or hub "
        "id, e.g. google/t5-v1_1-xxl), or plain:SOURCE (a compact checkpoint run by plain transformers). "
        "Default: t5-xxl,base",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"], help="compute dtype")
    parser.add_argument("--lengths", type=_int_list, default=[77, 256, 512], help="token lengths (77,256,512)")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 4], help="batch sizes (1,4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per encoder and shape (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per encoder and shape first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and token ids")
    parser.add_argument("--reference", default=None, help="label the ratios refer to (default: the T5-XXL entry)")
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the peak-memory measurement (one fresh process per encoder)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--out", default="results/bench", help="output folder for bench.md, bench.json, bench.png")


def command_line(args: argparse.Namespace) -> str:
    """The full command that reproduces this run (every option spelled out), for the report."""
    parts = ["t5-compact", "bench", "--encoders", args.encoders, "--device", args.device, "--dtype", args.dtype]
    parts += ["--lengths", ",".join(map(str, args.lengths)), "--batch-sizes", ",".join(map(str, args.batch_sizes))]
    parts += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    if args.reference:
        parts += ["--reference", args.reference]
    if args.no_memory:
        parts.append("--no-memory")
    return shlex.join(parts + ["--out", args.out])


def run(args: argparse.Namespace) -> int:
    from . import run_reporting_errors

    return run_reporting_errors("bench", _bench, args)


def _bench(args: argparse.Namespace) -> int:
    from ..bench import BenchSettings, run_bench, to_markdown, write_outputs
    from ..devices import check_device
    from . import check_positive

    check_positive(args, "repeats", "threads", zero_ok=("warmup",))
    check_device(args.device)

    settings = BenchSettings.from_strings(
        args.encoders,
        device=args.device,
        dtype=args.dtype,
        lengths=args.lengths,
        batch_sizes=args.batch_sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        seed=args.seed,
        memory=not args.no_memory,
        reference=args.reference,
        command=command_line(args),
        progress=not args.no_progress,
    )
    result = run_bench(settings)
    paths = write_outputs(result, args.out)
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
