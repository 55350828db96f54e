"""`t5-compact eval`: fidelity of compact students to the T5-XXL teacher on held-out prompts, per category."""

from __future__ import annotations

import argparse
import shlex

HELP = "Evaluate students against the teacher per prompt category: L_vision, latents MSE, PSNR/SSIM, CLIP score."


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", required=True, help="FLUX.1 or SD3 pipeline: folder or hub id")
    parser.add_argument(
        "--teacher",
        default=None,
        help="teacher T5 encoder (folder or hub id, e.g. google/t5-v1_1-xxl); default: the pipeline's own",
    )
    parser.add_argument("--students", required=True, help="comma-separated [LABEL=]SOURCE compact encoders")
    parser.add_argument(
        "--prompts",
        required=True,
        help="a folder of prompt files or comma-separated files (.txt/.jsonl/.json/.csv); one category per file",
    )
    parser.add_argument("--out", default="results/eval", help="output folder (eval.md, eval.json, PNGs)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (default 20, as in training)")
    parser.add_argument("--seeds", type=_int_list, default=[0], help="noise seeds, comma-separated (default 0)")
    parser.add_argument("--guidance", type=float, default=3.5, help="FLUX-dev guidance / SD3 CFG scale (3.5)")
    parser.add_argument("--resolution", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--max-sequence-length", type=int, default=77, help="T5 tokens per prompt (default 77)")
    parser.add_argument("--max-prompts", type=int, default=8, help="first N prompts per category (0: all)")
    parser.add_argument("--batch-size", type=int, default=4, help="prompts per transformer call")
    parser.add_argument(
        "--zero-pooled", action="store_true", help="zero CLIP's pooled vector (the training setting) for both"
    )
    parser.add_argument(
        "--null-prompts",
        default=None,
        help="training prompt files / folder: the null student is the teacher's mean embedding over them "
        "(default: over the evaluated prompts)",
    )
    parser.add_argument("--clip-model", default=None, help="CLIP model (folder or hub id) for CLIP scores")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="compute dtype (default: fp32 on CPU, where bf16 rounding hides the differences between students; "
        "bf16 on CUDA)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--grid-rows", type=int, default=8, help="prompts per image grid")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def choose_dtype(args: argparse.Namespace) -> str:
    """`--dtype`, or the default for `--device` (fp32 on CPU, bf16 on CUDA); prints the choice."""
    if args.dtype:
        return args.dtype
    args.dtype = "bf16" if str(args.device).startswith("cuda") else "fp32"
    print(f"eval: computing in {args.dtype} (the default on {args.device}; --dtype to change)")
    return args.dtype


def command_line(args: argparse.Namespace) -> str:
    """The full command (every option spelled out) for the report."""
    parts = ["t5-compact", "eval", "--pipeline", args.pipeline]
    if args.teacher:
        parts += ["--teacher", args.teacher]
    parts += ["--students", args.students, "--prompts", args.prompts, "--steps", str(args.steps)]
    parts += ["--seeds", ",".join(map(str, args.seeds)), "--guidance", str(args.guidance)]
    parts += ["--resolution", str(args.resolution), "--max-sequence-length", str(args.max_sequence_length)]
    parts += ["--max-prompts", str(args.max_prompts), "--dtype", args.dtype, "--device", args.device]
    if args.zero_pooled:
        parts.append("--zero-pooled")
    if args.clip_model:
        parts += ["--clip-model", args.clip_model]
    if args.null_prompts:
        parts += ["--null-prompts", args.null_prompts]
    return shlex.join(parts + ["--out", args.out])


def run(args: argparse.Namespace) -> int:
    from . import run_reporting_errors

    return run_reporting_errors("eval", _eval, args)


def _eval(args: argparse.Namespace) -> int:
    from ..devices import check_device
    from ..errors import UsageError
    from ..evaluation import EvalSettings, parse_students, run_eval, write_report
    from . import check_positive

    if not args.seeds:
        raise UsageError("--seeds: give at least one seed")
    check_positive(args, "steps", "resolution", "max_sequence_length", "batch_size", "grid_rows", "threads")
    check_positive(args, zero_ok=("max_prompts", "guidance"))
    check_device(args.device)
    choose_dtype(args)
    settings = EvalSettings(
        pipeline=args.pipeline,
        students=parse_students(args.students),
        prompts=args.prompts,
        teacher=args.teacher,
        steps=args.steps,
        seeds=args.seeds,
        guidance=args.guidance,
        resolution=args.resolution,
        max_sequence_length=args.max_sequence_length,
        max_prompts=args.max_prompts or None,
        batch_size=args.batch_size,
        zero_pooled=args.zero_pooled,
        clip_model=args.clip_model,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        null_prompts=args.null_prompts,
        grid_rows=args.grid_rows,
        command=command_line(args),
        progress=not args.no_progress,
    )
    result = run_eval(settings)
    paths = write_report(result, args.out, grid_rows=args.grid_rows)
    print(paths["md"].read_text())
    print(f"wrote {len(paths)} files to {args.out}")
    return 0
