"""The models API in one import (implemented in scadles.nn)."""

from scadles.nn import (
    MODELS,
    NORMS,
    Model,
    SegmentBatchNorm,
    Segments,
    build_model,
    init_params,
    no_running_stats,
    param_count,
)

__all__ = [
    "MODELS",
    "NORMS",
    "Model",
    "SegmentBatchNorm",
    "Segments",
    "build_model",
    "init_params",
    "no_running_stats",
    "param_count",
]
