"""Small HTML building blocks for the static report: escaped text, tables, figures, the page."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f6f6; padding: .8em; overflow: auto; max-height: 40em; }
figure { display: inline-block; margin: .5em; } img { max-width: 520px; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; }
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
    """Format a byte count with a decimal unit, null as a dash."""
    if value is None:
        return "—"
    x = float(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.2f} {unit}"
    return f"{x:.0f} B"


def link(href: str, text: str) -> Raw:
    """Return an anchor to a relative href."""
    return Raw(f'<a href="{html.escape(href, quote=True)}">{html.escape(text, quote=False)}</a>')


def _numeric(cell: Cell) -> bool:
    """Say whether a text cell reads as a number (right-aligned)."""
    if isinstance(cell, Raw):
        return False
    try:
        float(cell.replace(",", "").replace("%", "").split(" ")[0])
    except ValueError:
        return False
    return True


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """Return an HTML table with a header row and one <tr> per row."""
    head = "".join(f"<th>{html.escape(h, quote=False)}</th>" for h in headers)
    body = []
    for row in rows:
        tds = (f"<td{' class=num' if _numeric(c) else ''}>{esc(c)}</td>" for c in row)
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table>"
    )


def figures(folder: Path) -> str:
    """Return one <figure> per PNG in folder (sorted), referenced by relative name."""
    out = []
    for png in sorted(folder.glob("*.png")):
        name = html.escape(png.name, quote=True)
        out.append(
            f'<figure><img src="{name}" alt="{name}"><figcaption>{name}</figcaption></figure>'
        )
    return "\n".join(out) if out else "<p>No plots.</p>"


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
