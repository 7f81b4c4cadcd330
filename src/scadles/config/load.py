"""Load the typed configuration tree once: TOML file + `--set section.key=value` overrides.

Whatever the file does not set comes from the dataclass defaults in `scadles.config.schema` (the
packaged demo, used when no file is given, is a file like any other, not those defaults).
`load_config` records the sections taken whole from the defaults in `Config.defaults`; that
record never takes part in config equality or in `config_to_dict` (so not in config.json).
"""

import datetime
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from scadles.clock import PROFILES
from scadles.compress.registry import COMPRESSORS
from scadles.compress.switches import DENSE_FEEDBACK, SWITCHES
from scadles.compress.timeaware import check_candidates
from scadles.config.checks import (
    NONNEGATIVE,
    POSITIVE,
    TIME,
    Check,
    array,
    boolean,
    choice,
    count_or_name,
    cross_check,
    existing_path,
    increasing,
    integer,
    number,
    optional,
    or_default,
    rates,
    reject_unknown,
    schedule,
    show,
    string,
    table,
)
from scadles.config.schema import (
    BufferConfig,
    ClockConfig,
    CompressConfig,
    Config,
    DataConfig,
    DevicesConfig,
    EvalConfig,
    InjectConfig,
    LiveConfig,
    ModelConfig,
    PolicyConfig,
    RateSpec,
    RunConfig,
    ScheduleStep,
    StreamsConfig,
    TrainConfig,
)
from scadles.data.augment import AUGMENTATIONS
from scadles.data.buffer import BUFFER_POLICIES
from scadles.data.datasets import DATASETS
from scadles.data.injectors import INJECTIONS
from scadles.data.partition import PARTITIONS
from scadles.errors import UserError
from scadles.live.source import SOURCES
from scadles.nn.models import MODELS
from scadles.nn.norm import NORMS
from scadles.nn.sizes import size_names
from scadles.policies import POLICIES
from scadles.textfile import read_text

__all__ = [
    "DEFAULTS_FILE",
    "BufferConfig",
    "ClockConfig",
    "Config",
    "DataConfig",
    "DevicesConfig",
    "EvalConfig",
    "LiveConfig",
    "ModelConfig",
    "PolicyConfig",
    "RateSpec",
    "RunConfig",
    "ScheduleStep",
    "StreamsConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "defaults_line",
    "defaults_record",
    "dump_toml",
    "load_config",
    "parse_override",
    "replace_key",
]

INT_POS = integer(1)
DEVICES = ("auto", "cpu", "cuda")  # run.device: auto = cuda when available, else cpu


# Every section's keys and their checks; the dataclass fields give the defaults. Names come from
# the registries, read when a config is validated (a name registered after import counts).
def scale_cap(key: str, value: Any) -> float:
    """Check policy.lr_scale_max: 0 (no cap) or a number in [1, 1e6]."""
    if _is_zero(value):
        return 0.0
    try:
        return float(number(1.0, 1e6)(key, value))
    except UserError:
        raise UserError(
            f"{key} must be 0 (no cap) or a number in [1, 1e6], got {value!r}"
        ) from None


