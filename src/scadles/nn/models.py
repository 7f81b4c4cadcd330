"""Small classifiers whose normalisation layers see the device of each row (no torchvision)."""

from __future__ import annotations

import contextlib
import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scadles.errors import UserError
from scadles.nn.base import Model, ModelBuilder, NormAct
from scadles.nn.norm import NORMS, SegmentBatchNorm, make_norm
from scadles.nn.paper_models import CIFAR_MODELS, Bottleneck
from scadles.registry import Registry


class MLP(Model):
    """Flatten -> two hidden layers of 4*width units (norm, ReLU) -> linear head."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, norm: str, width: int, groups: int
    ) -> None:
        super().__init__(input_shape, num_classes)
        hidden = 4 * width
        self.fc1 = nn.Linear(math.prod(input_shape), hidden)
        self.act1 = NormAct(norm, hidden, groups)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act2 = NormAct(norm, hidden, groups)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N, num_classes)."""
        h = self.act1(self.fc1(x.flatten(1)))  # (N, 4w)
        h = self.act2(self.fc2(h))
        return self.head(h)  # type: ignore[no-any-return]


class CNN1d(Model):
    """Three stride-2 convs (kernels 5, 3, 3) with norm and ReLU, then a linear head (MNIST-1D)."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, norm: str, width: int, groups: int
    ) -> None:
        super().__init__(input_shape, num_classes)
        channels, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        for c_in, kernel in ((channels, 5), (width, 3), (width, 3)):
            self.convs.append(nn.Conv1d(c_in, width, kernel, stride=2, padding=kernel // 2))
            self.acts.append(NormAct(norm, width, groups))
            length = (length - 1) // 2 + 1
        self.head = nn.Linear(width * length, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N, num_classes)."""
        h = x.reshape(x.shape[0], -1, x.shape[-1])  # (N, C, L)
        for conv, act in zip(self.convs, self.acts, strict=True):
            h = act(conv(h))
        return self.head(h.flatten(1))  # type: ignore[no-any-return]


class CNN2d(Model):
    """Three 3x3 conv blocks (width, 2w, 2w channels; max-pool after the first two), global pool."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, norm: str, width: int, groups: int
    ) -> None:
        super().__init__(input_shape, num_classes)
        channels = 1 if len(input_shape) == 2 else input_shape[0]
        widths = (width, 2 * width, 2 * width)
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        for c_in, c_out in zip((channels, *widths[:-1]), widths, strict=True):
            self.convs.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            self.acts.append(NormAct(norm, c_out, groups))
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N, num_classes)."""
        h = x.reshape(x.shape[0], -1, *x.shape[-2:])  # (N, C, H, W)
        for i, (conv, act) in enumerate(zip(self.convs, self.acts, strict=True)):
            h = act(conv(h))
            if i < 2:
                h = F.max_pool2d(h, 2, ceil_mode=True)
        return self.head(h.mean((2, 3)))  # type: ignore[no-any-return]


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv (+ norm) shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.act1 = NormAct(norm, c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, c_out, groups)
        self.proj: nn.Conv2d | None = None
        self.proj_norm: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.proj = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            self.proj_norm = make_norm(norm, c_out, groups)

    def forward(self, x: Tensor) -> Tensor:
        """Return relu(x' + F(x)) where x' is x or its projection."""
        h = self.norm2(self.conv2(self.act1(self.conv1(x))))
        short = x
        if self.proj is not None and self.proj_norm is not None:
            short = self.proj_norm(self.proj(x))
        return F.relu(h + short)


class ResNet(Model):
    """CIFAR ResNet (He et al. 2016, Sec. 4.2): 3 stages of n blocks, (16, 32, 64) * width/16."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: str,
        width: int,
        groups: int,
        blocks: int,
    ) -> None:
        super().__init__(input_shape, num_classes)
        channels = 1 if len(input_shape) == 2 else input_shape[0]
        widths = [max(1, round(c * width / 16)) for c in (16, 32, 64)]
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1, bias=False)
        self.stem_act = NormAct(norm, widths[0], groups)
        layers: list[nn.Module] = []
        c_in = widths[0]
        for stage, c_out in enumerate(widths):
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(c_in, c_out, stride, norm, groups))
                c_in = c_out
        self.blocks = nn.ModuleList(layers)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N, num_classes)."""
        h = x.reshape(x.shape[0], -1, *x.shape[-2:])  # (N, C, H, W)
        h = self.stem_act(self.stem(h))
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean((2, 3)))  # type: ignore[no-any-return]


# (input_shape, num_classes, norm, width, groups) -> an uninitialised model (ModelBuilder);
# build_model draws its weights. Register a builder to add a model.
MODELS: Registry[ModelBuilder] = Registry(
    "model",
    {
        "mlp": MLP,
        "cnn1d": CNN1d,
        "cnn2d": CNN2d,
        "resnet8": partial(ResNet, blocks=1),
        "resnet20": partial(ResNet, blocks=3),
        **CIFAR_MODELS,  # resnet152, vgg19_bn
    },
    key="model.name",
)


IMAGE_MODELS = ("cnn2d", "resnet8", "resnet20", *CIFAR_MODELS)  # inputs (C, H, W) or (H, W)


def _check(name: str, input_shape: tuple[int, ...], num_classes: int, norm: str) -> None:
    """Reject unknown names and shapes a model cannot take, naming what is allowed."""
    if name not in MODELS:
        raise UserError(f"model.name: unknown model {name!r}; known: {', '.join(MODELS)}")
    NORMS.get(norm)  # an unknown name lists the known ones
    if num_classes < 1 or not input_shape or min(input_shape) < 1:
        raise UserError(f"model: bad input shape {input_shape} or class count {num_classes}")
    ranks = {"cnn1d": (1, 2), **dict.fromkeys(IMAGE_MODELS, (2, 3))}
    if name in ranks and len(input_shape) not in ranks[name]:
        raise UserError(
            f"model.name: {name} needs input shape of rank {ranks[name]}, got {input_shape}"
        )


def init_params(model: nn.Module, gen: torch.Generator | None = None) -> None:
    """Draw every weight from gen: He-normal convs, PyTorch-default linears, unit/zero norms
    (and a zero last conv in the residual branches of an unnormalised bottleneck ResNet)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, mode="fan_out", nonlinearity="relu", generator=gen
                )
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound, generator=gen)
                nn.init.uniform_(m.bias, -bound, bound, generator=gen)
            elif isinstance(m, SegmentBatchNorm | nn.GroupNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        for m in model.modules():
            if isinstance(m, Bottleneck) and m.zero_init_last:
                m.conv3.weight.zero_()


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    norm: str = "none",
    width: int = 32,
    groups: int = 8,
    gen: torch.Generator | None = None,
    meta: bool = False,
) -> Model:
    """Build model name for inputs (N, *input_shape), initialised from gen (global RNG if None).

    `meta=True` builds it on the meta device: shapes only, no weights allocated or drawn (sizes).
    """
    input_shape = tuple(int(d) for d in input_shape)
    _check(name, input_shape, num_classes, norm)
    if width < 1 or groups < 1:
        raise UserError(f"model: width and groups must be >= 1, got width={width} groups={groups}")
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = MODELS.get(name)(input_shape, num_classes, norm, width, groups)
    if not meta:
        init_params(model, gen)
    return model


def param_count(model: nn.Module) -> int:
    """Return the number of trainable scalars in model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
