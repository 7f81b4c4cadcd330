"""Switch policies: which compression level every device uses this step, decided collectively.

A switch sees the per-device updates including error feedback, acc = g_i + e_i (K, P), and returns
one level index for all devices (0 = dense, 1 = compressed for the binary ScaDLES rules), so every
device takes the same collective. Per-device state is a tensor axis; only per-layer loops remain.
This module holds the protocol, the shared signal helpers, the fixed switch and Accordion; the
energy rules of ScaDLES live in `energy.py`, the name registry in `switches.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from scadles.errors import UserError

State = dict[str, Tensor | float | int]


class Switch(Protocol):
    """Pick the compression level of one step from the per-device updates."""

    def decide(
        self,
        acc: Tensor,
        kept: Tensor | None,
        epoch: int,
        grad: Tensor | None = None,
        b: Tensor | None = None,
    ) -> int:
        """Return the level index for updates acc (K, P); kept (K, P) is Topk(acc) if known.

        grad (K, P) is the gradient without error feedback (acc when omitted); b (K,) the
        devices' batch sizes this step, for rules that count each device's own epochs.
        """
        ...

    def vote(self, local: int) -> float:
        """Return what this process adds to the step's one all-reduce (its devices' votes)."""
        ...

    def agree(self, total: float, k: int, world: int, local: int) -> int:
        """Return the level every process uses, from the summed votes of all K devices."""
        ...

    def state_dict(self) -> State:
        """Return the tensors and counters needed to resume."""
        ...

    def load_state_dict(self, d: State) -> None:
        """Restore the state returned by state_dict."""
        ...


def topk_count(n: int, ratio: float) -> int:
    """Return how many of n values Top-k keeps at ratio: max(1, int(n * ratio)) as in the code."""
    return max(1, int(n * ratio))


def check_range(name: str, value: float, low: float, high: float, *, open_at: str = "") -> None:
    """Reject a parameter outside [low, high] (open at "low"/"high"), naming the allowed range."""
    bad = not low <= value <= high  # also true for NaN
    bad = bad or (open_at == "low" and value == low) or (open_at == "high" and value == high)
    if bad:
        left, right = "(" if open_at == "low" else "[", ")" if open_at == "high" else "]"
        raise UserError(f"compress.{name} must be in {left}{low}, {high}{right}, got {value}")


def _split(acc: Tensor, layers: tuple[int, ...] | None) -> tuple[Tensor, ...]:
    """Return acc's per-layer column blocks (the whole row when layers is None)."""
    if layers is None:
        return (acc,)
    if sum(layers) != acc.shape[1]:
        raise ValueError(f"layer sizes sum to {sum(layers)}, updates have {acc.shape[1]} columns")
    return tuple(torch.split(acc, list(layers), dim=1))


def layer_norms(x: Tensor, layers: tuple[int, ...] | None) -> Tensor:
    """Return the L2 norm of each layer block of every device's row: (K, L)."""
    return torch.stack([torch.linalg.vector_norm(c, dim=1) for c in _split(x, layers)], dim=1)


def topk_layer_norms(acc: Tensor, layers: tuple[int, ...] | None, ratio: float) -> Tensor:
    """Return the L2 norm of the per-layer Top-k (by magnitude) of every device's row: (K, L)."""
    norms = []
    for c in _split(acc, layers):
        vals = c.abs().topk(topk_count(c.shape[1], ratio), dim=1).values  # (K, k)
        norms.append(torch.linalg.vector_norm(vals, dim=1))
    return torch.stack(norms, dim=1)


def ratio_lost(total: Tensor, kept: Tensor) -> Tensor:
    """Return |total - kept| / total per device, 0 where total is 0 (nothing to lose)."""
    total, kept = total.double(), kept.double()
    return torch.where(total > 0, (total - kept).abs() / total.clamp(min=1e-300), 0.0)


def state_tensor(d: State, key: str) -> Tensor:
    """Return d[key] as a tensor, naming the key when it is missing or of the wrong type."""
    v = d.get(key)
    if not isinstance(v, Tensor):
        raise UserError(f"switch state: {key!r} must be a tensor, got {type(v).__name__}")
    return v.clone()


def state_number(d: State, key: str) -> float:
    """Return d[key] as a number, naming the key when it is missing or of the wrong type."""
    v = d.get(key)
    if isinstance(v, Tensor) and v.numel() == 1:
        return float(v)
    if not isinstance(v, int | float):
        raise UserError(f"switch state: {key!r} must be a number, got {type(v).__name__}")
    return float(v)


