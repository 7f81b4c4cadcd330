"""Training augmentation: random crop with black padding and horizontal flip, vectorised."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import scadles
from scadles.config.load import load_config
from scadles.data.augment import AUGMENTATIONS, Augment, crop_padding, make_augment
from scadles.engine import Engine
from scadles.errors import UserError
from scadles.training import build


def _images(n: int = 6, c: int = 2, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))  # (N,C,H,W)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _loop_oracle(aug: Augment, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The same draws, one sample at a time with F.pad and slicing (the reference)."""
    n, c, h, w = x.shape
    gen = _gen(seed)
    dy, dx = aug.offsets(n, gen)
    mirror = torch.rand(n, generator=gen) < 0.5 if aug.flip else torch.zeros(n, dtype=torch.bool)
    out = []
    p = aug.pad
    for i in range(n):
        padded = torch.stack(
            [F.pad(x[i, ch], (p, p, p, p), value=float(aug.fill[ch])) for ch in range(c)]
        )
        crop = padded[:, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w]
        out.append(crop.flip(-1) if bool(mirror[i]) else crop)
    return torch.stack(out)


def test_padding_is_an_eighth_of_the_side() -> None:
    assert crop_padding(32) == 4  # the CIFAR recipe [authors' code]
    assert crop_padding(28) == 3  # Fashion-MNIST: the same 1/8
    assert crop_padding(4) == 1


@pytest.mark.parametrize("name", ["crop", "crop_flip"])
def test_shape_dtype_and_vectorised_equals_loop(name: str) -> None:
    x = _images(n=32, c=3, h=12, w=10)
    aug = make_augment(name, x)
    assert aug is not None
    out = aug(x, _gen(7))
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, _loop_oracle(aug, x, 7), rtol=0, atol=0)


def test_none_is_no_augmentation() -> None:
    assert make_augment("none", _images()) is None
    assert set(AUGMENTATIONS) == {"none", "crop", "crop_flip"}


def test_flip_of_a_known_image() -> None:
    x = torch.arange(12.0).reshape(1, 1, 3, 4).repeat(64, 1, 1, 1)  # (64, 1, 3, 4)
    aug = Augment(pad=0, flip=True, fill=torch.zeros(1), crop=False)
    out = aug(x, _gen(3))
    mirrored = torch.tensor([[3.0, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8]])
    flipped = (out[:, 0] == mirrored).flatten(1).all(1)  # (64,)
    kept = (out[:, 0] == x[:, 0]).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # each sample is the image or its mirror
    assert 15 < int(flipped.sum()) < 49  # about half, p = 0.5 (binomial, > 4 sd margin)
    expect = torch.rand(64, generator=_gen(3)) < 0.5
    assert torch.equal(flipped, expect)


def test_crop_offsets_bounded_by_padding_and_border_is_black() -> None:
    x = torch.ones(400, 1, 8, 8)
    aug = Augment(pad=2, flip=False, fill=torch.zeros(1))
    dy, dx = aug.offsets(400, _gen(5))
    assert int(dy.min()) == 0 and int(dy.max()) == 4  # every offset in [0, 2 pad] is drawn
    assert int(dx.min()) == 0 and int(dx.max()) == 4
    out = aug(x, _gen(5))
    # the window starting at (dy, dx) of the padded image keeps rows pad - dy ... of the image
    rows_kept = out.sum(dim=(1, 3)) / 1.0  # (N, H) ones per row
    shift_y = (dy - 2).abs()  # black rows in the window
    assert torch.equal((rows_kept[:, :, None] == 0).sum(1).squeeze(1), shift_y)
    assert int(out.sum()) == int(((8 - (dy - 2).abs()) * (8 - (dx - 2).abs())).sum())


def test_fill_is_the_normalised_black_pixel() -> None:
    raw = torch.rand(50, 3, 8, 8)
    raw[:, :, 0, 0] = 0.0  # black pixels exist in every channel
    mean, std = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.5, 0.25, 0.1])
    x = (raw - mean[:, None, None]) / std[:, None, None]
    aug = make_augment("crop", x)
    assert aug is not None
    torch.testing.assert_close(aug.fill, -mean / std)


def test_same_seed_same_output_different_seed_different() -> None:
    x = _images(n=16)
    aug = make_augment("crop_flip", x)
    assert aug is not None
    assert torch.equal(aug(x, _gen(1)), aug(x, _gen(1)))
    assert not torch.equal(aug(x, _gen(1)), aug(x, _gen(2)))
    assert torch.equal(x, _images(n=16))  # the input is not changed in place


def test_non_image_data_is_refused_with_the_key() -> None:
    with pytest.raises(UserError, match=r"data\.augment = 'crop' needs images"):
        make_augment("crop", torch.zeros(10, 1, 40))


def test_unknown_value_is_refused_naming_key_and_allowed() -> None:
    with pytest.raises(UserError) as e:
        load_config(None, ["data.augment=rotate"])
    msg = str(e.value)
    assert "data.augment" in msg and "'rotate'" in msg and "crop_flip" in msg and "\n" not in msg


def _engine(augment: str) -> Engine:
    g = _gen(11)
    x, x_te = torch.randn(256, 1, 8, 8, generator=g), torch.randn(64, 1, 8, 8, generator=g)
    y, y_te = torch.randint(0, 4, (256,), generator=g), torch.randint(0, 4, (64,), generator=g)
    data = scadles.Dataset.from_tensors(x, y, x_te, y_te, num_classes=4)
    sets = ["model.name=cnn2d", "model.width=4", "devices.count=4", "train.steps=3"]
    cfg = load_config(None, [*sets, f"data.augment={augment}", "streams.rates=uniform-S1"])
    return build.engine(cfg, data)


def test_training_batches_augmented_evaluation_untouched() -> None:
    plain, aug = _engine("none"), _engine("crop_flip")
    assert plain.augment is None and aug.augment is not None
    assert plain.evaluate() == aug.evaluate()  # same weights, same test images
    seen: list[torch.Tensor] = []
    for eng in (plain, aug):
        inner = eng.exchange

        def spy(batch, *rest, inner=inner):  # type: ignore[no-untyped-def]
            seen.append(batch.x.clone())
            return inner(batch, *rest)

        eng.exchange = spy  # type: ignore[assignment]
        eng.step()
    assert seen[0].shape == seen[1].shape
    assert not torch.equal(seen[0], seen[1])  # the training batch was augmented
    x_test = aug.data.x_test.clone()
    aug.evaluate()
    assert torch.equal(aug.data.x_test, x_test)


def test_resume_continues_the_augmentation_draws() -> None:
    a = _engine("crop_flip")
    a.step()
    state = a.state_dict()
    assert "augment_gen" in state
    b = _engine("crop_flip")
    b.load_state_dict(state)
    assert torch.equal(a.augment_gen.get_state(), b.augment_gen.get_state())
    assert a.step().loss == b.step().loss
