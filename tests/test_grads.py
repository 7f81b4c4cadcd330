"""Per-device gradients: vmap against a per-device loop, weighted mean against the union batch."""

from __future__ import annotations

import copy
import itertools
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scadles.grads import (
    PerDeviceGrads,
    flat_grad_size,
    layer_shapes,
    layer_sizes,
    pad,
    plan_groups,
)
from scadles.nn import Segments, build_model, device_segments, param_count

LENGTHS = [3, 0, 5, 2, 4]  # uneven device batches, one empty device
SHAPES = {"mlp": (6,), "cnn1d": (12,)}


def _model(name: str, norm: str, seed: int = 0) -> nn.Module:
    """A tiny float64 model in train mode."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model(name, SHAPES[name], 3, norm=norm, width=4, groups=2, gen=gen)
    return model.double().train()


def _batch(name: str, lengths: list[int], seed: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A packed device-major batch: x (N, *s), y (N,), seg (N,), b (K,)."""
    gen = torch.Generator().manual_seed(seed)
    b = torch.tensor(lengths)
    n = int(b.sum())
    x = torch.randn(n, *SHAPES[name], generator=gen, dtype=torch.float64) * 2 + 0.5
    y = torch.randint(0, 3, (n,), generator=gen)
    seg = torch.repeat_interleave(torch.arange(len(lengths)), b)
    return x, y, seg, b


def _loop_oracle(model: nn.Module, x: Tensor, y: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-device gradients and losses by one plain forward/backward per device."""
    model = copy.deepcopy(model)  # leave the caller's running statistics alone
    params = [p for p in model.parameters() if p.requires_grad]
    grads, losses = [], []
    for xi, yi in zip(torch.split(x, b.tolist()), torch.split(y, b.tolist()), strict=True):
        if len(yi) == 0:
            grads.append(torch.zeros(sum(p.numel() for p in params), dtype=torch.float64))
            losses.append(torch.zeros((), dtype=torch.float64))
            continue
        loss = F.cross_entropy(model(xi), yi)
        gs = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        grads.append(torch.cat([g.reshape(-1) for g in gs]))
        losses.append(loss.detach())
    return torch.stack(grads), torch.stack(losses)


@pytest.mark.parametrize("mode", ["auto", "loop"])
@pytest.mark.parametrize("norm", ["none", "group", "batch"])
@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_per_device_grads_equal_a_loop_over_devices(name: str, norm: str, mode: str) -> None:
    # Arrange
    model = _model(name, norm)
    x, y, seg, b = _batch(name, LENGTHS)
    want_g, want_loss = _loop_oracle(model, x, y, b)
    # Act
    grads = PerDeviceGrads(model, mode=mode)
    g, loss, logits = grads(x, y, seg, b)
    # Assert
    assert grads.mode == ("vmap" if mode == "auto" else "loop")
    assert g.shape == (len(LENGTHS), flat_grad_size(model))
    torch.testing.assert_close(g, want_g, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, want_loss, atol=1e-9, rtol=0)
    assert not g[1].any()  # the empty device
    want_logits = torch.cat([model(xi) for xi in torch.split(x, LENGTHS) if len(xi)]).detach()
    torch.testing.assert_close(logits, want_logits, atol=1e-9, rtol=0)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_size_groups_give_the_same_gradients(norm: str) -> None:
    # Arrange: overhead 0 puts every distinct batch size in its own vmapped call
    model = _model("cnn1d", norm)
    lengths = [3, 0, 7, 3, 1, 6, 0, 2]
    x, y, seg, b = _batch("cnn1d", lengths)
    want_g, want_loss = _loop_oracle(model, x, y, b)
    # Act
    g, loss, logits = PerDeviceGrads(model, group_overhead=0.0)(x, y, seg, b)
    # Assert
    assert len(plan_groups(b, 0.0)) == 5
    torch.testing.assert_close(g, want_g, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, want_loss, atol=1e-9, rtol=0)
    want_logits = torch.cat([model(xi) for xi in torch.split(x, lengths) if len(xi)])
    torch.testing.assert_close(logits, want_logits.detach(), atol=1e-9, rtol=0)


def _padded_cost(groups: list[list[int]], overhead: float) -> float:
    """Padded rows (devices x largest batch) plus the overhead per group."""
    return sum(len(g) * max(g) + overhead for g in groups)


@pytest.mark.parametrize("overhead", [0.0, 3.0, 10.0, 1e6])
@pytest.mark.parametrize("seed", range(4))
def test_plan_groups_is_optimal_among_contiguous_splits(overhead: float, seed: int) -> None:
    # Arrange
    gen = torch.Generator().manual_seed(seed)
    b = torch.randint(0, 12, (7,), generator=gen)
    sizes = sorted((int(v) for v in b if v > 0), reverse=True)
    best = math.inf
    for cuts in itertools.product([False, True], repeat=max(len(sizes) - 1, 0)):
        groups, cur = [], [sizes[0]] if sizes else []
        for size, cut in zip(sizes[1:], cuts, strict=True):
            if cut:
                groups.append(cur)
                cur = []
            cur.append(size)
        best = min(best, _padded_cost([*groups, cur] if cur else groups, overhead))
    # Act
    got = plan_groups(b, overhead)
    # Assert
    devices = torch.cat(got).tolist() if got else []
    assert sorted(devices) == [i for i in range(7) if b[i] > 0]
    assert all(bool((g[:-1] >= g[1:]).all()) for g in (b[d] for d in got))
    sizes_got = [b[d].tolist() for d in got]
    assert _padded_cost(sizes_got, overhead) == pytest.approx(best if sizes else 0.0)


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_batchnorm_uses_only_the_devices_own_rows(name: str) -> None:
    # Arrange: the same device-0 rows next to two different sets of other devices' rows
    model = _model(name, "batch")
    x, y, seg, b = _batch(name, [4, 6, 1])
    x2, y2, _, _ = _batch(name, [4, 6, 1], seed=7)
    x2[:4], y2[:4] = x[:4], y[:4]
    grads = PerDeviceGrads(model)
    # Act
    g1 = grads(x, y, seg, b).grads
    g2 = grads(x2, y2, seg, b).grads
    # Assert
    torch.testing.assert_close(g1[0], g2[0], atol=1e-10, rtol=0)
    assert (g1[1] - g2[1]).abs().max() > 1e-3


def test_running_stats_match_one_union_forward() -> None:
    # Arrange
    model = _model("cnn1d", "batch")
    twin = copy.deepcopy(model)
    x, y, seg, b = _batch("cnn1d", LENGTHS)
    # Act
    PerDeviceGrads(model)(x, y, seg, b)
    with torch.no_grad(), device_segments(Segments(seg, len(LENGTHS), None)):
        twin(x)
    # Assert
    for (name, got), (_, want) in zip(model.named_buffers(), twin.named_buffers(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0, msg=name)
    assert any((buf != 0).any() for n, buf in model.named_buffers() if n.endswith("running_mean"))


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_weighted_mean_of_device_grads_is_the_union_gradient(name: str) -> None:
    # Arrange
    model = _model(name, "none")
    x, y, seg, b = _batch(name, LENGTHS)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
    want = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    # Act
    g = PerDeviceGrads(model)(x, y, seg, b).grads  # (K, P)
    got = (b.double() / b.sum()) @ g
    # Assert
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_pad_round_trip() -> None:
    # Arrange
    gen = torch.Generator().manual_seed(3)
    b = torch.tensor(LENGTHS)
    x = torch.randn(int(b.sum()), 2, 3, generator=gen)
    y = torch.arange(int(b.sum()))
    seg = torch.repeat_interleave(torch.arange(len(LENGTHS)), b)
    # Act
    xp, yp, mask = pad(x, y, b, seg)
    # Assert
    assert xp.shape == (5, 5, 2, 3) and yp.shape == (5, 5) and mask.shape == (5, 5)
    assert mask.sum(1).tolist() == LENGTHS
    keep = mask.bool()
    torch.testing.assert_close(xp[keep], x)
    assert torch.equal(yp[keep], y)
    assert not xp[~keep].any() and not yp[~keep].any()
    for k, start in enumerate([0, 3, 3, 8, 10]):
        assert torch.equal(xp[k, : LENGTHS[k]], x[start : start + LENGTHS[k]])


def test_sizes_shapes_and_write_grad_round_trip() -> None:
    # Arrange
    model = _model("cnn1d", "group")
    sizes, shapes = layer_sizes(model), layer_shapes(model)
    flat = torch.arange(flat_grad_size(model), dtype=torch.float64)
    # Act
    PerDeviceGrads(model).write_grad(model, flat)
    PerDeviceGrads(model).write_grad(model, flat)  # second write copies into existing grads
    # Assert
    assert sum(sizes) == flat_grad_size(model) == param_count(model)
    assert [tuple(p.shape) for p in model.parameters()] == list(shapes)
    got = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    assert torch.equal(got, flat)


class _Branchy(nn.Module):
    """A model with data-dependent Python control flow, which vmap cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3).double()
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for t in (self.fc.weight, self.fc.bias):
                t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        """Return logits, negated when their sum is negative."""
        h: Tensor = self.fc(x)
        return h if float(h.detach().sum()) >= 0 else -h


