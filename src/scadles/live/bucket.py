"""Emulated link bandwidth for real runs: a token bucket in front of every collective.

On one machine the loopback is far faster than an edge device's uplink. ``ThrottledCollective``
wraps a ``scadles.comm.Collective`` and, before each operation, waits until this rank's token
bucket holds the bytes the rank sends in it, so a collective takes at least as long as the
emulated link needs. The bytes charged are those of a ring algorithm, as the simulator's clock
counts them (``scadles.engine``), for a tensor of ``n`` bytes on ``W`` ranks:

    all_reduce   2 (W - 1) / W * n     (reduce-scatter, then all-gather, of W chunks)
    all_gather   (W - 1) * n           (every other rank's block passes through once)
    broadcast    n on the source rank, 0 elsewhere

A single rank (W = 1) sends nothing and is never throttled.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import torch

from scadles.comm import Collective
from scadles.errors import UserError


class TokenBucket:
    """Bytes trickle in at ``rate_bytes_per_s`` up to ``burst_bytes``; ``take`` waits for them."""

    def __init__(
        self,
        rate_bytes_per_s: float,
        burst_bytes: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        scale: Callable[[float], float] | None = None,
    ) -> None:
        """scale(t) multiplies the rate t seconds after construction (a bandwidth schedule)."""
        if not rate_bytes_per_s > 0:
            raise UserError(f"bandwidth: rate must be > 0 bytes/s, got {rate_bytes_per_s}")
        if not (burst_bytes >= 0 and math.isfinite(burst_bytes)):
            raise UserError(f"bandwidth: burst must be finite and >= 0 bytes, got {burst_bytes}")
        self.rate, self.burst = float(rate_bytes_per_s), float(burst_bytes)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst  # starts full; negative = debt
        self._last = self._t0 = clock()
        self._scale = scale
        self._lock = threading.Lock()

    def take(self, nbytes: float) -> float:
        """Spend ``nbytes``, sleeping until the bucket is out of debt; return the seconds slept.

        A request larger than the burst is granted by going into debt: the caller sleeps until
        the debt is paid off, so the long-run rate never exceeds ``rate_bytes_per_s``.
        """
        if nbytes <= 0 or math.isinf(self.rate):
            return 0.0
        with self._lock:
            now = self._clock()
            rate = self.rate if self._scale is None else self.rate * self._scale(now - self._t0)
            self._tokens = min(self.burst, self._tokens + (now - self._last) * rate)
            self._last = now
            self._tokens -= nbytes
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


def sent_bytes(op: str, nbytes: int, world: int, is_source: bool = False) -> float:
    """Return the bytes one rank sends in a ring collective over a tensor of ``nbytes``."""
    if world <= 1:
        return 0.0
    if op == "all_reduce":
        return 2.0 * (world - 1) / world * nbytes
    if op == "all_gather":
        return float((world - 1) * nbytes)
    if op == "broadcast":
        return float(nbytes) if is_source else 0.0
    raise ValueError(f"unknown collective {op!r}")


class ThrottledCollective:
    """A collective whose every call first waits for its bytes on this rank's token bucket."""

    def __init__(
        self,
        inner: Collective,
        bucket: TokenBucket | None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.inner, self.bucket = inner, bucket
        self.rank, self.world = inner.rank, inner.world
        self._clock = clock
        self.comm_s = 0.0  # wall seconds inside collectives, throttle included
        self.throttle_s = 0.0  # seconds of that spent waiting for tokens
        self.bytes_sent = 0.0  # bytes charged since construction (not reset)

    def _charge(self, op: str, t: torch.Tensor, is_source: bool = False) -> float:
        """Wait for this call's bytes; return the start time of the call."""
        start = self._clock()
        nbytes = sent_bytes(op, t.numel() * t.element_size(), self.world, is_source)
        self.bytes_sent += nbytes
        if self.bucket is not None:
            self.throttle_s += self.bucket.take(nbytes)
        return start

    def _done(self, start: float) -> None:
        self.comm_s += self._clock() - start

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Return the elementwise sum of t over ranks, after waiting for the link."""
        start = self._charge("all_reduce", t)
        out = self.inner.all_reduce(t)
        self._done(start)
        return out

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Return (world, *t.shape) in rank order, after waiting for the link."""
        start = self._charge("all_gather", t)
        out = self.inner.all_gather(t)
        self._done(start)
        return out

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Return src's t on every rank; the source waits for the link."""
        start = self._charge("broadcast", t, self.rank == src)
        out = self.inner.broadcast(t, src)
        self._done(start)
        return out

    def reset(self) -> tuple[float, float]:
        """Return (comm_s, throttle_s) accumulated since the last reset, and zero them."""
        out = (self.comm_s, self.throttle_s)
        self.comm_s = self.throttle_s = 0.0
        return out
