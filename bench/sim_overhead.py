"""Host throughput of the scadles simulator vs a plain PyTorch loop on the same batches.

Both train the demo model (cnn1d on MNIST-1D) on the same per-step union batch sizes (16 devices,
normal-S1 rates, ScaDLES policy); the plain loop is a bare forward/backward/SGD step on a batch of
the same size with no streams, buffers, clock or records. The two alternate step by step, so each
pair of steps sees the same machine load. Printed: samples per host second for each, and the
median over pairs of the per-step throughput ratio (plain time / simulator time on the same batch
size), robust to the machine's noise (goal >= 0.9).
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F

from scadles.config.load import load_config
from scadles.training import build

PAIRS = 400
WARMUP = 20


def main() -> None:
    torch.set_num_threads(2)
    cfg = load_config(None, ["train.steps=100000", "data.n_train=20000"])
    eng = build.engine(cfg)
    model = copy.deepcopy(eng.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x, y = eng.data.x_train, eng.data.y_train
    gen = torch.Generator().manual_seed(0)

    def plain(n: int) -> None:
        idx = torch.randint(0, len(y), (n,), generator=gen)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()

    sim_s: list[float] = []
    plain_s: list[float] = []
    samples = 0
    for i in range(WARMUP + PAIRS):
        t0 = time.perf_counter()
        n = eng.step().batch_total
        t1 = time.perf_counter()
        plain(n)
        t2 = time.perf_counter()
        if i >= WARMUP:  # warm-up fills the streams and the allocator
            sim_s.append(t1 - t0)
            plain_s.append(t2 - t1)
            samples += n
    ratios = [p / s for p, s in zip(plain_s, sim_s, strict=True)]
    print(f"scadles simulator: {samples / sum(sim_s):,.0f} samples/s over {PAIRS} steps")
    print(f"plain PyTorch loop: {samples / sum(plain_s):,.0f} samples/s on the same batch sizes")
    print(f"ratio of totals: {sum(plain_s) / sum(sim_s):.3f}; per-step pairs: median of {PAIRS}")
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
