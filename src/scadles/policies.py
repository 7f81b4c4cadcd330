"""Conventional DDL vs ScaDLES: how big each device's batch is, how updates are weighted, the LR.

paper 2.1 (Eq. 4a-4c) and 3: conventional DDL waits for a fixed batch on every device and averages
equally; ScaDLES trains on what the stream delivered (rate x window, clipped to [b_min, b_max]),
weights each device by its batch and scales the learning rate by sum_j b_j / B with B = batch * K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scadles.registry import Registry


@dataclass(frozen=True, slots=True)
class Policy:
    """A POLICIES entry: its batch and weighting rule, and the defaults it gives the keys left
    unset (paper 2.1-2.2, 5.7)."""

    buffer: str  # buffer.policy
    compressor: str  # compress.name
    switch: str  # compress.policy
    lr_scaling: bool  # policy.lr_scaling
    fixed_batch: bool  # every device waits for policy.batch (else rate x window, [b_min, b_max])
    rate_weighted: bool  # aggregate with b_i / sum b (else equally over non-empty devices)


POLICIES: Registry[Policy] = Registry(
    "policy",
    {
        "scadles": Policy("truncation", "topk", "ours", True, False, True),
        "ddl": Policy("persistence", "none", "fixed", False, True, False),
    },
    key="policy.name",
)


@dataclass(frozen=True, slots=True)
class BatchRule:
    """One policy's batch, weighting and learning-rate rules (its flags come from POLICIES)."""

    name: str
    batch: int
    b_min: int
    b_max: int
    window_s: float
    lr_scaling: bool
    warmup_steps: int = 0  # policy.warmup_steps: steps over which a scale above 1 is reached
    scale_max: float | None = None  # policy.lr_scale_max: the largest scale used

    @property
    def fixed(self) -> bool:
        """Return whether every device waits for the same fixed batch (conventional DDL)."""
        return POLICIES.get(self.name).fixed_batch

    def demand(self, rates: torch.Tensor) -> torch.Tensor:
        """Return each device's batch: the fixed batch (DDL) or rate x window in [b_min, b_max].

        A device whose buffer holds fewer samples waits for its stream to deliver them; under
        ScaDLES that only happens when an iteration is shorter than the window (or at b_min).
        """
        if self.fixed:
            return torch.full(rates.shape, self.batch, dtype=torch.int64)  # (K,)
        return (rates * self.window_s).round().clamp(self.b_min, self.b_max).to(torch.int64)

    def device_weights(self, b: torch.Tensor) -> torch.Tensor:
        """Return weights summing to 1: b_i / sum b (paper Eq. 4a), or equal over active devices."""
        active = (b > 0).double()  # (K,)
        w = b.double() if POLICIES.get(self.name).rate_weighted else active
        total = w.sum()
        return w / total if float(total) > 0 else w

    def lr_factor(self, b: torch.Tensor, step: int = 0) -> float:
        """Return the learning-rate scale of the step after `step` steps, or 1 without scaling.

        The linear scale s = sum_j b_j / (batch * K) (paper Eq. 4c), capped at scale_max [ours];
        a scale above 1 is reached by a linear warm-up from 1 over warmup_steps steps, as Goyal
        et al. pair with the linear scaling rule: 1 + (s - 1) * min(1, (step + 1) / warmup)
        [ours]. A scale at or below 1 is used at once (no warm-up lowers a learning rate).
        """
        if not self.lr_scaling:
            return 1.0
        scale = float(b.sum()) / (self.batch * int(b.numel()))
        if self.scale_max is not None:
            scale = min(scale, self.scale_max)
        if scale > 1.0 and self.warmup_steps > 0:
            scale = 1.0 + (scale - 1.0) * min(1.0, (step + 1) / self.warmup_steps)
        return scale


def lr_schedule(lr: float, milestones: tuple[float, ...], gamma: float, epoch: float) -> float:
    """Return the multi-step learning rate at a (sample-)epoch."""
    passed = sum(1 for m in milestones if epoch >= m)
    return lr * gamma**passed
