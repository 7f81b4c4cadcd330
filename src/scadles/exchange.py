"""The gradient exchange of one step: local gradients in, the aggregated update (P,) out.

Dense (no compression): the union batch of this rank's devices goes through forward/backward with
per-sample weights w_i / b_i (the weighted mean of per-device gradients), in cache-sized chunks of
whole devices whose gradients accumulate (`scadles.chunking`), then one all-reduce.

Compressed, for all local devices at once (GRACE order):
  g      = per-device mean-loss gradients                       (K, P), torch.func vmap
  g      = momentum.accumulate(g)  (momentum correction only)   u_i = m u_i + g_i + wd w
  g      = w_i g_i                  (weigh_first only)          the authors' code's order
  acc    = feedback.compensate(g)                               g_i + e_i
  level  = switch.decide(acc, Topk(acc), epoch, g, b)           votes summed over ranks
  send   = levels[level].compress(acc); feedback.update(acc, decompress(send))
  update = levels[level].aggregate(send, w)                     sum_i w_i * decompressed_i  (P,)

Error feedback on a dense step is the style's choice: "flush" sends acc = g + e and leaves a zero
residual; "keep" ([authors' code]) sends the raw g and keeps e = acc - Topk(acc), the residual
the probe left. With weigh_first the weights are applied before feedback and the aggregate is a
plain sum, as the authors' code scales p.grad by b_i / sum b before compressing.

The weight w_i = b_i / sum_j b_j travels beside the payload (Flower style), so every compressor
gets weighted aggregation. The update is returned as a value; the engine decides whether to apply
it (the non-finite rule) and writes it. The switch owns its vote: the transport sums `vote()` over
processes and asks `agree()` for the level every process uses. Across ranks, all-gather payloads
are gathered and aggregated in one place, all-reduce payloads are aggregated locally and summed.
Bytes are scaled by `scale` when communication is accounted at an emulated model size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scadles.aggregate import sample_weights
from scadles.chunking import (
    CHUNK_ELEMENTS,
    chunk_bounds,
    chunk_rows,
    chunkable,
    deferred_running_stats,
    segments,
)
from scadles.comm import Collective, LocalCollective
from scadles.compress.base import Compressor, Payload
from scadles.compress.feedback import ErrorFeedback
from scadles.compress.momentum import LocalMomentum
from scadles.compress.registry import DENSE
from scadles.compress.switch import Switch
from scadles.compress.switches import ExchangeStyle
from scadles.grads import PerDeviceGrads
from scadles.nn import Segments, device_segments


@dataclass(frozen=True, slots=True)
class Exchanged:
    """What one exchange cost and what the batch scored before the update."""

    update: torch.Tensor  # (P,) the aggregated update in parameter order, same on every rank
    nbytes: torch.Tensor  # (K,) float64 bytes each device's payload holds (accounted size)
    floats: float  # values each device sends, mean over devices (accounted size)
    collective: str  # "allreduce" or "allgather"
    compressed: bool
    loss: float  # weighted mean training loss over all devices
    correct: int  # prequential hits over all devices: rows right before this update
    signal: float | None = None  # the switch's raw signal, mean over this rank's devices
    compressors_run: tuple[str, ...] = ()  # compressors each device ran: probes, then level
    choice: str = ""  # the exchange used: the level's compressor, or the time-aware candidate


@dataclass(frozen=True, slots=True)
class Batch:
    """One step's union batch, global view (every rank knows every device's batch size)."""

    x: torch.Tensor  # (N, *shape)
    y: torch.Tensor  # (N,)
    seg: torch.Tensor  # (N,) device ids
    b: torch.Tensor  # (K,) batch sizes
    weights: torch.Tensor  # (K,) aggregation weights, sum 1

    def local(self, lo: int, hi: int) -> Batch:
        """Return the rows and weights of devices [lo, hi) (hi = 0: all), ids renumbered from 0."""
        if lo == 0 and hi in (0, len(self.b)):
            return self
        keep = (self.seg >= lo) & (self.seg < hi)
        return Batch(
            self.x[keep], self.y[keep], self.seg[keep] - lo, self.b[lo:hi], self.weights[lo:hi]
        )


def _weighted_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Return sum_n (w_seg(n) / b_seg(n)) loss_n, whose gradient is the weighted mean gradient.

    When every row carries the same weight (ScaDLES' b_i / sum b, or equal batches), this is a
    scaled mean loss: one fused cross-entropy instead of per-row losses, weights and a sum.
    """
    n = len(batch.y)
    live = (batch.weights / batch.b.clamp(min=1).double())[batch.b > 0]  # (K_live,) w_i / b_i
    if n and bool((live == live[0]).all()):
        scale = float(live[0]) * n
        loss = F.cross_entropy(logits, batch.y)
        return loss if scale == 1.0 else loss * scale
    pw = sample_weights(batch.seg, batch.b, batch.weights).to(logits.dtype)  # (N,)
    return (F.cross_entropy(logits, batch.y, reduction="none") * pw).sum()


