"""The in-process live stream: one producer thread per device replays its partition in real time.

Device d's samples are its (x, y) partition in a shuffled order, reshuffled every pass, from a
generator seeded by (seed, global device id), so the sequence of samples a device emits depends
only on the seed and the device, never on timing or on how devices are spread over ranks. Sample
j after the start is due when the rate's integral since the start reaches j (the first at once):
with a constant rate r, at j / r seconds. A producer that falls behind emits everything due at
once, so the long-run rate is the schedule's.

Emitted samples wait, as in a Redis stream or a Kafka topic, until ``poll`` hands them out: the
producer only advances the device's emitted count and ``poll`` reads the next rows of the replay
order, so waiting samples cost no memory however far the trainer falls behind. ``positions()``
counts the samples handed out per stream; a source built with those positions skips that many
samples of each device's replay order and starts emitting the next one at once.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence

import torch

from scadles.data.rates import RateSchedule
from scadles.live.base import Delivery

Clock = Callable[[], float]


def replay_generator(seed: int, device: int) -> torch.Generator:
    """Return the generator of a device's replay order, derived from (seed, global device id)."""
    mix = zlib.crc32(f"replay-{device}".encode())
    return torch.Generator().manual_seed((seed * 1_000_003 + mix) % 2**62)


class _Curve:
    """One device's cumulative intensity Lambda(t) and its inverse, in plain floats."""

    def __init__(self, schedule: RateSchedule, row: int) -> None:
        self.times: list[float] = schedule.times.tolist()
        self.rates: list[float] = schedule.rates[row].tolist()
        self.cum: list[float] = schedule.cum[row].tolist()

    def at(self, t: float) -> float:
        """Return Lambda(t)."""
        m = max(bisect.bisect_right(self.times, t) - 1, 0)
        return self.cum[m] + self.rates[m] * (t - self.times[m])

    def inverse(self, lam: float) -> float:
        """Return the time at which Lambda reaches lam."""
        m = max(bisect.bisect_right(self.cum, lam) - 1, 0)
        return self.times[m] + (lam - self.cum[m]) / self.rates[m]


