"""LiveEngine.step: one synchronous step of this rank's devices on live streams, wall-clock timed.

The same stages as the simulator's Engine (DESIGN.md "Data flow of one step"), with a broker in
place of the modelled arrivals and the wall clock in place of the virtual one:
  need       = rule.demand(rates)            each local device's batch (fixed, or rate x window)
  wait       = poll the streams until every local device holds `need`  (measured)
  b          = all-reduce of the local batch sizes   (every rank knows every device's b_i)
  exchange   = the weighted exchange of the simulator (dense or compressed), comm time measured
  optimizer.step(lr = lr_sched * rule.lr_factor(b))
  done       = trained and dropped samples are acknowledged to the broker
  end_step   = poll what arrived during the step; truncation drops what is older
Every rank runs the same number of steps: the wall clock, the stall flag and the counters that
decide when the run ends are reduced over ranks each step.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from scadles.comm import device_slice
from scadles.data.datasets import Dataset
from scadles.data.rates import RateSchedule
from scadles.engine import Counters, Schedule, apply_step, evaluate_model, grads_finite
from scadles.exchange import Batch, DenseExchange, Exchange
from scadles.live.bucket import ThrottledCollective
from scadles.live.buffer import LiveBuffer
from scadles.live.source import LiveSource
from scadles.policies import BatchRule
from scadles.report.records import EvalReport, StepReport
from scadles.training.checkpoint import exchange_state, restore_exchange

log = logging.getLogger(__name__)


class StreamsEnded(Exception):
    """A device waited `stall_s` without receiving anything: the streams have ended."""


@dataclass(slots=True)
class GlobalCounts:
    """Every device's cumulative counts (K,), identical on all ranks (the summary reads these)."""

    hi: torch.Tensor  # arrived
    trained: torch.Tensor
    dropped: torch.Tensor
    held: torch.Tensor


