"""The time-aware exchange: its cost model against the clock's formulas, its progress measure
against a per-device loop, the rule on synthetic cost/progress tables, probes, resume, config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from scadles import clock
from scadles.compress.base import Compressor, Payload
from scadles.compress.cast import Cast
from scadles.compress.identity import Identity
from scadles.compress.powersgd import PowerSGD
from scadles.compress.switch import State
from scadles.compress.timeaware import (
    GROWTH,
    MeasuredCosts,
    SimCosts,
    TimeAwareSwitch,
    check_candidates,
    parse_candidate,
    pick,
)
from scadles.compress.topk import TopK
from scadles.config.load import load_config
from scadles.errors import UserError
from scadles.exchange import Exchange
from scadles.timing import compress_time
from scadles.training import build, runner

SMALL = [
    "data.name=synthetic",
    "data.n_train=800",
    "data.n_test=100",
    "model.name=mlp",
    "devices.count=4",
    "streams.rates=[20, 40, 64, 90]",
    "eval.every=5",
    "train.steps=12",
    "run.progress=false",
    "compress.policy=time_aware",
    "compress.probe_every=4",
]


class Table:
    """A cost model with scripted predictions (seconds per step, NaN = unknown)."""

    def __init__(self, seconds: list[float]) -> None:
        self.seconds = seconds

    def learn(self, option: int, payload: Payload, comp: Compressor) -> None:
        pass

    def expect(self, base: float) -> None:
        pass

    def observe(
        self, option: int, step: int, compute_s: float, comm_s: float, probed: bool = False
    ) -> None:
        pass

    def predict(self, option: int) -> float | None:
        s = self.seconds[option]
        return None if math.isnan(s) else s

    def due(self, step: int, current: int) -> int | None:
        return None

    def state_dict(self) -> State:
        return {}

    def load_state_dict(self, d: State) -> None:
        pass


def _flat_and_sparse(k: int = 4, p: int = 100) -> Tensor:
    """Rows whose first 10 values carry everything (Top-10 % keeps all of it)."""
    rows = torch.zeros(k, p, dtype=torch.float64)
    rows[:, :10] = torch.arange(1, 11, dtype=torch.float64) * torch.arange(1, k + 1)[:, None]
    return rows


def _switch(seconds: list[float], hysteresis: float = 0.1) -> TimeAwareSwitch:
    levels: list[Compressor] = [Identity(), TopK(0.1)]
    weights = lambda b: b.double() / b.double().sum()  # noqa: E731
    return TimeAwareSwitch(
        ("none", "topk:0.1"), levels, Table(seconds), weights, hysteresis=hysteresis
    )


def test_pick_keeps_the_current_candidate_within_the_hysteresis() -> None:
    scores = torch.tensor([1.0, 0.95, 2.0], dtype=torch.float64)
    assert pick(scores, 0, 0.1) == 0  # 0.95 is not below 0.9 x 1.0
    assert pick(scores, 0, 0.0) == 1
    assert pick(torch.tensor([1.0, 0.89, 2.0], dtype=torch.float64), 0, 0.1) == 1
    assert pick(torch.tensor([math.nan, 3.0, 2.0], dtype=torch.float64), 0, 0.1) == 2


def test_rule_picks_least_seconds_per_progress_on_synthetic_tables() -> None:
    # Arrange: Top-10 % keeps every value of these rows, so both candidates make full progress
    acc = _flat_and_sparse()
    b = torch.tensor([10, 20, 30, 40])
    # Act / Assert: the cheaper one wins; progress equal
    assert _switch([2.0, 1.0]).decide(acc, None, 0, grad=acc, b=b) == 1
    assert _switch([1.0, 2.0]).decide(acc, None, 0, grad=acc, b=b) == 0
    # flat rows: Top-10 % carries 10 % of the progress, so it needs to be 10x cheaper
    flat = torch.ones(4, 100, dtype=torch.float64)
    assert _switch([1.0, 0.2]).decide(flat, None, 0, grad=flat, b=b) == 0
    assert _switch([1.0, 0.08]).decide(flat, None, 0, grad=flat, b=b) == 1
    sw = _switch([1.0, 0.2])
    sw.decide(flat, None, 0, grad=flat, b=b)
    assert sw.alignment.tolist() == pytest.approx([1.0, 0.1], abs=1e-12)
    # unknown costs everywhere: the first candidate stays
    assert _switch([math.nan, math.nan]).decide(flat, None, 0, grad=flat, b=b) == 0


def test_alignment_equals_a_per_device_loop() -> None:
    # Arrange: uneven rows, a residual in acc, ScaDLES weights b / sum b
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(5, 60, generator=gen, dtype=torch.float64)
    acc = g + 0.3 * torch.randn(5, 60, generator=gen, dtype=torch.float64)
    b = torch.tensor([8, 16, 24, 32, 64])
    w = b.double() / b.sum()
    levels: list[Compressor] = [Identity(), TopK(0.2), PowerSGD(2, ((6, 10),))]
    unknown = Table([math.nan] * 3)  # unknown costs: every candidate is measured
    sw = TimeAwareSwitch(("a", "b", "c"), levels, unknown, lambda x: x / x.sum())
    # Act
    sw.decide(acc, None, 0, grad=g, b=b)
    # Assert: sum_i w_i <g_i, C(acc_i)> / sum_i w_i |g_i|^2, each device in a loop
    den = sum(float(w[i]) * float(g[i] @ g[i]) for i in range(5))
    for c, comp in enumerate(levels):
        num = 0.0
        for i in range(5):  # PowerSGD: the warm start the switch's generator draws
            if isinstance(comp, PowerSGD):
                comp.q = [None]
            one = comp.compress(acc[i : i + 1], torch.Generator().manual_seed(0))
            kept = comp.decompress(one)[0]
            num += float(w[i]) * float(g[i] @ kept)
        assert float(sw.alignment[c]) == pytest.approx(num / den, rel=1e-9), c


def test_probing_leaves_powersgd_warm_start_untouched() -> None:
    psgd = PowerSGD(2, ((6, 10),))
    sw = TimeAwareSwitch(("none", "p"), [Identity(), psgd], Table([1.0, 1.0]), lambda x: x)
    acc = torch.randn(3, 60, dtype=torch.float64)
    sw.decide(acc, None, 0, grad=acc, b=torch.ones(3))
    assert psgd.q == [None]


def _candidates() -> list[Compressor]:
    return [Identity(), Cast(torch.float16), TopK(0.1), PowerSGD(2, ((6, 10),))]


def test_skipping_candidates_never_changes_the_pick() -> None:
    # Arrange: random costs, gradients with a residual, weights, current candidate, hysteresis
    gen = torch.Generator().manual_seed(11)
    for case in range(150):
        g = torch.randn(4, 60, generator=gen, dtype=torch.float64)
        acc = g + float(torch.rand((), generator=gen)) * 2 * torch.randn(
            4, 60, generator=gen, dtype=torch.float64
        )
        b = torch.randint(1, 50, (4,), generator=gen)
        t = (torch.rand(4, generator=gen, dtype=torch.float64) * 4 + 0.05).tolist()
        current, h = int(torch.randint(0, 4, (), generator=gen)), [0.0, 0.1, 0.3][case % 3]
        oracle = TimeAwareSwitch("abcd", _candidates(), Table([math.nan] * 4), lambda x: x)
        oracle.decide(acc, None, 0, grad=g, b=b)  # unknown costs: every candidate measured
        sw = TimeAwareSwitch("abcd", _candidates(), Table(t), lambda x: x, hysteresis=h)
        sw.current = current
        # Act
        chosen = sw.decide(acc, None, 0, grad=g, b=b)
        # Assert: the pick of the full table; the ones measured carry the oracle's a_c
        scores = torch.tensor(t, dtype=torch.float64) / oracle.alignment.clamp(min=1e-3)
        assert chosen == pick(scores, current, h), case
        for c in range(4):
            if c == chosen or sw.levels[c].name in sw.probed:
                assert float(sw.alignment[c]) == pytest.approx(float(oracle.alignment[c]))


def test_growth_factors_bound_every_listed_compressor() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 60, generator=gen) * torch.logspace(-3, 3, 60)
    for comp in _candidates():
        out = comp.decompress(comp.compress(x, torch.Generator().manual_seed(0)))
        gamma = GROWTH[comp.name]
        assert bool((out.double().norm(dim=1) <= gamma * x.double().norm(dim=1)).all()), comp


def test_a_candidate_that_cannot_win_is_not_compressed_nor_charged() -> None:
    # Arrange: dense costs 1 s; Top-k would need to cost less than 0.9 s / B to be picked
    acc = torch.ones(4, 100, dtype=torch.float64)
    b = torch.tensor([10, 20, 30, 40])
    sw = _switch([1.0, 0.95])
    # Act
    chosen = sw.decide(acc, None, 0, grad=acc, b=b)
    # Assert: dense used, Top-k never run, its progress still the prior
    assert chosen == 0
    assert sw.probed == ()
    assert float(sw.alignment[1]) == 1.0
    # a Top-k that could win is run, and charged when dense is still used
    sw = _switch([1.0, 0.5])
    assert sw.decide(acc, None, 0, grad=acc, b=b) == 0  # a = 0.1: 5 s per unit of progress
    assert sw.probed == ("topk",)


def test_time_aware_on_powersgd_throughout_equals_fixed_powersgd() -> None:
    # Arrange: a 0.1 Mbit/s link, where PowerSGD rank 4 wins every step
    link = ["clock.emulate_params=default", "clock.bandwidth_bps=1e5", "train.steps=10"]
    fixed = ["compress.policy=fixed", "compress.name=powersgd", "compress.rank=4"]
    aware = build.engine(load_config(None, [*SMALL, *link]))
    plain = build.engine(load_config(None, [*SMALL, *link, *fixed]))
    # Act
    a, p = [aware.step() for _ in range(10)], [plain.step() for _ in range(10)]
    # Assert: no extra compute charged, so the same arrivals, batches, losses and times
    assert {r.choice for r in a} == {"powersgd:4"}
    assert [(r.sim_time_s, r.loss, r.batch_sizes) for r in a] == [
        (r.sim_time_s, r.loss, r.batch_sizes) for r in p
    ]


def test_sim_costs_equal_the_clock_formulas() -> None:
    # Arrange: 16 devices on the paper profile, payload bytes scaled by 3, 5 messages
    prof = clock.make_profiles("paper", 16)
    scale, messages, params = 3.0, 5, 30_000.0

    def comm(coll: str, nbytes: Tensor) -> float:
        return clock.comm_time(prof, coll, nbytes * scale, messages)

    def squeeze(comp: Compressor) -> float:
        return compress_time(comp.name, params, int(getattr(comp, "rank", 1)))

    costs = SimCosts(2, 16, comm, squeeze)
    x = torch.randn(4, 10_000)
    dense, topk = Identity(), TopK(0.1)
    # Act
    costs.learn(0, dense.compress(x, torch.Generator()), dense)
    costs.learn(1, topk.compress(x, torch.Generator()), topk)
    costs.expect(1.25)
    # Assert: dense = ring all-reduce of 4 P bytes; Top-k = all-gather of k (4 + 4) bytes each
    ring = clock.allreduce_time(prof, 4.0 * 10_000 * scale, messages)
    gather = clock.allgather_time(prof, torch.full((16,), 1000 * 8.0 * scale), messages)
    assert costs.predict(0) == pytest.approx(1.25 + ring, rel=1e-12)
    assert costs.predict(1) == pytest.approx(
        1.25 + gather + compress_time("topk", params), rel=1e-12
    )


def test_measured_costs_probe_the_oldest_estimate() -> None:
    costs = MeasuredCosts(3, probe_every=5, ewma=0.5)
    assert costs.due(0, 0) is None  # the switch measures its candidates at step 0
    assert costs.due(1, 0) == 1  # never measured: due at once
    costs.observe(1, 1, 1.0, 1.0)
    assert costs.due(2, 0) == 2
    costs.observe(2, 2, 0.5, 0.5)
    costs.observe(0, 3, 0.2, 0.2)
    assert costs.due(4, 0) is None  # nothing is 5 steps old
    assert costs.due(10, 0) is None  # a measuring step
    assert costs.due(11, 0) is None  # only half-way between measuring steps
    assert costs.due(12, 0) == 1  # measured at step 1: the oldest
    costs.observe(1, 12, 3.0, 1.0)  # EWMA: 0.5 x 2 + 0.5 x 4
    assert costs.predict(1) == pytest.approx(3.0)
    costs.observe(1, 11, 9.0, 9.0, probed=True)  # a measuring step's compute: ignored
    assert costs.predict(1) == pytest.approx(3.0)


def test_parse_candidates_and_their_errors() -> None:
    assert parse_candidate("k", "topk:0.05") == ("topk", {"ratio": 0.05})
    assert parse_candidate("k", "powersgd:4") == ("powersgd", {"rank": 4})
    assert parse_candidate("k", "fp16") == ("fp16", {})
    for bad, why in [
        ("topk", "allowed"),
        ("topk:2", "ratio must be in"),
        ("powersgd:0", "rank must be"),
        ("qsgd:99999", r"levels must be an integer in \[1, 32767\]"),
        ("gzip", "unknown candidate"),
        ("powersgd:x", "must be a number"),
    ]:
        with pytest.raises(UserError, match=why):
            parse_candidate("compress.candidates", bad)
    with pytest.raises(UserError, match="at least two distinct"):
        check_candidates("compress.candidates", ["none", "none"])


def test_config_rejects_a_bad_candidate_naming_the_key() -> None:
    with pytest.raises(UserError, match=r"compress\.candidates: unknown candidate 'zip'"):
        load_config(None, ["compress.candidates=['none', 'zip']"])
    with pytest.raises(UserError, match=r"compress\.hysteresis"):
        load_config(None, ["compress.hysteresis=1.0"])


def test_run_logs_choices_and_resumes_to_the_same_run(tmp_path: Path) -> None:
    # Arrange: this model's own size on a 0.8 Mbit/s link, no hysteresis: fp16 and PowerSGD
    # score alike, so the pick follows each step's modelled wait + compute
    over = ["clock.emulate_params=default", "clock.bandwidth_bps=8e5", "compress.hysteresis=0"]
    cfg = load_config(None, [*SMALL, *over])
    # Act: a run straight through; an engine stopped after 6 steps and one resumed from its state
    runner.run(cfg, tmp_path / "a")
    first = build.engine(cfg)
    head = [first.step().choice for _ in range(6)]
    state = first.state_dict()
    second = build.engine(cfg)
    second.load_state_dict(state)
    tail = [second.step().choice for _ in range(6)]
    # Assert
    rows = [json.loads(x) for x in (tmp_path / "a" / "steps.jsonl").read_text().splitlines()]
    choices = [r["choice"] for r in rows]
    assert set(choices) <= {"none", "fp16", "topk:0.1", "powersgd:4"}
    assert len(set(choices)) >= 2, choices
    assert head + tail == choices
    a = torch.load(tmp_path / "a" / "model.pt")
    for name, value in second.model.state_dict().items():
        assert torch.equal(a[name], value), name


def test_time_aware_builds_one_exchange_even_with_a_dense_compressor() -> None:
    cfg = load_config(None, [*SMALL, "compress.name=none"])
    eng = build.engine(cfg)
    assert isinstance(eng.exchange, Exchange)
    assert eng.exchange.levels[0].name == "identity"
