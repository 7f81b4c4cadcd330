"""Simulated streams: when samples arrive (deterministic or Poisson) and which samples they are.

Arrivals walk along each device's cumulative intensity Lambda_i(t) (see rates.py). The state is
the Lambda-position of every device's next arrival: a deterministic stream puts arrivals at
Lambda = 1, 2, 3, ...; a Poisson stream spaces them by Exp(1) draws. Both answer two questions
for all devices at once: how many arrived by time t (``advance``) and when will n more have
arrived (``reserve``, used by a device that waits for its batch).

Which sample the m-th arrival of device i is comes from ``ReplayOrder``: each device replays its
partition in a shuffled order, reshuffled each pass, with the permutation of (device, pass)
derived from a counter-based hash, so any arrival number maps to a sample without storing history.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scadles.data.rates import RateSchedule

ARRIVALS = ("deterministic", "poisson")


def _exp1(k: int, gen: torch.Generator) -> torch.Tensor:
    """Return K independent Exp(1) draws."""  # (K,)
    return -torch.log1p(-torch.rand(k, generator=gen, dtype=torch.float64))


def _gamma_int(shape: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Return Gamma(shape_i, 1) draws for non-negative integer shapes (0 gives 0)."""
    k = int(shape.numel())
    top = int(shape.max()) if k else 0
    if top == 0:
        return torch.zeros(k, dtype=torch.float64)
    u = torch.rand(k, top, generator=gen, dtype=torch.float64)  # (K, top)
    live = torch.arange(top)[None, :] < shape[:, None]
    return torch.where(live, -torch.log1p(-u), 0.0).sum(dim=1)


@dataclass(slots=True)
class Arrivals:
    """Arrival process state of K streams: the Lambda-position of each next arrival."""

    schedule: RateSchedule
    poisson: bool
    next_pos: torch.Tensor  # (K,) float64
    total: torch.Tensor  # (K,) int64 arrivals so far

    @staticmethod
    def start(schedule: RateSchedule, kind: str, gen: torch.Generator) -> Arrivals:
        """Return streams that begin at time 0 with nothing arrived."""
        k = schedule.count
        poisson = kind == "poisson"
        first = _exp1(k, gen) if poisson else torch.ones(k, dtype=torch.float64)
        return Arrivals(schedule, poisson, first, torch.zeros(k, dtype=torch.int64))

    def reserve(self, n: torch.Tensor, t0: float, gen: torch.Generator) -> torch.Tensor:
        """Consume the next n_i arrivals of each device and return when the last of them lands.

        Devices with n_i == 0 get t0. The caller pushes the n_i samples into the buffer at once.
        """
        n = n.to(torch.int64)
        if not bool((n > 0).any()):  # nobody waits (ScaDLES' usual step): nothing to draw
            return torch.full(n.shape, t0, dtype=torch.float64)
        extra = (
            _gamma_int((n - 1).clamp(min=0), gen) if self.poisson else (n - 1).clamp(min=0).double()
        )
        pos = self.next_pos + extra  # (K,) Lambda-position of the n-th arrival
        when = torch.where(n > 0, self.schedule.inverse(pos), t0)
        step = _exp1(n.numel(), gen) if self.poisson else torch.ones_like(pos)
        self.next_pos = torch.where(n > 0, pos + step, self.next_pos)
        self.total += n
        return torch.maximum(when, torch.full_like(when, t0))

    def advance(self, t1: float, gen: torch.Generator) -> torch.Tensor:
        """Return how many samples each device received up to time t1 that were not yet counted."""
        lam = self.schedule.cumulative(t1)  # (K,)
        hit = self.next_pos <= lam
        if self.poisson:
            more = torch.poisson((lam - self.next_pos).clamp(min=0.0), generator=gen).to(
                torch.int64
            )
            count = torch.where(hit, 1 + more, 0)
            self.next_pos = torch.where(hit, lam + _exp1(lam.numel(), gen), self.next_pos)
        else:
            count = torch.where(hit, torch.floor(lam - self.next_pos + 1e-9).to(torch.int64) + 1, 0)
            self.next_pos = self.next_pos + count.double()
        self.total += count
        return count


