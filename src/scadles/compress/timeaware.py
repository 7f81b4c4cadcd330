"""The time-aware exchange [ours]: each step, the candidate with the least time per progress.

ScaDLES' and Accordion's switches look at gradient energy only; this one also asks what a step
costs on the wire. For every candidate exchange c (`compress.candidates`: dense, a cast, Top-k
with error feedback, PowerSGD, ...) it keeps

  t_c  predicted seconds of a step that uses c, from a cost model:
       simulator: base + comm_c + compress_c, where comm_c is the clock's own link model
       (`scadles.clock.comm_time`) of c's payload (priced once on a zero gradient: payload
       bytes depend on shapes only) and compress_c its modelled compute
       (`scadles.timing.compress_time`); base = the coming step's modelled wait + compute, the
       same for every candidate (SimCosts);
       real mode: an EWMA of the measured compute + communication seconds of the steps that used
       c (every rank sees the slowest rank's), refreshed by a probe step whenever c's estimate
       is `probe_every` steps old (MeasuredCosts);
  a_c  progress per step relative to dense, measured: the share of each device's gradient that
       its compressed update carries, first order,
           a_c = sum_i w_i <g_i, D(C(g_i + e_i))> / sum_i w_i <g_i, g_i>
       (g_i without error feedback, the update with it; dense gives 1 + the flushed residual's
       share). Every `probe_every` steps the candidates that can be picked are compressed on
       the same inputs (side-effect free; a candidate whose best possible progress cannot make
       it the pick is skipped, see measure) and the sums, which add over devices, are summed
       over ranks in a small all-reduce, so real mode gets the simulator's value; between
       probes the last values hold. Only candidates compressed beside the one used are extra
       compute (charged on the simulator's clock).

and picks argmin_c t_c / max(a_c, A_MIN). Hysteresis: the current candidate is left only for one
whose score is below (1 - hysteresis) times the current's. Every input of the rule is the same on
every rank (reduced alignments, the slowest rank's timings), so all ranks pick the same candidate;
the step's vote checks it (`same_level`).

Assumptions: a step's wait and compute do not depend on the candidate (the simulator's clock
models them so; on real devices compression compute is measured inside the estimate); progress is
first order in the update, so candidates are compared by their update's component along the mean
gradient, not by their loss decrease, which a single step's noisy training loss cannot resolve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor

from scadles.compress.base import Compressor, Payload
from scadles.compress.registry import COMPRESSORS, USES, check_values
from scadles.compress.switch import State, same_level, state_number, state_tensor
from scadles.errors import UserError

DEFAULT_CANDIDATES = ("none", "fp16", "topk:0.1", "powersgd:4")
A_MIN = 1e-3  # the least progress a candidate is credited with (a_c <= 0 means none)
# gamma with |C(x)| <= gamma |x| for every device's row: selections and projections keep or
# shrink the norm, casts round each value by at most their unit roundoff (2^-11, 2^-8), with
# margin; compressors not listed (Rand-k scaled, QSGD) are always measured.
GROWTH = {
    "identity": 1.0,
    "topk": 1.0,
    "topk_layer": 1.0,
    "powersgd": 1.0 + 1e-4,
    "fp16": 1.0 + 2.0**-10,
    "bf16": 1.0 + 2.0**-7,
}


def _plain() -> list[str]:
    """Return the compressors that take no parameter (none, identity, fp16, bf16)."""
    return [n for n in COMPRESSORS.names() if n not in USES]


def parse_candidate(key: str, spec: str) -> tuple[str, dict[str, Any]]:
    """Return (compressor name, its keyword) of a candidate such as "topk:0.1" or "powersgd:4".

    A compressor without a parameter is named alone; the others (compress.registry.USES) take
    theirs after a colon, checked as make_compressor checks it (ratio in (0, 1], rank >= 1,
    levels in [1, MAX_LEVELS]).
    """
    name, _, arg = spec.partition(":")
    plain = _plain()
    allowed = f"one of {', '.join(plain)}, or NAME:VALUE with NAME in {', '.join(USES)}"
    if name in plain and not arg:
        return name, {}
    if name not in USES or not arg:
        raise UserError(f"{key}: unknown candidate {spec!r}; allowed: {allowed}")
    what = USES[name]
    try:
        value: float | int = float(arg) if what == "ratio" else int(arg)
    except ValueError:
        raise UserError(f"{key}: candidate {spec!r}: {what} must be a number") from None
    values: dict[str, Any] = {"ratio": 0.1, "rank": 1, "levels": 1} | {what: value}
    try:
        check_values(name, **values)
    except UserError as e:  # "compress.ratio must be ..." -> this key and candidate
        raise UserError(f"{key}: candidate {spec!r}: {str(e).removeprefix('compress.')}") from None
    return name, {what: value}


def check_candidates(key: str, value: Sequence[str]) -> tuple[str, ...]:
    """Return the candidates after checking each one and that there are two or more, distinct."""
    specs = tuple(value)
    for spec in specs:
        if not isinstance(spec, str):
            raise UserError(f"{key}: candidates are strings such as 'topk:0.1', got {spec!r}")
        parse_candidate(key, spec)
    if len(specs) < 2 or len(set(specs)) != len(specs):
        raise UserError(f"{key} must list at least two distinct candidates, got {list(specs)}")
    return specs


class CostModel(Protocol):
    """Predicted seconds of a step per candidate."""

    def learn(self, option: int, payload: Payload, comp: Compressor) -> None:
        """Note what candidate `option`'s payload puts on the wire (probe steps)."""
        ...

    def expect(self, base: float) -> None:
        """Note the coming step's seconds before its exchange (its slowest device's wait +
        compute), where the clock models them."""
        ...

    def observe(
        self, option: int, step: int, compute_s: float, comm_s: float, probed: bool = False
    ) -> None:
        """Note a finished step that used `option`: its compute and comm seconds, and whether
        it also measured candidates (extra compute)."""
        ...

    def predict(self, option: int) -> float | None:
        """Return the predicted seconds of a step with `option`, None while unknown."""
        ...

    def due(self, step: int, current: int) -> int | None:
        """Return a candidate to measure at this step (real mode's probes), or None."""
        ...

    def state_dict(self) -> State:
        """Return what resuming needs."""
        ...

    def load_state_dict(self, d: State) -> None:
        """Restore state_dict's output."""
        ...


