"""Load built-in and standard-format datasets as normalised tensors (one loader per name)."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import random
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from scadles.errors import UserError

log = logging.getLogger(__name__)

Array = npt.NDArray[Any]
Norm = Literal["none", "train"] | tuple[tuple[float, ...], tuple[float, ...]]

DATASETS: tuple[str, ...] = (
    "mnist1d", "digits", "synthetic", "cifar10", "cifar100", "mnist", "fashion_mnist", "npz",
)  # fmt: skip
FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
CIFAR_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet stats, as the paper
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_CIFAR_LAYOUT = {  # name -> (sub-folder of the archive, train files, test files, label key, C)
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                ("test_batch",), "labels", 10),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", 100),
}  # fmt: skip
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip
_SAFE_GLOBALS = {  # the only callables a CIFAR pickle may name (numpy arrays, py2 bytes)
    ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Dataset:
    """A train/test split held in memory as tensors."""

    name: str
    x_train: torch.Tensor  # (N, *shape) float32, normalised
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, *shape) float32
    y_test: torch.Tensor  # (M,) int64
    num_classes: int
    sample_bytes: int  # bytes of one raw sample on the wire

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Return the shape of one sample."""
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True, slots=True)
class _Request:
    path: str | None
    n_train: int | None
    n_test: int | None
    seed: int
    cache_dir: Path


@dataclass(frozen=True, slots=True)
class _Raw:
    x_train: Array  # (N, *shape) any numeric dtype
    y_train: Array  # (N,) integer
    x_test: Array
    y_test: Array
    num_classes: int
    sample_bytes: int
    scale: float = 1.0  # raw values are divided by this first
    norm: Norm = "none"  # then standardised: train scalar stats or per-channel constants


def load_dataset(
    name: str,
    *,
    path: str | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Dataset:
    """Load dataset `name`, subsample to n_train/n_test (seeded) and normalise it."""
    loader = _LOADERS.get(name)
    if loader is None:
        raise UserError(f"data.name: unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    for key, n in (("data.n_train", n_train), ("data.n_test", n_test)):
        if n is not None and n < 1:
            raise UserError(f"{key} must be >= 1, got {n}")
    if not 0 <= seed < 2**32:
        raise UserError(f"seed must be in [0, 2**32), got {seed}")
    if cache_dir is None:
        cache_dir = Path(os.environ.get("SCADLES_CACHE", Path.home() / ".cache" / "scadles"))
    raw = loader(_Request(path, n_train, n_test, seed, cache_dir))
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 1]).spawn(2)]
    keep_tr = _subsample(len(raw.y_train), n_train, rngs[0])
    keep_te = _subsample(len(raw.y_test), n_test, rngs[1])
    x_tr, x_te = _normalise(raw.x_train[keep_tr], raw.x_test[keep_te], raw.scale, raw.norm)
    return Dataset(
        name=name,
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(raw.y_train[keep_tr].astype(np.int64)),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(raw.y_test[keep_te].astype(np.int64)),
        num_classes=raw.num_classes,
        sample_bytes=raw.sample_bytes,
    )


def _subsample(n: int, want: int | None, rng: np.random.Generator) -> Array | slice:
    """Return sorted random indices of `want` of n samples, or all of them."""
    if want is None or want >= n:
        return slice(None)
    return np.sort(rng.permutation(n)[:want])


def _normalise(x_tr: Array, x_te: Array, scale: float, norm: Norm) -> tuple[Array, Array]:
    """Scale to float32 and standardise both splits with the same statistics."""
    a = np.ascontiguousarray(x_tr, dtype=np.float32) / np.float32(scale)
    b = np.ascontiguousarray(x_te, dtype=np.float32) / np.float32(scale)
    if norm == "none":
        return a, b
    if norm == "train":
        mean, std = np.float32(a.mean()), np.float32(a.std() or 1.0)
        return (a - mean) / std, (b - mean) / std
    shape = (1, -1) + (1,) * (a.ndim - 2)  # per channel, channel axis 1
    m = np.asarray(norm[0], np.float32).reshape(shape)
    s = np.asarray(norm[1], np.float32).reshape(shape)
    return (a - m) / s, (b - m) / s


