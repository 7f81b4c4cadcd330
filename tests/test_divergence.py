"""Divergence detection: the watch's rules, its checkpointed state, and a run that stops with
exit status 1 and one line; the LR scale cap keeps a very uneven fleet training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scadles.cli.main import main
from scadles.training.divergence import DivergenceWatch

RUN = [
    "--set", "data.name=synthetic",
    "--set", "data.n_train=800",
    "--set", "data.n_test=100",
    "--set", "model.name=mlp",
    "--set", "devices.count=4",
    "--set", "streams.rates=[20, 40, 64, 90]",
    "--set", "eval.every=5",
    "--set", "train.steps=40",
    "--set", "compress.name=none",
]  # fmt: skip


def _feed(watch: DivergenceWatch, losses: list[float | None]) -> list[bool]:
    return [watch.update(i + 1, loss, False) for i, loss in enumerate(losses)]


def test_non_finite_losses_in_a_row_stop_the_run() -> None:
    watch = DivergenceWatch(steps=3, factor=5.0)
    assert _feed(watch, [2.0, math.nan, None, 1.9, math.inf, math.nan, math.nan]) == [
        False, False, False, False, False, False, True,
    ]  # fmt: skip
    assert (watch.since, watch.run) == (5, 3)


def test_a_loss_above_the_factor_or_back_at_the_first_counts() -> None:
    # above 5 x the first loss
    assert _feed(DivergenceWatch(2, 5.0), [2.0, 10.5, 11.0]) == [False, False, True]
    # 10.0 is not above the bound: no run
    assert _feed(DivergenceWatch(2, 5.0), [2.0, 10.0, 10.0]) == [False, False, False]
    # back at the untrained loss after learning (1.5 < 0.8 x 2.0) counts; before, it does not
    assert _feed(DivergenceWatch(2, 5.0), [2.0, 1.5, 2.0, 2.3]) == [False, False, False, True]
    assert _feed(DivergenceWatch(2, 5.0), [2.0, 1.7, 2.0, 2.3]) == [False, False, False, False]
    # a skipped (non-finite gradient) step counts even with a finite loss
    watch = DivergenceWatch(2, 5.0)
    assert [watch.update(1, 2.0, False), watch.update(2, 1.0, True), watch.update(3, 1, True)] == [
        False, False, True,
    ]  # fmt: skip


def test_steps_zero_never_stops_and_the_state_round_trips() -> None:
    assert not any(_feed(DivergenceWatch(0, 5.0), [1.0] + [math.nan] * 50))
    a = DivergenceWatch(3, 5.0)
    _feed(a, [2.0, 1.0, math.nan, math.nan])
    b = DivergenceWatch(3, 5.0)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b == a
    assert b.update(5, math.nan, False) and a.update(5, math.nan, False)


def test_a_diverging_run_exits_1_with_one_line_and_the_summary_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: a learning rate no model survives
    out = tmp_path / "r"
    # Act
    status = main(["run", *RUN, "--set", "train.lr=1e4", "--out", str(out), "--quiet"])
    # Assert
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("config:")]
    assert status == 1
    assert len(err) == 1 and "training diverged" in err[0] and "train.lr" in err[0], err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"] == err[0].split("policy scadles: ", 1)[1]
    assert summary["steps"] < 40
    assert len((out / "steps.jsonl").read_text().splitlines()) == summary["steps"]


def test_a_healthy_run_exits_0_with_no_divergence(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert main(["run", *RUN, "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["diverged"] is None


UNEVEN = "[2, 450, 450, 450, 450, 450, 450, 450, 450, 450, 450, 450, 450, 450, 450, 450]"


def test_a_fleet_with_rates_two_orders_apart_trains_under_the_default_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: the demo with one 2/s stream beside fifteen at 450/s: sum b / (64 K) = 6.6
    args = ["configs/demo.toml", "--set", f"streams.rates={UNEVEN}", "--set", "train.steps=100"]
    args += ["--set", "train.max_time_s=default", "--quiet"]
    # Act: the default cap (2), and the paper's uncapped rule
    capped = main(["run", *args, "--out", str(tmp_path / "capped")])
    uncapped = main(["run", *args, "--set", "policy.lr_scale_max=0", "--out", str(tmp_path / "u")])
    # Assert: capped reaches the demo's 85 % target; uncapped collapses and is stopped
    summary = json.loads((tmp_path / "capped" / "summary.json").read_text())
    assert capped == 0 and summary["final_accuracy"] >= 0.85, summary["final_accuracy"]
    assert uncapped == 1
    assert "policy.lr_scale_max lower (uncapped)" in capsys.readouterr().err
