"""The per-key checks that turn raw TOML values into typed configuration values."""

import difflib
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from scadles.config.schema import Config, RateSpec, ScheduleStep, preset_spec
from scadles.data.datasets import DATASETS
from scadles.data.rates import (
    DISTRIBUTIONS,
    MAX_RATE,
    MAX_TIME_S,
    MIN_RATE,
    RATE_PRESETS,
    distribution_rates,
    preset_rates,
    read_trace,
)
from scadles.errors import UserError
from scadles.policies import POLICIES

Check = Callable[[str, Any], Any]  # (dotted key, raw value) -> typed value, or raise UserError


def show(value: Any) -> str:
    """Render a value for a one-line message: repr, cut to a readable length."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(lo: int) -> Check:
    """Check an int (not a bool or float) that is at least `lo`."""

    def check(key: str, value: Any) -> int:
        if not _is_int(value):
            raise UserError(f"{key} must be an integer, got {show(value)}")
        if value < lo:
            bound = "> 0" if lo == 1 else f">= {lo}"
            raise UserError(f"{key} must be {bound}, got {show(value)}")
        return int(value)

    return check


def number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Check:
    """Check a finite int or float within the (optionally open) interval [lo, hi]."""
    if lo is not None and hi is not None:
        allowed = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        allowed = f"{'>' if lo_open else '>='} {lo:g}"
    else:
        allowed = "a number"

    def check(key: str, value: Any) -> float:
        if not (_is_int(value) or isinstance(value, float)):
            raise UserError(f"{key} must be a number, got {show(value)}")
        x = float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf
        if not math.isfinite(x):
            where = f" {allowed}" if hi is not None else ""
            raise UserError(f"{key} must be a finite number{where}, got {show(value)}")
        low_bad = lo is not None and (x <= lo if lo_open else x < lo)
        high_bad = hi is not None and (x >= hi if hi_open else x > hi)
        if low_bad or high_bad:
            raise UserError(f"{key} must be {allowed}, got {show(value)}")
        return x

    return check


def string(key: str, value: Any) -> str:
    """Check a string."""
    if not isinstance(value, str):
        raise UserError(f"{key} must be a string, got {show(value)}")
    if not value.isascii():
        try:  # a lone surrogate (undecodable argv bytes, a JSON "\ud800") has no UTF-8 form
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{key} must be valid Unicode text, got {show(value)}") from None
    return value


def boolean(key: str, value: Any) -> bool:
    """Check a real boolean (not 0/1, not "true")."""
    if not isinstance(value, bool):
        raise UserError(f"{key} must be true or false, got {show(value)}")
    return value


Names = Collection[str] | Callable[[], Collection[str]]  # a registry, or a function of the names


def choice(noun: str, names: Names) -> Check:
    """Check a string that is one of `names`; an unknown one lists the known ones.

    `names` is read at every check, so a name registered after import is accepted.
    """

    def check(key: str, value: Any) -> str:
        text = string(key, value)
        allowed = names() if callable(names) else names
        if text not in allowed:
            known = ", ".join(sorted(allowed))
            raise UserError(f"{key}: unknown {noun} {show(text)}; known: {known}")
        return text

    return check


def count_or_name(noun: str, names: Names) -> Check:
    """Check a positive integer or one of `names` (read at every check); name the known ones."""

    def check(key: str, value: Any) -> int | str:
        if isinstance(value, str):
            allowed = names() if callable(names) else names
            if value not in allowed:
                known = ", ".join(allowed)
                raise UserError(
                    f"{key}: unknown {noun} {show(value)}; known: a positive integer or {known}"
                )
            return value
        if not _is_int(value) or value < 1:
            raise UserError(f"{key} must be a positive integer or a {noun} name, got {show(value)}")
        return int(value)

    return check


def existing_path(key: str, value: Any) -> str:
    """Check a path string that names an existing file or directory; return it with ~ expanded."""
    text = string(key, value)
    path = Path(text).expanduser()
    if text == "" or "\0" in text or not path.exists():
        raise UserError(f"{key}: file not found: {repr(text)[1:-1]}")
    return str(path)


def optional(check: Check) -> Check:
    """Allow None (meaning: unset) in front of another check."""

    def opt(key: str, value: Any) -> Any:
        return None if value is None or value == "default" else check(key, value)

    return opt


def table(key: str, value: Any) -> Mapping[str, Any]:
    """Check a table (a mapping with string keys)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise UserError(f"{key} must be a table, got {show(value)}")
    return value


