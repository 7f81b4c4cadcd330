"""PNG plots of runs and comparisons, read by streaming steps.jsonl / evals.jsonl.

Uses matplotlib's object API (``Figure`` rendered by Agg), so no pyplot state or GUI backend is
touched. Only the plotted columns are kept, thinned to at most ``MAX_POINTS`` points per run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from scadles.report.records import iter_jsonl

MAX_POINTS = 4000  # per run and column, after thinning
MAX_DEVICES = 32  # lines per batch-size panel


@dataclass(slots=True)
class _Series:
    """The plotted columns of one run, thinned on the fly by doubling the stride."""

    time: list[float] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    buffer: list[float] = field(default_factory=list)
    bytes_cum: list[float] = field(default_factory=list)
    batches: list[list[int]] = field(default_factory=list)  # per kept step, first MAX_DEVICES
    stride: int = 1
    seen: int = 0

    def add(self, row: dict[str, Any], bytes_cum: float) -> None:
        """Keep every stride-th row; halve the kept points when they exceed MAX_POINTS."""
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        self.time.append(_num(row.get("sim_time_s")))
        self.step.append(int(row.get("step", self.seen)))
        self.buffer.append(_num(row.get("buffer_total")))
        self.bytes_cum.append(bytes_cum)
        self.batches.append(list(row.get("batch_sizes") or [])[:MAX_DEVICES])
        if len(self.time) > MAX_POINTS:
            self.stride *= 2
            for name in ("time", "step", "buffer", "bytes_cum", "batches"):
                setattr(self, name, getattr(self, name)[::2])


@dataclass(frozen=True, slots=True)
class _Run:
    """One run's plotted data: its step series, eval points and target."""

    steps: _Series
    eval_time: list[float]
    eval_top1: list[float]
    target: float | None


def _num(x: Any) -> float:
    """Return x as a float, NaN for null."""
    return math.nan if x is None else float(x)


def _load(run_dir: Path) -> _Run:
    """Stream a run directory's JSONL files into the plotted columns."""
    series, total = _Series(), 0.0
    for row in iter_jsonl(run_dir / "steps.jsonl"):
        bytes_sent = row.get("bytes_sent")
        total += 0.0 if bytes_sent is None else float(bytes_sent)
        series.add(row, total)
    times: list[float] = []
    top1: list[float] = []
    if (run_dir / "evals.jsonl").is_file():
        for ev in iter_jsonl(run_dir / "evals.jsonl"):
            times.append(_num(ev.get("sim_time_s")))
            top1.append(_num(ev.get("top1")))
    return _Run(series, times, top1, _target(run_dir))


def _target(run_dir: Path) -> float | None:
    """Return the target accuracy recorded in the run's summary.json, if any."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("target_accuracy")
    except (json.JSONDecodeError, AttributeError):
        return None
    return None if value is None else float(value)


def _save(fig: Figure, path: Path) -> Path:
    """Write fig as a PNG and return its path."""
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def _lines(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    """Label an axes and show its legend and grid."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _accuracy(runs: dict[str, _Run], path: Path) -> Path:
    """Plot top-1 accuracy against simulated time, one line per run, with the target."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, run in runs.items():
        ax.plot(run.eval_time, run.eval_top1, marker=".", label=name)
    targets = {r.target for r in runs.values() if r.target is not None}
    for t in sorted(targets):
        ax.axhline(t, color="grey", linestyle="--", linewidth=1, label=f"target {t:.0%}")
    _lines(ax, "simulated time (s)", "top-1 accuracy", "Accuracy vs simulated time")
    return _save(fig, path)


def _buffer(runs: dict[str, _Run], path: Path) -> Path:
    """Plot total buffered samples against simulated time on a log scale (symlog shows zeros)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, run in runs.items():
        ax.plot(run.steps.time, run.steps.buffer, label=name)
    ax.set_yscale("symlog", linthresh=1.0)
    _lines(ax, "simulated time (s)", "samples held (all devices)", "Buffer occupancy")
    return _save(fig, path)


def _bytes(runs: dict[str, _Run], path: Path) -> Path:
    """Plot cumulative bytes sent against simulated time."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, run in runs.items():
        ax.plot(run.steps.time, run.steps.bytes_cum, label=name)
    _lines(ax, "simulated time (s)", "cumulative bytes sent", "Communication volume")
    return _save(fig, path)


def _batch_sizes(runs: dict[str, _Run], path: Path) -> Path:
    """Plot per-device batch sizes over steps: one panel per run, one line per device (<= 32)."""
    fig = Figure(figsize=(7, 3.2 * len(runs)))
    axes = fig.subplots(len(runs), 1, squeeze=False)[:, 0]
    for ax, (name, run) in zip(axes, runs.items(), strict=True):
        s = run.steps
        k = max((len(b) for b in s.batches), default=0)
        for d in range(k):
            ys = [b[d] if d < len(b) else math.nan for b in s.batches]
            ax.plot(s.step, ys, linewidth=0.8, alpha=0.8)
        _lines(ax, "step", "batch size", f"{name}: per-device batch sizes ({k} devices shown)")
    return _save(fig, path)


def plot_comparison(out_dir: Path, runs: dict[str, Path]) -> list[Path]:
    """Write the comparison PNGs (accuracy, buffer, bytes sent, batch sizes) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {name: _load(Path(d)) for name, d in runs.items()}
    if not data:
        return []
    return [
        _accuracy(data, out_dir / "accuracy_vs_time.png"),
        _buffer(data, out_dir / "buffer.png"),
        _bytes(data, out_dir / "bytes_sent.png"),
        _batch_sizes(data, out_dir / "batch_sizes.png"),
    ]


def plot_run(run_dir: Path) -> list[Path]:
    """Write one run's PNGs (accuracy, buffer, batch sizes) into its own directory."""
    run_dir = Path(run_dir)
    data = {run_dir.name: _load(run_dir)}
    return [
        _accuracy(data, run_dir / "accuracy_vs_time.png"),
        _buffer(data, run_dir / "buffer.png"),
        _batch_sizes(data, run_dir / "batch_sizes.png"),
    ]
