"""Switch policies: signals against per-device loops, scripted EWMA/epoch-mean/Accordion runs."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from scadles.compress.energy import CodeSwitch, ScadlesSwitch
from scadles.compress.switch import AccordionSwitch, Fixed, Switch, topk_count
from scadles.errors import UserError

P = 100  # values per device row; ratio 0.1 keeps k = 10
FLAT_SQUARED = 0.9  # energy lost by Top-10 of 100 equal values
FLAT_UNSQUARED = 1.0 - math.sqrt(0.1)  # norm lost by Top-10 of 100 equal values


def _rows(gen: torch.Generator, k: int = 5, p: int = P) -> Tensor:
    """Random per-device updates (K, P) with uneven scales."""
    return torch.randn(k, p, generator=gen, dtype=torch.float64) * torch.arange(1, k + 1)[:, None]


def _flat(p: int = P) -> Tensor:
    """A row whose values are all equal (Top-k keeps exactly the ratio of its energy)."""
    return torch.full((p,), 0.5, dtype=torch.float64)


def _sparse(nonzeros: int = 10, p: int = P) -> Tensor:
    """A row with exactly `nonzeros` nonzero values (Top-k of that size loses nothing)."""
    row = torch.zeros(p, dtype=torch.float64)
    row[torch.arange(nonzeros) * (p // nonzeros)] = torch.linspace(-3, 3, nonzeros).double() + 0.1
    return row


def _topk_loop(row: Tensor, ratio: float) -> Tensor:
    """Oracle Top-k of one row: keep the k largest magnitudes, zero the rest."""
    k = max(1, int(row.numel() * ratio))
    order = sorted(range(row.numel()), key=lambda j: -abs(float(row[j])))
    out = torch.zeros_like(row)
    for j in order[:k]:
        out[j] = row[j]
    return out


def _layerwise_topk_loop(row: Tensor, layers: tuple[int, ...], ratio: float) -> list[Tensor]:
    """Oracle per-layer Top-k of one row."""
    return [_topk_loop(chunk, ratio) for chunk in torch.split(row, list(layers))]


@pytest.mark.parametrize("layers", [None, (30, 50, 20)])
def test_scadles_signal_equals_a_per_device_loop(layers: tuple[int, ...] | None) -> None:
    # Arrange
    acc = _rows(torch.Generator().manual_seed(0))
    want = []
    for row in acc:
        parts = _layerwise_topk_loop(row, layers or (P,), 0.1)
        kept = sum(float((c**2).sum()) for c in parts)
        total = float((row**2).sum())
        want.append(abs(total - kept) / total)
    # Act
    got = ScadlesSwitch(ratio=0.1, layers=layers).signal(acc, None)
    # Assert
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-12, rtol=0)


def test_scadles_signal_uses_a_given_kept_tensor() -> None:
    # Arrange
    acc = _rows(torch.Generator().manual_seed(1))
    kept = torch.stack([_topk_loop(row, 0.1) for row in acc])
    # Act
    given = ScadlesSwitch(ratio=0.1).signal(acc, kept)
    computed = ScadlesSwitch(ratio=0.1).signal(acc, None)
    half = ScadlesSwitch(ratio=0.1).signal(acc, kept * 0.5)
    # Assert
    torch.testing.assert_close(given, computed, atol=1e-12, rtol=0)
    torch.testing.assert_close(half, 1 - 0.25 * (1 - computed), atol=1e-12, rtol=0)


def test_scadles_ewma_follows_a_scripted_sequence() -> None:
    # Arrange: one device whose signal goes 0.9, 0, 0.9; EWMA 0.5 gives 0.9, 0.45, 0.675
    switch = ScadlesSwitch(delta=0.5, ewma=0.5, ratio=0.1)
    rows = [_flat(), _sparse(), _flat()]
    # Act
    levels, smoothed = [], []
    for row in rows:
        levels.append(switch.decide(row[None], None, epoch=0))
        assert switch.smoothed is not None
        smoothed.append(float(switch.smoothed[0]))
    # Assert
    assert smoothed == pytest.approx([0.9, 0.45, 0.675], abs=1e-12)
    assert levels == [0, 1, 0]


def test_scadles_default_ewma_is_point_nine() -> None:
    # Arrange
    switch = ScadlesSwitch()
    # Act
    for row in (_flat(), _sparse(), _flat()):
        switch.decide(row[None], None, epoch=0)
    # Assert: 0.9 -> 0.81 -> 0.9 * 0.81 + 0.1 * 0.9
    assert switch.smoothed is not None
    assert float(switch.smoothed[0]) == pytest.approx(0.819, abs=1e-12)


@pytest.mark.parametrize(
    ("n_sparse", "k", "want"),
    [(2, 4, 1), (1, 4, 0), (2, 3, 1), (1, 3, 0), (0, 1, 0), (1, 1, 1)],
)
def test_scadles_majority_vote_ties_compress(n_sparse: int, k: int, want: int) -> None:
    # Arrange: n_sparse devices vote to compress (signal 0), the rest to stay dense (0.9)
    acc = torch.stack([_sparse() if i < n_sparse else _flat() for i in range(k)])
    switch = ScadlesSwitch(delta=0.3)
    # Act
    level = switch.decide(acc, None, epoch=0)
    # Assert
    assert level == want
    assert switch.last_votes == n_sparse


def test_already_sparse_gradient_has_signal_zero_and_compresses() -> None:
    # Arrange
    acc = torch.stack([_sparse(topk_count(P, 0.1)), 2 * _sparse(topk_count(P, 0.1))])
    switch = ScadlesSwitch(delta=0.3, ratio=0.1)
    # Act
    sig = switch.signal(acc, None)
    level = switch.decide(acc, None, epoch=0)
    # Assert
    assert sig.tolist() == [0.0, 0.0]
    assert level == 1


def test_flat_gradient_loses_ninety_percent_and_stays_dense() -> None:
    # Arrange
    acc = torch.stack([_flat(), 3 * _flat()])
    switch = ScadlesSwitch(delta=0.3, ratio=0.1)
    # Act
    sig = switch.signal(acc, None)
    level = switch.decide(acc, None, epoch=0)
    # Assert
    torch.testing.assert_close(sig, torch.full((2,), FLAT_SQUARED, dtype=torch.float64))
    assert level == 0


def test_zero_gradient_loses_nothing() -> None:
    # Arrange / Act
    sig = ScadlesSwitch().signal(torch.zeros(3, P), None)
    # Assert
    assert sig.tolist() == [0.0, 0.0, 0.0]


def test_code_signal_equals_a_per_device_loop() -> None:
    # Arrange
    layers = (30, 50, 20)
    acc = _rows(torch.Generator().manual_seed(2))
    want = []
    for row in acc:
        full = sum(float(c.norm()) for c in torch.split(row, list(layers)))
        kept = sum(float(c.norm()) for c in _layerwise_topk_loop(row, layers, 0.1))
        want.append(abs(full - kept) / full)
    # Act
    got = CodeSwitch(ratio=0.1, layers=layers).signal(acc, None)
    # Assert
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-12, rtol=0)


def test_code_running_mean_resets_at_a_new_epoch() -> None:
    # Arrange: epoch 0 sees flat, flat (mean 0.684 -> dense); epoch 1 sees sparse (mean 0 after
    # the reset -> compress; without the reset the mean would be 0.456 -> dense); K = 2 because
    # int(1 / 2) = 0 votes suffice for K = 1
    switch = CodeSwitch(delta=0.3, ratio=0.1, layers=(50, 50))
    flat, sparse = _flat().expand(2, P), _sparse(4).expand(2, P)
    # Act
    levels = [switch.decide(flat, None, 0), switch.decide(flat, None, 0)]
    mean0 = switch.mean
    levels.append(switch.decide(sparse, None, 1))
    mean1 = switch.mean
    # Assert
    assert mean0 is not None and mean1 is not None
    assert float(mean0[0]) == pytest.approx(FLAT_UNSQUARED, abs=1e-12)
    assert float(mean1[0]) == 0.0
    assert levels == [0, 0, 1]


@pytest.mark.parametrize(
    ("n_sparse", "k", "want"), [(1, 3, 1), (0, 3, 0), (1, 4, 0), (2, 4, 1), (0, 1, 1)]
)
def test_code_vote_threshold_is_int_half(n_sparse: int, k: int, want: int) -> None:
    # Arrange
    acc = torch.stack([_sparse(4) if i < n_sparse else _flat() for i in range(k)])
    # Act
    level = CodeSwitch(delta=0.3, layers=(50, 50)).decide(acc, None, 0)
    # Assert
    assert level == want


def _scaled(norms: list[float], k: int = 3) -> list[Tensor]:
    """Updates whose device mean has the given norms (every device holds the same unit row)."""
    unit = torch.ones(4, dtype=torch.float64) / 2.0  # norm 1
    return [(n * unit).expand(k, 4) for n in norms]


def test_accordion_switches_on_relative_norm_change() -> None:
    # Arrange: norms 1, 1, 0.4, 0.5, 1: first -> low; same -> high; -60 % -> low; +25 % -> high;
    # +100 % -> low
    switch = AccordionSwitch(eta=0.5, low=0, high=2)
    # Act
    levels = [switch.decide(a, None, 0) for a in _scaled([1.0, 1.0, 0.4, 0.5, 1.0])]
    # Assert
    assert levels == [0, 2, 0, 2, 0]


def test_accordion_accumulates_over_an_interval() -> None:
    # Arrange: sums over pairs are 1, 1, 3 -> low (first), high (no change), low (+200 %)
    switch = AccordionSwitch(eta=0.5, interval=2)
    # Act
    levels = [switch.decide(a, None, 0) for a in _scaled([0.5, 0.5, 0.7, 0.3, 1.0, 2.0])]
    # Assert
    assert levels == [0, 0, 0, 1, 1, 0]
    assert switch.prev == pytest.approx(3.0)


def test_fixed_always_returns_its_level() -> None:
    # Arrange
    switch = Fixed(1)
    # Act
    levels = [switch.decide(a, None, e) for e, a in enumerate(_scaled([1.0, 0.0, 5.0]))]
    # Assert
    assert levels == [1, 1, 1]


def _script() -> list[Tensor]:
    """A sequence of per-device updates mixing flat, sparse and random rows."""
    gen = torch.Generator().manual_seed(4)
    rows = [torch.stack([_flat(), _sparse(4), _flat()]), _rows(gen, k=3)]
    rows += [torch.stack([_sparse(4), _sparse(4), _flat()]), _rows(gen, k=3)]
    return rows * 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fixed(0),
        lambda: ScadlesSwitch(delta=0.5, ewma=0.5),
        lambda: CodeSwitch(delta=0.3, layers=(50, 50)),
        lambda: AccordionSwitch(eta=0.3, interval=2),
    ],
)
def test_state_dict_round_trip_resumes_the_same_decisions(make: Callable[[], Switch]) -> None:
    # Arrange
    steps = _script()
    straight = make()
    want = [straight.decide(a, None, i // 3) for i, a in enumerate(steps)]
    first = make()
    for i, a in enumerate(steps[:3]):
        first.decide(a, None, i // 3)
    # Act
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    got = want[:3] + [resumed.decide(a, None, (i + 3) // 3) for i, a in enumerate(steps[3:])]
    # Assert
    assert got == want


@pytest.mark.parametrize(
    "make",
    [
        lambda: ScadlesSwitch(delta=-0.1),
        lambda: ScadlesSwitch(ewma=1.0),
        lambda: ScadlesSwitch(ratio=0.0),
        lambda: CodeSwitch(ratio=1.5, layers=(3,)),
        lambda: CodeSwitch(layers=()),
        lambda: AccordionSwitch(interval=0),
        lambda: Fixed(-1),
    ],
)
def test_bad_parameters_raise_user_error(make: Callable[[], Switch]) -> None:
    # Act / Assert
    with pytest.raises(UserError):
        make()


def test_bad_state_names_the_key() -> None:
    # Act / Assert
    with pytest.raises(UserError, match="smoothed"):
        ScadlesSwitch().load_state_dict({"count": 3})


def test_scadles_signal_uses_the_gradient_without_feedback_as_reference() -> None:

    g = torch.tensor([[3.0, 4.0, 0.0, 0.0]], dtype=torch.float64)  # ‖g‖² = 25
    acc = torch.tensor([[3.0, 4.0, 6.0, 0.0]], dtype=torch.float64)  # with residual
    kept = torch.tensor([[0.0, 0.0, 6.0, 0.0]], dtype=torch.float64)  # ‖Topk(acc)‖² = 36
    s = ScadlesSwitch(delta=0.3, ewma=0.9, ratio=0.25)
    assert torch.allclose(s.signal(acc, kept, g), torch.tensor([11.0 / 25.0], dtype=torch.float64))
    assert torch.allclose(s.signal(acc, kept), torch.tensor([25.0 / 61.0], dtype=torch.float64))
