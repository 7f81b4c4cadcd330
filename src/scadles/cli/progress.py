"""The rich progress bar the commands draw while runs train (the library never draws one)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from scadles.training.runner import Progress as ProgressFn


def console() -> Console:
    """Return the console the commands print to (140 columns when stdout is not a terminal)."""
    return Console(stderr=False, width=None if sys.stdout.isatty() else 140)


@contextmanager
def progress_bar(quiet: bool, con: Console) -> Iterator[ProgressFn | None]:
    """Yield a progress callback drawing a rich bar, or None when quiet."""
    if quiet:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=con,
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
