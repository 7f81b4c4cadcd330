"""Feeds: where a step's samples come from and how long each device waited for them.

One `Engine.step` serves the simulator and real mode; what differs is the feed (DESIGN: "one
engine, two feeds") and the clock. A feed fills the step's union batch, ends the step (arrivals
during it, the buffer policy) and keeps the exact accounting, per device and global on every rank:

    arrived = trained + dropped + held

- `scadles.feeds.sim.SimFeed`: modelled arrivals into vectorised stream buffers, replayed data,
  optional injection, modelled waits (virtual clock).
- `scadles.feeds.live.LiveFeed`: live sources (replay thread, Kafka, Redis, or a user's own
  `scadles.live.base.LiveSource`), per-device FIFO buffers, acknowledgements, stall detection and
  the all-reduce of batch sizes (wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True, slots=True)
class Fill:
    """One step's union batch, global view, and what it cost each device to gather it."""

    x: torch.Tensor  # (N, *shape) this process's devices' rows, device-major
    y: torch.Tensor  # (N,)
    seg: torch.Tensor  # (N,) global device id of each row
    b: torch.Tensor  # (K,) int64 every device's batch size (own + injected)
    wait: torch.Tensor  # (K,) float64 seconds each device waited for its stream
    moved: torch.Tensor  # (K,) float64 seconds each device spent moving injected samples
    injected: int  # samples received by injection this step, all devices
    injection_bytes: float  # bytes those samples crossed links with (up at the sender, down here)


@dataclass(frozen=True, slots=True)
class StepCounts:
    """What the streams did during one step, summed over devices."""

    arrived: int
    dropped: int


@dataclass(frozen=True, slots=True)
class Accounting:
    """Cumulative per-device counts, (K,) int64 each, identical on every rank.

    arrived = trained + dropped + held; `shared` counts own samples sent to other devices by
    injection and `own_trained` own samples trained (their ratio is the exposure).
    """

    arrived: torch.Tensor
    trained: torch.Tensor
    dropped: torch.Tensor
    held: torch.Tensor
    shared: torch.Tensor
    own_trained: torch.Tensor


class Feed(Protocol):
    """Fills each step's batch and accounts for every sample its streams delivered."""

    k: int  # devices, all ranks
    shared_state: bool  # True when every rank's state is the same (one checkpoint file)

    def fill(self, t0: float, step: int) -> Fill:
        """Return the batch of the step starting at t0 (waiting for the streams as needed)."""
        ...

    def end_step(self, t1: float, step: int) -> StepCounts:
        """Take in what arrived until t1 and apply the buffer policy; return the step's counts."""
        ...

    def accounting(self) -> Accounting:
        """Return the cumulative counts of every device."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Return the resumable state (tensors and counters only)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from state_dict's output."""
        ...

    def committed(self) -> None:
        """Acknowledge to the brokers what a just-saved checkpoint holds as done."""
        ...

    def close(self) -> dict[str, Any]:
        """Release the streams; return what the summary adds (source, broker counts...)."""
        ...


class StreamsEnded(Exception):
    """A live stream delivered nothing for the stall time: the run ends there."""
