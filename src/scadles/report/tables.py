"""Present a comparison of run summaries: a markdown table and a rich table for the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _secs(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f}"


def _bytes(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.2f} {unit}"
    return f"{x:.0f} B"


HEADERS = (
    "policy",
    "time to target (s)",
    "speedup",
    "final top-1",
    "final top-5",
    "best top-1",
    "buffer peak",
    "bytes sent",
    "wait time (s)",
    "steps",
)


def comparison_rows(comp: dict[str, Any]) -> list[list[str]]:
    """Return one row of formatted cells per run; speedup is against the baseline's time."""
    b_ttt = comp["runs"].get(comp.get("baseline", "ddl"), {}).get("time_to_target_s")
    rows = []
    for name, s in comp["runs"].items():
        ttt = s.get("time_to_target_s")
        sp = f"{b_ttt / ttt:.2f}x" if b_ttt is not None and ttt is not None and ttt > 0 else "-"
        rows.append(
            [
                name,
                _secs(ttt),
                sp,
                _pct(s.get("final_accuracy")),
                _pct(s.get("final_top5")),
                _pct(s.get("best_accuracy")),
                f"{s.get('buffer_peak_samples', 0):,}",
                _bytes(s.get("bytes_sent")),
                f"{s.get('wait_time_s', 0.0):.1f}",
                f"{s.get('steps', 0):,}",
            ]
        )
    return rows


def _verdict(comp: dict[str, Any]) -> str:
    """Return the one-line speedup and accuracy delta of the candidate over the baseline."""
    base, cand = comp.get("baseline", "ddl"), comp.get("candidate", "scadles")
    sp, delta = comp.get("speedup"), comp.get("accuracy_delta")
    sp_text = "n/a (a run did not reach the target)" if sp is None else f"{sp:.2f}x"
    delta_text = "n/a" if delta is None else f"{100 * delta:+.2f} points"
    return (
        f"{cand} vs {base} at target {_pct(comp.get('target_accuracy'))}: "
        f"speedup {sp_text}, final top-1 delta {delta_text}"
    )


def comparison_markdown(comp: dict[str, Any]) -> str:
    """Return the comparison as a markdown table followed by the speedup line."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in comparison_rows(comp)]
    return "\n".join([*lines, "", f"**{_verdict(comp)}**", ""])


def comparison_table_rich(comp: dict[str, Any]) -> Table:
    """Return the comparison as a rich table for the terminal, the speedup line as its caption."""
    table = Table(title="scadles comparison", caption=_verdict(comp))
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in comparison_rows(comp):
        table.add_row(*row)
    return table