class SimCosts:
    """The simulator's costs: the clock's link model of each candidate's payload bytes.

    comm(collective, nbytes (K,)) is the virtual clock's communication seconds for every device
    sending nbytes (payload bytes: comm scales them to the accounted size); compress(comp) the
    modelled compression seconds of compressor comp.
    """

    def __init__(
        self,
        n: int,
        k: int,
        comm: Callable[[str, Tensor], float],
        compress: Callable[[Compressor], float],
    ) -> None:
        self.k, self.comm, self.compress = k, comm, compress
        self.wire = torch.full((n,), math.nan, dtype=torch.float64)  # comm + compress seconds
        self.base = 0.0  # the coming step's wait + compute (expect), the same for every candidate

    def learn(self, option: int, payload: Payload, comp: Compressor) -> None:
        """Price the payload: every device sends the largest local device's bytes."""
        per_device = float(payload.nbytes.double().max()) if payload.nbytes.numel() else 0.0
        nbytes = torch.full((self.k,), per_device, dtype=torch.float64)
        self.wire[option] = self.comm(payload.collective, nbytes) + self.compress(comp)

    def expect(self, base: float) -> None:
        """Keep the coming step's wait + compute: the part no candidate changes."""
        self.base = base

    def observe(
        self, option: int, step: int, compute_s: float, comm_s: float, probed: bool = False
    ) -> None:
        """Nothing: the clock's formulas need no measurement."""

    def predict(self, option: int) -> float | None:
        """Return base + the candidate's communication and compression seconds."""
        w = float(self.wire[option])
        return None if math.isnan(w) else self.base + w

    def due(self, step: int, current: int) -> int | None:
        """Return None: the model needs no measurement."""
        return None

    def state_dict(self) -> State:
        """Return the priced candidates and the base."""
        return {"wire": self.wire.clone(), "base": self.base}

    def load_state_dict(self, d: State) -> None:
        """Restore the priced candidates and the base."""
        self.wire, self.base = state_tensor(d, "wire"), state_number(d, "base")


