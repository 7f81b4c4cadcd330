"""PNG plots of runs and comparisons, read by streaming steps.jsonl / evals.jsonl.

Uses matplotlib's object API (``Figure`` rendered by Agg), so no pyplot state or GUI backend is
touched. Only the plotted columns are kept, thinned to at most ``MAX_POINTS`` points per run;
batch sizes are folded into per-device statistics over every step (O(devices) memory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter

from scadles.report.records import iter_jsonl
from scadles.report.tables import byte_unit

MAX_POINTS = 4000  # per run and column, after thinning
MAX_DEVICES = 32  # per-device bars; more devices are drawn as one box plot per run
THOUSANDS = FuncFormatter(lambda v, _: f"{v:,.0f}")


@dataclass(slots=True)
class _Series:
    """The plotted columns of one run, thinned on the fly by doubling the stride."""

    time: list[float] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    buffer: list[float] = field(default_factory=list)
    bytes_cum: list[float] = field(default_factory=list)
    choice: list[str] = field(default_factory=list)  # the exchange used ("" when dense)
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
        self.choice.append(str(row.get("choice") or ""))
        if len(self.time) > MAX_POINTS:
            self.stride *= 2
            for name in ("time", "step", "buffer", "bytes_cum", "choice"):
                setattr(self, name, getattr(self, name)[::2])


@dataclass(slots=True)
class _Batches:
    """Per-device batch-size statistics over every step: sum, count, min, max (each (K,))."""

    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    high: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, sizes: list[int]) -> None:
        """Fold one step's per-device batch sizes in (a device missing from a row is skipped)."""
        b = np.asarray(sizes, dtype=np.float64)  # (k,)
        k = b.shape[0]
        if k > self.total.shape[0]:  # a wider row: grow every statistic to k devices
            grow = k - self.total.shape[0]
            self.total = np.concatenate([self.total, np.zeros(grow)])
            self.steps = np.concatenate([self.steps, np.zeros(grow)])
            self.low = np.concatenate([self.low, np.full(grow, np.inf)])
            self.high = np.concatenate([self.high, np.full(grow, -np.inf)])
        self.total[:k] += b
        self.steps[:k] += 1
        np.minimum(self.low[:k], b, out=self.low[:k])
        np.maximum(self.high[:k], b, out=self.high[:k])

    @property
    def mean(self) -> np.ndarray:
        """Return each device's mean batch size (K,), NaN for a device never seen."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean: np.ndarray = self.total / self.steps
        return mean


@dataclass(frozen=True, slots=True)
class _Run:
    """One run's plotted data: its step series, batch statistics, eval points and target."""

    steps: _Series
    batches: _Batches
    eval_time: list[float]
    eval_top1: list[float]
    target: float | None
    crossing: tuple[float, float, float] | None  # time to target, bracket low, high


def _num(x: Any) -> float:
    """Return x as a float, NaN for null."""
    return math.nan if x is None else float(x)


def _load(run_dir: Path) -> _Run:
    """Stream a run directory's JSONL files into the plotted columns."""
    series, batches, total = _Series(), _Batches(), 0.0
    for row in iter_jsonl(run_dir / "steps.jsonl"):
        bytes_sent = row.get("bytes_sent")
        total += 0.0 if bytes_sent is None else float(bytes_sent)
        series.add(row, total)
        batches.add(list(row.get("batch_sizes") or []))
    times: list[float] = []
    top1: list[float] = []
    if (run_dir / "evals.jsonl").is_file():
        for ev in iter_jsonl(run_dir / "evals.jsonl"):
            times.append(_num(ev.get("sim_time_s")))
            top1.append(_num(ev.get("top1")))
    summary = _summary(run_dir)
    target = summary.get("target_accuracy")
    return _Run(
        series,
        batches,
        times,
        top1,
        None if target is None else float(target),
        _crossing(summary) if summary.get("target_metric", "top1") == "top1" else None,
    )


def _summary(run_dir: Path) -> dict[str, Any]:
    """Return the run's summary.json, or {} when it is missing or unreadable."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # not JSON, or not UTF-8 text (UnicodeDecodeError)
        return {}
    return summary if isinstance(summary, dict) else {}


def _crossing(summary: dict[str, Any]) -> tuple[float, float, float] | None:
    """Return (time to target, bracket low, high) from a summary, or None when not reached."""
    t, lh = summary.get("time_to_target_s"), summary.get("time_to_target_bounds_s")
    if t is None:
        return None
    lo, hi = lh if isinstance(lh, list) and len(lh) == 2 else (t, t)
    return float(t), float(lo), float(hi)


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


def _time_axis(ax: Axes) -> None:
    """Label simulated seconds with thousands separators."""
    ax.xaxis.set_major_formatter(THOUSANDS)


def _accuracy(runs: dict[str, _Run], path: Path) -> Path:
    """Plot top-1 accuracy against simulated time, one line per run, the target and crossings."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, run in runs.items():
        (line,) = ax.plot(run.eval_time, run.eval_top1, marker=".", label=name)
        if run.crossing is not None and run.target is not None:
            t, lo, hi = run.crossing
            ax.errorbar(
                [t],
                [run.target],
                xerr=[[t - lo], [hi - t]],
                fmt="x",
                color=line.get_color(),
                markersize=9,
                capsize=4,
                label=f"{name}: target at {t:,.0f} s [{lo:,.0f}, {hi:,.0f}]",
            )
    targets = {r.target for r in runs.values() if r.target is not None}
    for t in sorted(targets):
        ax.axhline(t, color="grey", linestyle="--", linewidth=1, label=f"target {t:.0%}")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    _time_axis(ax)
    _lines(ax, "simulated time (s)", "top-1 accuracy (held-out set)", "Accuracy vs simulated time")
    return _save(fig, path)


