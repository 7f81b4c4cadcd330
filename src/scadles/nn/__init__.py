"""Models, their sizes, and the per-device normalisation layers they use."""

from scadles.nn.base import Model, ModelBuilder
from scadles.nn.models import MODELS, build_model, init_params, param_count
from scadles.nn.norm import (
    NORMS,
    SegmentBatchNorm,
    Segments,
    current_segments,
    device_segments,
    no_running_stats,
)
from scadles.nn.sizes import (
    PAPER_SIZES,
    emulated_size,
    model_size,
    paper_layout_size,
    tensor_size,
)

__all__ = [
    "MODELS",
    "NORMS",
    "PAPER_SIZES",
    "Model",
    "ModelBuilder",
    "SegmentBatchNorm",
    "Segments",
    "build_model",
    "current_segments",
    "device_segments",
    "emulated_size",
    "init_params",
    "model_size",
    "no_running_stats",
    "paper_layout_size",
    "param_count",
    "tensor_size",
]
