"""Switch policies: which compression level every device uses this step, decided collectively.

A switch sees the per-device updates including error feedback, acc = g_i + e_i (K, P), and returns
one level index for all devices (0 = dense, 1 = compressed for the binary ScaDLES rules), so every
device takes the same collective. Per-device state is a tensor axis; only per-layer loops remain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from scadles.compress.base import Compressor
from scadles.compress.identity import Identity
from scadles.errors import UserError
from scadles.registry import Registry

State = dict[str, Tensor | float | int]


class Switch(Protocol):
    """Pick the compression level of one step from the per-device updates."""

    def decide(
        self, acc: Tensor, kept: Tensor | None, epoch: int, grad: Tensor | None = None
    ) -> int:
        """Return the level index for updates acc (K, P); kept (K, P) is Topk(acc) if known.

        grad (K, P) is the gradient without error feedback: the energy reference of the signal
        ([paper] 7.1: feedback enters only the compressed term); acc when omitted.
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


def _check(name: str, value: float, low: float, high: float, *, open_at: str = "") -> None:
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


def _ratio_lost(total: Tensor, kept: Tensor) -> Tensor:
    """Return |total - kept| / total per device, 0 where total is 0 (nothing to lose)."""
    total, kept = total.double(), kept.double()
    return torch.where(total > 0, (total - kept).abs() / total.clamp(min=1e-300), 0.0)


def _tensor(d: State, key: str) -> Tensor:
    """Return d[key] as a tensor, naming the key when it is missing or of the wrong type."""
    v = d.get(key)
    if not isinstance(v, Tensor):
        raise UserError(f"switch state: {key!r} must be a tensor, got {type(v).__name__}")
    return v.clone()


def _number(d: State, key: str) -> float:
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
        self, acc: Tensor, kept: Tensor | None, epoch: int, grad: Tensor | None = None
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


class ScadlesSwitch:
    """The paper's rule ([paper] 2.4, 7.1): compress when Top-k keeps most of the energy.

    signal_i = |‖g_i‖² − ‖Topk(acc_i)‖²| / ‖g_i‖² (g = `grad`, acc when omitted) on the whole
    model (Top-k over all P values, or per layer when `layers` is given), smoothed per device by
    an EWMA whose first observation initialises it; device i votes to compress when its smoothed
    signal is <= delta; the step is compressed (level 1) when votes * 2 >= K (majority, ties
    compress), else dense (level 0).
    A given `kept` (K, P) is used as Topk(acc) instead of recomputing it.
    """

    def __init__(
        self,
        delta: float = 0.3,
        ewma: float = 0.9,
        ratio: float = 0.1,
        layers: tuple[int, ...] | None = None,
    ) -> None:
        _check("delta", delta, 0.0, math.inf)
        _check("ewma", ewma, 0.0, 1.0, open_at="high")
        _check("ratio", ratio, 0.0, 1.0, open_at="low")
        self.delta, self.ewma, self.ratio, self.layers = delta, ewma, ratio, layers
        self.smoothed: Tensor | None = None  # (K,) float64 EWMA of the signal
        self.last_votes = 0

    def signal(self, acc: Tensor, kept: Tensor | None, grad: Tensor | None = None) -> Tensor:
        """Return each device's fraction of squared norm lost by Top-k: (K,) float64."""
        ref = acc if grad is None else grad
        total = torch.linalg.vector_norm(ref, dim=1) ** 2  # (K,)
        if kept is not None:
            energy = torch.linalg.vector_norm(kept, dim=1) ** 2  # (K,)
        else:
            energy = (topk_layer_norms(acc, self.layers, self.ratio) ** 2).sum(1)  # (K,)
        return _ratio_lost(total, energy)

    def decide(
        self, acc: Tensor, kept: Tensor | None, epoch: int, grad: Tensor | None = None
    ) -> int:
        """Update the EWMA with this step's signal and return 1 (compress) or 0 (dense)."""
        sig = self.signal(acc, kept, grad)  # (K,)
        prev = self.smoothed
        if prev is None or prev.shape != sig.shape:
            self.smoothed = sig
        else:
            self.smoothed = self.ewma * prev + (1.0 - self.ewma) * sig
        self.last_votes = int((self.smoothed <= self.delta).sum())
        return int(self.last_votes * 2 >= sig.numel())

    def vote(self, local: int) -> float:
        """Return how many of this process's devices vote to compress."""
        return float(self.last_votes)

    def agree(self, total: float, k: int, world: int, local: int) -> int:
        """Return 1 (compress) when at least half of all K devices voted for it."""
        return int(round(total) * 2 >= k)

    def state_dict(self) -> State:
        """Return the smoothed signal (empty before the first step)."""
        s = self.smoothed
        return {"smoothed": torch.zeros(0, dtype=torch.float64) if s is None else s.clone()}

    def load_state_dict(self, d: State) -> None:
        """Restore the smoothed signal."""
        s = _tensor(d, "smoothed")
        self.smoothed = None if s.numel() == 0 else s.double()


