"""``scadles sweep``: run a grid of config overrides into --out; tabulate the summaries."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args
from scadles.cli.progress import console, progress_bar
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
    w.add_argument("--quiet", action="store_true", help="no progress bar or table")
    w.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def main(args: argparse.Namespace) -> int:
    """Run the grid points not yet run; print sweep.md unless quiet; return the exit status."""
    cfg = api.load_config(args.config, args.overrides)
    con = console()
    with progress_bar(args.quiet, con) as progress:
        run_sweep(cfg, parse_grid(args.grid), args.out, progress)
    if not args.quiet:
        con.print((args.out / "sweep.md").read_text())
    return 0
