"""Configuration: every bad input is one UserError line naming the key; overrides; round trips."""

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scadles.config.load import (
    SCHEMA,
    TEXT_KEYS,
    Config,
    RateSpec,
    ScheduleStep,
    config_from_dict,
    config_to_dict,
    defaults_line,
    defaults_record,
    dump_toml,
    load_config,
    parse_override,
    replace_key,
)
from scadles.config.schema import resolved_buffer_policy, resolved_lr_scaling
from scadles.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def base(**sections: Any) -> dict[str, Any]:
    """Return a minimal valid raw config, with the given sections merged in."""
    raw: dict[str, Any] = {"train": {"steps": 10}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
    return raw


BAD: list[tuple[dict[str, Any], list[str]]] = [
    (base(streams={"rate": 5}), ["unknown key 'streams.rate'", "did you mean 'streams.rates'?"]),
    (base(trian={"lr": 1}), ["unknown key 'trian'", "did you mean 'train'?"]),
    (base(train={"batch": 3}), ["unknown key 'train.batch'", "'policy.batch'"]),
    (base(train={"steps": "ten"}), ["train.steps must be an integer, got 'ten'"]),
    (base(train={"steps": 1.5}), ["train.steps must be an integer, got 1.5"]),
    (base(train={"steps": True}), ["train.steps must be an integer, got True"]),
    (base(run={"progress": 1}), ["run.progress must be true or false, got 1"]),
    (base(train={"lr": "fast"}), ["train.lr must be a number, got 'fast'"]),
    (base(train={"lr": math.nan}), ["train.lr must be a finite number"]),
    (base(data={"name": 3}), ["data.name must be a string, got 3"]),
    (base(data="mnist"), ["data must be a table, got 'mnist'"]),
    (
        base(devices={"count": 3}, streams={"rates": [1, 2, -1]}),
        ["streams.rates[2] must be in [0.001, 1e+06], got -1"],
    ),
    (
        base(devices={"count": 2}, streams={"rates": [0, 2]}),
        ["streams.rates[0] must be in [0.001, 1e+06], got 0"],
    ),
    (base(streams={"rates": []}), ["streams.rates must not be an empty list"]),
    (base(streams={"rates": [1, 2, 3]}), ["streams.rates has 3 values but devices.count is 16"]),
    (base(streams={"rates": "normal-S3"}), ["streams.rates: unknown preset 'normal-S3'; known:"]),
    (
        base(streams={"rates": {"dist": "normal", "mean": 0}}),
        ["streams.rates.mean must be in [0.001, 1e+06]"],
    ),
    (
        base(streams={"rates": {"dist": "normal", "mean": 5, "sd": 1}}),
        ["unknown key 'streams.rates.sd'"],
    ),
    (base(streams={"rates": {"dist": "poisson", "mean": 5}}), ["streams.rates.dist: unknown"]),
    (base(streams={"rates": 5}), ["streams.rates must be a preset name"]),
    (
        base(streams={"schedule": [{"at_s": 5, "scale": 2}, {"at_s": 5, "scale": 1}]}),
        ["streams.schedule[1].at_s must be > streams.schedule[0].at_s (5), got 5"],
    ),
    (
        base(streams={"schedule": [{"at_s": 1, "scale": 0}]}),
        ["streams.schedule[0].scale must be in [1e-09, 1e+09], got 0"],
    ),
    (base(streams={"schedule": [{"at_s": 1}]}), ["streams.schedule[0] must have at_s and scale"]),
    (
        base(streams={"trace": "/no/such/trace.csv"}),
        ["streams.trace: file not found: /no/such/trace.csv"],
    ),
    (
        base(data={"name": "npz", "path": "/no/such/file.npz"}),
        ["data.path: file not found: /no/such/file.npz"],
    ),
    (base(data={"name": "cifar10"}), ["data.path must be set when data.name = 'cifar10'"]),
    (base(data={"name": "imagenet"}), ["data.name: unknown dataset 'imagenet'; known: cifar10"]),
    (base(model={"name": "vgg"}), ["model.name: unknown model 'vgg'; known: cnn1d, cnn2d, mlp"]),
    (base(policy={"name": "foo"}), ["policy.name: unknown policy 'foo'; known: ddl, scadles"]),
    (base(eval={"target_accuracy": 1.5}), ["eval.target_accuracy must be in [0, 1], got 1.5"]),
    (base(eval={"target_accuracy": -0.1}), ["eval.target_accuracy must be in [0, 1], got -0.1"]),
    (base(train={"gamma": 0}), ["train.gamma must be in (0, 1], got 0"]),
    (base(train={"momentum": 1}), ["train.momentum must be in [0, 1), got 1"]),
    (base(train={"seed": -1}), ["train.seed must be >= 0, got -1"]),
    (base(devices={"count": 0}), ["devices.count must be > 0, got 0"]),
    (base(train={"milestones": [5, 3]}), ["train.milestones must be strictly increasing"]),
    (base(train={"milestones": [0]}), ["train.milestones[0] must be > 0, got 0"]),
    (base(policy={"b_min": 16, "b_max": 8}), ["policy.b_max must be >= policy.b_min (16), got 8"]),
    (base(clock={"profile": "csv"}), ["clock.csv must be set when clock.profile = 'csv'"]),
    ({"train": {}}, ["train.steps or train.max_time_s must be set"]),
    ({}, ["train.steps or train.max_time_s must be set"]),
]


@pytest.mark.parametrize(("raw", "expected"), BAD, ids=[e[0][:40] for _, e in BAD])
def test_bad_input_is_one_line_user_error_naming_the_key(
    raw: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(UserError) as info:
        config_from_dict(raw)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_defaults_match_the_documented_ones() -> None:
    cfg = config_from_dict(base())
    assert cfg.data.name == "mnist1d" and cfg.model.name == "cnn1d" and cfg.devices.count == 16
    assert cfg.streams.rates == RateSpec(preset="normal-S1", dist="normal", mean=64.0, std=24.0)
    assert cfg.policy == type(cfg.policy)(name="scadles", batch=64, b_min=8, b_max=1024)
    assert (cfg.train.seed, cfg.train.lr, cfg.train.gamma) == (1234, 0.1, 0.2)
    assert (cfg.eval.every, cfg.eval.target_accuracy, cfg.eval.metric) == (50, 0.9, "top1")
    assert resolved_buffer_policy(cfg) == "truncation" and resolved_lr_scaling(cfg)
    ddl = replace_key(cfg, "policy.name", "ddl")
    assert resolved_buffer_policy(ddl) == "persistence" and not resolved_lr_scaling(ddl)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.steps=100", ("train.steps", 100)),
        ("train.lr=0.05", ("train.lr", 0.05)),
        ("train.lr=1e-3", ("train.lr", 0.001)),
        ("run.progress=false", ("run.progress", False)),
        ("policy.name=ddl", ("policy.name", "ddl")),
        ('policy.name="ddl"', ("policy.name", "ddl")),
        ("streams.rates=normal-S2", ("streams.rates", "normal-S2")),
        ("streams.rates=[1, 2.5]", ("streams.rates", [1, 2.5])),
        (
            "streams.rates={dist = 'uniform', mean = 38}",
            ("streams.rates", {"dist": "uniform", "mean": 38}),
        ),
        (" data.path = /tmp/x y ", ("data.path", "/tmp/x y")),
        ("data.path=2024-01-01", ("data.path", "2024-01-01")),
        ("a.b=1\nc = 2", ("a.b", "1\nc = 2")),
        ("a.b=", ("a.b", "")),
        ("a.b=x=y", ("a.b", "x=y")),
    ],
)
def test_parse_override_reads_toml_values_else_bare_strings(
    text: str, expected: tuple[str, Any]
) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["steps", "steps=3", ".steps=3", "train.=3", "=3"])
def test_parse_override_rejects_keys_without_a_section(text: str) -> None:
    with pytest.raises(UserError, match=r"--set expects section\.key=value"):
        parse_override(text)