def same_level(total: float, world: int, local: int) -> int:
    """Return local after checking every process picked it (the votes summed to local * world).

    For switches that decide the same on every process by construction (fixed, Accordion's
    all-reduced accumulator); a disagreement would mean mismatched collectives, so it stops.
    """
    if round(total) != local * world:
        raise RuntimeError(f"ranks disagree on the compression level (this rank: {local})")
    return local


class Fixed:
    """Always the same level (static compression, or always dense)."""

    def __init__(self, level: int) -> None:
        if level < 0:
            raise UserError(f"compress.level must be >= 0, got {level}")
        self.level = level

    def decide(
        self,
        acc: Tensor,
        kept: Tensor | None,
        epoch: int,
        grad: Tensor | None = None,
        b: Tensor | None = None,
    ) -> int:
        """Return the fixed level."""
        return self.level

    def vote(self, local: int) -> float:
        """Return the level picked here (checked against the other processes' in agree)."""
        return float(local)

    def agree(self, total: float, k: int, world: int, local: int) -> int:
        """Return the level, checked to be every process's."""
        return same_level(total, world, local)

    def state_dict(self) -> State:
        """Return no state (the level comes from the configuration)."""
        return {}

    def load_state_dict(self, d: State) -> None:
        """Accept any saved state; nothing to restore."""


class AccordionSwitch:
    """Accordion (Agarwal et al. 2021): low compression in critical regimes of the gradient norm.

    Each decision adds the device-mean update to an accumulator; every `interval` decisions its
    norm is compared with the previous accumulator's: |‖Δ_prev‖ − ‖Δ_cur‖| / ‖Δ_prev‖ >= eta marks
    a critical regime (level `low`, less compression), else level `high`; the accumulator then
    restarts. Before the first comparison the level is `low`.

    Across processes `reduce` (the collective's all-reduce) sums the local devices' updates over
    the ranks, one (P,) all-reduce per decision, and `devices` is the total K; every rank then
    holds the same accumulator and picks the same level.
    """

    def __init__(
        self,
        eta: float = 0.5,
        low: int = 0,
        high: int = 1,
        interval: int = 1,
        *,
        reduce: Callable[[Tensor], Tensor] | None = None,
        devices: int = 0,
    ) -> None:
        check_range("eta", eta, 0.0, math.inf)
        if low < 0 or high < 0:
            raise UserError(f"compress.levels must be >= 0, got low={low} high={high}")
        if interval < 1:
            raise UserError(f"compress.interval must be >= 1, got {interval}")
        self.eta, self.low, self.high, self.interval = eta, low, high, interval
        self.reduce, self.devices = reduce, devices
        self.delta: Tensor | None = None  # (P,) accumulated device-mean update
        self.count = 0
        self.prev = -1.0  # norm of the previous accumulator, -1 before the first
        self.level = low

    def decide(
        self,
        acc: Tensor,
        kept: Tensor | None,
        epoch: int,
        grad: Tensor | None = None,
        b: Tensor | None = None,
    ) -> int:
        """Accumulate the mean update; every `interval` calls pick low or high from its norm."""
        if self.reduce is None:
            mean = acc.mean(0)  # (P,)
        else:
            mean = self.reduce(acc.sum(0)) / max(self.devices, 1)  # (P,) over all ranks
        self.delta = mean if self.delta is None else self.delta + mean
        self.count += 1
        if self.count >= self.interval:
            cur = float(torch.linalg.vector_norm(self.delta))
            self.level = self.low if self._critical(cur) else self.high
            self.prev, self.delta, self.count = cur, None, 0
        return self.level

    def _critical(self, cur: float) -> bool:
        """Return whether the norm changed by at least eta relative to the previous one."""
        if self.prev < 0:
            return True
        if self.prev == 0:
            return cur > 0
        return abs(self.prev - cur) / self.prev >= self.eta

    def vote(self, local: int) -> float:
        """Return the level picked here (checked against the other processes' in agree)."""
        return float(local)

    def agree(self, total: float, k: int, world: int, local: int) -> int:
        """Return the level, checked to be every process's."""
        return same_level(total, world, local)

    def state_dict(self) -> State:
        """Return the accumulator (empty when restarted), its count, previous norm and level."""
        delta = torch.zeros(0) if self.delta is None else self.delta.clone()
        return {"delta": delta, "count": self.count, "prev": self.prev, "level": self.level}

    def load_state_dict(self, d: State) -> None:
        """Restore the accumulator, count, previous norm and level."""
        delta = state_tensor(d, "delta")
        self.delta = None if delta.numel() == 0 else delta
        self.count, self.prev = int(state_number(d, "count")), state_number(d, "prev")
        self.level = int(state_number(d, "level"))