def _reduces_itself(comp: Compressor) -> bool:
    """Return whether comp sums its rounds over processes itself (PowerSGD across ranks)."""
    return getattr(comp, "reduce", None) is not None


class DenseExchange:
    """Weighted union-batch backward on this rank's devices, then an all-reduce of gradients."""

    def __init__(
        self,
        model: torch.nn.Module,
        comm_params: float,
        coll: Collective | None = None,
        devices: tuple[int, int] = (0, 0),
        chunk_elements: int = CHUNK_ELEMENTS,
    ) -> None:
        self.model = model
        self.comm_params = comm_params
        self.coll = coll or LocalCollective()
        self.devices = devices
        self.chunk_elements = chunk_elements  # input values per chunk of the union batch
        self.params = [p for p in model.parameters() if p.requires_grad]  # fixed set
        self.stats = [t for t in model.buffers() if t.is_floating_point()]  # BN statistics
        dtype = self.params[0].dtype if self.params else torch.float32
        device = self.params[0].device if self.params else None  # the model's (run.device)
        self.flat = torch.zeros(
            sum(p.numel() for p in self.params), dtype=dtype, device=device
        )  # (P,)
        sizes = [p.numel() for p in self.params]
        self.views = [
            v.view_as(p) for v, p in zip(torch.split(self.flat, sizes), self.params, strict=True)
        ]

    def __call__(self, batch: Batch, epoch: int, gen: torch.Generator) -> Exchanged:
        """Return the weighted mean gradient of all devices and its accounting."""
        k = len(batch.b)
        mine = batch.local(*self.devices)
        self.flat.zero_()
        for p, v in zip(self.params, self.views, strict=True):  # backward accumulates into flat
            p.grad = v
        rows = chunk_rows(mine.x, self.chunk_elements)
        if len(mine.y) <= rows or not chunkable(self.model):
            total_loss, correct = self._backward(mine, len(mine.b))
        else:  # cache-sized chunks of whole devices; gradients accumulate, BN stats move once
            total_loss, correct = 0.0, 0
            with deferred_running_stats(self.model):
                for d0, d1, r0, r1 in chunk_bounds(mine.b, rows):
                    part = Batch(
                        mine.x[r0:r1],
                        mine.y[r0:r1],
                        mine.seg[r0:r1] - d0,
                        mine.b[d0:d1],
                        mine.weights[d0:d1],
                    )
                    loss, hits = self._backward(part, segments(d1 - d0))
                    total_loss, correct = total_loss + loss, correct + hits
        total_correct = correct
        update = self.flat  # (P,) the gradients, in place (valid until the next call)
        if self.coll.world > 1:  # one all-reduce: gradients, BN statistics, loss and hits
            n_grad, stats = len(update), self.stats
            share = float(mine.b.sum()) / max(float(batch.b.sum()), 1)
            parts = [update, *(t.reshape(-1).float() * share for t in stats)]
            parts.append(
                torch.tensor([total_loss, float(correct)], dtype=update.dtype, device=update.device)
            )
            flat = self.coll.all_reduce(torch.cat(parts))  # (P + S + 2,)
            _write_stats(stats, flat[n_grad:-2])
            total_loss, total_correct = float(flat[-2]), round(float(flat[-1]))
            update = flat[:n_grad]  # (P,)
        nbytes = torch.full((k,), 4.0 * self.comm_params, dtype=torch.float64)
        return Exchanged(
            update, nbytes, self.comm_params, "allreduce", False, total_loss, total_correct
        )

    def _backward(self, part: Batch, count: int) -> tuple[float, int]:
        """Accumulate the weighted loss gradient of part's rows; return its loss and hits."""
        with device_segments(Segments(part.seg, count, None)):
            logits = self.model(part.x)  # (n, C)
        loss = _weighted_loss(logits, part)
        loss.backward()  # type: ignore[no-untyped-call]
        correct = int((logits.detach().argmax(dim=1) == part.y).sum())
        return float(loss.detach()), correct


