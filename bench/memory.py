"""Host memory of a 1,000-device simulation stays flat: peak RSS after 1,000 and 10,000 steps.

Each length runs `scadles.training.runner.run` (synthetic data, a width-8 MLP, ScaDLES, 1,000
devices of 1-2 samples per step, steps.jsonl and evals.jsonl streamed into a temporary folder)
in a fresh
subprocess. RSS (VmRSS) is sampled every 100 steps of the training loop; "loop peak" is the largest
sample, "growth" the last sample minus the first (at step 100). "process peak" is ru_maxrss, which
also counts set-up (the per-device label plot). Printed last: the ratio of the loop peaks,
10,000 / 1,000 steps (goal <= 1.1).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scadles.config.load import load_config, replace_key
from scadles.training import runner

DEVICES = 1000
LENGTHS = (1000, 10000)
SAMPLE_EVERY = 100
OVERRIDES = [
    "data.name=synthetic",
    "data.n_train=4000",
    "data.n_test=500",
    "model.name=mlp",
    "model.width=8",
    f"devices.count={DEVICES}",
    'streams.rates={dist = "normal", mean = 2, std = 1}',
    "policy.b_min=1",
    "policy.b_max=2",
    "eval.every=500",
    "eval.target_accuracy=0.99",
]


def rss_mib() -> float:
    """Return this process's resident set size (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(steps: int) -> dict[str, float]:
    """Run one simulation of `steps` steps; return its memory figures."""
    torch.set_num_threads(1)
    cfg = load_config(None, [*OVERRIDES, f"train.steps={steps}"])
    cfg = replace_key(cfg, "train.max_time_s", None)  # the demo's time budget would end it early
    samples: list[float] = []

    def sample(done: float, total: float, text: str) -> None:
        if int(done) % SAMPLE_EVERY == 0:
            samples.append(rss_mib())

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scadles-mem-") as d:
        runner.run(cfg, Path(d), progress=sample)
        jsonl_mib = (Path(d) / "steps.jsonl").stat().st_size / 2**20
        lines = sum(1 for _ in (Path(d) / "steps.jsonl").open())
    if lines != steps:
        raise RuntimeError(f"the run stopped after {lines} of {steps} steps")
    return {
        "steps": steps,
        "loop_peak_mib": max(samples),
        "growth_mib": samples[-1] - samples[0],
        "process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps_jsonl_mib": jsonl_mib,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]))))
        return
    res = {}
    for steps in LENGTHS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(steps)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = res[steps] = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"K={DEVICES} steps={steps:6d}: loop peak {r['loop_peak_mib']:7.1f} MiB, "
            f"growth {r['growth_mib']:+6.1f} MiB, process peak {r['process_peak_mib']:7.1f} MiB, "
            f"steps.jsonl {r['steps_jsonl_mib']:6.1f} MiB, {r['seconds']:5.1f} s"
        )
    a, b = (res[n]["loop_peak_mib"] for n in LENGTHS)
    print(f"ratio: {b / a:.3f}")


if __name__ == "__main__":
    main()
