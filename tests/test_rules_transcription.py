"""The three adaptive-compression rules against loop transcriptions of their sources.

Each transcription is written from the source's description, one device and one layer at a time:
`code` from the authors' `launch/adaptive_compression.py` and `misc/topkcompression.py` (weights
b_i / sum b applied to the gradient before compression, per-layer Top-k of g + e with the residual
updated on every call, unsquared sums of per-layer norms, an AverageMeter restarted at each
device's own epoch, votes >= int(K / 2), a dense branch that all-reduces the raw weighted
gradient); `paper` from the printed rule; `ours` from our reading. The production exchange
(levels and switch from SWITCHES, the style from exchange_style) must equal them step by step over
a compress, dense, compress sequence, in both error-feedback modes.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from scadles.compress import ErrorFeedback, TopK, make_compressor
from scadles.compress.switches import SWITCHES, SwitchArgs, exchange_style
from scadles.exchange import Batch, Exchange

LAYERS = (6, 4, 10)  # parameter tensors of the toy model; P = 20
P = sum(LAYERS)
K = 4
RATIO = 0.25  # layer-wise k = (1, 1, 2); whole-model k = 5
DELTA = 0.2  # paper / ours
CODE_DELTA = 0.15  # code: without the epoch restart the step-3 mean stays above it
EWMA = 0.3
BATCHES = [[8, 16, 24, 16], [12, 12, 20, 4], [16, 8, 8, 32]]  # b_i per step (weights vary)
SIZES = [b1 + b2 for b1, b2 in zip(BATCHES[0], BATCHES[1], strict=True)]  # epoch 1 at step 3


def _gradients() -> list[Tensor]:
    """Return three steps of per-device gradients (K, P): concentrated, flat, concentrated."""
    gen = torch.Generator().manual_seed(7)
    steps = []
    for kind, scale in (("peak", 5.0), ("flat", 1.0), ("peak", 20.0)):
        g = torch.randn(K, P, generator=gen, dtype=torch.float64) * 0.01
        if kind == "flat":
            g = g + torch.sign(torch.randn(K, P, generator=gen, dtype=torch.float64))
        else:
            off = 0
            for n in LAYERS:  # one dominant entry per layer and device
                at = torch.randint(0, n, (K,), generator=gen) + off
                g[torch.arange(K), at] = scale * (1 + torch.rand(K, generator=gen).double())
                off += n
        steps.append(g)
    return steps


def _topk(t: Tensor, k: int) -> Tensor:
    """Return the dense Top-k (by magnitude) of a 1-D tensor: the authors' sparsify, desparsify."""
    _, idx = torch.topk(t.abs(), k, sorted=False)
    return torch.zeros_like(t).scatter_(0, idx, t.gather(0, idx))


def _layers(row: Tensor) -> list[Tensor]:
    return list(torch.split(row, list(LAYERS)))


class _Meter:
    """The authors' AverageMeter."""

    def __init__(self) -> None:
        self.sum, self.count, self.avg = 0.0, 0, 0.0

    def update(self, val: float) -> None:
        self.sum += val
        self.count += 1
        self.avg = self.sum / self.count


def authors_code(dense_feedback: str) -> list[tuple[int, Tensor, Tensor]]:
    """Transcribe the authors' adaptive step; return (level, update, residuals) per step."""
    res: list[list[Tensor | None]] = [[None] * len(LAYERS) for _ in range(K)]
    meters = [_Meter() for _ in range(K)]
    epochs, trained = [0] * K, [0] * K
    out = []
    for g, b in zip(_gradients(), BATCHES, strict=True):
        agg = sum(b)
        votes, decs, weighted, accs = 0, [], [], []
        for i in range(K):
            gw = [x * (b[i] / agg) for x in _layers(g[i])]  # param.grad *= local / aggregate
            og_norm = sum(float(torch.norm(x)) for x in gw)
            dec_i, acc_i = [], []
            for j, x in enumerate(gw):
                prev = res[i][j]
                t = x if prev is None else 1.0 * prev + x  # ResidualMemory.compensate, beta 1
                d = _topk(t, max(1, int(t.numel() * RATIO)))
                res[i][j] = t - d  # ResidualMemory.update, on every call
                dec_i.append(d)
                acc_i.append(t)
            comp_norm = sum(float(torch.norm(x)) for x in dec_i)
            epoch = trained[i] // SIZES[i]  # the epoch loop over the device's own loader
            if epoch != epochs[i]:
                meters[i], epochs[i] = _Meter(), epoch
            meters[i].update(abs(og_norm - comp_norm) / og_norm)
            trained[i] += b[i]
            votes += int(meters[i].avg <= CODE_DELTA)
            decs.append(torch.cat(dec_i))
            weighted.append(torch.cat(gw))
            accs.append(torch.cat(acc_i))
        if votes >= int(K / 2):  # compression_allreduce: sum of the gathered sparse layers
            level, update = 1, torch.stack(decs).sum(0)
        elif dense_feedback == "keep":  # dist.all_reduce(param.grad): the raw weighted gradient
            level, update = 0, torch.stack(weighted).sum(0)
        else:  # flush: send what feedback accumulated, forget the residual
            level, update = 0, torch.stack(accs).sum(0)
            res = [[torch.zeros(n, dtype=torch.float64) for n in LAYERS] for _ in range(K)]
        residual = torch.stack([torch.cat([r for r in row if r is not None]) for row in res])
        out.append((level, update, residual))
    return out


