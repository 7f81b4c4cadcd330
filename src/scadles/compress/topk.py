"""Top-k sparsification, whole-model or layer-wise (paper §2.4; the authors' code is layer-wise).

A sparse payload holds per-device values and indices, (K, k) each; on the wire a kept entry costs
8 bytes by default (fp32 value + int32 index; indices are held as int64 here only because torch
indexes with them); `index_bytes = 8` accounts int64 indices, as the authors' code sends them.
Sparse payloads travel by all-gather, since devices keep different coordinates.
"""

from __future__ import annotations

import torch

from scadles.compress.base import Payload

BYTES_PER_ENTRY = 8.0  # fp32 value + int32 index


def sparse_payload(
    values: torch.Tensor, indices: torch.Tensor, p: int, entry_bytes: float = BYTES_PER_ENTRY
) -> Payload:
    """Return the all-gather payload of per-device (values, indices), each (K, k), over P coords."""
    k_dev, kept = values.shape
    per_device = torch.full((k_dev,), float(kept), dtype=torch.float64)  # (K,)
    numel = torch.full((k_dev,), p, dtype=torch.int64)  # (K,) model size, for decompression
    data = {"values": values, "indices": indices, "numel": numel}
    return Payload(data, entry_bytes * per_device, per_device, "allgather")


def sparse_decompress(payload: Payload) -> torch.Tensor:
    """Scatter each device's kept values into a dense (K, P) tensor of zeros."""
    vals, idx = payload.data["values"], payload.data["indices"]  # (K, k) each
    p = int(payload.data["numel"][0])
    return torch.zeros(vals.shape[0], p, dtype=vals.dtype, device=vals.device).scatter_(
        1, idx, vals
    )


def sparse_aggregate(payload: Payload, weights: torch.Tensor) -> torch.Tensor:
    """Return sum_i w_i * sparse_i as a dense (P,) without materialising (K, P)."""
    vals, idx = payload.data["values"], payload.data["indices"]  # (K, k) each
    p = int(payload.data["numel"][0])
    weighted = vals * weights.to(vals.dtype)[:, None]  # (K, k)
    out = torch.zeros(p, dtype=vals.dtype, device=vals.device)  # (P,)
    return out.index_add_(0, idx.flatten(), weighted.flatten())


def keep_count(n: int, ratio: float) -> int:
    """Return how many of n entries a compression ratio keeps: max(1, int(n * ratio))."""
    return max(1, int(n * ratio))


class TopK:
    """Keep the k largest-magnitude entries per device, of the whole model or of each layer."""

    __slots__ = ("index_bytes", "layers", "name", "ratio")

    def __init__(
        self, ratio: float, layers: tuple[int, ...] | None = None, index_bytes: int = 4
    ) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"TopK ratio must be in (0, 1], got {ratio}")
        if index_bytes not in (4, 8):
            raise ValueError(f"TopK index_bytes must be 4 or 8, got {index_bytes}")
        self.index_bytes = index_bytes
        self.ratio = ratio
        self.layers = layers  # sizes of the parameter tensors in order, or None for whole-model
        self.name = "topk" if layers is None else "topk_layer"

    def __repr__(self) -> str:
        return f"TopK(ratio={self.ratio}, layers={self.layers}, index_bytes={self.index_bytes})"

    def compress(self, updates: torch.Tensor, gen: torch.Generator) -> Payload:
        """Return the per-device top-k entries (by magnitude) as a sparse payload."""
        p = updates.shape[1]
        if self.layers is None:
            _, idx = updates.abs().topk(keep_count(p, self.ratio), dim=1)  # (K, k)
        else:
            idx = self._layer_indices(updates)  # (K, sum k_l)
        return sparse_payload(updates.gather(1, idx), idx, p, 4.0 + self.index_bytes)

    def _layer_indices(self, updates: torch.Tensor) -> torch.Tensor:
        """Return the top-k_l indices of each layer, all devices at once, offset into P."""
        assert self.layers is not None
        if sum(self.layers) != updates.shape[1]:
            raise ValueError(
                f"TopK layers sum to {sum(self.layers)}, updates have {updates.shape[1]}"
            )
        parts, offset = [], 0
        for n in self.layers:
            _, idx = updates[:, offset : offset + n].abs().topk(keep_count(n, self.ratio), dim=1)
            parts.append(idx + offset)
            offset += n
        return torch.cat(parts, dim=1)

    def decompress(self, payload: Payload) -> torch.Tensor:
        """Return the dense (K, P) sparse updates."""
        return sparse_decompress(payload)

    def aggregate(self, payload: Payload, weights: torch.Tensor) -> torch.Tensor:
        """Return the weighted sum of the sparse updates, (P,)."""
        return sparse_aggregate(payload, weights)
