"""Compressor contract suite over the registry, plus per-compressor oracles and error feedback."""

from __future__ import annotations

import math

import pytest
import torch

from scadles.aggregate import weighted_mean
from scadles.compress import (
    COLLECTIVES,
    COMPRESSORS,
    QSGD,
    Compressor,
    ErrorFeedback,
    Identity,
    Payload,
    PowerSGD,
    RandK,
    TopK,
    make_compressor,
)
from scadles.errors import UserError

SHAPES = ((4, 3), (4,), (2, 3, 2), (5,))  # two matrix layers, two biases
LAYERS = tuple(math.prod(s) for s in SHAPES)
P = sum(LAYERS)  # 33
K = 4
NAMES = sorted(COMPRESSORS)
SHARED_BASIS = {"powersgd"}  # aggregate uses the shared P^, not each device's own (see powersgd.py)


def build(name: str, **kw: object) -> Compressor:
    args: dict[str, object] = {"ratio": 0.25, "shapes": SHAPES, "rank": 1, "levels": 16}
    return make_compressor(name, **(args | kw))  # type: ignore[arg-type]


def feedback_round(
    memory: ErrorFeedback, comp: Compressor, x: torch.Tensor, g: torch.Generator
) -> Payload:
    """One round in the order the production exchange runs it: compensate, compress, update."""
    acc = memory.compensate(x)
    payload = comp.compress(acc, g)
    memory.update(acc, comp.decompress(payload))
    return payload


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def updates(
    k: int = K, p: int = P, seed: int = 1, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return torch.randn(k, p, generator=gen(seed), dtype=dtype)


def weights(k: int = K) -> torch.Tensor:
    w = torch.rand(k, generator=gen(7), dtype=torch.float64) + 0.1
    return w / w.sum()  # (K,)


def weighted_sum(dense: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Oracle: sum_i w_i * dense_i by an explicit loop over devices."""
    out = torch.zeros(dense.shape[1], dtype=torch.float64)
    for i in range(dense.shape[0]):
        out += w[i] * dense[i].double()
    return out


# ---------------------------------------------------------------- contract, every registered name


@pytest.mark.parametrize("name", NAMES)
def test_payload_shapes_and_costs(name: str) -> None:
    comp = build(name)
    payload = comp.compress(updates(), gen())
    assert payload.nbytes.shape == (K,) and payload.floats.shape == (K,)
    assert bool((payload.nbytes > 0).all()) and bool((payload.floats > 0).all())
    assert payload.collective in COLLECTIVES
    assert all(t.shape[0] == K for t in payload.data.values())
    assert comp.decompress(payload).shape == (K, P)
    assert comp.aggregate(payload, weights()).shape == (P,)


@pytest.mark.parametrize("name", NAMES)
def test_aggregate_is_weighted_sum_of_decompressed(name: str) -> None:
    w = weights()
    same = updates(k=1).expand(K, P).contiguous()  # identical devices: holds for every compressor
    cases = [same] if name in SHARED_BASIS else [same, updates()]
    for x in cases:
        comp = build(name)
        payload = comp.compress(x, gen())
        expected = weighted_sum(comp.decompress(payload), w)
        got = comp.aggregate(payload, w).double()
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_zeros_compress_to_zeros(name: str) -> None:
    comp = build(name)
    payload = comp.compress(torch.zeros(K, P), gen())
    assert bool((comp.decompress(payload) == 0).all())
    assert bool((comp.aggregate(payload, weights()) == 0).all())


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seeded_generator(name: str) -> None:
    runs = []
    for _ in range(2):
        comp = build(name)
        payload = comp.compress(updates(), gen(3))
        runs.append((comp.decompress(payload), comp.aggregate(payload, weights()), payload.nbytes))
    for a, b in zip(runs[0], runs[1], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_error_feedback_conserves_mass(name: str) -> None:
    comp = build(name)
    memory = ErrorFeedback.zeros(K, P, dtype=torch.float64)
    g, sent, seen = (
        gen(5),
        torch.zeros(K, P, dtype=torch.float64),
        torch.zeros(K, P, dtype=torch.float64),
    )
    for step in range(20):
        x = updates(seed=100 + step, dtype=torch.float64)
        payload = feedback_round(memory, comp, x, g)
        comp.aggregate(payload, weights())  # advances PowerSGD's warm start like a real step
        sent += comp.decompress(payload).double()
        seen += x
    torch.testing.assert_close(sent + memory.residual, seen, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- Identity


def test_identity_is_no_compression_bit_for_bit() -> None:
    x, w = updates(), weights()
    comp = Identity()
    payload = comp.compress(x, gen())
    assert torch.equal(comp.decompress(payload), x)
    assert torch.equal(comp.aggregate(payload, w), weighted_mean(x, w))
    assert payload.nbytes.tolist() == [4.0 * P] * K and payload.collective == "allreduce"


# ---------------------------------------------------------------- Top-k


def topk_oracle(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest |x| of each row, one device at a time."""
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        order = sorted(range(x.shape[1]), key=lambda j: -abs(float(x[i, j])))
        for j in order[:k]:
            out[i, j] = x[i, j]
    return out


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5, 1.0])
def test_topk_keeps_the_k_largest_magnitudes(ratio: float) -> None:
    x = updates()
    comp = TopK(ratio)
    payload = comp.compress(x, gen())
    k = max(1, int(P * ratio))
    assert torch.equal(comp.decompress(payload), topk_oracle(x, k))
    assert payload.floats.tolist() == [k] * K and payload.nbytes.tolist() == [8.0 * k] * K
    assert payload.collective == "allgather"


