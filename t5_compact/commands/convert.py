"""`t5-compact convert`: any supported compact-encoder checkpoint to our folder or a ComfyUI single file."""

from __future__ import annotations

import argparse

HELP = "Convert a compact encoder (paper release, folder, file, hub id) to our folder or a ComfyUI .safetensors."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `t5-compact convert`."""
    parser.add_argument("src", metavar="SRC", help="compact encoder: folder, .safetensors/.pth file or hub id")
    parser.add_argument("dst", metavar="DST", help="output folder, or a .safetensors file for --format comfyui")
    parser.add_argument(
        "--format",
        choices=("folder", "comfyui"),
        default=None,
        help="folder: config.json + model.safetensors; comfyui: one .safetensors with the config in its metadata "
        "(default: comfyui if DST ends with .safetensors)",
    )
    parser.add_argument(
        "--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto", help="default: keep the source's"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")


def run(args: argparse.Namespace) -> int:
    """Convert; exit code 2 with a one-line message for a bad source or destination."""
    import sys

    from ..convert import convert
    from ..errors import USER_ERRORS

    try:
        out = convert(args.src, args.dst, format=args.format, dtype=args.dtype, overwrite=args.overwrite)
    except (*USER_ERRORS, FileExistsError, ValueError) as err:
        print(f"t5-compact convert: error: {err}", file=sys.stderr)
        return 2
    files = [out] if out.is_file() else [f for f in out.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    print(f"wrote {out} ({size / 1e6:.1f} MB)")
    return 0
