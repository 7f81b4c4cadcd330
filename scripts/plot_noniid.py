"""Draw docs/noniid_injection.png from the runs/noniid sweeps (see docs/NONIID.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PAPER_TOP5 = {0.0: 58.0, 0.05: 67.5, 0.1: 74.0, 0.25: 87.0, 0.5: 93.0}  # Fig. 8, ResNet152, by eye


def main(runs: Path, out: Path) -> None:
    inject = json.loads((runs / "inject" / "sweep.json").read_text())["rows"]
    none = json.loads((runs / "none" / "sweep.json").read_text())["rows"]
    iid = json.loads((runs / "iid" / "sweep.json").read_text())["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for norm, colour in (("batch", "C0"), ("group", "C1"), ("none", "C2")):
        pts = [
            (0.0, r["summary"]["final_accuracy"])
            for r in none
            if r["params"]["model.norm"] == norm and r["params"]["policy.name"] == "scadles"
        ]
        pts += [
            (r["params"]["inject.alpha,inject.beta"], r["summary"]["final_accuracy"])
            for r in inject
            if r["params"]["model.norm"] == norm
        ]
        pts.sort()
        ax.plot(
            [str(a) for a, _ in pts],
            [100 * v for _, v in pts],
            "o-",
            color=colour,
            label=f"ours, norm={norm} (top-1)",
        )
        ref = [r["summary"]["final_accuracy"] for r in iid if r["params"]["model.norm"] == norm]
        ax.axhline(100 * ref[0], color=colour, ls=":", lw=1)
    ax.plot(
        [str(a) for a in PAPER_TOP5],
        list(PAPER_TOP5.values()),
        "s--",
        color="gray",
        label="paper Fig. 8, ResNet152 (top-5)",
    )
    ax.set_xlabel("(alpha, beta) of peers injection; 0 = none")
    ax.set_ylabel("final accuracy (%)")
    ax.set_title("10 devices, one label each; dotted: IID reference per norm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(
        Path(sys.argv[1] if len(sys.argv) > 1 else "runs/noniid"), Path("docs/noniid_injection.png")
    )
