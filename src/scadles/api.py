"""The public API: load a config, train one policy, compare policies (docs/API.md).

    cfg = scadles.load_config(None, ["devices.count=8", "train.steps=30"])
    data = scadles.Dataset.from_tensors(x_train, y_train, x_test, y_test)
    summary = scadles.run(cfg, model=my_module, data=data, out="runs/mine")
    comparison = scadles.compare(cfg, model=my_module, data=data, out="runs/cmp")

The command line (`scadles run`, `scadles compare`) is a thin layer over these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scadles.config.load import Config, load_config
from scadles.data.datasets import Dataset
from scadles.live.base import LiveSource
from scadles.training import runner
from scadles.training.build import SourceFactory
from scadles.training.compare import check_policies, compare_policies

__all__ = ["Config", "Dataset", "compare", "load_config", "run"]

# a pair (train, test) of map-style torch datasets whose items are (x, y)
TorchPair = tuple[torch.utils.data.Dataset[Any], torch.utils.data.Dataset[Any]]


def _dataset(data: Dataset | TorchPair | None) -> Dataset | None:
    """Return data as a Dataset: as is, or a (train, test) pair of torch datasets materialised."""
    if data is None or isinstance(data, Dataset):
        return data
    train, test = data
    return Dataset.from_torch(train, test)


def _out(out: str | Path | None) -> Path | None:
    return None if out is None else Path(out)


def run(
    cfg: Config,
    *,
    model: torch.nn.Module | None = None,
    data: Dataset | TorchPair | None = None,
    source: LiveSource | SourceFactory | None = None,
    out: str | Path | None = None,
    progress: runner.Progress | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    force: bool = False,
    tensorboard: bool = False,
) -> runner.RunResult:
    """Train one policy (cfg.policy.name) and return its summary (the content of summary.json).

    model: a plain `forward(x)` module trained in place (default: cfg.model built and seeded).
    data: a Dataset, or (train, test) torch datasets, materialised once (default: cfg.data).
    source: live streams for real mode (default: cfg.live.source). out: the run directory for
    config.json, steps.jsonl, evals.jsonl, summary.json and model.pt; None writes no file and
    the returned summary also holds the records (`.steps`, `.evals`). A non-empty out is refused
    (UserError) unless resume (continue from its checkpoint) or force (replace its run files).
    Torch's thread count is left as it is (the command line sets it: --threads); the summary
    records it (`threads`).
    """
    return runner.run(
        cfg,
        _out(out),
        progress=progress,
        data=_dataset(data),
        model=model,
        source=source,
        checkpoint_every=checkpoint_every,
        resume=resume,
        force=force,
        tensorboard=tensorboard,
    )


def compare(
    cfg: Config,
    *,
    model: torch.nn.Module | None = None,
    data: Dataset | TorchPair | None = None,
    policies: Sequence[str] = ("scadles", "ddl"),
    out: str | Path | None = None,
    progress: runner.Progress | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run each policy on the same data, streams, seeds and initial weights; return the
    comparison (the content of comparison.json: target_accuracy, runs, speedup, ...).

    `model` is deep-copied per policy and never trained itself. With out, each policy runs into
    out/<policy>/ and comparison.json, comparison.md and the plots are written; None writes no
    file. A non-empty out needs resume or force. With checkpoint_every, each run checkpoints
    every that many steps; with resume, a policy finished under the same resolved config is
    reused, an unfinished one continues from its checkpoint, any other runs again; force
    replaces what out holds.
    """
    names = check_policies(policies)
    return compare_policies(
        cfg,
        _out(out),
        names,
        data=_dataset(data),
        model=model,
        progress=progress,
        checkpoint_every=checkpoint_every,
        resume=resume,
        force=force,
    )
