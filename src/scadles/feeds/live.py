"""The live feed: this rank's devices consume real streams; every rank knows every device's b_i.

  fill      poll the streams into per-device FIFO buffers until the policy's batch is there:
            ddl waits for its fixed batch; ScaDLES takes what its stream delivered during the
            window (paper 2.1: b_i(t) = S_i(t)), waiting only while it holds fewer than b_min,
            capped at b_max (the rest is left to the buffer policy)
  reduce    all-reduce of the local batch sizes and a stall flag (one (K + 1,) all-reduce)
  end_step  poll what arrived during the step; truncation drops what is older; the step's counts
            are all-reduced so every rank holds the global accounting
Trained and dropped samples are acknowledged to the broker (at the next checkpoint when deferred).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from scadles.comm import Collective, device_slice
from scadles.data.rates import RateSchedule
from scadles.feeds import Accounting, Fill, StepCounts, StreamsEnded
from scadles.feeds.live_buffer import LiveBuffer
from scadles.live.base import LiveSource
from scadles.policies import BatchRule

_POLL_S = 0.05  # longest single poll while waiting


class LiveFeed:
    """This rank's devices fed by a live source, with the global accounting on every rank."""

    shared_state = False

    def __init__(
        self,
        *,
        source: LiveSource,
        rates: RateSchedule,
        buffer: LiveBuffer,
        rule: BatchRule,
        coll: Collective,
        k: int,
        shape: tuple[int, ...],
        stall_s: float,
        defer_acks: bool,
        streams: list[str],
        kind: str,
    ) -> None:
        self.source, self.rates, self.local, self.rule, self.coll = (
            source,
            rates,
            buffer,
            rule,
            coll,
        )
        self.k, self.shape, self.stall_s, self.defer_acks = k, shape, stall_s, defer_acks
        self.streams, self.kind = streams, kind
        self.lo, self.hi = device_slice(k, coll.rank, coll.world)
        zeros = torch.zeros(k, dtype=torch.int64)  # (K,)
        self.arrived, self.trained, self.dropped = zeros.clone(), zeros.clone(), zeros.clone()
        self.held, self.own_trained = zeros.clone(), zeros.clone()
        self._unacked: list[list[str]] = [[] for _ in range(self.hi - self.lo)]
        self._window_start = time.monotonic()
        self._before = (self.local.arrived.clone(), self.local.dropped.clone())

    # --- filling ------------------------------------------------------------------------------
    def fill(self, t0: float, step: int) -> Fill:
        """Poll until this rank's devices hold their batch; all-reduce every device's b_i."""
        start = time.monotonic()
        self._before = (self.local.arrived.clone(), self.local.dropped.clone())
        ok = self._wait_fixed(t0, step) if self.rule.fixed else self._wait_window(step)
        wait = time.monotonic() - start
        self._window_start = time.monotonic()  # the next window starts when this batch is taken
        if self.rule.fixed:
            need = self.rule.demand(self.rates.rate_at(t0))[self.lo : self.hi]  # (K_local,)
            b_local = torch.minimum(need, self.local.held)
        else:
            b_local = self.local.held.clamp(max=self.rule.b_max)  # (K_local,)
        flags = torch.zeros(self.k + 1, dtype=torch.float64)
        flags[self.lo : self.hi] = b_local.double()
        flags[-1] = 0.0 if ok else 1.0
        flags = self.coll.all_reduce(flags)
        if float(flags[-1]) > 0:
            raise StreamsEnded(f"a stream delivered nothing for {self.stall_s:g} s")
        b = flags[:-1].round().long()  # (K,) every device's batch size
        xs, ys, segs = [], [], []
        for d in range(self.hi - self.lo):  # K_local devices, usually one
            x, y, ids = self.local.take(d, int(b_local[d]))
            if ids:
                xs.append(x)
                ys.append(y)
                segs.append(torch.full((len(ids),), self.lo + d, dtype=torch.int64))
                self._finish(d, ids)
        x = torch.cat(xs) if xs else torch.empty(0, *self.shape)
        y = torch.cat(ys) if ys else torch.empty(0, dtype=torch.int64)
        seg = torch.cat(segs) if segs else torch.empty(0, dtype=torch.int64)
        waits = torch.zeros(self.k, dtype=torch.float64)  # (K,) this rank's wait on its devices
        waits[self.lo : self.hi] = wait
        self.own_trained += b
        return Fill(x, y, seg, b, waits, torch.zeros(self.k, dtype=torch.float64), 0, 0.0)

    def _wait_fixed(self, t0: float, step: int) -> bool:
        """Poll until every local device holds the fixed batch; False if a stream stalled."""
        need = self.rule.demand(self.rates.rate_at(t0))[self.lo : self.hi]  # (K_local,)
        last = time.monotonic()
        while True:
            short = (need - self.local.held).clamp(min=0)  # (K_local,)
            if int(short.sum()) == 0:
                return True
            got = self._poll(short.tolist(), _POLL_S, step)
            now = time.monotonic()
            if got:
                last = now
            elif now - last > self.stall_s:
                return False

    def _wait_window(self, step: int) -> bool:
        """Poll until the window has passed and every local device holds b_min (paper 2.1)."""
        window_end = self._window_start + self.rule.window_s
        last = time.monotonic()
        want = self._want()
        while True:
            now = time.monotonic()
            short = int((self.local.held < self.rule.b_min).sum())
            if now >= window_end and short == 0:
                self._poll(want, 0.0, step)  # what is already there belongs to this window
                return True
            timeout = _POLL_S if short else max(0.0, min(_POLL_S, window_end - now))
            got = self._poll(want, timeout, step)
            now = time.monotonic()
            if got:
                last = now
            elif short and now - last > self.stall_s:
                return False

    def _want(self) -> list[int]:
        """Return how many samples one poll may take per local device."""
        k_local = self.hi - self.lo
        return [min(1 << 16, 1_000_000 // k_local)] * k_local

    def _poll(self, want: list[int], timeout_s: float, step: int) -> int:
        """Poll the source once into the buffers; acknowledge what the capacity drops."""
        got = 0
        for d, dl in enumerate(self.source.poll(want, timeout_s)):
            got += len(dl.ids) + dl.skipped
            self._finish(d, self.local.push(d, dl.x, dl.y, dl.ids, step))
        return got

    def _finish(self, d: int, ids: list[str]) -> None:
        """Acknowledge samples trained or dropped (at the next checkpoint when deferred)."""
        if self.defer_acks:
            self._unacked[d] += ids
        elif ids:
            self.source.done(d, ids)

    # --- ending the step ------------------------------------------------------------------------
    def end_step(self, t1: float, step: int) -> StepCounts:
        """Poll what arrived during the step, apply truncation, reduce the counts over ranks."""
        for d, ids in enumerate(self.local.end_step(step)):
            self._finish(d, ids)
        self._poll(self._want(), 0.0, step + 1)
        for d, ids in enumerate(self.local.end_step(step + 1)):
            self._finish(d, ids)
        loc, sl = self.local, slice(self.lo, self.hi)
        counts = torch.zeros(4, self.k, dtype=torch.float64)  # held, arrived, dropped, ever
        counts[0, sl] = loc.held.double()
        counts[1, sl] = (loc.arrived - self._before[0]).double()
        counts[2, sl] = (loc.dropped - self._before[1]).double()
        counts[3, sl] = loc.arrived.double()
        counts = self.coll.all_reduce(counts).round().long()
        self.held, self.arrived = counts[0], counts[3]
        self.dropped = self.dropped + counts[2]
        self.trained = self.arrived - self.dropped - self.held
        return StepCounts(int(counts[1].sum()), int(counts[2].sum()))

    def accounting(self) -> Accounting:
        """Return the global cumulative counts (identical on every rank)."""
        zero = torch.zeros(self.k, dtype=torch.int64)  # no injection on live streams
        return Accounting(
            self.arrived, self.trained, self.dropped, self.held, zero, self.own_trained
        )

    # --- checkpoints ----------------------------------------------------------------------------
    def resume_positions(self) -> dict[str, int]:
        """Return where each stream resumes: its first sample still held, else the next one."""
        pos = self.source.positions()
        if not pos:  # Redis: un-acknowledged entries are delivered again
            return pos
        for d, name in enumerate(self.streams):
            held = self.local.contents(d)
            if held:
                pos[name] = int(held[0])
        return pos

    def state_dict(self) -> dict[str, Any]:
        """Return this rank's counts and stream positions (held samples are re-read)."""
        return {
            "global": {"trained": self.trained.clone(), "dropped": self.dropped.clone()},
            "local": {"trained": self.local.trained.clone(), "dropped": self.local.dropped.clone()},
            "own_trained": self.own_trained.clone(),
            "positions": self.resume_positions(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from state_dict's output; the held samples arrive again from the streams."""
        self.trained = state["global"]["trained"].clone()
        self.dropped = state["global"]["dropped"].clone()
        self.arrived, self.held = self.trained + self.dropped, torch.zeros_like(self.trained)
        loc = self.local
        loc.trained = state["local"]["trained"].clone()
        loc.dropped = state["local"]["dropped"].clone()
        loc.arrived = loc.trained + loc.dropped
        self.own_trained = state["own_trained"].clone()

    def committed(self) -> None:
        """Acknowledge everything trained or dropped so far (call after a checkpoint is saved)."""
        for d, ids in enumerate(self._unacked):
            if ids:
                self.source.done(d, ids)
        self._unacked = [[] for _ in self._unacked]

    def close(self) -> dict[str, Any]:
        """Acknowledge what is done, read the brokers' counts, close the streams."""
        self.committed()
        skipped = self.source.skipped()
        mine = torch.zeros(2, self.k, dtype=torch.float64)
        for d in range(self.hi - self.lo):
            mine[0, self.lo + d] = self.source.broker_count(d)
        mine[1, 0] = float(sum(skipped.values()))
        total = self.coll.all_reduce(mine).round().long()
        self.source.close()
        return {
            "source": self.kind,
            "samples_skipped": int(total[1, 0]),
            "skipped_by_reason_rank0": dict(skipped),
            "broker_counts": total[0].tolist(),
        }
