"""``scadles report DIR``: write DIR/index.html for a run, comparison, sweep or reproduction."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scadles.report.html import write_report


def add_parser(sub: Any) -> None:
    """Add the ``report DIR`` sub-command."""
    r = sub.add_parser("report", help="write DIR/index.html: tables and plots of a results folder")
    r.add_argument("dir", type=Path, metavar="DIR", help="a run, comparison, sweep or reproduction")


def main(args: argparse.Namespace) -> int:
    """Write the report for args.dir and print its path; UserError propagates to the CLI."""
    print(write_report(args.dir))
    return 0
