"""Real mode: a NaN in one rank's device data is skipped on every rank, never applied.

Two gloo processes build the real-mode engine (`build.engine` with a `TorchCollective`); rank 1
poisons the data of its device for one step. The all-reduced gradient then holds NaN on both
ranks, so both skip the update, count it, and keep identical, finite parameters.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scadles.training import build
from scadles.comm import TorchCollective
from scadles.config.load import load_config

pytestmark = pytest.mark.dist

SETS = [
    "data.name=synthetic", "data.n_train=400", "data.n_test=50", "model.name=mlp",
    "devices.count=2", "streams.rates=[64, 64]", "policy.name=ddl", "train.steps=10",
    "run.mode=dist",
]  # fmt: skip


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        eng = build.engine(load_config(None, SETS), coll=TorchCollective())
        eng.step()
        before = [p.detach().clone() for p in eng.model.parameters()]
        x = eng.data.x_train
        saved = x.clone()
        if rank == 1:  # only rank 1's device sees NaN samples
            x[:] = float("nan")
        rep = eng.step()
        x.copy_(saved)
        unchanged = all(
            torch.equal(p, q) for p, q in zip(eng.model.parameters(), before, strict=True)
        )
        eng.step()
        flat = torch.cat([p.detach().reshape(-1) for p in eng.model.parameters()])
        torch.save(
            {"skipped": eng.skipped_nonfinite, "unchanged": unchanged, "loss": rep.loss,
             "params": flat, "steps": eng.counters.step},
            Path(out) / f"rank{rank}.pt",
        )  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_nan_on_one_rank_is_skipped_on_all_ranks(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for r in (r0, r1):
        assert r["skipped"] == 1 and r["unchanged"] and r["steps"] == 3
        assert bool(torch.isfinite(r["params"]).all())
    assert torch.equal(r0["params"], r1["params"])  # the ranks still agree
