"""``scadles run``: train one policy into --out, or continue a killed run with --resume.

A non-empty --out is refused unless --force (replace the run in it) or --resume (continue it);
the summary prints on stdout, the progress bar on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args
from scadles.cli.diverged import diverged_status
from scadles.cli.progress import console, print_summary, progress_bar
from scadles.config.load import defaults_line
from scadles.errors import UserError


def add_parser(sub: Any) -> None:
    """Add the ``run`` sub-command."""
    r = sub.add_parser("run", help="train one policy; write config, steps, evals, summary")
    add_config_args(r)
    r.add_argument("--out", type=Path, help="output directory (required unless --resume)")
    r.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="write DIR/checkpoint.pt atomically every N steps",
    )
    r.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the run in DIR from its checkpoint (config: DIR/config.json unless given)",
    )
    r.add_argument(
        "--force",
        action="store_true",
        help="replace the run in a non-empty --out (its run files only; other files stay)",
    )
    r.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard scalars to DIR/tensorboard (needs scadles[tensorboard])",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar or table")
    r.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def check_checkpoint_every(every: int | None) -> None:
    """Reject a checkpoint interval below one step."""
    if every is not None and every < 1:
        raise UserError(f"--checkpoint-every must be >= 1, got {every}")


def main(args: argparse.Namespace) -> int:
    """Train (or resume) one run; print its summary unless quiet; return the exit status."""
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise UserError(f"--out {args.out} differs from --resume {args.resume}")
        args.out = args.resume
        if args.config is None:
            args.config = str(args.resume / "config.json")
    if args.out is None:
        raise UserError("run: --out DIR is required (or --resume DIR)")
    if args.resume is not None and args.force:
        raise UserError("--resume and --force exclude each other: give one")
    check_checkpoint_every(args.checkpoint_every)
    cfg = api.load_config(args.config, args.overrides)
    if args.resume is None and (line := defaults_line(cfg, args.config)) is not None:
        print(line, file=sys.stderr)
    con = console()
    with progress_bar(args.quiet, con) as progress:
        summary = api.run(
            cfg,
            out=args.out,
            progress=progress,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume is not None,
            force=args.force,
            tensorboard=args.tensorboard,
        )
    if not args.quiet:
        print_summary(con, summary)
    return diverged_status({str(cfg.policy.name): summary})
