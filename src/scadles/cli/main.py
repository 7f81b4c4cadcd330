"""The `scadles` command: run, compare, sweep, launch, config, produce, report, reproduce.

Exit status: 0 on success, 2 on bad input (one line on stderr naming the key, the value and what
is allowed), 1 on any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from scadles.cli import produce as produce_cli
from scadles.cli.args import add_config_args
from scadles.comm import device_slice
from scadles.config.load import Config, config_to_dict, dump_toml, load_config, replace_key
from scadles.errors import UserError
from scadles.policies import POLICIES
from scadles.report import html as html_report
from scadles.report.records import comparison, write_json
from scadles.report.tables import comparison_markdown, comparison_table_rich
from scadles.reproduce import driver as reproduce
from scadles.training import build, runner
from scadles.training.launch import launch
from scadles.training.sweep import parse_grid, run_sweep

log = logging.getLogger("scadles")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scadles",
        description="Synchronous distributed SGD on streaming data at the edge (ScaDLES).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    common = add_config_args

    r = sub.add_parser("run", help="train one policy; write config, steps, evals, summary")
    common(r)
    r.add_argument("--out", type=Path, help="output directory (required unless --resume)")
    r.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="write DIR/checkpoint.pt atomically every N steps",
    )
    r.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the run in DIR from its checkpoint (config: DIR/config.json unless given)",
    )
    r.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard scalars to DIR/tensorboard (needs scadles[tensorboard])",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar or table")
    r.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")

    c = sub.add_parser("compare", help="run several policies on the same streams, compare them")
    common(c)
    c.add_argument("--out", required=True, type=Path, help="output directory")
    c.add_argument(
        "--policies",
        default="scadles,ddl",
        help="comma-separated policies to run (default: scadles,ddl)",
    )
    c.add_argument("--quiet", action="store_true", help="no progress bar or table")
    c.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")

    w = sub.add_parser("sweep", help="run a grid of overrides; tabulate the summaries")
    common(w)
    w.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2",
        help="a key and its values; several --grid make a cartesian product",
    )
    w.add_argument("--out", required=True, type=Path, help="output directory")
    w.add_argument("--quiet", action="store_true", help="no progress bar or table")
    w.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")

    la = sub.add_parser(
        "launch", help="real mode: N processes on torch.distributed (torchrun), gloo or nccl"
    )
    common(la)
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

    g = sub.add_parser("config", help="print the resolved config (TOML, or JSON with --json)")
    common(g)
    g.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    html_report.add_parser(sub)
    produce_cli.add_parser(sub)
    reproduce.add_parser(sub)
    return p


@contextmanager
def _progress(quiet: bool, console: Console) -> Iterator[runner.Progress | None]:
    """Yield a progress callback drawing a rich bar, or None when quiet."""
    if quiet:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def update(done: float, total: float, text: str) -> None:
        key = text.split(" ", 1)[0]
        if key not in tasks:
            tasks[key] = bar.add_task(key, total=total)
        bar.update(tasks[key], completed=done, description=text)  # type: ignore[arg-type]

    with bar:
        yield update


def _policies(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in POLICIES]
    if not names or bad:
        raise UserError(
            f"--policies: unknown policy {bad[0] if bad else text!r}; known: {', '.join(POLICIES)}"
        )
    return names


def _compare(cfg: Config, out: Path, policies: list[str], quiet: bool, console: Console) -> None:
    from scadles.report.plots import plot_comparison

    data = build.dataset(cfg)
    runs = {}
    dirs = {}
    with _progress(quiet, console) as progress:
        for name in policies:
            pcfg = replace_key(cfg, "policy.name", name)
            dirs[name] = out / name
            runs[name] = runner.run(pcfg, dirs[name], progress=progress, data=data)
    comp = comparison(runs)
    write_json(out / "comparison.json", comp)
    (out / "comparison.md").write_text(comparison_markdown(comp))
    plots = plot_comparison(out, dirs)
    if not quiet:
        console.print(comparison_table_rich(comp))
        console.print(f"wrote {out / 'comparison.md'} and {len(plots)} plots in {out}")


# commands with their own parser and entry point (no config of their own)
_STANDALONE: dict[str, Callable[[argparse.Namespace], int]] = {
    "report": html_report.main,
    "produce": produce_cli.main,
    "reproduce": reproduce.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    console = Console(stderr=False, width=None if sys.stdout.isatty() else 140)
    try:
        if args.command in _STANDALONE:
            return _STANDALONE[args.command](args)
        if args.command == "run" and args.resume is not None:
            if args.out is not None and args.out != args.resume:
                raise UserError(f"--out {args.out} differs from --resume {args.resume}")
            args.out = args.resume
            if args.config is None:
                args.config = str(args.resume / "config.json")
        if args.command == "run" and args.out is None:
            raise UserError("run: --out DIR is required (or --resume DIR)")
        if getattr(args, "checkpoint_every", None) is not None and args.checkpoint_every < 1:
            raise UserError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
        cfg = load_config(args.config, args.overrides)
        if args.command == "config":
            print(json.dumps(config_to_dict(cfg), indent=2) if args.json else dump_toml(cfg))
        elif args.command == "run":
            with _progress(args.quiet, console) as progress:
                summary = runner.run(
                    cfg,
                    args.out,
                    progress=progress,
                    checkpoint_every=args.checkpoint_every,
                    resume=args.resume is not None,
                    tensorboard=args.tensorboard,
                )
            if not args.quiet:
                console.print_json(json.dumps(summary))
        elif args.command == "sweep":
            with _progress(args.quiet, console) as progress:
                run_sweep(cfg, parse_grid(args.grid), args.out, progress)
            if not args.quiet:
                console.print((args.out / "sweep.md").read_text())
        elif args.command == "launch":
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
        elif args.command == "compare":
            _compare(cfg, args.out, _policies(args.policies), args.quiet, console)
    except UserError as e:
        print(f"scadles: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scadles: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
