"""`compress.policy` names -> builders of the compression levels and the switch that picks one.

A builder gets the compress section's values and the model's layers (SwitchArgs) and returns the
compressor of each level and the switch. `STYLES` says how the exchange around a rule handles
error feedback on dense steps and where the aggregation weight enters, when the configuration
leaves it to the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from scadles.compress.base import Compressor
from scadles.compress.energy import CodeSwitch, ScadlesSwitch
from scadles.compress.identity import Identity
from scadles.compress.switch import AccordionSwitch, Fixed, Switch
from scadles.compress.timeaware import CostModel, TimeAwareSwitch, parse_candidate
from scadles.compress.topk import TopK
from scadles.registry import Registry

CODE_INDEX_BYTES = 8  # [authors' code] sends torch.long indices


@dataclass(frozen=True, slots=True)
class SwitchArgs:
    """What a SWITCHES builder is given: the compress section's values and the model's layers."""

    ratio: float  # compress.ratio
    delta: float  # compress.delta
    ewma: float  # compress.ewma
    eta: float  # compress.eta
    critical_ratio: float  # compress.critical_ratio
    per_layer: bool  # compress.per_layer
    layers: tuple[int, ...]  # parameter count of each layer
    devices: int  # K, all devices of the run
    make: Callable[[float], Compressor]  # the configured compressor at a ratio
    reduce: Callable[[Tensor], Tensor] | None  # sum over the processes; None in one process
    sizes: Tensor | None = None  # (K_local,) training samples of each local device's partition
    candidates: tuple[str, ...] = ()  # compress.candidates (time_aware)
    hysteresis: float = 0.1  # compress.hysteresis (time_aware)
    probe_every: int = 20  # compress.probe_every (time_aware)
    named: Callable[[str, dict[str, Any]], Compressor] | None = None  # a compressor by name
    costs: CostModel | None = None  # the time-aware cost model (the clock's, or measured)
    weights: Callable[[Tensor], Tensor] | None = None  # aggregation weights of batch sizes


@dataclass(frozen=True, slots=True)
class ExchangeStyle:
    """How the exchange treats a rule's steps (defaults; compress.dense_feedback overrides)."""

    dense_feedback: str = "flush"  # "flush": a dense step sends g + e, residual 0; "keep"
    weigh_first: bool = False  # compress w_i g_i + e_i and sum, instead of weighting after


Levels = tuple[list[Compressor], Switch]  # (compressor of each level, the switch picking one)


def _fixed(a: SwitchArgs) -> Levels:
    return [a.make(a.ratio)], Fixed(0)


def _energy(a: SwitchArgs, *, feedback_in_signal: bool) -> Levels:
    layers = a.layers if a.per_layer else None
    switch = ScadlesSwitch(a.delta, a.ewma, a.ratio, layers, feedback_in_signal=feedback_in_signal)
    return [Identity(), a.make(a.ratio)], switch


def _ours(a: SwitchArgs) -> Levels:
    return _energy(a, feedback_in_signal=True)


def _paper(a: SwitchArgs) -> Levels:
    return _energy(a, feedback_in_signal=False)


def _code(a: SwitchArgs) -> Levels:
    """The authors' rule with their compressor: layer-wise Top-k, int64 indices on the wire."""
    comp = a.make(a.ratio)
    if isinstance(comp, TopK):
        comp = TopK(a.ratio, a.layers, index_bytes=CODE_INDEX_BYTES)
    switch = CodeSwitch(a.delta, a.ratio, layers=a.layers, sizes=a.sizes)
    return [Identity(), comp], switch


def _time_aware(a: SwitchArgs) -> Levels:
    """The candidates of compress.candidates, picked by predicted time per progress."""
    if a.named is None or a.costs is None or a.weights is None:
        raise ValueError("time_aware needs SwitchArgs.named, costs and weights")
    specs = [parse_candidate("compress.candidates", c) for c in a.candidates]
    levels = [a.named(name, kw) for name, kw in specs]
    switch = TimeAwareSwitch(
        a.candidates,
        levels,
        a.costs,
        a.weights,
        hysteresis=a.hysteresis,
        probe_every=a.probe_every,
        reduce=a.reduce,
    )
    return levels, switch


def _accordion(a: SwitchArgs) -> Levels:
    critical = Identity() if a.critical_ratio >= 1.0 else a.make(a.critical_ratio)
    switch = AccordionSwitch(a.eta, low=0, high=1, reduce=a.reduce, devices=a.devices)
    return [critical, a.make(a.ratio)], switch


# compress.policy -> builder of the levels and their switch; register a builder to add one.
# "scadles" is the name older configurations use for "ours".
SWITCHES: Registry[Callable[[SwitchArgs], Levels]] = Registry(
    "compression switch",
    {
        "fixed": _fixed,
        "ours": _ours,
        "paper": _paper,
        "code": _code,
        "scadles": _ours,
        "accordion": _accordion,
        "time_aware": _time_aware,
    },
    key="compress.policy",
)
STYLES: dict[str, ExchangeStyle] = {"code": ExchangeStyle("keep", weigh_first=True)}
DENSE_FEEDBACK = ("flush", "keep")


def exchange_style(policy: str, dense_feedback: str | None) -> ExchangeStyle:
    """Return the rule's exchange style, with dense_feedback replaced when it is configured."""
    style = STYLES.get(policy, ExchangeStyle())
    if dense_feedback is None:
        return style
    return ExchangeStyle(dense_feedback, style.weigh_first)
