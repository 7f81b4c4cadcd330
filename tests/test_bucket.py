"""TokenBucket and ThrottledCollective: the bucket math on a fake clock, one real-time check."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scadles.comm import LocalCollective
from scadles.errors import UserError
from scadles.live.bucket import ThrottledCollective, TokenBucket, sent_bytes


class FakeTime:
    """A clock that only moves when someone sleeps on it (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s >= 0
        self.now += s


def _bucket(rate: float, burst: float) -> tuple[TokenBucket, FakeTime]:
    t = FakeTime()
    return TokenBucket(rate, burst, clock=t.clock, sleep=t.sleep), t


def test_takes_within_the_burst_do_not_wait() -> None:
    b, t = _bucket(100.0, 500.0)
    assert [b.take(n) for n in (200, 300)] == [0.0, 0.0]
    assert t.now == 0.0
    assert b.take(50) == pytest.approx(0.5)  # 50 bytes of debt at 100 B/s
    assert t.now == pytest.approx(0.5)


def test_request_larger_than_the_burst_goes_into_debt() -> None:
    b, t = _bucket(1000.0, 100.0)
    assert b.take(1100) == pytest.approx(1.0)  # 100 from the burst, 1000 at 1000 B/s
    assert b.take(500) == pytest.approx(0.5)  # the bucket was empty when the sleep ended
    assert t.now == pytest.approx(1.5)


def test_idle_time_refills_only_up_to_the_burst() -> None:
    b, t = _bucket(10.0, 40.0)
    b.take(40)
    t.now += 100.0  # 1000 bytes' worth of idle, capped at 40
    assert b.take(40) == 0.0
    assert b.take(20) == pytest.approx(2.0)


@given(st.lists(st.floats(1.0, 5000.0), min_size=1, max_size=30), st.floats(0.0, 2000.0))
@settings(max_examples=100, deadline=None)
def test_back_to_back_takes_last_exactly_what_the_rate_needs(
    sizes: list[float], burst: float
) -> None:
    b, t = _bucket(250.0, burst)
    slept = sum(b.take(n) for n in sizes)
    oracle = max(0.0, (sum(sizes) - burst) / 250.0)  # full bucket, then the rate
    assert t.now == pytest.approx(oracle, rel=1e-9, abs=1e-9)
    assert slept == pytest.approx(oracle, rel=1e-9, abs=1e-9)


@given(
    st.lists(st.tuples(st.floats(0.0, 3.0), st.floats(1.0, 800.0)), min_size=1, max_size=25),
    st.floats(0.0, 500.0),
)
@settings(max_examples=100, deadline=None)
def test_no_window_gets_more_than_burst_plus_rate_times_length(
    reqs: list[tuple[float, float]], burst: float
) -> None:
    rate = 200.0
    b, t = _bucket(rate, burst)
    calls: list[float] = []  # when take i was called
    ends: list[float] = []  # when it returned
    for gap, n in reqs:
        t.now += gap
        calls.append(t.now)
        b.take(n)
        ends.append(t.now)
    sizes = [n for _, n in reqs]
    for i in range(len(reqs)):
        for j in range(i, len(reqs)):
            assert sum(sizes[i : j + 1]) <= burst + rate * (ends[j] - calls[i]) + 1e-6


def test_bad_rates_are_refused() -> None:
    with pytest.raises(UserError, match="rate"):
        TokenBucket(0.0, 10.0)
    with pytest.raises(UserError, match="burst"):
        TokenBucket(10.0, -1.0)


def test_real_time_sleep() -> None:
    b = TokenBucket(1_000_000.0, 0.0)
    t0 = time.monotonic()
    slept = b.take(100_000)
    took = time.monotonic() - t0
    assert slept == pytest.approx(0.1, rel=0.05)
    assert 0.09 <= took <= 0.5


class FakeCollective:
    """Rank 1 of 4; every operation takes 0.5 s on the fake clock and records its input."""

    rank, world = 1, 4

    def __init__(self, t: FakeTime) -> None:
        self.t = t
        self.calls: list[str] = []

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        self.t.now += 0.5
        self.calls.append("all_reduce")
        return x * 4

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        self.t.now += 0.5
        self.calls.append("all_gather")
        return x[None].expand(4, *x.shape)

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        self.t.now += 0.5
        self.calls.append(f"broadcast{src}")
        return x + src


def test_sent_bytes_follow_the_ring_formulas() -> None:
    assert sent_bytes("all_reduce", 400, 4) == 600.0  # 2 (W-1)/W n
    assert sent_bytes("all_gather", 400, 4) == 1200.0  # (W-1) n
    assert sent_bytes("broadcast", 400, 4, is_source=True) == 400.0
    assert sent_bytes("broadcast", 400, 4) == 0.0
    assert sent_bytes("all_reduce", 400, 1) == 0.0


def test_throttled_collective_waits_for_each_calls_bytes_and_times_it() -> None:
    t = FakeTime()
    inner = FakeCollective(t)
    coll = ThrottledCollective(inner, TokenBucket(1000.0, 0.0, t.clock, t.sleep), clock=t.clock)
    x = torch.ones(100)  # 400 bytes
    assert (coll.rank, coll.world) == (1, 4)
    assert torch.equal(coll.all_reduce(x), x * 4)  # 600 bytes: 0.6 s + 0.5 s
    assert coll.reset() == pytest.approx((1.1, 0.6))
    assert coll.reset() == (0.0, 0.0)
    assert torch.equal(coll.all_gather(x), x[None].expand(4, 100))  # 1200 bytes
    assert torch.equal(coll.broadcast(x, src=1), x + 1)  # this rank sends 400 bytes
    assert torch.equal(coll.broadcast(x, src=0), x)  # receives only
    comm, throttle = coll.reset()
    assert throttle == pytest.approx(1.2 + 0.4)
    assert comm == pytest.approx(1.6 + 3 * 0.5)
    assert inner.calls == ["all_reduce", "all_gather", "broadcast1", "broadcast0"]
    assert coll.bytes_sent == pytest.approx(600 + 1200 + 400)


def test_single_rank_and_no_bucket_are_never_throttled() -> None:
    t = FakeTime()
    local = ThrottledCollective(LocalCollective(), TokenBucket(1.0, 0.0, t.clock, t.sleep))
    x = torch.arange(6.0)
    assert torch.equal(local.all_reduce(x), x)
    assert local.all_gather(x).shape == (1, 6)
    assert local.reset()[1] == 0.0 and t.now == 0.0
    free = ThrottledCollective(FakeCollective(t), None, clock=t.clock)
    free.all_reduce(x)
    assert free.reset() == pytest.approx((0.5, 0.0))
    assert free.bytes_sent == pytest.approx(2 * 3 / 4 * 24)
