"""Stream rates, arrival processes and replay order."""

from __future__ import annotations

import math

import pytest
import torch

from scadles.data.rates import RateSchedule, distribution_rates, preset_rates, read_trace
from scadles.data.streams import Arrivals, ReplayOrder
from scadles.errors import UserError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_presets_match_paper_moments() -> None:
    r = preset_rates("normal-S1", 1000)
    assert abs(float(r.mean()) - 64) < 1.0
    assert abs(float(r.std()) - 24) < 1.5
    u = preset_rates("uniform-S2", 1000)
    assert abs(float(u.mean()) - 300) < 2.0
    assert abs(float(u.std()) - 112) < 3.0
    assert bool((preset_rates("uniform-S1", 16) >= 8).all())


def test_preset_is_fixed_and_shuffled() -> None:
    a, b = preset_rates("normal-S1", 16), preset_rates("normal-S1", 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.sort(a).values)


def test_unknown_distribution() -> None:
    with pytest.raises(UserError, match="dist"):
        distribution_rates("cauchy", 1, 1, 3)


def test_cumulative_and_inverse_piecewise() -> None:
    s = RateSchedule.piecewise(torch.tensor([0.0, 10.0]), torch.tensor([[2.0, 4.0], [1.0, 1.0]]))
    assert torch.allclose(s.cumulative(5.0), torch.tensor([10.0, 5.0], dtype=torch.float64))
    assert torch.allclose(s.cumulative(12.0), torch.tensor([28.0, 12.0], dtype=torch.float64))
    lam = torch.tensor([28.0, 12.0], dtype=torch.float64)
    assert torch.allclose(s.inverse(lam), torch.tensor([12.0, 12.0], dtype=torch.float64))
    assert torch.equal(s.rate_at(11.0), torch.tensor([4.0, 1.0], dtype=torch.float64))


def test_scaled_schedule() -> None:
    s = RateSchedule.constant(torch.tensor([10.0, 20.0])).scaled([5.0], [2.0])
    assert torch.equal(s.rate_at(1.0), torch.tensor([10.0, 20.0], dtype=torch.float64))
    assert torch.equal(s.rate_at(6.0), torch.tensor([20.0, 40.0], dtype=torch.float64))


def test_deterministic_arrivals_count_rate_times_time() -> None:
    a = Arrivals.start(RateSchedule.constant(torch.tensor([10.0, 3.5])), "deterministic", gen())
    total = torch.zeros(2, dtype=torch.int64)
    for t in torch.linspace(0.1, 100.0, 37).tolist():
        total += a.advance(t, gen())
    assert total.tolist() == [1000, 350]


def test_reserve_then_advance_is_consistent() -> None:
    a = Arrivals.start(RateSchedule.constant(torch.tensor([10.0, 10.0])), "deterministic", gen())
    when = a.reserve(torch.tensor([5, 0]), 0.0, gen())
    assert torch.allclose(when, torch.tensor([0.5, 0.0], dtype=torch.float64))
    more = a.advance(1.0, gen())
    assert more.tolist() == [5, 10]  # the five reserved are not counted twice


def test_poisson_mean_and_variance() -> None:
    k = 2000
    a = Arrivals.start(RateSchedule.constant(torch.full((k,), 20.0)), "poisson", gen(1))
    n = a.advance(5.0, gen(2)).double()  # Poisson(100) per device
    assert abs(float(n.mean()) - 100.0) < 4 * math.sqrt(100 / k) * 3
    assert abs(float(n.var()) - 100.0) < 15.0


def test_poisson_reserve_waits_gamma() -> None:
    k = 4000
    a = Arrivals.start(RateSchedule.constant(torch.full((k,), 10.0)), "poisson", gen(3))
    when = a.reserve(torch.full((k,), 20), 0.0, gen(4))  # Gamma(20, 1/10): mean 2 s
    assert abs(float(when.mean()) - 2.0) < 0.05
    assert int(a.total.sum()) == 20 * k


def test_trace_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "t.csv"
    p.write_text("time_s,r0,r1\n0,10,20\n5,1,2\n")
    s = read_trace(str(p), 2)
    assert torch.equal(s.rate_at(6.0), torch.tensor([1.0, 2.0], dtype=torch.float64))
    p.write_text("time_s,r\n0,10\n5,-1\n")
    with pytest.raises(UserError, match="row 3"):
        read_trace(str(p), 2)
    with pytest.raises(UserError, match="not found"):
        read_trace(str(tmp_path / "none.csv"), 2)


