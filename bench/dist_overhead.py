"""Step time of scadles' real mode vs torch DistributedDataParallel, same model, batch and ranks.

Four gloo ranks on loopback (one OMP thread each) train the demo model (cnn1d on MNIST-1D) on
fixed batches of 64 rows per rank (global 256). In the same processes, step by step in turn:

  scadles  the gradient exchange real mode builds (``build.engine(cfg, data, TorchCollective())``
           with the conventional-DDL policy: dense, equal weights), then the optimizer step
  DDP      ``DistributedDataParallel`` over a copy of the same model: forward, mean loss,
           backward (bucketed all-reduce), optimizer step

Each rank times both; per step the slowest rank's time counts (a synchronous step ends when the
last rank is done). Printed: median step times, the full ``Engine.step`` for reference, and last
the median over steps of scadles / DDP (goal <= 1.15).
Usage: python bench/dist_overhead.py [--ranks N] [--steps N] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.multiprocessing.spawn import start_processes
from torch.nn.parallel import DistributedDataParallel

from scadles.comm import TorchCollective
from scadles.config.load import load_config
from scadles.exchange import Batch
from scadles.grads import write_flat_grad
from scadles.training import build

PER_RANK = 64
WARMUP = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _slowest(times: list[float]) -> list[float]:
    """Return, per step, the largest time any rank measured."""
    t = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    out: list[float] = t.tolist()
    return out


def _rank(rank: int, world: int, port: int, steps: int, out: dict[str, list[float]]) -> None:
    """Time both training steps on this rank; rank 0 stores the per-step slowest times."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    sets = [f"devices.count={world}", "policy.name=ddl", "run.mode=dist", "train.steps=100000"]
    sets += [f"streams.rates=[{', '.join(['64'] * world)}]", "eval.every=100000"]
    cfg = load_config(None, sets)
    data = build.dataset(cfg)
    eng = build.engine(cfg, data, TorchCollective())
    ddp_model = copy.deepcopy(eng.model)
    ddp = DistributedDataParallel(ddp_model)
    ddp_opt = torch.optim.SGD(ddp_model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    k = world
    n = k * PER_RANK
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.y_train), generator=g)[:n]
    x, y = data.x_train[idx], data.y_train[idx]  # (N, 1, 40), (N,)
    seg = torch.arange(k).repeat_interleave(PER_RANK)  # (N,)
    b = torch.full((k,), PER_RANK, dtype=torch.int64)  # (K,)
    batch = Batch(x, y, seg, b, torch.full((k,), 1.0 / k, dtype=torch.float64))
    mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    gen = torch.Generator().manual_seed(1)
    params = [p for p in eng.model.parameters() if p.requires_grad]

    def scadles_step() -> None:
        eng.optimizer.zero_grad(set_to_none=True)
        write_flat_grad(params, eng.exchange(batch, 0, gen).update)
        eng.optimizer.step()

    def ddp_step() -> None:
        ddp_opt.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x[mine]), y[mine]).backward()  # type: ignore[no-untyped-call]
        ddp_opt.step()

    times: dict[str, list[float]] = {"scadles": [], "ddp": [], "engine": []}
    for i in range(WARMUP + steps):
        for name, fn in (("scadles", scadles_step), ("ddp", ddp_step), ("engine", eng.step)):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            if i >= WARMUP:
                times[name].append(time.perf_counter() - t0)
    slowest = {name: _slowest(t) for name, t in times.items()}
    if rank == 0:
        out.update(slowest)
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="60 steps")
    args = p.parse_args()
    if args.quick:
        args.steps = 60
    os.environ["OMP_NUM_THREADS"] = "1"
    with mp.Manager() as manager:
        shared = manager.dict()
        start_processes(  # type: ignore[no-untyped-call]
            _rank,
            args=(args.ranks, _free_port(), args.steps, shared),
            nprocs=args.ranks,
            start_method="spawn",
        )
        res = {name: list(v) for name, v in shared.items()}
    med = {name: statistics.median(v) * 1e3 for name, v in res.items()}
    print(f"{args.ranks} gloo ranks, {PER_RANK} rows each, {args.steps} steps after {WARMUP}")
    print(f"DDP forward/backward/step:        {med['ddp']:.3f} ms median")
    print(f"scadles exchange + optimizer step: {med['scadles']:.3f} ms median")
    print(f"scadles Engine.step (whole step):  {med['engine']:.3f} ms median")
    ratios = [s / d for s, d in zip(res["scadles"], res["ddp"], strict=True)]
    engine = statistics.median(e / d for e, d in zip(res["engine"], res["ddp"], strict=True))
    print(f"Engine.step / DDP: {engine:.3f} (median over steps)")
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
