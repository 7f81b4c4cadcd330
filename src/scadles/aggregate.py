"""Aggregation over the device axis: a pure function of (update, weight) pairs."""

from __future__ import annotations

import torch


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Return sum_i w_i * u_i over the device axis; weights already sum to 1 (paper Eq. 4b)."""
    # updates: (K, P), weights: (K,)
    return weights.to(updates.dtype) @ updates


def sample_weights(seg: torch.Tensor, b: torch.Tensor, device_w: torch.Tensor) -> torch.Tensor:
    """Return per-sample loss weights w_i / b_i so one backward gives the weighted mean gradient.

    With mean-loss gradients g_i per device, sum_i w_i g_i is the gradient of
    sum_n (w_seg(n) / b_seg(n)) l_n: the weighted mean of per-device gradients *is* one
    gradient of the union batch.
    """
    per_dev = torch.where(b > 0, device_w / b.clamp(min=1).double(), 0.0)  # (K,)
    return per_dev.to(seg.device)[seg]  # (N,) on the rows' device (run.device)
