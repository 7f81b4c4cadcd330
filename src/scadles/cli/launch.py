"""``scadles launch``: real mode, N processes under torchrun (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args
from scadles.cli.run import check_checkpoint_every
from scadles.comm import device_slice
from scadles.training.launch import launch


def add_parser(sub: Any) -> None:
    """Add the ``launch`` sub-command."""
    la = sub.add_parser(
        "launch", help="real mode: N processes on torch.distributed (torchrun), gloo or nccl"
    )
    add_config_args(la)
    la.add_argument("--out", required=True, type=Path, help="output directory (rank 0 writes)")
    la.add_argument("--nproc", required=True, type=int, help="processes on this machine")
    la.add_argument("--nnodes", default=None, help="torchrun --nnodes (multi-machine)")
    la.add_argument("--node-rank", type=int, default=None, help="torchrun --node-rank")
    la.add_argument("--master-addr", default=None, help="torchrun --master-addr")
    la.add_argument("--master-port", type=int, default=None, help="torchrun --master-port")
    la.add_argument("--max-restarts", type=int, default=0, help="torchrun --max-restarts")
    la.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="every rank checkpoints every N steps; a restarted job resumes from them",
    )
    la.add_argument("--resume", action="store_true", help="continue the run in --out")


def main(args: argparse.Namespace) -> int:
    """Check the config, then start torchrun on this machine; return its exit status."""
    check_checkpoint_every(args.checkpoint_every)
    cfg = api.load_config(args.config, args.overrides)
    nodes = int(args.nnodes) if args.nnodes and args.nnodes.isdigit() else 1
    world = max(args.nproc, 1) * nodes
    device_slice(cfg.devices.count, 0, world)  # fail before spawning
    rest = [*([args.config] if args.config else []), "--out", str(args.out)]
    if args.checkpoint_every is not None:
        rest += ["--checkpoint-every", str(args.checkpoint_every)]
    if args.resume:
        rest.append("--resume")
    for o in args.overrides:
        rest += ["--set", o]
    return launch(
        args.nproc,
        rest,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port,
        max_restarts=args.max_restarts,
    )