def test_overrides_of_every_value_kind_reach_the_config(tmp_path: Path) -> None:
    trace = tmp_path / "rates.csv"
    trace.write_text("time_s,rate\n0,1\n")
    cfg = load_config(
        None,
        [
            "train.steps=7",  # int
            "train.lr=0.5",  # float
            "train.weight_decay=0",  # int for a float key
            "run.progress=false",  # bool
            "policy.name=ddl",  # bare string
            'model.norm="group"',  # quoted string
            "train.milestones=[1, 2.5]",  # list
            "devices.count=3",
            "streams.rates=[10, 20, 30]",  # list of rates
            "streams.schedule=[{at_s = 0, scale = 1}, {at_s = 60, scale = 0.5}]",  # tables
            f"streams.trace={trace}",  # path
            "buffer.capacity=4096",  # optional int
        ],
    )
    assert cfg.train.steps == 7 and cfg.train.lr == 0.5
    assert cfg.train.weight_decay == 0.0 and isinstance(cfg.train.weight_decay, float)
    assert cfg.run.progress is False and cfg.policy.name == "ddl" and cfg.model.norm == "group"
    assert cfg.train.milestones == (1.0, 2.5)
    assert cfg.streams.rates == RateSpec(values=(10.0, 20.0, 30.0))
    assert cfg.streams.schedule == (ScheduleStep(0.0, 1.0), ScheduleStep(60.0, 0.5))
    assert cfg.streams.trace == str(trace) and cfg.buffer.capacity == 4096
    table = load_config(None, ["streams.rates={dist = 'uniform', mean = 38, std = 24}"])
    assert table.streams.rates == RateSpec(dist="uniform", mean=38.0, std=24.0)
    nested = load_config(
        None, ["streams.rates={dist = 'uniform', mean = 38}", "streams.rates.std=5"]
    )
    assert nested.streams.rates == RateSpec(dist="uniform", mean=38.0, std=5.0)


