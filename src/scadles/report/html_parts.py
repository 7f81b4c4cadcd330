"""Small HTML building blocks for the static report: escaped text, tables, figures, the page."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scadles.report import tables

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222;
  padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.wide { overflow-x: auto; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f6f6; padding: .8em; overflow: auto; max-height: 40em; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr));
  gap: 1em; align-items: start; }
figure { margin: 0; } img { width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; margin-top: .3em; }
figcaption code { color: #222; }
p.note { font-size: .9em; color: #444; max-width: 60em; }
"""

# Marks each image data-loaded="1" once it decoded (or "0"), so a headless browser can check it.
SCRIPT = """
window.addEventListener("load", () => {
  for (const img of document.images)
    img.dataset.loaded = img.complete && img.naturalWidth > 0 ? "1" : "0";
  document.body.dataset.ready = "1";
});
"""


@dataclass(frozen=True, slots=True)
class Raw:
    """Markup that is already HTML and must not be escaped again."""

    html: str


Cell = str | Raw


def esc(cell: Cell) -> str:
    """Return a cell as HTML: Raw as is, text escaped."""
    return cell.html if isinstance(cell, Raw) else html.escape(cell, quote=False)


def fmt(value: Any) -> str:
    """Format a JSON value for a table cell: null as a dash, floats to 4 significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return json.dumps(value)


def pct(value: Any) -> str:
    """Format a fraction as a percentage, null as a dash."""
    return "—" if value is None else f"{100 * float(value):.2f} %"


def nbytes(value: Any) -> str:
    """Format a byte count with a decimal unit and thousands separators, null as a dash."""
    return tables.nbytes(None if value is None else float(value))


def seconds(value: Any) -> str:
    """Format simulated seconds, null as a dash."""
    return "—" if value is None else f"{float(value):,.1f} s"


FRACTIONS = {  # summary keys holding a fraction in [0, 1], shown as percentages
    "final_accuracy",
    "final_top5",
    "best_accuracy",
    "target_accuracy",
    "prequential_accuracy",
    "compressed_fraction",
    "exposure",
}


def summary_cell(key: str, value: Any) -> str:
    """Format one summary.json value by what its key holds: %, bytes, seconds, or as is."""
    if value is None:
        return "—"
    if key in FRACTIONS and isinstance(value, int | float):
        return pct(value)
    if "bytes" in key and isinstance(value, int | float):
        return nbytes(value)
    if key == "time_to_target_bounds_s" and isinstance(value, list) and len(value) == 2:
        return f"[{seconds(value[0])}, {seconds(value[1])}] (simulated)"
    if key == "host_seconds" and isinstance(value, int | float):
        return f"{float(value):,.1f} s (wall clock)"
    if key.endswith("_s") and isinstance(value, int | float):
        return f"{seconds(value)} (simulated)"
    if key == "comm_params" and isinstance(value, int | float):
        return f"{round(value):,} parameters"
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return fmt(value)


def link(href: str, text: str) -> Raw:
    """Return an anchor to a relative href."""
    return Raw(f'<a href="{html.escape(href, quote=True)}">{html.escape(text, quote=False)}</a>')


def _numeric(cell: Cell) -> bool:
    """Say whether a text cell reads as a number (right-aligned)."""
    if isinstance(cell, Raw):
        return False
    first = cell.replace(",", "").split(" ")[0].removesuffix("x")  # "2.47x [2.36, 3.14]"
    try:
        float(first)
    except ValueError:
        return cell == "never"
    return True


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """Return an HTML table with a header row and one <tr> per row."""
    head = "".join(f"<th>{html.escape(h, quote=False)}</th>" for h in headers)
    body = []
    for row in rows:
        tds = (f"<td{' class=num' if _numeric(c) else ''}>{esc(c)}</td>" for c in row)
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<div class="wide"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table></div>"
    )


CAPTIONS = {  # what each plot shows, by file name
    "accuracy_vs_time.png": "Top-1 accuracy on the held-out set against simulated time. The "
    "dashed line is the target; a cross marks each run's interpolated time to target, its bar "
    "the two evaluations around it.",
    "buffer.png": "Samples held in all devices' buffers after each step (log scale) against "
    "simulated time.",
    "bytes_sent.png": "Cumulative bytes on the wire (every device's ring-collective bytes, summed "
    "over devices) against simulated time.",
    "batch_sizes.png": "Batch size of each device over all steps: mean (bar) and smallest to "
    "largest (whisker); above 32 devices, a box plot per run of the devices' means.",
    "label_distribution.png": "Training samples of each class held by each device.",
    "exchange_choices.png": "The exchange each compressing run used at every step against "
    "simulated time: the time-aware switch's candidate, or a fixed compressor and its dense steps.",
}


def _rank(order: list[str], name: str) -> int:
    """Return name's place in order, or after all of them."""
    return order.index(name) if name in order else len(order)


def figures(folder: Path) -> str:
    """Return a grid of one captioned <figure> per PNG in folder (the known plots first, in
    CAPTIONS' order, then the rest by name), by relative name."""
    order = list(CAPTIONS)
    out = []
    for png in sorted(folder.glob("*.png"), key=lambda p: (_rank(order, p.name), p.name)):
        name = html.escape(png.name, quote=True)
        what = html.escape(CAPTIONS.get(png.name, ""), quote=False)
        cap = f"<code>{name}</code>" + (f": {what}" if what else "")
        img = f'<img src="{name}" alt="{name}">'
        out.append(f"<figure>{img}<figcaption>{cap}</figcaption></figure>")
    if not out:
        return "<p>No plots.</p>"
    return '<div class="figures">\n' + "\n".join(out) + "\n</div>"


def pre_json(obj: Any) -> str:
    """Return obj as indented JSON inside <pre>."""
    return f"<pre>{html.escape(json.dumps(obj, indent=2), quote=False)}</pre>"


def page(title: str, body: Sequence[str], up: str | None = None) -> str:
    """Return a whole HTML document with the inline style, the image check and a link up."""
    nav = f"<p>{link(up, '↑ up').html}</p>\n" if up else ""
    heading = html.escape(title, quote=False)
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f"<title>{heading}</title>\n<style>{CSS}</style>\n<script>{SCRIPT}</script>\n"
        f"</head>\n<body>\n{nav}<h1>{heading}</h1>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
