"""``scadles compare``: run several policies on the same streams and seeds; compare them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args
from scadles.cli.diverged import diverged_status
from scadles.cli.progress import console, progress_bar
from scadles.cli.run import check_checkpoint_every
from scadles.cli.sweep import add_reuse_args, check_reuse_args, say
from scadles.config.load import defaults_line
from scadles.report.tables import comparison_table_rich
from scadles.training.compare import check_policies, compare_policies
from scadles.training.rundir import check_out


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
    c.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="write DIR/<policy>/checkpoint.pt atomically every N steps",
    )
    add_reuse_args(
        c,
        "reuse the policies of --out finished under the same config, continue an unfinished "
        "one from its checkpoint, run the rest",
    )
    c.add_argument("--quiet", action="store_true", help="no progress bar or table")
    c.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def main(args: argparse.Namespace) -> int:
    """Run the comparison into --out; print its table unless quiet; return the exit status."""
    check_reuse_args(args)
    check_checkpoint_every(args.checkpoint_every)
    cfg = api.load_config(args.config, args.overrides)
    policies = check_policies(args.policies, key="--policies")
    check_out(args.out, resume=args.resume, force=args.force)  # refuse before saying more
    if (line := defaults_line(cfg, args.config)) is not None:
        say(line)
    con = console()
    with progress_bar(args.quiet, con) as progress:
        comp = compare_policies(  # what scadles.compare runs, with a line per policy reused
            cfg,
            args.out,
            policies,
            progress=progress,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            force=args.force,
            notify=say,
        )
    if not args.quiet:
        con.print(comparison_table_rich(comp))
        con.print(f"wrote {args.out / 'comparison.md'} and the plots in {args.out}")
    return diverged_status(comp["runs"])
