"""`t5-compact generate`: images (or GIF videos) from a stock diffusers pipeline with a compact encoder in its T5
slot: FLUX, SD3, Chroma, PixArt, HiDream, LTX-Video, CogVideoX, ..."""

from __future__ import annotations

import argparse

from . import DTYPES, check_output_file, check_positive, run_reporting_errors

HELP = "Generate images or videos with a diffusers pipeline whose T5-XXL is replaced by a compact encoder."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `t5-compact generate`."""
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts (one image each)")
    parser.add_argument(
        "--pipeline", required=True, help="pipeline folder or hub id with a T5 slot (FLUX, SD3, Chroma, LTX, ...)"
    )
    parser.add_argument("--encoder", required=True, help="compact encoder: folder, .safetensors file or hub id")
    parser.add_argument(
        "-o", "--output", default="out.png", help="image file (a video pipeline writes .gif); numbered per prompt"
    )
    parser.add_argument("--frames", type=int, default=None, help="video frames (video pipelines; default theirs)")
    parser.add_argument("--steps", type=int, default=None, help="inference steps (default: the pipeline's)")
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--max-sequence-length",
        type=int,
        default=None,
        help="T5 tokens (default: the student's trained length from its training_info.json, else the pipeline's: "
        "FLUX 512, SD3 256)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument(
        "--cpu-offload", action="store_true", help="enable_model_cpu_offload(): components visit --device in turn"
    )


def output_paths(output: str, n: int) -> list[str]:
    """`output` for one image; `stem-0.ext`, `stem-1.ext`, ... for several."""
    from pathlib import Path

    if n == 1:
        return [output]
    path = Path(output)
    return [str(path.with_name(f"{path.stem}-{i}{path.suffix or '.png'}")) for i in range(n)]


def run(args: argparse.Namespace) -> int:
    """Generate; exit code 2 with a one-line message for a bad encoder, pipeline or width mismatch."""
    return run_reporting_errors("generate", _generate, args)


def _generate(args: argparse.Namespace) -> int:
    """Load the pipeline with the compact encoder, generate, save one image per prompt."""
    import sys
    import time
    from pathlib import Path

    import torch
    from PIL import Image

    from ..devices import check_device
    from ..pipeline_slots import default_max_sequence_length, find_t5_slot
    from ..pipelines import load_pipeline
    from ..training.info import trained_length
    from .encode import DEFAULT_MAX_LENGTH, report_truncation

    check_positive(args, "steps", "height", "width", "max_sequence_length", zero_ok=("guidance",))
    check_device(args.device)
    Image.init()
    writable = tuple(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE)
    for path in output_paths(args.output, len(args.prompts)):  # before generating, not after
        check_output_file(path, writable, "-o/--output", "an image file name (.png, .jpg, .webp, ...)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype
    if dtype == "auto":
        dtype = "fp32" if torch.device(device).type == "cpu" else "bf16"
    start = time.perf_counter()
    pipe = load_pipeline(args.pipeline, args.encoder, torch_dtype=dtype, device=None if args.cpu_offload else device)
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    pipe.set_progress_bar_config(disable=not sys.stderr.isatty())  # a bar only on a terminal
    loaded = time.perf_counter()
    max_length = args.max_sequence_length or trained_length(args.encoder)
    tokenizer = getattr(pipe, find_t5_slot(pipe).tokenizer, None)
    if tokenizer is not None:
        default = default_max_sequence_length(pipe) or DEFAULT_MAX_LENGTH
        report_truncation(tokenizer, list(args.prompts), max_length or default)
    call = {
        "num_inference_steps": args.steps,
        "height": args.height,
        "width": args.width,
        "guidance_scale": args.guidance,
        "max_sequence_length": max_length,
        "num_frames": args.frames,
    }
    call = {k: v for k, v in call.items() if v is not None}
    generator = torch.Generator("cpu").manual_seed(args.seed)
    output = pipe(prompt=list(args.prompts), generator=generator, **call)
    done = time.perf_counter()
    videos = getattr(output, "frames", None)
    results = output.images if videos is None else videos
    paths = output_paths(args.output if videos is None else str(Path(args.output).with_suffix(".gif")), len(results))
    for path, result in zip(paths, results, strict=True):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if videos is None:
            result.save(path)
            print(f"wrote {path} ({result.width}x{result.height})")
        else:
            result[0].save(path, save_all=True, append_images=result[1:], duration=100, loop=0)
            print(f"wrote {path} ({len(result)} frames, {result[0].width}x{result[0].height})")
    print(
        f"{type(pipe).__name__} on {device} in {pipe.dtype}: load {loaded - start:.1f} s, "
        f"generate {done - loaded:.1f} s"
    )
    return 0