SIGNALS: list[float] = []  # energy_rule's raw signal per step, mean over devices


def energy_rule(feedback_in_signal: bool, dense_feedback: str) -> list[tuple[int, Tensor, Tensor]]:
    """Transcribe `paper` (feedback_in_signal False) or `ours`: squared energy, EWMA, majority."""
    e = torch.zeros(K, P, dtype=torch.float64)
    smoothed: list[float | None] = [None] * K
    k = max(1, int(P * RATIO))
    out = []
    SIGNALS.clear()
    for g, b in zip(_gradients(), BATCHES, strict=True):
        w = [bi / sum(b) for bi in b]
        votes, tops, accs, sigs = 0, [], [], []
        for i in range(K):
            acc = g[i] + e[i]
            top = _topk(acc, k)
            kept = top if feedback_in_signal else _topk(g[i], k)
            total = float(g[i] @ g[i])
            sig = abs(total - float(kept @ kept)) / total
            sigs.append(sig)
            prev = smoothed[i]
            smoothed[i] = sig if prev is None else EWMA * prev + (1 - EWMA) * sig
            votes += int(smoothed[i] <= DELTA)  # type: ignore[operator]
            tops.append(top)
            accs.append(acc)
        if votes * 2 >= K:
            level = 1
            update = sum(w[i] * tops[i] for i in range(K))
            e = torch.stack([accs[i] - tops[i] for i in range(K)])
        elif dense_feedback == "keep":
            level = 0
            update = sum(w[i] * g[i] for i in range(K))
            e = torch.stack([accs[i] - tops[i] for i in range(K)])
        else:
            level = 0
            update = sum(w[i] * accs[i] for i in range(K))
            e = torch.zeros(K, P, dtype=torch.float64)
        assert isinstance(update, Tensor)
        out.append((level, update, e))
        SIGNALS.append(sum(sigs) / K)
    return out


class _FixedGrads:
    """Hand the exchange this step's fixed per-device gradients (the model is not the point)."""

    def __init__(self, steps: list[Tensor]) -> None:
        self.steps = iter(steps)

    def __call__(self, x: Tensor, y: Tensor, seg: Tensor, b: Tensor) -> tuple[Tensor, ...]:
        g = next(self.steps)  # (K, P)
        return g, torch.zeros(len(b), dtype=torch.float64), torch.zeros(len(y), 2)

    def flat_params(self) -> Tensor:
        raise AssertionError("no momentum correction here")


OUR_SIGNALS: list[float | None] = []  # the exchange's reported signal per step


def ours(
    rule: str, dense_feedback: str | None
) -> tuple[list[tuple[int, Tensor, Tensor]], Exchange]:
    """Run the production exchange of `rule` over the three steps."""
    args = SwitchArgs(
        ratio=RATIO,
        delta=CODE_DELTA if rule == "code" else DELTA,
        ewma=EWMA,
        eta=0.5,
        critical_ratio=1.0,
        per_layer=False,
        layers=LAYERS,
        devices=K,
        make=lambda r: make_compressor("topk", ratio=r),
        reduce=None,
        sizes=torch.tensor(SIZES),
    )
    levels, switch = SWITCHES.get(rule)(args)
    memory = ErrorFeedback.zeros(K, P, dtype=torch.float64)
    ex = Exchange(
        _FixedGrads(_gradients()),  # type: ignore[arg-type]
        levels,
        switch,
        memory,
        style=exchange_style(rule, dense_feedback),
    )
    out = []
    OUR_SIGNALS.clear()
    for b in BATCHES:
        bt = torch.tensor(b)
        n = int(bt.sum())
        seg = torch.repeat_interleave(torch.arange(K), bt)
        batch = Batch(
            torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), seg, bt, bt.double() / bt.sum()
        )
        done = ex(batch, 0, torch.Generator().manual_seed(0))
        out.append((int(done.compressed), done.update, memory.residual.clone()))
        OUR_SIGNALS.append(done.signal)
    return out, ex


