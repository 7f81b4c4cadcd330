"""The simulated feed: modelled arrivals into vectorised stream buffers, replayed data, injection.

One step for all K devices at once (paper 2.1-2.3):
  need       = rule.demand(rates(t0))         each device's batch (fixed, or rate x window)
  wait       = arrivals.reserve(short)        devices short of `need` wait for their stream
  start, b   = buffer.take(need)              (K,) batch sizes
  idx, seg   = replay.indices(start, b)       (N,) packed union batch, device id per row
  injection(idx, seg, b)                      optional, non-IID (paper 2.3)
and at the end of the step, the arrivals until t1 are pushed and the buffer policy applied.
Every rank of a distributed simulation holds the same state and gathers only its devices' rows.
"""

from __future__ import annotations

from typing import Any

import torch

from scadles import clock
from scadles.data.buffer import StreamBuffer
from scadles.data.datasets import Dataset
from scadles.data.injection import Injection
from scadles.data.streams import Arrivals, ReplayOrder
from scadles.feeds import Accounting, Fill, StepCounts
from scadles.policies import BatchRule

_BUFFER_KEYS = ("lo", "hi", "trained", "dropped")


class SimFeed:
    """K simulated streams replaying a dataset's partitions at modelled rates."""

    shared_state = True

    def __init__(
        self,
        *,
        data: Dataset,
        replay: ReplayOrder,
        arrivals: Arrivals,
        buffer: StreamBuffer,
        rule: BatchRule,
        profiles: clock.DeviceProfiles,
        gen: torch.Generator,
        injection: Injection | None = None,
        inject_gen: torch.Generator | None = None,
        sample_bytes: int = 4,
        devices: tuple[int, int] = (0, 0),
    ) -> None:
        self.data, self.replay, self.arrivals, self.buffer = data, replay, arrivals, buffer
        self.rule, self.profiles, self.gen = rule, profiles, gen
        self.injection = injection
        self.inject_gen = inject_gen if inject_gen is not None else torch.Generator()
        self.sample_bytes = sample_bytes
        self.k = arrivals.schedule.count
        self.devices = devices  # [lo, hi) gathered by this rank; (0, 0) = all
        self.shared = torch.zeros(self.k, dtype=torch.int64)  # (K,) own samples sent to others
        self.own_trained = torch.zeros(self.k, dtype=torch.int64)  # (K,) own samples trained
        self._zeros = torch.zeros(self.k, dtype=torch.int64)  # (K,) never written in place
        self._no_wait = torch.zeros(self.k, dtype=torch.float64)  # (K,) never written in place
        self._reserved = self._zeros  # (K,) arrivals taken in fill
        self._dropped = self._zeros  # (K,) drops during fill
        self._need: tuple[object, torch.Tensor] | None = None  # (schedule, demand) if constant

    def _demand(self, t0: float) -> torch.Tensor:
        """Return each device's batch at t0; computed once while the rates are constant."""
        sched = self.arrivals.schedule
        if self._need is not None and self._need[0] is sched:
            return self._need[1]
        need = self.rule.demand(sched.rate_at(t0))  # (K,)
        if sched.times.numel() == 1:  # constant rates: the same demand every step
            self._need = (sched, need)
        return need

    def fill(self, t0: float, step: int) -> Fill:
        """Reserve each device's batch from its stream, take it, gather its rows."""
        need = self._demand(t0)  # (K,)
        short = (need - self.buffer.held).clamp(min=0)  # (K,)
        if bool(short.any()):  # devices short of their batch wait for their stream
            ready = self.arrivals.reserve(short, t0, self.gen)  # (K,) when each has `need`
            wait = ready - t0
            self._reserved = short
            self._dropped = self.buffer.push(short)
        else:  # nobody waits (ScaDLES' usual step): nothing to reserve, push or drop
            wait, self._reserved, self._dropped = self._no_wait, self._zeros, self._zeros
        start, b = self.buffer.take(need)
        idx, seg = self.replay.indices(start, b)  # (N,), (N,)
        self.own_trained += b
        moved = self._no_wait  # (K,) seconds moving injected samples
        injected = 0
        if self.injection is not None:  # paper 2.3: mix in a little of other devices' data
            inj = self.injection(idx, seg, b, self.inject_gen)
            idx, seg, b = inj.idx, inj.seg, inj.b
            self.shared += inj.sent
            moved = clock.transfer_time(
                self.profiles, inj.received * self.sample_bytes, inj.sent * self.sample_bytes
            )
            injected = int(inj.received.sum())
        lo, hi = self.devices
        if not (lo == 0 and hi in (0, self.k)):  # this rank's devices only
            keep = (seg >= lo) & (seg < hi)
            idx, seg = idx[keep], seg[keep]
        x, y = self.data.x_train[idx], self.data.y_train[idx]  # (N, *shape), (N,)
        moved_bytes = 2.0 * injected * self.sample_bytes
        return Fill(x, y, seg, b, wait, moved, injected, moved_bytes)

    def end_step(self, t1: float, step: int) -> StepCounts:
        """Push what arrived until t1; truncation keeps only what arrived during the step."""
        arrived = self.arrivals.advance(t1, self.gen)  # (K,)
        dropped = self._dropped + self.buffer.push(arrived)
        dropped = dropped + self.buffer.end_step(arrived + self._reserved)
        return StepCounts(int((arrived + self._reserved).sum()), int(dropped.sum()))

    def accounting(self) -> Accounting:
        """Return the cumulative counts (the buffer's arrival numbers)."""
        buf = self.buffer
        return Accounting(buf.hi, buf.trained, buf.dropped, buf.held, self.shared, self.own_trained)

    def state_dict(self) -> dict[str, Any]:
        """Return arrivals, buffers, exposure counters and the streams' generators."""
        return {
            "arrivals": {
                "next_pos": self.arrivals.next_pos.clone(),
                "total": self.arrivals.total.clone(),
            },
            "buffer": {k: getattr(self.buffer, k).clone() for k in _BUFFER_KEYS},
            "shared": self.shared.clone(),
            "own_trained": self.own_trained.clone(),
            "gens": {"streams": self.gen.get_state(), "inject": self.inject_gen.get_state()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from state_dict's output."""
        self.arrivals.next_pos = state["arrivals"]["next_pos"].clone()
        self.arrivals.total = state["arrivals"]["total"].clone()
        for k in _BUFFER_KEYS:
            setattr(self.buffer, k, state["buffer"][k].clone())
        self.shared = state["shared"].clone()
        self.own_trained = state["own_trained"].clone()
        self.gen.set_state(state["gens"]["streams"])
        self.inject_gen.set_state(state["gens"]["inject"])

    def committed(self) -> None:
        """Nothing to acknowledge: simulated streams have no broker."""

    def close(self) -> dict[str, Any]:
        """Nothing to release or add to the summary."""
        return {}
