"""Run several policies on the same data, streams, seeds and initial weights; compare them.

The one place the comparison is made: `scadles compare`, `scadles.compare` and the reproduction's
comparisons (`scadles.reproduce.runs.Runs.compare`) all call `compare_policies`.

With resume, a policy whose folder holds a summary of the same resolved config is not run again,
one whose folder holds a checkpoint of it continues from there, and any other runs from scratch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from scadles.config.load import (
    Config,
    config_to_dict,
    replace_key,
)
from scadles.data.datasets import Dataset
from scadles.errors import UserError
from scadles.policies import POLICIES
from scadles.report.records import comparison, write_json
from scadles.report.tables import comparison_markdown
from scadles.training import build, checkpoint, runner
from scadles.training.rundir import check_out

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


def _saved_config(where: Path) -> Any:
    """Return the resolved config a run folder's config.json holds, or None if unreadable."""
    try:
        return json.loads((where / "config.json").read_text())
    except (OSError, ValueError):
        return None


def finished_summary(where: Path, cfg: Config) -> dict[str, Any] | None:
    """Return the summary of the run in `where` if it ran this very resolved config to its end
    (a run stopped by an exception leaves a summary marked "interrupted")."""
    if _saved_config(where) != config_to_dict(cfg):
        return None
    try:
        summary = json.loads((where / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("interrupted"):
        return None
    return summary


def _can_continue(where: Path, cfg: Config) -> bool:
    """Say whether `where` holds a checkpoint of an unfinished run of this resolved config."""
    return (where / checkpoint.FILE).is_file() and _saved_config(where) == config_to_dict(cfg)


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
    checkpoint_every: int | None = None,
    resume: bool = False,
    force: bool = False,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run each policy into out/<policy>/ (or nowhere when out is None); return the comparison.

    The data set is built once and shared; `model` is deep-copied per policy, so every policy
    starts from the same weights and the caller's module is never trained. With out, also write
    comparison.json, comparison.md and (with plots) the comparison plots. `run_one` replaces
    the plain run of one policy (the reproduction's resumable runs).

    A non-empty `out` needs resume or force. With checkpoint_every, each run checkpoints every
    that many steps; with resume, a policy finished under the same resolved config is reused,
    one with a checkpoint of it continues, any other runs again; `notify` hears one line for
    each policy reused or continued.
    """
    names = check_policies(policies)
    if out is None and (checkpoint_every or resume):
        raise UserError("compare: checkpoints and resume need an output folder (--out)")
    if run_one is None and out is not None:
        check_out(out, resume=resume, force=force)
    runs: dict[str, dict[str, Any]] = {}
    dirs: dict[str, Path] = {}
    for name in names:
        pcfg = replace_key(cfg, "policy.name", name)
        where = out / name if out is not None else None
        if run_one is not None:
            runs[name] = run_one(pcfg, where)
        elif resume and where is not None and (done := finished_summary(where, pcfg)):
            runs[name] = done
            if notify is not None:
                notify(f"compare: reusing {where} (finished, same config)")
        else:
            going_on = resume and where is not None and _can_continue(where, pcfg)
            if going_on and notify is not None:
                notify(f"compare: continuing {where} from its checkpoint")
            data = data if data is not None else build.dataset(cfg)
            own = copy.deepcopy(model)  # None stays None: the configured model, seeded alike
            runs[name] = runner.run(
                pcfg,
                where,
                progress=progress,
                data=data,
                model=own,
                checkpoint_every=checkpoint_every,
                resume=going_on,
                force=force or (resume and not going_on),
            )
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
