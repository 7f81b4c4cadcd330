"""A chunked step equals the unchunked one: gradients, loss, hits and BatchNorm running statistics.

The union batch is cut on device boundaries (`chunk_bounds`); the dense exchange accumulates the
chunks' gradients, per-device gradients are vmapped one chunk at a time, and BatchNorm running
statistics move once over all devices (`deferred_running_stats`). Oracle: the same exchange with
one chunk (a chunk size above the batch), to 1e-6, for several chunk sizes down to one device
per chunk, with empty devices at the start, middle and end (float64 models).
"""

from __future__ import annotations

import copy

import pytest
import torch

from scadles.chunking import chunk_bounds, deferred_running_stats, segments
from scadles.config.load import load_config
from scadles.exchange import Batch, DenseExchange, Exchange
from scadles.nn import SegmentBatchNorm, build_model
from scadles.training import build

SHAPE = (12,)  # values per sample
CLASSES = 3
WHOLE = 10**9  # chunk elements above any test batch: one chunk
SIZES = (1, 12 * 5, 12 * 17)  # one device per chunk, ~5 rows, ~17 rows per chunk


def batch(b: list[int], seed: int, equal: bool = False) -> Batch:
    """Return a packed batch of devices with sizes b and ScaDLES (or equal) weights."""
    g = torch.Generator().manual_seed(seed)
    bt = torch.tensor(b)
    n = int(bt.sum())
    x = torch.randn(n, *SHAPE, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    seg = torch.repeat_interleave(torch.arange(len(b)), bt)
    w = (bt > 0).double() if equal else bt.double()
    return Batch(x, y, seg, bt, w / w.sum())


def model(norm: str) -> torch.nn.Module:
    return build_model(
        "cnn1d", SHAPE, CLASSES, norm=norm, width=4, groups=2, gen=torch.Generator().manual_seed(3)
    ).double()  # float64: the sums' order differs between chunkings, 1e-6 is then no rounding


def stats(m: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for t in m.buffers() if t.is_floating_point()]


B = [0, 7, 3, 0, 11, 1, 5, 9, 2, 0]


def test_chunk_bounds_fall_on_device_boundaries() -> None:
    b = torch.tensor(B)
    starts = (torch.cumsum(b, 0) - b).tolist()
    for rows in (1, 4, 10, 100):
        spans = chunk_bounds(b, rows)
        assert spans[0][2] == 0 and spans[-1][3] == int(b.sum())
        for (d0, d1, r0, r1), nxt in zip(spans, [*spans[1:], None], strict=True):
            assert r0 == starts[d0] and r1 == r0 + int(b[d0:d1].sum()) and r1 > r0
            assert r1 - r0 <= rows + int(b.max()) - 1
            if nxt is not None:
                assert nxt[0] == d1 and nxt[2] == r1
    one = chunk_bounds(b, 1)  # one non-empty device per chunk
    assert [int((b[d0:d1] > 0).sum()) for d0, d1, _, _ in one] == [1] * int((b > 0).sum())
    assert chunk_bounds(torch.tensor([5, 0, 0]), 5) == [(0, 1, 0, 5)]  # empty tail: no chunk
    assert chunk_bounds(torch.zeros(0, dtype=torch.long), 5) == []


@pytest.mark.parametrize("equal", [False, True])
@pytest.mark.parametrize("norm", ["none", "group", "batch"])
def test_dense_chunked_equals_unchunked(norm: str, equal: bool) -> None:
    ref = model(norm)
    whole = DenseExchange(ref, 100.0, chunk_elements=WHOLE)
    for size in SIZES:
        net = copy.deepcopy(ref)
        ex = DenseExchange(net, 100.0, chunk_elements=size)
        start = copy.deepcopy(ref.state_dict())
        for step in range(2):  # BN running statistics compound over steps
            bt = batch(B, seed=step, equal=equal)
            want = whole(bt, 0, torch.Generator())
            got = ex(bt, 0, torch.Generator())
            torch.testing.assert_close(got.update, want.update, atol=1e-6, rtol=0)
            assert got.loss == pytest.approx(want.loss, abs=1e-6)
            assert got.correct == want.correct
            for a, c in zip(stats(net), stats(ref), strict=True):
                torch.testing.assert_close(a, c, atol=1e-6, rtol=0)
        ref.load_state_dict(start)
    if norm == "batch":  # the statistics did move: the check above is not vacuous
        bn = next(m for m in ref.modules() if isinstance(m, SegmentBatchNorm))
        before = bn.running_mean.clone()
        whole(batch(B, seed=0), 0, torch.Generator())
        assert not torch.equal(before, bn.running_mean)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_compressed_chunked_equals_unchunked(norm: str) -> None:
    cfg = load_config(
        None, ["compress.name=topk", "compress.policy=fixed", f"devices.count={len(B)}"]
    )
    ref = model(norm)
    whole = build.exchange(cfg, ref, len(B), 100.0)
    assert isinstance(whole, Exchange)
    whole.grads.chunk_elements = WHOLE
    for size in SIZES:
        net = copy.deepcopy(ref)
        ex = build.exchange(cfg, net, len(B), 100.0)
        assert isinstance(ex, Exchange)
        ex.grads.chunk_elements = size
        ex.feedback.residual = whole.feedback.residual.clone()
        start = copy.deepcopy(ref.state_dict())
        for step in range(2):
            bt = batch(B, seed=10 + step)
            want = whole(bt, 0, torch.Generator().manual_seed(step))
            got = ex(bt, 0, torch.Generator().manual_seed(step))
            torch.testing.assert_close(got.update, want.update, atol=1e-6, rtol=0)
            torch.testing.assert_close(
                ex.feedback.residual, whole.feedback.residual, atol=1e-6, rtol=0
            )
            assert got.loss == pytest.approx(want.loss, abs=1e-6)
            assert got.correct == want.correct
            for a, c in zip(stats(net), stats(ref), strict=True):
                torch.testing.assert_close(a, c, atol=1e-6, rtol=0)
        ref.load_state_dict(start)
        whole.feedback.residual.zero_()


def test_deferred_stats_update_once_as_one_pass() -> None:
    net = model("batch")
    whole = copy.deepcopy(net)
    bt = batch(B, seed=4)
    from scadles.nn import Segments, device_segments

    with torch.no_grad():
        with device_segments(Segments(bt.seg, len(B), None)):
            whole(bt.x)
        with deferred_running_stats(net):
            for d0, d1, r0, r1 in chunk_bounds(bt.b, 4):
                with device_segments(Segments(bt.seg[r0:r1] - d0, segments(d1 - d0), None)):
                    net(bt.x[r0:r1])
    for a, c in zip(stats(net), stats(whole), strict=True):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=0)
    assert not any("_update_running" in vars(m) for m in net.modules())  # method restored
