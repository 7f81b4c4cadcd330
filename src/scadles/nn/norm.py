"""Normalisation layers that see which device each row came from (per-device BatchNorm).

Models take only `forward(x)`. Per-device BatchNorm is opt-in: a model (built here or a user's
own) uses `SegmentBatchNorm` layers, and the caller says which device each row came from by
running the forward inside `with device_segments(seg):`; the layers read it with
`current_segments()` (None: the whole batch is one device). A plain `torch.nn.BatchNorm*`
ignores the segments and normalises over the rows it is given: the union batch in the dense
exchange, each device's rows when per-device gradients are computed by the loop fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scadles.registry import Registry


@dataclass(frozen=True, slots=True)
class Segments:
    """Which device each row of a flat batch belongs to (for per-device normalisation)."""

    ids: Tensor  # (N,) int64 device id of each row, in [0, count)
    count: int  # K, number of devices
    weight: Tensor | None = None  # (N,) float 0/1 mask of valid rows, None = all valid

    @staticmethod
    def from_lengths(lengths: Tensor) -> Segments:
        """Describe a flat batch made of device 0's rows, then device 1's, ... (ragged layout)."""
        count = int(lengths.numel())
        ids = torch.repeat_interleave(torch.arange(count, device=lengths.device), lengths.long())
        return Segments(ids=ids, count=count, weight=None)

    @staticmethod
    def from_mask(mask: Tensor) -> Segments:
        """Describe a padded (K, B) layout flattened to K*B rows; mask marks the valid rows."""
        count, batch = mask.shape
        ids = torch.arange(count, device=mask.device).repeat_interleave(batch)  # (K*B,)
        return Segments(ids=ids, count=count, weight=mask.reshape(-1))

    @staticmethod
    def single(weight: Tensor) -> Segments:
        """Describe one device whose valid rows are marked by weight (the form used under vmap)."""
        ids = torch.zeros(weight.shape[0], dtype=torch.long, device=weight.device)  # (B,)
        return Segments(ids=ids, count=1, weight=weight)


_SEGMENTS: ContextVar[Segments | None] = ContextVar("scadles_segments", default=None)


@contextmanager
def device_segments(seg: Segments | None) -> Iterator[Segments | None]:
    """Let every SegmentBatchNorm called in the body normalise per device as seg says."""
    token = _SEGMENTS.set(seg)
    try:
        yield seg
    finally:
        _SEGMENTS.reset(token)


def current_segments() -> Segments | None:
    """Return the segments set by the innermost `device_segments` (None: one device)."""
    return _SEGMENTS.get()


def _segment_sum(v: Tensor, ids: Tensor, count: int) -> Tensor:
    """Sum the rows of v (N, C) per segment into (count, C); count 1 is a plain sum (vmap-safe)."""
    if count == 1:
        return v.sum(0, keepdim=True)
    return v.new_zeros((count, *v.shape[1:])).index_add(0, ids, v)


def _gather(stat: Tensor, ids: Tensor, count: int) -> Tensor:
    """Give each row its segment's statistic: (count, C) -> (N, C), broadcast when count is 1.

    index_select, not stat[ids]: its backward is an index_add, which sums in a fixed order; the
    backward of advanced indexing accumulates with atomic adds on CPU threads (order varies)."""
    return stat if count == 1 else stat.index_select(0, ids)


class SegmentBatchNorm(nn.Module):
    """BatchNorm whose training statistics are computed over each device's own rows.

    In train mode the mean and biased variance used for normalising come from each segment's valid
    rows (and all spatial positions), all segments at once; the segments are the ones set by the
    caller with `device_segments` (none set: the whole batch is one device). The running
    statistics are updated with momentum 0.1 from the row-count-weighted average over non-empty
    devices of the per-device mean and unbiased variance, the equivalent of averaging each device's
    BatchNorm buffers (a device with one value per channel has no unbiased variance and only
    updates the mean). Set `update_stats = False` (or use `no_running_stats(model)`) to skip that
    side effect, which `torch.func.vmap` forbids; eval mode normalises with the running statistics.
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        self.update_stats = True
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise x (N, C, *spatial) per device in train mode, with running stats in eval."""
        seg = current_segments()
        whole = seg is None or (seg.count == 1 and seg.weight is None)
        if not self.training or (whole and x.numel() > self.channels):
            track = self.update_stats or not self.training
            return F.batch_norm(
                x,
                self.running_mean if track else None,
                self.running_var if track else None,
                self.weight,
                self.bias,
                training=self.training,
                momentum=self.momentum,
                eps=self.eps,
            )
        if seg is None:
            seg = Segments(torch.zeros(x.shape[0], dtype=torch.long, device=x.device), 1)
        return self._segment_forward(x, seg)

    def _segment_forward(self, x: Tensor, seg: Segments) -> Tensor:
        """Normalise each row with its own device's mean and biased variance (two-pass)."""
        n, ids, count = x.shape[0], seg.ids, seg.count
        xr = x.reshape(n, self.channels, -1)  # (N, C, S)
        rows = xr.new_ones(n) if seg.weight is None else seg.weight.to(xr.dtype)  # (N,)
        positions = xr.shape[2]
        cnt = _segment_sum(rows[:, None], ids, count)[:, 0]  # (K,) valid rows per device
        denom = (cnt * positions).clamp(min=1.0)[:, None]  # (K, 1)
        mean = _segment_sum(xr.sum(2) * rows[:, None], ids, count) / denom  # (K, C)
        centred = xr - _gather(mean, ids, count)[:, :, None]  # (N, C, S)
        sq = (centred * centred).sum(2) * rows[:, None]  # (N, C)
        var = _segment_sum(sq, ids, count) / denom  # (K, C)
        if self.update_stats:
            self._update_running(mean.detach(), var.detach(), cnt.detach(), positions)
        scale = self.weight * torch.rsqrt(var + self.eps)  # (K, C)
        out = centred * _gather(scale, ids, count)[:, :, None] + self.bias[:, None]  # (N, C, S)
        return out.reshape(x.shape)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, cnt: Tensor, positions: int) -> None:
        """Blend the count-weighted device mean and unbiased variance into the buffers."""
        elems = cnt * positions  # (K,)
        if float(cnt.sum()) <= 0.0:
            return
        w_mean = cnt / cnt.sum()  # (K,)
        self.running_mean.lerp_(w_mean @ mean, self.momentum)
        has_var = cnt * (elems > 1).to(cnt.dtype)  # (K,) devices with an unbiased variance
        if float(has_var.sum()) <= 0.0:
            return
        unbiased = var * (elems / (elems - 1).clamp(min=1.0))[:, None]  # (K, C)
        self.running_var.lerp_((has_var / has_var.sum()) @ unbiased, self.momentum)