class MeasuredCosts:
    """Real mode's costs: per candidate an EWMA of measured compute + communication seconds.

    A candidate never measured, or last measured `probe_every` steps ago, is due: the switch
    uses it for one step (the oldest first), so the estimates follow the network the job has.
    """

    def __init__(self, n: int, probe_every: int, ewma: float = 0.5) -> None:
        self.probe_every, self.ewma = probe_every, ewma
        self.est = torch.full((n,), math.nan, dtype=torch.float64)  # seconds per step
        self.seen = torch.full((n,), -1, dtype=torch.int64)  # step of the last measurement

    def learn(self, option: int, payload: Payload, comp: Compressor) -> None:
        """Nothing: bytes are not priced, seconds are measured."""

    def expect(self, base: float) -> None:
        """Nothing: real mode measures whole steps."""

    def observe(
        self, option: int, step: int, compute_s: float, comm_s: float, probed: bool = False
    ) -> None:
        """Blend the step's compute + comm seconds into the candidate's estimate; a step that
        also measured candidates (extra compute) is not a measurement of it."""
        if probed:
            return
        x, old = compute_s + comm_s, float(self.est[option])
        self.est[option] = x if math.isnan(old) else self.ewma * old + (1 - self.ewma) * x
        self.seen[option] = step

    def predict(self, option: int) -> float | None:
        """Return the candidate's estimate, None before its first measurement."""
        e = float(self.est[option])
        return None if math.isnan(e) else e

    def due(self, step: int, current: int) -> int | None:
        """Return a candidate never measured; else, every probe_every steps, the one measured
        longest ago if that was probe_every or more steps ago (so one probe per probe_every).
        Never on the switch's measuring steps (step % probe_every == 0, whose extra compute
        would be charged to the probe), but half-way between them."""
        every = self.probe_every
        if every > 1 and step % every == 0:
            return None
        never = [c for c in range(len(self.seen)) if c != current and int(self.seen[c]) < 0]
        if never:
            return never[0]
        if step % every != every // 2:
            return None
        age = step - self.seen  # (n,)
        age[current] = -1  # the current one is measured by being used
        oldest = int(age.argmax())
        return oldest if int(age[oldest]) >= self.probe_every else None

    def state_dict(self) -> State:
        """Return the estimates and when each was last measured."""
        return {"est": self.est.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, d: State) -> None:
        """Restore the estimates."""
        self.est, self.seen = state_tensor(d, "est"), state_tensor(d, "seen")


@contextmanager
def untouched(comp: Compressor) -> Iterator[None]:
    """Run a probe with comp as if it never ran: PowerSGD's warm starts restored, no all-reduce
    of its rounds (the probe aggregates this rank's devices only)."""
    q = getattr(comp, "q", None)
    reduce = getattr(comp, "reduce", None)
    warm = getattr(comp, "warm_gen", None)
    saved = None if q is None else [None if t is None else t.clone() for t in q]
    draws = None if warm is None else warm.get_state()
    if reduce is not None:
        comp.reduce = None  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if reduce is not None:
            comp.reduce = reduce  # type: ignore[attr-defined]
        if saved is not None:
            comp.q = saved  # type: ignore[attr-defined]
        if warm is not None and draws is not None:
            warm.set_state(draws)


