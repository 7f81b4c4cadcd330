"""Command-line arguments shared by several sub-commands: CONFIG, --set and --threads."""

from __future__ import annotations

import argparse
import contextlib
import os

import torch

from scadles.errors import UserError


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Add the optional CONFIG positional and the repeatable --set KEY=VALUE."""
    p.add_argument("config", nargs="?", default=None, help="TOML config (default: the demo)")
    add_set_arg(p, "override a config key, e.g. --set devices.count=32 (repeatable)")


def add_set_arg(p: argparse.ArgumentParser, help: str) -> None:
    """Add the repeatable --set KEY=VALUE, collected in args.overrides."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_threads_arg(p: argparse.ArgumentParser, per: str = "the process") -> None:
    """Add --threads N: torch's intra-op threads (default: default_threads)."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help=f"torch threads for {per} (default: OMP_NUM_THREADS if set, else 1)",
    )


def default_threads() -> int:
    """Return OMP_NUM_THREADS when set to a count, else 1.

    [ours] These models are small: on a 2-core machine shared with other jobs a 60-step demo run
    took 3-5x longer on torch's 2 threads than on 1, since a thread spinning on a core another
    job holds stalls every step (README, "Threads"). A fixed default also keeps results
    repeatable: torch's reductions, and so the last bits of every number, depend on the thread
    count, so a count chosen from the load of the moment would make a resumed run differ.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) >= 1 else 1


def resolve_threads(threads: int | None) -> int:
    """Return --threads when given (UserError below 1), else default_threads()."""
    if threads is None:
        return default_threads()
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    return threads


def apply_threads(threads: int) -> None:
    """Make torch use `threads` intra-op threads (and inter-op ones, while that is allowed)."""
    torch.set_num_threads(threads)
    # only allowed before the first inter-op work; the intra-op threads are what counts
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
