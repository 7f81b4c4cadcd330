"""Run the paper's experiments (configs/<track>), tabulate paper vs ours (`scadles reproduce`).

Writes, under --out DIR: one folder per experiment with its runs and `rows.json`, then
`reproduction.json` (a list of {"experiment", "setting", "quantity", "paper", "ours", "unit",
"metric", "note"}, the rows of every experiment run so far into DIR) and `reproduction.md` (the
same with ours / paper). Finished runs (summary.json present, same configuration) are never run
again, so an interrupted reproduction continues where it stopped. One DIR holds one track.
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
from scadles.reproduce.runs import METRIC_NAMES, ROW_KEYS, Options, Row, Runs
from scadles.reproduce.settings import DEFAULT_TRACK, NEEDS, available, check_track
from scadles.textfile import read_json

__all__ = ["ROW_KEYS", "collect", "configs_root", "default_config_dir", "markdown", "reproduce"]


def configs_root() -> Path:
    """Return the configs/ folder of the source checkout, else of the working directory."""
    here = Path(__file__).resolve().parents[3] / "configs"
    return here if (here / "paper").is_dir() else Path.cwd() / "configs"


def default_config_dir(track: str = DEFAULT_TRACK) -> Path:
    """Return configs/<the track's folder>: configs/paper for mnist1d."""
    return configs_root() / check_track(track)


def check_only(only: str | None, track: str, config_dir: Path) -> list[str]:
    """Return the experiments to run: the track's (those config_dir has a TOML for), or --only."""
    have = available(config_dir)
    if only is None:
        return have
    if only not in EXPERIMENTS:
        raise UserError(f"--only: unknown experiment {only!r}; known: {', '.join(EXPERIMENTS)}")
    if only not in have:
        raise UserError(
            f"--only {only}: track {track!r} has no {NEEDS[only]}.toml in {config_dir}; "
            f"it has: {', '.join(have)}"
        )
    return [only]


def _rows_file(path: Path) -> dict[str, Any]:
    """Return an experiment's rows.json (UserError with one line when it is not a JSON object
    holding a list of rows)."""
    data = read_json(path, "reproduce")
    if not isinstance(data, dict) or not isinstance(data.get("rows", []), list):
        raise UserError(f"reproduce: {path}: expected a JSON object with a list of rows")
    return data


def _check_out(out: Path, track: str) -> None:
    """Fail if out holds another track's rows (one reproduction.md per track)."""
    for name in EXPERIMENTS:
        path = out / name / "rows.json"
        if path.is_file():
            other = _rows_file(path).get("track", DEFAULT_TRACK)
            if other != track:
                raise UserError(
                    f"--track {track}: {out} holds the {other} track's results; use another --out"
                )


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
    track: str = DEFAULT_TRACK,
) -> list[Row]:
    """Run the experiments into out; write and return every row collected in out so far.

    track picks the stand-in data set: configs/paper (mnist1d) or configs/paper-fmnist
    (fmnist); config_dir, if given, replaces the track's folder. Experiments without a TOML
    there are skipped (and --only one of them fails, listing what the track has).
    Runs use `threads` torch threads (restored afterwards): these models are small, and two
    threads per process on a shared 2-core machine made a step 4-17x slower than one.
    """
    check_track(track)
    if not budget_scale > 0:
        raise UserError(f"budget_scale must be > 0, got {budget_scale}")
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    cdir = config_dir if config_dir is not None else default_config_dir(track)
    if not cdir.is_dir():
        raise UserError(f"reproduce: config folder not found: {cdir}")
    names = check_only(only, track, cdir)
    _check_out(out, track)
    opts = Options(out, quick, cdir, budget_scale, tuple(overrides), progress, track)
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
    skipped = [n for n in EXPERIMENTS if n not in names]
    if skipped and len(names) > 1:
        say(f"track {opts.track}: no TOML in {opts.config_dir} for {', '.join(skipped)}: skipped")
    for i, name in enumerate(names, start=1):
        say(f"[{i}/{len(names)}] {name}: start")
        t0 = time.perf_counter()
        rows = EXPERIMENTS[name](runs)
        write_json(
            out / name / "rows.json", {"rows": rows, "quick": opts.quick, "track": opts.track}
        )
        took = time.perf_counter() - t0
        say(f"[{i}/{len(names)}] {name}: done in {took:.0f} s, {len(rows)} rows")
    rows = collect(out)
    _write_list(out / "reproduction.json", rows)
    (out / "reproduction.md").write_text(markdown(rows, opts.track))
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
            rows += _rows_file(path).get("rows", [])
    return rows


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    v = float(x)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-2):
        return f"{v:.3g}"
    return f"{v:,.2f}".rstrip("0").rstrip(".") if "." in f"{v:.2f}" else f"{v}"


def markdown(rows: list[Row], track: str = DEFAULT_TRACK) -> str:
    """Return the rows as markdown tables, one per experiment, with ours / paper."""
    lines = [f"# Reproduction: the paper's numbers beside ours (track {track})", ""]
    head = "| setting | quantity | paper | ours | ours / paper | unit | metric | note |"
    current = None
    for r in rows:
        if r["experiment"] != current:
            current = r["experiment"]
            lines += ["", f"## {current}", "", head, "|---|---|---|---|---|---|---|---|"]
        p, o = r["paper"], r["ours"]
        ratio = f"{o / p:.2f}" if p not in (None, 0) and o is not None else "—"
        ratio = "—" if r["unit"] == "pp" else ratio  # a ratio of signed differences means little
        m = METRIC_NAMES.get(r.get("metric") or "", "—")
        cells = [r.get("setting") or "—", r["quantity"], _fmt(p), _fmt(o), ratio, r["unit"], m]
        lines.append("| " + " | ".join([*cells, r["note"]]) + " |")
    return "\n".join(lines) + "\n"
