"""Per-device mean-loss gradients for K devices at once (torch.func vmap over a padded layout).

The packed batch (device 0's rows, then device 1's, ...) is padded to (K, B, ...) with a row mask;
`vmap(grad(loss))` runs each device's forward/backward as one batched computation (one call per
group of devices with similar batch sizes, to bound the padding; a group is split into calls of
at most one chunk of rows, `scadles.chunking`, so memory stays bounded in K). Models are plain
`forward(x)` modules; each device's call runs inside `device_segments(Segments.single(mask_row))`,
so per-device BatchNorm (`SegmentBatchNorm`) normalises with that device's valid rows only. Running
statistics cannot be updated under vmap; they are updated once afterwards by a no-grad forward of
the packed batch with the real device ids, in chunks of whole devices (the same update the dense
union-batch step makes). Models that vmap
cannot run (data-dependent control flow, random ops, a torch BatchNorm in train mode, which would
normalise over the padding rows) fall back to a loop over devices, where a torch BatchNorm sees
each device's rows alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from scadles.chunking import (
    CHUNK_ELEMENTS,
    chunk_bounds,
    chunk_rows,
    chunkable,
    deferred_running_stats,
    segments,
)
from scadles.nn import SegmentBatchNorm, Segments, device_segments, no_running_stats

log = logging.getLogger(__name__)

Pad = tuple[Tensor, Tensor, Tensor]  # padded x (K, B, *s), y (K, B), row mask (K, B)


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Return the (name, parameter) pairs that take gradients, in parameter order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def flat_grad_size(model: nn.Module) -> int:
    """Return P, the length of a flattened gradient of model."""
    return sum(p.numel() for _, p in _trainable(model))


def layer_sizes(model: nn.Module) -> tuple[int, ...]:
    """Return the element count of each trainable parameter tensor, in parameter order."""
    return tuple(p.numel() for _, p in _trainable(model))


def layer_shapes(model: nn.Module) -> tuple[tuple[int, ...], ...]:
    """Return the shape of each trainable parameter tensor, in parameter order."""
    return tuple(tuple(p.shape) for _, p in _trainable(model))


def _torch_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """Return model's torch BatchNorm layers (they normalise over every row they are given)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def _reject_batch_stats(model: nn.Module) -> None:
    """Raise ValueError if model has a torch BatchNorm in train mode (it would see padding rows)."""
    if any(m.training for m in _torch_batchnorms(model)):
        raise ValueError("a torch BatchNorm in train mode would normalise over the padding rows")


@contextmanager
def _frozen_stats(model: nn.Module) -> Iterator[None]:
    """Skip running-statistic updates of model's per-device and torch BatchNorm layers."""
    tracked = [m for m in _torch_batchnorms(model) if m.track_running_stats]
    with no_running_stats(model):
        for m in tracked:
            m.track_running_stats = False
        try:
            yield
        finally:
            for m in tracked:
                m.track_running_stats = True


def _offsets(b: Tensor, seg: Tensor) -> Tensor:
    """Return each packed row's position within its device's block (rows are device-major)."""
    starts = torch.cumsum(b, 0) - b  # (K,) first packed row of each device
    return torch.arange(seg.numel(), device=seg.device) - starts[seg]  # (N,)


def _scatter(x: Tensor, y: Tensor, at: tuple[Tensor, Tensor], lengths: Tensor, width: int) -> Pad:
    """Place rows x (n, *s), y (n,) at (slot, offset) of a zero (len(lengths), width) layout."""
    xp = x.new_zeros((lengths.numel(), width, *x.shape[1:]))  # (K, B, *s)
    xp[at] = x
    yp = y.new_zeros((lengths.numel(), width))  # (K, B)
    yp[at] = y
    dtype = x.dtype if x.is_floating_point() else torch.float32
    mask = (torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]).to(dtype)
    return xp, yp, mask


