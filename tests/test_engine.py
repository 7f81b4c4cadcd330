"""Engine oracles: union gradient == weighted mean, one device == plain SGD, policies coincide."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

from scadles import clock
from scadles.aggregate import sample_weights, weighted_mean
from scadles.data.buffer import StreamBuffer
from scadles.data.datasets import Dataset
from scadles.data.rates import RateSchedule
from scadles.data.streams import Arrivals, ReplayOrder
from scadles.engine import Engine, Schedule
from scadles.exchange import DenseExchange
from scadles.feeds.sim import SimFeed
from scadles.nn import Segments, build_model, device_segments
from scadles.policies import BatchRule
from scadles.timing import VirtualClock


def tiny_data(n: int = 240, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return Dataset("tiny", x, y, x[:40], y[:40], 4, 24)


def make_engine(
    rates: list[float], policy: str, buffer: str = "persistence", k_parts: int | None = None
) -> Engine:
    data = tiny_data()
    k = len(rates)
    parts = list(torch.arange(len(data.y_train)).chunk(k_parts or k))
    model = build_model("mlp", (6,), 4, width=8, gen=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = RateSchedule.constant(torch.tensor(rates, dtype=torch.float64))
    rule = BatchRule(policy, 16, 2, 1024, 1.0, policy == "scadles")
    profiles = clock.make_profiles("uniform", k)
    feed = SimFeed(
        data=data,
        replay=ReplayOrder(parts, seed=3),
        arrivals=Arrivals.start(sched, "deterministic", torch.Generator().manual_seed(0)),
        buffer=StreamBuffer.empty(k, buffer, None),
        rule=rule,
        profiles=profiles,
        gen=torch.Generator().manual_seed(2),
    )
    return Engine(
        model=model,
        optimizer=opt,
        data=data,
        feed=feed,
        clock=VirtualClock(profiles),
        rule=rule,
        schedule=Schedule(0.05, (), 0.2),
        exchange=DenseExchange(model, 1000.0),
        compress_gen=torch.Generator().manual_seed(4),
    )


def test_union_gradient_equals_weighted_mean_of_device_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 4, width=8, gen=torch.Generator().manual_seed(1)).double()
    data = tiny_data()
    b = torch.tensor([5, 17, 1, 9])
    seg = torch.repeat_interleave(torch.arange(4), b)
    x, y = data.x_train[: len(seg)].double(), data.y_train[: len(seg)]
    params = list(model.parameters())

    def flat_grad(loss: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    per_dev = []
    start = 0
    for n in b.tolist():  # the oracle: one device at a time, mean loss
        xi, yi = x[start : start + n], y[start : start + n]
        segi = Segments(torch.zeros(n, dtype=torch.long), 1, None)
        with device_segments(segi):
            per_dev.append(flat_grad(F.cross_entropy(model(xi), yi)))
        start += n
    w = b.double() / b.sum()
    expected = weighted_mean(torch.stack(per_dev), w)
    pw = sample_weights(seg, b, w)
    with device_segments(Segments(seg, 4, None)):
        union = (F.cross_entropy(model(x), y, reduction="none") * pw).sum()
    assert torch.allclose(flat_grad(union), expected, atol=1e-6, rtol=0)


def test_one_device_fixed_batches_equals_plain_sgd() -> None:
    eng = make_engine([16.0], "ddl")
    reference = copy.deepcopy(eng.model)
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    seen: list[torch.Tensor] = []
    original = eng.feed.replay.indices

    def record(start: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx, dev = original(start, n)
        seen.append(idx)
        return idx, dev

    eng.feed.replay.indices = record  # type: ignore[method-assign]
    for _ in range(6):
        eng.step()
    for idx in seen:
        assert len(idx) == 16
        opt.zero_grad()
        F.cross_entropy(reference(eng.data.x_train[idx]), eng.data.y_train[idx]).backward()
        opt.step()
    for p, q in zip(eng.model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_policies_coincide_when_every_rate_equals_the_fixed_batch() -> None:
    a = make_engine([16.0, 16.0, 16.0], "scadles")
    b = make_engine([16.0, 16.0, 16.0], "ddl")
    for _ in range(5):
        ra, rb = a.step(), b.step()
        assert ra.batch_sizes == rb.batch_sizes == [16, 16, 16]
        assert ra.sim_time_s == rb.sim_time_s
        assert ra.lr == rb.lr
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_ddl_waits_for_the_slowest_stream_and_scadles_does_not() -> None:
    ddl = make_engine([4.0, 64.0], "ddl")
    sca = make_engine([4.0, 64.0], "scadles", buffer="truncation")
    for _ in range(3):
        rd, rs = ddl.step(), sca.step()
    assert rd.wait_s >= 16 / 4.0 - 2.0  # the 4/s device needs ~4 s per 16-sample batch
    assert rs.batch_sizes == [4, 64]
    assert rs.sim_time_s < rd.sim_time_s


def test_accounting_identity_after_steps() -> None:
    eng = make_engine([5.0, 30.0, 70.0], "scadles", buffer="truncation")
    for _ in range(10):
        eng.step()
    books = eng.feed.accounting()
    assert torch.equal(books.arrived, books.trained + books.dropped + books.held)
    assert int(books.trained.sum()) == eng.counters.samples_trained


def test_evaluate_reports_fractions() -> None:
    eng = make_engine([16.0, 16.0], "ddl")
    ev = eng.evaluate()
    assert 0.0 <= ev.top1 <= ev.top5 <= 1.0
    assert ev.loss > 0


def test_non_finite_gradient_step_is_skipped_and_counted() -> None:
    eng = make_engine([16.0, 16.0], "ddl")
    eng.step()
    before = [p.detach().clone() for p in eng.model.parameters()]
    x = eng.data.x_train
    saved = x.clone()
    x[:] = float("nan")  # a device whose data contains NaN poisons the aggregated gradient
    eng.step()
    assert eng.skipped_nonfinite == 1
    for p, q in zip(eng.model.parameters(), before, strict=True):
        assert torch.equal(p, q)  # never applied
    x.copy_(saved)
    eng.step()
    assert eng.skipped_nonfinite == 1
    assert all(torch.isfinite(p).all() for p in eng.model.parameters())


def test_chunked_steps_equal_unchunked_steps() -> None:
    # Arrange: one device per chunk (6 input values per row, 6 per chunk) vs one chunk
    whole = make_engine([5.0, 9.0, 3.0, 12.0], "scadles")
    chunked = make_engine([5.0, 9.0, 3.0, 12.0], "scadles")
    assert isinstance(chunked.exchange, DenseExchange)
    chunked.exchange.chunk_elements = 6
    # Act / Assert
    for _ in range(5):
        a, c = whole.step(), chunked.step()
        assert a.batch_sizes == c.batch_sizes and a.batch_total > 4
        assert c.loss == pytest.approx(a.loss, abs=1e-6)
        assert c.prequential_acc == a.prequential_acc
    for p, q in zip(whole.model.parameters(), chunked.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0)


def test_devices_with_less_than_one_batch_are_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from scadles.config.load import load_config
    from scadles.training import build

    over = ["data.name=synthetic", "data.n_train=100", "data.n_test=20", "model.name=mlp"]
    with caplog.at_level(logging.WARNING, logger="scadles.training.build"):
        build.engine(load_config(None, [*over, "devices.count=50", "policy.b_min=4"]))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "devices.count=50" in warned[0] and "policy.b_min=4" in warned[0], warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scadles.training.build"):
        build.engine(load_config(None, [*over, "devices.count=10", "policy.b_min=4"]))
        build.engine(load_config(None, [*over, "devices.count=10", "policy.name=ddl"]))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "policy.batch=64" in warned[0], warned