def _buffer(runs: dict[str, _Run], path: Path) -> Path:
    """Plot total buffered samples against simulated time on a log scale (symlog shows zeros)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    values: list[float] = []
    for name, run in runs.items():
        ax.plot(run.steps.time, run.steps.buffer, label=name)
        values += [v for v in run.steps.buffer if math.isfinite(v)]
    low, high = min(values, default=1.0), max(values, default=1.0)
    if low > 0:  # log scale; 1-2-5 ticks when the range is a few decades
        ax.set_yscale("log")
        subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= 4 else (1.0,)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    else:
        ax.set_yscale("symlog", linthresh=1.0)
    ax.yaxis.set_major_formatter(THOUSANDS)
    ax.yaxis.set_minor_formatter(NullFormatter())
    _time_axis(ax)
    _lines(ax, "simulated time (s)", "samples held, all devices", "Buffer occupancy")
    return _save(fig, path)


def _bytes(runs: dict[str, _Run], path: Path) -> Path:
    """Plot cumulative bytes sent against simulated time, in one decimal unit."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    unit, size = byte_unit([r.steps.bytes_cum[-1] for r in runs.values() if r.steps.bytes_cum])
    for name, run in runs.items():
        ax.plot(run.steps.time, [b / size for b in run.steps.bytes_cum], label=name)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
    _time_axis(ax)
    _lines(ax, "simulated time (s)", f"cumulative bytes sent ({unit})", "Communication volume")
    return _save(fig, path)


def _batch_sizes(runs: dict[str, _Run], path: Path) -> Path:
    """Plot each device's batch sizes: mean bars with min-max whiskers, grouped by run; with
    more than MAX_DEVICES devices, one box plot per run of the devices' mean batch sizes."""
    k = max((r.batches.total.shape[0] for r in runs.values()), default=0)
    fig = Figure(figsize=(min(max(7.0, 2.0 + 0.2 * k * len(runs)), 10.0), 4.5))
    ax = fig.add_subplot()
    if k > MAX_DEVICES:
        means = [r.batches.mean[np.isfinite(r.batches.mean)] for r in runs.values()]
        ax.boxplot(means, tick_labels=list(runs))
        _lines(ax, "run", "mean batch size per device (samples)", f"Batch sizes of {k} devices")
        return _save(fig, path)
    width = 0.8 / max(len(runs), 1)
    for i, (name, run) in enumerate(runs.items()):
        b = run.batches
        x = np.arange(b.total.shape[0]) + (i - (len(runs) - 1) / 2) * width
        mean = b.mean
        err = np.nan_to_num(np.stack([mean - b.low, b.high - mean]), posinf=0.0)  # (2, K)
        overall = b.total.sum() / max(b.steps.sum(), 1.0)
        ax.bar(x, mean, width, label=f"{name} (mean {overall:,.1f})")
        ax.errorbar(x, mean, yerr=err, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks(np.arange(k))
    ax.set_xlim(-0.6, k - 0.4)
    highs = [float(r.batches.high.max()) for r in runs.values() if r.batches.high.size]
    top = max(highs, default=1.0)
    ax.set_ylim(0, 1.25 * top if math.isfinite(top) and top > 0 else 1.0)  # room for the legend
    ax.yaxis.set_major_formatter(THOUSANDS)
    title = "Batch size per device: mean over steps, whiskers from smallest to largest"
    _lines(ax, "device", "batch size (samples per step)", title)
    return _save(fig, path)


def _choices(runs: dict[str, _Run], path: Path) -> Path | None:
    """Plot the exchange each compressing run used at every step (the time-aware switch's
    choices, or a fixed compressor and dense steps); None when no run logged one."""
    picked = {name: r for name, r in runs.items() if any(r.steps.choice)}
    if not picked:
        return None
    names = sorted({c or "dense" for r in picked.values() for c in r.steps.choice})
    row = {c: i for i, c in enumerate(names)}
    fig = Figure(figsize=(7, 1.8 + 0.35 * len(names)))
    ax = fig.add_subplot()
    for i, (name, run) in enumerate(picked.items()):
        y = [row[c or "dense"] + 0.08 * (i - (len(picked) - 1) / 2) for c in run.steps.choice]
        ax.step(run.steps.time, y, where="post", label=name)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.5, len(names) - 0.5)
    _time_axis(ax)
    _lines(ax, "simulated time (s)", "exchange", "Exchange used at each step")
    return _save(fig, path)


def plot_comparison(out_dir: Path, runs: dict[str, Path]) -> list[Path]:
    """Write the comparison PNGs (accuracy, buffer, bytes sent, batch sizes, and the exchange
    of each step where a run compressed) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {name: _load(Path(d)) for name, d in runs.items()}
    if not data:
        return []
    out = [
        _accuracy(data, out_dir / "accuracy_vs_time.png"),
        _buffer(data, out_dir / "buffer.png"),
        _bytes(data, out_dir / "bytes_sent.png"),
        _batch_sizes(data, out_dir / "batch_sizes.png"),
    ]
    choices = _choices(data, out_dir / "exchange_choices.png")
    return out if choices is None else [*out, choices]


def plot_run(run_dir: Path) -> list[Path]:
    """Write one run's PNGs (accuracy, buffer, batch sizes) into its own directory."""
    run_dir = Path(run_dir)
    data = {run_dir.name: _load(run_dir)}
    return [
        _accuracy(data, run_dir / "accuracy_vs_time.png"),
        _buffer(data, run_dir / "buffer.png"),
        _batch_sizes(data, run_dir / "batch_sizes.png"),
    ]
