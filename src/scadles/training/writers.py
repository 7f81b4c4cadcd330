"""Where a run's step and eval records go: JSONL files, lists, both, or nowhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from scadles.report.records import JsonlWriter
from scadles.textfile import read_text


class Writer(Protocol):
    """Anything records can be written to."""

    def write(self, obj: Any, /) -> None:
        """Write one record."""

    def close(self) -> None:
        """Flush and close."""


class Discard:
    """A writer that keeps nothing (ranks other than 0 in real mode)."""

    def write(self, obj: object) -> None:
        """Drop obj."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> Discard:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class Keep:
    """A writer that keeps every record in a list (runs with no output folder)."""

    def __init__(self, into: list[Any]) -> None:
        self.into = into

    def write(self, obj: Any) -> None:
        """Keep obj."""
        self.into.append(obj)

    def close(self) -> None:
        """Nothing to close."""


class Tee:
    """Write each record to two writers."""

    def __init__(self, first: Writer, second: Writer) -> None:
        self.first, self.second = first, second

    def write(self, obj: Any) -> None:
        """Write obj to both."""
        self.first.write(obj)
        self.second.write(obj)

    def close(self) -> None:
        """Close both."""
        self.first.close()
        self.second.close()


def open_writers(
    out: Path | None, lead: bool, append: bool, kept: tuple[list[Any], list[Any]]
) -> tuple[Writer, Writer]:
    """Return the steps and evals writers: files in out (rank 0), lists in kept (no out), or
    writers that keep nothing (the other ranks)."""
    if out is None:
        return Keep(kept[0]), Keep(kept[1])
    if not lead:
        return Discard(), Discard()
    return (
        JsonlWriter(out / "steps.jsonl", append=append),
        JsonlWriter(out / "evals.jsonl", append=append),
    )


def truncate(path: Path, lines: int) -> None:
    """Keep the first `lines` lines of a JSONL file (records written after a checkpoint)."""
    kept = read_text(path, "resume").splitlines(keepends=True)[:lines] if path.is_file() else []
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)
