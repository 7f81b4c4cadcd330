"""`compress.policy` names -> builders of the compression levels and the switch that picks one.

A builder gets the compress section's values and the model's layers (SwitchArgs) and returns the
compressor of each level and the switch. `STYLES` says how the exchange around a rule handles
error feedback on dense steps and where the aggregation weight enters, when the configuration
leaves it to the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from scadles.compress.base import Compressor
from scadles.compress.energy import CodeSwitch, ScadlesSwitch
from scadles.compress.identity import Identity
from scadles.compress.switch import AccordionSwitch, Fixed, Switch
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
