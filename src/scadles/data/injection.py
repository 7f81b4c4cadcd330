"""Randomized data injection against non-IID data: rewrite each step's union batch (paper §2.3).

The union batch is device-major: dataset indices `idx` (N,), device ids `seg` (N,) non-decreasing,
batch sizes `b` (K,) with sum b == N. An injection appends, after each device's own rows, the rows
it received this step, and reports how many rows each device received and how many of its own left.

Two readings (digest §7.3):

* `peers` (the paper's text, default): device i receives s_j = floor(beta * b_j) rows, uniformly
  without replacement, from the current batch of each of m = ceil(alpha * K) other devices chosen
  uniformly without replacement (m capped at K - 1). Only a peer's own rows are shared, never what
  it received in the same step.
* `class_pool` (the authors' code): device i draws m = ceil(alpha * C) classes uniformly with
  replacement among the classes it does not own and, per draw, s_i = floor(beta * b_i) samples
  uniformly WITH replacement from the global pool of that class. Samples held by device i itself are
  excluded from the pool, so a device never receives its own data even when `own` disagrees with
  what it actually holds (label sharing when K > C, Dirichlet partitions, the authors' VGG19 label
  list). Samples with owner -1 are held by no device: they can be injected but count as sent by
  nobody, so sum(sent) < sum(received) then.

floor(beta * b) is computed in float64, like Python's `int(beta * b)` in the authors' code.
`ClassPoolInjection` keeps its pool tables on the CPU and draws from a CPU generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from scadles.errors import UserError

INJECTIONS: tuple[str, ...] = ("none", "peers", "class_pool")


@dataclass(frozen=True, slots=True)
class Injected:
    """A union batch after injection, with per-device transfer counts."""

    idx: torch.Tensor  # (N',) dataset indices: each device's own rows first, then what it received
    seg: torch.Tensor  # (N',) device ids, non-decreasing
    b: torch.Tensor  # (K,) int64 new batch sizes (own + received), for weighting and LR scaling
    received: torch.Tensor  # (K,) int64 samples each device received this step
    sent: torch.Tensor  # (K,) int64 samples that left each device this step (copies counted)


class Injection(Protocol):
    """Rewrite one step's union batch; randomness only from `gen`."""

    def __call__(
        self, idx: torch.Tensor, seg: torch.Tensor, b: torch.Tensor, gen: torch.Generator
    ) -> Injected: ...


class NoInjection:
    """Pass the batch through unchanged (the `none` mode), so one code path serves every mode."""

    def __call__(
        self, idx: torch.Tensor, seg: torch.Tensor, b: torch.Tensor, gen: torch.Generator
    ) -> Injected:
        """Return the batch as is with zero transfers."""
        zeros = torch.zeros_like(b, dtype=torch.int64)
        return Injected(idx, seg, b.to(torch.int64), zeros, zeros.clone())


class PeerInjection:
    """Each device receives a beta fraction of the current batches of ceil(alpha*K) random peers."""

    def __init__(self, alpha: float, beta: float) -> None:
        self.alpha, self.beta = _check_fraction("alpha", alpha), _check_fraction("beta", beta)

    def __call__(
        self, idx: torch.Tensor, seg: torch.Tensor, b: torch.Tensor, gen: torch.Generator
    ) -> Injected:
        """Inject rows drawn from random peers' own rows into every device's batch."""
        b = b.to(device=idx.device, dtype=torch.int64)
        k = b.numel()
        m = min(math.ceil(self.alpha * k), k - 1)
        if m <= 0 or idx.numel() == 0:
            return NoInjection()(idx, seg, b, gen)
        keys = _rand((k, k), gen, idx.device)  # (K, K) in [0, 1)
        keys.fill_diagonal_(-1.0)  # never pick yourself: m <= K - 1 others always outrank it
        peers = keys.topk(m, dim=1).indices.reshape(-1)  # (P,) receiver-major pairs, P = K*m
        receivers = torch.arange(k * m, device=idx.device) // m  # (P,)
        s = _floor_frac(self.beta, b)  # (K,) rows each device shares per receiver
        rows, valid = _pick_rows(b, s, peers, gen)  # (P, S_max) positions in the union batch
        recv_idx = idx[rows[valid]]  # (R,) receiver-major because pairs are
        recv_dev = receivers[:, None].expand_as(rows)[valid]  # (R,)
        sent = torch.bincount(peers, minlength=k) * s  # (K,)
        return _merge(idx, seg, b, recv_idx, recv_dev, sent)


