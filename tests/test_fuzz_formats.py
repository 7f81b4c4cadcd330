"""Fuzzed data files: every corrupt CIFAR / IDX / npz file loads consistently or is a UserError.

Each property writes a valid tiny dataset, breaks one file (truncation, flipped bytes, appended
bytes, a rewritten header, random arrays of random dtypes and shapes) and loads it through
``load_dataset``. Allowed outcomes: a Dataset whose shapes, dtypes and labels agree, or a
one-line UserError naming the dataset's path. Anything else (a pickle, zip, zlib or numpy error,
a RecursionError) fails the property.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st

from scadles.data.datasets import Dataset, load_dataset
from scadles.errors import UserError

pytestmark = pytest.mark.fuzz

CIFAR10 = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
IDX = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
IDX += ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@contextmanager
def _tmp() -> Iterator[Path]:
    """Yield a fresh directory (function-scoped fixtures do not mix with @given)."""
    with tempfile.TemporaryDirectory(prefix="scadles-fuzz-") as d:
        yield Path(d)


def _check(load: Callable[[], Dataset], where: Path) -> Dataset | None:
    """Load; return the Dataset after checking it is consistent, or None after a good UserError."""
    try:
        ds = load()
    except UserError as err:
        msg = str(err)
        assert "\n" not in msg and "\r" not in msg, msg
        assert str(where) in msg, f"message does not name {where}: {msg}"
        _event("UserError: " + msg.replace(str(where), "<path>")[:40])
        return None
    n, m = len(ds.y_train), len(ds.y_test)
    assert n > 0 and m > 0
    assert ds.x_train.shape[0] == n and ds.x_test.shape[0] == m
    assert ds.x_train.shape[1:] == ds.x_test.shape[1:] and ds.x_train[0].numel() > 0
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert bool(torch.isfinite(ds.x_train).all()) and bool(torch.isfinite(ds.x_test).all())
    y = torch.cat([ds.y_train, ds.y_test])
    assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes
    _event("loaded")
    return ds


def _event(what: str) -> None:
    """Count an outcome for --hypothesis-show-statistics (inside a property only)."""
    if currently_in_test_context():
        event(what)


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    """Return raw truncated, with bytes flipped, with bytes appended, or spliced."""
    how = data.draw(st.sampled_from(["truncate", "flip", "append", "splice"]))
    if how == "truncate":
        return raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    if how == "append":
        return raw + data.draw(st.binary(min_size=1, max_size=64))
    out = bytearray(raw)
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(out) - 1))
            out[i] ^= data.draw(st.integers(1, 255))
        return bytes(out)
    i = data.draw(st.integers(0, len(out)))
    j = data.draw(st.integers(i, min(i + 64, len(out))))
    return bytes(out[:i]) + data.draw(st.binary(max_size=64)) + bytes(out[j:])


# --- CIFAR python batches ------------------------------------------------------------------------


def _cifar_batch(n: int, seed: int) -> dict[bytes, Any]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
    }


def _write_cifar10(d: Path) -> None:
    for i, name in enumerate(CIFAR10):
        (d / name).write_bytes(pickle.dumps(_cifar_batch(1 + i % 2, i), protocol=2))


_DTYPES = ["u1", "i1", "<i2", ">u2", "<i4", "<i8", "<u8", "<f2", "<f4", "<f8", "?", "<c8", "U2"]
_dims = st.lists(st.integers(0, 4), max_size=3).map(tuple)


@st.composite
def _array(draw: st.DrawFn, shape: st.SearchStrategy[tuple[int, ...]] = _dims) -> np.ndarray:
    """Draw a small array of a random dtype, shape and values (NaN, inf and extremes included)."""
    dtype: np.dtype[Any] = np.dtype(draw(st.sampled_from(_DTYPES)))
    dims = draw(shape)
    size = int(np.prod(dims))
    if dtype.kind == "U":
        return np.asarray(draw(st.lists(st.text(max_size=2), min_size=size, max_size=size)),
                          dtype=dtype).reshape(dims)  # fmt: skip
    if dtype.kind in "fc":
        vals = st.floats(allow_nan=True, allow_infinity=True, width=64)
        with np.errstate(over="ignore", invalid="ignore"):
            flat = np.asarray(draw(st.lists(vals, min_size=size, max_size=size)), np.float64)
            return flat.astype(dtype).reshape(dims)
    if dtype.kind == "b":
        bools = draw(st.lists(st.booleans(), min_size=size, max_size=size))
        return np.asarray(bools, bool).reshape(dims)
    info = np.iinfo(dtype)
    small = st.integers(max(int(info.min), -1), min(int(info.max), 12))
    ints = draw(st.lists(st.integers(int(info.min), int(info.max)) | small, min_size=size,
                         max_size=size))  # fmt: skip
    return np.asarray(ints, dtype=dtype).reshape(dims)


_label_value = st.one_of(
    st.integers(-3, 12), st.integers(), st.floats(), st.text(max_size=3), st.none(),
    st.binary(max_size=3),
)  # fmt: skip
_labels = st.one_of(
    st.lists(_label_value, max_size=4),
    st.lists(st.lists(st.integers(0, 9), max_size=2), max_size=3),
    _array(),
    _label_value,
)
_data = st.one_of(
    _array(st.tuples(st.integers(0, 2), st.sampled_from([3072, 3071, 0, 1]))),
    _array(),
    st.lists(st.lists(st.integers(0, 255), max_size=3), max_size=3),
    st.binary(max_size=8),
    st.none(),
)


@given(st.data())
def test_fuzzed_cifar_batch_loads_or_is_a_user_error(data: st.DataObject) -> None:
    with _tmp() as d:
        _write_cifar10(d)
        victim = d / data.draw(st.sampled_from(CIFAR10))
        if data.draw(st.booleans()):
            victim.write_bytes(_mutate(data, victim.read_bytes()))
        else:  # a well-formed pickle of the wrong things
            batch: Any = {
                data.draw(st.sampled_from([b"data", "data", b"\xff", 3])): data.draw(_data),
                data.draw(st.sampled_from([b"labels", "labels", b"fine_labels"])): data.draw(
                    _labels
                ),
            }
            if data.draw(st.integers(0, 9)) == 0:
                batch = data.draw(st.sampled_from([[batch], None, b"x", {(): 1}]))
            victim.write_bytes(pickle.dumps(batch, protocol=data.draw(st.integers(2, 5))))
        ds = _check(lambda: load_dataset("cifar10", path=str(d)), d)
        if ds is not None:
            assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10


# --- IDX (MNIST) ---------------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(v).to_bytes(4, "big") for v in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_mnist(d: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    shapes = {IDX[0]: (3, 28, 28), IDX[1]: (3,), IDX[2]: (2, 28, 28), IDX[3]: (2,)}
    for name, shape in shapes.items():
        hi = 10 if "labels" in name else 256
        raw = _idx_bytes(rng.integers(0, hi, shape))
        (d / (name + ".gz" * gz)).write_bytes(gzip.compress(raw) if gz else raw)


@given(st.data())
def test_fuzzed_idx_file_loads_or_is_a_user_error(data: st.DataObject) -> None:
    gz = data.draw(st.booleans())
    with _tmp() as d:
        _write_mnist(d, gz)
        victim = d / (data.draw(st.sampled_from(IDX)) + ".gz" * gz)
        raw = victim.read_bytes()
        how = data.draw(st.sampled_from(["bytes", "content", "header"]))
        if how == "bytes":  # break the file as stored (the gzip stream when gz)
            victim.write_bytes(_mutate(data, raw))
        else:  # break the IDX content, then store it the same way
            content = gzip.decompress(raw) if gz else raw
            if how == "content":
                content = _mutate(data, content)
            else:
                ndim = data.draw(st.integers(0, 4))
                dims = data.draw(st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 30),
                                          min_size=ndim, max_size=ndim))  # fmt: skip
                head = bytes([0, 0, data.draw(st.sampled_from([8, 9, 13])), ndim])
                head += b"".join(v.to_bytes(4, "big") for v in dims)
                content = head + data.draw(st.binary(max_size=3200))
            victim.write_bytes(gzip.compress(content) if gz else content)
        ds = _check(lambda: load_dataset("mnist", path=str(d)), d)
        if ds is not None:
            assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10


# --- npz -----------------------------------------------------------------------------------------


def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # object arrays are pickled: allow_pickle=False must refuse them
    return buf.getvalue()


_npz_key = st.sampled_from(["x", "y", "x_test", "y_test", "z"])
_npz_value = st.one_of(
    _array(),
    _array(st.tuples(st.integers(0, 6), st.integers(0, 3))),
    _array(st.tuples(st.integers(0, 6))),
    st.lists(st.integers(-2, 5), max_size=6).map(lambda v: np.asarray(v, dtype=object)),
)


@st.composite
def _good_npz(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Draw a valid npz content (x, y and maybe x_test, y_test) with random dtypes."""
    n = draw(st.integers(5, 12))
    x_dtype = draw(st.sampled_from(["u1", "<i2", "<f2", "<f4", ">f8", "?"]))
    y_dtype = draw(st.sampled_from(["u1", "<i4", ">i8", "<u8"]))
    classes = draw(st.integers(1, 4))
    out = {"x": np.ones((n, 2), x_dtype), "y": (np.arange(n) % classes).astype(y_dtype)}
    if draw(st.booleans()):
        out |= {"x_test": np.ones((2, 2), x_dtype), "y_test": np.zeros(2, y_dtype)}
    return out


