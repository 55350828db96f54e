"""`t5-compact convert`: any supported compact-encoder checkpoint to our folder or a ComfyUI single file."""

from __future__ import annotations

import argparse

from . import DTYPES, run_reporting_errors

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
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="default: keep the source's")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")


def run(args: argparse.Namespace) -> int:
    """Convert; exit code 2 with a one-line message for a bad source or destination."""
    return run_reporting_errors("convert", _convert, args, FileExistsError, ValueError)


def _convert(args: argparse.Namespace) -> int:
    """Convert, then report the size written."""
    from ..convert import convert

    out = convert(args.src, args.dst, format=args.format, dtype=args.dtype, overwrite=args.overwrite)
    files = [out] if out.is_file() else [f for f in out.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    print(f"wrote {out} ({size / 1e6:.1f} MB)")
    return 0