class ClassPoolInjection:
    """Each device receives beta*b_i samples of each of ceil(alpha*C) random foreign classes."""

    def __init__(
        self,
        alpha: float,
        beta: float,
        labels: torch.Tensor,
        num_classes: int,
        owner: torch.Tensor,
        own: torch.Tensor,
    ) -> None:
        self.alpha, self.beta = _check_fraction("alpha", alpha), _check_fraction("beta", beta)
        _check_pool(labels, num_classes, owner, own)
        k, c = own.shape
        labels, owner = labels.to(torch.int64), owner.to(torch.int64)
        self.k, self.m = k, math.ceil(self.alpha * num_classes)
        self.owner = owner  # (N_train,) holder of each sample, -1 for none
        # The pool, sorted by (class, owner): class c's block starts at class_start[c], and inside
        # it the samples held by device i form the contiguous run [held_start[i, c], +held[i, c]).
        self.pool = torch.argsort(labels * (k + 1) + (owner + 1), stable=True)  # (N_train,)
        size = torch.bincount(labels, minlength=c)  # (C,)
        self.class_start = torch.cumsum(size, 0) - size  # (C,)
        held_flat = torch.bincount(
            labels[owner >= 0] * k + owner[owner >= 0], minlength=c * k
        )  # (C*K,)
        held = held_flat.view(c, k).T.contiguous()  # (K, C)
        unowned = size - held.sum(0)  # (C,)
        self.held = held
        self.held_start = unowned[None, :] + torch.cumsum(held, 0) - held  # (K, C) within block
        self.avail = size[None, :] - held  # (K, C) foreign samples of class c for device i
        self.allowed = (~own.to(torch.bool)) & (self.avail > 0)  # (K, C) classes i may draw

    def __call__(
        self, idx: torch.Tensor, seg: torch.Tensor, b: torch.Tensor, gen: torch.Generator
    ) -> Injected:
        """Inject samples of random foreign classes from the global per-class pools."""
        b = b.to(device=idx.device, dtype=torch.int64)
        if b.numel() != self.k:
            raise UserError(f"inject: batch has {b.numel()} devices, the partition has {self.k}")
        any_allowed = self.allowed.any(1)  # (K,)
        s = torch.where(any_allowed, _floor_frac(self.beta, b.cpu()), 0)  # (K,)
        weights = torch.where(any_allowed[:, None], self.allowed, True).to(torch.float64)
        classes = torch.multinomial(weights, self.m, replacement=True, generator=gen)  # (K, m)
        row_pair = _segment_ids(s.repeat(self.m, 1).T.reshape(-1))  # (R,) (device, draw) of row
        row_cls = classes.reshape(-1)[row_pair]  # (R,)
        row_dev = row_pair // self.m  # (R,) non-decreasing
        avail = self.avail[row_dev, row_cls]  # (R,)
        u = (_rand((row_cls.numel(),), gen, torch.device("cpu")) * avail).long()  # (R,)
        u = torch.minimum(u, avail - 1)  # guard float rounding at the top end
        skip = self.held[row_dev, row_cls]  # (R,) the receiver's own run inside the block
        pos = u + (u >= self.held_start[row_dev, row_cls]).long() * skip  # (R,)
        picked = self.pool[self.class_start[row_cls] + pos]  # (R,) dataset indices
        src = self.owner[picked]  # (R,)
        sent = torch.bincount(src[src >= 0], minlength=self.k)  # (K,)
        dev = idx.device
        return _merge(idx, seg, b, picked.to(dev), row_dev.to(dev), sent.to(dev))


def exposure(sent_total: torch.Tensor, own_total: torch.Tensor) -> torch.Tensor:
    """Return sent / own per device (0 where own is 0); copies count, so peers mode can exceed 1."""
    own = own_total.to(torch.float64)
    frac = sent_total.to(torch.float64) / own.clamp(min=1.0)
    return torch.where(own > 0, frac, torch.zeros_like(frac))


