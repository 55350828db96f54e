"""Sub-commands of the `t5-compact` CLI, one module each (see `t5_compact.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

# `--dtype` choices of the commands that load a compact encoder ("auto": the command's documented default).
DTYPES = ("auto", "fp32", "fp16", "bf16")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def check_positive(args: argparse.Namespace, *names: str, zero_ok: tuple[str, ...] = ()) -> None:
    """Raise `UsageError` naming the option if a numeric option given is not positive (or negative, for `zero_ok`)."""
    from ..errors import UsageError

    for name in (*names, *zero_ok):
        value = getattr(args, name, None)
        if value is not None and (value < 0 or (value == 0 and name not in zero_ok)):
            kind = "zero or positive" if name in zero_ok else "positive"
            raise UsageError(f"--{name.replace('_', '-')} must be {kind}, got {value}")


def check_output_file(path: str, suffixes: tuple[str, ...], option: str, expected: str | None = None) -> None:
    """Before any work: `path` has one of `suffixes`, is not a folder, and its folder exists (created if missing)."""
    from pathlib import Path

    from ..errors import UsageError

    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: expected {expected or 'a file name ending in ' + ' or '.join(suffixes)}")
    if out.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)


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
