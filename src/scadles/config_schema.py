"""The configuration's value types and the per-key checks that turn raw TOML values into them."""

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scadles.errors import UserError

Check = Callable[[str, Any], Any]  # (dotted key, raw value) -> typed value, or raise UserError

DATASETS_NEEDING_PATH = ("cifar10", "cifar100", "mnist", "npz")
DATASETS = ("mnist1d", "digits", "synthetic", "fashion_mnist", *DATASETS_NEEDING_PATH)
FASHION_MNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"
# Stream-rate presets: (distribution, mean, std) samples/s per device, paper Table II.
RATE_PRESETS: dict[str, tuple[str, float, float]] = {
    "uniform-S1": ("uniform", 38.0, 24.0),
    "uniform-S2": ("uniform", 300.0, 112.0),
    "normal-S1": ("normal", 64.0, 24.0),
    "normal-S2": ("normal", 256.0, 28.0),
}


@dataclass(frozen=True, slots=True)
class RateSpec:
    """Per-device stream rates: a preset, an explicit list of K rates, or a distribution."""

    preset: str | None = None
    values: tuple[float, ...] | None = None
    dist: str | None = None  # "normal" | "uniform"; filled from the preset table for presets
    mean: float = 0.0
    std: float = 0.0


@dataclass(frozen=True, slots=True)
class ScheduleStep:
    """Multiply every device's rate by `scale` from simulated time `at_s` on."""

    at_s: float
    scale: float


def preset_rates(name: str) -> RateSpec:
    """Return the RateSpec of a named preset, with its distribution filled in."""
    dist, mean, std = RATE_PRESETS[name]
    return RateSpec(preset=name, dist=dist, mean=mean, std=std)


@dataclass(frozen=True, slots=True)
class DataConfig:
    """`[data]`: which data set, where its files are, how much of it to use."""

    name: str = "mnist1d"
    path: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    sample_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """`[model]`: the network and its normalisation."""

    name: str = "cnn1d"
    norm: str = "none"
    width: int = 32
    groups: int = 8


@dataclass(frozen=True, slots=True)
class DevicesConfig:
    """`[devices]`: how many devices and how the training set is split among them."""

    count: int = 16
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    shards_per_device: int = 2


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    """`[streams]`: per-device stream rates, arrival process and rate changes over time."""

    rates: RateSpec = RateSpec(preset="normal-S1", dist="normal", mean=64.0, std=24.0)
    arrivals: str = "deterministic"
    window_s: float = 1.0
    schedule: tuple[ScheduleStep, ...] = ()
    trace: str | None = None


@dataclass(frozen=True, slots=True)
class BufferConfig:
    """`[buffer]`: what a device keeps of its stream between steps."""

    policy: str | None = None  # None: the policy's default (scadles truncation, ddl persistence)
    capacity: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """`[policy]`: ScaDLES or the conventional DDL baseline, and their batch bounds."""

    name: str = "scadles"
    batch: int = 64
    b_min: int = 8
    b_max: int = 1024
    lr_scaling: bool | None = None  # None: true for scadles, false for ddl


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """`[train]`: optimiser, learning-rate schedule and budget (steps or simulated time)."""

    seed: int = 1234
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = ()
    gamma: float = 0.2
    steps: int | None = None
    max_time_s: float | None = None


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """`[eval]`: how often to evaluate and the accuracy that counts as reached."""

    every: int = 50
    target_accuracy: float = 0.9
    batch_size: int = 2048
    metric: str = "top1"


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """`[clock]`: the simulated device profile (compute, bandwidth, latency)."""

    profile: str = "paper"
    csv: str | None = None
    emulate_params: int | None = None
    seconds_per_sample: float | None = None
    overhead_s: float | None = None
    bandwidth_bps: float | None = None
    latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class CompressConfig:
    """`[compress]`: gradient compression, error feedback and the switch that turns it on."""

    name: str | None = None  # None: by policy (scadles -> topk, ddl -> none)
    ratio: float = 0.1
    delta: float = 0.3
    ewma: float = 0.9
    policy: str | None = None  # switch; None: by policy (scadles -> scadles, ddl -> fixed)
    error_feedback: bool = True
    per_layer: bool = False
    rank: int = 1
    levels: int = 256
    eta: float = 0.5
    critical_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class RunConfig:
    """`[run]`: simulated or real distributed mode; progress display."""

    mode: str = "sim"
    progress: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: one frozen value per TOML section."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    devices: DevicesConfig = DevicesConfig()
    streams: StreamsConfig = StreamsConfig()
    buffer: BufferConfig = BufferConfig()
    policy: PolicyConfig = PolicyConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    clock: ClockConfig = ClockConfig()
    compress: CompressConfig = CompressConfig()
    run: RunConfig = RunConfig()


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
            raise UserError(f"{key} must be a finite number, got {show(value)}")
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
    return value


def boolean(key: str, value: Any) -> bool:
    """Check a real boolean (not 0/1, not "true")."""
    if not isinstance(value, bool):
        raise UserError(f"{key} must be true or false, got {show(value)}")
    return value


def choice(noun: str, names: tuple[str, ...]) -> Check:
    """Check a string that is one of `names`; an unknown one lists the known ones."""

    def check(key: str, value: Any) -> str:
        text = string(key, value)
        if text not in names:
            known = ", ".join(sorted(names))
            raise UserError(f"{key}: unknown {noun} {show(text)}; known: {known}")
        return text

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
        return None if value is None else check(key, value)

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
            NONNEGATIVE(f"{where}.at_s", entry["at_s"]), POSITIVE(f"{where}.scale", entry["scale"])
        )
        if steps and step.at_s <= steps[-1].at_s:
            previous = f"{key}[{i - 1}].at_s ({steps[-1].at_s:g})"
            raise UserError(f"{where}.at_s must be > {previous}, got {step.at_s:g}")
        steps.append(step)
    return tuple(steps)


def rates(key: str, value: Any) -> RateSpec:
    """Check a preset name, a non-empty list of positive rates, or a {dist, mean, std} table."""
    if isinstance(value, str):
        return preset_rates(choice("preset", tuple(RATE_PRESETS))(key, value))
    if isinstance(value, list | tuple):
        if not value:
            raise UserError(f"{key} must not be an empty list")
        return RateSpec(values=tuple(POSITIVE(f"{key}[{i}]", v) for i, v in enumerate(value)))
    if isinstance(value, Mapping):
        spec = table(key, value)
        reject_unknown(key, spec, ("dist", "mean", "std"))
        if "dist" not in spec or "mean" not in spec:
            raise UserError(f"{key} table must have dist and mean, got {show(dict(spec))}")
        dist = choice("distribution", ("normal", "uniform"))(f"{key}.dist", spec["dist"])
        mean = POSITIVE(f"{key}.mean", spec["mean"])
        std = NONNEGATIVE(f"{key}.std", spec.get("std", 0.0))
        return RateSpec(dist=dist, mean=mean, std=std)
    raise UserError(
        f"{key} must be a preset name, a list of positive rates or a table "
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
