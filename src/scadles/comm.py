"""Collectives: one code path for the simulator (local, identity) and real runs (torch.distributed).

Lightning Fabric's habit: a do-nothing single-process collective, so the engine never
asks "am I distributed?". Every rank holds a contiguous slice of the K devices.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.distributed as dist

from scadles.errors import UserError


class Collective(Protocol):
    """Sum, gather and broadcast tensors across the ranks of one job."""

    rank: int
    world: int

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Return the elementwise sum of t over ranks."""
        ...

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Return (world, *t.shape): every rank's t, in rank order (same shape everywhere)."""
        ...

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Return src's t on every rank."""
        ...


class LocalCollective:
    """The single-process collective: every operation is the identity."""

    rank = 0
    world = 1

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Return t (one rank)."""
        return t

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Return t with a leading rank axis of size 1."""
        return t[None]

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Return t (one rank)."""
        return t


class TorchCollective:
    """torch.distributed's default process group (gloo on CPU, nccl on CUDA)."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.device = device or torch.device("cpu")

    def _on(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device).contiguous()

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Return the elementwise sum of t over ranks."""
        out = self._on(t).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(t.device)

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Return (world, *t.shape) in rank order."""
        src = self._on(t).reshape(1, -1) if t.dim() == 0 else self._on(t)
        out = torch.empty(
            (self.world * src.shape[0], *src.shape[1:]), dtype=src.dtype, device=self.device
        )
        dist.all_gather_single(out, src)  # concatenated along dim 0
        return out.reshape(self.world, *t.shape).to(t.device)

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Return src's t on every rank."""
        out = self._on(t).clone()
        dist.broadcast(out, src=src)
        return out.to(t.device)


def device_slice(k: int, rank: int, world: int) -> tuple[int, int]:
    """Return the [lo, hi) range of devices rank owns: K split evenly over the ranks."""
    if k % world:
        raise UserError(
            f"devices.count must be a multiple of the number of processes {world}, got {k}"
        )
    per = k // world
    return rank * per, (rank + 1) * per