def pick(scores: Tensor, current: int, hysteresis: float) -> int:
    """Return the candidate to use: the least score, unless it is not (1 - hysteresis) below the
    current one's, which then stays. Unscored (NaN) candidates count as infinitely slow; with none
    scored the current one stays."""
    filled = torch.where(torch.isnan(scores), math.inf, scores)
    best = int(filled.argmin())
    low, cur = float(filled[best]), float(filled[current])
    if math.isfinite(low) and (not math.isfinite(cur) or low < (1.0 - hysteresis) * cur):
        return best
    return current


class TimeAwareSwitch:
    """Pick the candidate with the least predicted seconds per unit of progress (module doc)."""

    def __init__(
        self,
        labels: Sequence[str],
        levels: Sequence[Compressor],
        costs: CostModel,
        weights: Callable[[Tensor], Tensor],
        *,
        hysteresis: float = 0.1,
        probe_every: int = 20,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not 0.0 <= hysteresis < 1.0:
            raise UserError(f"compress.hysteresis must be in [0, 1), got {hysteresis}")
        if probe_every < 1:
            raise UserError(f"compress.probe_every must be >= 1, got {probe_every}")
        self.labels, self.levels = tuple(labels), list(levels)
        self.costs, self.weights = costs, weights
        self.hysteresis, self.probe_every, self.reduce = hysteresis, probe_every, reduce
        n = len(self.labels)
        self.alignment = torch.ones(n, dtype=torch.float64)  # a_c, measured at probe steps
        self.current = 0  # the candidate the rule keeps
        self.used = 0  # the candidate of the last decision (a real-mode probe may differ)
        self.steps = 0
        self.gen = torch.Generator().manual_seed(0)  # probes of random compressors
        self.probed: tuple[str, ...] = ()  # compressors the last decision ran beside the used one
        self.measured = False  # whether the last decision measured candidates
        self.priced = False  # whether the candidates' payloads are priced
        self.last_signal = torch.zeros(1, dtype=torch.float64)
        self.last_scores = torch.full((n,), math.nan, dtype=torch.float64)

    @property
    def probe(self) -> None:
        """Return None: the exchange compresses only with the level picked (measure() probes)."""
        return None

    def expect(self, base: float) -> None:
        """Pass the coming step's wait + compute seconds to the cost model."""
        self.costs.expect(base)

    def price(self, p: int, dtype: torch.dtype) -> None:
        """Price every candidate's payload once, before the first step, on a zero gradient: the
        bytes of every registered compressor depend on the gradient's shape only, so this is
        set-up work, not charged to a step."""
        zero = torch.zeros(1, p, dtype=dtype)
        gen = torch.Generator().manual_seed(0)
        for c, comp in enumerate(self.levels):
            with untouched(comp):
                self.costs.learn(c, comp.compress(zero, gen), comp)
        self.priced = True

    def measure(self, acc: Tensor, grad: Tensor, w: Tensor, t: Tensor) -> list[int]:
        """Update a_c of the candidates that can be picked at this step; return those compressed.

        a_c = sum_i w_i <g_i, D(C(acc_i))> / sum_i w_i <g_i, g_i>: the sums add over the ranks'
        devices, so an all-reduce per candidate gives every rank the single-process value. The
        current candidate is always measured. Another is skipped when even its largest possible
        progress cannot make it the pick: by Cauchy-Schwarz and |C(x)| <= gamma_c |x| (GROWTH),
        a_c <= gamma_c B with B = sum_i w_i |g_i| |acc_i| / sum_i w_i |g_i|^2, so a candidate
        with t_c / (gamma_c B) at or above the best score measured so far, or at or above
        (1 - hysteresis) times the current's, is not picked whatever a_c is. The pick is the
        one measuring every candidate would make (ties aside). Every rank sees the same t and
        reduced sums, so every rank measures the same candidates.
        """
        g, a, wd = grad.double(), acc.double(), w.double()
        gg = (g * g).sum(dim=1)
        head = torch.stack([wd @ gg, wd @ (gg.sqrt() * a.norm(dim=1))])  # den, B's numerator
        rest = sorted(
            (c for c in range(len(self.levels)) if c != self.current),
            key=lambda c: -math.inf if math.isnan(float(t[c])) else float(t[c]),
        )
        best, bound, done = math.inf, math.inf, list[int]()
        for c in [self.current, *rest]:
            comp, tc = self.levels[c], float(t[c])
            gamma = GROWTH.get(getattr(comp, "name", ""))
            if done and gamma is not None and not math.isnan(tc) and bound > 0:
                cur = float(t[self.current]) / max(float(self.alignment[self.current]), A_MIN)
                limit = min(best, (1.0 - self.hysteresis) * cur)  # NaN cur: best alone
                if tc / (gamma * bound) >= limit:
                    continue
            with untouched(comp):
                kept = comp.decompress(comp.compress(acc, self.gen)).double()  # (K_l, P)
            sums = torch.cat([(wd @ (g * kept).sum(dim=1)).reshape(1), head])
            if self.reduce is not None:
                sums = self.reduce(sums)
            if float(sums[1]) > 0:
                self.alignment[c] = sums[0] / sums[1]
                bound = float(sums[2] / sums[1])
            done.append(c)
            if not math.isnan(tc):
                best = min(best, tc / max(float(self.alignment[c]), A_MIN))
        return done

    def decide(
        self,
        acc: Tensor,
        kept: Tensor | None,
        epoch: int,
        grad: Tensor | None = None,
        b: Tensor | None = None,
    ) -> int:
        """Return the candidate of this step (measuring every probe_every steps)."""
        if not self.priced:
            self.price(acc.shape[1], acc.dtype)
        predicted = [self.costs.predict(c) for c in range(len(self.levels))]
        t = torch.tensor([math.nan if p is None else p for p in predicted], dtype=torch.float64)
        done: list[int] = []
        if self.steps % self.probe_every == 0:
            w = self.weights(b if b is not None else torch.ones(acc.shape[0]))
            done = self.measure(acc, grad if grad is not None else acc, w.to(acc.dtype), t)
        self.measured = bool(done)
        self.steps += 1
        scores = t / self.alignment.clamp(min=A_MIN)
        self.last_scores = scores
        self.current = pick(scores, self.current, self.hysteresis)
        due = self.costs.due(self.steps - 1, self.current)
        self.used = self.current if due is None else due
        # the exchange compresses with the level used anyway: only the others are extra work
        self.probed = tuple(getattr(self.levels[c], "name", "") for c in done if c != self.used)
        self.last_signal = self.alignment[self.used : self.used + 1].clone()
        return self.used

    def observe(self, compute_s: float, comm_s: float, wait_s: float) -> None:
        """Feed the finished step's seconds to the cost model (the slowest rank's)."""
        step = self.steps - 1
        self.costs.observe(self.used, step, compute_s, comm_s, probed=self.measured)

    def vote(self, local: int) -> float:
        """Return the candidate picked here (checked against the other processes' in agree)."""
        return float(local)

    def agree(self, total: float, k: int, world: int, local: int) -> int:
        """Return the candidate, checked to be every process's."""
        return same_level(total, world, local)

    def state_dict(self) -> State:
        """Return the alignments, the current and last-used candidates, the counters, the costs."""
        d: State = {"alignment": self.alignment.clone(), "current": self.current}
        d |= {"used": self.used, "steps": self.steps}
        d |= {f"cost.{k}": v for k, v in self.costs.state_dict().items()}
        d["gen"] = self.gen.get_state()
        return d

    def load_state_dict(self, d: State) -> None:
        """Restore state_dict's output."""
        self.alignment = state_tensor(d, "alignment")
        self.current, self.used = int(state_number(d, "current")), int(state_number(d, "used"))
        self.steps = int(state_number(d, "steps"))
        self.costs.load_state_dict({k[5:]: v for k, v in d.items() if k.startswith("cost.")})
        self.gen.set_state(state_tensor(d, "gen"))
