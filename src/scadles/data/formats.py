"""Read the standard dataset file formats (CIFAR python batches, IDX raw or .gz, npz) as arrays."""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from scadles.errors import UserError

Array = npt.NDArray[Any]
Norm = Literal["none", "train"] | tuple[tuple[float, ...], tuple[float, ...]]

_CIFAR_LAYOUT = {  # name -> (sub-folder of the archive, train files, test files, label key, C)
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                ("test_batch",), "labels", 10),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", 100),
}  # fmt: skip
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip
MAX_CLASSES = (
    1 << 16
)  # labels at or above this are refused (the model would have that many outputs)
_SAFE_GLOBALS = {  # the only callables a CIFAR pickle may name (numpy arrays, py2 bytes)
    ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Request:
    """What a loader is asked for: data.path, subsample sizes, seed and cache folder."""

    path: str | None
    n_train: int | None
    n_test: int | None
    seed: int
    cache_dir: Path


@dataclass(frozen=True, slots=True)
class Raw:
    """A loader's arrays before subsampling and normalisation."""

    x_train: Array  # (N, *shape) any numeric dtype
    y_train: Array  # (N,) integer
    x_test: Array
    y_test: Array
    num_classes: int
    sample_bytes: int
    scale: float = 1.0  # raw values are divided by this first
    norm: Norm = "none"  # then standardised: train scalar stats or per-channel constants


def stratified_split(y: Array, test_frac: float, rng: np.random.Generator) -> tuple[Array, Array]:
    """Split indices per class (stratified) into shuffled train and test index arrays."""
    perm = rng.permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]  # grouped by label, random within
    _, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    rank = np.arange(len(y)) - np.repeat(starts, counts)
    is_test = rank < np.repeat(np.round(counts * test_frac).astype(np.int64), counts)
    return rng.permutation(order[~is_test]), rng.permutation(order[is_test])


def _dir(req: Request, name: str, default: str | None = None) -> Path:
    """Return the directory in data.path (or the default), checking it exists."""
    path = req.path or default
    if path is None:
        raise UserError(f"data.path: required for dataset {name!r} (a directory), got none")
    if not Path(path).is_dir():
        raise UserError(f"data.path: directory not found: {path}")
    return Path(path)


def cifar_reader(name: str, stats: Norm) -> Callable[[Request], Raw]:
    """Return a reader of the CIFAR 'python version' pickled batches, standardised by `stats`."""

    def load(req: Request) -> Raw:
        sub, train_files, test_files, label_key, classes = _CIFAR_LAYOUT[name]
        d = _dir(req, name)
        if not (d / train_files[0]).exists() and (d / sub).is_dir():
            d = d / sub
        x_tr, y_tr = _cifar_batches(d, train_files, label_key, classes)
        x_te, y_te = _cifar_batches(d, test_files, label_key, classes)
        _need_samples(d, len(x_tr), len(x_te))
        return Raw(x_tr, y_tr, x_te, y_te, classes, 3072, scale=255.0, norm=stats)

    return load


def _cifar_batches(d: Path, files: tuple[str, ...], key: str, classes: int) -> tuple[Array, Array]:
    """Read and concatenate CIFAR batches into (N, 3, 32, 32) uint8 and (N,) labels."""
    parts = [_cifar_batch(d / f, key, classes) for f in files]
    x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    return x, np.concatenate([p[1] for p in parts])


