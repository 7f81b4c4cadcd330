"""Models and the per-device normalisation layers they use."""

from scadles.nn.models import MODELS, Model, build_model, init_params, param_count
from scadles.nn.norm import (
    NORMS,
    SegmentBatchNorm,
    Segments,
    current_segments,
    device_segments,
    no_running_stats,
)

__all__ = [
    "MODELS",
    "NORMS",
    "Model",
    "SegmentBatchNorm",
    "Segments",
    "build_model",
    "current_segments",
    "device_segments",
    "init_params",
    "no_running_stats",
    "param_count",
]
