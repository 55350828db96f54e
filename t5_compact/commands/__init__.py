"""Sub-commands of the `t5-compact` CLI, one module each (see `t5_compact.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

# `--dtype` choices of the commands that load a compact encoder ("auto": the command's documented default).
DTYPES = ("auto", "fp32", "fp16", "bf16")


def run_reporting_errors(
    command: str, func: Callable[[argparse.Namespace], int], args: argparse.Namespace, *extra: type[Exception]
) -> int:
    """`func(args)`; a bad encoder, pipeline or path (`USER_ERRORS`, plus `extra`) becomes a one-line message and
    exit code 2 instead of a traceback."""
    import sys

    from ..errors import USER_ERRORS

    try:
        return func(args)
    except (*USER_ERRORS, *extra) as err:
        print(f"t5-compact {command}: error: {err}", file=sys.stderr)
        return 2