@given(st.data())
def test_fuzzed_npz_loads_or_is_a_user_error(data: st.DataObject) -> None:
    with _tmp() as d:
        f = d / "data.npz"
        arrays = data.draw(_good_npz())
        how = data.draw(st.sampled_from(["bytes", "arrays", "arrays", "member"]))
        if how == "bytes":
            f.write_bytes(_mutate(data, _npz_bytes(arrays)))
        elif how == "arrays":
            arrays |= data.draw(st.dictionaries(_npz_key, _npz_value, min_size=1, max_size=3))
            for k in data.draw(st.lists(_npz_key, max_size=2)):
                arrays.pop(k, None)
            f.write_bytes(_npz_bytes(arrays))
        else:  # a zip member that is not an .npy file at all
            with zipfile.ZipFile(f, "w") as z:
                for k, v in arrays.items():
                    z.writestr(k + ".npy", _npy(v))
                z.writestr(data.draw(_npz_key), data.draw(st.binary(max_size=32)))
        _check(lambda: load_dataset("npz", path=str(f), seed=data.draw(st.integers(0, 3))), f)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


# --- the inputs that once escaped as other exceptions (found by the properties above) -----------

_CIFAR_FOUND = {
    "ragged data list (ValueError)": {b"data": [[1, 2], [3]], b"labels": [0, 1]},
    "non-UTF-8 key (UnicodeDecodeError)": {b"\xff": 1, b"data": b"", b"labels": []},
    "NaN labels (ValueError in int())": {
        b"data": np.zeros((2, 3072), np.uint8),
        b"labels": [float("nan"), 1.0],
    },
    "string labels": {b"data": np.zeros((1, 3072), np.uint8), b"labels": ["a"]},
    "empty batches everywhere": {b"data": np.zeros((0, 3072), np.uint8), b"labels": []},
}


