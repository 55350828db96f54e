"""`t5-compact cache-teacher`: write the teacher's embeddings for every prompt of a training config to disk."""

from __future__ import annotations

import argparse
import sys

HELP = (
    "Encode every prompt of a training config with the teacher T5 (+ CLIP for SD3) into a sharded cache; with "
    "--trajectory_cache DIR --trajectories N also record the teacher's trajectories (under accelerate launch: in "
    "parallel)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The train flags (same config file); `--teacher_cache DIR` is where the cache goes."""
    from ..training.config import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--encode_batch_size", type=int, default=8, help="prompts per teacher forward pass")
    parser.add_argument(
        "--trajectory_batch_size", type=int, default=4, help="trajectories per transformer pass (with a cache)"
    )


def main(args: argparse.Namespace) -> int:
    from ..training.config import ConfigError, config_from_args

    try:
        config = config_from_args(args)
        if not config.teacher_cache:
            raise ConfigError("set teacher_cache (the cache folder) in the config or with --teacher_cache")
        for flag in ("encode_batch_size", "trajectory_batch_size"):
            if getattr(args, flag) <= 0:
                raise ConfigError(f"--{flag} must be a positive number of items per pass, got {getattr(args, flag)}")
        from ..training.cache import build_teacher_cache, build_trajectory_cache

        if config.trajectory_cache:
            added, total = build_trajectory_cache(config, batch_size=args.trajectory_batch_size)
            print(f"{config.trajectory_cache}: {added} trajectory(ies) added, {total} cached")
            return 0
        added, total = build_teacher_cache(config, encode_batch_size=args.encode_batch_size)
    except ConfigError as err:
        print(f"t5-compact cache-teacher: error: {err}", file=sys.stderr)
        return 2
    print(f"{config.teacher_cache}: {added} prompt(s) added, {total} cached")
    return 0


def run(args: argparse.Namespace) -> int:
    from . import run_reporting_errors

    return run_reporting_errors("cache-teacher", main, args)