_C1 = torch.tensor(0xBF58476D1CE4E5B9 - (1 << 64), dtype=torch.int64)
_C2 = torch.tensor(0x94D049BB133111EB - (1 << 64), dtype=torch.int64)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Return the splitmix64 finaliser of int64 words (wrapping arithmetic, logical shifts)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _C1
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _C2
    return x ^ ((x >> 31) & ((1 << 33) - 1))


class ReplayOrder:
    """Map (device, arrival number) to a dataset index: shuffled replay, reshuffled each pass."""

    def __init__(self, parts: list[torch.Tensor], seed: int) -> None:
        k = len(parts)
        self.sizes = torch.tensor([len(p) for p in parts], dtype=torch.int64)  # (K,)
        width = int(self.sizes.max()) if k else 0
        self.table = torch.zeros(k, max(width, 1), dtype=torch.int64)  # (K, n_max) padded
        for i, p in enumerate(parts):
            self.table[i, : len(p)] = p
        self.seed = seed
        self._cached_pass = torch.full((k,), -1, dtype=torch.int64)  # (K,)
        self._cached = torch.zeros_like(self.table)  # (K, n_max) permutation of that pass
        self._last_n: torch.Tensor | None = None
        self._last_layout = (self.sizes, self.sizes, self.sizes)

    def _perms(self, dev: torch.Tensor, pas: torch.Tensor) -> torch.Tensor:
        """Return the permutation of positions for each (device, pass) row."""  # (R, n_max)
        width = self.table.shape[1]
        j = torch.arange(width, dtype=torch.int64)
        word = _mix(_mix(_mix(torch.tensor(self.seed) + dev) + pas) + 0x9E3779B9)  # (R,)
        keys = _mix(word[:, None] + j[None, :])  # (R, n_max)
        keys = torch.where(
            j[None, :] < self.sizes[dev][:, None], keys, torch.iinfo(torch.int64).max
        )
        return torch.argsort(keys, dim=1)

    def _layout(self, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return device id, offset within the device and partition size of every row.

        Cached for the last batch sizes: under ScaDLES they repeat step after step.
        """
        if self._last_n is not None and torch.equal(n, self._last_n):
            return self._last_layout
        k = int(n.numel())
        dev = torch.repeat_interleave(torch.arange(k), n)  # (N,)
        offs = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        self._last_n, self._last_layout = n.clone(), (dev, offs, self.sizes[dev])
        return self._last_layout

    def indices(self, start: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return dataset indices (N,) and device ids (N,) of arrivals [start_i, start_i + n_i)."""
        dev, offs, size = self._layout(n)  # (N,) each
        m = start[dev] + offs  # (N,) arrival numbers
        pas, pos = m // size, m % size
        first = start // self.sizes.clamp(min=1)  # (K,) pass of each device's first arrival
        stale = (first != self._cached_pass) & (n > 0)
        if bool(stale.any()):
            rows = torch.nonzero(stale).squeeze(1)
            self._cached[rows] = self._perms(rows, first[rows])
            self._cached_pass[rows] = first[rows]
        perm_pos = self._cached[dev, pos]
        other = pas != self._cached_pass[dev]  # arrivals from a later pass than the cached one
        if bool(other.any()):
            sel = torch.nonzero(other).squeeze(1)
            span = int(pas.max()) + 1
            pairs, which = torch.unique(dev[sel] * span + pas[sel], return_inverse=True)
            pdev, ppas = pairs // span, pairs % span
            rows = self._perms(pdev, ppas)  # (U, n_max) one per (device, pass)
            perm_pos[sel] = rows[which, pos[sel]]
            # keep the latest pass of each device cached: the next batch starts there
            last = (start + n - 1).clamp(min=0) // self.sizes.clamp(min=1)  # (K,)
            keep = ppas == last[pdev]
            self._cached[pdev[keep]] = rows[keep]
            self._cached_pass[pdev[keep]] = ppas[keep]
        return self.table[dev, perm_pos], dev
