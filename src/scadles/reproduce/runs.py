"""Run bookkeeping for `scadles reproduce`: configs, resumable runs, comparisons and result rows.

A run is identified by its resolved configuration: the first experiment that needs it runs it
into DIR/<experiment>/<label>/ and records it in DIR/runs.json; any experiment that needs the
same configuration later (or a rerun of the command) reuses it once its summary.json exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scadles.config.load import Config, config_to_dict, load_config, parse_override, replace_key
from scadles.data.datasets import Dataset
from scadles.errors import UserError
from scadles.report import records
from scadles.report.records import dumps, iter_jsonl, write_json
from scadles.reproduce import paper
from scadles.textfile import read_json
from scadles.training import build, runner
from scadles.training.compare import compare_policies

Row = dict[str, Any]  # {"experiment", "setting", "quantity", "paper", "ours", "unit", ...}
ROW_KEYS = ("experiment", "setting", "quantity", "paper", "ours", "unit", "metric", "note")
INDEX = "runs.json"
METRIC_NAMES = {"top1": "top-1", "top5": "top-5"}


@dataclass(frozen=True, slots=True)
class Options:
    """What to reproduce and how: output folder, budgets, extra overrides, progress lines."""

    out: Path
    quick: bool = False
    config_dir: Path = Path("configs/paper")
    budget_scale: float = 1.0  # multiplies every run's train.steps / train.max_time_s
    overrides: tuple[str, ...] = ()  # `key=value`, applied to every run after the experiment's
    progress: bool = False
    track: str = "mnist1d"


def row(
    experiment: str,
    quantity: str,
    ours: float | None,
    unit: str,
    note: str = "",
    *,
    metric: str | None = None,
    setting: str = "",
) -> Row:
    """Return one reproduction row, the paper's number looked up by (experiment, quantity).

    metric: the accuracy our number depends on (top1, top5; None where none does). The paper
    uses top-5 throughout [paper 4.2]; where ours differs, the note says so, as it carries the
    paper's as-reported flags.
    """
    value = None if ours is None or not math.isfinite(ours) else float(ours)
    ref = paper.paper_value(experiment, quantity)
    notes = [note] if note else []
    if metric is not None and metric != paper.PAPER_METRIC:
        notes.append(f"{METRIC_NAMES[metric]} (paper: {METRIC_NAMES[paper.PAPER_METRIC]})")
    notes += [f"paper: {f}" for f in paper.flags(experiment, quantity)]
    return {
        "experiment": experiment,
        "setting": setting,
        "quantity": quantity,
        "paper": ref,
        "ours": value,
        "unit": unit,
        "metric": metric,
        "note": "; ".join(notes),
    }


def scaled(cfg: Config, scale: float) -> Config:
    """Return cfg with its step / simulated-time budget multiplied by scale."""
    if scale == 1.0:
        return cfg
    if cfg.train.steps is not None:
        cfg = replace_key(cfg, "train.steps", max(1, math.ceil(cfg.train.steps * scale)))
    if cfg.train.max_time_s is not None:
        cfg = replace_key(cfg, "train.max_time_s", cfg.train.max_time_s * scale)
    return cfg


def explicit(cfg: Config) -> Config:
    """Return cfg with the policy-dependent defaults written out, so equal runs look equal."""
    cfg = replace_key(cfg, "buffer.policy", build.buffer_policy(cfg))
    cfg = replace_key(cfg, "policy.lr_scaling", build.batch_rule(cfg).lr_scaling)
    name = build.compressor_name(cfg)
    return replace_key(cfg, "compress.name", "topk" if name == "topk_layer" else name)


def _key(cfg: Config) -> str:
    return hashlib.sha256(dumps(config_to_dict(cfg)).encode()).hexdigest()[:16]


class Runs:
    """Build configs and run them at most once per resolved configuration."""

    def __init__(self, opts: Options, say: Callable[[str], None]) -> None:
        self.opts = opts
        self.say = say
        path = opts.out / INDEX
        self.index: dict[str, str] = read_json(path, "reproduce") if path.is_file() else {}
        self._data: dict[str, Dataset] = {}

    def config(self, name: str, sets: Mapping[str, Any] | None = None) -> Config:
        """Load configs/paper/<name>.toml, apply the experiment's keys, the user's, the scale."""
        path = self.opts.config_dir / f"{name}.toml"
        if not path.is_file():
            raise UserError(f"reproduce: config not found: {path}")
        cfg = load_config(path)
        for key, value in (sets or {}).items():
            cfg = replace_key(cfg, key, value)
        for text in self.opts.overrides:
            cfg = replace_key(cfg, *parse_override(text))
        return scaled(cfg, self.opts.budget_scale)

    def run(self, experiment: str, label: str, cfg: Config) -> dict[str, Any]:
        """Return the run's summary, training it into DIR/<experiment>/<label> unless done.

        A folder holding a run of another configuration (other budgets, --quick, --set) is
        left alone: this one goes to <label>@<config hash> beside it.
        """
        cfg = explicit(cfg)
        key = _key(cfg)
        where = self.opts.out / self.index.get(key, f"{experiment}/{label}")
        if not _same(where, cfg):
            where = where.with_name(f"{where.name}@{key}")
        done = where / "summary.json"
        if done.is_file():
            finished = read_json(done, "reproduce")
            if not finished.get("interrupted"):
                return dict(finished, dir=str(where))
        t0 = time.perf_counter()
        # the folder holds no finished run of this config (another config goes beside it)
        summary = runner.run(cfg, where, data=self._dataset(cfg), force=True)
        self.say(f"  {where.relative_to(self.opts.out)}: {time.perf_counter() - t0:.0f} s")
        self.index[key] = str(where.relative_to(self.opts.out))
        write_json(self.opts.out / INDEX, self.index)
        return dict(summary, dir=str(where))

    def compare(self, experiment: str, label: str, cfg: Config) -> dict[str, Any]:
        """Run ScaDLES and DDL on cfg (each at most once); write label/comparison.json and .md;
        return it."""

        def run_one(pcfg: Config, _where: Path | None) -> dict[str, Any]:
            return self.run(experiment, f"{label}/{pcfg.policy.name}", pcfg)

        where = self.opts.out / experiment / label
        return compare_policies(cfg, where, ("scadles", "ddl"), run_one=run_one, plots=False)

    def _dataset(self, cfg: Config) -> Dataset:
        key = dumps(config_to_dict(cfg)["data"]) + str(cfg.train.seed)
        if key not in self._data:
            self._data[key] = build.dataset(cfg)
        return self._data[key]


def _same(where: Path, cfg: Config) -> bool:
    """Return whether where holds no run or a run of exactly this configuration."""
    stored = where / "config.json"
    if not stored.is_file():
        return True
    return bool(read_json(stored, "reproduce") == json.loads(dumps(config_to_dict(cfg))))


def at_target(summary: Mapping[str, Any], field: str) -> tuple[float, bool]:
    """Return a steps.jsonl field at the step the target was reached (else the last), reached?"""
    step = summary.get("steps_to_target")
    last: dict[str, Any] = {}
    for rec in iter_jsonl(Path(summary["dir"]) / "steps.jsonl"):
        last = rec
        if step is not None and rec["step"] == step:
            return float(rec[field]), True
    return float(last.get(field, math.nan)), False


def metric(summary: Mapping[str, Any]) -> str:
    """Return the accuracy a run's target is measured in (eval.metric: top1 or top5)."""
    return str(summary.get("target_metric") or "top1")


def final(summary: Mapping[str, Any]) -> float | None:
    """Return a run's final accuracy in percent, in its target's metric."""
    return pct(summary["final_top5" if metric(summary) == "top5" else "final_accuracy"])


def time_to(summary: Mapping[str, Any], target: float) -> float | None:
    """Return the simulated time the run's metric crossed target (interpolated), or None."""
    evals = iter_jsonl(Path(summary["dir"]) / "evals.jsonl")
    c = records.time_to_target(evals, target, metric(summary))
    return None if c is None else c.time_s


def pct(x: float | None) -> float | None:
    """Return a fraction as percent (None stays None)."""
    return None if x is None else 100.0 * x
