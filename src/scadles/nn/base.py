"""The classifier base class and the norm-then-ReLU block every built-in model shares."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from scadles.nn.norm import make_norm


class Model(nn.Module):
    """A classifier: forward(x (N, *input_shape)) -> logits (N, num_classes), set by subclasses.

    Per-device BatchNorm layers read the device of each row from `device_segments`.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.num_classes = num_classes


class NormAct(nn.Module):
    """Normalise then ReLU."""

    def __init__(self, norm: str, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = make_norm(norm, channels, groups)

    def forward(self, x: Tensor) -> Tensor:
        """Return relu(norm(x))."""
        return F.relu(self.norm(x))


# (input_shape, num_classes, norm, width, groups) -> an uninitialised model (MODELS' entries)
ModelBuilder = Callable[[tuple[int, ...], int, str, int, int], Model]
