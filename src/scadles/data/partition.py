"""Split training indices among K devices: IID, label blocks, Dirichlet or shards.

Every scheme is pure and seeded by the generator passed in; the parts are disjoint and cover every
index exactly once. Each part is an int64 index tensor in random (shuffled) order. ``PARTITIONS``
maps each name to its ``Scheme``; ``PARTITIONS.register(name, scheme)`` adds one.
"""

from __future__ import annotations

from typing import Protocol

import torch

from scadles.errors import UserError
from scadles.registry import Registry


class Scheme(Protocol):
    """Assign every sample to one of k devices: return owner (N,) int64 in [0, k)."""

    def __call__(
        self,
        labels: torch.Tensor,
        k: int,
        gen: torch.Generator,
        *,
        num_classes: int,
        dirichlet_alpha: float,
        shards_per_device: int,
    ) -> torch.Tensor: ...


def partition(
    labels: torch.Tensor,
    k: int,
    scheme: str,
    gen: torch.Generator,
    *,
    num_classes: int,
    dirichlet_alpha: float = 0.5,
    shards_per_device: int = 2,
) -> list[torch.Tensor]:
    """Split the indices of `labels` (N,) into k disjoint shuffled parts by `scheme`."""
    split = PARTITIONS.get(scheme)
    _check(labels, k, scheme, num_classes, dirichlet_alpha, shards_per_device)
    owner = split(
        labels.to(torch.int64),
        k,
        gen,
        num_classes=num_classes,
        dirichlet_alpha=dirichlet_alpha,
        shards_per_device=shards_per_device,
    )  # (N,)
    return _group(_fill_empty(owner, k, gen), k, gen)


