"""Time to target is interpolated between evaluations and bracketed by them; bytes to target and
speedup follow it; the bracket narrows when a run evaluates more often."""

from __future__ import annotations

from typing import Any

import pytest

import scadles
from scadles.report.records import (
    Crossing,
    EvalReport,
    StepReport,
    SummaryAccumulator,
    comparison,
    time_to_target,
)
from scadles.report.tables import comparison_markdown


def ev(step: int, t: float, top1: float, top5: float | None = None) -> dict[str, Any]:
    """Return one evals.jsonl row."""
    return {"step": step, "sim_time_s": t, "top1": top1, "top5": top1 if top5 is None else top5}


@pytest.mark.parametrize(
    ("rows", "target", "want"),
    [
        # between two evaluations: 36 + (0.85 - 0.5) / (0.9 - 0.5) * 36 = 67.5
        ([ev(0, 0.0, 0.1), ev(25, 36.0, 0.5), ev(50, 72.0, 0.9)], 0.85, Crossing(67.5, 36, 72, 50)),
        # held at the very first evaluation, before any step
        ([ev(0, 0.0, 0.9), ev(25, 36.0, 0.95)], 0.85, Crossing(0.0, 0.0, 0.0, 0)),
        # the same on a clock that starts later (a resumed live run's): no time before it counts
        ([ev(0, 2.0, 0.9)], 0.85, Crossing(2.0, 2.0, 2.0, 0)),
        # right after the start: interpolated from the step-0 evaluation
        ([ev(0, 0.0, 0.25), ev(25, 36.0, 0.75)], 0.5, Crossing(18.0, 0.0, 36.0, 25)),
        # exactly at an evaluation
        ([ev(0, 0.0, 0.25), ev(10, 8.0, 0.5)], 0.5, Crossing(8.0, 0.0, 8.0, 10)),
        # the first crossing counts, not a later one after a dip
        (
            [ev(0, 0.0, 0.25), ev(5, 4.0, 0.75), ev(10, 8.0, 0.25), ev(15, 12.0, 0.75)],
            0.5,
            Crossing(2.0, 0.0, 4.0, 5),
        ),
        # no evaluation before it: the run started unseen, bracket [0, t]
        ([ev(10, 15.0, 0.9)], 0.85, Crossing(15.0, 0.0, 15.0, 10)),
        # nothing to interpolate from a diverged (NaN) evaluation: the upper end
        ([ev(0, 0.0, float("nan")), ev(10, 15.0, 0.9)], 0.85, Crossing(15.0, 0.0, 15.0, 10)),
    ],
)
def test_crossing_on_hand_made_evaluations(
    rows: list[dict[str, Any]], target: float, want: Crossing
) -> None:
    got = time_to_target(rows, target)
    assert got is not None
    assert got.step == want.step
    assert (got.time_s, got.lower_s, got.upper_s) == pytest.approx(
        (want.time_s, want.lower_s, want.upper_s), rel=1e-12, abs=1e-12
    )
    assert got.lower_s <= got.time_s <= got.upper_s


def test_never_reached_and_top5() -> None:
    rows = [ev(0, 0.0, 0.25, 0.5), ev(10, 8.0, 0.5, 0.75)]
    assert time_to_target(rows, 0.9) is None
    got = time_to_target(rows, 0.625, metric="top5")
    assert got is not None and got.time_s == pytest.approx(4.0) and got.step == 10


def step(i: int, end: float, duration: float, nbytes: float) -> StepReport:
    """Return a step that ends at `end`, lasted `duration` and sent nbytes (floats = bytes / 4)."""
    return StepReport(
        step=i, sim_time_s=end, step_time_s=duration, wait_s=0.0, compute_s=duration, comm_s=0.0,
        lr=0.1, loss=1.0, prequential_acc=0.5, batch_total=8, batch_sizes=[8], buffer_total=0,
        buffer_sizes=[0], arrived=8, dropped=0, bytes_sent=nbytes, floats_sent=nbytes / 4,
        compressed=False, epoch=0.0, injected=0, injection_bytes=0.0, host_s=0.0,
    )  # fmt: skip


def evaluation(i: int, t: float, top1: float) -> EvalReport:
    return EvalReport(
        step=i, sim_time_s=t, epoch=0.0, top1=top1, top5=top1, loss=1.0, samples_trained=0
    )


def fold(steps: list[StepReport], evals: dict[int, EvalReport], target: float) -> dict[str, Any]:
    """Fold steps with an evaluation after the steps named in evals (0: before any step)."""
    acc = SummaryAccumulator(target_accuracy=target)
    if 0 in evals:
        acc.update_eval(evals[0])
    for s in steps:
        acc.update(s)
        if s.step in evals:
            acc.update_eval(evals[s.step])
    return acc.finish(policy="scadles", mode="sim")


# steps ending at 10, 40 (30 s long), 50, 60 s sending 100, 300, 100, 100 bytes
STEPS = [step(1, 10.0, 10.0, 100.0), step(2, 40.0, 30.0, 300.0)]
STEPS += [step(3, 50.0, 10.0, 100.0), step(4, 60.0, 10.0, 100.0)]


