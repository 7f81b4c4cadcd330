"""Compressor names -> factories, and the one validated way to build a compressor by name."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from scadles.compress.base import Compressor
from scadles.compress.cast import Cast
from scadles.compress.identity import Identity
from scadles.compress.powersgd import PowerSGD
from scadles.compress.qsgd import DEFAULT_BUCKET, MAX_LEVELS, QSGD
from scadles.compress.randk import RandK
from scadles.compress.topk import TopK
from scadles.errors import UserError
from scadles.registry import Registry


def _layers(shapes: tuple[tuple[int, ...], ...] | None) -> tuple[int, ...] | None:
    """Return parameter sizes from parameter shapes."""
    return None if shapes is None else tuple(math.prod(s) for s in shapes)


def _topk_layer(**kw: Any) -> Compressor:
    layers = kw["layers"] if kw["layers"] is not None else _layers(kw["shapes"])
    if layers is None:
        raise ValueError("make_compressor: 'topk_layer' needs layers or shapes")
    return TopK(kw["ratio"], tuple(layers))


def _powersgd(**kw: Any) -> Compressor:
    if kw["shapes"] is None:
        raise ValueError("make_compressor: 'powersgd' needs shapes")
    return PowerSGD(kw["rank"], tuple(tuple(s) for s in kw["shapes"]))


# name -> factory(ratio=, layers=, shapes=, rank=, levels=, bucket=, unbiased=); alphabetical,
# the order an unknown name lists them in
DENSE = frozenset({"none", "identity"})  # the names that send the gradient uncompressed

COMPRESSORS: Registry[Callable[..., Compressor]] = Registry(
    "compressor",
    {
        "bf16": lambda **kw: Cast(torch.bfloat16),
        "fp16": lambda **kw: Cast(torch.float16),
        "identity": lambda **kw: Identity(),
        "none": lambda **kw: Identity(),
        "powersgd": _powersgd,
        "qsgd": lambda **kw: QSGD(kw["levels"], kw["bucket"]),
        "randk": lambda **kw: RandK(kw["ratio"], kw["unbiased"]),
        "topk": lambda **kw: TopK(kw["ratio"]),
        "topk_layer": _topk_layer,
    },
    key="compress.name",
)
USES = {"topk": "ratio", "topk_layer": "ratio", "randk": "ratio", "qsgd": "levels"}
USES |= {"powersgd": "rank"}


def check_values(name: str, ratio: float, rank: int, levels: int) -> None:
    """Raise UserError for a value out of range for the named compressor."""
    COMPRESSORS.get(name)
    key = USES.get(name)
    if key == "ratio" and not (isinstance(ratio, int | float) and 0.0 < ratio <= 1.0):
        raise UserError(f"compress.ratio must be in (0, 1], got {ratio}")
    if key == "rank" and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise UserError(f"compress.rank must be an integer >= 1, got {rank}")
    bad_levels = isinstance(levels, bool) or not isinstance(levels, int)
    if key == "levels" and (bad_levels or not 1 <= levels <= MAX_LEVELS):
        raise UserError(f"compress.levels must be an integer in [1, {MAX_LEVELS}], got {levels}")


def make_compressor(
    name: str,
    *,
    ratio: float = 0.1,
    layers: tuple[int, ...] | None = None,
    shapes: tuple[tuple[int, ...], ...] | None = None,
    rank: int = 1,
    levels: int = 256,
    unbiased: bool = False,
    bucket: int = DEFAULT_BUCKET,
) -> Compressor:
    """Return the compressor `name` with its values checked; layers/shapes come from the model."""
    check_values(name, ratio, rank, levels)
    kw = {"ratio": ratio, "layers": layers, "shapes": shapes, "rank": rank, "levels": levels}
    kw["bucket"] = bucket
    return COMPRESSORS.get(name)(**kw, unbiased=unbiased)
