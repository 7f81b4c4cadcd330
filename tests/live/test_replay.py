"""ReplaySource: the seeded replay order, the schedule's pace, resume from positions, poll waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from scadles.data.rates import RateSchedule
from scadles.live.replay import ReplaySource, replay_generator
from scadles.live.source import Delivery

SHAPE = (3,)
DEADLINE_S = 10.0


class FakeClock:
    """A clock the test sets by hand (the producer threads read it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def set(self, t: float) -> None:
        with self._lock:
            self.now = t


def _parts(sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return partitions whose row j of device d holds 100 d + j everywhere, label j % 5."""
    return [
        (
            (100.0 * d + torch.arange(n, dtype=torch.float32))[:, None].expand(n, *SHAPE).clone(),
            torch.arange(n) % 5,
        )
        for d, n in enumerate(sizes)
    ]


def _oracle(seed: int, device: int, n: int, total: int) -> list[int]:
    """Return the first ``total`` rows of a device's replay order: one fresh shuffle per pass."""
    gen = replay_generator(seed, device)
    rows: list[int] = []
    while len(rows) < total:
        rows += torch.randperm(n, generator=gen).tolist()
    return rows[:total]


def _collect(src: ReplaySource, want: list[int]) -> list[list[Delivery]]:
    """Poll until device d got ``want[d]`` samples in total."""
    got: list[list[Delivery]] = [[] for _ in want]
    deadline = time.monotonic() + DEADLINE_S
    while any(sum(len(x.ids) for x in g) < w for g, w in zip(got, want, strict=True)):
        assert time.monotonic() < deadline, "timed out"
        left = [w - sum(len(x.ids) for x in g) for g, w in zip(got, want, strict=True)]
        for d, delivery in enumerate(src.poll(left, timeout_s=0.1)):
            got[d].append(delivery)
    return got


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    yield FakeClock()


def test_samples_follow_the_seeded_order_reshuffled_each_pass(clock: FakeClock) -> None:
    sizes = [7, 4]
    parts = _parts(sizes)
    src = ReplaySource(parts, RateSchedule.constant(torch.tensor([10.0, 10.0])), 3, ["a", "b"],
                       clock=clock)  # fmt: skip
    try:
        clock.set(100.0)  # 1001 samples due per device
        got = _collect(src, [17, 10])
    finally:
        src.close()
    for d, deliveries in enumerate(got):
        rows = [int(v) - 100 * d for dl in deliveries for v in dl.x[:, 0].tolist()]
        assert rows == _oracle(3, d, sizes[d], len(rows))
        ids = [i for dl in deliveries for i in dl.ids]
        assert ids == [str(i) for i in range(len(rows))]
        y = torch.cat([dl.y for dl in deliveries])
        assert torch.equal(y, parts[d][1][rows])
        assert all(dl.skipped == 0 and dl.x.shape[1:] == SHAPE for dl in deliveries)


def test_emission_follows_a_time_varying_schedule(clock: FakeClock) -> None:
    # device 0: 10/s for 1 s, then 100/s; device 1: 4/s throughout
    sched = RateSchedule.piecewise(
        torch.tensor([0.0, 1.0]), torch.tensor([[10.0, 100.0], [4.0, 4.0]])
    )
    src = ReplaySource(_parts([50, 50]), sched, 0, ["a", "b"], clock=clock)
    try:
        for t, want in [(0.0, [1, 1]), (0.55, [6, 3]), (1.0, [11, 5]), (1.5, [61, 7])]:
            clock.set(t)  # sample j is due when Lambda(t) >= j: floor(Lambda(t)) + 1 by t
            deadline = time.monotonic() + DEADLINE_S
            while [src.produced(d) for d in range(2)] != want:
                assert time.monotonic() < deadline, f"t={t}: {[src.produced(d) for d in (0, 1)]}"
                time.sleep(0.01)
            time.sleep(0.1)  # and not more
            assert [src.broker_count(d) for d in range(2)] == want
    finally:
        src.close()


def test_schedule_continues_from_start_s(clock: FakeClock) -> None:
    sched = RateSchedule.piecewise(torch.tensor([0.0, 1.0]), torch.tensor([[10.0, 100.0]]))
    src = ReplaySource(_parts([50]), sched, 0, ["a"], start_s=1.0, clock=clock)
    try:
        clock.set(0.1)
        deadline = time.monotonic() + DEADLINE_S
        while src.produced(0) < 11:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        assert src.produced(0) == 11  # at 100/s from the start, not 10/s
    finally:
        src.close()


def test_positions_resume_the_same_order(clock: FakeClock) -> None:
    sizes = [5, 6]
    parts = _parts(sizes)
    rates = RateSchedule.constant(torch.tensor([50.0, 50.0]))
    first = ReplaySource(parts, rates, 9, ["a", "b"], clock=clock)
    clock.set(10.0)
    head = _collect(first, [8, 3])
    saved = first.positions()
    first.close()
    assert saved == {"a": 8, "b": 3}
    clock.set(0.0)
    second = ReplaySource(parts, rates, 9, ["a", "b"], positions=saved, clock=clock)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while [second.produced(d) for d in range(2)] != [9, 4]:  # the next sample at once
            assert time.monotonic() < deadline
            time.sleep(0.01)
        clock.set(10.0)
        tail = _collect(second, [9, 12])
        assert second.positions() == {"a": 17, "b": 15}
    finally:
        second.close()
    for d in range(2):
        rows = [int(v) - 100 * d for dl in head[d] + tail[d] for v in dl.x[:, 0].tolist()]
        assert rows == _oracle(9, d, sizes[d], len(rows))
        ids = [i for dl in head[d] + tail[d] for i in dl.ids]
        assert ids == [str(i) for i in range(len(rows))]


def test_global_device_ids_pick_rows_and_seeds(clock: FakeClock) -> None:
    parts = _parts([6, 6, 6])
    rates = RateSchedule.constant(torch.tensor([1.0, 2.0, 3.0]))
    src = ReplaySource(parts[2:], rates, 4, ["c"], devices=[2], clock=clock)
    try:
        clock.set(2.0)  # rate 3/s: floor(6) + 1 = 7 samples
        got = _collect(src, [7])[0]
        time.sleep(0.1)
        assert src.produced(0) == 7
    finally:
        src.close()
    rows = [int(v) - 200 for dl in got for v in dl.x[:, 0].tolist()]
    assert rows == _oracle(4, 2, 6, 7)


def test_poll_waits_up_to_the_timeout_and_respects_want(clock: FakeClock) -> None:
    src = ReplaySource(_parts([4, 4]), RateSchedule.constant(torch.tensor([1.0, 0.5])), 0,
                       ["a", "b"], clock=clock)  # fmt: skip
    try:
        first = _collect(src, [1, 0])  # sample 0 of each device is due at t = 0
        assert [sum(len(x.ids) for x in g) for g in first] == [1, 0]
        t0 = time.monotonic()
        out = src.poll([5, 0], timeout_s=0.3)  # device 1 holds one sample, but is not asked
        assert time.monotonic() - t0 >= 0.25
        assert [len(d.ids) for d in out] == [0, 0] and out[0].x.shape == (0, *SHAPE)
        timer = threading.Timer(0.1, clock.set, args=(1.0,))
        timer.start()
        t0 = time.monotonic()
        out = src.poll([5, 5], timeout_s=0.0)
        assert [len(d.ids) for d in out] == [0, 1]  # no wait: what is there
        out = src.poll([5, 5], timeout_s=5.0)
        assert time.monotonic() - t0 < 2.0 and [len(d.ids) for d in out] == [1, 0]
        assert src.positions() == {"a": 2, "b": 1} and src.skipped() == {}
        timer.join()
    finally:
        src.close()


def test_real_clock_pace_and_close_stops_the_threads() -> None:
    src = ReplaySource(_parts([30]), RateSchedule.constant(torch.tensor([100.0])), 0, ["a"])
    time.sleep(0.3)
    n = src.produced(0)
    src.close()
    assert 25 <= n <= 40  # ~31 on time; a loaded machine may lag a little
    assert not any(t.is_alive() for t in threading.enumerate() if t.name == "replay-a")
    time.sleep(0.1)
    assert src.produced(0) == n


def test_bad_arguments_are_refused() -> None:
    rates = RateSchedule.constant(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="not in"):
        ReplaySource(_parts([3]), rates, 0, ["a"], positions={"b": 1})
    with pytest.raises(ValueError, match="outside"):
        ReplaySource(_parts([3]), rates, 0, ["a"], devices=[1])
    with pytest.raises(ValueError, match="one stream"):
        ReplaySource(_parts([3]), rates, 0, ["a", "b"])
    with pytest.raises(ValueError, match="n >= 1"):
        ReplaySource([(torch.zeros(0, 3), torch.zeros(0))], rates, 0, ["a"])
