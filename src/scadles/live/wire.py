"""The wire format of one streamed sample: a small fixed header, then the raw tensor payload.

Every Kafka message and every Redis stream entry that scadles produces or consumes carries exactly
one sample (the paper's producers send one image per message, [authors' code])::

    offset  size     field    meaning
    0       4        magic    b"SCDL"
    4       1        version  u8, currently 1
    5       1        dtype    u8: 1 = float32, 2 = float16, 3 = uint8
    6       4        label    i32, little-endian
    10      1        ndim     u8, number of sample dimensions (0..255)
    11      4*ndim   shape    u32 each, little-endian
    11+4*ndim ...    payload  prod(shape) * itemsize bytes, C order, little-endian elements

A message is valid when it is at most ``max_bytes`` long, has the magic and version above, a known
dtype code, a payload of exactly the announced size, finite values, the expected sample shape (when
one is expected) and a label in ``[0, num_classes)`` (when the class count is given). ``decode``
raises ``WireError`` naming the first broken rule (its ``reason`` is one of ``REASONS``);
``decode_many`` skips bad messages, counts them by reason and never raises. uint8 payloads are
cast to the output dtype without rescaling.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from scadles.errors import UserError

MAGIC = b"SCDL"
VERSION = 1
_HEAD = struct.Struct("<4sBBiB")  # magic, version, dtype, label, ndim
HEADER_BYTES = _HEAD.size  # 11, before the shape

# dtype code -> (torch dtype, little-endian numpy dtype)
DTYPES: dict[int, tuple[torch.dtype, np.dtype[np.generic]]] = {
    1: (torch.float32, np.dtype("<f4")),
    2: (torch.float16, np.dtype("<f2")),
    3: (torch.uint8, np.dtype("u1")),
}
_CODES = {torch_dtype: code for code, (torch_dtype, _) in DTYPES.items()}
_I32 = (-(2**31), 2**31 - 1)

REASONS = (
    "oversized",
    "bad_magic",
    "bad_version",
    "truncated_header",
    "unknown_dtype",
    "shape_mismatch",
    "truncated_payload",
    "payload_size",
    "non_finite",
    "bad_label",
)


class WireError(ValueError):
    """A message that does not follow the wire format; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def encode(x: torch.Tensor, label: int) -> bytes:
    """Serialise one sample and its label into one message."""
    code = _CODES.get(x.dtype)
    if code is None:
        allowed = ", ".join(str(d) for d in _CODES)
        raise UserError(f"wire.encode: dtype {x.dtype} not supported; allowed: {allowed}")
    if not _I32[0] <= label <= _I32[1]:
        raise UserError(f"wire.encode: label {label} does not fit in a signed 32-bit integer")
    if x.dim() > 255:
        raise UserError(f"wire.encode: ndim {x.dim()} too large; at most 255")
    head = _HEAD.pack(MAGIC, VERSION, code, label, x.dim())
    shape = struct.pack(f"<{x.dim()}I", *x.shape)
    payload = x.detach().cpu().contiguous().numpy().astype(DTYPES[code][1], copy=False)
    return head + shape + payload.tobytes()


def _parse(
    msg: bytes,
    max_bytes: int,
    expect_shape: tuple[int, ...] | None,
    num_classes: int | None,
) -> tuple[int, int, tuple[int, ...], int]:
    """Check a message's header and size; return (dtype code, label, shape, payload offset)."""
    n = len(msg)
    if n > max_bytes:
        raise WireError("oversized", f"{n} bytes > max_bytes {max_bytes}")
    if msg[: min(n, 4)] != MAGIC[: min(n, 4)]:
        raise WireError("bad_magic", f"starts with {bytes(msg[:4])!r}, expected {MAGIC!r}")
    if n < HEADER_BYTES:
        raise WireError("truncated_header", f"{n} bytes < header {HEADER_BYTES}")
    _, version, code, label, ndim = _HEAD.unpack_from(msg)
    if version != VERSION:
        raise WireError("bad_version", f"version {version}, expected {VERSION}")
    if code not in DTYPES:
        raise WireError("unknown_dtype", f"dtype code {code}, known {sorted(DTYPES)}")
    start = HEADER_BYTES + 4 * ndim
    if n < start:
        raise WireError("truncated_header", f"{n} bytes < header with shape {start}")
    shape = struct.unpack_from(f"<{ndim}I", msg, HEADER_BYTES)
    if expect_shape is not None and shape != expect_shape:
        raise WireError("shape_mismatch", f"shape {shape}, expected {expect_shape}")
    if math.prod(max(d, 1) for d in shape) > max_bytes:  # an empty sample of absurd extent
        raise WireError("oversized", f"shape {shape} spans more than max_bytes {max_bytes}")
    want = math.prod(shape) * DTYPES[code][1].itemsize
    if n - start < want:
        raise WireError("truncated_payload", f"payload {n - start} bytes < {want}")
    if n - start > want:
        raise WireError("payload_size", f"payload {n - start} bytes > {want}")
    if num_classes is not None and not 0 <= label < num_classes:
        raise WireError("bad_label", f"label {label} not in [0, {num_classes})")
    return code, label, shape, start


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Return a (n,) mask of rows whose values are all finite."""
    if not x.is_floating_point():
        return torch.ones(x.shape[0], dtype=torch.bool)
    return torch.isfinite(x.reshape(x.shape[0], math.prod(x.shape[1:]))).all(dim=1)


def decode(
    msg: bytes,
    *,
    max_bytes: int,
    expect_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Parse one message into (sample in its encoded dtype, label); raise WireError if invalid."""
    code, label, shape, start = _parse(msg, max_bytes, expect_shape, num_classes)
    torch_dtype, np_dtype = DTYPES[code]
    flat = np.frombuffer(msg, dtype=np_dtype, offset=start).astype(np_dtype.newbyteorder("="))
    x = torch.from_numpy(flat).to(torch_dtype).reshape(shape)
    if not bool(_finite_rows(x.reshape(1, -1))[0]):
        raise WireError("non_finite", "payload holds NaN or infinity")
    return x, label


