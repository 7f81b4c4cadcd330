"""Exactness bounds of the configuration: rates, schedule scales, time budget, buffer capacity,
and "default" resetting a by-policy key."""

from pathlib import Path
from typing import Any

import pytest

from scadles.cli.main import main
from scadles.config.load import config_to_dict, load_config
from scadles.errors import UserError
from scadles.training.build import compresses, compressor_name, switch_name

K4 = ["devices.count=4", "data.name='synthetic'"]
BAD = ["1e30", "1e-300", "inf", "nan", "-1.0", "0"]


def load(*overrides: str) -> Any:
    return load_config(None, [*K4, *overrides])


@pytest.mark.parametrize("bad", BAD)
def test_rate_list_out_of_range(bad: str) -> None:
    with pytest.raises(UserError, match=r"streams\.rates\[1\] must be .*\[0\.001, 1e\+06\]"):
        load(f"streams.rates=[10.0, {bad}, 10.0, 10.0]")


@pytest.mark.parametrize("bad", BAD)
def test_rate_table_mean_out_of_range(bad: str) -> None:
    with pytest.raises(UserError, match=r"streams\.rates\.mean must be"):
        load(f"streams.rates={{dist = 'normal', mean = {bad}, std = 1.0}}")


@pytest.mark.parametrize("bad", ["1e30", "inf", "nan", "-1.0"])
def test_rate_table_std_out_of_range(bad: str) -> None:
    with pytest.raises(UserError, match=r"streams\.rates\.std must be"):
        load(f"streams.rates={{dist = 'normal', mean = 64.0, std = {bad}}}")


@pytest.mark.parametrize("bad", BAD)
def test_schedule_scale_out_of_range(bad: str) -> None:
    with pytest.raises(UserError, match=r"streams\.schedule\[0\]\.scale"):
        load(
            "streams.rates=[10.0, 10.0, 10.0, 10.0]",
            f"streams.schedule=[{{at_s = 1.0, scale = {bad}}}]",
        )


@pytest.mark.parametrize(("rate", "scale"), [(1e5, 100.0), (1e-2, 0.01)])
def test_rate_times_scale_out_of_range(rate: float, scale: float) -> None:
    """Each factor is in range, their product is not."""
    with pytest.raises(UserError, match=r"streams\.schedule\[0\]\.scale = .* must lie in"):
        load(
            f"streams.rates=[{rate}, 10.0, 10.0, 10.0]",
            f"streams.schedule=[{{at_s = 1.0, scale = {scale}}}]",
        )


def test_preset_times_scale_out_of_range() -> None:
    with pytest.raises(UserError, match=r"streams\.schedule\[0\]\.scale"):
        load("streams.rates='normal-S1'", "streams.schedule=[{at_s = 1.0, scale = 1e5}]")


def test_bounds_inclusive() -> None:
    cfg = load(
        "streams.rates=[0.001, 1e6, 10.0, 10.0]",
        "streams.schedule=[{at_s = 1e9, scale = 1.0}]",
        "train.max_time_s=1e9",
    )
    assert cfg.streams.rates.values == (0.001, 1e6, 10.0, 10.0)


@pytest.mark.parametrize("bad", ["1.5e9", "inf", "nan", "0.0", "-5.0"])
def test_max_time_out_of_range(bad: str) -> None:
    with pytest.raises(UserError, match=r"train\.max_time_s must be .*\(0, 1e\+09\]"):
        load(f"train.max_time_s={bad}")


@pytest.mark.parametrize("bad", ["1e30", "1e-300", "inf", "nan", "-1", "0"])
def test_trace_rate_out_of_range(tmp_path: Path, bad: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(f"time_s,rate\n0,10\n5,{bad}\n")
    with pytest.raises(UserError, match=r"streams\.trace: .* rates must be in \[0\.001, 1e\+06\]"):
        load(f"streams.trace={trace}")


def test_trace_times_scale_out_of_range(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,rate\n0,10\n5,1e5\n")
    assert load(f"streams.trace={trace}").streams.trace == str(trace)
    with pytest.raises(UserError, match=r"streams\.trace rates"):
        load(f"streams.trace={trace}", "streams.schedule=[{at_s = 1.0, scale = 100.0}]")


def test_cli_huge_rate_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(
        [
            "run",
            "--out",
            str(tmp_path / "run"),
            "--set",
            "streams.rates=[1e30, 1, 1, 1]",
            *(a for s in K4 for a in ("--set", s)),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "streams.rates[0]" in err and "1e+30" in err and "[0.001, 1e+06]" in err


@pytest.mark.parametrize(
    ("policy", "key", "batch", "capacity"),
    [("ddl", "policy.batch", 64, 10), ("scadles", "policy.b_min", 8, 4)],
)
def test_capacity_below_batch(policy: str, key: str, batch: int, capacity: int) -> None:
    msg = f"buffer.capacity must be >= {key} ({batch}) under {policy}, got {capacity}"
    with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        load(f"policy.name='{policy}'", f"buffer.capacity={capacity}")
    assert load(f"policy.name='{policy}'", f"buffer.capacity={batch}").buffer.capacity == batch


def test_capacity_follows_configured_batch() -> None:
    with pytest.raises(UserError, match=r"policy\.batch \(100\) under ddl, got 64"):
        load("policy.name='ddl'", "policy.batch=100", "buffer.capacity=64")


def _file(tmp_path: Path) -> Path:
    """A config with no [compress] or [buffer] keys, so everything there is by policy."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[data]\nname = "synthetic"\n[devices]\ncount = 4\n[policy]\nname = "ddl"\n'
        "[train]\nsteps = 2\n"
    )
    return path


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("compress.name", "topk"),
        ("compress.policy", "scadles"),
        ("buffer.policy", "truncation"),
        ("policy.lr_scaling", "true"),
    ],
)
def test_default_resets_a_by_policy_key(tmp_path: Path, key: str, value: str) -> None:
    path = _file(tmp_path)
    unset = load_config(path)
    assert load_config(path, [f"{key}={value}"]) != unset
    reset = load_config(path, [f"{key}={value}", f"{key}=default"])
    assert reset == unset
    assert config_to_dict(reset) == config_to_dict(unset)


def test_default_compressor_under_ddl_is_dense(tmp_path: Path) -> None:
    cfg = load_config(_file(tmp_path), ["compress.name=topk", "compress.name=default"])
    assert cfg.compress.name is None
    assert compressor_name(cfg) == "none" and not compresses(cfg)
    assert switch_name(load_config(_file(tmp_path), ["compress.policy=default"])) == "fixed"
