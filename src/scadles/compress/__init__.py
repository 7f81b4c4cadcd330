"""Gradient compressors (GRACE split): compressors, error-feedback memory, and the name registry."""

from scadles.compress.base import COLLECTIVES, Compressor, Payload
from scadles.compress.cast import Cast
from scadles.compress.feedback import ErrorFeedback
from scadles.compress.identity import Identity
from scadles.compress.powersgd import PowerSGD
from scadles.compress.qsgd import QSGD
from scadles.compress.randk import RandK
from scadles.compress.registry import COMPRESSORS, make_compressor
from scadles.compress.topk import TopK

__all__ = [
    "COLLECTIVES",
    "COMPRESSORS",
    "QSGD",
    "Cast",
    "Compressor",
    "ErrorFeedback",
    "Identity",
    "Payload",
    "PowerSGD",
    "RandK",
    "TopK",
    "make_compressor",
]
