"""Real mode: one process per rank under torchrun, each training its slice of the devices.

`scadles launch --nproc N CONFIG ...` starts `python -m torch.distributed.run ... -m
scadles.training.launch CONFIG ...`; this module is what every rank runs. gloo on CPU, nccl on CUDA
(run.device: auto picks CUDA when torch sees a GPU, as in the simulator).
Across machines, pass torchrun's own flags (--nnodes, --node-rank, --master-addr, --master-port).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import PrefixStore, TCPStore

from scadles.comm import TorchCollective
from scadles.config.load import load_config, replace_key
from scadles.errors import UserError
from scadles.training import build, checkpoint, runner


def torchrun_command(
    nproc: int,
    rest: Sequence[str],
    *,
    nnodes: str | None = None,
    node_rank: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    max_restarts: int = 0,
) -> list[str]:
    """Return the torchrun command line that runs this module on nproc local processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes is None:
        cmd.append("--standalone")
    else:
        cmd.append(f"--nnodes={nnodes}")
        if node_rank is not None:
            cmd.append(f"--node-rank={node_rank}")
        if master_addr is not None:
            cmd.append(f"--master-addr={master_addr}")
        if master_port is not None:
            cmd.append(f"--master-port={master_port}")
    cmd += [f"--max-restarts={max_restarts}", "-m", "scadles.training.launch", *rest]
    return cmd


def launch(nproc: int, rest: Sequence[str], *, threads: int | None = None, **flags: object) -> int:
    """Run the job under torchrun and return its exit status; each rank's OpenMP runtime starts
    with `threads` threads (default 1)."""
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = torchrun_command(nproc, rest, **flags)  # type: ignore[arg-type]
    return subprocess.run(cmd, env=env, check=False).returncode


def _init_group(backend: str) -> None:
    """Join the job's process group; after a torchrun restart, under a fresh store prefix.

    torchrun's agent keeps one store for the whole job, so the workers of attempt n would read
    the addresses the dead workers of attempt n-1 left there: each attempt gets its own prefix.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend)
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size=world,
        is_master=False,
        timeout=timedelta(minutes=5),
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefixed = PrefixStore(f"scadles/attempt{attempt}", store)
    dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world)


def _restarted_with_checkpoint(out: Path, coll: TorchCollective) -> bool:
    """Return whether torchrun restarted this job and every rank has a checkpoint to resume."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return False
    names = (checkpoint.FILE, checkpoint.rank_file(coll.rank))
    have = any((out / n).is_file() for n in names)
    return int(coll.all_reduce(torch.tensor([0 if have else 1]))[0]) == 0


def _rank_main(argv: Sequence[str] | None = None) -> int:
    """Train this rank's devices; rank 0 writes the run directory."""
    p = argparse.ArgumentParser(prog="scadles.training.launch")
    p.add_argument("config", nargs="?", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:  # this process is the command line of its rank
        torch.set_num_threads(max(args.threads, 1))
        with contextlib.suppress(RuntimeError):  # allowed only before inter-op work starts
            torch.set_num_interop_threads(max(args.threads, 1))
    try:  # before the process group: a bad config or device exits 2 without a rendezvous
        cfg = replace_key(load_config(args.config, args.overrides), "run.mode", "dist")
        cuda = build.run_device(cfg.run.device).type == "cuda"  # the simulator's choice too
    except UserError as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"scadles: error: {e}", file=sys.stderr)
        return 2
    _init_group("nccl" if cuda else "gloo")
    device = None
    if cuda:  # this rank's GPU; the engine places the model on the current device
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    try:
        coll = TorchCollective(device)
        resume = args.resume or _restarted_with_checkpoint(args.out, coll)
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        runner.run(
            cfg,
            args.out,
            coll=coll,
            checkpoint_every=args.checkpoint_every,
            resume=resume,
            # a restart with nothing to resume replaces what its own failed attempt wrote
            force=not resume and (args.force or restarted),
        )
    except UserError as e:
        if dist.get_rank() == 0:
            print(f"scadles: error: {e}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main())
