"""Exit status 1 for runs that stopped diverged: one line each on stderr (the files are written)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def diverged_status(summaries: Mapping[str, Mapping[str, Any]]) -> int:
    """Print `scadles: error: policy <name>: <why>` for each summary with `diverged` set;
    return 1 if any."""
    bad = {name: s["diverged"] for name, s in summaries.items() if s.get("diverged")}
    for name, why in bad.items():
        print(f"scadles: error: policy {name}: {why}", file=sys.stderr)
    return 1 if bad else 0
