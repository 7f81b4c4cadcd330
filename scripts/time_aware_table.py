"""Measure the time-aware exchange against every fixed choice: docs/COMPRESSION.md's table.

Three settings on configs/paper/headline.toml (16 devices, IID, truncation for ScaDLES): the
gradient at the model's own size, at ResNet152's size (clock.emulate_params), and at ResNet152's
size over 100 Mbit/s links (clock.bandwidth_bps); per setting and seed: DDL, dense ScaDLES,
ScaDLES with fixed Top-k 10 % or PowerSGD rank 4, the paper's adaptive Top-k (compress.policy =
"paper") and the time-aware exchange. Runs go to DIR/<setting>/<seed>/<run>; finished runs are
reused. Prints one markdown table: time to 85 % top-1 per seed, speedups, final accuracies.

Usage: python scripts/time_aware_table.py DIR [--seeds 1234,1,2] [--rates normal-S1] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "paper" / "headline.toml"
SETTINGS = {
    "own size": [],
    "ResNet152 size": ["clock.emulate_params=resnet152"],
    "ResNet152 size, 100 Mbit/s": ["clock.emulate_params=resnet152", "clock.bandwidth_bps=1e8"],
}
RUNS = {
    "DDL": ["policy.name=ddl"],
    "dense": ["compress.name=none"],
    "Top-k 10 %": ["compress.name=topk", "compress.policy=fixed", "compress.ratio=0.1"],
    "PowerSGD r4": ["compress.name=powersgd", "compress.policy=fixed", "compress.rank=4"],
    "paper adaptive": ["compress.name=topk", "compress.policy=paper"],
    "time-aware": ["compress.policy=time_aware"],
}
FIXED = ("dense", "Top-k 10 %", "PowerSGD r4")


def run_one(job: tuple[str, list[str]]) -> dict[str, Any]:
    """Run (or reuse) one configuration into its folder; return its summary."""
    import torch

    from scadles.config.load import load_config
    from scadles.training import runner

    where, sets = job
    done = Path(where) / "summary.json"
    if done.is_file():
        return dict(json.loads(done.read_text()), dir=where)
    torch.set_num_threads(1)
    cfg = load_config(CONFIG, [*sets, "run.progress=false"])
    return dict(runner.run(cfg, Path(where), force=True), dir=where)


def fmt(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:.1f}{unit}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", default="1234,1,2")
    ap.add_argument("--rates", default="normal-S1")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    jobs: dict[tuple[str, int, str], tuple[str, list[str]]] = {}
    for setting, ssets in SETTINGS.items():
        for seed in seeds:
            for name, rsets in RUNS.items():
                folder = setting.replace(" ", "_").replace(",", "").replace("/", "")
                where = a.out / folder / str(seed) / name
                sets = [f"train.seed={seed}", f"streams.rates={a.rates}", *ssets, *rsets]
                jobs[setting, seed, name] = (str(where).replace(" ", "_"), sets)
    with ProcessPoolExecutor(a.jobs) as pool:
        results = dict(zip(jobs, pool.map(run_one, jobs.values()), strict=True))
    print(f"rates {a.rates}, seeds {seeds}; time to target (s) per seed, final top-1 (%) mean")
    print("| setting | run | time to 85 % per seed (s) | speedup vs DDL per seed | final % |")
    print("|---|---|---|---|---|")
    for setting in SETTINGS:
        for name in RUNS:
            t = [results[setting, s, name].get("time_to_target_s") for s in seeds]
            d = [results[setting, s, "DDL"].get("time_to_target_s") for s in seeds]
            sp = [None if x is None or y is None else y / x for x, y in zip(t, d, strict=True)]
            acc = [results[setting, s, name]["final_accuracy"] * 100 for s in seeds]
            cols = (
                " / ".join(fmt(x) for x in t),
                " / ".join(fmt(x, "x") if x is None else f"{x:.2f}x" for x in sp),
                f"{statistics.mean(acc):.2f}",
            )
            print(f"| {setting} | {name} | {cols[0]} | {cols[1]} | {cols[2]} |")
        for s in seeds:
            ta = results[setting, s, "time-aware"].get("time_to_target_s")
            best = [results[setting, s, f].get("time_to_target_s") for f in FIXED]
            known = [b for b in best if b is not None]
            if ta is not None and known:
                print(f"<!-- {setting} seed {s}: best fixed / time-aware {min(known) / ta:.3f} -->")
            steps = Path(results[setting, s, "time-aware"]["dir"]) / "steps.jsonl"
            picks = Counter(json.loads(line).get("choice") for line in steps.open())
            print(f"<!-- {setting} seed {s}: time-aware choices {dict(picks)} -->")
        ta_m = [results[setting, s, "time-aware"].get("time_to_target_s") for s in seeds]
        pa_m = [results[setting, s, "paper adaptive"].get("time_to_target_s") for s in seeds]
        if None not in ta_m and None not in pa_m:
            ratio = statistics.mean(pa_m) / statistics.mean(ta_m)  # type: ignore[arg-type]
            print(f"<!-- {setting}: paper adaptive / time-aware, mean times: {ratio:.2f}x -->")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
