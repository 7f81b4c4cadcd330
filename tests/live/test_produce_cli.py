"""`scadles produce` against real brokers: stream lengths, the partitions' samples, bad input."""

from __future__ import annotations

import argparse
import time

import pytest
import torch

from scadles.cli.produce import add_parser, main
from scadles.config.load import load_config
from scadles.errors import UserError
from scadles.live.source import LiveSource, open_source
from scadles.training import build

SETS = [
    "data.name=synthetic",
    "data.n_train=60",
    "data.n_test=20",
    "devices.count=2",
    "streams.rates=[100, 40]",
]
SHAPE = (20,)  # the synthetic data set's samples


def _args(*argv: str) -> argparse.Namespace:
    """Parse a `produce` command line with the sub-command's own parser."""
    p = argparse.ArgumentParser(prog="scadles")
    add_parser(p.add_subparsers(dest="command"))
    sets = [a for s in SETS for a in ("--set", s)]
    return p.parse_args(["produce", *sets, *argv])


def _partitions() -> list[tuple[torch.Tensor, torch.Tensor]]:
    cfg = load_config(None, SETS)
    data = build.dataset(cfg)
    return [(data.x_train[i], data.y_train[i]) for i in build.partitions(cfg, data)]


def _read_all(src: LiveSource, want: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Poll until device d got ``want[d]`` samples; return them per device."""
    xs: list[list[torch.Tensor]] = [[] for _ in want]
    ys: list[list[torch.Tensor]] = [[] for _ in want]
    deadline = time.monotonic() + 15.0
    while any(sum(len(y) for y in g) < w for g, w in zip(ys, want, strict=True)):
        assert time.monotonic() < deadline, "timed out"
        for d, dl in enumerate(src.poll([64, 64], timeout_s=0.2)):
            assert dl.skipped == 0
            xs[d].append(dl.x)
            ys[d].append(dl.y)
            src.done(d, dl.ids)
    return [(torch.cat(x), torch.cat(y)) for x, y in zip(xs, ys, strict=True)]


def _check_samples(got: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Every received sample is a row of its device's partition, with that row's label."""
    for (x, y), (px, py) in zip(got, _partitions(), strict=True):
        match = (x.flatten(1)[:, None, :] == px.flatten(1)[None, :, :]).all(dim=2)  # (n, rows)
        assert bool(match.any(dim=1).all())
        assert torch.equal(y, py[match.float().argmax(dim=1)])


def test_produce_count_to_redis(
    redis_url: str, uid: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cli-{uid}"
    assert (
        main(_args("--broker", "redis", "--url", redis_url, "--prefix", prefix, "--count", "7"))
        == 0
    )
    out = capsys.readouterr().out
    assert f"{prefix}-0: 7 samples at 100/s" in out and f"{prefix}-1: 7 samples at 40/s" in out
    src = open_source("redis", url=redis_url, streams=[f"{prefix}-0", f"{prefix}-1"],
                      shape=SHAPE, num_classes=10, max_bytes=4096, consumer="t")  # fmt: skip
    try:
        assert [src.broker_count(d) for d in range(2)] == [7, 7]
        got = _read_all(src, [7, 7])
    finally:
        src.close()
    _check_samples(got)


def test_produce_duration_to_kafka(
    kafka_bootstrap: str, uid: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cli-{uid}"
    argv = ["--broker", "kafka", "--url", kafka_bootstrap, "--prefix", prefix]
    assert main(_args(*argv, "--duration", "0.25", "--seed", "5")) == 0
    out = capsys.readouterr().out
    # send i is due at i / rate: 25 at 100/s and 10 at 40/s fall before 0.25 s
    assert f"{prefix}-0: 25 samples" in out and f"{prefix}-1: 10 samples" in out
    assert "sent 35 samples to 2 kafka streams" in out
    src = open_source("kafka", url=kafka_bootstrap, streams=[f"{prefix}-0", f"{prefix}-1"],
                      shape=SHAPE, num_classes=10, max_bytes=4096)  # fmt: skip
    try:
        got = _read_all(src, [25, 10])
        assert [src.broker_count(d) for d in range(2)] == [25, 10]
    finally:
        src.close()
    _check_samples(got)


def test_bad_input_is_one_line_user_errors(redis_url: str) -> None:
    cases = [
        (["--broker", "mqtt", "--url", redis_url, "--count", "1"], "--broker: unknown broker"),
        (["--broker", "redis", "--url", redis_url], "give --duration S or --count N"),
        (["--broker", "redis", "--url", "redis://127.0.0.1:1/0", "--count", "1"],
         "--url: cannot reach redis"),
        (["--broker", "kafka", "--url", "redis://x", "--count", "1"], "--url: a Kafka bootstrap"),
        (["--broker", "redis", "--url", redis_url, "--count", "-1"], "--count must be >= 0"),
    ]  # fmt: skip
    for argv, msg in cases:
        with pytest.raises(UserError, match=msg) as err:
            main(_args(*argv))
        assert "\n" not in str(err.value)
