"""Real mode: the time-aware exchange on measured costs while the uplink is halved mid-run.

Launches `scadles launch --nproc 2` (gloo on loopback) on replay streams with `live.bandwidth`
emulating each rank's uplink at --bandwidth bit/s and `live.bandwidth_schedule` halving it at
--at seconds; candidates dense and Top-k 1 %. Prints each step's exchange, start time and
communication seconds, then the exchange used before and after the change. Every step's choice
is the same on both ranks: the step's vote stops the run otherwise.

Usage: python scripts/time_aware_live.py OUT [--bandwidth 4e8] [--at 15] [--steps 45]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

SETS = [
    "data.name=synthetic",
    "data.n_train=4000",
    "data.n_test=200",
    "model.name=mlp",
    "model.width=512",  # 4.26M parameters: a 17 MB dense gradient
    "devices.count=4",
    "eval.every=10",
    "streams.rates=[40, 40, 40, 40]",
    "streams.window_s=0.25",
    "live.source=replay",
    "live.bandwidth=true",
    "clock.profile=uniform",
    "policy.name=scadles",
    "compress.policy=time_aware",
    "compress.candidates=['none', 'topk:0.01']",
    "compress.probe_every=8",
]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--bandwidth", type=float, default=4e8)
    ap.add_argument("--at", type=float, default=15.0)
    ap.add_argument("--steps", type=int, default=45)
    a = ap.parse_args(argv)
    sets = [*SETS, f"clock.bandwidth_bps={a.bandwidth}", f"train.steps={a.steps}"]
    sets.append(f"live.bandwidth_schedule=[{{at_s={a.at}, scale=0.5}}]")
    cmd = [sys.executable, "-m", "scadles.cli", "launch", "--nproc", "2", "--out", str(a.out)]
    cmd += ["--force", *(x for s in sets for x in ("--set", s))]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-3000:])
        return done.returncode
    rows = [json.loads(line) for line in (a.out / "steps.jsonl").open()]
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    for r in rows:
        start = r["sim_time_s"] - r["step_time_s"]
        print(
            f"step {r['step']:3d}  start {start:6.2f} s  {r['choice']:10s} comm {r['comm_s']:.3f} s"
        )
        (before if start < a.at else after)[r["choice"]] += 1
    print(f"uplink {a.bandwidth:g} bit/s until {a.at:g} s: {dict(before)}")
    print(f"uplink {a.bandwidth / 2:g} bit/s after: {dict(after)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