def label_counts(labels: torch.Tensor, parts: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Count each device's samples per label: (K, C) int64."""
    k = len(parts)
    sizes = torch.tensor([len(p) for p in parts], dtype=torch.int64)  # (K,)
    owner = torch.repeat_interleave(torch.arange(k), sizes)  # (sum sizes,)
    idx = torch.cat(list(parts)).to(torch.int64) if parts else torch.zeros(0, dtype=torch.int64)
    flat = owner * num_classes + labels.to(torch.int64)[idx]
    return torch.bincount(flat, minlength=k * num_classes).view(k, num_classes)


def _check(
    labels: torch.Tensor, k: int, scheme: str, num_classes: int, alpha: float, spd: int
) -> int:
    """Validate the request and return the number of samples."""
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise UserError(
            f"partition labels must be a 1-D integer tensor, got {labels.dtype}{list(labels.shape)}"
        )
    n = labels.numel()
    if not 1 <= k <= n:
        raise UserError(f"devices.count must be in [1, {n}] (number of training samples), got {k}")
    if num_classes < 1 or (n and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes):
        raise UserError(
            f"partition labels must lie in [0, {num_classes}), num_classes={num_classes}"
        )
    if scheme == "dirichlet" and not alpha > 0:
        raise UserError(f"devices.dirichlet_alpha must be > 0, got {alpha}")
    if scheme == "shards" and spd < 1:
        raise UserError(f"devices.shards_per_device must be >= 1, got {spd}")
    return n


def _label_blocks(labels: torch.Tensor, k: int, c: int, gen: torch.Generator) -> torch.Tensor:
    """Give device t labels [t*lpd, (t+1)*lpd), lpd = C // k; share labels when k > C."""
    if k <= c:
        lpd = c // k
        dev = torch.arange(c) // lpd  # (C,) label -> device; paper's contiguous blocks
        extra = torch.arange(c) >= k * lpd  # leftover C % k labels go round-robin
        dev[extra] = torch.arange(int(extra.sum())) % k
        return dev[labels]
    first = (torch.arange(c) * k + c - 1) // c  # (C,) first device of label: ceil(c*k/C)
    group = torch.diff(torch.cat([first, torch.tensor([k])]))  # (C,) devices sharing each label
    order, rank, count = _ranks(labels, c, gen)  # samples grouped by label, random within
    y = labels[order]
    owner = torch.empty_like(labels)
    owner[order] = first[y] + rank * group[y] // count[y].clamp(min=1)
    return owner


def _dirichlet(
    labels: torch.Tensor, k: int, c: int, alpha: float, gen: torch.Generator
) -> torch.Tensor:
    """Split each class among devices by proportions drawn from Dir(alpha) (Gamma draws)."""
    g = torch._standard_gamma(torch.full((c, k), float(alpha), dtype=torch.float64), generator=gen)
    dead = g.sum(1) == 0  # tiny alpha can underflow every draw of a class: give it to one device
    g[dead, torch.randint(k, (int(dead.sum()),), generator=gen)] = 1.0
    props = g / g.sum(1, keepdim=True)  # (C, K)
    order, rank, count = _ranks(labels, c, gen)
    bounds = torch.round(props.cumsum(1) * count[:, None].to(torch.float64))  # (C, K)
    y = labels[order]
    dev = torch.searchsorted(bounds[y], rank[:, None].to(torch.float64), right=True)  # (N, 1)
    owner = torch.empty_like(labels)
    owner[order] = dev[:, 0].clamp(max=k - 1)
    return owner


def _shards(labels: torch.Tensor, k: int, c: int, spd: int, gen: torch.Generator) -> torch.Tensor:
    """Sort by label, cut into k*spd shards and deal spd random shards to each device."""
    n, s = labels.numel(), k * spd
    order, _, _ = _ranks(labels, c, gen)
    shard_owner = torch.empty(s, dtype=torch.int64)  # (S,)
    shard_owner[torch.randperm(s, generator=gen)] = torch.arange(s) // spd
    owner = torch.empty_like(labels)
    owner[order] = shard_owner[torch.arange(n) * s // n]
    return owner


def _iid(labels: torch.Tensor, k: int, gen: torch.Generator, **_: object) -> torch.Tensor:
    """Deal near-equal contiguous blocks of a random shuffle."""
    n = labels.numel()
    owner = torch.arange(n) * k // n  # (N,)
    return owner[torch.randperm(n, generator=gen)]


def _by_label_blocks(
    labels: torch.Tensor, k: int, gen: torch.Generator, *, num_classes: int, **_: object
) -> torch.Tensor:
    return _label_blocks(labels, k, num_classes, gen)


def _by_dirichlet(
    labels: torch.Tensor,
    k: int,
    gen: torch.Generator,
    *,
    num_classes: int,
    dirichlet_alpha: float,
    **_: object,
) -> torch.Tensor:
    return _dirichlet(labels, k, num_classes, dirichlet_alpha, gen)


def _by_shards(
    labels: torch.Tensor,
    k: int,
    gen: torch.Generator,
    *,
    num_classes: int,
    shards_per_device: int,
    **_: object,
) -> torch.Tensor:
    return _shards(labels, k, num_classes, shards_per_device, gen)


PARTITIONS: Registry[Scheme] = Registry(
    "scheme",
    {
        "iid": _iid,
        "label_blocks": _by_label_blocks,
        "dirichlet": _by_dirichlet,
        "shards": _by_shards,
    },
    key="devices.partition",
)


def _ranks(
    labels: torch.Tensor, c: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (order grouping samples by label in random order within, rank in class, counts)."""
    perm = torch.randperm(labels.numel(), generator=gen)
    order = perm[torch.sort(labels[perm], stable=True).indices]  # (N,)
    count = torch.bincount(labels, minlength=c)  # (C,)
    start = torch.cumsum(count, 0) - count  # (C,)
    rank = torch.arange(labels.numel()) - start[labels[order]]  # (N,) position within class
    return order, rank, count


def _fill_empty(owner: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Move one random sample from the largest device to each empty one (needs N >= K)."""
    owner = owner.clone()
    counts = torch.bincount(owner, minlength=k)  # (K,)
    for dev in (counts == 0).nonzero().flatten().tolist():  # set-up only; rarely iterates
        donor = int(counts.argmax())
        mine = (owner == donor).nonzero().flatten()
        owner[mine[torch.randint(len(mine), (1,), generator=gen)]] = dev
        counts[donor] -= 1
        counts[dev] += 1
    return owner


def _group(owner: torch.Tensor, k: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Turn a device id per sample into k shuffled index tensors."""
    perm = torch.randperm(owner.numel(), generator=gen)
    idx = perm[torch.sort(owner[perm], stable=True).indices]  # grouped by device, shuffled within
    sizes = torch.bincount(owner, minlength=k).tolist()
    return [p.clone() for p in torch.split(idx, sizes)]
