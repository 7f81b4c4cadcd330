"""Load built-in and standard-format datasets as normalised tensors (one loader per name)."""

from __future__ import annotations

import logging
import os
import random
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scadles.data.formats import (
    Array,
    Norm,
    Raw,
    Request,
    cifar_reader,
    idx_reader,
    read_npz,
    stratified_split,
)
from scadles.errors import UserError

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = (
    "mnist1d", "digits", "synthetic", "cifar10", "cifar100", "mnist", "fashion_mnist", "npz",
)  # fmt: skip
FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
CIFAR_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet stats, as the paper
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


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
    raw = loader(Request(path, n_train, n_test, seed, cache_dir))
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


# --- built-in datasets ------------------------------------------------------------------------


def _load_mnist1d(req: Request) -> Raw:
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
    return Raw(x[:, None], y, x_te[:, None], y_te, 10, 40 * 4)  # (N, 1, 40) for Conv1d


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


def _load_digits(req: Request) -> Raw:
    """Load sklearn's bundled 8x8 digits with a seeded stratified 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = np.asarray(bunch.images, np.float32)[:, None], np.asarray(bunch.target, np.int64)
    tr, te = stratified_split(y, 0.2, np.random.default_rng([req.seed, 2]))
    return Raw(x[tr], y[tr], x[te], y[te], 10, 64, scale=16.0, norm="train")


def _load_synthetic(req: Request) -> Raw:
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
    return Raw(x_tr, y_tr, x_te, y_te, 10, 20 * 4)


_LOADERS: dict[str, Callable[[Request], Raw]] = {
    "mnist1d": _load_mnist1d,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
    "cifar10": cifar_reader("cifar10", CIFAR_STATS["cifar10"]),
    "cifar100": cifar_reader("cifar100", CIFAR_STATS["cifar100"]),
    "mnist": idx_reader("mnist", None),
    "fashion_mnist": idx_reader("fashion_mnist", FASHION_MNIST_PATH),
    "npz": read_npz,
}
