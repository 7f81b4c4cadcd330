"""Error-feedback memory: what compression dropped is added back next step (GRACE's Memory).

The memory is its own object, owned across steps, so it survives a switch between compressors.
GRACE order: acc = compensate(updates) -> payload = compress(acc)
-> update(acc, decompress(payload)) -> send payload.
After a dense (identity) step the residual is exactly zero.
"""

from __future__ import annotations

import torch


class ErrorFeedback:
    """Per-device residual memory (K, P); a no-op that keeps the residual zero when disabled."""

    __slots__ = ("enabled", "residual")

    def __init__(self, residual: torch.Tensor, enabled: bool = True) -> None:
        self.residual = residual  # (K, P)
        self.enabled = enabled

    @classmethod
    def zeros(
        cls, k: int, p: int, *, enabled: bool = True, dtype: torch.dtype = torch.float32
    ) -> ErrorFeedback:
        """Return an empty memory for k devices and p parameters."""
        return cls(torch.zeros(k, p, dtype=dtype), enabled)

    def compensate(self, updates: torch.Tensor) -> torch.Tensor:
        """Return updates plus the residual carried from earlier steps, (K, P)."""
        return updates + self.residual if self.enabled else updates

    def update(self, acc: torch.Tensor, decompressed: torch.Tensor) -> None:
        """Keep what the compressor dropped: residual = acc - decompressed."""
        if self.enabled:
            self.residual = (acc - decompressed).to(self.residual.dtype)

    def reset(self) -> None:
        """Forget every residual."""
        self.residual = torch.zeros_like(self.residual)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Return the residual (the memory's only state)."""
        return {"residual": self.residual}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a residual saved by state_dict."""
        self.residual = state["residual"]