def test_replay_is_a_permutation_per_pass_and_reshuffles() -> None:
    parts = [torch.arange(0, 7), torch.arange(7, 10)]
    r = ReplayOrder(parts, seed=5)
    idx, dev = r.indices(torch.tensor([0, 0]), torch.tensor([14, 6]))
    d0 = idx[dev == 0]
    assert sorted(d0[:7].tolist()) == list(range(7))
    assert sorted(d0[7:].tolist()) == list(range(7))
    assert d0[:7].tolist() != d0[7:].tolist()  # reshuffled each pass
    assert sorted(idx[dev == 1][:3].tolist()) == [7, 8, 9]


def test_replay_is_stateless_in_result() -> None:
    parts = [torch.arange(0, 50), torch.arange(50, 60)]
    a = ReplayOrder(parts, seed=1)
    whole, _ = a.indices(torch.tensor([0, 0]), torch.tensor([120, 40]))
    b = ReplayOrder(parts, seed=1)
    pieces = []
    start = torch.tensor([0, 0])
    for n in ([30, 5], [45, 20], [45, 15]):
        nn = torch.tensor(n)
        i, d = b.indices(start, nn)
        pieces.append((i, d))
        start = start + nn
    got0 = torch.cat([i[d == 0] for i, d in pieces])
    got1 = torch.cat([i[d == 1] for i, d in pieces])
    assert torch.equal(got0, whole[:120])
    assert torch.equal(got1, whole[120:])


def _replay_oracle(parts: list[torch.Tensor], seed: int, dev: int, m: int) -> int:
    """The m-th arrival of device dev by the definition: sort positions by their hash key."""
    from scadles.data.streams import _mix

    size = len(parts[dev])
    pas, pos = divmod(m, size)
    word = _mix(_mix(_mix(torch.tensor(seed) + torch.tensor([dev])) + pas) + 0x9E3779B9)
    keys = _mix(word + torch.arange(size))
    return int(parts[dev][torch.argsort(keys)[pos]])


def _check_replay(sizes: list[int], batches: list[list[int]]) -> None:
    """Replay batches of sizes (one list per step) and compare every index with the oracle."""
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(sum(sizes), generator=g)
    parts = list(torch.split(perm, sizes))
    r = ReplayOrder(parts, seed=11)
    start = torch.zeros(len(sizes), dtype=torch.int64)
    for step in batches:
        n = torch.tensor(step)
        idx, dev = r.indices(start, n)
        want = [
            _replay_oracle(parts, 11, d, int(start[d]) + j)
            for d in range(len(sizes))
            for j in range(int(n[d]))
        ]
        assert idx.tolist() == want
        assert dev.tolist() == [d for d in range(len(sizes)) for _ in range(int(n[d]))]
        start = start + n


def test_replay_matches_its_definition_over_uneven_partitions_and_passes() -> None:
    g = torch.Generator().manual_seed(1)
    wraps = torch.randint(0, 12, (6, 5), generator=g).tolist()  # across and over several passes
    _check_replay([1, 5, 2, 9, 3], wraps)
    _check_replay([6, 8, 5], [[2, 2, 1]] * 3 + [[0, 3, 1], [1, 0, 0], [4, 4, 4]])  # inside one


def test_replay_state_is_linear_in_samples_plus_devices() -> None:
    # one device of 10,000 samples beside 9,999 of one: no (K, n_max) table
    parts = [torch.arange(10000), *(torch.arange(10000 + i, 10001 + i) for i in range(9999))]
    r = ReplayOrder(parts, seed=1)
    held = sum(t.numel() for t in vars(r).values() if isinstance(t, torch.Tensor))
    assert held < 10 * (20000 + 10000)
    idx, _ = r.indices(torch.zeros(10000, dtype=torch.int64), torch.full((10000,), 3))
    assert (
        idx[:3].unique().numel() == 3
        and idx[3:].tolist() == torch.arange(10000, 19999).repeat_interleave(3).tolist()
    )
