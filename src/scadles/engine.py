"""Engine.step: the only place where the stages of one synchronous training step are wired.

One step, for all K devices at once (DESIGN.md "Data flow of one step"):
  need       = rule.demand(rates)                  each device's batch (fixed, or rate x window)
  wait       = arrivals.reserve(short)             devices short of `need` wait for their stream
  start, b   = buffer.take(need)                   (K,) batch sizes
  idx, seg   = replay.indices(start, b)            (N,) packed union batch, device id per row
  exchange   = exchange(batch)                     weighted mean gradient (dense or compressed)
  optimizer.step(lr = lr_sched * rule.lr_factor(b))
  timing     = max_i(wait_i + compute_i) + comm    virtual clock
  arrivals   = arrivals.advance(t_end); buffer.push; buffer.end_step (truncation)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scadles import clock
from scadles.data.buffer import StreamBuffer
from scadles.data.datasets import Dataset
from scadles.data.injection import Injection
from scadles.data.streams import Arrivals, ReplayOrder
from scadles.exchange import Batch, DenseExchange, Exchange
from scadles.policies import BatchRule, lr_schedule
from scadles.report.records import EvalReport, StepReport

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Learning-rate schedule in sample-epochs (one epoch = len(train set) samples, global)."""

    lr: float
    milestones: tuple[float, ...]
    gamma: float


@dataclass(slots=True)
class Counters:
    """Run-level counters the engine advances."""

    step: int = 0
    t: float = 0.0
    samples_trained: int = 0


