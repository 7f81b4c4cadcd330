"""Live ScaDLES trains on what its stream delivered; conventional DDL waits for its fixed batch.

A user-defined source (the documented `LiveSource` protocol, no broker) delivers samples at a wall
rate of its own, here half the configured one. ScaDLES' rule (b_i(t) = S_i(t), the samples that
arrived during the window) must follow the measured stream, not the configured number: its
batches are about half the configured rate x window and a step waits at most about one window.
DDL still waits for its 16 samples, about 16 / rate seconds per step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import torch

import scadles
from scadles.live.base import Delivery
from scadles.training import build
from scadles.training.runner import RunResult

CONFIGURED = 64.0  # samples per second the config says each stream delivers
DELIVERED = 32.0  # what the user's streams really deliver
WINDOW = 0.5


class PacedSource:
    """Each device's sample j becomes available j / rate seconds after the source opens."""

    def __init__(self, devices: Sequence[int], rate: float, shape: tuple[int, ...]) -> None:
        self.devices = len(devices)
        self.rate = rate
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(4096, *shape, generator=g)  # (n, *shape) one pool, reused
        self.y = torch.randint(0, 10, (4096,), generator=g)
        self.handed = [0] * self.devices
        self.t0 = time.monotonic()
        self._stop = threading.Event()

    def _due(self) -> int:
        return int((time.monotonic() - self.t0) * self.rate) + 1

    def poll(self, want: Sequence[int], timeout_s: float) -> list[Delivery]:
        """Return what is due, waiting up to timeout_s for the first sample."""
        end = time.monotonic() + timeout_s
        while min(self.handed) >= self._due() and time.monotonic() < end:
            time.sleep(0.002)
        out = []
        for d, w in enumerate(want):
            first = self.handed[d]
            n = max(0, min(w, self._due() - first))
            rows = torch.arange(first, first + n) % len(self.y)
            out.append(Delivery(self.x[rows], self.y[rows], [str(first + i) for i in range(n)], 0))
            self.handed[d] += n
        return out

    def done(self, device: int, ids: Sequence[str]) -> None:
        """Nothing to acknowledge."""

    def positions(self) -> dict[str, int]:
        """No resumable positions."""
        return {}

    def broker_count(self, device: int) -> int:
        """Return the samples due so far."""
        return self._due()

    def skipped(self) -> dict[str, int]:
        """Nothing is ever invalid."""
        return {}

    def close(self) -> None:
        """Nothing to release."""


def _run(policy: str, steps: int) -> RunResult:
    cfg = scadles.load_config(
        None,
        [
            "data.name=synthetic",
            "data.n_train=600",
            "data.n_test=100",
            "model.name=mlp",
            "devices.count=2",
            f"policy.name={policy}",
            "policy.batch=16",
            f"streams.rates=[{CONFIGURED}, {CONFIGURED}]",
            f"streams.window_s={WINDOW}",
            f"train.steps={steps}",
            "eval.every=1000",
            "live.source=replay",
            "live.stall_s=5",
        ],
    )
    data = build.dataset(cfg)

    def factory(devices: list[int], streams: list[str]) -> PacedSource:
        return PacedSource(devices, DELIVERED, tuple(data.input_shape))

    return scadles.run(cfg, data=data, source=factory, out=None)


def test_live_scadles_trains_on_what_arrived_and_ddl_waits() -> None:
    sca = _run("scadles", 6)
    rows = sca.steps[1:]  # the first window also covers the set-up
    waits = [r.wait_s for r in rows]
    sizes = [s for r in rows for s in r.batch_sizes]
    assert sum(waits) / len(waits) < WINDOW + 0.1, waits
    expected = DELIVERED * WINDOW  # 16, against 32 configured
    assert 0.7 * expected <= sum(sizes) / len(sizes) <= 1.3 * expected, sizes
    rates = sca["stream_rates_measured"]
    assert all(0.6 * DELIVERED <= r <= 1.4 * DELIVERED for r in rates), rates
    assert sca["source"] == "user"
    assert sca["samples_arrived"] == (
        sca["samples_trained"] + sca["samples_dropped"] + sca["samples_held"]
    )

    ddl = _run("ddl", 3)
    assert all(r.batch_sizes == [16, 16] for r in ddl.steps)
    later = [r.wait_s for r in ddl.steps[1:]]
    assert min(later) > 0.6 * 16 / DELIVERED - 0.25, later  # it waited for its batch
