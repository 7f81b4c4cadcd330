"""Run a grid of config overrides and tabulate the summaries (e.g. the paper's Table V).

Each point trains on the data its own config describes (one build per distinct `data` section
and `train.seed`, shared by the points that agree). With resume, a point is reused only when its
folder holds a summary of the very same resolved config; every other point runs again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scadles.config.load import Config, config_to_dict, parse_override, replace_key
from scadles.data.datasets import Dataset
from scadles.errors import UserError
from scadles.report.records import dumps, write_json
from scadles.report.tables import time_cell
from scadles.training import build, runner
from scadles.training.compare import finished_summary
from scadles.training.rundir import check_out

# notify(line): one line for the user about what a sweep or comparison reuses (the CLI prints it)
Notify = Callable[[str], None]

COLUMNS = (  # summary key, header, format
    ("compressed_fraction", "CNC", "{:.2f}"),
    ("final_accuracy", "final top-1", "{:.2%}"),
    ("final_top5", "final top-5", "{:.2%}"),
    ("time_to_target_s", "time to target (s)", "{:.1f}"),
    ("floats_to_target", "floats to target", "{:.3g}"),
    ("floats_sent", "floats sent", "{:.3g}"),
    ("sim_time_s", "sim time (s)", "{:.0f}"),
)


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """Parse `key=v1,v2,...` specs into (key, values), each value parsed like a --set value.

    `k1,k2=v1,v2` sets both keys to each value together (one axis, not a product).
    """
    grid = []
    for spec in specs:
        key, _, raw = spec.partition("=")
        if not key.strip() or not raw.strip():
            raise UserError(f"--grid: expected KEY=V1,V2,..., got {spec!r}")
        first = key.split(",")[0].strip()
        values = [parse_override(f"{first}={v.strip()}")[1] for v in raw.split(",") if v.strip()]
        grid.append((key.strip(), values))
    return grid


def _label(point: dict[str, Any]) -> str:
    return ",".join(f"{k.split(',')[0].split('.')[-1]}={v}" for k, v in point.items())


def _cell(summary: dict[str, Any], key: str, fmt: str) -> str:
    """Return one summary value formatted; a time to target as the comparison table shows it
    ('never', '0.0 (before training)', or the time with its evaluation bracket)."""
    if key == "time_to_target_s":
        return time_cell(summary)
    value = summary.get(key)
    return "—" if value is None else fmt.format(value)


def data_key(cfg: Config) -> str:
    """Return what the data set depends on: the `data` section and the seed it is drawn with."""
    return dumps({"data": config_to_dict(cfg)["data"], "seed": cfg.train.seed})


def run_sweep(
    cfg: Config,
    grid: list[tuple[str, list[Any]]],
    out: Path,
    progress: runner.Progress | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    notify: Notify | None = None,
) -> list[dict[str, Any]]:
    """Run every grid point into out/<point>/ and write sweep.json/.md.

    A non-empty `out` needs resume (reuse each point finished under the same resolved config,
    rerun the others) or force (rerun every point).
    """
    check_out(out, resume=resume, force=force)
    keys = [k for k, _ in grid]
    combos = itertools.product(*(v for _, v in grid))
    points = [dict(zip(keys, vals, strict=True)) for vals in combos]
    configs = []
    for point in points:  # validate the whole grid before running any of it
        c = cfg
        for keys_, v in point.items():
            for k in keys_.split(","):
                c = replace_key(c, k.strip(), v)
        configs.append(c)
    datasets: dict[str, Dataset] = {}
    rows = []
    for point, c in zip(points, configs, strict=True):
        where = out / _label(point)
        summary = finished_summary(where, c) if resume and not force else None
        if summary is not None:
            if notify is not None:
                notify(f"sweep: reusing {where} (finished, same config)")
        else:
            key = data_key(c)
            if key not in datasets:
                datasets[key] = build.dataset(c)
            summary = runner.run(c, where, progress=progress, data=datasets[key], force=True)
        rows.append({"params": point, "dir": str(where), "summary": summary})
    write_json(out / "sweep.json", {"grid": keys, "rows": rows})
    (out / "sweep.md").write_text(sweep_markdown(keys, rows))
    return rows


def sweep_markdown(keys: list[str], rows: list[dict[str, Any]]) -> str:
    """Return a markdown table: one row per grid point, the summary columns that matter."""
    head = [*keys, *(h for _, h, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["params"][k]) for k in keys]
        cells += [_cell(r["summary"], key, fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
