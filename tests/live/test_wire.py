"""Contract of the one-sample wire format: round trips, and every corruption skipped and counted."""

from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scadles.errors import UserError
from scadles.live.wire import HEADER_BYTES, MAGIC, REASONS, WireError, decode, decode_many, encode

MAX = 1 << 16


def _sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Return a deterministic sample of the given dtype and shape."""
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    return torch.randn(shape, generator=gen).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4), (1, 0)])
def test_round_trip_per_dtype(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = _sample(dtype, shape, seed=1)
    msg = encode(x, -7)
    got, label = decode(msg, max_bytes=MAX, expect_shape=shape)
    assert label == -7
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got, x)
    assert len(msg) == HEADER_BYTES + 4 * len(shape) + x.numel() * x.element_size()


def test_header_layout_is_the_documented_one() -> None:
    msg = encode(torch.tensor([[1.5, -2.0]]), 9)
    assert msg[:4] == MAGIC
    assert struct.unpack_from("<BBiB", msg, 4) == (1, 1, 9, 2)
    assert struct.unpack_from("<2I", msg, 11) == (1, 2)
    assert struct.unpack_from("<2f", msg, 19) == (1.5, -2.0)


def test_decode_many_stacks_mixed_dtypes_in_order() -> None:
    xs = [_sample(d, (2, 3), seed=i) for i, d in enumerate([torch.uint8, torch.float32] * 3)]
    msgs = [encode(x, i) for i, x in enumerate(xs)]
    x, y, skipped = decode_many(msgs, max_bytes=MAX, expect_shape=(2, 3))
    assert not skipped
    assert y.tolist() == list(range(6))
    assert torch.equal(x, torch.stack([v.float() for v in xs]))


def _good() -> bytes:
    return encode(torch.arange(6, dtype=torch.float32).reshape(2, 3), 3)


def _with(msg: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Return ``msg`` with one header field overwritten."""
    out = bytearray(msg)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


CORRUPT = {
    "bad_magic": b"XCDL" + _good()[4:],
    "bad_version": _with(_good(), 4, "<B", 2),
    "unknown_dtype": _with(_good(), 5, "<B", 9),
    "truncated_header": _good()[: HEADER_BYTES + 3],
    "truncated_payload": _good()[:-1],
    "payload_size": _good() + b"\0",
    "oversized": encode(torch.zeros(1000), 1),
    "shape_mismatch": encode(torch.zeros(3, 2), 1),
    "non_finite": encode(torch.tensor([[0.0, float("nan"), 1.0]] * 2), 1),
    "bad_label": encode(torch.zeros(2, 3), 10),
}


@pytest.mark.parametrize("reason", sorted(CORRUPT))
def test_each_corruption_raises_its_reason_and_is_counted(reason: str) -> None:
    with pytest.raises(WireError) as err:
        decode(CORRUPT[reason], max_bytes=1000, expect_shape=(2, 3), num_classes=10)
    assert err.value.reason == reason
    good = _good()
    x, y, skipped = decode_many(
        [good, CORRUPT[reason], good], max_bytes=1000, expect_shape=(2, 3), num_classes=10
    )
    assert skipped == {reason: 1}
    assert x.shape == (2, 2, 3) and y.tolist() == [3, 3]


def test_reasons_cover_every_corruption() -> None:
    assert set(CORRUPT) == set(REASONS)


def test_every_truncation_is_skipped_and_counted() -> None:
    good = _good()
    cuts = [good[:n] for n in range(len(good))]
    x, y, skipped = decode_many([*cuts, good], max_bytes=MAX)
    assert sum(skipped.values()) == len(good)
    assert set(skipped) <= {"truncated_header", "truncated_payload"}
    assert x.shape == (1, 2, 3) and y.tolist() == [3]


def test_first_valid_message_fixes_shape_without_expectation() -> None:
    msgs = [b"junk", encode(torch.ones(4), 1), encode(torch.ones(5), 2), encode(torch.ones(4), 3)]
    x, y, skipped = decode_many(msgs, max_bytes=MAX)
    assert x.shape == (2, 4) and y.tolist() == [1, 3]
    assert skipped == {"bad_magic": 1, "shape_mismatch": 1}


def test_empty_batch_keeps_the_expected_shape() -> None:
    x, y, skipped = decode_many([], max_bytes=MAX, expect_shape=(3, 4))
    assert x.shape == (0, 3, 4) and x.dtype == torch.float32 and y.shape == (0,)
    assert not skipped


@pytest.mark.parametrize(
    ("x", "label"),
    [(torch.zeros(2, dtype=torch.float64), 0), (torch.zeros(2), 2**31)],
)
def test_encode_rejects_what_the_format_cannot_carry(x: torch.Tensor, label: int) -> None:
    with pytest.raises(UserError, match=r"wire\.encode"):
        encode(x, label)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.binary(max_size=40))
def test_random_bytes_never_raise_from_decode_many(junk: list[bytes], tail: bytes) -> None:
    msgs = [*junk, MAGIC + tail, MAGIC + bytes([1]) + tail]  # also reach past the magic check
    x, y, skipped = decode_many(msgs, max_bytes=64, expect_shape=None)
    assert x.shape[0] == y.shape[0] == len(msgs) - sum(skipped.values())
    assert set(skipped) <= set(REASONS)