def _split(y: Array, test_frac: float, rng: np.random.Generator) -> tuple[Array, Array]:
    """Split indices per class (stratified) into shuffled train and test index arrays."""
    perm = rng.permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]  # grouped by label, random within
    _, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    rank = np.arange(len(y)) - np.repeat(starts, counts)
    is_test = rank < np.repeat(np.round(counts * test_frac).astype(np.int64), counts)
    return rng.permutation(order[~is_test]), rng.permutation(order[is_test])


# --- built-in datasets ------------------------------------------------------------------------


def _load_mnist1d(req: _Request) -> _Raw:
    """Generate MNIST-1D (Greydanus 2020) once per (size, seed, split), then read the cache."""
    n_train, n_test = req.n_train or 20000, req.n_test or 4000
    num = -(-(n_train + n_test) // 10) * 10  # the package makes num // 10 samples per class
    file = req.cache_dir / f"mnist1d-v1-n{num}-train{n_train}-seed{req.seed}.npz"
    arrays = _read_cache(file)
    if arrays is None:
        arrays = _make_mnist1d(num, n_train, req.seed)
        _write_cache(file, arrays)
    x, y = arrays["x"], arrays["y"]
    x_te, y_te = arrays["x_test"][:n_test], arrays["y_test"][:n_test]
    return _Raw(x[:, None], y, x_te[:, None], y_te, 10, 40 * 4)  # (N, 1, 40) for Conv1d


def _make_mnist1d(num: int, n_train: int, seed: int) -> dict[str, Array]:
    """Run the mnist1d generator, restoring the global RNGs that it reseeds."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num, (n_train + 0.5) / num, seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _read_cache(file: Path) -> dict[str, Array] | None:
    """Return the cached arrays, or None when absent or unreadable."""
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zlib.error):
        return None
    return arrays if set(arrays) == {"x", "y", "x_test", "y_test"} else None


def _write_cache(file: Path, arrays: dict[str, Array]) -> None:
    """Write arrays atomically (temp file + rename); a read-only cache only logs."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                savez: Callable[..., None] = np.savez
                savez(f, **arrays)
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        log.warning("cannot write dataset cache %s: %s", file, e)


def _load_digits(req: _Request) -> _Raw:
    """Load sklearn's bundled 8x8 digits with a seeded stratified 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = np.asarray(bunch.images, np.float32)[:, None], np.asarray(bunch.target, np.int64)
    tr, te = _split(y, 0.2, np.random.default_rng([req.seed, 2]))
    return _Raw(x[tr], y[tr], x[te], y[te], 10, 64, scale=16.0, norm="train")


def _load_synthetic(req: _Request) -> _Raw:
    """Draw a seeded 10-class Gaussian mixture in 20 dimensions (unit noise)."""
    r_mean, r_train, r_test = (
        np.random.default_rng(s) for s in np.random.SeedSequence([req.seed, 3]).spawn(3)
    )
    means = r_mean.normal(0.0, 0.8, size=(10, 20))  # (C, D): LDA reaches ~93 % top-1

    def draw(n: int, rng: np.random.Generator) -> tuple[Array, Array]:
        y = rng.integers(0, 10, size=n)  # (n,)
        return (means[y] + rng.normal(size=(n, 20))).astype(np.float32), y

    x_tr, y_tr = draw(req.n_train or 4096, r_train)
    x_te, y_te = draw(req.n_test or 1024, r_test)
    return _Raw(x_tr, y_tr, x_te, y_te, 10, 20 * 4)


# --- file formats ------------------------------------------------------------------------------


def _dir(req: _Request, name: str, default: str | None = None) -> Path:
    """Return the directory in data.path (or the default), checking it exists."""
    path = req.path or default
    if path is None:
        raise UserError(f"data.path: required for dataset {name!r} (a directory), got none")
    if not Path(path).is_dir():
        raise UserError(f"data.path: directory not found: {path}")
    return Path(path)


def _load_cifar(name: str) -> Callable[[_Request], _Raw]:
    """Return a reader of the CIFAR 'python version' pickled batches."""

    def load(req: _Request) -> _Raw:
        sub, train_files, test_files, label_key, classes = _CIFAR_LAYOUT[name]
        d = _dir(req, name)
        if not (d / train_files[0]).exists() and (d / sub).is_dir():
            d = d / sub
        x_tr, y_tr = _cifar_batches(d, train_files, label_key, classes)
        x_te, y_te = _cifar_batches(d, test_files, label_key, classes)
        stats = CIFAR_STATS[name]
        return _Raw(x_tr, y_tr, x_te, y_te, classes, 3072, scale=255.0, norm=stats)

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
    except Exception as e:
        raise UserError(f"data.path: corrupt CIFAR batch {file}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise UserError(f"data.path: corrupt CIFAR batch {file}: not a dict")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or label_key not in obj:
        raise UserError(f"data.path: CIFAR batch {file} lacks keys 'data' and {label_key!r}")
    x, y = np.asarray(obj["data"]), np.asarray(obj[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (len(x),):
        raise UserError(
            f"data.path: corrupt CIFAR batch {file}: data {x.dtype}{list(x.shape)}, "
            f"labels {list(y.shape)}; expected uint8 (N, 3072) and (N,)"
        )
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < classes:
        raise UserError(f"data.path: CIFAR batch {file} has labels outside [0, {classes})")
    return x, y.astype(np.int64)


def _load_idx(name: str, default: str | None) -> Callable[[_Request], _Raw]:
    """Return a reader of MNIST-style IDX files (raw or .gz)."""

    def load(req: _Request) -> _Raw:
        d = _dir(req, name, default)
        x_tr, y_tr, x_te, y_te = (_read_idx(_find_idx(d, f), 3 if "images" in f else 1)
                                  for f in _IDX_FILES)  # fmt: skip
        for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
            if len(x) != len(y) or x.shape[1:] != (28, 28) or (len(y) and y.max() > 9):
                raise UserError(
                    f"data.path: {split} IDX files in {d} disagree: images {list(x.shape)}, "
                    f"labels {list(y.shape)}; expected (N, 28, 28) and (N,) labels 0-9"
                )
        return _Raw(x_tr[:, None], y_tr, x_te[:, None], y_te, 10, 784, scale=255.0, norm="train")

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
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated IDX file" if len(raw) < expected else "oversized IDX file"
        raise UserError(f"data.path: {what} {file}: expected {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _load_npz(req: _Request) -> _Raw:
    """Read arrays x, y (and optional x_test, y_test) from an .npz file."""
    if req.path is None:
        raise UserError("data.path: required for dataset 'npz' (an .npz file), got none")
    file = Path(req.path)
    if not file.is_file():
        raise UserError(f"data.path: file not found: {file}")
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise UserError(f"data.path: not a readable .npz file: {file}: {type(e).__name__}") from e
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
        tr, te = _split(y, 0.2, np.random.default_rng([req.seed, 4]))
        x, y, x_te, y_te = x[tr], y[tr], x[te], y[te]
    if len(x) == 0 or len(x_te) == 0 or x.shape[1:] != x_te.shape[1:]:
        raise UserError(f"data.path: {file}: need non-empty train/test of one sample shape")
    num_classes = int(max(y.max(), y_te.max())) + 1
    return _Raw(x, y, x_te, y_te, num_classes, int(x[0].nbytes))


def _npz_pair(file: Path, x: Array, y: Array, xk: str, yk: str) -> tuple[Array, Array]:
    """Check that (x, y) are (N, ...) numeric features and (N,) non-negative integer labels."""
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise UserError(
            f"data.path: {file}: {xk} must be numeric (N, ...), got {x.dtype}{list(x.shape)}"
        )
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise UserError(
            f"data.path: {file}: {yk} must be non-negative integer labels of shape ({len(x)},), "
            f"got {y.dtype}{list(y.shape)}"
        )
    return x, y.astype(np.int64)


_LOADERS: dict[str, Callable[[_Request], _Raw]] = {
    "mnist1d": _load_mnist1d,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
    "cifar10": _load_cifar("cifar10"),
    "cifar100": _load_cifar("cifar100"),
    "mnist": _load_idx("mnist", None),
    "fashion_mnist": _load_idx("fashion_mnist", FASHION_MNIST_PATH),
    "npz": _load_npz,
}
