"""``scadles produce``: stream every device's partition to its Kafka topic or Redis stream.

The producer side of the real mode ([paper] section 2.2): the config's data set and
partition give each device's samples, its stream rates (at schedule time 0) give the pace, and
``scadles.live.produce`` sends one wire message per sample to ``{prefix}-{device}``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from scadles.cli.args import add_config_args
from scadles.config.load import load_config
from scadles.errors import UserError
from scadles.live.source import DEFAULT_PREFIX, check_reachable, stream_names
from scadles.training import build

BROKERS = ("kafka", "redis")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``produce`` sub-command to an argparse sub-parser collection."""
    p: argparse.ArgumentParser = sub.add_parser(
        "produce", help="stream each device's partition to a Kafka topic or Redis stream"
    )
    add_config_args(p)
    p.add_argument("--broker", default=None, help="kafka or redis (default: live.source)")
    p.add_argument(
        "--url",
        default=None,
        help="redis://HOST:PORT/DB for Redis, HOST:PORT for Kafka (default: live.url)",
    )
    p.add_argument(
        "--prefix", default=None, help="stream name prefix: PREFIX-<device> (default: live.prefix)"
    )
    p.add_argument("--duration", type=float, default=None, metavar="S", help="seconds to stream")
    p.add_argument("--count", type=int, default=None, metavar="N", help="samples per stream")
    p.add_argument("--seed", type=int, default=None, help="shuffle seed (default: train.seed)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Reject a broker, limit or prefix that cannot work, naming the flag."""
    if args.broker not in BROKERS:
        raise UserError(f"--broker: unknown broker {args.broker!r}; allowed: {', '.join(BROKERS)}")
    if args.duration is None and args.count is None:
        raise UserError("produce: give --duration S or --count N (or both)")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration >= 0):
        raise UserError(f"--duration must be finite and >= 0 seconds, got {args.duration}")
    if args.count is not None and args.count < 0:
        raise UserError(f"--count must be >= 0, got {args.count}")
    if not args.prefix:
        raise UserError("--prefix must not be empty")


def main(args: argparse.Namespace) -> int:
    """Stream the partitions; print the samples sent per stream; return the exit status."""
    cfg = load_config(args.config, args.overrides)
    args.broker = args.broker or cfg.live.source
    args.url = args.url or cfg.live.url
    args.prefix = DEFAULT_PREFIX if args.prefix == "" else (args.prefix or cfg.live.prefix)
    if not args.url:
        raise UserError("produce: give --url (or live.url in the config)")
    _check_args(args)
    check_reachable(args.broker, args.url)
    data = build.dataset(cfg)
    k = cfg.devices.count
    if k > len(data.y_train):
        raise UserError(
            f"devices.count must be <= the training set size {len(data.y_train)}, got {k}"
        )
    names = stream_names(range(k), args.prefix)
    idx = build.partitions(cfg, data)
    parts = {n: (data.x_train[i], data.y_train[i]) for n, i in zip(names, idx, strict=True)}
    rates = build.rate_schedule(cfg).rate_at(0.0)  # (K,)
    rate_of = {n: float(r) for n, r in zip(names, rates.tolist(), strict=True)}
    seed = cfg.train.seed if args.seed is None else args.seed
    sent, failed = _produce(args, parts, rate_of, seed)
    for n in names:
        print(f"{n}: {sent[n]} samples at {rate_of[n]:g}/s")
    print(f"sent {sum(sent.values())} samples to {k} {args.broker} streams at {args.url}")
    if failed:
        print(f"{failed} messages were not accepted by the broker")
        return 1
    return 0


def _produce(
    args: argparse.Namespace,
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]],
    rates: dict[str, float],
    seed: int,
) -> tuple[dict[str, int], int]:
    """Run the producer on the chosen broker; return (counts sent, messages the broker refused)."""
    from scadles.live.produce import produce

    if args.broker == "redis":
        from scadles.live.redis_stream import RedisSink

        with RedisSink(args.url) as rsink:
            return produce(rsink, parts, rates, args.duration, args.count, seed=seed), 0
    from scadles.live.kafka_stream import KafkaSink

    with KafkaSink(args.url) as ksink:
        sent = produce(ksink, parts, rates, args.duration, args.count, seed=seed)
        return sent, ksink.failed
