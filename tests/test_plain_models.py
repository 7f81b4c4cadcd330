"""Plain `forward(x)` modules: per-device gradients, the loop fallback and `device_segments`."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scadles.grads import PerDeviceGrads
from scadles.nn import Segments, build_model, current_segments, device_segments

LENGTHS = [3, 0, 5, 2]  # K = 4 uneven device batches, one empty device
FEATURES = (2, 3)  # per-row input shape, flattened to 6 features
CLASSES = 3


def _batch(lengths: list[int], seed: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A packed device-major float64 batch: x (N, 2, 3), y (N,), seg (N,), b (K,)."""
    gen = torch.Generator().manual_seed(seed)
    b = torch.tensor(lengths)
    n = int(b.sum())
    x = torch.randn(n, *FEATURES, generator=gen, dtype=torch.float64) * 2 + 0.5  # (N, 2, 3)
    y = torch.randint(0, CLASSES, (n,), generator=gen)  # (N,)
    seg = torch.repeat_interleave(torch.arange(len(lengths)), b)  # (N,)
    return x, y, seg, b


def _sequential(batchnorm: bool, seed: int = 0) -> nn.Sequential:
    """A float64 Flatten -> Linear -> [BatchNorm1d] -> ReLU -> Linear classifier in train mode."""
    torch.manual_seed(seed)
    norm: list[nn.Module] = [nn.BatchNorm1d(8)] if batchnorm else []
    layers = [nn.Flatten(), nn.Linear(6, 8), *norm, nn.ReLU(), nn.Linear(8, CLASSES)]
    model = nn.Sequential(*layers).double().train()
    if batchnorm:  # non-trivial affine parameters, so their gradients are checked too
        bn = model[2]
        assert isinstance(bn, nn.BatchNorm1d)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model