def _is_zero(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


SCHEMA: dict[str, tuple[type[Any], dict[str, Check]]] = {
    "data": (DataConfig, {
        "name": choice("dataset", DATASETS),
        "path": optional(existing_path),
        "n_train": optional(INT_POS),
        "n_test": optional(INT_POS),
        "sample_bytes": optional(INT_POS),
        "augment": choice("augmentation", AUGMENTATIONS),
    }),
    "model": (ModelConfig, {
        "name": choice("model", MODELS),
        "norm": choice("norm", NORMS),
        "width": INT_POS,
        "groups": INT_POS,
    }),
    "devices": (DevicesConfig, {
        "count": INT_POS,
        "partition": choice("partition", PARTITIONS),
        "dirichlet_alpha": POSITIVE,
        "shards_per_device": INT_POS,
    }),
    "streams": (StreamsConfig, {
        "rates": rates,
        "arrivals": choice("arrival model", ("deterministic", "poisson")),
        "window_s": POSITIVE,
        "schedule": schedule,
        "trace": optional(existing_path),
    }),
    "buffer": (BufferConfig, {
        "policy": or_default(choice("buffer policy", BUFFER_POLICIES)),
        "capacity": optional(INT_POS),
    }),
    "policy": (PolicyConfig, {
        "name": choice("policy", POLICIES),
        "batch": INT_POS,
        "b_min": INT_POS,
        "b_max": INT_POS,
        "lr_scaling": or_default(boolean),
        "warmup_steps": integer(0),
        "lr_scale_max": scale_cap,  # 0 (uncapped) or in [1, 1e6]
    }),
    "train": (TrainConfig, {
        "seed": integer(0),
        "lr": POSITIVE,
        "momentum": number(0.0, 1.0, hi_open=True),
        "weight_decay": NONNEGATIVE,
        "milestones": increasing,
        "gamma": number(0.0, 1.0, lo_open=True),
        "steps": optional(INT_POS),
        "diverge_steps": integer(0),
        "diverge_factor": number(1.0, 1e12, lo_open=True),
        "max_time_s": optional(TIME),
    }),
    "eval": (EvalConfig, {
        "every": INT_POS,
        "target_accuracy": number(0.0, 1.0),
        "batch_size": INT_POS,
        "metric": choice("metric", ("top1", "top5")),
    }),
    "clock": (ClockConfig, {
        "profile": choice("clock profile", PROFILES),
        "csv": optional(existing_path),
        "emulate_params": optional(count_or_name("model", size_names)),
        "seconds_per_sample": optional(POSITIVE),
        "overhead_s": optional(NONNEGATIVE),
        "bandwidth_bps": optional(POSITIVE),
        "latency_s": optional(NONNEGATIVE),
    }),
    "compress": (CompressConfig, {
        "name": or_default(choice("compressor", COMPRESSORS)),
        "ratio": number(0.0, 1.0, lo_open=True),
        "delta": NONNEGATIVE,
        "ewma": number(0.0, 1.0, hi_open=True),
        "policy": or_default(choice("compression switch", SWITCHES)),
        "error_feedback": or_default(boolean),
        "dense_feedback": or_default(choice("dense-step error feedback", DENSE_FEEDBACK)),
        "momentum_correction": boolean,
        "momentum_masking": boolean,
        "per_layer": boolean,
        "rank": INT_POS,
        "levels": INT_POS,
        "bucket": INT_POS,
        "eta": POSITIVE,
        "critical_ratio": number(0.0, 1.0, lo_open=True),
        "candidates": lambda key, value: check_candidates(key, array(key, value)),
        "hysteresis": number(0.0, 1.0, hi_open=True),
        "probe_every": INT_POS,
    }),
    "inject": (InjectConfig, {
        "name": choice("injection", INJECTIONS),
        "alpha": number(0.0, 1.0, lo_open=True),
        "beta": number(0.0, 1.0, lo_open=True),
    }),
    "live": (LiveConfig, {
        "source": choice("live source", lambda: ("sim", *SOURCES)),
        "url": optional(string),
        "prefix": string,
        "group": string,
        "stall_s": POSITIVE,
        "max_message_bytes": INT_POS,
        "bandwidth": boolean,
        "bandwidth_schedule": schedule,
    }),
    "run": (RunConfig, {
        "mode": choice("mode", ("sim", "dist")),
        "progress": boolean,
        "device": choice("device", DEVICES),
        "deterministic": boolean,
    }),
}  # fmt: skip


# Keys whose values are free text: `--set live.prefix=50e5043697` means that text, not the
# float TOML reads (inf), and `--set data.path=2024` means the file, not the integer.
TEXT_KEYS = frozenset(
    {"data.path", "streams.trace", "clock.csv", "live.url", "live.prefix", "live.group"}
)


# A run directory's record of the sections its config took whole from the built-in defaults
# (beside config.json, so it never takes part in checkpoint or sweep config equality).
DEFAULTS_FILE = "config_defaults.json"


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML file (None: the packaged demo), apply `key=value` overrides, validate.

    The sections neither the file nor an override names come whole from the built-in defaults;
    the returned config lists them in `defaults` (see `defaults_line`).
    """
    raw = _read_toml(path)
    for text in overrides:
        _set_dotted(raw, *parse_override(text))
    missing = tuple(s for s in SCHEMA if s not in raw)
    return replace(config_from_dict(raw), defaults=missing)


def defaults_line(cfg: Config, path: str | Path | None) -> str | None:
    """Return the one line telling which sections of the file at `path` came from the built-in
    defaults, or None (no file given, or it has every section)."""
    if path is None or not cfg.defaults:
        return None
    return f"config: sections not in {path}, using the built-in defaults: {', '.join(cfg.defaults)}"


def defaults_record(cfg: Config) -> dict[str, Any]:
    """Return the content of a run directory's DEFAULTS_FILE."""
    return {"sections_from_defaults": list(cfg.defaults)}


def _read_toml(path: str | Path | None) -> dict[str, Any]:
    """Parse the TOML (or resolved .json) file at `path`, or the packaged demo when None."""
    if path is None:
        text = resources.files("scadles").joinpath("configs/demo.toml").read_text("utf-8")
    else:
        text = read_text(path, "config")  # one line naming the file when not UTF-8 text
    if path is not None and Path(path).suffix == ".json":  # a run's resolved config.json
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"config: {path} is not valid JSON: {err}") from None
        except (ValueError, RecursionError) as err:  # an integer of > 4300 digits, deep nesting
            raise UserError(f"config: {path} is not valid JSON: {_why(err)}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config: {path} must hold a JSON object")
        return loaded
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config: {path or 'demo.toml'} is not valid TOML: {err}") from None
    except (ValueError, RecursionError) as err:  # an integer of > 4300 digits, deep nesting
        raise UserError(f"config: {path} is not valid TOML: {_why(err)}") from None


