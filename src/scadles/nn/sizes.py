"""Model sizes for communication accounting: parameters and parameter tensors, never allocated.

`model_size` counts a registered model at a data shape by building it on the meta device.
`PAPER_SIZES` are the sizes of the networks the paper measured: torchvision's `resnet152` and
`vgg19_bn` with their ImageNet layout and 1000-way head [authors' code], 60.2M and 143.7M
parameters, i.e. the 230 MB and 548 MB (MiB) float32 gradients of the paper [paper]; the tests
rebuild those layouts (`paper_layout_size`) and check these numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scadles.errors import UserError
from scadles.nn.models import MODELS, build_model
from scadles.nn.paper_models import PAPER_LAYOUT

# name -> (parameters, parameter tensors) of torchvision's model (its published counts)
PAPER_SIZES: dict[str, tuple[int, int]] = {
    "resnet152": (60_192_808, 467),
    "vgg19_bn": (143_678_248, 70),
}
IMAGENET_SHAPE = (3, 224, 224)
IMAGENET_CLASSES = 1000


def tensor_size(model: nn.Module) -> tuple[int, int]:
    """Return (trainable scalars, trainable parameter tensors) of model."""
    params = [p for p in model.parameters() if p.requires_grad]
    return sum(p.numel() for p in params), len(params)


def model_size(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    norm: str = "none",
    width: int = 32,
    groups: int = 8,
) -> tuple[int, int]:
    """Return (parameters, parameter tensors) of registered model `name` for inputs
    (N, *input_shape) and `num_classes` classes, as `build_model` would build it (meta device)."""
    model = build_model(
        name, tuple(input_shape), num_classes, norm=norm, width=width, groups=groups, meta=True
    )
    return tensor_size(model)


def paper_layout_size(name: str, num_classes: int = IMAGENET_CLASSES) -> tuple[int, int]:
    """Return (parameters, tensors) of torchvision's layout of `name` (ImageNet stem and head,
    BatchNorm, width 64) with num_classes outputs, built here on the meta device."""
    if name not in PAPER_LAYOUT:
        known = ", ".join(PAPER_LAYOUT)
        raise UserError(f"unknown paper model {name!r}; known: {known}")
    with torch.device("meta"):
        model = PAPER_LAYOUT[name](IMAGENET_SHAPE, num_classes, "batch", 64, 1)
    return tensor_size(model)


def size_names() -> tuple[str, ...]:
    """Return the names `emulated_size` accepts: the paper's models, then every registered one."""
    return tuple(dict.fromkeys((*PAPER_SIZES, *MODELS)))


def emulated_size(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    norm: str = "none",
    width: int = 32,
    groups: int = 8,
    key: str = "clock.emulate_params",
) -> tuple[int, int]:
    """Return (parameters, tensors) that `name` stands for when communication is emulated:
    PAPER_SIZES for the paper's models, else the registered model at this data shape."""
    if name in PAPER_SIZES:
        return PAPER_SIZES[name]
    if name not in MODELS:
        raise UserError(
            f"{key}: unknown model {name!r}; known: a positive integer or "
            + ", ".join(size_names())
        )
    try:
        return model_size(name, input_shape, num_classes, norm=norm, width=width, groups=groups)
    except UserError as err:
        raise UserError(f"{key} = {name!r}: {err}") from None
