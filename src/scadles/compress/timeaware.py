"""The time-aware exchange [ours]: each step, the candidate with the least time per progress.

ScaDLES' and Accordion's switches look at gradient energy only; this one also asks what a step
costs on the wire. For every candidate exchange c (`compress.candidates`: dense, a cast, Top-k
with error feedback, PowerSGD, ...) it keeps

  t_c  predicted seconds of a step that uses c, from a cost model:
       simulator: base + comm_c + compress_c, where comm_c is the clock's own link model
       (`scadles.clock.comm_time`) of c's payload and compress_c its modelled compute
       (`scadles.timing.compress_time`); base = the last step's wait + compute, the same for
       every candidate (SimCosts);
       real mode: an EWMA of the measured compute + communication seconds of the steps that used
       c (every rank sees the slowest rank's), refreshed by a probe step whenever c's estimate
       is `probe_every` steps old (MeasuredCosts);
  a_c  progress per step relative to dense, measured: the share of each device's gradient that
       its compressed update carries, first order,
           a_c = sum_i w_i <g_i, D(C(g_i + e_i))> / sum_i w_i <g_i, g_i>
       (g_i without error feedback, the update with it; dense gives 1 + the flushed residual's
       share). Every `probe_every` steps every candidate is compressed on the same inputs (side-
       effect free), and both sums, which add over devices, are summed over ranks in one small
       all-reduce, so real mode gets the simulator's value; between probes the last values hold.

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

    def observe(
        self,
        option: int,
        step: int,
        compute_s: float,
        comm_s: float,
        base: float,
        probed: bool = False,
    ) -> None:
        """Note a finished step that used `option`: its compute and comm seconds, base = its
        wait + compute seconds, and whether it also probed every candidate (extra compute)."""
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
        self.base = 0.0  # before the first step: candidates compared on their wire cost alone

    def learn(self, option: int, payload: Payload, comp: Compressor) -> None:
        """Price the payload: every device sends the largest local device's bytes."""
        per_device = float(payload.nbytes.double().max()) if payload.nbytes.numel() else 0.0
        nbytes = torch.full((self.k,), per_device, dtype=torch.float64)
        self.wire[option] = self.comm(payload.collective, nbytes) + self.compress(comp)

    def observe(
        self,
        option: int,
        step: int,
        compute_s: float,
        comm_s: float,
        base: float,
        probed: bool = False,
    ) -> None:
        """Keep the step's wait + compute: the part no candidate changes."""
        self.base = base

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

    def observe(
        self,
        option: int,
        step: int,
        compute_s: float,
        comm_s: float,
        base: float,
        probed: bool = False,
    ) -> None:
        """Blend the step's compute + comm seconds into the candidate's estimate; a step that
        also probed every candidate (extra compute) is not a measurement of it."""
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
        self.probed: tuple[str, ...] = ()  # compressors the last decision ran to probe
        self.last_signal = torch.zeros(1, dtype=torch.float64)
        self.last_scores = torch.full((n,), math.nan, dtype=torch.float64)

    @property
    def probe(self) -> None:
        """Return None: the exchange compresses only with the level picked (measure() probes)."""
        return None

    def measure(self, acc: Tensor, grad: Tensor, w: Tensor) -> None:
        """Compress every candidate on this step's inputs; update a_c and the costs' bytes.

        a_c = sum_i w_i <g_i, D(C(acc_i))> / sum_i w_i <g_i, g_i>: both sums add over the ranks'
        devices, so one all-reduce gives every rank the single-process value.
        """
        g, wd = grad.double(), w.double()
        sums = torch.zeros(len(self.levels) + 1, dtype=torch.float64)
        names = []
        for c, comp in enumerate(self.levels):
            with untouched(comp):
                sent = comp.compress(acc, self.gen)
                kept = comp.decompress(sent).double()  # (K_l, P) each device's own update
            self.costs.learn(c, sent, comp)
            sums[c] = wd @ (g * kept).sum(dim=1)
            names.append(getattr(comp, "name", ""))
        sums[-1] = wd @ (g * g).sum(dim=1)
        if self.reduce is not None:
            sums = self.reduce(sums)
        den = float(sums[-1])
        if den > 0:
            self.alignment = sums[:-1] / den
        self.probed = tuple(names)

    def decide(
        self,
        acc: Tensor,
        kept: Tensor | None,
        epoch: int,
        grad: Tensor | None = None,
        b: Tensor | None = None,
    ) -> int:
        """Return the candidate of this step (probing every probe_every steps)."""
        self.probed = ()
        if self.steps % self.probe_every == 0:
            w = self.weights(b if b is not None else torch.ones(acc.shape[0]))
            self.measure(acc, grad if grad is not None else acc, w.to(acc.dtype))
        self.steps += 1
        predicted = [self.costs.predict(c) for c in range(len(self.levels))]
        t = torch.tensor([math.nan if p is None else p for p in predicted], dtype=torch.float64)
        scores = t / self.alignment.clamp(min=A_MIN)
        self.last_scores = scores
        self.current = pick(scores, self.current, self.hysteresis)
        due = self.costs.due(self.steps - 1, self.current)
        self.used = self.current if due is None else due
        self.last_signal = self.alignment[self.used : self.used + 1].clone()
        return self.used

    def observe(self, compute_s: float, comm_s: float, wait_s: float) -> None:
        """Feed the finished step's seconds to the cost model (the slowest rank's)."""
        base = wait_s + compute_s
        step = self.steps - 1
        self.costs.observe(self.used, step, compute_s, comm_s, base, probed=bool(self.probed))

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
