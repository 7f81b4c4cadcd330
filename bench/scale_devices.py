"""Host time per trained sample at 10, 100 and 1,000 simulated devices with the same total rate.

The total stream rate is fixed (10,240 samples/s), split evenly over K devices; ScaDLES trains
each device on rate x window samples, so every configuration trains ~10k samples per step.
Printed: microseconds per sample for each K and the ratio 1,000 / 10 (goal <= 1.5).
"""

from __future__ import annotations

import time

import torch

from scadles.config.load import load_config
from scadles.training import build

TOTAL_RATE = 10240.0
STEPS = 20


def per_sample(k: int) -> float:
    cfg = load_config(
        None,
        [
            f"devices.count={k}",
            f'streams.rates={{dist = "normal", mean = {TOTAL_RATE / k}, std = 0}}',
            "train.steps=100000",
            "data.n_train=20000",
            "policy.lr_scaling=false",  # batch 1024 at K=10 would scale the LR 16x and diverge
        ],
    )
    eng = build.engine(cfg)
    for _ in range(3):
        eng.step()
    n = 0
    t0 = time.perf_counter()
    for _ in range(STEPS):
        n += eng.step().batch_total
    return (time.perf_counter() - t0) / n


def main() -> None:
    torch.set_num_threads(2)
    res = {k: per_sample(k) for k in (10, 100, 1000)}
    for k, s in res.items():
        print(f"K={k:5d}: {s * 1e6:8.2f} us per trained sample")
    print(f"ratio: {res[1000] / res[10]:.3f}")


if __name__ == "__main__":
    main()
