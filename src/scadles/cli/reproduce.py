"""``scadles reproduce``: run the paper's experiments (configs/<track>); tabulate paper vs ours."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scadles.cli.args import add_set_arg
from scadles.reproduce.driver import reproduce
from scadles.reproduce.experiments import EXPERIMENTS
from scadles.reproduce.settings import DEFAULT_TRACK, TRACKS


def add_parser(sub: Any) -> None:
    """Add the ``reproduce`` sub-command."""
    p = sub.add_parser(
        "reproduce", help="run the paper's experiments (configs/paper); tabulate paper vs ours"
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (resumable)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller budgets and grids, ResNet152 setting only (~15 min); the full run adds "
        "the VGG19 setting to Tables IV-VI and Figs. 6-7 (mnist1d track; fmnist runs ResNet152's)",
    )
    p.add_argument("--only", default=None, metavar="NAME", help=f"one of: {', '.join(EXPERIMENTS)}")
    tracks = ", ".join(f"{k} (configs/{v}/)" for k, v in TRACKS.items())
    p.add_argument(
        "--track",
        default=DEFAULT_TRACK,
        metavar="NAME",
        help=f"stand-in data set: {tracks}; default {DEFAULT_TRACK}. A track runs the "
        "experiments its folder has a TOML for (analytic ones always); one --out per track",
    )
    add_set_arg(p, "override a config key in every run (changes the runs: use another --out)")
    p.add_argument(
        "--configs",
        type=Path,
        default=None,
        help="folder of the experiment TOMLs (replaces the track's)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for the runs (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args: argparse.Namespace) -> int:
    """Run `scadles reproduce` from parsed arguments; return the exit status."""
    quiet = bool(getattr(args, "quiet", False))
    rows = reproduce(
        args.out,
        quick=bool(getattr(args, "quick", False)),
        only=getattr(args, "only", None),
        progress=not quiet,
        overrides=getattr(args, "overrides", None) or (),
        config_dir=getattr(args, "configs", None),
        threads=int(getattr(args, "threads", 1)),
        track=str(getattr(args, "track", DEFAULT_TRACK)),
    )
    if not quiet:
        print((args.out / "reproduction.md").read_text())
    return 0 if rows else 1
