"""Host throughput of the scadles simulator vs a plain PyTorch loop on the same batches.

Both train the demo model (cnn1d on MNIST-1D) on the same per-step union batches (16 devices,
normal-S1 rates, ScaDLES policy); the plain loop is a bare forward/backward/SGD step on the
concatenated batch with no streams, buffers, clock or records. Printed: samples per host second
for each, measured alternately in one run (blocks of 10 steps), and the median over rounds of the
per-round throughput ratio, robust to the machine's noise (goal >= 0.9).
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F

from scadles import build
from scadles.config import load_config

STEPS = 10
ROUNDS = 30


def main() -> None:
    torch.set_num_threads(2)
    cfg = load_config(None, ["train.steps=100000", "data.n_train=20000"])
    eng = build.engine(cfg)
    for _ in range(5):  # warm-up, and fill the streams
        eng.step()
    model = copy.deepcopy(eng.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x, y = eng.data.x_train, eng.data.y_train
    sim_s = plain_s = 0.0
    sim_n = plain_n = 0
    ratios = []
    for _ in range(ROUNDS):
        sizes = []
        t0 = time.perf_counter()
        for _ in range(STEPS):
            rep = eng.step()
            sizes.append(rep.batch_total)
        s_sim = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randint(0, len(y), (n,), generator=gen) for n in sizes]
        t0 = time.perf_counter()
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx], None), y[idx]).backward()
            opt.step()
        s_plain = time.perf_counter() - t0
        sim_s, plain_s = sim_s + s_sim, plain_s + s_plain
        sim_n, plain_n = sim_n + sum(sizes), plain_n + sum(sizes)
        ratios.append(s_plain / s_sim)  # same samples: throughput ratio of this round
    sim_tp, plain_tp = sim_n / sim_s, plain_n / plain_s
    print(f"scadles simulator: {sim_tp:,.0f} samples/s over {ROUNDS * STEPS} steps")
    print(f"plain PyTorch loop: {plain_tp:,.0f} samples/s on the same batch sizes")
    print(f"ratio of totals: {sim_tp / plain_tp:.3f}; per-round ratios: median of {ROUNDS}")
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
