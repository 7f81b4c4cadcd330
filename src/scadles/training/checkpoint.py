"""Exact resume: everything a run needs to continue as if it had never stopped.

A checkpoint holds tensors and counters only (STYLE habit 12): model and optimizer state, stream
positions, buffer counters, error-feedback residuals, switch and compressor state, the generators,
the clock, the summary accumulator and how many lines each JSONL file had. Handles (the data,
the model's code, the collective) are rebuilt from the config, which the checkpoint carries and
checks. Files are written atomically: temp file, fsync, rename.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scadles.engine import Engine
from scadles.errors import UserError
from scadles.exchange import DenseExchange, Exchange

FORMAT = 1
FILE = "checkpoint.pt"


def engine_state(eng: Engine) -> dict[str, Any]:
    """Return the engine's resumable state."""
    c = eng.counters
    state: dict[str, Any] = {
        "counters": {"step": c.step, "t": c.t, "samples_trained": c.samples_trained},
        "last_lr": eng._last_lr,
        "skipped_nonfinite": eng.skipped_nonfinite,
        "shared": eng.shared.clone(),
        "own_trained": eng.own_trained.clone(),
        "model": copy.deepcopy(eng.model.state_dict()),
        "optimizer": copy.deepcopy(eng.optimizer.state_dict()),
        "arrivals": {
            "next_pos": eng.arrivals.next_pos.clone(),
            "total": eng.arrivals.total.clone(),
        },
        "buffer": {k: getattr(eng.buffer, k).clone() for k in ("lo", "hi", "trained", "dropped")},
        "gens": {
            "streams": eng.gen.get_state(),
            "compress": eng.compress_gen.get_state(),
            "inject": eng.inject_gen.get_state(),
        },
    }
    return state | exchange_state(eng.exchange)


def exchange_state(ex: Exchange | DenseExchange) -> dict[str, Any]:
    """Return the compression state (error feedback, switch, compressors); {} when dense."""
    if not isinstance(ex, Exchange):
        return {}
    return {
        "feedback": ex.feedback.state_dict(),
        "switch": ex.switch.state_dict(),
        "levels": [lv.state_dict() if hasattr(lv, "state_dict") else {} for lv in ex.levels],
        "momentum": ex.momentum.state_dict() if ex.momentum is not None else {},
    }


def restore_exchange(ex: Exchange | DenseExchange, state: dict[str, Any]) -> None:
    """Load what exchange_state returned."""
    if isinstance(ex, Exchange):
        ex.feedback.load_state_dict(state["feedback"])
        ex.switch.load_state_dict(state["switch"])
        if ex.momentum is not None:
            ex.momentum.load_state_dict(state["momentum"])
        for lv, s in zip(ex.levels, state["levels"], strict=True):
            if s and hasattr(lv, "load_state_dict"):
                lv.load_state_dict(s)


def restore_engine(eng: Engine, state: dict[str, Any]) -> None:
    """Load a state returned by engine_state into a freshly built engine of the same config."""
    c = state["counters"]
    eng.counters.step, eng.counters.t = int(c["step"]), float(c["t"])
    eng.counters.samples_trained = int(c["samples_trained"])
    eng._last_lr = float(state["last_lr"])
    eng.skipped_nonfinite = int(state["skipped_nonfinite"])
    eng.shared, eng.own_trained = state["shared"].clone(), state["own_trained"].clone()
    eng.model.load_state_dict(state["model"])
    eng.optimizer.load_state_dict(state["optimizer"])
    eng.arrivals.next_pos = state["arrivals"]["next_pos"].clone()
    eng.arrivals.total = state["arrivals"]["total"].clone()
    for k, v in state["buffer"].items():
        setattr(eng.buffer, k, v.clone())
    eng.gen.set_state(state["gens"]["streams"])
    eng.compress_gen.set_state(state["gens"]["compress"])
    eng.inject_gen.set_state(state["gens"]["inject"])
    restore_exchange(eng.exchange, state)


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
