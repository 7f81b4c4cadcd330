"""PowerSGD: rank-r low-rank compression with one power iteration (Vogels et al. 2019).

Each parameter tensor with >= 2 dims is viewed as a matrix M (n, m) (first dim x the rest); 1-D
tensors (biases) travel dense. Per matrix layer, with the warm-started Q (m, r) shared by all
devices (paper Alg. 2):

    P_i = M_i Q;  P = sum_i w_i P_i (all-reduce);  P^ = orth(P)
    Q_i = M_i^T P^;  Q = sum_i w_i Q_i (all-reduce);  update = P^ Q^T

`aggregate` runs both rounds, so it needs each device's M_i: the payload keeps the raw updates
under "updates" (device-local; not on the wire, not in nbytes). The aggregate is
P^ P^^T (sum_i w_i M_i), which is *not* the weighted sum of per-device decompressions because
P^ comes from the shared P; it equals it when K = 1 or all devices send the same update.
`decompress` gives each device's own rank-r approximation, P^_i P^_i^T M_i with
P^_i = orth(M_i Q): what that device alone could reconstruct; error feedback uses it as
residual = input - decompressed. (PyTorch's DDP hook instead subtracts the shared approximation.)
`aggregate` also stores the new Q as the next step's warm start. The rank of a layer is capped
at min(n, m); wire cost per device is 4 * (sum r (n + m) + dense 1-D sizes) bytes.

Across processes `reduce` (the collective's all-reduce) sums each round over the ranks: one
all-reduce of every layer's P, then one of every layer's Q together with the dense layers, so
the returned update is already global.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from scadles.compress.base import Payload


def orthonormal(p: torch.Tensor) -> torch.Tensor:
    """Return an orthonormal basis of the columns of p (..., n, r), batched (reduced QR)."""
    basis: torch.Tensor = torch.linalg.qr(p).Q
    return basis


class PowerSGD:
    """Rank-r PowerSGD with a warm-started Q per matrix layer (state held here)."""

    __slots__ = ("name", "q", "rank", "reduce", "shapes", "warm_gen")

    def __init__(
        self,
        rank: int,
        shapes: tuple[tuple[int, ...], ...],
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        warm_gen: torch.Generator | None = None,
    ) -> None:
        if rank < 1:
            raise ValueError(f"PowerSGD rank must be >= 1, got {rank}")
        self.rank = rank
        self.shapes = shapes
        self.name = "powersgd"
        self.q: list[torch.Tensor | None] = [None] * len(shapes)  # warm starts, (m, r) per matrix
        self.reduce = reduce  # sums a round over processes; None: this process holds every device
        # draws the warm starts; seeded alike on every process, so that all ranks share each Q
        # (the generator given to compress is the process's own); None: compress's generator
        self.warm_gen = warm_gen

    def __repr__(self) -> str:
        return f"PowerSGD(rank={self.rank}, shapes={self.shapes})"

    def _layers(self) -> list[tuple[int, int, int, int]]:
        """Return (offset, n, m, r) per layer; r = 0 marks a dense (1-D) layer."""
        out, offset = [], 0
        for shape in self.shapes:
            numel = math.prod(shape)
            if len(shape) >= 2:
                n, m = shape[0], numel // shape[0]
                out.append((offset, n, m, min(self.rank, n, m)))
            else:
                out.append((offset, numel, 1, 0))
            offset += numel
        return out

    def _floats(self) -> float:
        """Return the values one device sends per step."""
        return float(sum(r * (n + m) if r else n for _, n, m, r in self._layers()))

    def compress(self, updates: torch.Tensor, gen: torch.Generator) -> Payload:
        """Return the per-device first-round factors P_i = M_i Q of every matrix layer."""
        k, p = updates.shape
        if sum(math.prod(s) for s in self.shapes) != p:
            raise ValueError(f"PowerSGD shapes hold {sum(map(math.prod, self.shapes))}, got {p}")
        data = {"updates": updates}
        for j, (off, n, m, r) in enumerate(self._layers()):
            if r:
                mats = updates[:, off : off + n * m].reshape(k, n, m)  # (K, n, m)
                data[f"p{j}"] = mats @ self._warm_q(j, m, r, updates, gen)  # (K, n, r)
        floats = torch.full((k,), self._floats(), dtype=torch.float64)  # (K,)
        return Payload(data, 4.0 * floats, floats, "allreduce")

    def _warm_q(
        self, j: int, m: int, r: int, like: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """Return layer j's warm-start Q (m, r); draw a fresh one if absent or degenerate."""
        q = self.q[j]
        if q is None or q.shape != (m, r) or not bool(torch.linalg.vector_norm(q) > 0):
            draw = gen if self.warm_gen is None else self.warm_gen
            q = torch.randn(m, r, generator=draw, dtype=like.dtype).to(like.device)
            self.q[j] = q
        return q.to(like.dtype)

    def decompress(self, payload: Payload) -> torch.Tensor:
        """Return each device's own rank-r approximation P^_i P^_i^T M_i, dense layers as sent."""
        updates = payload.data["updates"]  # (K, P)
        out = updates.clone()  # dense layers pass through
        k = updates.shape[0]
        for j, (off, n, m, r) in enumerate(self._layers()):
            if r:
                mats = updates[:, off : off + n * m].reshape(k, n, m)  # (K, n, m)
                basis = orthonormal(payload.data[f"p{j}"])  # (K, n, r)
                q_i = mats.transpose(1, 2) @ basis  # (K, m, r)
                out[:, off : off + n * m] = (basis @ q_i.transpose(1, 2)).reshape(k, n * m)
        return out

    def aggregate(self, payload: Payload, weights: torch.Tensor) -> torch.Tensor:
        """Run both all-reduce rounds and return P^ Q^T per layer, (P,); keep Q as warm start."""
        updates = payload.data["updates"]  # (K, P)
        w = weights.to(updates.dtype)  # (K,)
        out = w @ updates  # (P,) dense layers: the plain weighted sum
        k = updates.shape[0]
        layers = self._layers()
        mats = {
            j: updates[:, off : off + n * m].reshape(k, n, m)  # (K, n, m)
            for j, (off, n, m, r) in enumerate(layers)
            if r
        }
        p_sums = [torch.einsum("k,knr->nr", w, payload.data[f"p{j}"]) for j in mats]
        bases = [orthonormal(p) for p in self._round(p_sums)]  # (n, r) each
        q_sums = [
            torch.einsum("k,knm,nr->mr", w, mats[j], b) for j, b in zip(mats, bases, strict=True)
        ]
        dense = [(off, n) for off, n, _, r in layers if not r]  # 1-D layers: (offset, size)
        if self.reduce is not None and dense:  # only they travel dense, with the second round
            q_sums.append(torch.cat([out[off : off + n] for off, n in dense]))
        reduced = self._round(q_sums)
        if self.reduce is not None and dense:
            flat, at = reduced.pop(), 0
            for off, n in dense:
                out[off : off + n] = flat[at : at + n]
                at += n
        for j, basis, q in zip(mats, bases, reduced, strict=True):
            off, n, m, _ = layers[j]
            out[off : off + n * m] = (basis @ q.T).flatten()
            self.q[j] = q.detach().clone()
        return out

    def _round(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return parts summed over processes: one all-reduce of them all (as is without reduce)."""
        if self.reduce is None or not parts:
            return parts
        flat = self.reduce(torch.cat([t.reshape(-1) for t in parts]))
        chunks = torch.split(flat, [t.numel() for t in parts])
        return [c.view_as(t) for c, t in zip(chunks, parts, strict=True)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Return the warm-start Q of each matrix layer that has one, and the warm-start draws."""
        out = {f"q{j}": q for j, q in enumerate(self.q) if q is not None}
        if self.warm_gen is not None:
            out["warm_gen"] = self.warm_gen.get_state()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore warm starts saved by state_dict."""
        self.q = [state.get(f"q{j}") for j in range(len(self.shapes))]
        if self.warm_gen is not None and "warm_gen" in state:
            self.warm_gen.set_state(state["warm_gen"])