class _SafeUnpickler(pickle.Unpickler):
    """Unpickle only plain containers and numpy arrays (no arbitrary code)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(file: Path, label_key: str, classes: int) -> tuple[Array, Array]:
    """Read one pickled CIFAR batch, validating keys, dtype and sizes."""
    if not file.is_file():
        raise UserError(f"data.path: file not found: {file} (expected a CIFAR python batch)")
    try:
        with file.open("rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a broken pickle fails in many ways; all mean a corrupt file
        why = _one_line(f"{type(e).__name__}: {e}")
        raise UserError(f"data.path: corrupt CIFAR batch {file}: {why}") from e
    if not isinstance(obj, dict):
        raise UserError(f"data.path: corrupt CIFAR batch {file}: not a dict")
    obj = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or label_key not in obj:
        raise UserError(f"data.path: CIFAR batch {file} lacks keys 'data' and {label_key!r}")
    try:
        x, y = np.asarray(obj["data"]), np.asarray(obj[label_key])
    except (ValueError, TypeError, OverflowError) as e:  # ragged lists, odd objects
        raise UserError(f"data.path: corrupt CIFAR batch {file}: {type(e).__name__}") from e
    if (
        x.dtype != np.uint8
        or x.ndim != 2
        or x.shape[1] != 3072
        or y.shape != (len(x),)
        or (y.dtype.kind not in "iu" and len(y))
    ):
        raise UserError(
            f"data.path: corrupt CIFAR batch {file}: data {x.dtype}{list(x.shape)}, "
            f"labels {y.dtype}{list(y.shape)}; expected uint8 (N, 3072) and (N,) integers"
        )
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < classes:
        raise UserError(f"data.path: CIFAR batch {file} has labels outside [0, {classes})")
    return x, y.astype(np.int64)


def idx_reader(name: str, default: str | None) -> Callable[[Request], Raw]:
    """Return a reader of MNIST-style IDX files (raw or .gz)."""

    def load(req: Request) -> Raw:
        d = _dir(req, name, default)
        x_tr, y_tr, x_te, y_te = (_read_idx(_find_idx(d, f), 3 if "images" in f else 1)
                                  for f in _IDX_FILES)  # fmt: skip
        for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
            if len(x) != len(y) or x.shape[1:] != (28, 28) or (len(y) and y.max() > 9):
                raise UserError(
                    f"data.path: {split} IDX files in {d} disagree: images {list(x.shape)}, "
                    f"labels {list(y.shape)}; expected (N, 28, 28) and (N,) labels 0-9"
                )
        _need_samples(d, len(x_tr), len(x_te))
        return Raw(x_tr[:, None], y_tr, x_te[:, None], y_te, 10, 784, scale=255.0, norm="train")

    return load


def _find_idx(d: Path, base: str) -> Path:
    """Return the IDX file `base` in d, raw or gzipped, hyphen or dot before 'idx'."""
    for stem in (base, base.replace("-idx", ".idx")):
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    raise UserError(f"data.path: {d} has no {base} (or {base}.gz)")


def _read_idx(file: Path, ndim: int) -> Array:
    """Read an unsigned-byte IDX file with `ndim` dimensions, validating magic and size."""
    try:
        raw = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"data.path: cannot read {file}: {type(e).__name__}: {e}") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(
            f"data.path: truncated IDX file {file}: expected {header}+ bytes, got {len(raw)}"
        )
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:
        raise UserError(
            f"data.path: bad IDX magic in {file}: expected {0x0800 + ndim:#010x}, got {magic:#010x}"
        )
    dims = tuple(int(v) for v in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + math.prod(dims)  # exact: no int64 overflow for absurd dims
    if len(raw) != expected:
        what = "truncated IDX file" if len(raw) < expected else "oversized IDX file"
        raise UserError(f"data.path: {what} {file}: expected {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_npz(req: Request) -> Raw:
    """Read arrays x, y (and optional x_test, y_test) from an .npz file."""
    if req.path is None:
        raise UserError("data.path: required for dataset 'npz' (an .npz file), got none")
    file = Path(req.path)
    if not file.is_file():
        raise UserError(f"data.path: file not found: {file}")
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zip, zlib, npy-header and pickle-refusal errors alike
        raise UserError(f"data.path: not a readable .npz file: {file}: {type(e).__name__}") from e
    odd = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if odd:  # numpy returns raw bytes for members that are not .npy files
        raise UserError(f"data.path: {file}: member(s) {odd} are not .npy arrays")
    keys = (
        ("x", "y", "x_test", "y_test") if "x_test" in arrays or "y_test" in arrays else ("x", "y")
    )
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise UserError(f"data.path: {file} lacks array(s) {missing}; found {sorted(arrays)}")
    x, y = _npz_pair(file, arrays["x"], arrays["y"], "x", "y")
    if "x_test" in arrays:
        x_te, y_te = _npz_pair(file, arrays["x_test"], arrays["y_test"], "x_test", "y_test")
    else:
        tr, te = stratified_split(y, 0.2, np.random.default_rng([req.seed, 4]))
        x, y, x_te, y_te = x[tr], y[tr], x[te], y[te]
    if len(x) == 0 or len(x_te) == 0 or x.shape[1:] != x_te.shape[1:] or x[0].size == 0:
        raise UserError(f"data.path: {file}: need non-empty train/test of one sample shape")
    num_classes = int(max(y.max(), y_te.max())) + 1
    return Raw(x, y, x_te, y_te, num_classes, int(x[0].nbytes))


def _npz_pair(file: Path, x: Array, y: Array, xk: str, yk: str) -> tuple[Array, Array]:
    """Check that (x, y) are (N, ...) numeric features and (N,) non-negative integer labels."""
    if x.ndim < 2 or x.dtype.kind not in "biuf":
        raise UserError(
            f"data.path: {file}: {xk} must be numeric (N, ...), got {x.dtype}{list(x.shape)}"
        )
    if y.shape != (len(x),) or y.dtype.kind not in "iu" or (y < 0).any():
        raise UserError(
            f"data.path: {file}: {yk} must be non-negative integer labels of shape ({len(x)},), "
            f"got {y.dtype}{list(y.shape)}"
        )
    if len(y) and int(y.max()) >= MAX_CLASSES:
        raise UserError(f"data.path: {file}: {yk} has label {int(y.max())} >= {MAX_CLASSES}")
    if x.dtype.kind == "f" and not _finite_as_float32(x):
        raise UserError(f"data.path: {file}: {xk} holds NaN, infinity or values beyond float32")
    return x, y.astype(np.int64)


def _finite_as_float32(x: Array) -> bool:
    """Return whether every value of x is finite once cast to float32 (as training sees it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(x.astype(np.float32, copy=False)).all())


def _need_samples(where: Path, n_train: int, n_test: int) -> None:
    """Refuse a dataset whose train or test split is empty."""
    if n_train == 0 or n_test == 0:
        raise UserError(f"data.path: {where}: {n_train} train and {n_test} test samples; need >= 1")


def _one_line(text: str) -> str:
    """Return text on one line, cut to a readable length."""
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."