def pad(x: Tensor, y: Tensor, b: Tensor, seg: Tensor) -> Pad:
    """Scatter packed device-major rows (N, ...) into a padded (K, B, ...) layout with a mask.

    B = max b_i; padding rows are zeros (label 0) and have mask 0. The mask has x's float dtype
    (float32 for integer inputs).
    """
    b = b.to(device=seg.device, dtype=torch.long)
    width = int(b.max()) if b.numel() else 0
    return _scatter(x, y, (seg, _offsets(b, seg)), b, width)


def plan_groups(b: Tensor, overhead: float) -> list[Tensor]:
    """Split the non-empty devices into groups of similar batch size, one vmap call each.

    Minimises the padded rows, sum over groups of (devices x largest batch), plus `overhead` rows
    per group (what one more call costs) by dynamic programming over the distinct sizes. Returns
    device-index tensors, largest batches first, each sorted by decreasing batch size.
    """
    order = torch.argsort(b, descending=True, stable=True)  # (K,)
    order = order[b[order] > 0]
    if order.numel() == 0:
        return []
    sizes, counts = torch.unique_consecutive(b[order], return_counts=True)
    u = sizes.cpu().numpy().astype(np.float64)  # (m,) distinct sizes, decreasing
    ends = np.concatenate([[0], np.cumsum(counts.cpu().numpy())])  # (m + 1,)
    best = np.zeros(len(u) + 1)
    start = np.zeros(len(u) + 1, dtype=np.int64)
    for i in range(1, len(u) + 1):
        cost = best[:i] + (ends[i] - ends[:i]) * u[:i] + overhead  # group = sizes j..i-1
        start[i] = int(np.argmin(cost))
        best[i] = cost[start[i]]
    bounds, i = [], len(u)
    while i > 0:
        bounds.append((int(ends[start[i]]), int(ends[i])))
        i = int(start[i])
    return [order[lo:hi] for lo, hi in reversed(bounds)]


class DeviceGrads(NamedTuple):
    """Per-device results of one step (a tuple: `g, loss, logits = grads(...)`)."""

    grads: Tensor  # (K, P) mean-loss gradient of each device, zero for empty devices
    loss: Tensor  # (K,) mean loss of each device, zero for empty devices
    logits: Tensor  # (N, C) logits of every packed row, for prequential accuracy


