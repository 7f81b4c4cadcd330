"""Long-run soak: a 2-rank real-mode run on replay streams; accounting and memory checked.

Runs `scadles launch --nproc 2` for --minutes of wall clock (default 10) on in-process replay
streams, samples the resident memory (VmRSS) of both rank processes every few seconds, and at the
end checks the buffer identity arrived = trained + dropped + held, that every step was written
once, and that RSS did not grow after warm-up (goal: last-minute mean / second-minute mean <= 1.1).
Prints a table of figures; exits 1 when a check fails. `make soak` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _workers(root: int) -> list[int]:
    """Return the pids of the scadles.training.launch workers below root."""
    parent = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parent[int(proc.name)] = int(
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    found, frontier = [], [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        found += frontier
    out = []
    for pid in found:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        worker = b"scadles.training.launch" in cmd
        if worker and b"torch.distributed.run" not in cmd:  # not torchrun
            out.append(pid)
    return out


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="scadles-soak-")) / "run"
    sets = [
        "data.name=mnist1d", "data.n_train=20000", "data.n_test=2000", "model.name=cnn1d",
        "devices.count=2", "streams.rates=[40, 88]", "live.source=replay",
        f"train.max_time_s={args.minutes * 60:g}", "eval.every=200", "policy.name=scadles",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "scadles.cli", "launch", "--nproc", "2", "--out", str(out)]
    cmd += [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    job = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    samples: list[tuple[float, float]] = []  # (seconds, total RSS MiB of the ranks)
    while job.poll() is None:
        pids = _workers(job.pid)
        try:
            if len(pids) == 2:
                samples.append((time.monotonic() - t0, sum(_rss_mib(q) for q in pids)))
        except OSError:
            pass
        time.sleep(5.0)
    log = job.stdout.read() if job.stdout else ""
    if job.returncode != 0:
        print(log[-3000:])
        print(f"soak: the run failed with exit status {job.returncode}")
        return 1
    s = json.loads((out / "summary.json").read_text())
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    held = s["samples_trained"] + s["samples_dropped"] + s["samples_held"]
    start = [r for t, r in samples if 60 <= t < 120] or [r for _, r in samples[: len(samples) // 4]]
    end = [r for t, r in samples if t >= samples[-1][0] - 60]
    growth = statistics.mean(end) / statistics.mean(start)
    rows = [
        ("wall seconds", f"{time.monotonic() - t0:.0f}"),
        ("steps", f"{s['steps']:,}"),
        ("samples arrived", f"{s['samples_arrived']:,}"),
        ("trained + dropped + held", f"{held:,}"),
        ("broker (replay) counts", f"{sum(s['broker_counts']):,}"),
        ("final top-1", f"{s['final_accuracy']:.4f}"),
        ("RSS of both ranks, 2nd minute (MiB)", f"{statistics.mean(start):.1f}"),
        ("RSS of both ranks, last minute (MiB)", f"{statistics.mean(end):.1f}"),
        ("RSS peak (MiB)", f"{max(r for _, r in samples):.1f}"),
    ]
    for k, v in rows:
        print(f"{k:<40} {v:>14}")
    ok = held == s["samples_arrived"] and [r["step"] for r in steps] == list(
        range(1, s["steps"] + 1)
    )
    ok = ok and s["samples_arrived"] <= sum(s["broker_counts"]) and growth <= 1.1
    print(f"soak: {'ok' if ok else 'FAILED'}")
    print(f"ratio: {growth:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