def _mean_signal(switch: Switch) -> float | None:
    """Return the mean over devices of the switch's last raw signal, if it keeps one."""
    sig = getattr(switch, "last_signal", None)
    return float(sig.mean()) if isinstance(sig, torch.Tensor) and sig.numel() else None


@torch.no_grad()
def _write_stats(stats: list[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy the reduced float buffers (BatchNorm running statistics) back in place.

    Running-stat updates are linear in the batch statistics, so the row-weighted sum of the
    ranks' buffers equals the single-process update over all devices.
    """
    at = 0
    for t in stats:
        t.copy_(flat[at : at + t.numel()].view_as(t))
        at += t.numel()


class Exchange:
    """Per-device gradients -> error feedback -> switch -> compressor -> weighted aggregate."""

    def __init__(
        self,
        grads: PerDeviceGrads,
        levels: list[Compressor],
        switch: Switch,
        feedback: ErrorFeedback,
        scale: float = 1.0,
        coll: Collective | None = None,
        devices: tuple[int, int] = (0, 0),
        momentum: LocalMomentum | None = None,
        style: ExchangeStyle | None = None,
    ) -> None:
        self.style = style or ExchangeStyle()
        self.grads = grads
        self.levels = levels
        self.switch = switch
        self.feedback = feedback
        self.scale = scale
        self.coll = coll or LocalCollective()
        self.devices = devices
        self.momentum = momentum

    def __call__(self, batch: Batch, epoch: int, gen: torch.Generator) -> Exchanged:
        """Return the aggregated (compressed) update and its accounting."""
        k = len(batch.b)
        mine = batch.local(*self.devices)
        g, loss, logits = self.grads(mine.x, mine.y, mine.seg, mine.b)  # (K_l, P), (K_l,), (N_l, C)
        if self.momentum is not None:  # DGC momentum correction: compress velocities
            decay = self.grads.flat_params() if self.momentum.weight_decay else None
            g = self.momentum.accumulate(g, decay)
        if self.style.weigh_first:
            g = g * mine.weights.to(g.dtype)[:, None]  # (K_l, P) w_i g_i
        acc = self.feedback.compensate(g)  # (K_l, P)
        # the most compressed level informs the switch; a switch whose `probe` is None (the
        # time-aware one, which measures its candidates itself) gets no probe
        probe: int | None = getattr(self.switch, "probe", len(self.levels) - 1)
        sent: Payload | None = None
        kept: torch.Tensor | None = None
        if probe is not None:
            sent = self.levels[probe].compress(acc, gen)
            kept = self.levels[probe].decompress(sent)  # (K_l, P)
        correct = int((logits.argmax(dim=1) == mine.y).sum())
        wloss = float(mine.weights.to(loss) @ loss)  # (K,) weights stay on the CPU
        local = self.switch.decide(acc, kept, epoch, grad=g, b=mine.b)
        level, wloss, correct = self._agree(local, k, wloss, correct)
        comp = self.levels[level]
        compressed = getattr(comp, "name", "") not in DENSE
        keep = not compressed and self.style.dense_feedback == "keep"
        if level != probe or sent is None:
            sent = comp.compress(g if keep else acc, gen)
            if not keep:  # "keep": the residual stays what the probe left
                kept = comp.decompress(sent)
            elif kept is None:  # "keep" without a probe: the residual stays as it was
                kept = g
        assert kept is not None
        self.feedback.update(acc, kept)
        if self.momentum is not None and compressed:
            self.momentum.mask(kept)
        sent = self._gather(sent)
        w = (batch.weights if sent.nbytes.numel() == k else mine.weights).to(acc)
        if self.style.weigh_first:
            w = torch.ones_like(w)  # the weights are already in the updates
        update = comp.aggregate(sent, w)  # (P,)
        if sent.collective == "allreduce" and self.coll.world > 1 and not _reduces_itself(comp):
            update = self.coll.all_reduce(update)
        nbytes = sent.nbytes.double()
        if nbytes.numel() != k:
            nbytes = self.coll.all_gather(nbytes).reshape(k)
        return Exchanged(
            update=update,
            nbytes=nbytes * self.scale,
            floats=float(nbytes.numel() and sent.floats.double().mean()) * self.scale,
            collective=sent.collective,
            compressed=compressed,
            loss=wloss,
            correct=correct,
            signal=_mean_signal(self.switch),
            compressors_run=(
                *getattr(self.switch, "probed", ()),
                *(
                    getattr(self.levels[i], "name", "")
                    for i in dict.fromkeys((probe, level))
                    if i is not None
                ),
            ),
            choice=self._label(level),
        )

    def _label(self, level: int) -> str:
        """Return the name of the exchange at level: the switch's label, else the compressor's."""
        labels = getattr(self.switch, "labels", None)
        return str(labels[level]) if labels else str(getattr(self.levels[level], "name", ""))

    def expect(self, base: float) -> None:
        """Tell a switch that learns from timings what the coming step costs before its exchange."""
        expect = getattr(self.switch, "expect", None)
        if expect is not None:
            expect(base)

    def observe(self, wait_s: float, compute_s: float, comm_s: float) -> None:
        """Tell a switch that learns from timings (time-aware) what the finished step took."""
        observe = getattr(self.switch, "observe", None)
        if observe is not None:
            observe(compute_s=compute_s, comm_s=comm_s, wait_s=wait_s)

    def _agree(self, local: int, k: int, loss: float, correct: int) -> tuple[int, float, int]:
        """Return the level every rank uses and the summed loss and hits: one all-reduce.

        The vote over all K devices (paper 2.4 [C]) travels with the loss and the hit count. A
        fixed switch, and Accordion (whose accumulator is all-reduced), pick the same level on
        every rank by construction; the same all-reduce checks it, so a disagreement stops the
        run with an error instead of mismatched collectives.
        """
        if self.coll.world == 1:
            return local, loss, correct
        vote = self.switch.vote(local)
        summed = self.coll.all_reduce(
            torch.tensor([vote, loss, float(correct)], dtype=torch.float64)
        )
        level = self.switch.agree(float(summed[0]), k, self.coll.world, local)
        return level, float(summed[1]), round(float(summed[2]))

    def _gather(self, sent: Payload) -> Payload:
        """All-gather an all-gather payload so every rank holds all K devices' blocks."""
        if sent.collective != "allgather" or self.coll.world == 1:
            return sent

        def cat(t: torch.Tensor) -> torch.Tensor:
            g = self.coll.all_gather(t)  # (world, K_l, ...)
            return g.reshape(g.shape[0] * g.shape[1], *g.shape[2:])

        data = {name: cat(t) for name, t in sent.data.items()}
        return Payload(data, cat(sent.nbytes), cat(sent.floats), sent.collective)
