"""`t5-compact export`: a student -> a shareable folder (weights, ComfyUI file, training record, model card)."""

from __future__ import annotations

import argparse

from . import run_reporting_errors

HELP = "Export a student for sharing: save_pretrained folder, model card, optional ComfyUI file and hub upload."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `t5-compact export`."""
    parser.add_argument("student", metavar="STUDENT", help="the student: folder (e.g. runs/x/student), file or hub id")
    parser.add_argument("out", metavar="OUT", help="output folder (config.json, model.safetensors, README.md)")
    parser.add_argument("--comfyui", action="store_true", help="also write OUT/<name>-comfyui.safetensors")
    parser.add_argument("--bench", metavar="BENCH_JSON", help="add this `t5-compact bench` result to the card")
    parser.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload OUT to this hub model repo")
    parser.add_argument("--private", action="store_true", help="create the hub repo as private")
    parser.add_argument("--license", default="apache-2.0", help="card license (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    """Export; exit code 2 with a one-line message for a bad student, output, bench file or hub access."""
    from ..export import PublishError

    return run_reporting_errors("export", _export, args, PublishError, FileExistsError)


def _export(args: argparse.Namespace) -> int:
    from ..export import export

    out = export(
        args.student,
        args.out,
        comfyui=args.comfyui,
        bench=args.bench,
        push_to_hub=args.push_to_hub,
        private=args.private,
        license=args.license,
        overwrite=args.overwrite,
    )
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")
    return 0
