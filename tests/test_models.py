"""Models and per-device BatchNorm: oracles against per-device loops and plain BatchNorm."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from scadles.errors import UserError
from scadles.nn import (
    MODELS,
    NORMS,
    SegmentBatchNorm,
    Segments,
    build_model,
    device_segments,
    no_running_stats,
    param_count,
)

FEATURES = [(4,), (3, 5), (2, 3, 4)]  # per-row shapes (C, *spatial): 1-D, 1-D conv, 2-D conv
LENGTHS = [3, 0, 5, 2, 4]  # uneven device sizes, one empty device


def _bn(channels: int, gen: torch.Generator) -> SegmentBatchNorm:
    """A float64 per-device BN with random affine parameters and running stats."""
    bn = SegmentBatchNorm(channels).double()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5)
    return bn


def _reference_bn(bn: SegmentBatchNorm, dims: int) -> nn.BatchNorm1d | nn.BatchNorm2d:
    """A torch BatchNorm with the same parameters and buffers as bn."""
    cls = nn.BatchNorm1d if dims <= 3 else nn.BatchNorm2d
    ref = cls(bn.channels, momentum=bn.momentum, eps=bn.eps).double()
    assert isinstance(ref, nn.BatchNorm1d | nn.BatchNorm2d)
    ref.load_state_dict(bn.state_dict(), strict=False)
    return ref


@pytest.mark.parametrize("feat", FEATURES)
def test_segment_bn_equals_batchnorm_run_device_by_device(feat: tuple[int, ...]) -> None:
    # Arrange
    gen = torch.Generator().manual_seed(0)
    bn = _bn(feat[0], gen)
    lengths = torch.tensor(LENGTHS)
    x = torch.randn(int(lengths.sum()), *feat, generator=gen, dtype=torch.float64) * 3 + 1
    refs: list[tuple[int, Tensor, Tensor]] = []
    outs: list[Tensor] = []
    for k, chunk in enumerate(torch.split(x, LENGTHS)):
        if len(chunk):
            ref = _reference_bn(bn, x.dim())
            outs.append(ref.train()(chunk))
            assert ref.running_mean is not None and ref.running_var is not None
            refs.append((LENGTHS[k], ref.running_mean, ref.running_var))
    counts = torch.tensor([float(n) for n, _, _ in refs], dtype=torch.float64)  # (K',)
    want_mean = (counts[:, None] * torch.stack([m for _, m, _ in refs])).sum(0) / counts.sum()
    want_var = (counts[:, None] * torch.stack([v for _, _, v in refs])).sum(0) / counts.sum()
    # Act
    with device_segments(Segments.from_lengths(lengths)):
        got = bn.train()(x)
    # Assert
    torch.testing.assert_close(got, torch.cat(outs), atol=1e-6, rtol=0)
    torch.testing.assert_close(bn.running_mean, want_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(bn.running_var, want_var, atol=1e-6, rtol=0)


@pytest.mark.parametrize("feat", FEATURES)
def test_padding_rows_change_no_valid_output_nor_running_stats(feat: tuple[int, ...]) -> None:
    # Arrange: the same rows ragged and padded to (K, B) with garbage in the padding
    gen = torch.Generator().manual_seed(1)
    bn_flat, k, b = _bn(feat[0], gen), len(LENGTHS), max(LENGTHS)
    bn_pad = _bn(feat[0], gen)
    bn_pad.load_state_dict(bn_flat.state_dict())
    lengths = torch.tensor(LENGTHS)
    x = torch.randn(int(lengths.sum()), *feat, generator=gen, dtype=torch.float64)
    mask = (torch.arange(b)[None, :] < lengths[:, None]).double()  # (K, B)
    padded = torch.randn(k, b, *feat, generator=gen, dtype=torch.float64) * 100  # (K, B, *feat)
    padded[mask.bool()] = x
    # Act
    with device_segments(Segments.from_lengths(lengths)):
        got_flat = bn_flat.train()(x)
    with device_segments(Segments.from_mask(mask)):
        got_pad = bn_pad.train()(padded.reshape(k * b, *feat))
    # Assert
    torch.testing.assert_close(got_pad[mask.reshape(-1).bool()], got_flat, atol=1e-9, rtol=0)
    torch.testing.assert_close(bn_pad.running_mean, bn_flat.running_mean, atol=1e-9, rtol=0)
    torch.testing.assert_close(bn_pad.running_var, bn_flat.running_var, atol=1e-9, rtol=0)


def test_no_running_stats_freezes_buffers_and_restores_flag() -> None:
    gen = torch.Generator().manual_seed(2)
    bn = _bn(3, gen)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    with no_running_stats(bn):
        with device_segments(Segments.from_lengths(torch.tensor([2, 4]))):
            bn.train()(x)
        bn.train()(x)
    for key, value in bn.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)
    assert bn.update_stats
    bn.train()(x)
    assert not torch.equal(bn.running_mean, before["running_mean"])


def test_single_value_device_normalises_to_bias_and_leaves_running_var() -> None:
    gen = torch.Generator().manual_seed(8)
    bn = _bn(3, gen)
    var_before, mean_before = bn.running_var.clone(), bn.running_mean.clone()
    x = torch.randn(1, 3, generator=gen, dtype=torch.float64)  # one value per channel
    out = bn.train()(x)
    torch.testing.assert_close(out[0], bn.bias.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(bn.running_var, var_before, atol=0, rtol=0)
    torch.testing.assert_close(bn.running_mean, 0.9 * mean_before + 0.1 * x[0], atol=1e-12, rtol=0)


def test_eval_mode_normalises_with_running_stats_and_ignores_segments() -> None:
    gen = torch.Generator().manual_seed(3)
    bn = _bn(3, gen)
    x = torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)
    want = _reference_bn(bn, x.dim()).eval()(x)
    with device_segments(Segments.from_lengths(torch.tensor([1, 4]))):
        got = bn.eval()(x)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_seg_none_equals_one_segment_of_all_rows(name: str) -> None:
    # Arrange: no segments take the native kernel; a weighted single segment the segment path
    shape = (1, 40) if name in ("mlp", "cnn1d") else (3, 8, 8)
    gen = torch.Generator().manual_seed(4)
    model = build_model(name, shape, 5, norm="batch", width=8, gen=gen).double().train()
    twin = build_model(name, shape, 5, norm="batch", width=8).double().train()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(6, *shape, generator=gen, dtype=torch.float64)
    # Act
    plain = model(x)
    with device_segments(Segments.single(torch.ones(6, dtype=torch.float64))):
        one = twin(x)
    # Assert
    torch.testing.assert_close(one, plain, atol=1e-9, rtol=0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value, atol=1e-9, rtol=0)


@pytest.mark.parametrize(("name", "norm"), [("cnn1d", "batch"), ("mlp", "batch"), ("mlp", "none")])
def test_vmap_per_device_gradients_equal_per_device_loop(name: str, norm: str) -> None:
    # Arrange: K devices padded to (K, B) with garbage in the padding rows
    gen = torch.Generator().manual_seed(5)
    model = build_model(name, (1, 40), 10, norm=norm, width=8, gen=gen).double().train()
    lengths = [6, 4, 2]
    k, b = len(lengths), max(lengths)
    x = torch.randn(k, b, 1, 40, generator=gen, dtype=torch.float64)  # (K, B, 1, 40)
    y = torch.randint(0, 10, (k, b), generator=gen)  # (K, B)
    mask = (torch.arange(b)[None, :] < torch.tensor(lengths)[:, None]).double()  # (K, B)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p: dict[str, Tensor], xk: Tensor, yk: Tensor, wk: Tensor) -> Tensor:
        with device_segments(Segments.single(wk)):
            logits = functional_call(model, p, (xk,))
        return (F.cross_entropy(logits, yk, reduction="none") * wk).sum() / wk.sum()

    # Act
    with no_running_stats(model):
        got = vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, x, y, mask)
    # Assert
    for i, n in enumerate(lengths):
        model.zero_grad()
        torch.autograd.backward(F.cross_entropy(model(x[i, :n]), y[i, :n]))
        for key, p in model.named_parameters():
            assert p.grad is not None
            torch.testing.assert_close(got[key][i], p.grad, atol=1e-5, rtol=0)


SHAPES: dict[str, list[tuple[int, ...]]] = {
    "mlp": [(1, 40), (3, 4, 4)],
    "cnn1d": [(1, 40), (40,), (2, 17)],
    "cnn2d": [(1, 28, 28), (3, 32, 32), (1, 8, 8), (8, 8)],
    "resnet8": [(3, 32, 32), (1, 8, 8)],
    "resnet20": [(3, 8, 8)],
    "resnet152": [(3, 8, 8)],
    "vgg19_bn": [(3, 8, 8), (1, 5, 5)],
}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("name", "shape"), [(n, s) for n in MODELS for s in SHAPES[n]])
def test_every_model_and_norm_builds_runs_and_trains(
    name: str, shape: tuple[int, ...], norm: str
) -> None:
    # Arrange
    model = build_model(name, shape, 7, norm=norm, width=8, gen=torch.Generator().manual_seed(6))
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(7))
    seg = Segments.from_lengths(torch.tensor([3, 2]))
    # Act
    with device_segments(seg):
        logits = model.train()(x)
    torch.autograd.backward(logits.square().mean())
    # Assert
    assert logits.shape == (5, 7)
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
    assert model.eval()(x).shape == (5, 7)


@pytest.mark.parametrize("name", MODELS)
def test_same_generator_seed_gives_identical_parameters(name: str) -> None:
    shape = (1, 40) if name in ("mlp", "cnn1d") else (3, 8, 8)

    def params(seed: int) -> list[Tensor]:
        gen = torch.Generator().manual_seed(seed)
        model = build_model(name, shape, 3, norm="group", width=8, gen=gen)
        return [p.detach() for p in model.parameters()]

    a, b, c = params(11), params(11), params(12)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_param_count_of_mlp_matches_layer_arithmetic() -> None:
    model = build_model("mlp", (1, 40), 10, width=8)  # hidden 4 * 8 = 32
    assert param_count(model) == (40 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
    assert param_count(model) == sum(p.numel() for p in model.parameters())


def test_resnet20_has_three_blocks_per_stage_and_cifar_widths() -> None:
    model = build_model("resnet20", (3, 32, 32), 10, width=16, norm="batch")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 3 * 3 * 2  # stem + 3 stages x 3 blocks x 2 convs (+ head = 20)
    assert sorted({c.out_channels for c in convs}) == [16, 32, 64]
    assert 0.26e6 < param_count(model) < 0.28e6  # He et al. report 0.27M


def test_group_norm_groups_are_reduced_to_divide_channels() -> None:
    model = build_model("mlp", (5,), 2, norm="group", width=3, groups=8)  # 12 hidden units
    groups = {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)}
    assert groups == {math.gcd(8, 12)}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "vgg"}, "model.name"),
        ({"norm": "layer"}, "model.norm"),
        ({"name": "cnn2d", "input_shape": (40,)}, "cnn2d"),
        ({"width": 0}, "width"),
    ],
)
def test_bad_input_raises_one_line_user_error(kwargs: dict[str, object], needle: str) -> None:
    args: dict[str, Any] = {"name": "cnn1d", "input_shape": (1, 40), "num_classes": 10}
    args.update(kwargs)
    with pytest.raises(UserError, match=needle) as info:
        build_model(**args)
    assert "\n" not in str(info.value)
