"""Host time of a compressed step divided by a dense step, per compressor, at 100 devices.

The demo model (cnn1d on MNIST-1D) with 100 devices at normal-S1 rates; the dense step is the
union-batch forward/backward (no per-device gradients); each compressed step computes per-device
gradients with torch.func.vmap, error feedback, the compressor and the weighted aggregation.
Steps of every variant are interleaved round by round so that machine noise hits all alike.
"""

from __future__ import annotations

import time

import torch

from scadles.config.load import load_config
from scadles.training import build

VARIANTS: dict[str, list[str]] = {
    "dense": ["compress.name=none"],
    "topk": ["compress.name=topk", "compress.policy=fixed"],
    "topk_layer": ["compress.name=topk", "compress.per_layer=true", "compress.policy=fixed"],
    "randk": ["compress.name=randk", "compress.policy=fixed"],
    "fp16": ["compress.name=fp16", "compress.policy=fixed"],
    "bf16": ["compress.name=bf16", "compress.policy=fixed"],
    "qsgd": ["compress.name=qsgd", "compress.policy=fixed"],
    "powersgd": ["compress.name=powersgd", "compress.rank=2", "compress.policy=fixed"],
    "topk+scadles switch": ["compress.name=topk", "compress.policy=scadles"],
    "topk+momentum correction": [
        "compress.name=topk",
        "compress.policy=fixed",
        "compress.momentum_correction=true",
    ],
}
ROUNDS, STEPS = 3, 4


def main() -> None:
    torch.set_num_threads(2)
    base = ["devices.count=100", "train.steps=100000", "data.n_train=20000"]
    engines = {n: build.engine(load_config(None, base + o)) for n, o in VARIANTS.items()}
    for eng in engines.values():
        eng.step()  # warm-up
    spent = dict.fromkeys(engines, 0.0)
    for _ in range(ROUNDS):
        for name, eng in engines.items():
            t0 = time.perf_counter()
            for _ in range(STEPS):
                eng.step()
            spent[name] += time.perf_counter() - t0
    dense = spent["dense"]
    print(f"{'variant':26s} {'ms/step':>9s} {'/ dense':>8s}")
    for name, s in spent.items():
        print(f"{name:26s} {1e3 * s / (ROUNDS * STEPS):9.1f} {s / dense:8.2f}")
    print(f"ratio: {spent['topk'] / dense:.3f}")


if __name__ == "__main__":
    main()
