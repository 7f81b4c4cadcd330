"""``scadles launch``: real mode, N processes under torchrun (gloo on CPU, nccl on CUDA).

--out is checked before any process starts; when the job ends, its summary (DIR/summary.json)
prints as `scadles run` prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scadles import api
from scadles.cli.args import add_config_args, resolve_threads
from scadles.cli.diverged import diverged_status
from scadles.cli.progress import console, print_summary
from scadles.cli.run import check_checkpoint_every
from scadles.comm import device_slice
from scadles.errors import UserError
from scadles.training.launch import launch
from scadles.training.rundir import check_out


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
    la.add_argument("--force", action="store_true", help="replace the run in a non-empty --out")
    la.add_argument("--quiet", action="store_true", help="no summary at the end")


def main(args: argparse.Namespace) -> int:
    """Check the config, then start torchrun on this machine; return its exit status."""
    if args.resume and args.force:
        raise UserError("--resume and --force exclude each other: give one")
    check_checkpoint_every(args.checkpoint_every)
    cfg = api.load_config(args.config, args.overrides)
    nodes = int(args.nnodes) if args.nnodes and args.nnodes.isdigit() else 1
    world = max(args.nproc, 1) * nodes
    device_slice(cfg.devices.count, 0, world)  # fail before spawning
    threads = resolve_threads(args.threads)
    lead = args.node_rank in (None, 0)  # the machine whose rank 0 writes --out
    if lead:
        check_out(args.out, resume=args.resume, force=args.force)
    rest = [*([args.config] if args.config else []), "--out", str(args.out)]
    rest += ["--threads", str(threads)]
    if args.checkpoint_every is not None:
        rest += ["--checkpoint-every", str(args.checkpoint_every)]
    if args.resume:
        rest.append("--resume")
    if args.force:
        rest.append("--force")
    for o in args.overrides:
        rest += ["--set", o]
    status = launch(
        args.nproc,
        rest,
        threads=threads,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port,
        max_restarts=args.max_restarts,
    )
    done = args.out / "summary.json"
    if status != 0 or not lead or not done.is_file():
        return status
    summary = json.loads(done.read_text())
    if not args.quiet:
        print_summary(console(), summary)
    return diverged_status({str(summary.get("policy", "run")): summary})
