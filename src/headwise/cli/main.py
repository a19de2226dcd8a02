"""`headwise COMMAND ...`: the console script's entry point.

Each subcommand lives in its own module with `add_parser(subparsers)`, which declares its options and sets
`run(args) -> int` as its default; add a new one to SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import bench, embed, explain, heads, train, tune
from .arguments import Parser

SUBCOMMANDS = (explain, bench, tune, embed, train, heads)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = Parser(
        prog="headwise", description="Exact multi-head attention for PyTorch, traced step by step."
    )
    parser.add_argument("--version", action="version", version=f"headwise {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `headwise` with `argv` (default: the command line); returns the exit code.

    Bad options exit with code 2 and a message (argparse's convention); a command returns 0 on success."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
