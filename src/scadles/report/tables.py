"""Present a comparison of run summaries: a markdown table and a rich table for the terminal.

Every header names its unit; a bracket beside a time to target or a speedup is the range the
evaluation grid leaves open (see `scadles.report.records.crossing`). A key missing from an
older summary is shown as a dash. An undefined speedup says why, in the same words in the table,
the speedup line, comparison.json's speedup_note and the HTML report (`speedup_line`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from scadles.report.records import (
    reached_before_training,
    speedup,
    speedup_note,
    speedup_reason,
)

DASH = "—"
BYTE_UNITS = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1.0))  # decimal, as the summary counts


def pct(x: float | None) -> str:
    """Format a fraction as a percentage with two decimals."""
    return DASH if x is None else f"{100 * x:.2f} %"


def count(x: float | None) -> str:
    """Format a count with thousands separators."""
    return DASH if x is None else f"{round(x):,}"


def secs(x: float | None) -> str:
    """Format seconds with one decimal and thousands separators."""
    return DASH if x is None else f"{x:,.1f}"


def byte_unit(values: Sequence[float | None]) -> tuple[str, float]:
    """Return the one decimal unit that suits the largest of values (GB when all are large)."""
    top = max((abs(v) for v in values if v is not None), default=0.0)
    return next(((u, s) for u, s in BYTE_UNITS if top >= s), BYTE_UNITS[-1])


def nbytes(x: float | None, unit: tuple[str, float] | None = None) -> str:
    """Format a byte count in unit (default: its own), two decimals, thousands separators."""
    if x is None:
        return DASH
    name, size = unit if unit is not None else byte_unit([x])
    return f"{x / size:,.{0 if size == 1.0 else 2}f} {name}"


def bracket(lo: float | None, hi: float | None, f: Any = secs) -> str:
    """Format a [low, high] range; a high of None is unbounded."""
    return f"[{f(lo)}, {'∞' if hi is None else f(hi)}]"


def time_cell(s: dict[str, Any]) -> str:
    """Return a run's time to target with the evaluation bracket, 'never', or the time with
    '(before training)' when the step-0 evaluation already met the target."""
    t = s.get("time_to_target_s")
    if t is None:
        return "never" if "time_to_target_s" in s else DASH
    if reached_before_training(s):
        return f"{secs(t)} (before training)"
    lh = s.get("time_to_target_bounds_s")
    if not (isinstance(lh, list) and len(lh) == 2):
        return secs(t)  # a summary written before the bracket existed
    return f"{secs(t)} {bracket(lh[0], lh[1])}"


def speedup_text(ratio: float | None, bounds: list[float | None] | None) -> str:
    """Return a speedup with its bracket ('2.69x [2.36, 3.14]'), or a dash."""
    if ratio is None:
        return DASH
    text = f"{ratio:.2f}x"
    if bounds is None:
        return text
    return f"{text} {bracket(bounds[0], bounds[1], f=lambda v: f'{v:.2f}')}"


def speedup_cell(base: dict[str, Any], s: dict[str, Any]) -> str:
    """Return run s's speedup against base with its bracket, or 'n/a (why)' when undefined
    (a dash when a summary has no time to target at all)."""
    ratio, bounds = speedup(base, s)
    if ratio is not None:
        return speedup_text(ratio, bounds)
    reason = speedup_reason(base, s)
    return DASH if reason in (None, "no time") else f"n/a ({reason})"


def speedup_line(comp: dict[str, Any]) -> str:
    """Return the candidate's speedup for a headline: '2.69x [2.36, 3.14]', or 'n/a: why' from
    comparison.json's speedup_note (derived from the runs for a file written before it)."""
    sp = comp.get("speedup")
    if sp is not None:
        return speedup_text(sp, comp.get("speedup_bounds"))
    note = comp.get("speedup_note")
    if not isinstance(note, str):
        runs = comp.get("runs", {})
        note = speedup_note(runs, comp.get("baseline", "ddl"), comp.get("candidate", "scadles"))
    return f"n/a: {note or 'undefined'}"


