"""Host time of a step under torch's deterministic algorithms divided by one without them.

`run.deterministic = true` (the default) runs every step under
torch.use_deterministic_algorithms(True, warn_only=True). Three settings: the demo (cnn1d on
MNIST-1D), the non-IID config with BatchNorm and peer injection (the per-device BatchNorm's
index_select path), and the time-aware exchange on the demo. Steps of the two engines of a
setting are interleaved round by round on 2 threads so that machine noise hits both alike.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from scadles.config.load import load_config
from scadles.engine import Engine
from scadles.training import build

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SETTINGS: dict[str, tuple[Path, list[str]]] = {
    "demo": (CONFIGS / "demo.toml", []),
    "noniid + BatchNorm + peers": (
        CONFIGS / "noniid.toml",
        ["model.norm=batch", "inject.name=peers", "inject.alpha=0.3", "inject.beta=0.3"],
    ),
    "demo, time-aware exchange": (CONFIGS / "demo.toml", ["compress.policy=time_aware"]),
}
ROUNDS, STEPS = 8, 5


def _engine(path: Path, sets: list[str], on: bool) -> Engine:
    return build.engine(load_config(path, [*sets, f"run.deterministic={str(on).lower()}"]))


def main() -> None:
    torch.set_num_threads(2)
    ratios = []
    print(f"{'setting':30s} {'ms/step on':>11s} {'ms/step off':>12s} {'on / off':>9s}")
    for name, (path, sets) in SETTINGS.items():
        engines = {on: _engine(path, sets, on) for on in (True, False)}
        spent = dict.fromkeys(engines, 0.0)
        for eng in engines.values():
            eng.step()  # warm-up
        for _ in range(ROUNDS):
            for on, eng in engines.items():
                t0 = time.perf_counter()
                for _ in range(STEPS):
                    eng.step()
                spent[on] += time.perf_counter() - t0
        ms = {on: 1e3 * s / (ROUNDS * STEPS) for on, s in spent.items()}
        ratios.append(spent[True] / spent[False])
        print(f"{name:30s} {ms[True]:11.1f} {ms[False]:12.1f} {ratios[-1]:9.3f}")
    print(f"ratio: {max(ratios):.3f}")


if __name__ == "__main__":
    main()
