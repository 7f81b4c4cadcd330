"""Partitions: disjoint and covering for every scheme, label blocks, Dirichlet skew, seeding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scadles.data.partition import PARTITIONS, label_counts, partition
from scadles.errors import UserError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_disjoint_covering(parts: list[torch.Tensor], n: int, k: int) -> None:
    assert len(parts) == k
    assert all(p.dtype == torch.int64 and p.dim() == 1 for p in parts)
    assert sorted(torch.cat(parts).tolist()) == list(range(n))  # each index exactly once
    assert all(len(p) > 0 for p in parts)  # possible because n >= k


LABELS = torch.tensor([i % 10 for i in range(203)] + [0] * 40 + [3] * 17)  # imbalanced, N=260


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("k", [1, 2, 3, 7, 10, 16, 40, 260])
def test_every_scheme_is_disjoint_covering_and_non_empty(scheme: str, k: int) -> None:
    parts = partition(LABELS, k, scheme, gen(), num_classes=10)
    assert_disjoint_covering(parts, len(LABELS), k)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=80),
    k=st.integers(1, 90),
    scheme=st.sampled_from(PARTITIONS.names()),
    alpha=st.floats(0.001, 100.0),
    spd=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_partition_invariants_hold_for_random_inputs(
    labels: list[int], k: int, scheme: str, alpha: float, spd: int, seed: int
) -> None:
    y = torch.tensor(labels)
    k = min(k, len(labels))
    parts = partition(
        y, k, scheme, gen(seed), num_classes=6, dirichlet_alpha=alpha, shards_per_device=spd
    )
    assert_disjoint_covering(parts, len(labels), k)


def test_label_blocks_with_k_equal_classes_gives_each_device_its_label() -> None:
    parts = partition(LABELS, 10, "label_blocks", gen(), num_classes=10)
    for t, p in enumerate(parts):
        assert sorted(p.tolist()) == LABELS.eq(t).nonzero().flatten().tolist()


def test_label_blocks_k_below_classes_matches_contiguous_blocks_plus_round_robin() -> None:
    k, c = 4, 10
    lpd = c // k
    oracle = {t: set(range(t * lpd, (t + 1) * lpd)) for t in range(k)}
    for j, label in enumerate(range(k * lpd, c)):  # leftover labels 8, 9 -> devices 0, 1
        oracle[j % k].add(label)
    parts = partition(LABELS, k, "label_blocks", gen(), num_classes=c)
    counts = label_counts(LABELS, parts, c)
    full = torch.bincount(LABELS, minlength=c)
    for t in range(k):
        assert {int(v) for v in counts[t].nonzero().flatten()} == oracle[t]
        assert all(counts[t, lab] == full[lab] for lab in oracle[t])


def test_label_blocks_k_above_classes_splits_each_label_among_its_group() -> None:
    k, c = 25, 10
    parts = partition(LABELS, k, "label_blocks", gen(), num_classes=c)
    counts = label_counts(LABELS, parts, c)  # (K, C)
    assert ((counts > 0).sum(1) == 1).all()  # one label per device
    own = counts.argmax(1)  # (K,)
    assert own.tolist() == sorted(own.tolist())  # contiguous groups
    assert torch.bincount(own, minlength=c).tolist() == [3, 2, 3, 2, 3, 2, 3, 2, 3, 2]
    for lab in range(c):
        sizes = counts[own == lab, lab]
        assert sizes.sum() == LABELS.eq(lab).sum() and sizes.max() - sizes.min() <= 1


def test_label_blocks_missing_label_still_fills_every_device() -> None:
    y = torch.tensor([0, 1, 2, 4, 4, 5, 6, 7, 8, 9] * 3)  # no label 3
    parts = partition(y, 10, "label_blocks", gen(), num_classes=10)
    assert_disjoint_covering(parts, len(y), 10)
    assert len(parts[3]) == 1


def max_share(alpha: float, seed: int) -> torch.Tensor:
    y = torch.arange(10000) % 10
    parts = partition(y, 5, "dirichlet", gen(seed), num_classes=10, dirichlet_alpha=alpha)
    counts = label_counts(y, parts, 10).double()  # (K, C)
    return (counts / counts.sum(0)).max(0).values  # (C,) largest device share per class


def test_dirichlet_large_alpha_is_near_uniform_and_small_alpha_is_skewed() -> None:
    assert (max_share(1000.0, 0) < 0.3).all()  # uniform share is 0.2
    assert max_share(0.05, 0).mean() > 0.6


def test_iid_sizes_differ_by_at_most_one_and_labels_mix() -> None:
    parts = partition(LABELS, 7, "iid", gen(), num_classes=10)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert ((label_counts(LABELS, parts, 10) > 0).sum(1) >= 5).all()


def test_shards_give_each_device_its_shards_of_sorted_labels() -> None:
    y = torch.arange(1000) % 10  # 100 per class
    parts = partition(y, 10, "shards", gen(), num_classes=10, shards_per_device=2)
    counts = label_counts(y, parts, 10)
    assert [len(p) for p in parts] == [100] * 10  # two shards of 50
    assert ((counts > 0).sum(1) <= 2).all() and (counts % 50 == 0).all()


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_same_seed_same_parts_different_seed_different_parts(scheme: str) -> None:
    a = partition(LABELS, 16, scheme, gen(1), num_classes=10)
    b = partition(LABELS, 16, scheme, gen(1), num_classes=10)
    c = partition(LABELS, 16, scheme, gen(2), num_classes=10)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_label_counts_matches_a_loop() -> None:
    parts = partition(LABELS, 6, "dirichlet", gen(3), num_classes=10)
    want = torch.zeros(6, 10, dtype=torch.int64)
    for t, p in enumerate(parts):
        for i in p.tolist():
            want[t, LABELS[i]] += 1
    got = label_counts(LABELS, parts, 10)
    assert got.dtype == torch.int64 and torch.equal(got, want)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, r"devices.count must be in \[1, 260\]"),
        ({"k": 261}, "got 261"),
        ({"scheme": "zipf"}, "unknown scheme 'zipf'; known: iid, label_blocks, dirichlet, shards"),
        ({"scheme": "dirichlet", "dirichlet_alpha": 0.0}, "dirichlet_alpha must be > 0"),
        ({"scheme": "shards", "shards_per_device": 0}, "shards_per_device must be >= 1"),
        ({"num_classes": 5}, r"labels must lie in \[0, 5\)"),
    ],
)
def test_bad_arguments_are_user_errors(kwargs: dict, match: str) -> None:
    args: dict = {"k": 4, "scheme": "iid", "num_classes": 10} | kwargs
    k, scheme = args.pop("k"), args.pop("scheme")
    with pytest.raises(UserError, match=match):
        partition(LABELS, k, scheme, gen(), **args)