def _loop_oracle(model: nn.Module, x: Tensor, y: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-device gradients (K, P) and losses (K,) by torch.autograd.grad, one device at a time."""
    model = copy.deepcopy(model)  # leave the caller's running statistics alone
    params = [p for p in model.parameters() if p.requires_grad]
    width = sum(p.numel() for p in params)
    grads, losses = [], []
    for xi, yi in zip(torch.split(x, b.tolist()), torch.split(y, b.tolist()), strict=True):
        if len(yi) == 0:
            grads.append(torch.zeros(width, dtype=torch.float64))
            losses.append(torch.zeros((), dtype=torch.float64))
            continue
        with device_segments(None):  # this device's rows alone
            loss = F.cross_entropy(model(xi), yi)
        gs = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        grads.append(torch.cat([g.reshape(-1) for g in gs]))
        losses.append(loss.detach())
    return torch.stack(grads), torch.stack(losses)


def test_plain_sequential_vmap_gradients_equal_a_loop_of_autograd_grad() -> None:
    # Arrange
    model = _sequential(batchnorm=False)
    x, y, seg, b = _batch(LENGTHS)
    want_g, want_loss = _loop_oracle(model, x, y, b)
    grads = PerDeviceGrads(model)
    # Act
    g, loss, logits = grads(x, y, seg, b)
    # Assert: tolerance 1e-6 on float64 gradients
    assert grads.mode == "vmap"
    assert g.shape == (len(LENGTHS), sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(g, want_g, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, want_loss, atol=1e-9, rtol=0)
    assert not g[1].any() and float(loss[1]) == 0.0  # the empty device
    torch.testing.assert_close(logits, model(x).detach(), atol=1e-9, rtol=0)


def test_plain_sequential_all_empty_step_uses_the_given_class_count() -> None:
    # Arrange
    model = _sequential(batchnorm=False)
    x, y, seg, b = _batch([0, 0, 0, 0])
    # Act
    given = PerDeviceGrads(model, num_classes=CLASSES)(x, y, seg, b)
    unknown = PerDeviceGrads(model)(x, y, seg, b)
    # Assert
    assert given.logits.shape == (0, CLASSES) and unknown.logits.shape == (0, 0)
    assert given.grads.shape == (4, sum(p.numel() for p in model.parameters()))
    assert not given.grads.any() and not given.loss.any()


def test_plain_sequential_learns_the_class_count_from_its_first_logits() -> None:
    # Arrange
    model = _sequential(batchnorm=False)
    grads = PerDeviceGrads(model)
    # Act
    grads(*_batch(LENGTHS))
    empty = grads(*_batch([0, 0, 0, 0]))
    # Assert
    assert empty.logits.shape == (0, CLASSES)


def test_plain_batchnorm_falls_back_to_the_loop_over_each_devices_rows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Arrange
    model = _sequential(batchnorm=True)
    bn = model[2]
    assert isinstance(bn, nn.BatchNorm1d)
    x, y, seg, b = _batch(LENGTHS)
    want_g, want_loss = _loop_oracle(model, x, y, b)
    grads = PerDeviceGrads(model)
    # Act
    with caplog.at_level(logging.INFO, logger="scadles.grads"):
        g, loss, _ = grads(x, y, seg, b)
        grads(x, y, seg, b)
    # Assert: tolerance 1e-6 on float64 gradients; running stats updated once per call
    assert grads.mode == "loop"
    assert len([r for r in caplog.records if r.name == "scadles.grads"]) == 1
    torch.testing.assert_close(g, want_g, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, want_loss, atol=1e-9, rtol=0)
    assert bn.num_batches_tracked is not None
    assert int(bn.num_batches_tracked) == 2 and bn.track_running_stats


def test_plain_batchnorm_running_stats_take_one_union_update_per_call() -> None:
    # Arrange
    model = _sequential(batchnorm=True)
    twin = copy.deepcopy(model)
    x, y, seg, b = _batch(LENGTHS)
    # Act
    PerDeviceGrads(model)(x, y, seg, b)
    with torch.no_grad():
        twin(x)
    # Assert
    for (name, got), (_, want) in zip(model.named_buffers(), twin.named_buffers(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0, msg=name)


def test_untracked_plain_batchnorm_is_not_vmapped_over_padding_rows() -> None:
    # Arrange: without running stats torch would vmap it, normalising over the padding rows too
    model = _sequential(batchnorm=False)
    model.insert(2, nn.BatchNorm1d(8, track_running_stats=False).double())
    x, y, seg, b = _batch(LENGTHS)
    want_g, _ = _loop_oracle(model, x, y, b)
    grads = PerDeviceGrads(model)
    # Act
    g = grads(x, y, seg, b).grads
    # Assert: tolerance 1e-6 on float64 gradients
    assert grads.mode == "loop"
    torch.testing.assert_close(g, want_g, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="BatchNorm"):
        PerDeviceGrads(model, mode="vmap")(x, y, seg, b)


@pytest.mark.parametrize("mode", ["vmap", "loop"])
@pytest.mark.parametrize("lengths", [LENGTHS, [4, 1, 6, 2, 0, 3]])
def test_segment_batchnorm_mlp_per_device_equals_one_call_per_device(
    lengths: list[int], mode: str
) -> None:
    # Arrange: per-device BatchNorm = BatchNorm over that device's rows alone
    gen = torch.Generator().manual_seed(3)
    model = build_model("mlp", FEATURES, CLASSES, norm="batch", width=4, gen=gen)
    model = model.double().train()
    x, y, seg, b = _batch(lengths, seed=5)
    want_g, want_loss = _loop_oracle(model, x, y, b)
    grads = PerDeviceGrads(model, mode=mode)
    # Act
    with device_segments(Segments(seg, len(lengths), None)):  # a caller's context is overridden
        g, loss, _ = grads(x, y, seg, b)
    # Assert: tolerance 1e-5 on float64 gradients
    torch.testing.assert_close(g, want_g, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, want_loss, atol=1e-9, rtol=0)


def test_device_segments_nest_and_restore_also_when_the_body_raises() -> None:
    # Arrange
    outer = Segments.from_lengths(torch.tensor([2, 3]))
    inner = Segments.single(torch.ones(4))
    # Act / Assert
    assert current_segments() is None
    with device_segments(outer) as got:
        assert got is outer and current_segments() is outer
        with device_segments(inner):
            assert current_segments() is inner
            with device_segments(None):
                assert current_segments() is None
            assert current_segments() is inner
        assert current_segments() is outer
        with pytest.raises(KeyError), device_segments(inner):
            assert current_segments() is inner
            raise KeyError("body fails")
        assert current_segments() is outer
    assert current_segments() is None
