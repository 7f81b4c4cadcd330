"""Half-precision casting (fp16 or bf16): dense, 2 bytes per value, all-reduced."""

from __future__ import annotations

import torch

from scadles.compress.base import Payload

CASTS = {torch.float16: "fp16", torch.bfloat16: "bf16"}


class Cast:
    """Send the dense updates cast to a 16-bit float type; decompress back to fp32."""

    __slots__ = ("dtype", "name")

    def __init__(self, dtype: torch.dtype) -> None:
        if dtype not in CASTS:
            raise ValueError(f"Cast dtype must be float16 or bfloat16, got {dtype}")
        self.dtype = dtype
        self.name = CASTS[dtype]

    def __repr__(self) -> str:
        return f"Cast({self.dtype})"

    def compress(self, updates: torch.Tensor, gen: torch.Generator) -> Payload:
        """Return the updates cast to the 16-bit type."""
        k, p = updates.shape
        per_device = torch.full((k,), float(p), dtype=torch.float64)  # (K,)
        values = updates.to(self.dtype)  # (K, P)
        return Payload({"values": values}, 2.0 * per_device, per_device, "allreduce")

    def decompress(self, payload: Payload) -> torch.Tensor:
        """Return the cast updates as fp32 (every 16-bit value is exact in fp32)."""
        return payload.data["values"].float()

    def aggregate(self, payload: Payload, weights: torch.Tensor) -> torch.Tensor:
        """Return the weighted sum of the cast updates, accumulated in fp32."""
        return weights.float() @ payload.data["values"].float()
