"""The paper's two networks, ResNet-152 and VGG-19 with BatchNorm, in CIFAR and ImageNet layouts.

The paper trains torchvision's `resnet152` and `vgg19_bn` unchanged (ImageNet stem, 1000-way head)
[authors' code]; `PAPER_LAYOUT` builds exactly those layouts (parameter counts checked against
torchvision's published numbers in the tests). The registered models are the usual CIFAR
adaptation [ours]: ResNet-152 with a 3x3 stride-1 stem and no max-pool, VGG-19 with one linear
layer on the globally pooled features. `width` is the channel count of the first stage (64 in
both originals); every other stage scales with it. Normalisation is any of `NORMS`.
"""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from scadles.nn.base import Model, ModelBuilder, NormAct
from scadles.nn.norm import make_norm

RESNET152_BLOCKS = (3, 8, 36, 3)  # bottleneck blocks per stage (He et al. 2016, Table 1)
STAGE_PLANES = (64, 128, 256, 512)  # bottleneck widths per stage at width 64
EXPANSION = 4  # a bottleneck's output channels / its width
# VGG-19 ("E" of Simonyan & Zisserman 2015): 16 3x3 convs; "M" is a 2x2 max-pool
VGG19 = (64, 64, "M", 128, 128, "M", *(256,) * 4, "M", *(512,) * 4, "M", *(512,) * 4, "M")
VGG_HIDDEN = 4096  # units of the ImageNet layout's two hidden linear layers at width 64


def scaled(channels: int, width: int) -> int:
    """Return the channel count `channels` (at width 64) scaled to `width`, at least 1."""
    return max(1, round(channels * width / 64))


def _in_channels(input_shape: tuple[int, ...]) -> int:
    """Return C of an input (C, H, W), or 1 for (H, W)."""
    return 1 if len(input_shape) == 2 else input_shape[0]


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 carrying the stride, 1x1 expand by 4, plus a residual (torchvision v1.5)."""

    def __init__(self, c_in: int, planes: int, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        c_out = planes * EXPANSION
        # without normalisation, 50 residual sums blow up the activations at He init: start each
        # residual branch at zero instead (SkipInit, De & Smith 2020) [ours]; init_params reads it
        self.zero_init_last = norm == "none"
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.act1 = NormAct(norm, planes, groups)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.act2 = NormAct(norm, planes, groups)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.norm3 = make_norm(norm, c_out, groups)
        self.proj: nn.Conv2d | None = None
        self.proj_norm: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.proj = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            self.proj_norm = make_norm(norm, c_out, groups)

    def forward(self, x: Tensor) -> Tensor:
        """Return relu(x' + F(x)) where x' is x or its projection."""
        h = self.norm3(self.conv3(self.act2(self.conv2(self.act1(self.conv1(x))))))
        short = x
        if self.proj is not None and self.proj_norm is not None:
            short = self.proj_norm(self.proj(x))
        return F.relu(h + short)


class BottleneckResNet(Model):
    """Bottleneck ResNet: stem, 4 stages of `blocks` bottlenecks, global average pool, linear.

    CIFAR layout: 3x3 stride-1 stem, no max-pool. ImageNet layout (`imagenet=True`, torchvision's
    `resnet152`): 7x7 stride-2 stem and a 3x3 stride-2 max-pool.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: str,
        width: int,
        groups: int,
        blocks: tuple[int, ...] = RESNET152_BLOCKS,
        imagenet: bool = False,
    ) -> None:
        super().__init__(input_shape, num_classes)
        planes = [scaled(c, width) for c in STAGE_PLANES]
        kernel, stride = (7, 2) if imagenet else (3, 1)
        self.imagenet = imagenet
        self.stem = nn.Conv2d(
            _in_channels(input_shape), planes[0], kernel, stride, kernel // 2, bias=False
        )
        self.stem_act = NormAct(norm, planes[0], groups)
        layers: list[nn.Module] = []
        c_in = planes[0]
        for stage, (width_s, count) in enumerate(zip(planes, blocks, strict=True)):
            for b in range(count):
                layers.append(Bottleneck(c_in, width_s, 2 if stage and not b else 1, norm, groups))
                c_in = width_s * EXPANSION
        self.blocks = nn.ModuleList(layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N, num_classes)."""
        h = x.reshape(x.shape[0], -1, *x.shape[-2:])  # (N, C, H, W)
        h = self.stem_act(self.stem(h))
        if self.imagenet:
            h = F.max_pool2d(h, 3, stride=2, padding=1)
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean((2, 3)))  # type: ignore[no-any-return]


class VGG(Model):
    """VGG with a norm after every 3x3 conv (convs keep their bias, as in torchvision's `_bn`).

    CIFAR layout: the pooled 512 x 1 x 1 features (any input size: pools round up) -> one linear.
    ImageNet layout (`imagenet=True`, torchvision's `vgg19_bn`): adaptive 7x7 average pool, then
    4096 -> 4096 -> classes linears with ReLU (its two dropouts hold no parameters: left out).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: str,
        width: int,
        groups: int,
        layout: tuple[int | str, ...] = VGG19,
        imagenet: bool = False,
    ) -> None:
        super().__init__(input_shape, num_classes)
        self.imagenet = imagenet
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        pools: list[bool] = []
        c_in = _in_channels(input_shape)
        for item in layout:
            if item == "M":
                pools[-1] = True
                continue
            c_out = scaled(int(item), width)
            self.convs.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            self.acts.append(NormAct(norm, c_out, groups))
            pools.append(False)
            c_in = c_out
        self.pool_after = tuple(pools)
        head: nn.Module = nn.Linear(c_in, num_classes)
        if imagenet:
            hidden = scaled(VGG_HIDDEN, width)
            head = nn.Sequential(
                nn.Linear(c_in * 49, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, num_classes),
            )
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N, num_classes)."""
        h = x.reshape(x.shape[0], -1, *x.shape[-2:])  # (N, C, H, W)
        for conv, act, pool in zip(self.convs, self.acts, self.pool_after, strict=True):
            h = act(conv(h))
            if pool:
                h = F.max_pool2d(h, 2, ceil_mode=True)
        if self.imagenet:
            return self.head(F.adaptive_avg_pool2d(h, 7).flatten(1))  # type: ignore[no-any-return]
        return self.head(h.mean((2, 3)))  # type: ignore[no-any-return]


# The registered CIFAR variants [ours] (builder(input_shape, num_classes, norm, width, groups)).
CIFAR_MODELS: dict[str, ModelBuilder] = {
    "resnet152": partial(BottleneckResNet, blocks=RESNET152_BLOCKS),
    "vgg19_bn": partial(VGG, layout=VGG19),
}
# torchvision's layouts, as the paper ran them [authors' code]: build with norm "batch", width 64.
PAPER_LAYOUT: dict[str, ModelBuilder] = {
    "resnet152": partial(BottleneckResNet, blocks=RESNET152_BLOCKS, imagenet=True),
    "vgg19_bn": partial(VGG, layout=VGG19, imagenet=True),
}
