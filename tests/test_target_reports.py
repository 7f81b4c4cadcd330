"""A target reached early reads the same in summary.json, comparison.json, comparison.md and the
HTML report: crossed after a step, an interpolated time and a defined speedup; met by the step-0
evaluation (before any step), time 0 'before training' and a speedup that says why it is n/a."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from scadles.cli.main import main
from scadles.report.records import comparison
from scadles.report.tables import comparison_rows, speedup_line, speedup_text
from scadles.training.sweep import sweep_markdown

TINY = [
    "--set", "data.name=synthetic",
    "--set", "data.n_train=600",
    "--set", "data.n_test=200",
    "--set", "model.name=mlp",
    "--set", "devices.count=2",
    "--set", "train.steps=3",
    "--set", "eval.every=1",
]  # fmt: skip
POLICIES = ("scadles", "ddl")


class Tables(HTMLParser):
    """Collect the text of every table cell, row by row, table by table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def compare_and_report(out: Path, target: float) -> dict[str, Any]:
    """Run the comparison and the report through the CLI; return every file's view."""
    args = ["compare", *TINY, "--set", f"eval.target_accuracy={target}", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    assert main(["report", str(out)]) == 0
    md = (out / "comparison.md").read_text()
    md_rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in POLICIES:
            md_rows[cells[0]] = cells
    page = Tables()
    page.feed((out / "index.html").read_text())
    head = dict(r for r in page.tables[0][1:] if len(r) == 2)
    html_rows = {r[0]: r for r in page.tables[1][1:]}
    return {
        "summaries": {p: json.loads((out / p / "summary.json").read_text()) for p in POLICIES},
        "evals": {
            p: [json.loads(ln) for ln in (out / p / "evals.jsonl").read_text().splitlines()]
            for p in POLICIES
        },
        "comp": json.loads((out / "comparison.json").read_text()),
        "md": md,
        "md_rows": md_rows,
        "html_head": head,
        "html_rows": html_rows,
    }


def test_target_crossed_at_the_first_evaluation_after_step_one(tmp_path: Path) -> None:
    # Arrange / Act: step 0 scores 11 % top-1 on this data and seed; step 1 about 15 %
    got = compare_and_report(tmp_path / "cmp", target=0.14)
    comp, summaries = got["comp"], got["summaries"]
    # Assert: the time is the interpolated crossing inside (step-0 time, step-1 time]
    for p, s in summaries.items():
        first = next(e for e in got["evals"][p] if e["top1"] >= 0.14)
        assert first["step"] == 1 == s["steps_to_target"], p  # the case this test is about
        lo, hi = s["time_to_target_bounds_s"]
        assert lo == 0.0 and hi == first["sim_time_s"] > 0.0
        assert 0.0 < s["time_to_target_s"] <= hi
        assert s["target_reached_before_training"] is False
    # the same speedup in comparison.json, comparison.md and the HTML report
    want = summaries["ddl"]["time_to_target_s"] / summaries["scadles"]["time_to_target_s"]
    assert comp["speedup"] == pytest.approx(want, rel=1e-12)
    assert comp["speedup_note"] is None
    cell = speedup_text(comp["speedup"], comp["speedup_bounds"])
    assert cell.startswith(f"{want:.2f}x [")
    assert got["md_rows"]["scadles"][2] == cell == got["html_rows"]["scadles"][2]
    assert got["html_head"]["speedup [bracket]"] == cell
    assert f"speedup {want:.2f}x (" in got["md"]
    assert not any("n/a" in c for r in got["md_rows"].values() for c in r)


def test_target_met_by_the_step_zero_evaluation(tmp_path: Path) -> None:
    # Arrange / Act: 1 % top-1 is met before any step
    got = compare_and_report(tmp_path / "cmp", target=0.01)
    comp = got["comp"]
    # Assert: time 0 at step 0, flagged as before training, in every summary
    for p, s in got["summaries"].items():
        assert got["evals"][p][0]["step"] == 0
        assert s["time_to_target_s"] == 0.0 and s["time_to_target_bounds_s"] == [0.0, 0.0]
        assert s["steps_to_target"] == 0 and s["target_reached_before_training"] is True
    # comparison.json: no speedup, and the one reason given everywhere
    note = "ddl and scadles both reached the target before training (the step-0 evaluation)"
    assert comp["speedup"] is None and comp["speedup_bounds"] is None
    assert comp["speedup_note"] == note
    assert f"speedup n/a: {note}," in got["md"]
    assert got["html_head"]["speedup [bracket]"] == f"n/a: {note}"
    assert "did not reach" not in got["md"]  # the old, wrong explanation
    for p in POLICIES:
        for rows in (got["md_rows"], got["html_rows"]):
            assert rows[p][1] == "0.0 (before training)", p
            assert rows[p][2] == "n/a (before training)", p


def summary(t: float | None, step: int | None, bounds: list[float] | None) -> dict[str, Any]:
    """Return the time-to-target keys of a summary (an older one: no before-training flag)."""
    return {"time_to_target_s": t, "steps_to_target": step, "time_to_target_bounds_s": bounds}


LATE = summary(30.0, 20, [20.0, 40.0])
AT_ZERO = summary(0.0, 0, [0.0, 0.0])
NEVER = summary(None, None, None)


@pytest.mark.parametrize(
    ("ddl", "scadles", "note", "cells"),
    [
        (LATE, summary(10.0, 5, [5.0, 20.0]), None, ("1.00x [0.50, 2.00]", "3.00x [1.00, 8.00]")),
        (
            AT_ZERO,
            LATE,
            "ddl reached the target before training (the step-0 evaluation)",
            ("n/a (before training)", "n/a (before training)"),
        ),
        (
            LATE,
            AT_ZERO,
            "scadles reached the target before training (the step-0 evaluation)",
            ("1.00x [0.50, 2.00]", "n/a (before training)"),
        ),
        (
            LATE,
            NEVER,
            "scadles did not reach the target",
            ("1.00x [0.50, 2.00]", "n/a (not reached)"),
        ),
        (
            AT_ZERO,
            NEVER,
            "scadles did not reach the target",
            ("n/a (before training)", "n/a (not reached)"),
        ),
        (LATE, {}, "scadles: no time to target in the summary", ("1.00x [0.50, 2.00]", "—")),
    ],
)
def test_speedup_note_and_cells_on_hand_made_summaries(
    ddl: dict[str, Any], scadles: dict[str, Any], note: str | None, cells: tuple[str, str]
) -> None:
    # Act
    comp = comparison({"ddl": ddl, "scadles": scadles})
    rows = {r[0]: r for r in comparison_rows(comp)}
    # Assert
    assert comp["speedup_note"] == note
    assert (comp["speedup"] is None) == (note is not None)
    assert (rows["ddl"][2], rows["scadles"][2]) == cells
    if note is not None:
        assert speedup_line(comp) == f"n/a: {note}"
        # a comparison.json written before speedup_note existed gives the same line
        assert speedup_line({k: v for k, v in comp.items() if k != "speedup_note"}) == speedup_line(
            comp
        )


def test_sweep_table_says_never_and_before_training_like_the_comparison() -> None:
    # Arrange: three grid points: crossed after steps, met at step 0, never met
    crossed = {**summary(12.5, 3, [10.0, 15.0]), "target_reached_before_training": False}
    at_once = {**summary(0.0, 0, [0.0, 0.0]), "target_reached_before_training": True}
    never = summary(None, None, None)
    rows = [
        {"params": {"compress.ratio": r}, "summary": s}
        for r, s in ((0.1, crossed), (0.01, at_once), (0.001, never))
    ]
    # Act
    lines = sweep_markdown(["compress.ratio"], rows).splitlines()[2:]
    # Assert: the time column (the 5th cell) reads as the comparison table's time column does
    cells = [line.split(" | ")[4] for line in lines]
    assert cells == ["12.5 [10.0, 15.0]", "0.0 (before training)", "never"]
