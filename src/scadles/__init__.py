"""scadles: synchronous distributed SGD on streaming data at heterogeneous edge devices."""

__version__ = "0.1.0"