class CodeSwitch:
    """The authors'-code rule ([authors' code]): sums of per-layer norms, epoch mean.

    signal_i = |Σ_l ‖acc_l‖ − Σ_l ‖Topk_l(acc_l)‖| / Σ_l ‖acc_l‖ with unsquared per-layer L2 norms
    and layer-wise Top-k; as in the code, the first and third norms are of the gradient without
    feedback when `grad` is given (acc otherwise). The signal is averaged
    arithmetically over the steps of the current epoch (reset when `epoch` changes); devices vote
    when their mean is <= delta and the step is compressed when votes >= int(K / 2), as in the code
    (so K = 1 always compresses and an odd K needs fewer than half the votes).
    """

    def __init__(self, delta: float = 0.3, ratio: float = 0.1, *, layers: tuple[int, ...]) -> None:
        _check("delta", delta, 0.0, math.inf)
        _check("ratio", ratio, 0.0, 1.0, open_at="low")
        if not layers or min(layers) < 1:
            raise UserError(f"compress.layers must be positive layer sizes, got {layers}")
        self.delta, self.ratio, self.layers = delta, ratio, tuple(layers)
        self.total: Tensor | None = None  # (K,) float64 sum of this epoch's signals
        self.count = 0
        self.epoch = -1  # epoch of the running mean, -1 before the first step
        self.last_votes = 0

    def signal(self, acc: Tensor, kept: Tensor | None, grad: Tensor | None = None) -> Tensor:
        """Return each device's relative loss in the sum of per-layer norms: (K,) float64."""
        full = layer_norms(acc if grad is None else grad, self.layers).sum(1)  # (K,)
        if kept is not None:
            top = layer_norms(kept, self.layers).sum(1)
        else:
            top = topk_layer_norms(acc, self.layers, self.ratio).sum(1)
        return _ratio_lost(full, top)

    def decide(
        self, acc: Tensor, kept: Tensor | None, epoch: int, grad: Tensor | None = None
    ) -> int:
        """Add this step's signal to the epoch mean and return 1 (compress) or 0 (dense)."""
        sig = self.signal(acc, kept, grad)  # (K,)
        if epoch != self.epoch or self.total is None or self.total.shape != sig.shape:
            self.total, self.count, self.epoch = torch.zeros_like(sig), 0, epoch
        self.total = self.total + sig
        self.count += 1
        self.last_votes = int((self.total / self.count <= self.delta).sum())
        return int(self.last_votes >= sig.numel() // 2)

    @property
    def mean(self) -> Tensor | None:
        """Return the running mean of the signal over the current epoch (K,), if any."""
        return None if self.total is None else self.total / max(self.count, 1)

    def vote(self, local: int) -> float:
        """Return how many of this process's devices vote to compress."""
        return float(self.last_votes)

    def agree(self, total: float, k: int, world: int, local: int) -> int:
        """Return 1 (compress) when at least int(K / 2) devices voted for it (authors' code)."""
        return int(round(total) >= k // 2)

    def state_dict(self) -> State:
        """Return the epoch's signal sum (empty before the first step), count and epoch."""
        total = torch.zeros(0, dtype=torch.float64) if self.total is None else self.total.clone()
        return {"total": total, "count": self.count, "epoch": self.epoch}

    def load_state_dict(self, d: State) -> None:
        """Restore the running mean of the current epoch."""
        total = _tensor(d, "total")
        self.total = None if total.numel() == 0 else total.double()
        self.count, self.epoch = int(_number(d, "count")), int(_number(d, "epoch"))


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
        _check("eta", eta, 0.0, math.inf)
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
        self, acc: Tensor, kept: Tensor | None, epoch: int, grad: Tensor | None = None
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
        delta = _tensor(d, "delta")
        self.delta = None if delta.numel() == 0 else delta
        self.count, self.prev = int(_number(d, "count")), _number(d, "prev")
        self.level = int(_number(d, "level"))


@dataclass(frozen=True, slots=True)
class SwitchArgs:
    """What a SWITCHES builder is given: the compress section's values and the model's layers."""

    ratio: float  # compress.ratio
    delta: float  # compress.delta
    ewma: float  # compress.ewma
    eta: float  # compress.eta
    critical_ratio: float  # compress.critical_ratio
    per_layer: bool  # compress.per_layer
    layers: tuple[int, ...]  # parameter count of each layer
    devices: int  # K, all devices of the run
    make: Callable[[float], Compressor]  # the configured compressor at a ratio
    reduce: Callable[[Tensor], Tensor] | None  # sum over the processes; None in one process


Levels = tuple[list[Compressor], Switch]  # (compressor of each level, the switch picking one)


def _fixed(a: SwitchArgs) -> Levels:
    return [a.make(a.ratio)], Fixed(0)


def _scadles(a: SwitchArgs) -> Levels:
    layers = a.layers if a.per_layer else None
    return [Identity(), a.make(a.ratio)], ScadlesSwitch(a.delta, a.ewma, a.ratio, layers)


def _code(a: SwitchArgs) -> Levels:
    return [Identity(), a.make(a.ratio)], CodeSwitch(a.delta, a.ratio, layers=a.layers)


def _accordion(a: SwitchArgs) -> Levels:
    critical = Identity() if a.critical_ratio >= 1.0 else a.make(a.critical_ratio)
    switch = AccordionSwitch(a.eta, low=0, high=1, reduce=a.reduce, devices=a.devices)
    return [critical, a.make(a.ratio)], switch


# compress.policy -> builder of the levels and their switch; register a builder to add one
SWITCHES: Registry[Callable[[SwitchArgs], Levels]] = Registry(
    "compression switch",
    {"fixed": _fixed, "scadles": _scadles, "code": _code, "accordion": _accordion},
    key="compress.policy",
)
