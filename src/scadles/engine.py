"""Engine.step: the only place where the stages of one synchronous training step are wired.

One engine for both modes; the feed (simulated or live streams) and the clock (virtual or wall)
are what differ (DESIGN "Data flow of one step"):
  t0       = clock.now()
  fill     = feed.fill(t0)                  (K,) batch sizes, this process's rows, waits
  base     = clock.begin(waits, b)          modelled wait + compute (simulator), for the switch
  update   = exchange(batch)                weighted mean gradient (dense or compressed) (P,)
  apply    = optimizer.step(lr = lr_sched * rule.lr_factor(b)) unless the update is non-finite
  timing   = clock.finish(waits, b, payload bytes)
  counts   = feed.end_step(t1)              arrivals during the step, the buffer policy
The engine alone owns the learning rate, the non-finite rule, the StepReport and the saved state.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from scadles import clock
from scadles.data.augment import Augment
from scadles.data.datasets import Dataset
from scadles.exchange import Batch, DenseExchange, Exchange, Exchanged
from scadles.feeds import Feed
from scadles.grads import write_flat_grad
from scadles.policies import BatchRule, lr_schedule
from scadles.report.records import EvalReport, StepReport
from scadles.timing import StepClock

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
    """Synchronous SGD over K streaming devices: one step, whatever feeds it."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        feed: Feed,
        clock: StepClock,
        rule: BatchRule,
        schedule: Schedule,
        exchange: Exchange | DenseExchange,
        compress_gen: torch.Generator,
        eval_batch: int = 2048,
        augment: Augment | None = None,
        augment_gen: torch.Generator | None = None,
        deterministic: bool = True,
    ) -> None:
        self.model, self.optimizer, self.data = model, optimizer, data
        self.feed, self.clock, self.rule, self.schedule = feed, clock, rule, schedule
        self.exchange, self.compress_gen, self.eval_batch = exchange, compress_gen, eval_batch
        self.augment = augment  # training batches only; evaluate() sees the images as they are
        self.augment_gen = augment_gen if augment_gen is not None else torch.Generator()
        self.deterministic = deterministic  # steps under torch's deterministic algorithms
        self.k = feed.k
        self.counters = Counters()
        self.last_lr = schedule.lr
        self.skipped_nonfinite = 0
        self._params = [p for p in model.parameters() if p.requires_grad]  # restored in place
        self.device = self._params[0].device if self._params else torch.device("cpu")
        self._stats = [t for t in model.buffers() if t.is_floating_point()]  # BN statistics

    @property
    def epoch(self) -> float:
        """Sample-epochs trained so far (global)."""
        return self.counters.samples_trained / len(self.data.y_train)

    def step(self) -> StepReport:
        """Run one synchronous step for all devices and return its report.

        With `deterministic` (run.deterministic), the step runs under torch's deterministic
        algorithms (warn only where an op has none): some kernels, such as the backward of
        advanced indexing on CPU (an accumulating index_put with atomic adds on two or more
        threads), otherwise sum in an order that depends on thread scheduling, so on a loaded
        machine the same seed gave different parameters.
        """
        with deterministic_algorithms(self.deterministic):
            return self._step()

    def _step(self) -> StepReport:
        host0 = time.perf_counter()
        c = self.counters
        fill = self.feed.fill(self.clock.now(), c.step)
        b = fill.b  # (K,)
        x = fill.x if self.augment is None else self.augment(fill.x, self.augment_gen)  # CPU
        batch = self._on_device(Batch(x, fill.y, fill.seg, b, self.rule.device_weights(b)))
        base = self.clock.begin(fill.wait + fill.moved, b)
        if base is not None and isinstance(self.exchange, Exchange):
            self.exchange.expect(base)  # a time-aware switch prices the step before it
        if not self.model.training:
            self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        stats = [t.clone() for t in self._stats]
        ex = self.exchange(batch, int(self.epoch), self.compress_gen)
        self._apply(ex, b, stats)
        timing = self.clock.finish(
            fill.wait + fill.moved, b, ex.collective, ex.nbytes, ex.compressors_run
        )
        if isinstance(self.exchange, Exchange):  # a time-aware switch learns the step's cost
            self.exchange.observe(timing.wait_s, timing.compute_s, timing.comm_s)
        counts = self.feed.end_step(timing.t, c.step)
        n = int(b.sum())
        c.step, c.t, c.samples_trained = c.step + 1, timing.t, c.samples_trained + n
        held = self.feed.accounting().held  # (K,)
        return StepReport(
            step=c.step,
            sim_time_s=c.t,
            step_time_s=timing.step_s,
            wait_s=timing.wait_s,
            compute_s=timing.compute_s,
            comm_s=timing.comm_s,
            compress_s=timing.compress_s,
            lr=self.last_lr,
            loss=ex.loss,
            prequential_acc=ex.correct / max(n, 1),
            batch_total=n,
            batch_sizes=b.tolist(),
            buffer_total=int(held.sum()),
            buffer_sizes=held.tolist(),
            arrived=counts.arrived,
            dropped=counts.dropped,
            bytes_sent=clock.wire_bytes(ex.collective, ex.nbytes),
            floats_sent=ex.floats,
            compressed=ex.compressed,
            injected=fill.injected,
            injection_bytes=fill.injection_bytes,
            epoch=self.epoch,
            host_s=time.perf_counter() - host0,
            switch_signal=ex.signal,
            choice=ex.choice or None,
        )

    def _on_device(self, batch: Batch) -> Batch:
        """Move the batch's rows (x, y, seg) to the model's device (run.device): the one place a
        step's batch is placed. The (K,) batch sizes and weights stay on the CPU beside the
        feed's and clock's books."""
        dev = self.device
        if batch.x.device == dev:
            return batch
        return Batch(batch.x.to(dev), batch.y.to(dev), batch.seg.to(dev), batch.b, batch.weights)

    def _apply(self, ex: Exchanged, b: torch.Tensor, stats: list[torch.Tensor]) -> None:
        """Step the optimizer at the scheduled, batch-scaled LR (paper Eq. 4c) if finite.

        Like GradScaler, a step whose aggregated update holds NaN/Inf is not applied, and the
        BatchNorm running statistics its forward pass changed are restored. The update is the
        same on every process, so every process decides the same.
        """
        if not bool(torch.isfinite(ex.update).all()):
            self.skipped_nonfinite += 1
            with torch.no_grad():
                for t, old in zip(self._stats, stats, strict=True):
                    t.copy_(old)
            log.warning(
                "step %d: non-finite aggregated gradient; update skipped", self.counters.step + 1
            )
            return
        write_flat_grad(self._params, ex.update)
        s = self.schedule
        scale = self.rule.lr_factor(b, self.counters.step)
        lr = lr_schedule(s.lr, s.milestones, s.gamma, self.epoch) * scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.last_lr = lr

    def evaluate(self) -> EvalReport:
        """Score the model on the held-out set: top-1, top-5, mean loss."""
        return evaluate_model(self.model, self.data, self.counters, self.eval_batch)

    def state_dict(self) -> dict[str, Any]:
        """Return everything the run needs to continue as if it had never stopped."""
        c = self.counters
        return {
            "counters": {"step": c.step, "t": c.t, "samples_trained": c.samples_trained},
            "last_lr": self.last_lr,
            "skipped_nonfinite": self.skipped_nonfinite,
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "compress_gen": self.compress_gen.get_state(),
            "augment_gen": self.augment_gen.get_state(),
            "exchange": exchange_state(self.exchange),
            "feed": self.feed.state_dict(),
            "clock": self.clock.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from state_dict's output (the engine was built from the same config)."""
        c = state["counters"]
        self.counters = Counters(int(c["step"]), float(c["t"]), int(c["samples_trained"]))
        self.last_lr = float(state["last_lr"])
        self.skipped_nonfinite = int(state["skipped_nonfinite"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.compress_gen.set_state(state["compress_gen"])
        if "augment_gen" in state:  # checkpoints written before augmentation existed lack it
            self.augment_gen.set_state(state["augment_gen"])
        restore_exchange(self.exchange, state["exchange"])
        self.feed.load_state_dict(state["feed"])
        self.clock.load_state_dict(state["clock"])


@contextmanager
def deterministic_algorithms(on: bool) -> Iterator[None]:
    """Run the body under torch.use_deterministic_algorithms(True, warn_only=True) if on, without
    its filling of uninitialised memory; the caller's settings are restored afterwards."""
    if not on:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.use_deterministic_algorithms(True, warn_only=True)
    # filling every torch.empty with NaN costs 8-23 % of a step (bench/deterministic.py) and
    # changes no result of code that writes before it reads
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]


def exchange_state(ex: Exchange | DenseExchange) -> dict[str, Any]:
    """Return the compression state (error feedback, switch, compressors); {} when dense."""
    if not isinstance(ex, Exchange):
        return {}
    return {
        "feedback": ex.feedback.state_dict(),
        "switch": ex.switch.state_dict(),
        "levels": [lv.state_dict() if hasattr(lv, "state_dict") else {} for lv in ex.levels],
        "momentum": ex.momentum.state_dict() if ex.momentum is not None else {},
    }


def restore_exchange(ex: Exchange | DenseExchange, state: dict[str, Any]) -> None:
    """Load what exchange_state returned."""
    if isinstance(ex, Exchange):
        ex.feedback.load_state_dict(state["feedback"])
        ex.switch.load_state_dict(state["switch"])
        if ex.momentum is not None:
            ex.momentum.load_state_dict(state["momentum"])
        for lv, s in zip(ex.levels, state["levels"], strict=True):
            if s and hasattr(lv, "load_state_dict"):
                lv.load_state_dict(s)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, data: Dataset, counters: Counters, eval_batch: int
) -> EvalReport:
    """Score model on data's held-out set: top-1, top-5, mean loss."""
    model.eval()
    x, y = data.x_test, data.y_test
    dev = next((p.device for p in model.parameters()), x.device)  # the model's (run.device)
    top1 = top5 = 0
    loss = 0.0
    for s in range(0, len(y), eval_batch):
        logits = model(x[s : s + eval_batch].to(dev))  # (n, C)
        yy = y[s : s + eval_batch].to(dev)
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