@pytest.mark.parametrize("dense_feedback", [None, "keep", "flush"])
def test_code_rule_equals_the_authors_update_step_by_step(dense_feedback: str | None) -> None:
    want = authors_code(dense_feedback or "keep")  # the rule keeps the residual by default
    got, _ = ours("code", dense_feedback)
    assert [lv for lv, _, _ in want] == [1, 0, 1]  # the scenario: compress, dense, compress
    for (lw, uw, rw), (lg, ug, rg) in zip(want, got, strict=True):
        assert lg == lw
        torch.testing.assert_close(ug, uw, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rg, rw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("rule", "in_signal"), [("paper", False), ("ours", True)])
@pytest.mark.parametrize("dense_feedback", ["flush", "keep"])
def test_energy_rules_equal_their_transcription(
    rule: str, in_signal: bool, dense_feedback: str
) -> None:
    want = energy_rule(in_signal, dense_feedback)
    got, _ = ours(rule, dense_feedback)
    assert [lv for lv, _, _ in want] == [1, 0, 1]
    assert pytest.approx(SIGNALS, rel=1e-12) == OUR_SIGNALS
    for (lw, uw, rw), (lg, ug, rg) in zip(want, got, strict=True):
        assert lg == lw
        torch.testing.assert_close(ug, uw, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rg, rw, rtol=1e-12, atol=1e-12)


def test_dense_feedback_modes_differ_on_the_dense_step() -> None:
    """The oracle can tell the modes apart: flush zeroes the residual, keep does not."""
    flush, keep = authors_code("flush"), authors_code("keep")
    assert float(flush[1][2].abs().sum()) == 0.0
    assert float(keep[1][2].abs().sum()) > 1.0
    assert not torch.allclose(flush[1][1], keep[1][1])


def test_paper_and_ours_signals_differ_when_feedback_matters() -> None:
    """Top-k of g + e against Top-k of g: the two squared rules are not the same rule."""
    _, ex_p = ours("paper", "keep")
    _, ex_o = ours("ours", "keep")
    sp = ex_p.switch.last_signal  # type: ignore[attr-defined]
    so = ex_o.switch.last_signal  # type: ignore[attr-defined]
    assert not torch.allclose(sp, so)


def test_code_rule_sends_layerwise_topk_with_int64_indices() -> None:
    _, ex = ours("code", None)
    comp = ex.levels[1]
    assert isinstance(comp, TopK)
    assert comp.layers == LAYERS and comp.index_bytes == 8
    kept = sum(max(1, int(n * RATIO)) for n in LAYERS)
    payload = comp.compress(torch.randn(K, P), torch.Generator())
    assert payload.nbytes.tolist() == [12.0 * kept] * K  # fp32 value + int64 index
    assert math.isclose(float(payload.floats[0]), kept)


def test_a_configured_code_run_counts_each_devices_own_epoch() -> None:
    """Through build.engine: the partition sizes reach the rule and a few steps run."""
    from scadles.config.load import load_config
    from scadles.training import build

    sets = ["data.name=synthetic", "data.n_train=400", "data.n_test=50", "model.name=mlp"]
    sets += ["devices.count=4", "streams.rates=[40, 40, 80, 80]", "streams.window_s=0.5"]
    sets += ["policy.name=scadles", "compress.name=topk", "compress.policy=code", "eval.every=1000"]
    eng = build.engine(load_config(None, sets))
    ex = eng.exchange
    assert isinstance(ex, Exchange) and ex.style.weigh_first and ex.style.dense_feedback == "keep"
    sizes = getattr(ex.switch, "sizes", None)
    assert sizes is not None and sizes.tolist() == [100.0] * 4  # 400 samples over 4 devices
    for _ in range(6):  # 20 + 20 + 40 + 40 samples a step: the fast devices pass an epoch
        eng.step()
    epochs = getattr(ex.switch, "epochs", None)
    assert epochs is not None and epochs.tolist() == [1.0, 1.0, 2.0, 2.0]
