"""scadles: synchronous distributed SGD on streaming data at heterogeneous edge devices.

The public API (docs/API.md): `load_config`, `Dataset`, `run`, `compare`; `LiveSource` and
`Delivery` to bring a live stream; `SegmentBatchNorm` and `device_segments` for per-device
BatchNorm in a user's model.
"""

from scadles.api import Config, Dataset, compare, load_config, run
from scadles.live.base import Delivery, LiveSource
from scadles.nn import SegmentBatchNorm, device_segments

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Dataset",
    "Delivery",
    "LiveSource",
    "SegmentBatchNorm",
    "__version__",
    "compare",
    "device_segments",
    "load_config",
    "run",
]
