"""Dataset loaders: real file formats written to tmp_path, round-trips, errors, mnist1d cache."""

from __future__ import annotations

import gzip
import pickle
import random
from pathlib import Path

import mnist1d.data
import numpy as np
import pytest
import torch

from scadles.data import datasets
from scadles.data.datasets import CIFAR_STATS, DATASETS, load_dataset
from scadles.errors import UserError

# --- writers of the real formats ----------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    """Write an unsigned-byte IDX file (magic 0x08, ndim), optionally gzipped."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def write_mnist(
    d: Path, n_train: int, n_test: int, gz: bool, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        write_idx(d / (name + (".gz" if gz else "")), arr, gz)
    return arrays


def write_cifar_batch(path: Path, n: int, label_key: bytes, classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"batch",
        b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, n)],
        b"filenames": [b"f%d" % i for i in range(n)],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


def write_cifar10(d: Path) -> list[dict]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return [write_cifar_batch(d / f, 2 + i, b"labels", 10, i) for i, f in enumerate(names)]


# --- CIFAR ---------------------------------------------------------------------------------------


def test_cifar10_round_trips_pixels_labels_and_channel_normalisation(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", path=str(tmp_path))
    raw = np.concatenate([b[b"data"] for b in batches[:5]])  # (20, 3072)
    labels = np.concatenate([b[b"labels"] for b in batches[:5]])
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_train.dtype == torch.float32
    assert ds.x_test.shape == (7, 3, 32, 32) and ds.y_test.dtype == torch.int64
    assert ds.y_train.tolist() == labels.tolist() and ds.y_test.tolist() == batches[5][b"labels"]
    assert (ds.num_classes, ds.sample_bytes, ds.input_shape) == (10, 3072, (3, 32, 32))
    mean, std = CIFAR_STATS["cifar10"]
    for i, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 7), (19, 2, 31, 31), (11, 1, 16, 0)]:
        want = (raw[i, c * 1024 + h * 32 + w] / 255.0 - mean[c]) / std[c]
        assert ds.x_train[i, c, h, w].item() == pytest.approx(want, abs=1e-5)


def test_cifar100_reads_fine_labels_from_archive_subfolder(tmp_path: Path) -> None:
    sub = tmp_path / "cifar-100-python"
    sub.mkdir()
    train = write_cifar_batch(sub / "train", 6, b"fine_labels", 100, 1)
    write_cifar_batch(sub / "test", 3, b"fine_labels", 100, 2)
    ds = load_dataset("cifar100", path=str(tmp_path))
    assert ds.num_classes == 100 and ds.x_train.shape == (6, 3, 32, 32)
    assert ds.y_train.tolist() == train[b"fine_labels"]
    mean, std = CIFAR_STATS["cifar100"]
    want = (train[b"data"][5, 2048 + 33] / 255.0 - mean[2]) / std[2]
    assert ds.x_train[5, 2, 1, 1].item() == pytest.approx(want, abs=1e-5)