def _why(err: Exception) -> str:
    """Say in a few words why a parser gave up other than by a syntax error."""
    return "nested too deeply" if isinstance(err, RecursionError) else "integer too long"


def parse_override(text: str) -> tuple[str, Any]:
    """Split "a.b=VALUE"; VALUE is a TOML value if it parses as one, else a bare string.

    A free-text key (TEXT_KEYS) keeps unquoted text as typed; a quoted string is unquoted.
    """
    dotted, sep, value_text = text.partition("=")
    dotted = dotted.strip()
    parts = dotted.split(".")
    if not sep or len(parts) < 2 or not all(p.strip() for p in parts):
        raise UserError(f"--set expects section.key=value, got {show(text)}")
    key, value = ".".join(p.strip() for p in parts), _parse_value(value_text.strip())
    if key in TEXT_KEYS and not isinstance(value, str):
        value = value_text.strip()
    return key, value


def _parse_value(text: str) -> Any:
    """Parse one TOML value; fall back to the text itself (dates count as text)."""
    try:
        parsed = tomllib.loads(f"v = {text}")
    except (ValueError, RecursionError):  # not TOML, an over-long integer or deep nesting
        return text
    value = parsed.get("v")
    if set(parsed) != {"v"} or isinstance(value, datetime.date | datetime.time):
        return text
    return value


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set raw[a][b]... = value for "a.b...", creating missing tables."""
    *parents, leaf = dotted.split(".")
    node = raw
    for i, name in enumerate(parents):
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            where = ".".join(parents[: i + 1])
            raise UserError(f"--set {dotted}: {where} is not a table, got {show(child)}")
        node = child
    node[leaf] = value


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """Validate a raw {section: {key: value}} mapping into a Config, or raise UserError."""
    top = table("config", d)
    reject_unknown("", top, tuple(SCHEMA))
    sections: dict[str, Any] = {}
    for section, (cls, checks) in SCHEMA.items():
        raw = table(section, top.get(section, {}))
        others = {k: f"{s}.{k}" for s, (_, c) in SCHEMA.items() if s != section for k in c}
        reject_unknown(section, raw, tuple(checks), others)
        sections[section] = cls(**{k: checks[k](f"{section}.{k}", v) for k, v in raw.items()})
    return cross_check(Config(**sections))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Return a JSON-able {section: {key: value}} dict that config_from_dict maps back to `cfg`."""
    out: dict[str, Any] = {}
    for section in fields(cfg):
        if section.name not in SCHEMA:  # Config.defaults: where values came from, not a value
            continue
        values = getattr(cfg, section.name)
        out[section.name] = {f.name: _plain(getattr(values, f.name)) for f in fields(values)}
    return out


def _plain(value: Any) -> Any:
    """Turn a config value into JSON/TOML-able data (RateSpec, schedule steps, tuples)."""
    if isinstance(value, RateSpec):
        if value.preset is not None:
            return value.preset
        if value.values is not None:
            return list(value.values)
        return {"dist": value.dist, "mean": value.mean, "std": value.std}
    if isinstance(value, ScheduleStep):
        return {"at_s": value.at_s, "scale": value.scale}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def replace_key(cfg: Config, dotted: str, value: Any) -> Config:
    """Return `cfg` with one dotted key set to `value`, validated like a `--set` override."""
    raw = config_to_dict(cfg)
    _set_dotted(raw, dotted, value)
    section = dotted.split(".")[0].strip()
    return replace(config_from_dict(raw), defaults=tuple(s for s in cfg.defaults if s != section))


def dump_toml(cfg: Config) -> str:
    """Render `cfg` as TOML (None values omitted) that load_config reads back to `cfg`."""
    lines: list[str] = []
    for section, values in config_to_dict(cfg).items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None)
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    """Render one value of this schema's types (str, bool, int, float, list, table) as TOML."""
    if isinstance(value, str):
        # JSON string = TOML basic string; ensure_ascii would write astral characters as
        # surrogate pairs ("\ud800\udc00"), which TOML refuses
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")