class PerDeviceGrads:
    """Compute per-device mean-loss gradients g_i flattened in parameter order.

    The strategy (vmap, or a loop over devices when vmap cannot run the model) is decided on the
    first call and kept, or forced by `mode`; the fallback is logged once at INFO with the reason.
    Devices are padded in groups of similar batch size (`plan_groups`; `group_overhead` is what
    one more vmap call is worth in padded rows), so uneven streams do not pay for the largest
    batch on every device. The parameter and buffer dicts are detached views built once, so
    in-place optimizer updates are seen; rebuild the object after replacing parameter tensors
    (e.g. `model.to`). Gradients have the parameters' dtype. `num_classes` sizes the logits of an
    all-empty step (default: the model's `num_classes`, else learned from the first logits).
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str = "auto",
        group_overhead: float = 128.0,
        num_classes: int | None = None,
        chunk_elements: int = CHUNK_ELEMENTS,
    ) -> None:
        if mode not in ("auto", "vmap", "loop"):
            raise ValueError(f"mode must be auto, vmap or loop, got {mode!r}")
        self.model = model
        self.group_overhead = group_overhead
        self.chunk_elements = chunk_elements  # input values per vmapped call (bounded memory)
        named = _trainable(model)
        self.names = tuple(n for n, _ in named)
        self.params = {n: p.detach() for n, p in named}
        self.sizes = tuple(p.numel() for _, p in named)
        self.size = sum(self.sizes)
        self.dtype = named[0][1].dtype if named else torch.float32
        frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        self.buffers = {**dict(model.named_buffers()), **frozen}
        classes = getattr(model, "num_classes", None) if num_classes is None else num_classes
        self.num_classes: int | None = None if classes is None else int(classes)
        seg_bn = any(isinstance(m, SegmentBatchNorm) for m in model.modules())
        self.has_bn = seg_bn or any(m.track_running_stats for m in _torch_batchnorms(model))
        self.mode: str | None = None if mode == "auto" else mode  # "vmap" or "loop" once decided
        self._vmapped: Callable[..., Any] = vmap(
            grad(self._device_loss, has_aux=True), in_dims=(None, 0, 0, 0)
        )

    def _device_loss(
        self, params: dict[str, Tensor], x: Tensor, y: Tensor, mask: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Return one device's masked mean loss over its padded rows, with (loss, logits)."""
        with device_segments(Segments.single(mask)):
            logits = functional_call(self.model, (params, self.buffers), (x,))  # (B, C)
        ce = F.cross_entropy(logits, y, reduction="none")  # (B,)
        loss = (ce * mask).sum() / mask.sum().clamp(min=1.0)
        return loss, (loss.detach(), logits.detach())

    def __call__(self, x: Tensor, y: Tensor, seg: Tensor, b: Tensor) -> DeviceGrads:
        """Return per-device gradients (K, P), mean losses (K,) and packed logits (N, C)."""
        b = b.to(device=seg.device, dtype=torch.long)
        if seg.numel() == 0:
            out = self._empty(int(b.numel()), x)
        elif self.mode is None:
            try:
                out = self._run_vmap(x, y, seg, b)
                self.mode = "vmap"
            except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
                log.info("per-device gradients: vmap failed (%s); looping over devices", err)
                self.mode = "loop"
                out = self._run_loop(x, y, seg, b)
        elif self.mode == "vmap":
            out = self._run_vmap(x, y, seg, b)
        else:
            out = self._run_loop(x, y, seg, b)
        if self.num_classes is None and out.logits.shape[0] > 0:
            self.num_classes = int(out.logits.shape[1])
        self._update_running_stats(x, seg, int(b.numel()))
        return out

    def _classes(self) -> int:
        """Return the logit width C for steps without rows (0 while unknown)."""
        return 0 if self.num_classes is None else self.num_classes

    def _empty(self, k: int, x: Tensor) -> DeviceGrads:
        """Return zero gradients and losses for K devices and no logits (an all-empty step)."""
        c = self._classes()
        zeros = torch.zeros(k, self.size, dtype=self.dtype, device=x.device)  # (K, P)
        return DeviceGrads(zeros, zeros[:, 0].clone(), x.new_zeros((0, c)))

    def _run_vmap(self, x: Tensor, y: Tensor, seg: Tensor, b: Tensor) -> DeviceGrads:
        """Run the devices' forward/backward passes as vmapped calls, per size group and chunk.

        A group is split into calls of at most one chunk's rows (`chunk_rows`) of padded layout,
        so memory stays bounded however many devices a group holds.
        """
        _reject_batch_stats(self.model)
        k, n = int(b.numel()), int(seg.numel())
        starts = torch.cumsum(b, 0) - b  # (K,) first packed row of each device
        per_call = chunk_rows(x, self.chunk_elements)
        flat = torch.empty(k, self.size, dtype=self.dtype, device=x.device)  # (K, P)
        flat[torch.nonzero(b == 0).squeeze(1)] = 0.0  # empty devices (by index: no (K, P) mask)
        loss = torch.zeros(k, dtype=self.dtype, device=x.device)  # (K,)
        logits: Tensor | None = None
        with no_running_stats(self.model):
            for group in plan_groups(b, self.group_overhead):
                width = int(b[group[0]])
                for devs in torch.split(group, max(1, per_call // width)):
                    nb = b[devs]  # (D,)
                    slot = torch.repeat_interleave(torch.arange(len(devs), device=b.device), nb)
                    off = torch.arange(len(slot), device=b.device) - torch.repeat_interleave(
                        torch.cumsum(nb, 0) - nb, nb
                    )  # (n_g,) row within its device
                    rows = starts[devs][slot] + off  # (n_g,) packed rows of these devices
                    xg, yg, mask = _scatter(x[rows], y[rows], (slot, off), nb, width)
                    g, (lg, out) = self._vmapped(self.params, xg, yg, mask)
                    self._write_rows(flat, devs, g)
                    loss[devs] = lg
                    if logits is None:
                        logits = out.new_empty((n, out.shape[-1]))  # (N, C)
                    logits[rows] = out[slot, off]
        assert logits is not None  # seg is not empty, so some group ran
        return DeviceGrads(flat, loss, logits)

    def _write_rows(self, flat: Tensor, devs: Tensor, g: dict[str, Tensor]) -> None:
        """Copy per-parameter gradients (K_g, *shape) into rows devs of flat (K, P)."""
        start = 0
        for name, n in zip(self.names, self.sizes, strict=True):
            flat[devs, start : start + n] = g[name].reshape(devs.numel(), n)
            start += n

    def _run_loop(self, x: Tensor, y: Tensor, seg: Tensor, b: Tensor) -> DeviceGrads:
        """Run one forward/backward per device (fallback for models vmap cannot run)."""
        params = [p for n, p in self.model.named_parameters() if p.requires_grad]
        k, width = int(b.numel()), sum(p.numel() for p in params)
        dtype = params[0].dtype if params else torch.float32
        flat = torch.zeros(k, width, dtype=dtype, device=x.device)  # (K, P)
        losses = torch.zeros(k, dtype=dtype, device=x.device)  # (K,)
        chunks: list[Tensor] = []
        sizes = b.tolist()
        rows = zip(torch.split(x, sizes), torch.split(y, sizes), strict=True)
        with _frozen_stats(self.model), device_segments(None):  # one device per call
            for i, (xi, yi) in enumerate(rows):
                if len(yi) == 0:
                    continue
                logits = self.model(xi)  # (b_i, C)
                loss = F.cross_entropy(logits, yi)
                gs = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
                flat[i] = torch.cat([g.reshape(-1) for g in gs])
                losses[i] = loss.detach()
                chunks.append(logits.detach())
        logits_all = torch.cat(chunks) if chunks else x.new_zeros((0, self._classes()))
        return DeviceGrads(flat, losses, logits_all)

    @torch.no_grad()
    def _update_running_stats(self, x: Tensor, seg: Tensor, k: int) -> None:
        """Blend this batch into BatchNorm running stats once, as the dense union step would."""
        if not (self.has_bn and self.model.training and seg.numel() > 0):
            return
        rows = chunk_rows(x, self.chunk_elements)
        if seg.numel() <= rows or not chunkable(self.model):
            with device_segments(Segments(seg, k, None)):
                self.model(x)
            return
        b = torch.bincount(seg, minlength=k)  # (K,)
        with deferred_running_stats(self.model):  # whole devices per chunk, one update
            for d0, d1, r0, r1 in chunk_bounds(b, rows):
                with device_segments(Segments(seg[r0:r1] - d0, segments(d1 - d0), None)):
                    self.model(x[r0:r1])

    @torch.no_grad()
    def flat_params(self) -> Tensor:
        """Return the trainable parameters flattened in parameter order, (P,)."""
        return torch.cat([p.reshape(-1) for _, p in _trainable(self.model)])

    def write_grad(self, model: nn.Module, flat: Tensor) -> None:
        """Set p.grad of model's trainable parameters from a flat vector (P,) in parameter order."""
        write_flat_grad([p for _, p in _trainable(model)], flat)


def write_flat_grad(params: list[nn.Parameter], flat: Tensor) -> None:
    """Set p.grad of each parameter from consecutive chunks of a flat vector (P,)."""
    for p, chunk in zip(params, torch.split(flat, [p.numel() for p in params]), strict=True):
        if p.grad is not None and p.grad.data_ptr() == chunk.data_ptr():
            continue  # the gradient already is this chunk (a view of flat)
        value = chunk.reshape(p.shape).to(p.dtype)
        if p.grad is None:
            p.grad = value.clone()
        else:
            p.grad.copy_(value)
