"""Cut a packed union batch into cache-sized chunks on device boundaries (bounded memory in K).

A step over K devices packs every device's rows into one batch (device 0's rows, then device 1's,
...). Running 64,000 rows through forward and backward at once holds every activation at once and
leaves the cache; `chunk_bounds` cuts the batch into pieces of about `CHUNK_ELEMENTS` input values
whose boundaries fall between devices, so per-device BatchNorm (`SegmentBatchNorm`) still sees
each device's whole batch. Backward accumulates the chunks' gradients. BatchNorm running
statistics must move once, as one pass over every device would move them: `deferred_running_stats`
collects each chunk's per-device statistics and applies the layer's own update once, over all
devices. A model with a torch BatchNorm in train mode normalises over whatever rows it is given,
so it is never chunked (`chunkable`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from scadles.nn import SegmentBatchNorm

# Input values (rows x values per sample) per chunk: 2^16 (256 KiB of float32 input, about 1,600
# rows of cnn1d on MNIST-1D) keeps a small model's activations near the cache; at K = 1,000 x 64
# rows it measured 7.0 us per sample against 7.6 (2^15) and 12.6 (2^17) (bench/scale_devices.py).
CHUNK_ELEMENTS = 1 << 16


class Stats(NamedTuple):
    """One chunk's per-device BatchNorm statistics, as `_update_running` receives them."""

    mean: Tensor  # (K_c, C)
    var: Tensor  # (K_c, C) biased
    cnt: Tensor  # (K_c,) valid rows
    positions: int  # spatial positions per row


def chunk_rows(x: Tensor, elements: int = CHUNK_ELEMENTS) -> int:
    """Return how many rows of x (N, *shape) make one chunk of about `elements` input values."""
    per_row = max(1, x[0].numel()) if x.shape[0] else 1
    return max(1, elements // per_row)


def chunk_bounds(b: Tensor, rows: int) -> list[tuple[int, int, int, int]]:
    """Split devices with batch sizes b (K,) into consecutive chunks of about `rows` rows.

    Returns (first device, end device, first row, end row) per non-empty chunk. A chunk holds
    whole devices only: those whose first row falls in the same window of `rows` rows, so a chunk
    has at most rows + max(b) - 1 rows, and a device larger than `rows` is a chunk of its own.
    O(K) tensor work plus a loop over the chunks (about N / rows of them).
    """
    k = int(b.numel())
    if k == 0:
        return []
    ends = torch.cumsum(b.to(torch.int64), 0)  # (K,) end row of each device
    starts = ends - b  # (K,)
    window = starts // rows  # (K,) chunk of each device, non-decreasing
    cut = torch.nonzero(window[1:] != window[:-1]).squeeze(1) + 1  # first device of each chunk
    firsts = [0, *cut.tolist()]
    lasts = [*firsts[1:], k]
    row_at = [*starts[firsts].tolist(), int(ends[-1])]
    spans = zip(firsts, lasts, row_at[:-1], row_at[1:], strict=True)
    return [(f, e, r0, r1) for f, e, r0, r1 in spans if r1 > r0]


def segments(devices: int) -> int:
    """Return the segment count to declare for a chunk of `devices` devices (at least 2).

    A one-device call takes SegmentBatchNorm's fused path, which updates the running statistics
    itself instead of through `_update_running`; declaring an empty second device keeps it on the
    per-device path (an empty device has weight 0 in every statistic).
    """
    return max(devices, 2)


def chunkable(model: nn.Module) -> bool:
    """Return whether model's result on a batch equals the sum of its results on device chunks.

    A torch BatchNorm in train mode normalises over every row it is given (the whole union batch
    unchunked), so chunking would change its output.
    """
    return not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))


@contextmanager
def deferred_running_stats(model: nn.Module) -> Iterator[None]:
    """Collect each SegmentBatchNorm's per-device statistics in the body, then update once.

    Each layer's running-statistic update is a function of the per-device means, variances and
    row counts of the devices it saw; the chunks see disjoint sets of whole devices, so
    concatenating their statistics over the device axis and updating once gives exactly the
    update one unchunked pass makes. Layers with `update_stats = False` are left alone.
    """
    layers = [m for m in model.modules() if isinstance(m, SegmentBatchNorm) and m.update_stats]
    seen: list[list[Stats]] = [[] for _ in layers]

    def collector(store: list[Stats]) -> Callable[[Tensor, Tensor, Tensor, int], None]:
        def collect(mean: Tensor, var: Tensor, cnt: Tensor, positions: int) -> None:
            store.append(Stats(mean, var, cnt, positions))

        return collect

    for m, store in zip(layers, seen, strict=True):
        m._update_running = collector(store)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for m in layers:
            del m._update_running  # the class's method again
    for m, store in zip(layers, seen, strict=True):
        if store:
            positions = {s.positions for s in store}
            assert len(positions) == 1, "a layer saw inputs of different spatial sizes"
            m._update_running(
                torch.cat([s.mean for s in store]),  # (K, C)
                torch.cat([s.var for s in store]),  # (K, C)
                torch.cat([s.cnt for s in store]),  # (K,)
                positions.pop(),
            )