def array(key: str, value: Any) -> list[Any]:
    """Check a list (TOML array); tuples count too."""
    if not isinstance(value, list | tuple):
        raise UserError(f"{key} must be a list, got {show(value)}")
    return list(value)


POSITIVE = number(0.0, lo_open=True)
NONNEGATIVE = number(0.0)
# Arrivals are int64 counts of rate x time and the clock a float64: rates in [MIN_RATE, MAX_RATE]
# and times <= MAX_TIME_S keep every count <= 1e15 < 2**53, exact in both (see data/rates.py).
RATE = number(MIN_RATE, MAX_RATE)
TIME = number(0.0, MAX_TIME_S, lo_open=True)
AT_TIME = number(0.0, MAX_TIME_S)
SCALE = number(MIN_RATE / MAX_RATE, MAX_RATE / MIN_RATE)  # rate x scale is checked in cross_check


def or_default(check: Check) -> Check:
    """Allow None or the text "default" (meaning: unset, the policy's default; TOML has no null,
    so `--set key=default` is how an override resets a key) in front of another check."""

    def opt(key: str, value: Any) -> Any:
        return None if value is None or value == "default" else check(key, value)

    return opt


def increasing(key: str, value: Any) -> tuple[float, ...]:
    """Check a list of strictly increasing positive numbers (milestones)."""
    items = [POSITIVE(f"{key}[{i}]", v) for i, v in enumerate(array(key, value))]
    for i in range(1, len(items)):
        if items[i] <= items[i - 1]:
            raise UserError(f"{key} must be strictly increasing, got {show(array(key, value))}")
    return tuple(items)


def schedule(key: str, value: Any) -> tuple[ScheduleStep, ...]:
    """Check a list of {at_s, scale} tables with strictly increasing at_s."""
    steps: list[ScheduleStep] = []
    for i, raw in enumerate(array(key, value)):
        where = f"{key}[{i}]"
        entry = table(where, raw)
        reject_unknown(where, entry, ("at_s", "scale"))
        if "at_s" not in entry or "scale" not in entry:
            raise UserError(f"{where} must have at_s and scale, got {show(dict(entry))}")
        step = ScheduleStep(
            AT_TIME(f"{where}.at_s", entry["at_s"]), SCALE(f"{where}.scale", entry["scale"])
        )
        if steps and step.at_s <= steps[-1].at_s:
            previous = f"{key}[{i - 1}].at_s ({steps[-1].at_s:g})"
            raise UserError(f"{where}.at_s must be > {previous}, got {step.at_s:g}")
        steps.append(step)
    return tuple(steps)


def rates(key: str, value: Any) -> RateSpec:
    """Check a preset name, a non-empty list of positive rates, or a {dist, mean, std} table."""
    if isinstance(value, str):
        return preset_spec(choice("preset", RATE_PRESETS)(key, value))
    if isinstance(value, list | tuple):
        if not value:
            raise UserError(f"{key} must not be an empty list")
        return RateSpec(values=tuple(RATE(f"{key}[{i}]", v) for i, v in enumerate(value)))
    if isinstance(value, Mapping):
        spec = table(key, value)
        reject_unknown(key, spec, ("dist", "mean", "std"))
        if "dist" not in spec or "mean" not in spec:
            raise UserError(f"{key} table must have dist and mean, got {show(dict(spec))}")
        dist = choice("distribution", DISTRIBUTIONS)(f"{key}.dist", spec["dist"])
        mean = RATE(f"{key}.mean", spec["mean"])
        std = number(0.0, MAX_RATE)(f"{key}.std", spec.get("std", 0.0))
        return RateSpec(dist=dist, mean=mean, std=std)
    raise UserError(
        f"{key} must be a preset name, a list of rates in [{MIN_RATE:g}, {MAX_RATE:g}] or a table "
        f"{{dist, mean, std}}, got {show(value)}"
    )