class _Order:
    """A device's endless replay order: row indices of its partition, reshuffled every pass."""

    def __init__(self, n: int, gen: torch.Generator, skip: int) -> None:
        self.n, self.gen = n, gen
        for _ in range(skip // n):  # replay the passes already consumed
            torch.randperm(n, generator=gen)
        self.perm = torch.randperm(n, generator=gen).tolist()
        self.next = skip  # absolute sample number of the next row

    def take(self, count: int) -> list[int]:
        """Return the next ``count`` row indices."""
        out: list[int] = []
        while len(out) < count:
            i = self.next % self.n
            stop = min(self.n, i + count - len(out))
            out += self.perm[i:stop]
            self.next += stop - i
            if self.next % self.n == 0:
                self.perm = torch.randperm(self.n, generator=self.gen).tolist()
        return out


class ReplaySource:
    """Replay each device's partition at its scheduled rate on a daemon thread per device."""

    def __init__(
        self,
        parts: Sequence[tuple[torch.Tensor, torch.Tensor]],
        schedule: RateSchedule,
        seed: int,
        streams: Sequence[str],
        *,
        devices: Sequence[int] | None = None,
        positions: Mapping[str, int] | None = None,
        start_s: float = 0.0,
        clock: Clock = time.monotonic,
    ) -> None:
        """Start the producers.

        ``devices`` are the global ids of the parts (default 0..len(parts)-1): they pick the
        schedule's rows and seed the replay orders. ``start_s`` is the schedule time at which
        this source starts (a resumed run's elapsed time), so time-varying rates continue.
        """
        self.devices = len(parts)
        self.streams = list(streams)
        ids = list(devices) if devices is not None else list(range(self.devices))
        if len(self.streams) != self.devices or len(ids) != self.devices:
            raise ValueError(f"need one stream and one device id per part, got {self.devices}")
        if any(not 0 <= d < schedule.count for d in ids):
            raise ValueError(f"device ids {ids} outside the schedule's {schedule.count} rows")
        start = dict(positions or {})
        unknown = sorted(set(start) - set(self.streams))
        if unknown:
            raise ValueError(f"positions name streams {unknown} that are not in {self.streams}")
        self._parts = [(x, y) for x, y in parts]
        for s, (x, y) in zip(self.streams, self._parts, strict=True):
            if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
                raise ValueError(f"stream {s}: need n >= 1 samples with n labels")
        self._clock = clock
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._handed = [int(start.get(s, 0)) for s in self.streams]  # next number to hand out
        self._produced = list(self._handed)  # samples emitted, counted from the very start
        self._orders = [
            _Order(x.shape[0], replay_generator(seed, d), skip)
            for (x, _), d, skip in zip(self._parts, ids, self._handed, strict=True)
        ]
        curves = [_Curve(schedule, d) for d in ids]
        t0 = clock()
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(d, curves[d], t0, start_s),
                name=f"replay-{s}",
                daemon=True,
            )
            for d, s in enumerate(self.streams)
        ]
        for t in self._threads:
            t.start()

    def _run(self, d: int, curve: _Curve, t0: float, start_s: float) -> None:
        """Emit device d's samples when due until closed."""
        lam0 = curve.at(start_s)
        first, sent = self._produced[d], 0
        while not self._stop.is_set():
            due = math.floor(curve.at(start_s + self._clock() - t0) - lam0 + 1e-9) + 1
            if due > sent:
                with self._cond:
                    self._produced[d] = first + due
                    self._cond.notify_all()
                sent = due
            wake = t0 + curve.inverse(lam0 + sent) - start_s
            self._stop.wait(min(max(wake - self._clock(), 0.0), 0.05))

    def poll(self, want: Sequence[int], timeout_s: float) -> list[Delivery]:
        """Hand out up to ``want[d]`` samples per device; wait up to ``timeout_s`` for one."""
        if len(want) != self.devices:
            raise ValueError(f"want has {len(want)} entries, need {self.devices}")

        def ready() -> bool:
            held = zip(want, self._produced, self._handed, strict=True)
            return any(n > 0 and p > h for n, p, h in held)

        with self._cond:
            if timeout_s > 0 and not ready():
                self._cond.wait_for(ready, timeout=timeout_s)
            first = list(self._handed)
            count = [
                max(0, min(n, p - h)) for n, p, h in zip(want, self._produced, first, strict=True)
            ]
            self._handed = [h + c for h, c in zip(first, count, strict=True)]
            return [self._deliver(d, first[d], c) for d, c in enumerate(count)]

    def _deliver(self, d: int, first: int, count: int) -> Delivery:
        """Gather the partition rows of samples first .. first + count - 1 of device d."""
        x, y = self._parts[d]
        rows = torch.tensor(self._orders[d].take(count), dtype=torch.int64)  # (n,)
        return Delivery(x[rows], y[rows], [str(k) for k in range(first, first + count)], 0)

    def done(self, device: int, ids: Sequence[str]) -> None:
        """Do nothing: a replayed sample needs no acknowledgement."""

    def positions(self) -> dict[str, int]:
        """Return the samples handed out per stream (since the replay's very start)."""
        with self._cond:
            return dict(zip(self.streams, self._handed, strict=True))

    def produced(self, device: int) -> int:
        """Return the samples a device has emitted since the replay's very start."""
        with self._cond:
            return self._produced[device]

    def broker_count(self, device: int) -> int:
        """Return ``produced(device)``: the replay is its own broker."""
        return self.produced(device)

    def skipped(self) -> dict[str, int]:
        """Return {}: replayed samples are never corrupt."""
        return {}

    def close(self) -> None:
        """Stop the producer threads."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
