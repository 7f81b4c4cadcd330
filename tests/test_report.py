"""Records round-trip through JSONL; the summary matches a brute-force fold; comparisons; plots."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from scadles.errors import UserError
from scadles.report import plots
from scadles.report.records import (
    EvalReport,
    JsonlWriter,
    StepReport,
    SummaryAccumulator,
    comparison,
    read_jsonl,
    write_json,
)
from scadles.report.tables import (
    HEADERS,
    byte_unit,
    comparison_markdown,
    comparison_table_rich,
    nbytes,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _step(rng: random.Random, i: int, k: int = 3) -> StepReport:
    sizes = [rng.choice([0, 8, 16, 64]) for _ in range(k)]
    buf = [rng.randrange(0, 500) for _ in range(k)]
    return StepReport(
        step=i,
        sim_time_s=1.5 * i,
        step_time_s=1.5,
        wait_s=rng.random(),
        compute_s=rng.random(),
        comm_s=0.25,
        lr=0.1,
        loss=rng.random() * 3,
        prequential_acc=rng.random() if sum(sizes) else math.nan,
        batch_total=sum(sizes),
        batch_sizes=sizes,
        buffer_total=sum(buf),
        buffer_sizes=buf,
        arrived=rng.randrange(0, 300),
        dropped=rng.randrange(0, 10),
        bytes_sent=rng.random() * 1e6,
        floats_sent=rng.random() * 2.5e5,
        compressed=rng.random() < 0.4,
        epoch=i / 10,
        injected=0,
        injection_bytes=0.0,
        host_s=rng.random() * 0.01,
    )


def _eval(rng: random.Random, i: int) -> EvalReport:
    top1 = rng.random()
    return EvalReport(
        step=i,
        sim_time_s=1.5 * i,
        epoch=i / 10,
        top1=top1,
        top5=min(1.0, top1 + 0.2),
        loss=rng.random(),
        samples_trained=100 * i,
    )


def _records(seed: int, n: int = 40) -> tuple[list[StepReport], list[EvalReport], list[int]]:
    rng = random.Random(seed)
    steps = [_step(rng, i) for i in range(1, n + 1)]
    evals = [_eval(rng, i) for i in range(0, n + 1, 5)]
    injected = [rng.randrange(0, 5) for _ in steps]
    return steps, evals, injected


def _crossing_by_hand(
    steps: list[StepReport], evals: list[EvalReport], target: float, key: str
) -> tuple[float, list[float], int, float] | tuple[None, None, None, None]:
    """Return time, bracket, step and bytes to target from whole histories (a loop oracle)."""
    i = next((i for i, e in enumerate(evals) if getattr(e, key) >= target), None)
    if i is None:
        return None, None, None, None
    hit = evals[i]
    if i == 0:
        t, lo = hit.sim_time_s, (hit.sim_time_s if hit.step == 0 else 0.0)
    else:
        prev, a0, a1 = evals[i - 1], getattr(evals[i - 1], key), getattr(hit, key)
        lo = prev.sim_time_s
        t = lo + (target - a0) / (a1 - a0) * (hit.sim_time_s - lo)
    sent, start = 0.0, 0.0
    for s in steps:  # whole steps that ended by t, the crossing step in proportion
        if s.sim_time_s <= t:
            sent += s.bytes_sent
        else:
            sent += s.bytes_sent * (t - start) / (s.sim_time_s - start)
            break
        start = s.sim_time_s
    return t, [lo, hit.sim_time_s], hit.step, sent


def _brute_force(
    steps: list[StepReport], evals: list[EvalReport], injected: list[int], target: float, key: str
) -> dict[str, Any]:
    ttt, bounds, stt, sent = _crossing_by_hand(steps, evals, target, key)
    weighted = [(s.prequential_acc, s.batch_total) for s in steps if s.batch_total > 0]
    return {
        "steps": len(steps),
        "samples_trained": sum(s.batch_total for s in steps),
        "sim_time_s": max(steps[-1].sim_time_s, evals[-1].sim_time_s),
        "host_seconds": sum(s.host_s for s in steps),
        "final_accuracy": evals[-1].top1,
        "final_top5": evals[-1].top5,
        "best_accuracy": max(e.top1 for e in evals),
        "time_to_target_s": ttt,
        "time_to_target_bounds_s": bounds,
        "steps_to_target": stt,
        "bytes_to_target": sent,
        "bytes_sent": sum(s.bytes_sent for s in steps),
        "floats_sent": sum(s.floats_sent for s in steps),
        "compressed_fraction": sum(s.compressed for s in steps) / len(steps),
        "buffer_peak_samples": max(s.buffer_total for s in steps),
        "buffer_final_samples": steps[-1].buffer_total,
        "samples_held": steps[-1].buffer_total,
        "samples_arrived": sum(s.arrived for s in steps),
        "samples_dropped": sum(s.dropped for s in steps),
        "samples_injected": sum(injected),
        "wait_time_s": sum(s.wait_s for s in steps),
        "prequential_accuracy": sum(a * b for a, b in weighted) / sum(b for _, b in weighted),
    }


def _summarise(
    steps: list[StepReport], evals: list[EvalReport], injected: list[int], **kw: Any
) -> dict[str, Any]:
    acc = SummaryAccumulator(**kw)
    ev = iter(evals)
    acc.update_eval(next(ev))
    for s, inj in zip(steps, injected, strict=True):
        acc.update(s, injected=inj)
        if s.step % 5 == 0:
            acc.update_eval(next(ev))
    return acc.finish(policy="scadles", mode="sim")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("metric", "target"), [("top1", 0.8), ("top5", 0.9), ("top1", 2.0)])
def test_summary_matches_brute_force(seed: int, metric: str, target: float) -> None:
    steps, evals, injected = _records(seed)
    got = _summarise(steps, evals, injected, target_accuracy=target, metric=metric)
    want = _brute_force(steps, evals, injected, target, metric)
    assert got["policy"] == "scadles" and got["mode"] == "sim"
    assert got["target_accuracy"] == target
    for key, value in want.items():
        if isinstance(value, float | list):
            assert got[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert got[key] == value, key
    if target > 1:
        assert got["time_to_target_s"] is None and got["steps_to_target"] is None


def test_summary_without_records_or_target() -> None:
    out = SummaryAccumulator().finish(policy="ddl", mode="dist", host_seconds=3.0, extra=1)
    assert out["steps"] == 0 and out["compressed_fraction"] == 0.0
    assert out["final_accuracy"] is None and out["time_to_target_s"] is None
    assert out["prequential_accuracy"] is None
    assert out["host_seconds"] == 3.0 and out["extra"] == 1 and out["mode"] == "dist"
    with pytest.raises(UserError, match=r"eval\.metric"):
        SummaryAccumulator(metric="top3")


def test_summary_keeps_no_history_beyond_one_eval_period() -> None:
    steps, evals, _ = _records(3, n=40)
    acc = SummaryAccumulator(target_accuracy=2.0)  # never reached: the steps since each eval kept
    before = sorted(vars(acc))
    ev = iter(evals)
    acc.update_eval(next(ev))
    longest = 0
    for s in steps:
        acc.update(s)
        longest = max(longest, len(acc.trail))
        if s.step % 5 == 0:
            acc.update_eval(next(ev))
            assert acc.trail == []
    assert longest == 5  # one eval period, never the run
    assert sorted(vars(acc)) == before
    lone = SummaryAccumulator(target_accuracy=0.5)  # a rank that never evaluates keeps nothing
    for s in steps:
        lone.update(s)
    assert lone.trail == []


def test_step_and_eval_reports_round_trip_through_jsonl(tmp_path: Path) -> None:
    steps, evals, _ = _records(4, n=5)
    steps = [s for s in steps if math.isfinite(s.prequential_acc)]
    with JsonlWriter(tmp_path / "steps.jsonl") as w:
        for s in steps:
            w.write(s)
        assert len(read_jsonl(tmp_path / "steps.jsonl")) == len(steps)  # flushed per line
    with JsonlWriter(tmp_path / "evals.jsonl") as w:
        for e in evals:
            w.write(e)
    assert [StepReport(**d) for d in read_jsonl(tmp_path / "steps.jsonl")] == steps
    assert [EvalReport(**d) for d in read_jsonl(tmp_path / "evals.jsonl")] == evals
    with pytest.raises(ValueError, match="closed"):
        w.write(evals[0])


def test_jsonl_writes_strict_json_and_can_append(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    with JsonlWriter(path) as w:
        w.write({"loss": math.nan, "v": [1.0, math.inf]})
    with JsonlWriter(path, append=True) as w:
        w.write({"loss": 1.0})
    lines = path.read_text().splitlines()
    assert lines[0] == '{"loss": null, "v": [1.0, null]}'
    assert read_jsonl(path) == [{"loss": None, "v": [1.0, None]}, {"loss": 1.0}]


def test_read_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl line 3"):
        read_jsonl(path)
    with pytest.raises(UserError, match="file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_write_json_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "summary.json"
    write_json(path, {"a": 1, "b": math.nan})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def _summary(ttt: float | None, final: float | None, **kw: Any) -> dict[str, Any]:
    base = {
        "target_accuracy": 0.8,
        "time_to_target_s": ttt,
        "final_accuracy": final,
        "final_top5": 0.99,
        "best_accuracy": final,
        "buffer_peak_samples": 1234,
        "bytes_sent": 2.5e9,
        "wait_time_s": 12.0,
        "steps": 100,
    }
    return {**base, **kw}


def test_comparison_speedup_and_delta() -> None:
    runs = {"scadles": _summary(20.0, 0.81), "ddl": _summary(70.0, 0.85)}
    comp = comparison(runs)
    assert comp["speedup"] == pytest.approx(3.5)
    assert comp["accuracy_delta"] == pytest.approx(-0.04)
    assert comp["target_accuracy"] == 0.8 and comp["runs"] is runs


@pytest.mark.parametrize(
    "runs",
    [
        {"scadles": _summary(None, 0.7), "ddl": _summary(70.0, 0.85)},
        {"scadles": _summary(20.0, 0.81), "ddl": _summary(None, 0.6)},
        {"scadles": _summary(20.0, 0.81)},
    ],
)
def test_comparison_speedup_is_none_when_a_target_was_missed(runs: dict[str, Any]) -> None:
    comp = comparison(runs)
    assert comp["speedup"] is None
    assert (comp["accuracy_delta"] is None) == ("ddl" not in runs)
    assert "n/a" in comparison_markdown(comp)


def test_comparison_markdown_and_rich_table() -> None:
    new: dict[str, Any] = {"bytes_to_target": 1.25e12, "samples_dropped": 25753}
    new |= {"steps_to_target": 40, "clock_profile": "paper", "comm_params": 60_200_000}
    comp = comparison({"ddl": _summary(70.0, 0.85), "scadles": _summary(20.0, 0.81, **new)})
    md = comparison_markdown(comp)
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(rows) == 3  # header + 2 policies
    assert rows[0].startswith("| policy | time to target (simulated s) [bracket] | speedup")
    cells = "20.0 | 3.50x | 40 | 81.00 % | 99.00 % | 81.00 % | 1,250.00 GB | 2.50 GB | 25,753"
    assert f"| scadles | {cells} | 1,234 | 12.0 | 100 | paper | 60,200,000 |" in md
    # keys an older summary lacks are dashes; bytes share one unit per column
    assert "| ddl | 70.0 | 1.00x | — | 85.00 % | 99.00 % | 85.00 % | — | 2.50 GB | — |" in md
    assert md.count("| 1,234 | 12.0 | 100 | — | — |") == 1  # ddl: no clock profile, no size
    assert "speedup 3.50x" in md and "-4.00 points" in md
    table = comparison_table_rich(comp)  # transposed: a row per quantity, a column per run
    assert table.row_count == len(HEADERS) - 1 and len(table.columns) == 3
    console = Console(width=80, record=True)
    console.print(table)
    text = console.export_text()
    assert (
        "3.50x" in text
        and "1,250.00 GB" in text
        and "time to target (simulated s) [bracket]" in text
    )
    assert "…" not in text  # nothing cut off in an 80-column terminal


def test_bytes_cells_share_the_largest_unit() -> None:
    assert nbytes(1234.5e9) == "1,234.50 GB" and nbytes(999.0) == "999 B"
    assert byte_unit([2.5e6, None, 3e9]) == ("GB", 1e9) and byte_unit([None]) == ("B", 1.0)
    assert nbytes(2.5e6, byte_unit([2.5e6, 3e9])) == "0.00 GB"


def _fake_run(root: Path, name: str, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    d = root / name
    with JsonlWriter(d / "steps.jsonl") as w:
        for i in range(1, n + 1):
            w.write(_step(rng, i, k=4))
    with JsonlWriter(d / "evals.jsonl") as w:
        for i in range(0, n + 1, 5):
            w.write(_eval(rng, i))
    write_json(d / "summary.json", {"target_accuracy": 0.6})
    return d


def test_plot_comparison_writes_png_files(tmp_path: Path) -> None:
    runs = {p: _fake_run(tmp_path, p, 30, s) for s, p in enumerate(["scadles", "ddl"])}
    out = plots.plot_comparison(tmp_path / "cmp", runs)
    names = {"accuracy_vs_time.png", "buffer.png", "bytes_sent.png", "batch_sizes.png"}
    assert {p.name for p in out} == names
    for p in out:
        assert p.parent == tmp_path / "cmp" and p.read_bytes()[:8] == PNG_MAGIC
        assert p.stat().st_size > 1000


def test_plot_comparison_draws_the_exchange_choices_of_compressing_runs(tmp_path: Path) -> None:
    # Arrange: a run whose steps logged the time-aware switch's choices, and a dense one
    runs = {p: _fake_run(tmp_path, p, 30, s) for s, p in enumerate(["time-aware", "ddl"])}
    steps = runs["time-aware"] / "steps.jsonl"
    rows = read_jsonl(steps)
    with JsonlWriter(steps) as w:
        for i, r in enumerate(rows):
            w.write(r | {"choice": "none" if i < 10 else "powersgd:4"})
    # Act
    out = plots.plot_comparison(tmp_path / "cmp", runs)
    loaded = plots._load(runs["time-aware"]).steps.choice
    # Assert
    assert (tmp_path / "cmp" / "exchange_choices.png") in out
    assert loaded[:10] == ["none"] * 10 and set(loaded[10:]) == {"powersgd:4"}
    assert not any(plots._load(runs["ddl"]).steps.choice)


def test_plot_run_writes_png_files(tmp_path: Path) -> None:
    d = _fake_run(tmp_path, "one", 12, 7)
    out = plots.plot_run(d)
    assert {p.name for p in out} == {"accuracy_vs_time.png", "buffer.png", "batch_sizes.png"}
    assert all(p.parent == d and p.read_bytes()[:8] == PNG_MAGIC for p in out)


def test_plot_loader_thins_evenly_and_keeps_cumulative_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "MAX_POINTS", 10)
    d = _fake_run(tmp_path, "long", 100, 9)
    rows = read_jsonl(d / "steps.jsonl")
    run = plots._load(d)
    s = run.steps
    assert len(s.step) <= 10 and s.step[0] == 1
    stride = s.step[1] - s.step[0]
    assert stride == s.stride and all(b - a == stride for a, b in itertools.pairwise(s.step))
    cum = [sum(r["bytes_sent"] for r in rows[:i]) for i in s.step]
    assert s.bytes_cum == pytest.approx(cum, rel=1e-12)
    b = run.batches  # per-device statistics over every step, not only the kept ones
    by_device = list(zip(*(r["batch_sizes"] for r in rows), strict=True))
    assert b.mean.tolist() == pytest.approx([sum(d) / len(d) for d in by_device], rel=1e-12)
    assert b.low.tolist() == [min(d) for d in by_device]
    assert b.high.tolist() == [max(d) for d in by_device]
    assert run.target == 0.6 and len(run.eval_top1) == 21


def test_batch_plot_many_devices_and_an_empty_run(tmp_path: Path) -> None:
    wide = _fake_run(tmp_path, "wide", 6, 3)
    rng = random.Random(5)
    with JsonlWriter(wide / "steps.jsonl") as w:  # 40 devices: one box plot per run
        for i in range(1, 7):
            w.write(_step(rng, i, k=40))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "steps.jsonl").write_text("")
    out = plots.plot_comparison(tmp_path / "cmp", {"wide": wide, "empty": empty})
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in out)
    assert plots._load(wide).batches.total.shape == (40,)
