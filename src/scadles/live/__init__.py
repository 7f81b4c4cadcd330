"""Live stream sources for the real mode: one Redis stream or Kafka topic per device.

``wire`` defines the one-sample message format; ``redis_stream`` and ``kafka_stream`` read and
write it through a broker (they need the optional ``live`` extra: ``pip install scadles[live]``);
``produce`` is the paper's rate-paced producer. Broker modules are not imported here, so
``import scadles.live`` works without the extra.
"""

from scadles.live.wire import REASONS, WireError, decode, decode_many, encode

__all__ = ["REASONS", "WireError", "decode", "decode_many", "encode"]