def _takes_any_text(key: str) -> bool:
    """Return whether the schema's check for `key` refuses a number but takes free text."""
    section, name = key.split(".")
    check = SCHEMA[section][1][name]
    try:
        check(key, 1)
    except UserError as err:
        if "must be a string" not in str(err):
            return False
    else:
        return False
    try:
        check(key, "zz-not-a-name")
    except UserError as err:
        return "file not found" in str(err)  # a path: any text names a file
    return True


def test_text_keys_are_the_schemas_free_text_keys() -> None:
    keys = {f"{s}.{k}" for s, (_, checks) in SCHEMA.items() for k in checks}
    assert {k for k in keys if _takes_any_text(k)} == TEXT_KEYS


@pytest.mark.parametrize("text", ["50e5043697", "1234", "1e3", "true", "inf", "[1]"])
def test_set_on_a_text_key_keeps_the_text_as_typed(text: str) -> None:
    cfg = load_config(None, [f"live.prefix={text}", f"live.group= {text} "])
    assert cfg.live.prefix == text and cfg.live.group == text
    assert load_config(None, ['live.prefix="quoted"']).live.prefix == "quoted"
    assert parse_override(f"live.url = {text}") == ("live.url", text)  # sweep grids use it too
    assert parse_override(f"train.lr={text}")[1] != text
    with pytest.raises(UserError, match=r"live\.prefix must be a string, got 1234"):
        config_from_dict(base(live={"prefix": 1234}))  # a TOML file still says what it means


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.stepz=3", "unknown key 'train.stepz' (did you mean 'train.steps'?)"),
        ("train.steps=ten", "train.steps must be an integer, got 'ten'"),
        ("streams.rates.std=5", "--set streams.rates.std: streams.rates is not a table"),
    ],
)
def test_bad_overrides_are_user_errors(override: str, expected: str) -> None:
    with pytest.raises(UserError) as info:
        load_config(None, [override])
    assert expected in str(info.value)


def test_packaged_demo_loads_and_matches_the_repo_copy() -> None:
    cfg = load_config(None)
    assert load_config(REPO / "configs" / "demo.toml") == cfg
    packaged = REPO / "src" / "scadles" / "configs" / "demo.toml"
    assert packaged.read_bytes() == (REPO / "configs" / "demo.toml").read_bytes()
    assert (cfg.data.n_train, cfg.data.n_test, cfg.devices.count) == (20000, 4000, 16)
    assert cfg.streams.rates.preset == "normal-S1" and cfg.train.max_time_s is not None
    assert cfg.clock.emulate_params == "resnet152" and cfg.eval.target_accuracy == 0.85


def test_load_config_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"config: file not found: .*missing\.toml"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 1\n")
    with pytest.raises(UserError, match="not valid TOML") as info:
        load_config(bad)
    assert "\n" not in str(info.value)


