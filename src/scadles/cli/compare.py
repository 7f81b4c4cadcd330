"""``scadles compare``: run several policies on the same streams and seeds; compare them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args
from scadles.cli.progress import console, progress_bar
from scadles.report.tables import comparison_table_rich
from scadles.training.compare import check_policies


def add_parser(sub: Any) -> None:
    """Add the ``compare`` sub-command."""
    c = sub.add_parser("compare", help="run several policies on the same streams, compare them")
    add_config_args(c)
    c.add_argument("--out", required=True, type=Path, help="output directory")
    c.add_argument(
        "--policies",
        default="scadles,ddl",
        help="comma-separated policies to run (default: scadles,ddl)",
    )
    c.add_argument("--quiet", action="store_true", help="no progress bar or table")
    c.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def main(args: argparse.Namespace) -> int:
    """Run the comparison into --out; print its table unless quiet; return the exit status."""
    cfg = api.load_config(args.config, args.overrides)
    policies = check_policies(args.policies, key="--policies")
    con = console()
    with progress_bar(args.quiet, con) as progress:
        comp = api.compare(cfg, policies=policies, out=args.out, progress=progress)
    if not args.quiet:
        con.print(comparison_table_rich(comp))
        con.print(f"wrote {args.out / 'comparison.md'} and the plots in {args.out}")
    return 0
