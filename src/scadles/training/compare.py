"""Run several policies on the same data, streams, seeds and initial weights; compare them.

The one place the comparison is made: `scadles compare`, `scadles.compare` and the reproduction's
comparisons (`scadles.reproduce.runs.Runs.compare`) all call `compare_policies`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from scadles.config.load import Config, replace_key
from scadles.data.datasets import Dataset
from scadles.errors import UserError
from scadles.policies import POLICIES
from scadles.report.records import comparison, write_json
from scadles.report.tables import comparison_markdown
from scadles.training import build, runner

# run_one(policy config, its run directory or None) -> summary; a "dir" key in the summary
# says where the run's files really are (the reproduction reuses finished runs elsewhere)
RunOne = Callable[[Config, Path | None], dict[str, Any]]


def check_policies(policies: str | Sequence[str], key: str = "policies") -> list[str]:
    """Return the policy names (a list, or comma-separated text); reject unknown or none."""
    names = [s.strip() for s in policies.split(",")] if isinstance(policies, str) else policies
    names = [n for n in names if n]
    bad = [n for n in names if n not in POLICIES]
    if not names or bad:
        got = repr(bad[0]) if bad else repr(policies)
        raise UserError(f"{key}: unknown policy {got}; known: {', '.join(POLICIES.names())}")
    return list(names)


def compare_policies(
    cfg: Config,
    out: Path | None,
    policies: Sequence[str],
    *,
    data: Dataset | None = None,
    model: torch.nn.Module | None = None,
    progress: runner.Progress | None = None,
    run_one: RunOne | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run each policy into out/<policy>/ (or nowhere when out is None); return the comparison.

    The data set is built once and shared; `model` is deep-copied per policy, so every policy
    starts from the same weights and the caller's module is never trained. With out, also write
    comparison.json, comparison.md and (with plots) the comparison plots. `run_one` replaces
    the plain run of one policy (the reproduction's resumable runs).
    """
    names = check_policies(policies)
    if run_one is None and data is None:
        data = build.dataset(cfg)
    runs: dict[str, dict[str, Any]] = {}
    dirs: dict[str, Path] = {}
    for name in names:
        pcfg = replace_key(cfg, "policy.name", name)
        where = out / name if out is not None else None
        if run_one is not None:
            runs[name] = run_one(pcfg, where)
        else:
            own = copy.deepcopy(model)  # None stays None: the configured model, seeded alike
            runs[name] = runner.run(pcfg, where, progress=progress, data=data, model=own)
        if where is not None:
            dirs[name] = Path(runs[name].get("dir", where))
    comp = comparison(runs)
    if out is not None:
        write_json(out / "comparison.json", comp)
        (out / "comparison.md").write_text(comparison_markdown(comp))
        if plots:
            from scadles.report.plots import plot_comparison

            plot_comparison(out, dirs)
    return comp
