"""Run every other benchmark in bench/ in its own process and print one table of their figures.

Each benchmark's last line is its figure, ``ratio: X`` or ``seconds_per_sample: X``. Output streams
through as it comes; the table follows. Exit status 1 when a benchmark fails or ends without a
figure line, 2 for an unknown --only name.
Usage: python bench/all.py [--only NAME]... [--quick] [--dir FOLDER]
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FIGURE = re.compile(r"^(ratio|seconds_per_sample):\s*(\S+)\s*$")
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Result:
    """One benchmark's outcome: its figure (quantity, value) or why there is none."""

    script: str
    title: str
    quantity: str
    value: str
    seconds: float
    error: str  # empty when the benchmark passed


def scripts(folder: Path, only: Sequence[str]) -> list[Path]:
    """Return the benchmark scripts in folder (all but this one), filtered by --only names."""
    found = sorted(p for p in folder.glob("*.py") if p.name not in ("all.py", "__init__.py"))
    if not only:
        return found
    by_name = {p.stem: p for p in found}
    wanted = [n.removesuffix(".py") for n in only]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        known = ", ".join(by_name) or "none"
        raise ValueError(f"all.py: --only: unknown benchmark {unknown[0]!r}; known: {known}")
    return [by_name[n] for n in dict.fromkeys(wanted)]


def title(path: Path) -> str:
    """Return the first line of the script's docstring: what its figure measures."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    return doc.splitlines()[0].rstrip(".") if doc else path.stem


def accepts_quick(path: Path) -> bool:
    """Say whether the script mentions a --quick flag (only those get it passed through)."""
    return "--quick" in path.read_text(encoding="utf-8")


def run_one(path: Path, quick: bool) -> Result:
    """Run one benchmark with this interpreter, echo its stdout and parse its last line."""
    cmd = [sys.executable, str(path), *(["--quick"] if quick and accepts_quick(path) else [])]
    print(f"== {path.name}: {' '.join(cmd[1:])}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, cwd=path.parent.parent, env=env
    ) as p:
        assert p.stdout is not None
        last = ""
        for line in p.stdout:
            print(line, end="", flush=True)
            last = line.strip() or last
    seconds = time.perf_counter() - t0
    m = FIGURE.match(last)
    quantity, value = (m.group(1), m.group(2)) if m else ("-", "-")
    error = f"exit status {p.returncode}" if p.returncode else ""
    if not error and not m:
        error = "no 'ratio: X' or 'seconds_per_sample: X' last line"
    return Result(path.name, title(path), quantity, value, seconds, error)


def table(results: Sequence[Result]) -> str:
    """Return an aligned text table: script, figure, quantity, value, seconds, status."""
    head = ("script", "figure", "quantity", "value", "seconds", "status")
    rows = [head] + [
        (r.script, r.title, r.quantity, r.value, f"{r.seconds:.0f}", r.error or "ok")
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks and print the table; return 1 if any failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run only this benchmark (file stem, repeatable)")  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="pass --quick to the benchmarks that accept it")  # fmt: skip
    ap.add_argument("--dir", type=Path, default=HERE, help="folder of benchmark scripts")
    args = ap.parse_args(argv)
    try:
        paths = scripts(args.dir, args.only)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    results = [run_one(p, args.quick) for p in paths]
    print("\n" + table(results))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
