"""Data injection: exact counts, no self-injection, layout, determinism, accounting, plot."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from scadles.data.injection import (
    INJECTIONS,
    ClassPoolInjection,
    Injected,
    NoInjection,
    PeerInjection,
    exposure,
)
from scadles.errors import UserError
from scadles.report.labels import plot_label_distribution

RANGE = 1000  # device d's own rows are dataset indices [d*RANGE, d*RANGE + b_d)


def union(b: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build a device-major union batch whose rows reveal their device: idx // RANGE."""
    bt = torch.tensor(b, dtype=torch.int64)
    idx = torch.cat(
        [d * RANGE + torch.randperm(n, generator=gen(d)) for d, n in enumerate(b)]
    )  # (N,)
    seg = torch.arange(len(b)).repeat_interleave(bt)  # (N,)
    return idx, seg, bt


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def split(out: Injected, b: torch.Tensor) -> list[tuple[list[int], list[int]]]:
    """Per device: (own rows, received rows) read back from the output layout."""
    starts = (torch.cumsum(out.b, 0) - out.b).tolist()
    return [
        (
            out.idx[s : s + int(b[d])].tolist(),
            out.idx[s + int(b[d]) : s + int(out.b[d])].tolist(),
        )
        for d, s in enumerate(starts)
    ]


def check_layout(out: Injected, idx: torch.Tensor, b: torch.Tensor) -> None:
    """Device-major, sizes consistent, own rows first in their original order."""
    k = b.numel()
    assert out.b.dtype == out.received.dtype == out.sent.dtype == torch.int64
    assert int(out.b.sum()) == out.idx.numel() == out.seg.numel()
    assert torch.equal(out.seg, torch.arange(k).repeat_interleave(out.b))
    assert torch.equal(out.b, b + out.received)
    old = (torch.cumsum(b, 0) - b).tolist()
    for d, (own, _) in enumerate(split(out, b)):
        assert own == idx[old[d] : old[d] + int(b[d])].tolist()


# --- peers ------------------------------------------------------------------------------------


def test_peers_paper_worked_sizes() -> None:
    """K=10, alpha=0.25 -> m=3 peers; b=64, beta=0.25 -> 16 each -> 48 received, b'=112."""
    idx, seg, b = union([64] * 10)
    out = PeerInjection(0.25, 0.25)(idx, seg, b, gen(0))
    check_layout(out, idx, b)
    assert out.received.tolist() == [48] * 10
    assert out.b.tolist() == [112] * 10
    assert int(out.sent.sum()) == 480


