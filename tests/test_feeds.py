"""One engine, two feeds: the rules the engine owns hold whichever feed fills the batch.

Parametrised over the simulated feed and the live feed (in-process replay streams, one process,
wall clock): a non-finite update is skipped with BatchNorm statistics restored; compression
randomness follows the run seed; `bytes_sent` has one meaning (the ring's on-wire bytes of the
step's payloads, scadles.clock.wire_bytes); the accounting identity arrived = trained + dropped +
held holds per device; resuming from a checkpoint continues the run (bit for bit on the
simulator, where time is virtual).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from scadles import clock
from scadles.config.load import Config, load_config
from scadles.engine import Engine
from scadles.exchange import Exchanged
from scadles.training import build, runner

FEEDS = ["sim", "live"]
K = 4


def _cfg(feed: str, *extra: str) -> Config:
    sets = [
        "data.name=synthetic",
        "data.n_train=800",
        "data.n_test=100",
        "model.name=mlp",
        "model.norm=batch",
        f"devices.count={K}",
        "streams.rates=[40, 40, 80, 80]",
        "streams.window_s=0.25",
        "policy.b_min=4",
        "eval.every=1000",
        "train.seed=11",
        *extra,
    ]
    if feed == "live":
        sets += ["live.source=replay", "live.stall_s=5"]
    return load_config(None, sets)


def _engine(feed: str, *extra: str) -> Engine:
    return build.engine(_cfg(feed, *extra))


@pytest.mark.parametrize("feed", FEEDS)
def test_non_finite_update_is_skipped_and_batchnorm_statistics_restored(feed: str) -> None:
    eng = _engine(feed)
    eng.step()
    real = eng.exchange

    def poisoned(*args: Any) -> Exchanged:
        ex = real(*args)
        ex.update[0] = float("nan")
        return ex

    params = [p.detach().clone() for p in eng.model.parameters()]
    stats = [t.clone() for t in eng.model.buffers() if t.is_floating_point()]
    eng.exchange = poisoned  # type: ignore[assignment]
    eng.step()
    assert eng.skipped_nonfinite == 1
    for p, q in zip(eng.model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    now = [t for t in eng.model.buffers() if t.is_floating_point()]
    assert stats and all(torch.equal(a, b) for a, b in zip(now, stats, strict=True))
    eng.exchange = real
    eng.step()  # a finite step applies again
    assert any(not torch.equal(p, q) for p, q in zip(eng.model.parameters(), params, strict=True))
    eng.feed.close()


@pytest.mark.parametrize("feed", FEEDS)
def test_compression_randomness_follows_the_run_seed(feed: str) -> None:
    sets = ("compress.name=randk", "compress.policy=fixed")
    a, b = _engine(feed, *sets), _engine(feed, *sets, "train.seed=12")
    want = build.generator(11, "compress").get_state()
    assert torch.equal(a.compress_gen.get_state(), want)
    assert not torch.equal(b.compress_gen.get_state(), want)
    a.feed.close()
    b.feed.close()


@pytest.mark.parametrize("sets", [(), ("compress.name=topk", "compress.policy=fixed")])
def test_bytes_sent_means_the_same_in_both_feeds(sets: tuple[str, ...]) -> None:
    sent = {}
    for feed in FEEDS:
        eng = _engine(feed, *sets)
        rep = eng.step()
        sent[feed] = rep.bytes_sent
        eng.feed.close()
    p = build.comm_size(_cfg("sim"), eng.data, eng.model)[0]  # demo: "resnet152"
    if not sets:  # dense: a ring all-reduce of every device's 4P bytes
        expect = clock.wire_bytes("allreduce", torch.full((K,), 4.0 * p, dtype=torch.float64))
        assert sent["sim"] == pytest.approx(expect)
    assert sent["sim"] > 0
    assert sent["live"] == pytest.approx(sent["sim"], rel=1e-12)


@pytest.mark.parametrize("feed", FEEDS)
def test_accounting_identity_per_device(feed: str) -> None:
    eng = _engine(feed, "buffer.capacity=30")
    trained = 0
    for _ in range(4):
        trained += eng.step().batch_total
    books = eng.feed.accounting()
    assert torch.equal(books.arrived, books.trained + books.dropped + books.held)
    assert int(books.trained.sum()) == trained == eng.counters.samples_trained
    assert int(books.arrived.sum()) > 0
    eng.feed.close()


def _steps(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


class _Stop(Exception):
    """Interrupts a run from its progress callback."""


@pytest.mark.parametrize("feed", FEEDS)
def test_resume_continues_the_run(feed: str, tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    cfg = _cfg(feed, "train.steps=6")
    runner.run(cfg, whole)

    def stop_after_3(done: float, total: float, text: str) -> None:
        if done >= 3:
            raise _Stop

    with pytest.raises(_Stop):
        runner.run(cfg, cut, checkpoint_every=3, progress=stop_after_3)
    summary = runner.run(cfg, cut, checkpoint_every=3, resume=True)
    rows = _steps(cut)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert summary["samples_arrived"] == (
        summary["samples_trained"] + summary["samples_dropped"] + summary["samples_held"]
    )
    if feed == "sim":  # virtual time: the resumed run is the uninterrupted one, bit for bit
        drop = ("host_s",)
        a = [{k: v for k, v in r.items() if k not in drop} for r in _steps(whole)]
        b = [{k: v for k, v in r.items() if k not in drop} for r in rows]
        assert a == b
        first, second = torch.load(whole / "model.pt"), torch.load(cut / "model.pt")
        assert all(torch.equal(first[n], second[n]) for n in first)
