"""Host time per trained sample from 16 to 10,000 simulated devices at the same per-device batch.

Every configuration trains the demo model (cnn1d on MNIST-1D, dense exchange, one thread) with
64 samples per device per step (constant rate 64/s, window 1 s), so the union batch grows with K:
1,024 rows at K = 16, 640,000 at K = 10,000. The configurations alternate step by step in one
process (paired, as bench/sim_overhead.py), so each round sees the same machine load; per K the
median over rounds of the step's host seconds per sample is printed. At K = 1,000 each round also
times a plain per-device PyTorch loop (one forward/backward per device on its 64 rows, gradients
accumulated, one SGD step) and the median of the per-round ratios loop / simulator is printed (goal
>= 1.5). Peak memory per K is each K's ru_maxrss in a fresh subprocess (build and 3 steps; goal
< 2 GB at 10,000). Last line: the median of the per-round ratios K = 10,000 / K = 16 (goal <= 1.25).
Usage: python bench/scale_devices.py [--quick]
"""

from __future__ import annotations

import copy
import logging
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from scadles.config.load import load_config
from scadles.engine import Engine
from scadles.training import build

PER_DEVICE = 64
COUNTS = (16, 100, 1000, 10000)
LOOP_K = 1000  # the plain per-device loop runs beside this K
WARMUP = 2


def engine(k: int) -> Engine:
    """Return the demo engine at K devices, PER_DEVICE samples per device per step."""
    cfg = load_config(
        None,
        [
            f"devices.count={k}",
            f'streams.rates={{dist = "normal", mean = {PER_DEVICE}, std = 0}}',
            "train.steps=1000000",
            "data.n_train=20000",
            "policy.lr_scaling=false",
        ],
    )
    return build.engine(cfg)


def plain_loop(
    model: torch.nn.Module, opt: torch.optim.Optimizer, eng: Engine, k: int, gen: torch.Generator
) -> tuple[float, int]:
    """Time one step of a per-device PyTorch loop over k devices; return (seconds, samples)."""
    x, y = eng.data.x_train, eng.data.y_train
    idx = torch.randint(0, len(y), (k, PER_DEVICE), generator=gen)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for i in range(k):  # the per-device loop is what is measured here
        (F.cross_entropy(model(x[idx[i]]), y[idx[i]]) / k).backward()  # type: ignore[no-untyped-call]
    opt.step()
    return time.perf_counter() - t0, k * PER_DEVICE


def peak_mb(k: int) -> float:
    """Return the peak RSS (MB) of a fresh process that builds K devices and runs 3 steps."""
    code = (
        "import resource, sys, torch, logging; logging.disable(logging.WARNING); "
        "torch.set_num_threads(1); sys.path.insert(0, 'bench'); "
        "from scale_devices import engine; e = engine(int(sys.argv[1])); "
        "[e.step() for _ in range(3)]; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(k)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # K = 10,000 holds 2 samples per device: warned, intended
    rounds = 3 if "--quick" in sys.argv else 8
    engines = {k: engine(k) for k in COUNTS}
    model = copy.deepcopy(engines[LOOP_K].model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    per: dict[int, list[float]] = {k: [] for k in COUNTS}
    loop: list[float] = []
    for r in range(WARMUP + rounds):
        for k, eng in engines.items():
            t0 = time.perf_counter()
            n = eng.step().batch_total
            if r >= WARMUP:
                per[k].append((time.perf_counter() - t0) / n)
        s, n = plain_loop(model, opt, engines[LOOP_K], LOOP_K, gen)
        if r >= WARMUP:
            loop.append(s / n)
    ratios = [a / b for a, b in zip(per[COUNTS[-1]], per[COUNTS[0]], strict=True)]
    vs_loop = [p / s for p, s in zip(loop, per[LOOP_K], strict=True)]
    peaks = {k: peak_mb(k) for k in COUNTS}
    for k in COUNTS:
        us = statistics.median(per[k]) * 1e6
        print(f"K={k:6d}: {us:7.2f} us per sample (median of {rounds}), peak {peaks[k]:7.0f} MB")
    print(f"plain per-device loop at K={LOOP_K}: {statistics.median(loop) * 1e6:.2f} us per sample")
    print(f"K={LOOP_K} vs the loop: {statistics.median(vs_loop):.2f}x faster (goal >= 1.5)")
    print(f"peak memory at K={COUNTS[-1]}: {peaks[COUNTS[-1]]:.0f} MB (goal < 2048)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of the paired process (all K at once): {rss:.0f} MB")
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
