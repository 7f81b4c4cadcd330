"""A PNG of how labels are spread over devices: one stacked bar per device, one colour per class.

Uses matplotlib's object API (``Figure`` rendered by Agg), so no pyplot state or GUI backend is
touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from scadles.errors import UserError

MAX_LEGEND = 20  # classes named in the legend; the rest are summarised in one line
MAX_BARS = 64  # more devices than this are drawn as a heatmap (one bar each would take seconds)


def plot_label_distribution(counts: torch.Tensor, path: Path) -> Path:
    """Draw counts (K, C) as stacked per-device bars into the PNG at `path`; return the path."""
    if counts.dim() != 2:
        raise UserError(f"label counts must be (K, C), got shape {list(counts.shape)}")
    data = counts.detach().cpu().to(torch.float64).numpy()  # (K, C)
    k, c = data.shape
    if k > MAX_BARS:
        return _heatmap(data, Path(path))
    colours = colormaps["tab20" if c <= 20 else "turbo"](np.linspace(0.0, 1.0, max(c, 1)))
    fig = Figure(figsize=(min(4.0 + 0.25 * k, 16.0), 4.5))
    ax = fig.add_subplot()
    devices = np.arange(k)
    bottom = np.zeros(k)
    for cls in range(c):
        label = f"class {cls}" if cls < MAX_LEGEND else None
        ax.bar(devices, data[:, cls], bottom=bottom, color=colours[cls], label=label, width=0.8)
        bottom += data[:, cls]
    ax.set_xlabel("device")
    ax.set_ylabel("training samples")
    if k <= 20:  # every device labelled; beyond, integer ticks matplotlib spaces out
        ax.set_xticks(devices)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.6, k - 0.4)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_title(f"Label distribution over {k} devices ({c} classes)")
    if c:
        title = f"first {MAX_LEGEND} of {c} classes" if c > MAX_LEGEND else None
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path


def _heatmap(data: np.ndarray, path: Path) -> Path:
    """Draw counts (K, C) as an image: devices down, classes across, samples as colour."""
    k, c = data.shape
    fig = Figure(figsize=(min(4.0 + 0.3 * c, 16.0), 6.0))
    ax = fig.add_subplot()
    img = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(img, ax=ax, label="samples")
    ax.set_xlabel("class")
    ax.set_ylabel("device")
    ax.set_title(f"Label distribution over {k} devices ({c} classes)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path
