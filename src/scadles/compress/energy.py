"""ScaDLES' adaptive-compression rules: compress when Top-k keeps enough of the gradient.

Three readings of one idea, each named for its source and selectable as `compress.policy`:

- `paper` ([paper] Section 3.3, as printed): signal_i = |‖g_i‖² − ‖Topk(g_i)‖²| / ‖g_i‖² on the
  whole model, the raw gradient on both sides (no error feedback), smoothed by an EWMA (the
  paper names one but gives no factor; `compress.ewma`, 0 = no smoothing, is ours).
- `ours` (our reading, the default): the same squared ratio with Top-k taken of g_i + e_i, the
  update that is actually sent (as the authors' code and GraVAC do), EWMA factor 0.9 [ours].
- `code` ([authors' code], `launch/adaptive_compression.py`): layer-wise Top-k of g_l + e_l,
  unsquared sums of per-layer norms Σ_l‖g_l‖ against Σ_l‖Topk(g_l + e_l)‖, an arithmetic mean
  over the steps of each device's own local epoch, votes >= int(K / 2).

`paper` and `ours` compress when at least half of the K devices vote for it (ties compress, our
reading: the paper decides "for each device", one collective needs one decision).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scadles.compress.switch import (
    State,
    check_range,
    layer_norms,
    ratio_lost,
    state_tensor,
    topk_layer_norms,
)
from scadles.errors import UserError


class ScadlesSwitch:
    """The squared-energy rules `paper` and `ours`: EWMA of the lost energy, majority vote.

    signal_i = |‖g_i‖² − ‖Topk(x_i)‖²| / ‖g_i‖² with x = acc (g + e) when `feedback_in_signal`
    (ours), x = g as printed in the paper otherwise; g = `grad` (acc when omitted). Top-k is over
    all P values, or per layer when `layers` is given. Each device's signal is smoothed by an EWMA
    whose first observation initialises it; device i votes to compress when its smoothed signal
    is <= delta; the step is compressed (level 1) when votes * 2 >= K, else dense (level 0).
    A given `kept` (K, P), Topk(acc), is used instead of recomputing it when x = acc.
    """

    def __init__(
        self,
        delta: float = 0.3,
        ewma: float = 0.9,
        ratio: float = 0.1,
        layers: tuple[int, ...] | None = None,
        *,
        feedback_in_signal: bool = True,
    ) -> None:
        check_range("delta", delta, 0.0, math.inf)
        check_range("ewma", ewma, 0.0, 1.0, open_at="high")
        check_range("ratio", ratio, 0.0, 1.0, open_at="low")
        self.delta, self.ewma, self.ratio, self.layers = delta, ewma, ratio, layers
        self.feedback_in_signal = feedback_in_signal
        self.smoothed: Tensor | None = None  # (K,) float64 EWMA of the signal
        self.last_votes = 0
        self.last_signal: Tensor | None = None  # (K,) this step's raw signal

    def signal(self, acc: Tensor, kept: Tensor | None, grad: Tensor | None = None) -> Tensor:
        """Return each device's fraction of squared norm lost by Top-k: (K,) float64."""
        ref = acc if grad is None else grad
        total = torch.linalg.vector_norm(ref, dim=1) ** 2  # (K,)
        source = acc if self.feedback_in_signal else ref
        if kept is not None and (self.feedback_in_signal or grad is None):
            energy = torch.linalg.vector_norm(kept, dim=1) ** 2  # (K,)
        else:
            energy = (topk_layer_norms(source, self.layers, self.ratio) ** 2).sum(1)  # (K,)
        return ratio_lost(total, energy)

    def decide(
        self,
        acc: Tensor,
        kept: Tensor | None,
        epoch: int,
        grad: Tensor | None = None,
        b: Tensor | None = None,
    ) -> int:
        """Update the EWMA with this step's signal and return 1 (compress) or 0 (dense)."""
        sig = self.signal(acc, kept, grad)  # (K,)
        self.last_signal = sig
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
        s = state_tensor(d, "smoothed")
        self.smoothed = None if s.numel() == 0 else s.double()


