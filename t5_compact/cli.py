"""`t5-compact` command line: one sub-command per module in `t5_compact.commands`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`; heavy imports
happen inside `run` so `t5-compact --help` stays fast. Every command runs through
`commands.run_reporting_errors`: a bad input is one line on stderr and exit code 2, Ctrl-C exit code 130.
Also runnable as `python -m t5_compact.cli` (which is what `accelerate launch -m t5_compact.cli train ...` uses).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "encode": "encode",
    "generate": "generate",
    "convert": "convert",
    "cache-teacher": "cache_teacher",
    "train": "train",
    "bench": "bench",
    "eval": "eval",
    "export": "export",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (`t5-compact encode: error: ...`) and exit code 2, like every error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command."""
    parser = _Parser(
        prog="t5-compact", description="Compact distilled T5 text encoders for FLUX.1 and Stable Diffusion 3."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"t5_compact.commands.{module_name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.add_argument("--verbose", action="store_true", help="also show the libraries' own logs and progress bars")
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: `sys.argv[1:]`) and run the chosen command; returns its exit code."""
    from .commands import run_reporting_errors

    args = build_parser().parse_args(argv)
    from .compat import require_transformers_5
    from .quiet import configure_output

    try:  # every command uses the model classes; on transformers 4 say so in one line, not a traceback
        require_transformers_5(f"t5-compact {args.command}")
    except ImportError as err:
        print(f"t5-compact {args.command}: error: {err}", file=sys.stderr)
        return 2
    configure_output(args.verbose)
    return int(run_reporting_errors(args.command, args._run, args) or 0)


if __name__ == "__main__":
    sys.exit(main())
