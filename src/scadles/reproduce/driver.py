"""Run the paper's experiments (configs/paper), tabulate paper vs ours (`scadles reproduce`).

Writes, under --out DIR: one folder per experiment with its runs and `rows.json`, then
`reproduction.json` (a list of {"experiment", "quantity", "paper", "ours", "unit", "note"}, the
rows of every experiment run so far into DIR) and `reproduction.md` (the same with ours / paper).
Finished runs (summary.json present, same configuration) are never run again, so an interrupted
reproduction continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from scadles.errors import UserError
from scadles.report.records import write_json
from scadles.reproduce.experiments import EXPERIMENTS
from scadles.reproduce.runs import Options, Row, Runs

ROW_KEYS = ("experiment", "quantity", "paper", "ours", "unit", "note")


def default_config_dir() -> Path:
    """Return configs/paper of the source checkout, else of the working directory."""
    here = Path(__file__).resolve().parents[2] / "configs" / "paper"
    return here if here.is_dir() else Path.cwd() / "configs" / "paper"


def check_only(only: str | None) -> list[str]:
    """Return the experiments to run: all, or the one named by --only."""
    if only is None:
        return list(EXPERIMENTS)
    if only not in EXPERIMENTS:
        raise UserError(f"--only: unknown experiment {only!r}; known: {', '.join(EXPERIMENTS)}")
    return [only]


def reproduce(
    out: Path,
    *,
    quick: bool = False,
    only: str | None = None,
    progress: bool = False,
    budget_scale: float = 1.0,
    overrides: Sequence[str] = (),
    config_dir: Path | None = None,
    console: Console | None = None,
    threads: int = 1,
) -> list[Row]:
    """Run the experiments into out; write and return every row collected in out so far.

    Runs use `threads` torch threads (restored afterwards): these models are small, and two
    threads per process on a shared 2-core machine made a step 4-17x slower than one.
    """
    names = check_only(only)
    if not budget_scale > 0:
        raise UserError(f"budget_scale must be > 0, got {budget_scale}")
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    cdir = config_dir if config_dir is not None else default_config_dir()
    if not cdir.is_dir():
        raise UserError(f"reproduce: config folder not found: {cdir}")
    opts = Options(out, quick, cdir, budget_scale, tuple(overrides), progress)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _reproduce(opts, names, console or Console(highlight=False))
    finally:
        torch.set_num_threads(before)


def _reproduce(opts: Options, names: list[str], con: Console) -> list[Row]:
    """Run the named experiments (see reproduce)."""
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        if opts.progress:
            con.print(text, markup=False)

    runs = Runs(opts, say)
    t_all = time.perf_counter()
    for i, name in enumerate(names, start=1):
        say(f"[{i}/{len(names)}] {name}: start")
        t0 = time.perf_counter()
        rows = EXPERIMENTS[name](runs)
        write_json(out / name / "rows.json", {"rows": rows, "quick": opts.quick})
        took = time.perf_counter() - t0
        say(f"[{i}/{len(names)}] {name}: done in {took:.0f} s, {len(rows)} rows")
    rows = collect(out)
    _write_list(out / "reproduction.json", rows)
    (out / "reproduction.md").write_text(markdown(rows))
    took = time.perf_counter() - t_all
    say(f"wrote {out / 'reproduction.json'} and reproduction.md in {took:.0f} s")
    return rows


def _write_list(path: Path, rows: list[Row]) -> None:
    """Write the rows as a top-level JSON list (write_json takes objects only)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def collect(out: Path) -> list[Row]:
    """Return the rows of every experiment found in out, in the experiments' order."""
    rows: list[Row] = []
    for name in EXPERIMENTS:
        path = out / name / "rows.json"
        if path.is_file():
            rows += json.loads(path.read_text())["rows"]
    return rows


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    v = float(x)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-2):
        return f"{v:.3g}"
    return f"{v:,.2f}".rstrip("0").rstrip(".") if "." in f"{v:.2f}" else f"{v}"


def markdown(rows: list[Row]) -> str:
    """Return the rows as markdown tables, one per experiment, with ours / paper."""
    lines = ["# Reproduction: the paper's numbers beside ours", ""]
    current = None
    for r in rows:
        if r["experiment"] != current:
            current = r["experiment"]
            lines += [
                "",
                f"## {current}",
                "",
                "| quantity | paper | ours | ours / paper | unit | note |",
            ]
            lines.append("|---|---|---|---|---|---|")
        p, o = r["paper"], r["ours"]
        ratio = f"{o / p:.2f}" if p not in (None, 0) and o is not None else "—"
        ratio = "—" if r["unit"] == "pp" else ratio  # a ratio of signed differences means little
        cells = [r["quantity"], _fmt(p), _fmt(o), ratio, r["unit"], r["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
