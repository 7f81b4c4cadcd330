"""Random-k sparsification: k coordinates per device drawn uniformly without replacement."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scadles.compress.base import Payload
from scadles.compress.topk import keep_count, sparse_aggregate, sparse_decompress, sparse_payload


@dataclass(frozen=True, slots=True)
class RandK:
    """Keep k random coordinates per device (each device its own draw); P/k-scaled if unbiased."""

    ratio: float
    unbiased: bool = False
    name = "randk"

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"RandK ratio must be in (0, 1], got {self.ratio}")

    def compress(self, updates: torch.Tensor, gen: torch.Generator) -> Payload:
        """Return k uniformly chosen entries per device as a sparse payload."""
        k_dev, p = updates.shape
        k = keep_count(p, self.ratio)
        keys = torch.rand(k_dev, p, generator=gen, device=updates.device)  # (K, P)
        _, idx = keys.topk(k, dim=1)  # (K, k): a uniform k-subset per device
        vals = updates.gather(1, idx)  # (K, k)
        if self.unbiased:
            vals = vals * (p / k)  # E[decompress] = updates
        return sparse_payload(vals, idx, p)

    def decompress(self, payload: Payload) -> torch.Tensor:
        """Return the dense (K, P) sparse updates."""
        return sparse_decompress(payload)

    def aggregate(self, payload: Payload, weights: torch.Tensor) -> torch.Tensor:
        """Return the weighted sum of the sparse updates, (P,)."""
        return sparse_aggregate(payload, weights)
