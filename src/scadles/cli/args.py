"""Command-line arguments shared by every sub-command that reads a config."""

from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Add the optional CONFIG positional and the repeatable --set KEY=VALUE."""
    p.add_argument("config", nargs="?", default=None, help="TOML config (default: the demo)")
    add_set_arg(p, "override a config key, e.g. --set devices.count=32 (repeatable)")


def add_set_arg(p: argparse.ArgumentParser, help: str) -> None:
    """Add the repeatable --set KEY=VALUE, collected in args.overrides."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )
