"""A static HTML page (DIR/index.html) for a run, comparison, sweep or reproduction directory,
with a sub-report per run or experiment it contains (`scadles report DIR`: scadles.cli.report).

Pages are plain files with relative links and image sources, so a folder can be copied or served
as is. Missing run plots are drawn first (matplotlib, Agg) from steps.jsonl and evals.jsonl.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scadles.errors import UserError
from scadles.report.html_parts import (
    Cell,
    Raw,
    esc,
    figures,
    fmt,
    link,
    nbytes,
    page,
    pct,
    pre_json,
    seconds,
    summary_cell,
    table,
)
from scadles.report.tables import HEADERS, NOTE, comparison_rows, speedup_line
from scadles.textfile import read_json

MARKERS = (  # the file that makes a directory each kind, checked in this order
    ("reproduction", "reproduction.json"),
    ("comparison", "comparison.json"),
    ("sweep", "sweep.json"),
    ("run", "summary.json"),
)
SWEEP_COLUMNS = (  # summary key, header, formatter
    ("final_accuracy", "final top-1", pct),
    ("best_accuracy", "best top-1", pct),
    ("time_to_target_s", "time to target (simulated s)", seconds),
    ("compressed_fraction", "compressed steps", pct),
    ("floats_sent", "floats sent", fmt),
    ("bytes_to_target", "bytes to target", nbytes),
    ("bytes_sent", "bytes sent (whole run)", nbytes),
    ("sim_time_s", "simulated time", seconds),
)


def kind(path: Path) -> str | None:
    """Return what a directory holds (run, comparison, sweep, reproduction), or None."""
    if not path.is_dir():
        return None
    return next((k for k, marker in MARKERS if (path / marker).is_file()), None)


def _load(path: Path) -> Any:
    """Read a JSON file, naming it on failure (missing, unreadable, not UTF-8 text, not JSON)."""
    return read_json(path, "report")


def _rel(target: Path, start: Path) -> str:
    """Return target relative to the folder start, with forward slashes."""
    return Path(os.path.relpath(target, start)).as_posix()


def _sub(parent: Path, child: Path, text: str) -> Raw:
    """Write child's report (linking back to parent's) and return a link to it."""
    _write(child, up=_rel(parent / "index.html", child))
    return link(_rel(child / "index.html", parent), text)


def _run(path: Path) -> list[str]:
    """Return a run's sections: summary, plots, resolved config."""
    if (path / "steps.jsonl").is_file() and not (path / "accuracy_vs_time.png").is_file():
        from scadles.report.plots import plot_run

        plot_run(path)
    summary = _load(path / "summary.json")
    if not isinstance(summary, dict):
        raise UserError(f"report: {path / 'summary.json'}: expected a JSON object")
    cells = [(k, summary_cell(k, v)) for k, v in summary.items()]
    body = ["<h2>Summary</h2>", table(("key", "value"), cells)]
    body += ["<h2>Plots</h2>", figures(path)]
    if (path / "config.json").is_file():
        body += ["<h2>Resolved config</h2>", pre_json(_load(path / "config.json"))]
    return body


def _comparison(path: Path) -> list[str]:
    """Return a comparison's sections: headline numbers, policy table, plots, sub-reports."""
    comp = _load(path / "comparison.json")
    runs = comp.get("runs") if isinstance(comp, dict) else None
    if not isinstance(runs, dict):
        raise UserError(f"report: {path / 'comparison.json'}: expected an object with 'runs'")
    dirs = {name: path / name for name in runs if kind(path / name) == "run"}
    complete = len(dirs) == len(runs) > 0
    complete = complete and all((d / "steps.jsonl").is_file() for d in dirs.values())
    if complete and not (path / "accuracy_vs_time.png").is_file():
        from scadles.report.plots import plot_comparison

        plot_comparison(path, dirs)
    if not all(isinstance(v, dict) for v in runs.values()):
        raise UserError(f"report: {path / 'comparison.json'}: every run must be an object")
    rows: list[list[Cell]] = []
    for name, row in zip(runs, comparison_rows(comp), strict=True):  # the tables' cells
        rows.append([_sub(path, dirs[name], name) if name in dirs else name, *row[1:]])
    delta = comp.get("accuracy_delta")
    head = [
        ("target_accuracy", pct(comp.get("target_accuracy"))),
        ("baseline", fmt(comp.get("baseline"))),
        ("candidate", fmt(comp.get("candidate"))),
        ("speedup [bracket]", speedup_line(comp)),
        ("accuracy_delta (final top-1)", "—" if delta is None else f"{100 * delta:+.2f} points"),
    ]
    return [
        table(("key", "value"), head),
        "<h2>Policies</h2>",
        table(list(HEADERS), rows),
        f'<p class="note">{esc(NOTE)}</p>',
        "<h2>Plots</h2>",
        figures(path),
    ]


def _sweep(path: Path) -> list[str]:
    """Return a sweep's table: one row per grid point, linked to its run's report."""
    sweep = _load(path / "sweep.json")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("rows"), list):
        raise UserError(f"report: {path / 'sweep.json'}: expected an object with 'rows'")
    keys = [str(k) for k in sweep.get("grid", [])]
    rows: list[list[Cell]] = []
    for r in sweep["rows"]:
        params, summary = r.get("params", {}), r.get("summary", {})
        where = path / Path(str(r.get("dir", ""))).name
        label = ",".join(f"{k}={params.get(k)}" for k in keys) or where.name
        cells: list[Cell] = [_sub(path, where, label) if kind(where) == "run" else label]
        cells += [fmt(params.get(k)) for k in keys]
        cells += [f(summary.get(key)) for key, _, f in SWEEP_COLUMNS]
        rows.append(cells)
    headers = ["run", *keys, *(h for _, h, _ in SWEEP_COLUMNS)]
    return [table(headers, rows), "<h2>Plots</h2>", figures(path)]


def _experiments(path: Path) -> dict[str, Path]:
    """Return the reportable subfolders of path/experiments, then of path, by name."""
    found: dict[str, Path] = {}
    for base in (path / "experiments", path):
        if base.is_dir():
            for child in sorted(base.iterdir()):
                if child.name not in found and kind(child) is not None:
                    found[child.name] = child
    return found


def _ratio(paper: Any, ours: Any) -> str:
    """Return ours / paper when both are numbers and paper is not zero, else a dash."""
    nums = isinstance(paper, int | float) and isinstance(ours, int | float)
    return f"{ours / paper:.3g}" if nums and paper != 0 else "—"


def _reproduction(path: Path) -> list[str]:
    """Return a reproduction's table (paper vs ours) and links to each experiment's report."""
    rows = _load(path / "reproduction.json")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"report: {path / 'reproduction.json'}: expected a list of objects")
    links = {name: _sub(path, d, name) for name, d in _experiments(path).items()}
    cells: list[list[Cell]] = []
    for r in rows:
        exp = str(r.get("experiment", ""))
        unit = f" {r['unit']}" if r.get("unit") else ""
        quantity = f"{r.get('quantity', '')}{unit}"
        paper, ours = r.get("paper"), r.get("ours")
        note = str(r.get("note") or "")
        cells.append(
            [links.get(exp, exp), quantity, fmt(paper), fmt(ours), _ratio(paper, ours), note]
        )
    headers = ("experiment", "quantity", "paper", "ours", "ratio", "note")
    body = [table(headers, cells), "<h2>Experiments</h2>"]
    items = "".join(f"<li>{a.html}</li>" for a in links.values())
    body.append(f"<ul>{items}</ul>" if items else "<p>No experiment folders.</p>")
    return [*body, "<h2>Plots</h2>", figures(path)]


SECTIONS: dict[str, Callable[[Path], list[str]]] = {
    "run": _run,
    "comparison": _comparison,
    "sweep": _sweep,
    "reproduction": _reproduction,
}


def _write(path: Path, up: str | None) -> Path:
    """Write path/index.html (and its sub-reports) and return its path."""
    what = kind(path)
    if what is None:
        raise UserError(f"report: {path}: not a run, comparison, sweep or reproduction directory")
    body = SECTIONS[what](path)
    out = path / "index.html"
    out.write_text(page(f"{what}: {path.resolve().name}", body, up), encoding="utf-8")
    return out


def write_report(path: Path) -> Path:
    """Write DIR/index.html for a run, comparison, sweep or reproduction directory; return it."""
    return _write(Path(path), up=None)