@pytest.mark.parametrize("batch", _CIFAR_FOUND.values(), ids=list(_CIFAR_FOUND))
def test_found_cifar_batches_are_user_errors(batch: dict[bytes, Any]) -> None:
    with _tmp() as d:
        _write_cifar10(d)
        for name in CIFAR10 if batch[b"labels"] == [] else ["test_batch"]:
            (d / name).write_bytes(pickle.dumps(batch, protocol=4))
        assert _check(lambda: load_dataset("cifar10", path=str(d)), d) is None


def test_found_idx_dims_overflowing_int64_are_a_user_error() -> None:
    with _tmp() as d:
        _write_mnist(d, gz=False)
        head = (
            bytes([0, 0, 8, 3]) + (2**32 - 1).to_bytes(4, "big") * 2 + (1 << 30).to_bytes(4, "big")
        )
        (d / IDX[0]).write_bytes(head)  # np.prod of these dims wraps to 0 in int64
        assert _check(lambda: load_dataset("mnist", path=str(d)), d) is None


_NPZ_FOUND = {
    "complex x": {"x": np.ones((6, 2), np.complex64), "y": np.arange(6) % 2},
    "bool y": {"x": np.ones((6, 2)), "y": np.arange(6) % 2 == 0},
    "NaN in x": {"x": np.full((6, 2), np.nan), "y": np.arange(6) % 2},
    "float64 beyond float32": {"x": np.full((6, 2), 1e300), "y": np.arange(6) % 2},
    "label 2**40 (a model of 2**40 outputs)": {
        "x": np.ones((6, 2)),
        "y": np.arange(6) << 40,
        "x_test": np.ones((1, 2)),
        "y_test": np.zeros(1, int),
    },
    "empty samples": {"x": np.ones((6, 0)), "y": np.arange(6) % 2},
    "object y (pickle refused)": {"x": np.ones((6, 2)), "y": np.arange(6).astype(object)},
}


@pytest.mark.parametrize("arrays", _NPZ_FOUND.values(), ids=list(_NPZ_FOUND))
def test_found_npz_contents_are_user_errors(arrays: dict[str, np.ndarray]) -> None:
    with _tmp() as d:
        f = d / "d.npz"
        f.write_bytes(_npz_bytes(arrays))
        assert _check(lambda: load_dataset("npz", path=str(f)), f) is None


def test_found_npz_member_that_is_not_npy_is_a_user_error() -> None:
    with _tmp() as d:
        f = d / "d.npz"
        with zipfile.ZipFile(f, "w") as z:  # numpy hands back raw bytes for such a member
            z.writestr("x.npy", _npy(np.ones((6, 2))))
            z.writestr("y", b"\x00\x01")
        assert _check(lambda: load_dataset("npz", path=str(f)), f) is None