def test_loop_fallback_is_chosen_once_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # Arrange
    model = _Branchy()
    x, y, seg, b = _batch("mlp", LENGTHS)
    want_g, _ = _loop_oracle(model, x, y, b)
    grads = PerDeviceGrads(model)
    # Act
    with caplog.at_level(logging.INFO, logger="scadles.grads"):
        g = grads(x, y, seg, b).grads
        grads(x, y, seg, b)
    # Assert
    assert grads.mode == "loop"
    assert len([r for r in caplog.records if r.name == "scadles.grads"]) == 1
    torch.testing.assert_close(g, want_g, atol=1e-10, rtol=0)


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("elements", [1, 12 * 4, 12 * 9])
def test_chunked_vmap_calls_equal_the_loop_and_one_union_forward(norm: str, elements: int) -> None:
    # Arrange: a chunk of `elements` input values bounds each vmapped call (1: one device each)
    model = _model("cnn1d", norm)
    twin = copy.deepcopy(model)
    lengths = [3, 0, 7, 3, 1, 6, 0, 2, 5, 5]
    x, y, seg, b = _batch("cnn1d", lengths)
    want_g, want_loss = _loop_oracle(model, x, y, b)
    # Act
    g, loss, logits = PerDeviceGrads(model, chunk_elements=elements)(x, y, seg, b)
    with torch.no_grad(), device_segments(Segments(seg, len(lengths), None)):
        twin(x)
    # Assert
    torch.testing.assert_close(g, want_g, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, want_loss, atol=1e-9, rtol=0)
    for (name, got), (_, want) in zip(model.named_buffers(), twin.named_buffers(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0, msg=name)  # one update
    want_logits = torch.cat([model(xi) for xi in torch.split(x, lengths) if len(xi)])
    torch.testing.assert_close(logits, want_logits.detach(), atol=1e-9, rtol=0)
