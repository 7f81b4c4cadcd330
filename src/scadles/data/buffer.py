"""Device buffers, vectorised over devices, with exact accounting.

A simulated device's buffer is first-in first-out over its arrival sequence, so it is fully
described by two counters per device: ``lo`` (the arrival number of the oldest held sample) and
``hi`` (arrivals so far). Holding 10^6 samples costs nothing, and the identity

    arrived = trained + dropped + held      (per device, at every moment)

is kept by construction and checked by the tests under random rates.

Policies (paper 2.2): *persistence* keeps every unconsumed sample (bounded only by ``capacity``,
dropping the oldest); *truncation* keeps only what arrived during the last iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BUFFER_POLICIES = ("persistence", "truncation")


@dataclass(slots=True)
class StreamBuffer:
    """FIFO buffers of K devices as arrival-number ranges [lo, hi)."""

    lo: torch.Tensor  # (K,) int64
    hi: torch.Tensor  # (K,) int64
    trained: torch.Tensor  # (K,) int64
    dropped: torch.Tensor  # (K,) int64
    capacity: int | None
    truncate_each_step: bool

    @staticmethod
    def empty(k: int, policy: str, capacity: int | None) -> StreamBuffer:
        """Return K empty buffers under a policy."""
        z = torch.zeros(k, dtype=torch.int64)
        return StreamBuffer(
            z.clone(), z.clone(), z.clone(), z.clone(), capacity, policy == "truncation"
        )

    @property
    def held(self) -> torch.Tensor:
        """Samples held per device."""  # (K,)
        return self.hi - self.lo

    def push(self, arrived: torch.Tensor) -> torch.Tensor:
        """Append arrivals; drop the oldest beyond capacity; return drops per device."""
        self.hi = self.hi + arrived
        if self.capacity is None:
            return torch.zeros_like(arrived)
        return self._drop_to(torch.full_like(arrived, self.capacity))

    def take(self, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Consume up to n_i oldest samples; return their first arrival numbers and counts."""
        n = torch.minimum(n.to(torch.int64), self.held)
        start = self.lo.clone()
        self.lo = self.lo + n
        self.trained = self.trained + n
        return start, n

    def end_step(self, arrived_this_step: torch.Tensor) -> torch.Tensor:
        """Apply the policy at the end of a step; return drops per device."""
        if not self.truncate_each_step:
            return torch.zeros_like(arrived_this_step)
        return self._drop_to(arrived_this_step)

    def _drop_to(self, keep: torch.Tensor) -> torch.Tensor:
        """Drop the oldest samples so at most keep_i remain; return drops per device."""
        over = (self.held - keep).clamp(min=0)
        self.lo = self.lo + over
        self.dropped = self.dropped + over
        return over
