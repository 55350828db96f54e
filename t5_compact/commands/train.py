"""`t5-compact train`: step-following vision distillation of a compact T5 student (REFERENCE.md section 2)."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "Train a compact T5 student by step-following vision distillation (accelerate-ready)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` plus one flag per config key (see `t5_compact.training.config.TrainConfig`)."""
    from ..training.config import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument(
        "--plan", action="store_true", help="print estimated memory and FLOPs at real size; load and train nothing"
    )
    parser.add_argument("--gpu-memory", help="with --plan: the device memory to fit, e.g. 24GB")


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    """Parse train flags (diffusers-examples style: tests pass `input_args`)."""
    parser = argparse.ArgumentParser(prog="t5-compact train", description=HELP)
    add_arguments(parser)
    return parser.parse_args(input_args)


def main(args: argparse.Namespace) -> int:
    """Build the config (file + flags, validated before any model loads) and train."""
    from ..training.config import ConfigError, config_from_args
    from ..training.interrupt import TrainingInterrupted, graceful_stop

    try:
        config = config_from_args(args)
        if getattr(args, "plan", False):
            from ..costs.plan import make_plan, parse_memory, render

            limit = parse_memory(args.gpu_memory) if args.gpu_memory else None
            print(render(make_plan(config), limit))
            return 0
        from ..training.loop import train

        with graceful_stop():
            folder = train(config)
    except ConfigError as err:
        print(f"t5-compact train: error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"t5-compact train: {stop}", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"student written to {folder}")
    return 0


def run(args: argparse.Namespace) -> int:
    from . import run_reporting_errors

    return run_reporting_errors("train", main, args)


if __name__ == "__main__":
    sys.exit(run(parse_args()))
