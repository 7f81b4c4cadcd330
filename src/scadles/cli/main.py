"""The `scadles` command: run, compare, sweep, launch, config, report, produce, reproduce.

Each command is a module of this package with `add_parser(sub)` and `main(args) -> int`, a thin
layer over the public API (`scadles.api`). This module assembles the parser, sets up logging and
keeps the exit-status contract: 0 on success, 2 on bad input (one line on stderr naming the key,
the value and what is allowed), 130 when interrupted, 1 on any other failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from scadles.cli import compare, config, launch, produce, report, reproduce, run, sweep
from scadles.errors import UserError

COMMANDS: dict[str, ModuleType] = {  # in the order `scadles --help` lists them
    "run": run,
    "compare": compare,
    "sweep": sweep,
    "launch": launch,
    "config": config,
    "report": report,
    "produce": produce,
    "reproduce": reproduce,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scadles",
        description="Synchronous distributed SGD on streaming data at the edge (ScaDLES).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command: Callable[[argparse.Namespace], int] = COMMANDS[args.command].main
    try:
        return command(args)
    except UserError as e:
        print(f"scadles: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scadles: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
