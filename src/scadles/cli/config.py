"""``scadles config``: print the resolved configuration (TOML, or JSON with --json)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args
from scadles.config.load import config_to_dict, dump_toml


def add_parser(sub: Any) -> None:
    """Add the ``config`` sub-command."""
    g = sub.add_parser("config", help="print the resolved config (TOML, or JSON with --json)")
    add_config_args(g)
    g.add_argument("--json", action="store_true", help="print JSON instead of TOML")


def main(args: argparse.Namespace) -> int:
    """Print the config after defaults and --set overrides; return the exit status."""
    cfg = api.load_config(args.config, args.overrides)
    print(json.dumps(config_to_dict(cfg), indent=2) if args.json else dump_toml(cfg))
    return 0
