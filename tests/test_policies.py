"""Batch, weighting and learning-rate rules of the two policies; aggregation identities."""

from __future__ import annotations

import torch

from scadles.aggregate import sample_weights, weighted_mean
from scadles.policies import BatchRule, lr_schedule

SCADLES = BatchRule("scadles", 64, 8, 1024, 1.0, True)
DDL = BatchRule("ddl", 64, 8, 1024, 1.0, False)


def test_scadles_batch_is_rate_times_window_clipped() -> None:
    rates = torch.tensor([3.0, 40.4, 2000.0], dtype=torch.float64)
    assert SCADLES.demand(rates).tolist() == [8, 40, 1024]
    half = BatchRule("scadles", 64, 8, 1024, 0.5, True)
    assert half.demand(torch.tensor([100.0], dtype=torch.float64)).tolist() == [50]


def test_ddl_batch_is_fixed() -> None:
    assert DDL.demand(torch.tensor([3.0, 500.0], dtype=torch.float64)).tolist() == [64, 64]


def test_weights() -> None:
    b = torch.tensor([10, 30, 0])
    assert torch.allclose(
        SCADLES.device_weights(b), torch.tensor([0.25, 0.75, 0.0], dtype=torch.float64)
    )
    assert torch.allclose(DDL.device_weights(b), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))


def test_lr_scaling() -> None:
    b = torch.tensor([32, 96, 128, 0])
    assert SCADLES.lr_factor(b) == 256 / (64 * 4)
    assert DDL.lr_factor(b) == 1.0


def test_lr_scale_cap_and_warm_up() -> None:
    # Arrange: a scale of 8 (sum b = 8 x 64 x 4), capped at 2 or 16, warmed up over 4 steps
    b = torch.full((4,), 512)
    capped = BatchRule("scadles", 64, 8, 1024, 1.0, True, scale_max=2.0)
    warm = BatchRule("scadles", 64, 8, 1024, 1.0, True, warmup_steps=4, scale_max=16.0)
    # Act / Assert: the cap holds at once; the warm-up climbs 1 + 7 (step + 1) / 4, then stays
    assert capped.lr_factor(b, 0) == 2.0
    assert [warm.lr_factor(b, s) for s in range(6)] == [2.75, 4.5, 6.25, 8.0, 8.0, 8.0]
    # a scale below 1 is used at once, and DDL never scales
    small = torch.full((4,), 16)
    assert warm.lr_factor(small, 0) == 0.25
    assert BatchRule("ddl", 64, 8, 1024, 1.0, False, warmup_steps=4).lr_factor(b, 0) == 1.0


def test_lr_schedule_milestones() -> None:
    assert lr_schedule(0.1, (2.0, 4.0), 0.2, 1.9) == 0.1
    assert abs(lr_schedule(0.1, (2.0, 4.0), 0.2, 2.0) - 0.02) < 1e-12
    assert abs(lr_schedule(0.1, (2.0, 4.0), 0.2, 10.0) - 0.004) < 1e-12


def test_weighted_mean_equals_loop() -> None:
    g = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0], dtype=torch.float64)
    loop = sum(w[i] * g[i] for i in range(5))
    assert torch.allclose(weighted_mean(g, w), loop, atol=1e-12)  # type: ignore[arg-type]


def test_sample_weights_sum_to_device_weights() -> None:
    b = torch.tensor([2, 3, 0])
    seg = torch.repeat_interleave(torch.arange(3), b)
    w = torch.tensor([0.4, 0.6, 0.0], dtype=torch.float64)
    pw = sample_weights(seg, b, w)
    assert torch.allclose(torch.zeros(3, dtype=torch.float64).index_add(0, seg, pw), w)
