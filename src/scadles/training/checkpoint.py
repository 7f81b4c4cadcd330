"""Exact resume: everything a run needs to continue as if it had never stopped.

A checkpoint holds tensors and counters only (STYLE habit 12): model and optimizer state, stream
positions, buffer counters, error-feedback residuals, switch and compressor state, the generators,
the clock, the summary accumulator and how many lines each JSONL file had. Handles (the data,
the model's code, the collective) are rebuilt from the config, which the checkpoint carries and
checks. Files are written atomically: temp file, fsync, rename.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scadles.errors import UserError

FORMAT = 3
FILE = "checkpoint.pt"


def rank_file(rank: int) -> str:
    """Return the checkpoint file name of one rank in real mode on live streams."""
    return f"checkpoint-rank{rank}.pt"


def save_ranked(out: Path, rank: int, payload: dict[str, Any]) -> None:
    """Write one rank's checkpoint, keeping its previous one (a kill between ranks' writes
    leaves at least one step every rank has)."""
    path = out / rank_file(rank)
    if path.is_file():
        os.replace(path, path.with_suffix(".prev"))
    save(path, payload)


def load_ranked(
    out: Path, rank: int, config: dict[str, Any], common_step: Callable[[int], int]
) -> dict[str, Any]:
    """Read this rank's newest checkpoint whose step every rank has (common_step: the min)."""
    path = out / rank_file(rank)
    latest = load(path, config)
    step = common_step(int(latest["engine"]["counters"]["step"]))
    if int(latest["engine"]["counters"]["step"]) == step:
        return latest
    prev = load(path.with_suffix(".prev"), config)
    if int(prev["engine"]["counters"]["step"]) != step:
        raise UserError(f"--resume: {path}: no checkpoint at step {step}, the ranks' common step")
    return prev


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a kill during the write leaves the previous one intact."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to this config; UserError if not usable."""
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint at {path}")
    try:
        payload: dict[str, Any] = torch.load(path, weights_only=False)
    except Exception as e:  # any unreadable file is the user's to fix, not a crash
        raise UserError(f"--resume: corrupt checkpoint {path}: {type(e).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"--resume: {path} is not a scadles checkpoint (format {FORMAT})")
    if payload.get("config") != config:
        diff = _first_difference(payload.get("config"), config)
        raise UserError(f"--resume: {path} was written for another config ({diff})")
    return payload


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """Return the first dotted key where two config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')}: {a!r} != {b!r}"
