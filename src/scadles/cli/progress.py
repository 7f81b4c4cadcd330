"""The consoles the commands write to: results on stdout, the rich progress bar on stderr (the
library never draws one), so `scadles run ... > summary.json` captures only the result."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from scadles.report.records import dumps
from scadles.training.runner import Progress as ProgressFn


def console() -> Console:
    """Return the console results print to: stdout (140 columns when it is not a terminal)."""
    return Console(stderr=False, width=None if sys.stdout.isatty() else 140)


def print_summary(con: Console, summary: dict[str, Any]) -> None:
    """Print a run's summary (summary.json's content) as strict JSON."""
    con.print_json(dumps(summary))


@contextmanager
def progress_bar(quiet: bool, con: Console | None = None) -> Iterator[ProgressFn | None]:
    """Yield a progress callback drawing a rich bar on stderr, or None when quiet.

    `con` is the results console of the caller; the bar never draws on it.
    """
    if quiet:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, int] = {}

    def update(done: float, total: float, text: str) -> None:
        key = text.split(" ", 1)[0]
        if key not in tasks:
            tasks[key] = bar.add_task(key, total=total)
        bar.update(tasks[key], completed=done, description=text)  # type: ignore[arg-type]

    with bar:
        yield update