class GroupNormSeg(nn.GroupNorm):
    """GroupNorm (per sample, so segments are irrelevant) with groups reduced to divide channels."""

    def __init__(self, groups: int, channels: int) -> None:
        super().__init__(math.gcd(groups, channels), channels)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each row over its channel groups."""
        return super().forward(x)


class Identity(nn.Module):
    """No normalisation."""

    def forward(self, x: Tensor) -> Tensor:
        """Return x unchanged."""
        return x


NORMS: Registry[Callable[[int, int], nn.Module]] = Registry(
    "norm",
    {
        "none": lambda channels, groups: Identity(),
        "group": lambda channels, groups: GroupNormSeg(groups, channels),
        "batch": lambda channels, groups: SegmentBatchNorm(channels),
    },
    key="model.norm",
)


def make_norm(kind: str, channels: int, groups: int) -> nn.Module:
    """Build the normalisation layer named kind (NORMS) for a tensor of `channels` channels."""
    return NORMS.get(kind)(channels, groups)


@contextmanager
def no_running_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Skip running-statistic updates of every per-device BatchNorm in model (needed under vmap)."""
    layers = [m for m in model.modules() if isinstance(m, SegmentBatchNorm)]
    saved = [m.update_stats for m in layers]
    for m in layers:
        m.update_stats = False
    try:
        yield model
    finally:
        for m, flag in zip(layers, saved, strict=True):
            m.update_stats = flag
