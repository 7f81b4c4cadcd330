"""Fuzzed stream messages: structured headers, flipped bits, wrong sizes, dtypes and shapes.

Properties: `decode` raises nothing but WireError (with one of REASONS); `decode_many` never
raises, keeps exactly the messages `decode` accepts (same values, cast to float32) and counts
every other one under the reason `decode` gives. tests/live/test_wire.py has the per-reason cases.
"""

from __future__ import annotations

import struct
from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scadles.live.wire import _HEAD, MAGIC, REASONS, WireError, decode, decode_many, encode

pytestmark = pytest.mark.fuzz

MAX = 256
_DTYPE = {1: torch.float32, 2: torch.float16, 3: torch.uint8}
_VALUES = [0.0, -1.5, 3.0, 65504.0, 1e30, 1e-8, float("inf"), -float("inf"), float("nan")]


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    """Draw a message near the format: a valid one, mutated, or built from random fields."""
    how = draw(st.sampled_from(["valid", "flipped", "fields"]))
    if how != "fields":
        code = draw(st.sampled_from(sorted(_DTYPE)))
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
        x = torch.tensor(draw(st.sampled_from(_VALUES)))
        x = x.expand(shape).to(_DTYPE[code]) if code != 3 else torch.zeros(shape, dtype=torch.uint8)
        msg = bytearray(encode(x, draw(st.integers(-3, 12))))
        for _ in range(draw(st.integers(0 if how == "valid" else 1, 3))):
            i = draw(st.integers(0, len(msg) - 1))
            msg[i] ^= draw(st.integers(1, 255))
        return bytes(msg)
    ndim = draw(st.integers(0, 6) | st.integers(0, 255))
    head = _HEAD.pack(
        draw(st.sampled_from([MAGIC, b"SCDX", b"\0\0\0\0"])),
        draw(st.sampled_from([1, 1, 1, 0, 2, 255])),
        draw(st.integers(0, 255) | st.sampled_from(sorted(_DTYPE))),
        draw(st.integers(-(2**31), 2**31 - 1) | st.integers(-2, 12)),
        ndim,
    )
    dims = draw(st.lists(st.integers(0, 4) | st.integers(0, 2**32 - 1), max_size=min(ndim, 8)))
    packed = struct.pack(f"<{len(dims)}I", *dims)
    return (head + packed + draw(st.binary(max_size=40)))[: draw(st.integers(0, MAX + 16))]


@given(st.lists(_message(), max_size=5), st.booleans(), st.sampled_from([None, 10]))
def test_decode_many_agrees_with_decode_and_never_raises(
    msgs: list[bytes], fix_shape: bool, classes: int | None
) -> None:
    expect = None
    if fix_shape:  # the shape of the first message that decodes, as a consumer would expect it
        for m in msgs:
            try:
                expect = tuple(decode(m, max_bytes=MAX, num_classes=classes)[0].shape)
                break
            except WireError:
                continue
    kept, reasons = [], Counter[str]()
    shape = expect
    for m in msgs:  # the oracle: one decode per message, the first good one fixing the shape
        try:
            x, label = decode(m, max_bytes=MAX, expect_shape=shape, num_classes=classes)
        except WireError as err:
            assert err.reason in REASONS and "\n" not in str(err)
            reasons[err.reason] += 1
            continue
        shape = tuple(x.shape)
        kept.append((x, label))
    xs, ys, skipped = decode_many(msgs, max_bytes=MAX, expect_shape=expect, num_classes=classes)
    assert ys.tolist() == [label for _, label in kept]
    assert xs.dtype == torch.float32 and xs.shape[0] == len(kept)
    for row, (x, _) in zip(xs, kept, strict=True):
        assert torch.equal(row, x.float())
    assert dict(skipped) == dict(reasons)


@given(
    st.sampled_from(sorted(_DTYPE)),
    st.lists(st.integers(0, 4), max_size=4),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 2**32 - 1),
)
def test_round_trip_of_random_samples(code: int, shape: list[int], label: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, tuple(shape), generator=gen).to(_DTYPE[code])
    got, got_label = decode(encode(x, label), max_bytes=1 << 12, expect_shape=tuple(shape))
    assert got_label == label and got.dtype == x.dtype and torch.equal(got, x)


def test_found_empty_sample_of_absurd_extent_is_skipped_not_raised() -> None:
    # shape (0, 2**32-1, 2**32-1): zero bytes of payload, but torch overflows computing strides
    dims = (0, 2**32 - 1, 2**32 - 1)
    msg = _HEAD.pack(MAGIC, 1, 1, 0, 3) + struct.pack("<3I", *dims)
    with pytest.raises(WireError) as err:
        decode(msg, max_bytes=MAX)
    assert err.value.reason == "oversized"
    x, y, skipped = decode_many([msg, encode(torch.ones(2), 1)], max_bytes=MAX)
    assert skipped == {"oversized": 1} and x.shape == (1, 2) and y.tolist() == [1]