@pytest.mark.parametrize(
    ("alpha", "beta", "b"),
    [(0.25, 0.25, [64] * 10), (0.5, 0.3, [5, 0, 17, 40, 9, 1, 33]), (1.0, 1.0, [3, 7, 2]),
     (0.05, 0.5, [10, 20, 30, 40]), (0.9, 0.1, [0, 12, 0, 31, 8])],
)  # fmt: skip
def test_peers_oracle(alpha: float, beta: float, b: list[int]) -> None:
    """Each receiver gets exactly s_j distinct rows of j's own batch from <= m peers != self."""
    idx, seg, bt = union(b)
    k = len(b)
    m = min(math.ceil(alpha * k), k - 1)
    s = [int(beta * n) for n in b]  # the authors' int(beta * b)
    out = PeerInjection(alpha, beta)(idx, seg, bt, gen(3))
    check_layout(out, idx, bt)
    sent = [0] * k
    for d, (_, recv) in enumerate(split(out, bt)):
        by_src = Counter(r // RANGE for r in recv)
        assert d not in by_src  # never itself
        assert len(set(recv)) == len(recv)  # without replacement within and across peers
        own_sets = [set(range(j * RANGE, j * RANGE + b[j])) for j in range(k)]
        assert all(r in own_sets[r // RANGE] for r in recv)  # only peers' own rows
        for j, n in by_src.items():
            assert n == s[j]
            sent[j] += n
        # the m peers are not visible when s_j == 0, so bound the count instead
        assert len(by_src) <= m
    assert out.sent.tolist() == sent
    assert int(out.sent.sum()) == int(out.received.sum())


def test_peers_picks_exactly_m_distinct_peers() -> None:
    """With every s_j > 0, the sources seen by each receiver are exactly m distinct peers."""
    idx, seg, b = union([8, 9, 10, 11, 12, 13])
    for seed in range(20):
        out = PeerInjection(0.5, 0.5)(idx, seg, b, gen(seed))
        for d, (_, recv) in enumerate(split(out, b)):
            srcs = {r // RANGE for r in recv}
            assert len(srcs) == 3 and d not in srcs
            assert out.received[d] == sum(b[j] // 2 for j in srcs)


def test_peers_uniform_choice() -> None:
    """Peer and row choice are uniform: frequencies within ~4 sigma of m/(K-1) and s/b."""
    idx, seg, b = union([4, 4, 4, 4, 4])
    inj = PeerInjection(0.4, 0.5)  # m = 2 of 4 others, s = 2 of 4 rows
    g = gen(11)
    pairs = torch.zeros(5, 5, dtype=torch.float64)
    rows = torch.zeros(5 * RANGE, dtype=torch.float64)
    steps = 1000
    for _ in range(steps):
        out = inj(idx, seg, b, g)
        recv = torch.cat([torch.arange(s + 4, s + 8) for s in range(0, 40, 8)])  # b' = 8 each
        src = out.idx[recv] // RANGE  # (20,)
        pairs.index_put_((out.seg[recv], src), torch.full((20,), 0.5, dtype=torch.float64), True)
        rows += torch.bincount(out.idx[recv], minlength=5 * RANGE).double()
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.all(pairs.diagonal() == 0)  # 2 rows per chosen (receiver, peer) pair
    assert torch.allclose(
        pairs[off] / steps, torch.full((20,), 0.5, dtype=torch.float64), atol=0.07
    )
    # row r of device 0: each of 4 receivers picks device 0 w.p. 1/2, then row r w.p. 1/2 -> 1.0
    freq = rows[:4] / steps
    assert torch.allclose(freq, torch.ones(4, dtype=torch.float64), atol=0.12)


def test_peers_single_device_and_empty() -> None:
    """One device has no peers; an all-empty step injects nothing."""
    idx, seg, b = union([7])
    out = PeerInjection(1.0, 1.0)(idx, seg, b, gen(0))
    assert torch.equal(out.idx, idx) and out.received.tolist() == [0]
    idx, seg, b = union([0, 0, 0])
    out = PeerInjection(1.0, 1.0)(idx, seg, b, gen(0))
    assert out.idx.numel() == 0 and out.sent.tolist() == [0, 0, 0]


def test_empty_devices_send_nothing() -> None:
    """A device with b_j = 0 sends nothing but still receives from others."""
    idx, seg, b = union([0, 20, 0, 20])
    out = PeerInjection(1.0, 0.5)(idx, seg, b, gen(5))
    assert out.sent.tolist() == [0, 30, 0, 30]  # 10 rows to each of the 3 others
    assert out.received.tolist() == [20, 10, 20, 10]
    check_layout(out, idx, b)


# --- class pool --------------------------------------------------------------------------------


def pool_setup(k: int, c: int, per: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label blocks: device t owns labels [t*C/K, (t+1)*C/K); `per` samples of each class."""
    labels = torch.arange(c).repeat_interleave(per)[
        torch.randperm(c * per, generator=gen(c))
    ]  # (N,)
    lpd = c // k
    owner = labels // lpd  # (N,)
    own = torch.zeros(k, c, dtype=torch.bool)
    for t in range(k):
        own[t, t * lpd : (t + 1) * lpd] = True
    return labels, owner, own


def test_class_pool_worked_sizes() -> None:
    """C=10, alpha=0.25 -> m=3 classes; b=64, beta=0.25 -> 16 each -> 48 received, b'=112."""
    labels, owner, own = pool_setup(10, 10, 50)
    idx, seg, b = union([64] * 10)  # the batch indices need not match the pool for counting
    out = ClassPoolInjection(0.25, 0.25, labels, 10, owner, own)(idx, seg, b, gen(0))
    check_layout(out, idx, b)
    assert out.received.tolist() == [48] * 10 and out.b.tolist() == [112] * 10
    assert int(out.sent.sum()) == 480


def test_class_pool_oracle() -> None:
    """Received samples: foreign labels, foreign owners, m draws of s_i per class, sent by owner."""
    k, c = 4, 8
    labels, owner, own = pool_setup(k, c, 30)
    b = [10, 0, 23, 7]
    idx, seg, bt = union(b)
    inj = ClassPoolInjection(0.5, 0.4, labels, c, owner, own)  # m = 4 draws, s_i = int(0.4 b_i)
    out = inj(idx, seg, bt, gen(2))
    check_layout(out, idx, bt)
    sent = [0] * k
    for d, (_, recv) in enumerate(split(out, bt)):
        assert len(recv) == 4 * int(0.4 * b[d])
        by_cls = Counter(int(labels[r]) for r in recv)
        assert all(not own[d, cl] for cl in by_cls)
        assert all(n % int(0.4 * b[d]) == 0 for n in by_cls.values())  # whole draws per class
        for r in recv:
            assert int(owner[r]) != d
            sent[int(owner[r])] += 1
    assert out.sent.tolist() == sent
    assert int(out.sent.sum()) == int(out.received.sum())


def test_class_pool_excludes_own_samples_when_own_disagrees() -> None:
    """Odd partition: `own` says device 0 lacks class 1 but it holds some; it never gets them."""
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
    owner = torch.tensor([0, 0, 0, 1, 0, 1, 1, 1])  # device 0 holds two samples of class 1
    own = torch.tensor([[True, False, True], [False, True, True]])
    inj = ClassPoolInjection(1.0, 1.0, labels, 3, owner, own)
    idx, seg, b = union([6, 4])
    for seed in range(50):
        out = inj(idx, seg, b, gen(seed))
        _, recv0 = split(out, b)[0]
        assert recv0 and all(r in (3, 5) for r in recv0)  # class-1 samples of device 1 only
        _, recv1 = split(out, b)[1]
        assert all(int(owner[r]) != 1 and int(labels[r]) == 0 for r in recv1)


def test_class_pool_skips_classes_without_foreign_samples() -> None:
    """Classes that are empty or held only by the receiver are never drawn."""
    labels = torch.tensor([0, 0, 1, 1, 3])  # class 2 has no samples at all
    owner = torch.tensor([0, 0, 0, 0, 1])  # device 0 alone holds class 1 though `own` omits it
    own = torch.tensor([[True, False, False, False], [False, False, False, True]])
    inj = ClassPoolInjection(1.0, 1.0, labels, 4, owner, own)
    idx, seg, b = union([3, 2])
    for seed in range(20):
        out = inj(idx, seg, b, gen(seed))
        assert out.received.tolist() == [4 * 3, 4 * 2]
        assert set(out.idx[3 : 3 + 12].tolist()) == {4}  # device 0 can only get class 3
        assert set(labels[out.idx[3 + 12 + 2 :]].tolist()) <= {0, 1}


def test_class_pool_covers_pool_uniformly() -> None:
    """Draws reach every foreign sample of the class about equally often (with replacement)."""
    labels = torch.tensor([0] * 4 + [1] * 6)
    owner = torch.tensor([0] * 4 + [1, 2, 1, 2, 1, 2])
    own = torch.tensor([[True, False], [False, True], [False, True]])
    inj = ClassPoolInjection(0.5, 1.0, labels, 2, owner, own)  # m = 1
    idx, seg, b = union([10, 0, 0])
    freq = torch.zeros(10)
    out = inj(idx, seg, b, gen(9))
    for seed in range(300):
        out = inj(idx, seg, b, gen(seed))
        freq += torch.bincount(out.idx[10:], minlength=10).float()
    assert freq[:4].sum() == 0
    assert torch.allclose(freq[4:] / freq.sum(), torch.full((6,), 1 / 6), atol=0.02)
    assert out.sent.tolist()[0] == 0 and sum(out.sent.tolist()) == 10


def test_class_pool_full_owner_receives_nothing_and_unowned_samples() -> None:
    """A device owning every class gets nothing; owner -1 samples count as sent by no one."""
    labels = torch.tensor([0, 0, 1, 1])
    owner = torch.tensor([0, -1, 1, -1])
    own = torch.tensor([[True, True], [False, True]])
    inj = ClassPoolInjection(1.0, 1.0, labels, 2, owner, own)
    idx, seg, b = union([5, 5])
    out = inj(idx, seg, b, gen(1))
    assert out.received.tolist() == [0, 10]
    assert set(out.idx[10:].tolist()) <= {0, 1}
    assert int(out.sent.sum()) == int((owner[out.idx[10:]] >= 0).sum())


# --- shared contracts -------------------------------------------------------------------------


def make(mode: str) -> PeerInjection | ClassPoolInjection | NoInjection:
    if mode == "peers":
        return PeerInjection(0.3, 0.5)
    if mode == "class_pool":
        labels, owner, own = pool_setup(5, 10, 20)
        return ClassPoolInjection(0.3, 0.5, labels, 10, owner, own)
    return NoInjection()


@pytest.mark.parametrize("mode", INJECTIONS)
def test_seeded_determinism(mode: str) -> None:
    """Same seed -> identical output; a different seed -> different rows (unless 'none')."""
    idx, seg, b = union([12, 30, 5, 0, 21])
    inj = make(mode)
    a, a2, c = inj(idx, seg, b, gen(7)), inj(idx, seg, b, gen(7)), inj(idx, seg, b, gen(8))
    for f in ("idx", "seg", "b", "received", "sent"):
        assert torch.equal(getattr(a, f), getattr(a2, f))
    assert torch.equal(a.idx, c.idx) == (mode == "none")
    check_layout(a, idx, b)


def test_none_passes_through() -> None:
    idx, seg, b = union([3, 4])
    out = NoInjection()(idx, seg, b, gen(0))
    assert torch.equal(out.idx, idx) and out.received.tolist() == out.sent.tolist() == [0, 0]


def test_exposure() -> None:
    sent = torch.tensor([10, 0, 30, 5])
    own = torch.tensor([40, 0, 20, 0])
    assert exposure(sent, own).tolist() == [0.25, 0.0, 1.5, 0.0]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_validation(bad: float) -> None:
    for name, args in (("alpha", (bad, 0.5)), ("beta", (0.5, bad))):
        with pytest.raises(UserError, match=rf"^inject\.{name} must be in \(0, 1\], got"):
            PeerInjection(*args)
        labels, owner, own = pool_setup(2, 4, 3)
        with pytest.raises(UserError, match=rf"^inject\.{name} must be in \(0, 1\]"):
            ClassPoolInjection(*args, labels, 4, owner, own)


def test_pool_table_validation() -> None:
    labels, owner, own = pool_setup(2, 4, 3)
    with pytest.raises(UserError, match="labels must lie"):
        ClassPoolInjection(0.5, 0.5, labels + 1, 4, owner, own)
    with pytest.raises(UserError, match="owner must lie"):
        ClassPoolInjection(0.5, 0.5, labels, 4, owner + 5, own)
    with pytest.raises(UserError, match="own must be"):
        ClassPoolInjection(0.5, 0.5, labels, 4, owner, own[:, :3])


def test_plot_label_distribution(tmp_path: Path) -> None:
    counts = torch.randint(0, 50, (6, 25), generator=gen(0))
    path = plot_label_distribution(counts, tmp_path / "sub" / "labels.png")
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="label counts"):
        plot_label_distribution(torch.zeros(3), tmp_path / "x.png")


def test_plot_label_distribution_many_devices_is_a_heatmap(tmp_path: Path) -> None:
    counts = torch.randint(0, 5, (1000, 10), generator=gen(1))
    t0 = time.perf_counter()
    path = plot_label_distribution(counts, tmp_path / "labels.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert time.perf_counter() - t0 < 10.0  # 1,000 stacked bars took ~20 s
