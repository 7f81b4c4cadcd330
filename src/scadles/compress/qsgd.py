"""QSGD: s-level stochastic quantisation of each device's update (Alistarh et al. 2017).

Per device, the norm ||x|| is sent as one fp32 and each coordinate as a sign and a level
l in {0..s}, l = floor(|x| / ||x|| * s + u) with u ~ U[0, 1), so E[l] = |x| / ||x|| * s and the
decoded value sign * ||x|| * l / s is unbiased. Wire cost per device: 4 + ceil(P * b / 8) bytes
with b = ceil(log2(s + 1)) + 1 bits per coordinate (magnitude + sign), no entropy coding.
"8-bit" QSGD is levels=127 (7 magnitude bits + sign); the default 256 levels cost 10 bits.
Devices' norms differ, so codes cannot be summed on the wire: the payload is all-gathered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from scadles.compress.base import Payload

MAX_LEVELS = 32767  # levels are held as signed int16


@dataclass(frozen=True, slots=True)
class QSGD:
    """Quantise each device's update to `levels` stochastic levels of its norm."""

    levels: int = 256
    name = "qsgd"

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"QSGD levels must be in [1, {MAX_LEVELS}], got {self.levels}")

    @property
    def bits(self) -> int:
        """Return the bits per coordinate on the wire: magnitude level plus sign."""
        return math.ceil(math.log2(self.levels + 1)) + 1

    def compress(self, updates: torch.Tensor, gen: torch.Generator) -> Payload:
        """Return per-device norms (K,) and signed levels (K, P) drawn with the generator."""
        k, p = updates.shape
        s = self.levels
        norm = torch.linalg.vector_norm(updates, dim=1)  # (K,)
        scale = s / norm.clamp_min(torch.finfo(updates.dtype).tiny)  # (K,)
        u = torch.rand(k, p, generator=gen, device=updates.device, dtype=updates.dtype)  # (K, P)
        level = (updates.abs() * scale[:, None] + u).floor().clamp_(max=s)  # (K, P)
        signed = (torch.sign(updates) * level).to(torch.int16)  # (K, P)
        nbytes = torch.full((k,), 4.0 + math.ceil(p * self.bits / 8), dtype=torch.float64)
        floats = torch.full((k,), float(p), dtype=torch.float64)
        return Payload({"norm": norm, "levels": signed}, nbytes, floats, "allgather")

    def decompress(self, payload: Payload) -> torch.Tensor:
        """Return sign * norm * level / s per device, (K, P)."""
        norm = payload.data["norm"]  # (K,)
        return payload.data["levels"].to(norm.dtype) * (norm / self.levels)[:, None]

    def aggregate(self, payload: Payload, weights: torch.Tensor) -> torch.Tensor:
        """Return sum_i w_i * decoded_i, folding weights into the per-device scale."""
        norm = payload.data["norm"]  # (K,)
        coef = weights.to(norm.dtype) * norm / self.levels  # (K,)
        return coef @ payload.data["levels"].to(norm.dtype)