def params(x: Any) -> str:
    """Format the parameter count communication was charged at."""
    return DASH if x is None else f"{int(x):,}"


HEADERS = (
    "policy",
    "time to target (simulated s) [bracket]",
    "speedup [bracket]",
    "steps to target",
    "final top-1",
    "final top-5",
    "best top-1",
    "bytes to target",
    "bytes sent (whole run)",
    "samples dropped",
    "buffer peak (samples)",
    "wait (simulated s)",
    "steps",
    "clock profile",
    "parameters charged",
)


def comparison_rows(comp: dict[str, Any]) -> list[list[str]]:
    """Return one row of formatted cells per run; speedup is against the baseline's time."""
    runs: dict[str, dict[str, Any]] = comp["runs"]
    base = runs.get(comp.get("baseline", "ddl"), {})
    to_target = byte_unit([s.get("bytes_to_target") for s in runs.values()])
    sent = byte_unit([s.get("bytes_sent") for s in runs.values()])
    rows = []
    for name, s in runs.items():
        rows.append(
            [
                name,
                time_cell(s),
                speedup_cell(base, s),
                count(s.get("steps_to_target")),
                pct(s.get("final_accuracy")),
                pct(s.get("final_top5")),
                pct(s.get("best_accuracy")),
                nbytes(s.get("bytes_to_target"), to_target),
                nbytes(s.get("bytes_sent"), sent),
                count(s.get("samples_dropped")),
                count(s.get("buffer_peak_samples")),
                secs(s.get("wait_time_s")),
                count(s.get("steps")),
                str(s.get("clock_profile", DASH)),
                params(s.get("comm_params")),
            ]
        )
    return rows


def verdict(comp: dict[str, Any]) -> str:
    """Return the one-line speedup (with its bracket) and accuracy delta of the candidate."""
    base, cand = comp.get("baseline", "ddl"), comp.get("candidate", "scadles")
    sp, delta = comp.get("speedup"), comp.get("accuracy_delta")
    lh = comp.get("speedup_bounds")
    if sp is None:
        sp_text = speedup_line(comp)
    elif isinstance(lh, list) and len(lh) == 2:
        hi = "unbounded" if lh[1] is None else f"{lh[1]:.2f}x"
        sp_text = f"{sp:.2f}x ({lh[0]:.2f}x to {hi} within the evaluation brackets)"
    else:
        sp_text = f"{sp:.2f}x"
    delta_text = "n/a" if delta is None else f"{100 * delta:+.2f} points"
    return (
        f"{cand} vs {base} at target {pct(comp.get('target_accuracy'))}: "
        f"speedup {sp_text}, final top-1 delta {delta_text}"
    )


NOTE = (
    "Time to target is interpolated linearly between the last evaluation below the target and "
    "the first at or above it; the bracket gives those two evaluations' times. Bytes are those "
    "every device puts on the wire in each step's ring collective, summed over devices; bytes to "
    "target count the steps up to the crossing. A target already met at the step-0 evaluation "
    "(before any step) shows its time as 'before training' and leaves the speedup undefined "
    "(n/a). Keys and units: docs/OUTPUTS.md in scadles."
)


def comparison_markdown(comp: dict[str, Any]) -> str:
    """Return the comparison as a markdown table followed by the speedup line and a note."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in comparison_rows(comp)]
    return "\n".join([*lines, "", f"**{verdict(comp)}**", "", NOTE, ""])


def comparison_table_rich(comp: dict[str, Any]) -> Table:
    """Return the comparison for the terminal: one row per quantity, one column per run (it
    fits a narrow terminal), the speedup line as its caption."""
    rows = comparison_rows(comp)
    table = Table(title="scadles comparison", caption=Text(verdict(comp)), caption_justify="left")
    table.add_column("quantity", justify="left", no_wrap=True)
    for row in rows:
        table.add_column(Text(row[0]), justify="right", no_wrap=True)
    for i, header in enumerate(HEADERS[1:], start=1):
        table.add_row(*(Text(cell) for cell in (header, *(row[i] for row in rows))))
    return table