class CodeSwitch:
    """The authors'-code rule ([authors' code]): sums of per-layer norms, local-epoch mean.

    signal_i = |Σ_l ‖g_l‖ − Σ_l ‖Topk_l(acc_l)‖| / Σ_l ‖g_l‖ with unsquared per-layer L2 norms
    and layer-wise Top-k; g = `grad` (acc when omitted). The signal is averaged arithmetically
    over the steps of each device's current local epoch: with `sizes` (K,), the samples of each
    device's partition, device i's epoch is floor(samples it trained before this step / sizes_i)
    and its mean restarts (this step included) when that changes, as the code's meter restarts
    at each rank's pass over its own loader; without sizes every device uses the given global
    `epoch`. Devices vote when their mean is <= delta; the step is compressed when
    votes >= int(K / 2) (so K = 1 always compresses and an odd K needs fewer than half).
    """

    def __init__(
        self,
        delta: float = 0.3,
        ratio: float = 0.1,
        *,
        layers: tuple[int, ...],
        sizes: Tensor | None = None,
    ) -> None:
        check_range("delta", delta, 0.0, math.inf)
        check_range("ratio", ratio, 0.0, 1.0, open_at="low")
        if not layers or min(layers) < 1:
            raise UserError(f"compress.layers must be positive layer sizes, got {layers}")
        self.delta, self.ratio, self.layers = delta, ratio, tuple(layers)
        self.sizes = None if sizes is None else sizes.double().clamp(min=1)  # (K,)
        self.total: Tensor | None = None  # (K,) float64 sum of each device's epoch signals
        self.count: Tensor | None = None  # (K,) float64 steps in each device's epoch so far
        self.epochs: Tensor | None = None  # (K,) float64 local epoch of each running mean
        self.trained: Tensor | None = None  # (K,) float64 samples each device trained
        self.last_votes = 0
        self.last_signal: Tensor | None = None

    def signal(self, acc: Tensor, kept: Tensor | None, grad: Tensor | None = None) -> Tensor:
        """Return each device's relative loss in the sum of per-layer norms: (K,) float64."""
        full = layer_norms(acc if grad is None else grad, self.layers).sum(1)  # (K,)
        if kept is not None:
            top = layer_norms(kept, self.layers).sum(1)
        else:
            top = topk_layer_norms(acc, self.layers, self.ratio).sum(1)
        return ratio_lost(full, top)

    def _local_epochs(self, k: int, epoch: int, b: Tensor | None) -> Tensor:
        """Return each device's epoch this step (K,), and count its batch as trained."""
        if self.trained is None or self.trained.shape[0] != k:
            self.trained = torch.zeros(k, dtype=torch.float64)
        if self.sizes is None or b is None:
            return torch.full((k,), float(epoch), dtype=torch.float64)
        if self.sizes.shape[0] != k:
            raise ValueError(f"CodeSwitch has {self.sizes.shape[0]} partition sizes, got {k}")
        now = torch.floor(self.trained / self.sizes)  # (K,) before this step's batch
        self.trained = self.trained + b.double()
        return now

    def decide(
        self,
        acc: Tensor,
        kept: Tensor | None,
        epoch: int,
        grad: Tensor | None = None,
        b: Tensor | None = None,
    ) -> int:
        """Add this step's signal to each device's epoch mean; return 1 (compress) or 0."""
        sig = self.signal(acc, kept, grad)  # (K,)
        self.last_signal = sig
        k = sig.numel()
        now = self._local_epochs(k, epoch, b)  # (K,)
        if self.total is None or self.count is None or self.epochs is None or len(self.total) != k:
            self.total, self.count = torch.zeros_like(sig), torch.zeros_like(sig)
            self.epochs = now.clone()
        fresh = now != self.epochs  # (K,) devices whose local epoch began this step
        self.total = torch.where(fresh, 0.0, self.total) + sig
        self.count = torch.where(fresh, 0.0, self.count) + 1.0
        self.epochs = now
        self.last_votes = int((self.total / self.count <= self.delta).sum())
        return int(self.last_votes >= k // 2)

    @property
    def mean(self) -> Tensor | None:
        """Return the running mean of the signal over each device's epoch (K,), if any."""
        if self.total is None or self.count is None:
            return None
        return self.total / self.count.clamp(min=1)

    def vote(self, local: int) -> float:
        """Return how many of this process's devices vote to compress."""
        return float(self.last_votes)

    def agree(self, total: float, k: int, world: int, local: int) -> int:
        """Return 1 (compress) when at least int(K / 2) devices voted for it (authors' code)."""
        return int(round(total) >= k // 2)

    def state_dict(self) -> State:
        """Return the epoch sums, counts, epochs and trained samples (empty before a step)."""
        empty = torch.zeros(0, dtype=torch.float64)

        def t(x: Tensor | None) -> Tensor:
            return empty if x is None else x.clone()

        return {
            "total": t(self.total),
            "count": t(self.count),
            "epochs": t(self.epochs),
            "trained": t(self.trained),
        }

    def load_state_dict(self, d: State) -> None:
        """Restore each device's running mean and sample count."""

        def t(key: str) -> Tensor | None:
            x = state_tensor(d, key)
            return None if x.numel() == 0 else x.double()

        self.total, self.count = t("total"), t("count")
        self.epochs, self.trained = t("epochs"), t("trained")
