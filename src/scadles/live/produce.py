"""The paper's producer: each device's samples streamed to its own topic at its own rate.

Following the authors' code (``kafka_publisher``), every stream gets one sender that
replays the device's partition forever in a shuffled order, reshuffled each pass, one sample per
message (``scadles.live.wire``). Unlike the paper's ``sleep(1/S)`` loop, whose send times drift by
the cost of each send, send i is scheduled at ``t0 + i / rate``: a sender that falls behind catches
up, so the long-run rate is the asked rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from scadles.errors import UserError
from scadles.live.wire import encode


class Sink(Protocol):
    """Where messages go: a Redis or Kafka sink, or anything with these two methods."""

    def publish(self, stream: str, data: bytes, /) -> object:
        """Send one message to ``stream``."""
        ...

    def flush(self, timeout_s: float = ..., /) -> int:
        """Wait for queued messages; return how many are still queued."""
        ...


def _check(
    parts: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    rates: Mapping[str, float],
    duration_s: float | None,
    count: int | None,
    stop: threading.Event | None,
) -> None:
    """Reject inputs that cannot be streamed, naming the stream and value."""
    if set(parts) != set(rates):
        raise UserError(f"produce: streams {sorted(parts)} and rates {sorted(rates)} differ")
    for name, (x, y) in parts.items():
        if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
            raise UserError(
                f"produce: stream {name}: need n >= 1 samples with n labels, got "
                f"x {tuple(x.shape)}, y {tuple(y.shape)}"
            )
    for name, rate in rates.items():
        if not (math.isfinite(rate) and rate > 0):
            raise UserError(f"produce: rate of stream {name} must be finite and > 0, got {rate}")
    if duration_s is not None and not duration_s >= 0:
        raise UserError(f"produce: duration_s must be >= 0, got {duration_s}")
    if count is not None and count < 0:
        raise UserError(f"produce: count must be >= 0, got {count}")
    if duration_s is None and count is None and stop is None:
        raise UserError("produce: give duration_s, count or stop, or it would never end")


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a stream sends: message i is due at t0 + i / rate, if before until and i < count."""

    t0: float
    rate: float
    until: float
    count: float


def _send_stream(
    sink: Sink,
    name: str,
    part: tuple[torch.Tensor, torch.Tensor],
    plan: Schedule,
    events: tuple[threading.Event, threading.Event],
    gen: torch.Generator,
    sent: dict[str, int],
) -> None:
    """Send one stream's samples on its schedule, reshuffling at every pass, until a limit."""
    x, y = part
    n = x.shape[0]
    order = torch.randperm(n, generator=gen)  # (n,) this pass's shuffle
    i = 0
    while i < plan.count:
        due = plan.t0 + i / plan.rate
        if due >= plan.until or not _sleep_until(due, *events):
            break
        if i and i % n == 0:
            order = torch.randperm(n, generator=gen)
        j = int(order[i % n])
        sink.publish(name, encode(x[j], int(y[j])))
        i += 1
        sent[name] = i


def _sleep_until(due: float, stop: threading.Event, halt: threading.Event) -> bool:
    """Wait until monotonic time ``due``; return False as soon as either event is set."""
    while not (stop.is_set() or halt.is_set()):
        wait = due - time.monotonic()
        if wait <= 0:
            return True
        halt.wait(min(wait, 0.05))
    return False


def produce(
    sink: Sink,
    parts: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    rates: Mapping[str, float],
    duration_s: float | None = None,
    count: int | None = None,
    stop: threading.Event | None = None,
    *,
    seed: int = 0,
) -> dict[str, int]:
    """Stream each part's (x, y) samples to its stream at its rate; return the counts sent.

    Stops a stream after ``count`` samples, after ``duration_s`` seconds of schedule, or when
    ``stop`` is set, whichever comes first; then flushes the sink. Stream k (in sorted name
    order) shuffles with a generator seeded ``seed + k``.
    """
    _check(parts, rates, duration_s, count, stop)
    stop = stop or threading.Event()
    halt = threading.Event()  # set when a sender fails, to stop the others
    sent = dict.fromkeys(parts, 0)
    t0 = time.monotonic()
    until = math.inf if duration_s is None else t0 + duration_s
    limit = math.inf if count is None else count
    errors: list[BaseException] = []

    def run(k: int, name: str) -> None:
        gen = torch.Generator().manual_seed(seed + k)
        plan = Schedule(t0, rates[name], until, limit)
        try:
            _send_stream(sink, name, parts[name], plan, (stop, halt), gen, sent)
        except BaseException as err:  # reported to the caller below; stop the other senders
            errors.append(err)
            halt.set()

    threads = [
        threading.Thread(target=run, args=(k, name), name=f"produce-{name}", daemon=True)
        for k, name in enumerate(sorted(parts))
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    finally:  # also on Ctrl-C: stop the senders before leaving
        halt.set()
        for t in threads:
            t.join(timeout=5.0)
    sink.flush(10.0)
    if errors:
        raise errors[0]
    return sent
