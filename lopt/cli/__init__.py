"""The ``lopt`` command line: ``lopt tasks``, ``lopt run``, ``lopt train``, ``lopt selftrain``, ``lopt cache``, ..."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lopt.cli import (
    cache_command,
    card_command,
    eval_command,
    optlist_command,
    run_command,
    selftrain_command,
    tasks_command,
    train_command,
)

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lopt`` command (one sub-parser per command)."""
    parser = argparse.ArgumentParser(prog="lopt", description="Learned optimizers in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (tasks_command, run_command, train_command, eval_command, card_command, optlist_command,
                   selftrain_command, cache_command):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lopt`` command; returns the exit status.

    Errors a user can fix (unknown names, bad values, missing datasets) are printed as one
    line on stderr with exit status 2, not as a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"lopt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