def test_cifar_corrupt_pickle_is_a_user_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x02}q\x00(garbage")
    with pytest.raises(UserError, match=r"data.path: corrupt CIFAR batch .*data_batch_3"):
        load_dataset("cifar10", path=str(tmp_path))


def test_cifar_pickle_naming_other_globals_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": random.Random, b"labels": []}))
    with pytest.raises(UserError, match=r"forbidden global"):
        load_dataset("cifar10", path=str(tmp_path))


def test_cifar_wrong_shape_and_missing_batch_are_user_errors(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(UserError, match=r"expected uint8 \(N, 3072\)"):
        load_dataset("cifar10", path=str(tmp_path))
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(UserError, match=r"labels outside \[0, 10\)"):
        load_dataset("cifar10", path=str(tmp_path))
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(UserError, match=r"file not found: .*data_batch_5"):
        load_dataset("cifar10", path=str(tmp_path))


# --- MNIST / Fashion-MNIST (IDX) ----------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_round_trips_raw_and_gz(tmp_path: Path, gz: bool, name: str) -> None:
    arrays = write_mnist(tmp_path, 12, 5, gz)
    ds = load_dataset(name, path=str(tmp_path))
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert (ds.num_classes, ds.sample_bytes) == (10, 784)
    scaled = arrays["train-images-idx3-ubyte"] / 255.0  # standardised with train statistics
    m, s = scaled.mean(), scaled.std()
    np.testing.assert_allclose(ds.x_train[:, 0].double().numpy(), (scaled - m) / s, atol=1e-5)
    scaled_te = arrays["t10k-images-idx3-ubyte"] / 255.0
    np.testing.assert_allclose(ds.x_test[:, 0].double().numpy(), (scaled_te - m) / s, atol=1e-5)


def test_truncated_idx_names_expected_and_actual_bytes(tmp_path: Path) -> None:
    write_mnist(tmp_path, 4, 2, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    expected = 16 + 4 * 784
    msg = f"truncated IDX file .*: expected {expected} bytes, got {expected - 10}"
    with pytest.raises(UserError, match=msg):
        load_dataset("mnist", path=str(tmp_path))


def test_bad_idx_magic_truncated_gzip_and_count_mismatch_are_user_errors(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, 4, 2, gz=True)
    lbl = tmp_path / "t10k-labels-idx1-ubyte.gz"
    lbl.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(8)))
    with pytest.raises(UserError, match=r"bad IDX magic"):
        load_dataset("mnist", path=str(tmp_path))
    write_idx(lbl, arrays["t10k-labels-idx1-ubyte"][:1], gz=True)
    with pytest.raises(UserError, match=r"t10k IDX files .* disagree"):
        load_dataset("mnist", path=str(tmp_path))
    write_idx(lbl, np.array([3, 10]), gz=True)
    with pytest.raises(UserError, match=r"labels 0-9"):
        load_dataset("mnist", path=str(tmp_path))
    img = tmp_path / "train-images-idx3-ubyte.gz"
    img.write_bytes(img.read_bytes()[:40])
    with pytest.raises(UserError, match=r"cannot read .*train-images"):
        load_dataset("mnist", path=str(tmp_path))


def test_idx_missing_file_and_directory_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no train-images-idx3-ubyte"):
        load_dataset("mnist", path=str(tmp_path))
    with pytest.raises(UserError, match=r"directory not found: .*nope"):
        load_dataset("mnist", path=str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"data.path: required for dataset 'mnist'"):
        load_dataset("mnist")


@pytest.mark.skipif(Path(datasets.FASHION_MNIST_PATH).exists(), reason="package installed")
def test_fashion_mnist_default_path_missing_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"directory not found: /usr/share/datasets/fashion-mnist"):
        load_dataset("fashion_mnist")


# --- npz -----------------------------------------------------------------------------------------


def test_npz_without_test_arrays_splits_80_20_covering_all_rows(tmp_path: Path) -> None:
    n = 50
    x = np.stack([np.arange(n), np.arange(n) * 2], 1).astype(np.float64)  # row id in column 0
    y = np.arange(n) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset("npz", path=str(tmp_path / "d.npz"), seed=3)
    assert len(ds.y_train) == 40 and len(ds.y_test) == 10 and ds.num_classes == 5
    ids = torch.cat([ds.x_train[:, 0], ds.x_test[:, 0]]).long()
    assert sorted(ids.tolist()) == list(range(n))
    assert torch.equal(torch.cat([ds.y_train, ds.y_test]), ids % 5)  # rows keep their labels
    assert torch.bincount(ds.y_test, minlength=5).tolist() == [2] * 5  # stratified
    assert ds.x_train.dtype == torch.float32 and ds.sample_bytes == 16
    again = load_dataset("npz", path=str(tmp_path / "d.npz"), seed=3)
    assert torch.equal(again.x_train, ds.x_train)


def test_npz_with_test_arrays_and_subsampling(tmp_path: Path) -> None:
    x = np.arange(30 * 6, dtype=np.float32).reshape(30, 2, 3)
    np.savez(
        tmp_path / "d.npz", x=x, y=np.arange(30) % 3, x_test=x[:4], y_test=np.array([7, 0, 1, 2])
    )
    full = load_dataset("npz", path=str(tmp_path / "d.npz"))
    assert full.input_shape == (2, 3) and full.num_classes == 8
    assert torch.equal(full.x_train, torch.from_numpy(x)) and full.y_test.tolist() == [7, 0, 1, 2]
    sub = load_dataset("npz", path=str(tmp_path / "d.npz"), n_train=10, n_test=2, seed=1)
    assert sub.x_train.shape == (10, 2, 3) and sub.x_test.shape == (2, 2, 3)
    rows = {tuple(r.flatten().tolist()) for r in full.x_train}
    assert all(tuple(r.flatten().tolist()) in rows for r in sub.x_train)
    other = load_dataset("npz", path=str(tmp_path / "d.npz"), n_train=10, seed=2)
    assert not torch.equal(other.x_train, sub.x_train)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"a": np.zeros((3, 2)), "y": np.zeros(3, int)}, r"lacks array\(s\) \['x'\]"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(3, int), "x_test": np.zeros((1, 2))}, "y_test"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(3)}, "y must be non-negative integer"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(2, int)}, r"shape \(3,\)"),
        ({"x": np.zeros(3), "y": np.zeros(3, int)}, r"x must be numeric \(N, \.\.\.\)"),
    ],
)
def test_npz_bad_contents_are_user_errors(tmp_path: Path, arrays: dict, match: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match=match):
        load_dataset("npz", path=str(tmp_path / "d.npz"))