def decode_many(
    msgs: Iterable[bytes],
    *,
    max_bytes: int,
    expect_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, Counter[str]]:
    """Decode a batch of messages into (x (n, *shape), y (n,)), skipping and counting bad ones.

    Without ``expect_shape`` the first valid message fixes the shape and later messages of
    another shape count as ``shape_mismatch``. Never raises on message content.
    """
    skipped: Counter[str] = Counter()
    shape = expect_shape
    codes: list[int] = []
    labels: list[int] = []
    payloads: list[bytes] = []
    for msg in msgs:
        try:
            if shape is None:  # only a fully valid (also finite) message may fix the shape
                decode(msg, max_bytes=max_bytes, num_classes=num_classes)
            code, label, got, start = _parse(msg, max_bytes, shape, num_classes)
        except WireError as err:
            skipped[err.reason] += 1
            continue
        shape = got
        codes.append(code)
        labels.append(label)
        payloads.append(bytes(memoryview(msg)[start:]))
    x = _stack(payloads, codes, shape or (), dtype)  # (n, *shape)
    y = torch.tensor(labels, dtype=torch.int64)  # (n,)
    keep = _finite_rows(x)
    if not bool(keep.all()):
        skipped["non_finite"] += int((~keep).sum())
        x, y = x[keep], y[keep]
    return x, y, skipped


def _stack(
    payloads: Sequence[bytes], codes: Sequence[int], shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    """Stack validated payloads of one sample shape into an (n, *shape) tensor, a pass per dtype."""
    x = torch.empty((len(payloads), *shape), dtype=dtype)  # (n, *shape)
    code_t = torch.tensor(codes, dtype=torch.int64)  # (n,)
    for code, (torch_dtype, np_dtype) in DTYPES.items():
        rows = (code_t == code).nonzero().flatten()
        if rows.numel() == 0:
            continue
        joined = b"".join(payloads[i] for i in rows.tolist())
        flat = np.frombuffer(joined, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
        x[rows] = torch.from_numpy(flat).to(torch_dtype).reshape(rows.numel(), *shape).to(dtype)
    return x


def decode_valid(
    msgs: Sequence[bytes],
    *,
    max_bytes: int,
    expect_shape: tuple[int, ...],
    num_classes: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, list[int], Counter[str]]:
    """Decode messages like ``decode_many`` and also return which inputs the rows came from.

    Returns (x (n, *shape), y (n,), kept, skipped): ``kept[r]`` is the index in ``msgs`` of row
    ``r``, so a caller can acknowledge valid and skipped messages by their broker ids.
    """
    skipped: Counter[str] = Counter()
    kept: list[int] = []
    codes: list[int] = []
    labels: list[int] = []
    payloads: list[bytes] = []
    for i, msg in enumerate(msgs):
        try:
            code, label, _, start = _parse(msg, max_bytes, expect_shape, num_classes)
        except WireError as err:
            skipped[err.reason] += 1
            continue
        kept.append(i)
        codes.append(code)
        labels.append(label)
        payloads.append(bytes(memoryview(msg)[start:]))
    x = _stack(payloads, codes, expect_shape, dtype)  # (n, *shape)
    y = torch.tensor(labels, dtype=torch.int64)  # (n,)
    finite = _finite_rows(x)  # (n,)
    if not bool(finite.all()):
        skipped["non_finite"] += int((~finite).sum())
        x, y = x[finite], y[finite]
        kept = [i for i, ok in zip(kept, finite.tolist(), strict=True) if ok]
    return x, y, kept, skipped
