"""The compressed gradient exchange of one step, for all K devices at once (GRACE order).

  g      = per-device mean-loss gradients                       (K, P), torch.func vmap
  acc    = feedback.compensate(g)                               g_i + e_i
  level  = switch.decide(acc, Topk(acc), epoch, g)              collective: one level for all
  send   = levels[level].compress(acc); feedback.update(acc, decompress(send))
  update = levels[level].aggregate(send, w)                     sum_i w_i * decompressed_i  (P,)

The weight w_i = b_i / sum_j b_j travels beside the payload (Flower style), so every compressor
gets weighted aggregation. Bytes are scaled by `scale` when communication is accounted at an
emulated model size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scadles.compress.base import Compressor, Payload
from scadles.compress.feedback import ErrorFeedback
from scadles.compress.switch import Switch
from scadles.grads import PerDeviceGrads


@dataclass(frozen=True, slots=True)
class Exchanged:
    """What one exchange produced and what it cost."""

    update: torch.Tensor  # (P,) aggregated gradient
    nbytes: torch.Tensor  # (K,) float64 bytes each device sends (accounted size)
    floats: float  # values each device sends, mean over devices (accounted size)
    collective: str  # "allreduce" or "allgather"
    level: int
    compressed: bool
    loss: float  # weighted mean training loss
    correct: int  # prequential hits: rows scored correctly before this update


class Exchange:
    """Per-device gradients -> error feedback -> switch -> compressor -> weighted aggregate."""

    def __init__(
        self,
        grads: PerDeviceGrads,
        levels: list[Compressor],
        switch: Switch,
        feedback: ErrorFeedback,
        scale: float = 1.0,
    ) -> None:
        self.grads = grads
        self.levels = levels
        self.switch = switch
        self.feedback = feedback
        self.scale = scale

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        seg: torch.Tensor,
        b: torch.Tensor,
        weights: torch.Tensor,
        epoch: int,
        gen: torch.Generator,
    ) -> Exchanged:
        """Run the exchange for one step; weights (K,) sum to 1 over devices with data."""
        g, loss, logits = self.grads(x, y, seg, b)  # (K, P), (K,), (N, C)
        acc = self.feedback.compensate(g)  # (K, P)
        probe = len(self.levels) - 1  # the most compressed level informs the switch
        sent = self.levels[probe].compress(acc, gen)
        kept = self.levels[probe].decompress(sent)  # (K, P)
        level = self.switch.decide(acc, kept, epoch, grad=g)
        if level != probe:
            sent = self.levels[level].compress(acc, gen)
            kept = self.levels[level].decompress(sent)
        self.feedback.update(acc, kept)
        update = self.levels[level].aggregate(sent, weights.to(acc.dtype))  # (P,)
        correct = int((logits.argmax(dim=1) == y).sum())
        return self._result(sent, update, level, float(weights.to(loss.dtype) @ loss), correct)

    def _result(
        self, sent: Payload, update: torch.Tensor, level: int, loss: float, correct: int
    ) -> Exchanged:
        name = getattr(self.levels[level], "name", "")
        return Exchanged(
            update=update,
            nbytes=sent.nbytes.double() * self.scale,
            floats=float(sent.floats.double().mean()) * self.scale,
            collective=sent.collective,
            level=level,
            compressed=name not in ("identity", "none"),
            loss=loss,
            correct=correct,
        )