def reject_unknown(
    prefix: str,
    raw: Mapping[str, Any],
    known: tuple[str, ...],
    elsewhere: Mapping[str, str] | None = None,
) -> None:
    """Raise on the first key of `raw` not in `known`, suggesting the closest known key.

    `elsewhere` maps key names of other sections to their dotted keys (a key in the wrong section).
    """
    for name in raw:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        guess = (f"{prefix}.{close[0]}" if prefix else close[0]) if close else None
        guess = guess or (elsewhere or {}).get(name)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        raise UserError(f"unknown key {show(f'{prefix}.{name}' if prefix else name)}{hint}")


def cross_check(cfg: Config) -> Config:
    """Apply the checks that involve more than one key; fill defaults that depend on others."""
    data, loader = cfg.data, DATASETS.get(cfg.data.name)
    if loader.default_path is not None and data.path is None:
        data = replace(data, path=existing_path("data.path", loader.default_path))
    if loader.needs_path and data.path is None:
        raise UserError(f"data.path must be set when data.name = {show(data.name)}")
    values, k = cfg.streams.rates.values, cfg.devices.count
    if values is not None and len(values) != k:
        raise UserError(f"streams.rates has {len(values)} values but devices.count is {k}")
    _check_scaled_rates(cfg)
    _check_capacity(cfg)
    if cfg.policy.b_max < cfg.policy.b_min:
        b_min, b_max = cfg.policy.b_min, cfg.policy.b_max
        raise UserError(f"policy.b_max must be >= policy.b_min ({b_min}), got {b_max}")
    if cfg.train.steps is None and cfg.train.max_time_s is None:
        raise UserError("train.steps or train.max_time_s must be set")
    if cfg.clock.profile == "csv" and cfg.clock.csv is None:
        raise UserError("clock.csv must be set when clock.profile = 'csv'")
    if cfg.live.source in ("kafka", "redis") and not cfg.live.url:
        raise UserError(f"live.url must be set when live.source = {show(cfg.live.source)}")
    if cfg.live.source != "sim" and cfg.inject.name != "none":
        raise UserError(
            f"inject.name = {show(cfg.inject.name)} needs live.source = 'sim' "
            "(injection moves samples between simulated streams)"
        )
    return replace(cfg, data=data)


def _check_scaled_rates(cfg: Config) -> None:
    """Check that every rate times every streams.schedule scale stays in [MIN_RATE, MAX_RATE]."""
    streams, k = cfg.streams, cfg.devices.count
    if streams.trace is not None:
        lo, hi, what = *read_trace(streams.trace, k).bounds(), "streams.trace rates"
    else:
        spec = streams.rates
        if spec.values is not None:
            lo, hi = min(spec.values), max(spec.values)
        else:  # presets and {dist, mean, std}: the K quantile rates (clamped to [8, 1024])
            got = preset_rates(spec.preset, k) if spec.preset is not None else None
            if got is None:
                assert spec.dist is not None
                got = distribution_rates(spec.dist, spec.mean, spec.std, k)
            lo, hi = float(got.min()), float(got.max())
        what = "streams.rates"
    for i, step in enumerate(streams.schedule):
        low, high = lo * step.scale, hi * step.scale
        if low < MIN_RATE or high > MAX_RATE:
            raise UserError(
                f"streams.schedule[{i}].scale = {step.scale:g} takes {what} ([{lo:g}, {hi:g}]) "
                f"to [{low:g}, {high:g}]; scaled rates must lie in [{MIN_RATE:g}, {MAX_RATE:g}]"
            )


def _check_capacity(cfg: Config) -> None:
    """Check that buffer.capacity holds at least one batch of the policy (batch or b_min)."""
    capacity, policy = cfg.buffer.capacity, cfg.policy
    if capacity is None:
        return
    fixed = POLICIES.get(policy.name).fixed_batch
    key, batch = ("policy.batch", policy.batch) if fixed else ("policy.b_min", policy.b_min)
    if capacity < batch:
        raise UserError(
            f"buffer.capacity must be >= {key} ({batch}) under {policy.name}, got {capacity}"
        )