class LiveEngine:
    """Synchronous SGD over this rank's devices fed by live streams."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        source: LiveSource,
        rates: RateSchedule,
        buffer: LiveBuffer,
        rule: BatchRule,
        schedule: Schedule,
        exchange: Exchange | DenseExchange,
        coll: ThrottledCollective,
        k: int,
        stall_s: float,
        defer_acks: bool,
        streams: list[str],
        kind: str,
        eval_batch: int = 2048,
    ) -> None:
        self.model, self.optimizer, self.data = model, optimizer, data
        self.source, self.rates, self.buffer_local = source, rates, buffer
        self.rule, self.schedule, self.exchange, self.coll = rule, schedule, exchange, coll
        self.k, self.stall_s, self.defer_acks, self.eval_batch = k, stall_s, defer_acks, eval_batch
        self.streams, self.kind = streams, kind
        self.lo, self.hi = device_slice(k, coll.rank, coll.world)
        self.counters = Counters()
        self.skipped_nonfinite = 0
        self.compress_gen = torch.Generator().manual_seed(0)
        zeros = torch.zeros(k, dtype=torch.int64)
        self.buffer = GlobalCounts(zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone())
        self.shared = zeros.clone()  # no injection on live streams
        self.own_trained = zeros.clone()
        self._unacked: list[list[str]] = [[] for _ in range(self.hi - self.lo)]
        self._start = time.monotonic()
        self._elapsed0 = 0.0  # wall seconds of earlier lives of this run (resume)
        self._last_lr = schedule.lr
        self._params = list(model.parameters())

    @property
    def epoch(self) -> float:
        """Sample-epochs trained so far (global)."""
        return self.counters.samples_trained / len(self.data.y_train)

    def elapsed(self) -> float:
        """Wall seconds since the run began, across resumes."""
        return self._elapsed0 + time.monotonic() - self._start

    def _fill(self, need: torch.Tensor, step: int) -> bool:
        """Poll until every local device holds `need`; return False if a stream stalled."""
        last = time.monotonic()
        while True:
            short = (need - self.buffer_local.held).clamp(min=0)  # (K_local,)
            if int(short.sum()) == 0:
                return True
            got = self._poll(short.tolist(), 0.05, step)
            now = time.monotonic()
            if got:
                last = now
            elif now - last > self.stall_s:
                return False

    def _poll(self, want: list[int], timeout_s: float, step: int) -> int:
        """Poll the source once into the buffers; acknowledge what the capacity drops."""
        got = 0
        for d, dl in enumerate(self.source.poll(want, timeout_s)):
            got += len(dl.ids) + dl.skipped
            dropped = self.buffer_local.push(d, dl.x, dl.y, dl.ids, step)
            self._finish(d, dropped)
        return got

    def _finish(self, d: int, ids: list[str]) -> None:
        """Acknowledge samples trained or dropped (at the next checkpoint when deferred)."""
        if self.defer_acks:
            self._unacked[d] += ids
        elif ids:
            self.source.done(d, ids)

    def flush_acks(self) -> None:
        """Acknowledge everything trained or dropped so far (call after a checkpoint is saved)."""
        for d, ids in enumerate(self._unacked):
            if ids:
                self.source.done(d, ids)
        self._unacked = [[] for _ in self._unacked]

    def step(self) -> StepReport:
        """Run one synchronous step; raise StreamsEnded when a stream stopped delivering."""
        t0 = time.monotonic()
        c = self.counters
        before = self.buffer_local.arrived.clone(), self.buffer_local.dropped.clone()
        rates = self.rates.rate_at(self.elapsed())  # (K,)
        need = self.rule.demand(rates)[self.lo : self.hi]  # (K_local,)
        ok = self._fill(need, c.step)
        wait = time.monotonic() - t0
        b_local = torch.minimum(need, self.buffer_local.held)  # (K_local,)
        flags = torch.zeros(self.k + 1, dtype=torch.float64)
        flags[self.lo : self.hi] = b_local.double()
        flags[-1] = 0.0 if ok else 1.0
        flags = self.coll.all_reduce(flags)
        if float(flags[-1]) > 0:
            raise StreamsEnded(f"a stream delivered nothing for {self.stall_s:g} s")
        b = flags[:-1].round().long()  # (K,) every device's batch size
        xs, ys, segs = [], [], []
        for d in range(self.hi - self.lo):
            x, y, ids = self.buffer_local.take(d, int(b_local[d]))
            if ids:
                xs.append(x)
                ys.append(y)
                segs.append(torch.full((len(ids),), self.lo + d, dtype=torch.int64))
                self._finish(d, ids)
        x = torch.cat(xs) if xs else torch.empty(0, *self.data.input_shape)
        y = torch.cat(ys) if ys else torch.empty(0, dtype=torch.int64)
        seg = torch.cat(segs) if segs else torch.empty(0, dtype=torch.int64)
        batch = Batch(x, y, seg, b, self.rule.device_weights(b))
        t1 = time.monotonic()
        self.coll.reset()
        if not self.model.training:
            self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        ex = self.exchange(batch, int(self.epoch), self.compress_gen)
        if grads_finite(self._params):
            self._last_lr = apply_step(self.optimizer, self.schedule, self.rule, b, self.epoch)
        else:  # like GradScaler: never apply a step with NaN/Inf in the aggregated gradient
            self.skipped_nonfinite += 1
            log.warning("step %d: non-finite aggregated gradient; update skipped", c.step + 1)
        comm, _ = self.coll.reset()
        compute = time.monotonic() - t1 - comm
        for d, ids in enumerate(self.buffer_local.end_step(c.step)):
            self._finish(d, ids)
        k_local = self.hi - self.lo
        self._poll([min(1 << 16, 1_000_000 // k_local)] * k_local, 0.0, c.step + 1)  # arrivals
        for d, ids in enumerate(self.buffer_local.end_step(c.step + 1)):
            self._finish(d, ids)
        return self._report(b, ex.loss, ex.correct, ex.floats, ex.compressed, before, ex.nbytes,
                            (wait, compute, comm, time.monotonic() - t0))  # fmt: skip

    def _report(
        self,
        b: torch.Tensor,
        loss: float,
        correct: int,
        floats: float,
        compressed: bool,
        before: tuple[torch.Tensor, torch.Tensor],
        nbytes: torch.Tensor,
        times: tuple[float, float, float, float],
    ) -> StepReport:
        """Reduce this step's counts and times over ranks and advance the counters."""
        local = self.buffer_local
        counts = torch.zeros(4, self.k, dtype=torch.float64)  # held, arrived, dropped, ever
        sl = slice(self.lo, self.hi)
        counts[0, sl] = local.held.double()
        counts[1, sl] = (local.arrived - before[0]).double()
        counts[2, sl] = (local.dropped - before[1]).double()
        counts[3, sl] = local.arrived.double()
        counts = self.coll.all_reduce(counts).round().long()
        mine = torch.tensor([*times, self.elapsed()], dtype=torch.float64)
        wait, compute, comm, step_s, t = self.coll.all_gather(mine).max(dim=0).values.tolist()
        c = self.counters
        n = int(b.sum())
        c.step, c.t, c.samples_trained = c.step + 1, t, c.samples_trained + n
        g = self.buffer
        g.hi, g.held = counts[3], counts[0]
        g.trained, g.dropped = g.trained + b, g.dropped + counts[2]
        self.own_trained += b
        return StepReport(
            step=c.step,
            sim_time_s=t,
            step_time_s=step_s,
            wait_s=wait,
            compute_s=compute,
            comm_s=comm,
            lr=self._last_lr,
            loss=loss,
            prequential_acc=correct / max(n, 1),
            batch_total=n,
            batch_sizes=b.tolist(),
            buffer_total=int(counts[0].sum()),
            buffer_sizes=counts[0].tolist(),
            arrived=int(counts[1].sum()),
            dropped=int(counts[2].sum()),
            bytes_sent=float(nbytes.sum()),
            floats_sent=floats,
            compressed=compressed,
            injected=0,
            injection_bytes=0.0,
            epoch=self.epoch,
            host_s=step_s,
        )

    def resume_positions(self) -> dict[str, int]:
        """Return where each stream resumes: its first sample still held, else the next one."""
        pos = self.source.positions()
        if not pos:  # Redis: un-acknowledged entries are delivered again
            return pos
        for d, name in enumerate(self.streams):
            held = self.buffer_local.contents(d)
            if held:
                pos[name] = int(held[0])
        return pos

    def state_dict(self) -> dict[str, Any]:
        """Return this rank's resumable state (held samples are re-read from the streams)."""
        c, g, loc = self.counters, self.buffer, self.buffer_local
        return {
            "counters": {"step": c.step, "t": c.t, "samples_trained": c.samples_trained},
            "elapsed": self.elapsed(),
            "last_lr": self._last_lr,
            "skipped_nonfinite": self.skipped_nonfinite,
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "global": {"trained": g.trained.clone(), "dropped": g.dropped.clone()},
            "local": {"trained": loc.trained.clone(), "dropped": loc.dropped.clone()},
            "own_trained": self.own_trained.clone(),
            "positions": self.resume_positions(),
            "compress_gen": self.compress_gen.get_state(),
        } | exchange_state(self.exchange)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from state_dict's output; the held samples arrive again from the streams."""
        c = state["counters"]
        self.counters = Counters(int(c["step"]), float(c["t"]), int(c["samples_trained"]))
        self._elapsed0, self._start = float(state["elapsed"]), time.monotonic()
        self._last_lr = float(state["last_lr"])
        self.skipped_nonfinite = int(state["skipped_nonfinite"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        g, loc = self.buffer, self.buffer_local
        g.trained, g.dropped = (
            state["global"]["trained"].clone(),
            state["global"]["dropped"].clone(),
        )
        g.hi, g.held = g.trained + g.dropped, torch.zeros_like(g.trained)
        loc.trained, loc.dropped = (
            state["local"]["trained"].clone(),
            state["local"]["dropped"].clone(),
        )
        loc.arrived = loc.trained + loc.dropped
        self.own_trained = state["own_trained"].clone()
        self.compress_gen.set_state(state["compress_gen"])
        restore_exchange(self.exchange, state)

    def summary_extra(self) -> dict[str, Any]:
        """Return what the summary adds in real mode: skipped messages and the brokers' counts."""
        skipped = self.source.skipped()
        mine = torch.zeros(2, self.k, dtype=torch.float64)
        for d in range(self.hi - self.lo):
            mine[0, self.lo + d] = self.source.broker_count(d)
        mine[1, 0] = float(sum(skipped.values()))
        total = self.coll.all_reduce(mine).round().long()
        return {
            "source": self.kind,
            "samples_skipped": int(total[1, 0]),
            "skipped_by_reason_rank0": dict(skipped),
            "broker_counts": total[0].tolist(),
        }

    def close(self) -> None:
        """Acknowledge what is done and close the streams."""
        self.flush_acks()
        self.source.close()

    def evaluate(self) -> EvalReport:
        """Score the model on the held-out set."""
        return evaluate_model(self.model, self.data, self.counters, self.eval_batch)