def test_layerwise_topk_keeps_the_k_largest_of_each_layer() -> None:
    x = updates()
    comp = TopK(0.3, LAYERS)
    payload = comp.compress(x, gen())
    dense = comp.decompress(payload)
    offset, kept = 0, 0
    for n in LAYERS:
        k = max(1, int(n * 0.3))
        assert torch.equal(dense[:, offset : offset + n], topk_oracle(x[:, offset : offset + n], k))
        offset, kept = offset + n, kept + k
    assert payload.floats.tolist() == [kept] * K
    assert comp.name == "topk_layer" and TopK(0.3).name == "topk"


@pytest.mark.parametrize("comp", [TopK(0.2), TopK(0.2, LAYERS), RandK(0.2)], ids=repr)
def test_sparse_aggregate_equals_dense_weighted_mean(comp: Compressor) -> None:
    w = weights()
    payload = comp.compress(updates(), gen())
    dense_mean = weighted_mean(comp.decompress(payload), w)
    torch.testing.assert_close(comp.aggregate(payload, w), dense_mean, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- Random-k


def test_randk_draws_distinct_coordinates_per_device() -> None:
    x = updates(k=8) + 10.0  # no zeros, so kept coordinates are the nonzeros
    payload = RandK(0.2).compress(x, gen())
    dense = RandK(0.2).decompress(payload)
    k = int(P * 0.2)
    assert ((dense != 0).sum(dim=1) == k).all()
    torch.testing.assert_close(dense[dense != 0], x[dense != 0], atol=0, rtol=0)
    assert len({tuple(r) for r in (dense != 0).tolist()}) > 1  # devices draw their own subsets


def test_randk_unbiased_in_expectation() -> None:
    n = 20000
    x = updates(k=1, p=10)
    comp = RandK(0.3, unbiased=True)
    mean = comp.decompress(comp.compress(x.expand(n, 10), gen())).mean(dim=0)  # n draws at once
    # each coordinate: (P/k) * x w.p. k/P; std of the mean <= |x| * sqrt(P/k) / sqrt(n)
    bound = 5 * x.abs().max() * math.sqrt(10 / 3) / math.sqrt(n)
    assert float((mean - x[0]).abs().max()) < float(bound)


# ---------------------------------------------------------------- QSGD


def test_qsgd_values_on_the_level_grid_and_unbiased() -> None:
    n, s = 20000, 2
    x = updates(k=1, p=6)
    norm = float(x.norm())
    comp = QSGD(levels=s)
    dense = comp.decompress(comp.compress(x.expand(n, 6), gen()))  # n independent draws
    grid = dense / norm * s
    torch.testing.assert_close(grid, grid.round(), atol=1e-4, rtol=0)
    assert bool((grid.abs() <= s).all()) and bool((torch.sign(dense) * torch.sign(x) >= 0).all())
    bound = 5 * (norm / s) * 0.5 / math.sqrt(n)  # level variance <= 1/4 per coordinate
    assert float((dense.mean(dim=0) - x[0]).abs().max()) < bound


def test_qsgd_bytes() -> None:
    assert QSGD(127).compress(updates(), gen()).nbytes.tolist() == [4.0 + P] * K  # "8-bit"
    assert QSGD(256).bits == 10 and QSGD(1).bits == 2


# ---------------------------------------------------------------- PowerSGD


def matrix_of(x: torch.Tensor, layer: int) -> torch.Tensor:
    """Return layer `layer` of every device as (K, n, m)."""
    off, shape = sum(LAYERS[:layer]), SHAPES[layer]
    return x[:, off : off + LAYERS[layer]].reshape(x.shape[0], shape[0], -1)


def warm_q(comp: PowerSGD, j: int) -> torch.Tensor:
    """Return layer j's warm-start Q."""
    q = comp.q[j]
    assert q is not None
    return q


def test_powersgd_full_rank_reproduces_the_weighted_mean() -> None:
    x, w = updates(), weights()
    comp = PowerSGD(rank=4, shapes=SHAPES)  # >= min(n, m) of every matrix layer
    got = comp.aggregate(comp.compress(x, gen()), w)
    torch.testing.assert_close(got, weighted_mean(x, w), atol=1e-4, rtol=0)


def test_powersgd_aggregate_matches_the_two_round_oracle() -> None:
    x, w = updates(dtype=torch.float64), weights()
    comp = PowerSGD(rank=1, shapes=SHAPES)
    payload = comp.compress(x, gen())
    q0 = {j: warm_q(comp, j) for j in (0, 2)}
    got = comp.aggregate(payload, w)
    expected = weighted_mean(x, w)  # biases dense
    for j in (0, 2):
        mats = matrix_of(x, j)
        p = torch.stack([w[i] * mats[i] @ q0[j] for i in range(K)]).sum(0)  # round 1, (n, r)
        basis = torch.linalg.qr(p).Q
        q = torch.stack([w[i] * mats[i].T @ basis for i in range(K)]).sum(0)  # round 2, (m, r)
        off = sum(LAYERS[:j])
        expected[off : off + LAYERS[j]] = (basis @ q.T).flatten()
        torch.testing.assert_close(comp.q[j], q)  # the next step's warm start
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


def test_powersgd_decompress_is_each_devices_own_approximation() -> None:
    x = updates(dtype=torch.float64)
    comp = PowerSGD(rank=1, shapes=SHAPES)
    dense = comp.decompress(comp.compress(x, gen()))
    for i in range(K):
        mat = matrix_of(x, 0)[i]
        basis = torch.linalg.qr(mat @ warm_q(comp, 0)).Q
        torch.testing.assert_close(matrix_of(dense, 0)[i], basis @ basis.T @ mat)
    torch.testing.assert_close(dense[:, 12:16], x[:, 12:16], atol=0, rtol=0)  # bias dense


def test_powersgd_warm_start_converges_to_the_best_rank_one() -> None:
    shapes = ((6, 5),)
    u = torch.linalg.qr(torch.randn(6, 5, generator=gen(2), dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(5, 5, generator=gen(3), dtype=torch.float64)).Q
    mat = u @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)) @ v.T
    x = mat.flatten().expand(2, 30)
    comp, w = PowerSGD(rank=1, shapes=shapes), torch.tensor([0.5, 0.5], dtype=torch.float64)
    first = comp.aggregate(comp.compress(x, gen()), w)
    for _ in range(30):
        last = comp.aggregate(comp.compress(x, gen()), w)
    best = 5.0 * torch.outer(u[:, 0], v[:, 0]).flatten()
    assert float((last - best).norm()) < 1e-6 < float((first - best).norm())