def _pick_rows(
    b: torch.Tensor, s: torch.Tensor, peers: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick s[peer] distinct rows of each peer's batch per pair: positions (P, S_max), mask."""
    width = int(b.max())
    s_max = int(s.max())
    b_peer = b[peers]  # (P,)
    keys = _rand((peers.numel(), width), gen, b.device)  # (P, B_max)
    cols = torch.arange(width, device=b.device)  # (B_max,)
    keys = keys.masked_fill(cols[None, :] >= b_peer[:, None], 2.0)  # padding sorts last
    pick = keys.topk(s_max, dim=1, largest=False).indices  # (P, S_max) random distinct columns
    start = torch.cumsum(b, 0) - b  # (K,)
    valid = torch.arange(s_max, device=b.device)[None, :] < s[peers][:, None]  # (P, S_max)
    return start[peers][:, None] + pick, valid


def _merge(
    idx: torch.Tensor,
    seg: torch.Tensor,
    b: torch.Tensor,
    recv_idx: torch.Tensor,
    recv_dev: torch.Tensor,
    sent: torch.Tensor,
) -> Injected:
    """Place each device's own rows, then its received rows (recv_dev non-decreasing)."""
    k = b.numel()
    received = torch.bincount(recv_dev, minlength=k)  # (K,)
    new_b = b + received  # (K,)
    new_start = torch.cumsum(new_b, 0) - new_b  # (K,)
    old_start = torch.cumsum(b, 0) - b  # (K,)
    recv_start = torch.cumsum(received, 0) - received  # (K,)
    seg_l = seg.to(torch.int64)
    own_pos = new_start[seg_l] + torch.arange(idx.numel(), device=idx.device) - old_start[seg_l]
    rank = torch.arange(recv_idx.numel(), device=idx.device) - recv_start[recv_dev]  # (R,)
    recv_pos = new_start[recv_dev] + b[recv_dev] + rank  # (R,)
    out = torch.empty(int(new_b.sum()), dtype=idx.dtype, device=idx.device)  # (N',)
    out[own_pos] = idx
    out[recv_pos] = recv_idx.to(idx.dtype)
    new_seg = _segment_ids(new_b).to(seg.dtype)  # (N',)
    return Injected(out, new_seg, new_b, received, sent.to(torch.int64))


def _segment_ids(counts: torch.Tensor) -> torch.Tensor:
    """Return i repeated counts[i] times (searchsorted: repeat_interleave spawns threads)."""
    ends = torch.cumsum(counts, 0)  # (K,)
    total = int(ends[-1]) if counts.numel() else 0
    return torch.searchsorted(ends, torch.arange(total, device=counts.device), right=True)


def _floor_frac(beta: float, b: torch.Tensor) -> torch.Tensor:
    """Return floor(beta * b) as int64, computed in float64."""
    return torch.floor(beta * b.to(torch.float64)).to(torch.int64)


def _rand(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Draw float64 uniforms in [0, 1) from `gen` and move them to `device`."""
    return torch.rand(shape, generator=gen, dtype=torch.float64, device=gen.device).to(device)


def _check_fraction(name: str, value: float) -> float:
    """Require value in (0, 1] (NaN fails)."""
    if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
        raise UserError(f"inject.{name} must be in (0, 1], got {value}")
    return float(value)


def _check_pool(labels: torch.Tensor, c: int, owner: torch.Tensor, own: torch.Tensor) -> None:
    """Validate the class-pool tables: shapes, label range, owner range."""
    n = labels.numel()
    if labels.dim() != 1 or owner.shape != labels.shape:
        raise UserError(
            f"inject: labels and owner must be 1-D of one length, got "
            f"{list(labels.shape)} and {list(owner.shape)}"
        )
    if own.dim() != 2 or own.shape[1] != c or own.shape[0] < 1:
        raise UserError(f"inject: own must be (K, {c}) bool, got {list(own.shape)}")
    if n and not 0 <= int(labels.min()) <= int(labels.max()) < c:
        raise UserError(f"inject: labels must lie in [0, {c}), num_classes={c}")
    if n and not -1 <= int(owner.min()) <= int(owner.max()) < own.shape[0]:
        raise UserError(f"inject: owner must lie in [-1, {own.shape[0]}), got out-of-range ids")
