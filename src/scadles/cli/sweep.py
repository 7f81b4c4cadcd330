"""``scadles sweep``: run a grid of config overrides into --out; tabulate the summaries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args
from scadles.cli.progress import console, progress_bar
from scadles.config.load import defaults_line
from scadles.errors import UserError
from scadles.training.rundir import check_out
from scadles.training.sweep import parse_grid, run_sweep


def add_parser(sub: Any) -> None:
    """Add the ``sweep`` sub-command."""
    w = sub.add_parser("sweep", help="run a grid of overrides; tabulate the summaries")
    add_config_args(w)
    w.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2",
        help="a key and its values; several --grid make a cartesian product",
    )
    w.add_argument("--out", required=True, type=Path, help="output directory")
    add_reuse_args(w, "reuse the points of --out finished under the same config; rerun the rest")
    w.add_argument("--quiet", action="store_true", help="no progress bar or table")
    w.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def add_reuse_args(p: argparse.ArgumentParser, resume_help: str) -> None:
    """Add --resume and --force, the two ways to use a non-empty --out."""
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--force", action="store_true", help="replace what --out holds")


def check_reuse_args(args: argparse.Namespace) -> None:
    """Reject --resume together with --force."""
    if args.resume and args.force:
        raise UserError("--resume and --force exclude each other: give one")


def say(line: str) -> None:
    """Print one line for the user on stderr."""
    print(line, file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    """Run the grid (reusing what --resume allows); print sweep.md unless quiet; return 0."""
    check_reuse_args(args)
    cfg = api.load_config(args.config, args.overrides)
    grid = parse_grid(args.grid)
    check_out(args.out, resume=args.resume, force=args.force)  # refuse before saying more
    if (line := defaults_line(cfg, args.config)) is not None:
        say(line)
    con = console()
    with progress_bar(args.quiet, con) as progress:
        run_sweep(cfg, grid, args.out, progress, resume=args.resume, force=args.force, notify=say)
    if not args.quiet:
        con.print((args.out / "sweep.md").read_text())
    return 0
