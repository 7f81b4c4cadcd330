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
    """Map (device, arrival number) to a dataset index: shuffled replay, reshuffled each pass.

    Partitions are stored flat (O(N + K), no (K, n_max) padding); the permutation of a (device,
    pass) sorts the device's positions j by the hash key mix(word(seed, device, pass) + j), a
    bijection of 64-bit words, so the order is unique. Each device's current pass p and the next
    one are cached as dataset indices, side by side (2 n_i slots per device), so a batch that
    starts in pass p and ends by pass p + 1 is one gather; a device computes permutations only
    when its batch starts in a new pass.
    """

    def __init__(self, parts: list[torch.Tensor], seed: int) -> None:
        k = len(parts)
        self.sizes = torch.tensor([len(p) for p in parts], dtype=torch.int64)  # (K,)
        self.base = torch.cumsum(self.sizes, 0) - self.sizes  # (K,) first flat slot per device
        self.flat = (  # (sum n_i,) every device's partition, device-major
            torch.cat([p.to(torch.int64) for p in parts])
            if k
            else torch.zeros(0, dtype=torch.int64)
        )
        self.seed = seed
        self._sizes1 = self.sizes.clamp(min=1)  # (K,)
        self._cached_pass = torch.full((k,), -1, dtype=torch.int64)  # (K,) pass p per device
        self._cached = torch.zeros(2 * len(self.flat), dtype=torch.int64)  # passes p, p + 1
        self._last_n: torch.Tensor | None = None
        self._last_layout = (self.sizes, self.sizes)

    def _perms(self, dev: torch.Tensor, pas: torch.Tensor) -> torch.Tensor:
        """Return the dataset indices of (device, pass) rows in replay order, rows concatenated."""
        word = _mix(_mix(_mix(torch.tensor(self.seed) + dev) + pas) + 0x9E3779B9)  # (R,)
        if len(dev) == 1:  # the usual case: one device starts a new pass (fewer tensor ops)
            d = int(dev[0])
            lo, n = int(self.base[d]), int(self.sizes[d])
            return self.flat[lo : lo + n][torch.argsort(_mix(word + torch.arange(n)))]
        size = self.sizes[dev]  # (R,)
        starts = torch.cumsum(size, 0) - size  # (R,)
        row = torch.repeat_interleave(torch.arange(len(dev)), size)  # (T,)
        j = torch.arange(len(row), dtype=torch.int64) - starts[row]  # (T,) position in its row
        keys = _mix(word[row] + j)  # (T,)
        order = torch.argsort(keys)  # by key (keys are distinct), then stably by row
        if len(dev) > 1:
            order = order[torch.argsort(row[order], stable=True)]  # (T,) flat slots, rows in order
        return self.flat[(self.base[dev] - starts)[row] + order]

    def _layout(self, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return device id and offset within the device of every row.

        Cached for the last batch sizes: under ScaDLES they repeat step after step.
        """
        if self._last_n is not None and torch.equal(n, self._last_n):
            return self._last_layout
        dev = torch.repeat_interleave(torch.arange(int(n.numel())), n)  # (N,)
        offs = torch.arange(len(dev)) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        self._last_n, self._last_layout = n.clone(), (dev, offs)
        return self._last_layout

    def _advance(self, dev: torch.Tensor, pas: torch.Tensor) -> None:
        """Cache passes pas and pas + 1 of devices dev (distinct), side by side.

        A device moving on by one pass already holds pas in its second half: that half moves to
        the first, and only pas + 1 is computed.
        """
        held = self._cached_pass[dev]  # (R,) -1: nothing cached yet
        moved = (pas == held + 1) & (held >= 0)  # (R,)
        if bool(moved.any()):
            mdev = dev[moved]
            size = self.sizes[mdev]
            to = torch.arange(int(size.sum())) + torch.repeat_interleave(
                2 * self.base[mdev] - (torch.cumsum(size, 0) - size), size
            )  # (T,) first-half slots of the moving devices
            self._cached[to] = self._cached[to + torch.repeat_interleave(size, size)]
        fresh = ~moved
        rdev = torch.cat([dev[fresh], dev])  # rows: first halves of fresh devices, second halves
        rpas = torch.cat([pas[fresh], pas + 1])
        half = torch.cat([torch.zeros_like(dev[fresh]), torch.ones_like(dev)])  # (R',)
        idx = self._perms(rdev, rpas)  # (T',)
        size = self.sizes[rdev]
        slot = 2 * self.base[rdev] + half * size - (torch.cumsum(size, 0) - size)  # (R',)
        self._cached[torch.arange(len(idx)) + torch.repeat_interleave(slot, size)] = idx
        self._cached_pass[dev] = pas

    def indices(self, start: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return dataset indices (N,) and device ids (N,) of arrivals [start_i, start_i + n_i)."""
        dev, offs = self._layout(n)  # (N,) each
        first = start // self._sizes1  # (K,) pass of each device's first arrival
        last = (start + n - 1).clamp(min=0) // self._sizes1  # (K,) pass of the last arrival
        live = n > 0
        if bool(((last > first + 1) & live).any()):  # a batch over more than two passes
            return self._spread(start, n, dev, offs), dev
        stale = (first != self._cached_pass) & live
        if bool(stale.any()):
            rows = torch.nonzero(stale).squeeze(1)
            self._advance(rows, first[rows])
        at = 2 * self.base + start - first * self.sizes  # (K,) cache slot of the first arrival
        return self._cached[at[dev] + offs], dev

    def _spread(
        self, start: torch.Tensor, n: torch.Tensor, dev: torch.Tensor, offs: torch.Tensor
    ) -> torch.Tensor:
        """Return the indices of batches that may span many passes (partitions below a batch)."""
        m = start[dev] + offs  # (N,) arrival numbers
        size = self.sizes[dev]
        pas, pos = m // size, m % size
        span = int(pas.max()) + 1
        pairs, which = torch.unique(dev * span + pas, return_inverse=True)
        pdev = pairs // span
        idx = self._perms(pdev, pairs % span)  # one permutation per (device, pass), flat
        psize = self.sizes[pdev]
        return idx[(torch.cumsum(psize, 0) - psize)[which] + pos]
