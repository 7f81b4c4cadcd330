"""``scadles run``: train one policy into --out, or continue a killed run with --resume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args
from scadles.cli.progress import console, progress_bar
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
    check_checkpoint_every(args.checkpoint_every)
    cfg = api.load_config(args.config, args.overrides)
    con = console()
    with progress_bar(args.quiet, con) as progress:
        summary = api.run(
            cfg,
            out=args.out,
            progress=progress,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume is not None,
            tensorboard=args.tensorboard,
        )
    if not args.quiet:
        con.print_json(json.dumps(summary))
    return 0
