"""Sub-commands of the `t5-compact` CLI, one module each (see `t5_compact.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

# `--dtype` choices of the commands that load a compact encoder ("auto": the command's documented default).
DTYPES = ("auto", "fp32", "fp16", "bf16")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def one_line(err: BaseException) -> str:
    """The exception's message on one line (newlines and runs of spaces collapsed)."""
    return " ".join(str(err).split()) or type(err).__name__


def run_reporting_errors(
    command: str, func: Callable[[argparse.Namespace], int], args: argparse.Namespace, *extra: type[Exception]
) -> int:
    """`func(args)`, the one error path of every command: a bad encoder, pipeline, option or path (`USER_ERRORS`),
    an I/O error (`OSError`: unwritable output, missing folder, a folder where a file is expected) and `extra`
    become one line on stderr and exit code 2; Ctrl-C becomes one line and exit code 130. No traceback."""
    import sys

    from ..errors import USER_ERRORS

    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"t5-compact {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (*USER_ERRORS, OSError, *extra) as err:
        print(f"t5-compact {command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
