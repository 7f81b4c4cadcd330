"""The compressor contract: a (K, P) matrix of per-device updates in, a payload on the wire out.

GRACE's split: a compressor only compresses; error-feedback memory (feedback.py) and
the switch that picks a compressor each step (switch.py) are separate objects. Every compressor
works on all K devices at once; the payload knows what it costs on the wire, per device, and how
it travels (an all-reduce of equal-size dense buffers, or an all-gather of per-device blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

COLLECTIVES = ("allreduce", "allgather")


@dataclass(frozen=True, slots=True)
class Payload:
    """What K devices put on the wire for one step."""

    data: dict[str, torch.Tensor]  # compressor-specific tensors, leading axis K
    nbytes: torch.Tensor  # (K,) float64 bytes each device sends
    floats: torch.Tensor  # (K,) float64 values each device sends (indices not counted)
    collective: str  # "allreduce" or "allgather"


class Compressor(Protocol):
    """Compress per-device updates (K, P); decompress and aggregate payloads."""

    name: str

    def compress(self, updates: torch.Tensor, gen: torch.Generator) -> Payload:
        """Return the payload of updates (K, P)."""
        ...

    def decompress(self, payload: Payload) -> torch.Tensor:
        """Return the dense (K, P) updates the payload stands for."""
        ...

    def aggregate(self, payload: Payload, weights: torch.Tensor) -> torch.Tensor:
        """Return sum_i weights_i * decompress(payload)_i (P,), without (K, P) if possible."""
        ...
