"""The `scadles` command: run, compare, sweep, launch, config, report, produce, reproduce.

Each command is a module of this package with `add_parser(sub)` and `main(args) -> int`, a thin
layer over the public API (`scadles.api`). This module assembles the parser, sets up logging and
torch's thread count (--threads: the library never changes it) and keeps the exit-status
contract: 0 on success (also when the reader of stdout went away, as `scadles config | head -1`),
2 on bad input (one line on stderr naming the key, the value and what is allowed), 130 when
interrupted, 1 on any other failure. Results (tables, JSON) go to stdout; progress bars and logs
to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

import torch

from scadles.cli import compare, config, launch, produce, report, reproduce, run, sweep
from scadles.cli.args import add_threads_arg, apply_threads, resolve_threads
from scadles.errors import UserError

COMMANDS: dict[str, ModuleType] = {  # in the order `scadles --help` lists them
    "run": run,
    "compare": compare,
    "sweep": sweep,
    "launch": launch,
    "config": config,
    "report": report,
    "produce": produce,
    "reproduce": reproduce,
}
TRAINING = ("run", "compare", "sweep")  # train in this process: --threads applies here
PER_RANK = ("launch",)  # --threads is passed on to every rank


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scadles",
        description="Synchronous distributed SGD on streaming data at the edge (ScaDLES).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    for name in TRAINING:
        add_threads_arg(sub.choices[name])
    for name in PER_RANK:
        add_threads_arg(sub.choices[name], per="each rank")
    return p


def _stdout_gone() -> bool:
    """Say whether stdout is a pipe whose reader has exited (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):  # no file descriptor (captured output): not a pipe of ours
        return False


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and the exit flush must not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command: Callable[[argparse.Namespace], int] = COMMANDS[args.command].main
    before = torch.get_num_threads()
    try:
        if args.command in TRAINING:
            args.threads = resolve_threads(args.threads)
            apply_threads(args.threads)
        status = command(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return status
    except UserError as e:
        print(f"scadles: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scadles: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        _quiet_stdout()  # the reader of stdout exited (`| head`): stop quietly, as cat does
        return 0
    finally:
        torch.set_num_threads(before)  # in-process callers (tests) get their setting back


if __name__ == "__main__":
    sys.exit(main())