@pytest.mark.parametrize(
    ("target", "ttt", "nbytes"),
    [
        (0.3125, 10.0, 100.0),  # crosses at the end of step 1: step 1 whole
        (0.375, 20.0, 200.0),  # a third into step 2: 100 + 300 / 3
        (0.4375, 30.0, 300.0),  # two thirds into step 2
        (0.5, 40.0, 400.0),  # at the end of step 2, where the evaluation was
    ],
)
def test_bytes_to_target_counts_steps_up_to_the_crossing(
    target: float, ttt: float, nbytes: float
) -> None:
    # top-1 0.25 at t=0 (step 0), 0.5 at t=40 (after step 2): crossing = 40 (target - .25) / .25
    out = fold(STEPS, {0: evaluation(0, 0.0, 0.25), 2: evaluation(2, 40.0, 0.5)}, target)
    assert out["time_to_target_s"] == pytest.approx(ttt, rel=1e-12)
    assert out["time_to_target_bounds_s"] == [0.0, 40.0]
    assert out["steps_to_target"] == 2
    assert out["bytes_to_target"] == pytest.approx(nbytes, rel=1e-12)
    assert out["floats_to_target"] == pytest.approx(nbytes / 4, rel=1e-12)


def test_bytes_to_target_starts_at_the_last_evaluation_below() -> None:
    # evaluations after steps 1 (below) and 3 (above): crossing at 25 s, 15 s into step 2
    evals = {1: evaluation(1, 10.0, 0.25), 3: evaluation(3, 50.0, 0.75)}
    out = fold(STEPS, evals, 0.3125)
    assert out["time_to_target_s"] == pytest.approx(15.0)
    assert out["time_to_target_bounds_s"] == [10.0, 50.0]
    assert out["bytes_to_target"] == pytest.approx(100.0 + 300.0 * 5 / 30)
    assert out["bytes_sent"] == 600.0  # the whole run, for contrast


def test_target_held_before_any_step() -> None:
    out = fold(STEPS, {0: evaluation(0, 0.0, 0.9), 4: evaluation(4, 60.0, 0.95)}, 0.85)
    assert out["time_to_target_s"] == 0.0 and out["time_to_target_bounds_s"] == [0.0, 0.0]
    assert out["steps_to_target"] == 0 and out["bytes_to_target"] == 0.0


def test_comparison_speedup_and_its_bracket() -> None:
    base = {
        "time_to_target_s": 67.5,
        "time_to_target_bounds_s": [36.0, 72.0],
        "final_accuracy": 0.9,
    }
    cand = {
        "time_to_target_s": 18.0,
        "time_to_target_bounds_s": [12.0, 24.0],
        "final_accuracy": 0.9,
    }
    comp = comparison({"scadles": cand, "ddl": base})
    assert comp["speedup"] == pytest.approx(3.75)
    assert comp["speedup_bounds"] == pytest.approx([36.0 / 24.0, 72.0 / 12.0])
    md = comparison_markdown(comp)
    assert "| scadles | 18.0 [12.0, 24.0] | 3.75x [1.50, 6.00] |" in md
    assert "| ddl | 67.5 [36.0, 72.0] | 1.00x [0.50, 2.00] |" in md
    assert "speedup 3.75x (1.50x to 6.00x within the evaluation brackets)" in md
    # a candidate that may have crossed at time 0 bounds the speedup from below only
    cand0 = {**cand, "time_to_target_bounds_s": [0.0, 24.0]}
    assert comparison({"scadles": cand0, "ddl": base})["speedup_bounds"] == [1.5, None]
    # summaries written before the bracket existed: the point value, no bracket
    old = {"time_to_target_s": 18.0}
    assert comparison({"scadles": old, "ddl": base})["speedup_bounds"] is None


SETS = [
    "data.name=synthetic",
    "data.n_train=600",
    "data.n_test=200",
    "model.name=mlp",
    "devices.count=3",
    "train.steps=10",
    "eval.target_accuracy=0.5",
]


def test_bracket_holds_the_point_and_narrows_with_more_evaluations() -> None:
    comps = {
        every: scadles.compare(scadles.load_config(None, [*SETS, f"eval.every={every}"]))
        for every in (4, 2)
    }
    for policy in ("scadles", "ddl"):
        (lo4, hi4), (lo2, hi2) = (
            comps[e]["runs"][policy]["time_to_target_bounds_s"] for e in (4, 2)
        )
        for comp in comps.values():
            s = comp["runs"][policy]
            lo, hi = s["time_to_target_bounds_s"]
            assert lo <= s["time_to_target_s"] <= hi, policy
        assert lo4 <= lo2 and hi2 <= hi4, policy  # the finer grid's bracket lies inside
        assert hi2 - lo2 < hi4 - lo4, policy
    for comp in comps.values():
        lo, hi = comp["speedup_bounds"]
        assert lo <= comp["speedup"] and (hi is None or comp["speedup"] <= hi)
