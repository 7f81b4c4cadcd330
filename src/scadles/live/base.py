"""The live-source protocol: what the real-mode trainer needs from per-device streams.

Implement ``LiveSource`` to bring your own stream (a message queue, a sensor feed, a file
tailer); the built-in ones are in-process replay, Kafka and Redis (``scadles.live.source``).
A source serves ``devices`` streams, numbered 0..devices-1 locally (this process's devices).
The trainer drives it in a loop, from one thread:

1. ``poll(want, timeout_s)``: every step it asks for up to ``want[d]`` samples of each device d
   and gets one ``Delivery`` per device (possibly empty), waiting at most ``timeout_s`` seconds
   when nothing has arrived yet. Return what arrived; never block for the full ``want``.
2. ``done(device, ids)``: the samples with these ids (from a ``Delivery.ids``) are trained on, or
   dropped on purpose (buffer truncation); a broker with acknowledgements acknowledges them
   here. Samples never marked done may be delivered again after a restart.
3. ``positions()``: where a restarted source resumes, as {stream name: count or offset}; it is
   saved in checkpoints and given back when the source is reopened ({} when the broker keeps
   the position itself).
4. ``broker_count(device)``: the broker's own count of messages in the device's stream (how far
   the producer is), for the lag the trainer reports.
5. ``skipped()``: messages passed over as invalid so far, by reason
   (``scadles.live.wire.REASONS``), summed over devices.
6. ``close()``: release connections and threads; called once, at the end of the run.

Example: a source that has nothing to give::

    >>> import torch
    >>> class Empty:
    ...     devices = 2
    ...     def poll(self, want, timeout_s):
    ...         return [Delivery(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), [], 0)
    ...                 for _ in want]
    ...     def done(self, device, ids): pass
    ...     def positions(self): return {}
    ...     def broker_count(self, device): return 0
    ...     def skipped(self): return {}
    ...     def close(self): pass
    >>> [len(d.ids) for d in Empty().poll([4, 4], 0.1)]
    [0, 0]

To make such a source selectable by ``live.source``, register a factory taking a
``SourceRequest`` in ``scadles.live.source.SOURCES``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from scadles.data.rates import RateSchedule

DEFAULT_PREFIX = "scadles-device"
Replay = tuple[list[tuple[torch.Tensor, torch.Tensor]], RateSchedule, int]  # parts, rates, seed


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one poll gave one device."""

    x: torch.Tensor  # (n, *shape) decoded valid samples
    y: torch.Tensor  # (n,) int64 labels
    ids: list[str]  # source ids of the valid samples, aligned with the rows of x (for done)
    skipped: int  # messages skipped as invalid in this poll (already acknowledged/consumed)


class LiveSource(Protocol):
    """Per-device live streams, polled by the real-mode trainer (see the module docstring)."""

    devices: int  # how many device streams this source serves (this process's devices)

    def poll(self, want: Sequence[int], timeout_s: float) -> list[Delivery]:
        """Return one Delivery per device with up to ``want[d]`` samples; wait up to timeout_s.

        ``len(want) == devices``. Return as soon as any device has samples; an empty Delivery
        for a device with nothing new.
        """
        ...

    def done(self, device: int, ids: Sequence[str]) -> None:
        """Mark samples as trained or dropped on purpose (Redis: XACK; replay, Kafka: nothing)."""
        ...

    def positions(self) -> dict[str, int]:
        """Return {stream name: position} that a reopened source resumes from ({}: broker's)."""
        ...

    def broker_count(self, device: int) -> int:
        """Return the broker's own count of messages in the device's stream."""
        ...

    def skipped(self) -> dict[str, int]:
        """Return the messages skipped so far as invalid, by reason."""
        ...

    def close(self) -> None:
        """Release the connections (or stop the producer threads)."""
        ...


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """What a SOURCES factory is asked to open: this process's streams and the live section."""

    url: str  # live.url ("" when unset)
    streams: Sequence[str]  # stream (topic) name of each local device
    shape: tuple[int, ...]  # shape of one sample
    num_classes: int
    max_bytes: int  # live.max_message_bytes: larger messages are skipped
    positions: Mapping[str, int] | None = None  # where to resume (a checkpoint's positions())
    group: str = "scadles"  # live.group (Redis consumer group)
    consumer: str = "rank0"  # this process's consumer name
    replay: Replay | None = None  # (partitions, rate schedule, seed) for the replay source
    devices: Sequence[int] | None = None  # global device id of each stream (default 0..n-1)
    start_s: float = 0.0  # run time already elapsed (a resumed run)


def stream_names(devices: Sequence[int], prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Return the stream (topic) name of each global device id: ``{prefix}-{device}``."""
    return [f"{prefix}-{d}" for d in devices]
