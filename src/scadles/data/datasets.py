"""Load built-in and standard-format datasets as normalised tensors (one loader per name).

``DATASETS`` maps each ``data.name`` to its ``DatasetLoader``; ``DATASETS.register(name, loader)``
adds one (a reader of ``scadles.data.formats.Request`` returning ``Raw`` arrays).
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from scadles.registry import Registry

log = logging.getLogger(__name__)

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

    @classmethod
    def from_tensors(
        cls,
        x_train: torch.Tensor | np.ndarray,
        y_train: torch.Tensor | np.ndarray,
        x_test: torch.Tensor | np.ndarray,
        y_test: torch.Tensor | np.ndarray,
        *,
        num_classes: int | None = None,
        name: str = "tensors",
    ) -> Dataset:
        """Wrap the caller's tensors (any sample shape) as a Dataset, checking them first.

        x becomes float32 (N, *shape) as given (no normalisation), y int64 (N,); num_classes
        defaults to the largest label of either split + 1; sample_bytes, the wire size the
        simulated links charge per sample, is that of one float32 sample.
        """
        xs, ys = [], []
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            xt, yt = torch.as_tensor(x), torch.as_tensor(y)
            if xt.ndim < 1 or yt.ndim != 1 or len(xt) != len(yt):
                raise UserError(
                    f"{split}: x must be (N, *shape) and y (N,), got x {tuple(xt.shape)} "
                    f"and y {tuple(yt.shape)}"
                )
            if len(yt) == 0:
                raise UserError(f"{split}: the {split} set is empty")
            if yt.dtype.is_floating_point or yt.dtype.is_complex or yt.dtype == torch.bool:
                raise UserError(f"{split}: labels must be integers, got dtype {yt.dtype}")
            if int(yt.min()) < 0:
                raise UserError(f"{split}: labels must be >= 0, got {int(yt.min())}")
            xt = xt.to(torch.float32).contiguous()  # (N, *shape)
            if not bool(torch.isfinite(xt).all()):
                raise UserError(f"{split}: x holds NaN or Inf")
            xs.append(xt)
            ys.append(yt.to(torch.int64).contiguous())  # (N,)
        if xs[0].shape[1:] != xs[1].shape[1:]:
            raise UserError(
                f"test samples have shape {tuple(xs[1].shape[1:])}, "
                f"train samples {tuple(xs[0].shape[1:])}"
            )
        top = max(int(ys[0].max()), int(ys[1].max()))
        classes = top + 1 if num_classes is None else num_classes
        if classes <= top or classes < 1:
            raise UserError(f"num_classes must be > the largest label {top}, got {num_classes}")
        return cls(
            name=name,
            x_train=xs[0],
            y_train=ys[0],
            x_test=xs[1],
            y_test=ys[1],
            num_classes=classes,
            sample_bytes=4 * xs[0][0].numel(),
        )

    @classmethod
    def from_torch(
        cls,
        train: torch.utils.data.Dataset[Any],
        test: torch.utils.data.Dataset[Any],
        *,
        num_classes: int | None = None,
    ) -> Dataset:
        """Materialise two map-style torch datasets of (x, y) items into tensors, once.

        Every item is read (and any transform applied) exactly once here, not lazily per step:
        the simulator gathers arbitrary rows of all devices' union batch by index at every step,
        which needs the samples as one tensor. Memory: 4 bytes per element of x plus 8 per
        label, e.g. 60,000 samples of shape (1, 28, 28) take about 188 MB (twice that for a
        moment while stacking). Random augmentation in a transform is drawn once, not per epoch.
        """
        parts = [cls._materialise(split, ds) for split, ds in (("train", train), ("test", test))]
        (x_tr, y_tr), (x_te, y_te) = parts
        return cls.from_tensors(x_tr, y_tr, x_te, y_te, num_classes=num_classes, name="torch")

    @staticmethod
    def _materialise(
        split: str, ds: torch.utils.data.Dataset[Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read every (x, y) item of a map-style dataset; return x stacked and y as (N,)."""
        try:
            n = len(ds)  # type: ignore[arg-type]
        except TypeError:
            raise UserError(
                f"{split}: expected a map-style dataset with len(), got {ds!r}"
            ) from None
        xs, ys = [], []
        for i in range(n):
            item = ds[i]
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise UserError(
                    f"{split}: item {i} must be a pair (x, y), got {type(item).__name__}"
                )
            xs.append(torch.as_tensor(item[0]))
            y = torch.as_tensor(item[1])
            if y.numel() != 1:
                raise UserError(f"{split}: item {i} has {y.numel()} labels; expected one")
            ys.append(y.reshape(()))
        if not xs:
            raise UserError(f"{split}: the {split} set is empty")
        if any(x.shape != xs[0].shape for x in xs):
            raise UserError(
                f"{split}: samples differ in shape; they must all be {tuple(xs[0].shape)}"
            )
        return torch.stack(xs), torch.stack(ys)  # (N, *shape), (N,)


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
    loader = DATASETS.get(name)
    for key, n in (("data.n_train", n_train), ("data.n_test", n_test)):
        if n is not None and n < 1:
            raise UserError(f"{key} must be >= 1, got {n}")
    if not 0 <= seed < 2**32:
        raise UserError(f"seed must be in [0, 2**32), got {seed}")
    if cache_dir is None:
        cache_dir = Path(os.environ.get("SCADLES_CACHE", Path.home() / ".cache" / "scadles"))
    raw = loader.read(Request(path or loader.default_path, n_train, n_test, seed, cache_dir))
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


@dataclass(frozen=True, slots=True)
class DatasetLoader:
    """A DATASETS entry: the reader and whether it needs files (data.path, or a default)."""

    read: Callable[[Request], Raw]  # Request (path, sizes, seed, cache) -> arrays
    needs_path: bool = False  # data.path must name its files (or default_path exist)
    default_path: str | None = None  # where its files are when data.path is unset


DATASETS: Registry[DatasetLoader] = Registry(
    "dataset",
    {
        "mnist1d": DatasetLoader(_load_mnist1d),
        "digits": DatasetLoader(_load_digits),
        "synthetic": DatasetLoader(_load_synthetic),
        "cifar10": DatasetLoader(cifar_reader("cifar10", CIFAR_STATS["cifar10"]), needs_path=True),
        "cifar100": DatasetLoader(
            cifar_reader("cifar100", CIFAR_STATS["cifar100"]), needs_path=True
        ),
        "mnist": DatasetLoader(idx_reader("mnist", None), needs_path=True),
        "fashion_mnist": DatasetLoader(
            idx_reader("fashion_mnist", None), needs_path=True, default_path=FASHION_MNIST_PATH
        ),
        "npz": DatasetLoader(read_npz, needs_path=True),
    },
    key="data.name",
)
