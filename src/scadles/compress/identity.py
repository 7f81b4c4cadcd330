"""No compression: every device sends its dense update; the reference for every compressor."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scadles.aggregate import weighted_mean
from scadles.compress.base import Payload


@dataclass(frozen=True, slots=True)
class Identity:
    """Send the dense fp32 updates with one all-reduce."""

    name = "identity"

    def compress(self, updates: torch.Tensor, gen: torch.Generator) -> Payload:
        """Return the updates themselves as the payload."""
        k, p = updates.shape
        per_device = torch.full((k,), float(p), dtype=torch.float64)  # (K,)
        return Payload({"values": updates}, 4.0 * per_device, per_device, "allreduce")

    def decompress(self, payload: Payload) -> torch.Tensor:
        """Return the dense updates, bit for bit."""
        return payload.data["values"]

    def aggregate(self, payload: Payload, weights: torch.Tensor) -> torch.Tensor:
        """Return the weighted sum of the updates, exactly as without compression."""
        return weighted_mean(payload.data["values"], weights)