class Engine:
    """Simulated synchronous SGD over K streaming devices."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        replay: ReplayOrder,
        arrivals: Arrivals,
        buffer: StreamBuffer,
        rule: BatchRule,
        profiles: clock.DeviceProfiles,
        comm_params: float,
        schedule: Schedule,
        gen: torch.Generator,
        eval_batch: int = 2048,
        exchange: Exchange | DenseExchange | None = None,
        compress_gen: torch.Generator | None = None,
        injection: Injection | None = None,
        inject_gen: torch.Generator | None = None,
        sample_bytes: int = 4,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.data = data
        self.replay = replay
        self.arrivals = arrivals
        self.buffer = buffer
        self.rule = rule
        self.profiles = profiles
        self.comm_params = comm_params
        self.schedule = schedule
        self.gen = gen
        self.eval_batch = eval_batch
        self.exchange = exchange or DenseExchange(model, comm_params)
        self.compress_gen = compress_gen if compress_gen is not None else torch.Generator()
        self.injection = injection
        self.inject_gen = inject_gen if inject_gen is not None else torch.Generator()
        self.sample_bytes = sample_bytes
        self.k = arrivals.schedule.count
        self.counters = Counters()
        self.shared = torch.zeros(self.k, dtype=torch.int64)  # (K,) own samples sent to others
        self.own_trained = torch.zeros(self.k, dtype=torch.int64)  # (K,) own samples trained
        self._last_lr = schedule.lr
        self.skipped_nonfinite = 0
        self._params = list(model.parameters())  # fixed set; restored in place on resume
        self._float_buffers = [t for t in model.buffers() if t.is_floating_point()]  # BN stats

    @property
    def epoch(self) -> float:
        """Sample-epochs trained so far (global)."""
        return self.counters.samples_trained / len(self.data.y_train)

    def step(self) -> StepReport:
        """Run one synchronous step for all devices and return its report."""
        host0 = time.perf_counter()
        c = self.counters
        t0 = c.t
        rates = self.arrivals.schedule.rate_at(t0)  # (K,)
        need = self.rule.demand(rates)  # (K,)
        short = (need - self.buffer.held).clamp(min=0)  # (K,)
        ready = self.arrivals.reserve(short, t0, self.gen)  # (K,) when each device has `need`
        wait = ready - t0  # (K,)
        dropped = self.buffer.push(short)
        start, b = self.buffer.take(need)
        idx, seg = self.replay.indices(start, b)  # (N,), (N,)
        self.own_trained += b
        moved = torch.zeros(self.k, dtype=torch.float64)  # (K,) seconds moving injected data
        injected = 0
        if self.injection is not None:  # paper 2.3: mix in a little of other devices' data
            inj = self.injection(idx, seg, b, self.inject_gen)
            idx, seg, b = inj.idx, inj.seg, inj.b
            self.shared += inj.sent
            moved = clock.transfer_time(
                self.profiles, inj.received * self.sample_bytes, inj.sent * self.sample_bytes
            )
            injected = int(inj.received.sum())

        x = self.data.x_train[idx]  # (N, *shape)
        y = self.data.y_train[idx]  # (N,)
        batch = Batch(x, y, seg, b, self.rule.device_weights(b))
        if not self.model.training:
            self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        stats = [t.clone() for t in self._float_buffers]
        ex = self.exchange(batch, int(self.epoch), self.compress_gen)
        loss, correct, nbytes = ex.loss, ex.correct, ex.nbytes
        finite = self._grads_finite()
        if finite:
            self._apply(b)
        else:  # like GradScaler: a step with NaN/Inf in the aggregated gradient is not applied
            self.skipped_nonfinite += 1
            with torch.no_grad():
                for t, old in zip(self._float_buffers, stats, strict=True):
                    t.copy_(old)
            log.warning("step %d: non-finite aggregated gradient; update skipped", c.step + 1)

        compute = clock.compute_time(self.profiles, b)  # (K,)
        if ex.collective == "allreduce":
            comm = clock.allreduce_time(self.profiles, float(nbytes.max()))
            on_wire = 2.0 * (self.k - 1) / self.k * float(nbytes.sum())
        else:
            comm = clock.allgather_time(self.profiles, nbytes)
            on_wire = (self.k - 1) * float(nbytes.sum())
        step_s = clock.step_time(wait + moved, compute, comm)
        c.t = t0 + step_s
        arrived = self.arrivals.advance(c.t, self.gen)
        dropped = dropped + self.buffer.push(arrived)
        dropped = dropped + self.buffer.end_step(arrived + short)
        n = int(b.sum())
        c.samples_trained += n
        c.step += 1
        held = self.buffer.held
        return StepReport(
            step=c.step,
            sim_time_s=c.t,
            step_time_s=step_s,
            wait_s=float(wait.max()),
            compute_s=float(compute.max()),
            comm_s=comm,
            lr=self._last_lr,
            loss=loss,
            prequential_acc=correct / max(n, 1),
            batch_total=n,
            batch_sizes=b.tolist(),
            buffer_total=int(held.sum()),
            buffer_sizes=held.tolist(),
            arrived=int((arrived + short).sum()),
            dropped=int(dropped.sum()),
            bytes_sent=on_wire,
            floats_sent=ex.floats,
            compressed=ex.compressed,
            injected=injected,
            injection_bytes=2.0 * injected * self.sample_bytes,  # up at the sender, down here
            epoch=self.epoch,
            host_s=time.perf_counter() - host0,
        )

    def _grads_finite(self) -> bool:
        """Return whether every aggregated gradient value is finite (identical on every rank)."""
        return grads_finite(self._params)

    def _apply(self, b: torch.Tensor) -> None:
        """Step the optimizer at the scheduled, batch-scaled learning rate (paper Eq. 4c)."""
        self._last_lr = apply_step(self.optimizer, self.schedule, self.rule, b, self.epoch)

    def evaluate(self) -> EvalReport:
        """Score the model on the held-out set: top-1, top-5, mean loss."""
        return evaluate_model(self.model, self.data, self.counters, self.eval_batch)


def grads_finite(params: Sequence[torch.Tensor]) -> bool:
    """Return whether every gradient value is finite: one fused norm call over all of them."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def apply_step(
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    rule: BatchRule,
    b: torch.Tensor,
    epoch: float,
) -> float:
    """Step the optimizer at lr_sched(epoch) * rule.lr_factor(b); return that learning rate."""
    lr = lr_schedule(schedule.lr, schedule.milestones, schedule.gamma, epoch) * rule.lr_factor(b)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    return lr


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, data: Dataset, counters: Counters, eval_batch: int
) -> EvalReport:
    """Score model on data's held-out set: top-1, top-5, mean loss."""
    model.eval()
    x, y = data.x_test, data.y_test
    top1 = top5 = 0
    loss = 0.0
    for s in range(0, len(y), eval_batch):
        logits = model(x[s : s + eval_batch], None)  # (n, C)
        yy = y[s : s + eval_batch]
        loss += float(F.cross_entropy(logits, yy, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (n, 5)
        top1 += int((top[:, 0] == yy).sum())
        top5 += int((top == yy[:, None]).any(dim=1).sum())
    m = max(len(y), 1)
    return EvalReport(
        step=counters.step,
        sim_time_s=counters.t,
        epoch=counters.samples_trained / len(data.y_train),
        top1=top1 / m,
        top5=top5 / m,
        loss=loss / m,
        samples_trained=counters.samples_trained,
    )
