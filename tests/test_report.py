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
from scadles.report.tables import comparison_markdown, comparison_table_rich

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


def _brute_force(
    steps: list[StepReport], evals: list[EvalReport], injected: list[int], target: float, key: str
) -> dict[str, Any]:
    hit = [e for e in evals if getattr(e, key) >= target]
    weighted = [(s.prequential_acc, s.batch_total) for s in steps if s.batch_total > 0]
    return {
        "steps": len(steps),
        "samples_trained": sum(s.batch_total for s in steps),
        "sim_time_s": max(steps[-1].sim_time_s, evals[-1].sim_time_s),
        "host_seconds": sum(s.host_s for s in steps),
        "final_accuracy": evals[-1].top1,
        "final_top5": evals[-1].top5,
        "best_accuracy": max(e.top1 for e in evals),
        "time_to_target_s": hit[0].sim_time_s if hit else None,
        "steps_to_target": hit[0].step if hit else None,
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
        if isinstance(value, float):
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


def test_summary_keeps_no_history() -> None:
    steps, _, _ = _records(3, n=20)
    acc = SummaryAccumulator(target_accuracy=0.5)
    before = sorted(vars(acc))
    for s in steps:
        acc.update(s)
    assert sorted(vars(acc)) == before
    assert not any(isinstance(v, list) for v in vars(acc).values())


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
    comp = comparison({"ddl": _summary(70.0, 0.85), "scadles": _summary(20.0, 0.81)})
    md = comparison_markdown(comp)
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(rows) == 3  # header + 2 policies
    assert "| scadles | 20.0 | 3.50x | 81.00 % | 99.00 % | 81.00 % | 1,234 | 2.50 GB" in md
    assert "| ddl | 70.0 | 1.00x |" in md
    assert "speedup 3.50x" in md and "-4.00 points" in md
    table = comparison_table_rich(comp)
    assert table.row_count == 2 and len(table.columns) == 10
    console = Console(width=200, record=True)
    console.print(table)
    assert "3.50x" in console.export_text()


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
    assert s.batches == [rows[i - 1]["batch_sizes"] for i in s.step]
    assert run.target == 0.6 and len(run.eval_top1) == 21