def test_powersgd_rank_one_sends_fewer_bytes_than_dense() -> None:
    payload = PowerSGD(rank=1, shapes=SHAPES).compress(updates(), gen())
    floats = 1 * (4 + 3) + 4 + 1 * (2 + 6) + 5
    assert payload.floats.tolist() == [floats] * K and payload.nbytes.tolist() == [4.0 * floats] * K
    assert floats < P and payload.collective == "allreduce"
    capped = PowerSGD(rank=10, shapes=SHAPES).compress(updates(), gen())  # rank <= min(n, m)
    assert capped.floats.tolist() == [3 * (4 + 3) + 4 + 2 * (2 + 6) + 5] * K


# ---------------------------------------------------------------- error feedback


def test_error_feedback_switch_to_dense_clears_the_residual() -> None:
    memory, x = ErrorFeedback.zeros(K, P), updates()
    feedback_round(memory, TopK(0.1), x, gen())
    assert bool((memory.residual != 0).any())
    torch.testing.assert_close(memory.residual, x - topk_oracle(x, 3), atol=0, rtol=0)
    acc = memory.compensate(x)
    payload = feedback_round(memory, Identity(), x, gen())
    assert torch.equal(payload.data["values"], acc) and bool((memory.residual == 0).all())


def test_error_feedback_disabled_is_a_no_op() -> None:
    memory, x = ErrorFeedback.zeros(K, P, enabled=False), updates()
    for _ in range(3):
        payload = feedback_round(memory, TopK(0.1), x, gen())
    assert bool((memory.residual == 0).all())
    assert torch.equal(TopK(0.1).decompress(payload), topk_oracle(x, 3))


# ---------------------------------------------------------------- registry


def test_registry_names() -> None:
    expected = {
        "none",
        "identity",
        "topk",
        "topk_layer",
        "randk",
        "fp16",
        "bf16",
        "qsgd",
        "powersgd",
    }
    assert set(COMPRESSORS) == expected
    assert build("topk_layer").layers == LAYERS  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("zip", {}, "compress.name: unknown compressor 'zip'; known: bf16, fp16, identity, none,"),
        ("topk", {"ratio": 1.5}, "compress.ratio must be in (0, 1], got 1.5"),
        ("randk", {"ratio": 0.0}, "compress.ratio must be in (0, 1], got 0.0"),
        ("powersgd", {"rank": 0}, "compress.rank must be an integer >= 1, got 0"),
        ("qsgd", {"levels": 0}, "compress.levels must be an integer in [1, 32767], got 0"),
    ],
)
def test_registry_rejects_bad_values(name: str, kw: dict[str, object], message: str) -> None:
    with pytest.raises(UserError) as err:
        build(name, **kw)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