def test_npz_missing_or_not_a_zip_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data.path: file not found: .*gone.npz"):
        load_dataset("npz", path=str(tmp_path / "gone.npz"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(UserError, match=r"not a readable .npz"):
        load_dataset("npz", path=str(tmp_path / "bad.npz"))
    with pytest.raises(UserError, match=r"required for dataset 'npz'"):
        load_dataset("npz")


# --- built-ins and argument checks ---------------------------------------------------------------


def test_unknown_name_and_bad_sizes_are_user_errors() -> None:
    with pytest.raises(
        UserError, match=r"data.name: unknown dataset 'foo'; known: mnist1d, digits"
    ):
        load_dataset("foo")
    with pytest.raises(UserError, match=r"data.n_train must be >= 1, got 0"):
        load_dataset("synthetic", n_train=0)
    with pytest.raises(UserError, match=r"seed"):
        load_dataset("synthetic", seed=-1)
    assert DATASETS.names()[:3] == ("mnist1d", "digits", "synthetic")


def test_digits_is_standardised_stratified_and_seeded() -> None:
    ds = load_dataset("digits", seed=0)
    assert ds.x_train.shape[1:] == (1, 8, 8) and len(ds.y_train) + len(ds.y_test) == 1797
    assert abs(ds.x_train.mean().item()) < 1e-4 and ds.x_train.std().item() == pytest.approx(
        1, abs=1e-3
    )
    full = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10)
    test = torch.bincount(ds.y_test, minlength=10)
    assert torch.equal(test, torch.round(full * 0.2).long())
    sub = load_dataset("digits", n_train=100, n_test=30, seed=0)
    assert len(sub.y_train) == 100 and len(sub.y_test) == 30
    assert not torch.equal(load_dataset("digits", seed=1).y_train, ds.y_train)


def test_synthetic_is_seeded_and_learnable_but_not_trivial() -> None:
    a, b = load_dataset("synthetic", seed=5), load_dataset("synthetic", seed=5)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (4096, 20) and a.x_test.shape == (1024, 20) and a.num_classes == 10
    assert not torch.equal(load_dataset("synthetic", seed=6).x_train, a.x_train)
    means = torch.stack([a.x_train[a.y_train == c].mean(0) for c in range(10)])  # (C, D)
    pred = torch.cdist(a.x_test, means).argmin(1)  # nearest class mean
    acc = (pred == a.y_test).float().mean().item()
    assert 0.75 < acc < 0.99


# --- mnist1d -------------------------------------------------------------------------------------


def test_mnist1d_is_seeded_cached_and_leaves_global_rngs_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.random.seed(123)
    random.seed(456)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    ds = load_dataset("mnist1d", n_train=500, n_test=100, seed=7, cache_dir=tmp_path)
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before
    assert ds.x_train.shape == (500, 1, 40) and ds.x_test.shape == (100, 1, 40)
    assert (ds.num_classes, ds.sample_bytes) == (10, 160) and ds.y_train.dtype == torch.int64
    assert len(list(tmp_path.glob("*.npz"))) == 1 and not list(tmp_path.glob("*.tmp"))

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("make_dataset called despite the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", boom)
    cached = load_dataset("mnist1d", n_train=500, n_test=100, seed=7, cache_dir=tmp_path)
    assert torch.equal(cached.x_train, ds.x_train) and torch.equal(cached.y_test, ds.y_test)
    monkeypatch.undo()
    fresh = load_dataset("mnist1d", n_train=500, n_test=100, seed=7, cache_dir=tmp_path / "b")
    assert torch.equal(fresh.x_train, ds.x_train)  # deterministic without the cache
    other = load_dataset("mnist1d", n_train=500, n_test=100, seed=8, cache_dir=tmp_path)
    assert not torch.equal(other.x_train, ds.x_train)


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path: Path) -> None:
    ds = load_dataset("mnist1d", n_train=95, n_test=13, seed=1, cache_dir=tmp_path)
    assert len(ds.y_train) == 95 and len(ds.y_test) == 13
    (cache,) = tmp_path.glob("*.npz")
    cache.write_bytes(b"junk")
    again = load_dataset("mnist1d", n_train=95, n_test=13, seed=1, cache_dir=tmp_path)
    assert torch.equal(again.x_train, ds.x_train)
