"""What one rank's devices received from their live streams and have not trained yet.

Per local device a FIFO of chunks (x, y, ids, step received), bounded by a capacity with
drop-oldest. Truncation (paper 2.2) keeps only what arrived during the last iteration: at the end
of step s every sample received before step s began is dropped. Every sample leaves the buffer
exactly once, trained or dropped, and its broker id is returned so the caller can acknowledge it;
``arrived == trained + dropped + held`` per device at all times.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch


@dataclass(slots=True)
class _Chunk:
    """Consecutive samples of one device received in one poll."""

    x: torch.Tensor  # (n, *shape)
    y: torch.Tensor  # (n,)
    ids: list[str]
    step: int  # the step during which they were received


class LiveBuffer:
    """FIFO buffers of K_local devices with the persistence/truncation rules and exact counts."""

    def __init__(self, k: int, policy: str, capacity: int | None) -> None:
        if policy not in ("persistence", "truncation"):
            raise ValueError(f"buffer policy must be persistence or truncation, got {policy!r}")
        self.k, self.policy, self.capacity = k, policy, capacity
        self._q: list[deque[_Chunk]] = [deque() for _ in range(k)]
        self.arrived = torch.zeros(k, dtype=torch.int64)  # (K_local,) cumulative
        self.trained = torch.zeros(k, dtype=torch.int64)
        self.dropped = torch.zeros(k, dtype=torch.int64)

    @property
    def held(self) -> torch.Tensor:
        """Samples held per device now."""  # (K_local,)
        return self.arrived - self.trained - self.dropped

    def push(
        self, d: int, x: torch.Tensor, y: torch.Tensor, ids: list[str], step: int
    ) -> list[str]:
        """Append device d's new samples; return the ids dropped to respect the capacity."""
        if len(ids) == 0:
            return []
        self._q[d].append(_Chunk(x, y, list(ids), step))
        self.arrived[d] += len(ids)
        over = 0 if self.capacity is None else int(self.held[d]) - self.capacity
        return self._pop(d, over, self.dropped)[2] if over > 0 else []

    def take(self, d: int, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Remove and return device d's n oldest samples (x, y, ids) as trained."""
        return self._pop(d, n, self.trained)

    def end_step(self, step: int) -> list[list[str]]:
        """Apply truncation after step `step`: drop what was received before it; return ids."""
        if self.policy != "truncation":
            return [[] for _ in range(self.k)]
        out = []
        for d in range(self.k):
            stale = sum(len(c.ids) for c in self._q[d] if c.step < step)
            out.append(self._pop(d, stale, self.dropped)[2] if stale else [])
        return out

    def contents(self, d: int) -> list[str]:
        """Return the ids device d holds, oldest first."""
        return [i for c in self._q[d] for i in c.ids]

    def forget(self) -> None:
        """Empty every buffer without counting (a resume re-reads held samples from the broker)."""
        held = self.held
        for q in self._q:
            q.clear()
        self.arrived -= held

    def _pop(
        self, d: int, n: int, counter: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Remove device d's n oldest samples, add them to counter, return them."""
        xs, ys, ids = [], [], []
        q = self._q[d]
        left = min(n, int(self.held[d]))
        while left > 0:
            c = q[0]
            if len(c.ids) <= left:
                q.popleft()
                xs.append(c.x)
                ys.append(c.y)
                ids += c.ids
                left -= len(c.ids)
            else:
                xs.append(c.x[:left])
                ys.append(c.y[:left])
                ids += c.ids[:left]
                q[0] = _Chunk(c.x[left:], c.y[left:], c.ids[left:], c.step)
                left = 0
        counter[d] += len(ids)
        if not xs:
            return torch.empty(0), torch.empty(0, dtype=torch.int64), []
        return torch.cat(xs), torch.cat(ys), ids