def _rich_config(tmp_path: Path) -> Config:
    """Return a config that sets every optional key and a non-preset of each value kind."""
    data = tmp_path / "data.npz"
    data.write_bytes(b"")
    return config_from_dict(
        {
            "data": {"name": "npz", "path": str(data), "n_train": 5, "sample_bytes": 3},
            "devices": {"count": 2},
            "streams": {"rates": [1.5, 2], "schedule": [{"at_s": 0, "scale": 2}]},
            "buffer": {"policy": "persistence", "capacity": 10},
            "policy": {"lr_scaling": False},
            "train": {"steps": 3, "max_time_s": 2.5, "milestones": [1, 2]},
            "clock": {"profile": "csv", "csv": str(data), "latency_s": 0, "bandwidth_bps": 1e9},
        }
    )


@pytest.mark.parametrize("rich", [False, True])
def test_dict_json_and_toml_round_trips(tmp_path: Path, rich: bool) -> None:
    cfg = _rich_config(tmp_path) if rich else load_config(None)
    as_dict = config_to_dict(cfg)
    assert config_from_dict(as_dict) == cfg
    assert config_from_dict(json.loads(json.dumps(as_dict))) == cfg
    text = dump_toml(cfg)
    assert "None" not in text
    assert config_from_dict(tomllib.loads(text)) == cfg


def test_rate_table_round_trips() -> None:
    cfg = config_from_dict(base(streams={"rates": {"dist": "uniform", "mean": 38, "std": 24}}))
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_dict(tomllib.loads(dump_toml(cfg))) == cfg


def test_replace_key_validates() -> None:
    cfg = load_config(None)
    assert replace_key(cfg, "policy.name", "ddl").policy.name == "ddl"
    assert replace_key(cfg, "policy.name", "ddl").train == cfg.train
    with pytest.raises(UserError, match=r"policy\.name: unknown policy 'sgd'"):
        replace_key(cfg, "policy.name", "sgd")


# Raw values of every kind a TOML file or a `--set` can produce, plus a few that neither can.
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["normal-S1", "uniform-S2", "npz", "ddl", "csv", "group", "poisson", "/"]),
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
_section = st.sampled_from([*SCHEMA, "bogus"])
_key = st.sampled_from(sorted({k for _, checks in SCHEMA.values() for k in checks} | {"bogus"}))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_section, st.dictionaries(_key, _value, max_size=4) | _value, max_size=4))
def test_random_input_gives_a_config_or_a_user_error(raw: dict[str, Any]) -> None:
    try:
        cfg = config_from_dict(raw)
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(cfg, Config)
        assert config_from_dict(config_to_dict(cfg)) == cfg


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(f"{s}.{k}" for s, (_, c) in SCHEMA.items() for k in c)), _value)
def test_random_value_for_any_key_gives_a_config_or_a_user_error(dotted: str, value: Any) -> None:
    try:
        cfg = replace_key(load_config(None), dotted, value)
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert config_from_dict(tomllib.loads(dump_toml(cfg))) == cfg


def test_load_config_records_the_sections_taken_from_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "part.toml"
    path.write_text("[train]\nsteps = 5\n[clock]\n")  # an empty table counts as given
    cfg = load_config(path, ["compress.ratio=0.2"])
    others = ("data", "model", "devices", "streams", "buffer", "policy", "eval", "inject")
    assert cfg.defaults == (*others, "live", "run")
    assert cfg.compress.ratio == 0.2 and cfg.clock == Config().clock  # defaults, not the demo's
    assert defaults_line(cfg, path) == (
        f"config: sections not in {path}, using the built-in defaults: "
        "data, model, devices, streams, buffer, policy, eval, inject, live, run"
    )
    assert load_config(None).defaults == ("inject", "live")  # the demo sets every other section
    assert defaults_line(load_config(None), None) is None  # the demo is not the user's file
    full = tmp_path / "full.toml"
    full.write_text(dump_toml(cfg))
    assert load_config(full).defaults == () and defaults_line(load_config(full), full) is None


def test_the_defaults_record_is_not_part_of_the_config(tmp_path: Path) -> None:
    path = tmp_path / "part.toml"
    path.write_text("[train]\nsteps = 5\n")
    cfg = load_config(path)
    resolved = config_to_dict(cfg)
    assert set(resolved) == set(SCHEMA)  # config.json holds sections only
    plain = config_from_dict(resolved)
    assert plain.defaults == () and plain == cfg and hash(plain) == hash(cfg)
    assert replace_key(cfg, "clock.profile", "uniform").defaults == tuple(
        s for s in cfg.defaults if s != "clock"
    )  # a section a sweep point sets is no longer the defaults'
    assert defaults_record(cfg) == {"sections_from_defaults": list(cfg.defaults)}
