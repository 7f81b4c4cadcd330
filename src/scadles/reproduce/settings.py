"""Which paper model a reproduction row stands for, and which configs a track provides.

Every run uses the track's stand-in data and model (configs/paper: MNIST-1D and a 1-D CNN); a
setting adds the paper model's hyper-parameters [paper 4.3] and, for VGG19, charges
communication at VGG19's size. The ResNet152 setting is what the TOMLs themselves hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scadles.errors import UserError

VGG19_SIZE = "vgg19_bn"  # torchvision's, 1000-way head: 143,678,248 parameters [paper 4.2: 143.7M]


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: sets holds lists
class Setting:
    """A paper model our runs stand in for: its config keys, run folder and row prefix."""

    model: str  # "ResNet152" | "VGG19"
    sets: Mapping[str, Any] = field(default_factory=dict)  # on top of the experiment's TOML
    folder: str = ""  # run folders go under DIR/<experiment>/<folder>
    prefix: str = ""  # rows' quantity prefix (the paper's values use the same, paper.PREFIX)
    comm: str = ""  # where communication is charged, when the setting decides it


RESNET152 = Setting("ResNet152")
VGG19 = Setting(
    "VGG19",
    {  # paper 4.3: LR 0.01, weight decay 5e-4, x0.3 at sample-epochs 75/150/200
        "train.lr": 0.01,
        "train.weight_decay": 5e-4,
        "train.milestones": [75.0, 150.0, 200.0],
        "train.gamma": 0.3,
        "clock.emulate_params": VGG19_SIZE,
    },
    folder="vgg19/",
    prefix="VGG19 ",
    comm="communication at VGG19's 143.7M parameters",
)

# track -> config folder under configs/ (the stand-in data set of every run)
TRACKS = {"mnist1d": "paper", "fmnist": "paper-fmnist"}
DEFAULT_TRACK = "mnist1d"

# track -> the paper models its full grids stand in for. Fashion-MNIST runs the ResNet152
# setting only: at VGG19's LR 0.01 its 100-iteration budget reaches no target (measured: S1
# final top-1 35.85 % ScaDLES, 47.65 % DDL, target 60 %), and a budget that would doubles every
# experiment past 30 minutes here (docs/REPRODUCTION.md).
TRACK_SETTINGS: dict[str, tuple[Setting, ...]] = {
    "mnist1d": (RESNET152, VGG19),
    "fmnist": (RESNET152,),
}

# experiment -> the TOML it reads (None: analytic, needs none)
NEEDS: dict[str, str | None] = {
    "headline": "headline",
    "table2": None,
    "fig1": None,
    "table4": "table4",
    "table6": "table6",
    "fig6": "fig6",
    "fig7": "fig6",
    "table5": "table5",
    "fig8": "fig8",
    "fig9": "fig8",
}


def check_track(track: str) -> str:
    """Return the track's config folder name, or fail naming the known tracks."""
    if track not in TRACKS:
        raise UserError(f"--track: unknown track {track!r}; known: {', '.join(TRACKS)}")
    return TRACKS[track]


def available(config_dir: Path) -> list[str]:
    """Return the experiments whose TOML config_dir holds (analytic ones always)."""
    return [n for n, c in NEEDS.items() if c is None or (config_dir / f"{c}.toml").is_file()]
