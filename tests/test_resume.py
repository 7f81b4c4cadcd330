"""Exact resume: SIGKILL a run at random steps, resume it, get the uninterrupted run's files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scadles.cli.main import main

ARGS = [
    "--set", "data.name=synthetic",
    "--set", "data.n_train=4000",
    "--set", "data.n_test=300",
    "--set", "model.name=mlp",
    "--set", "model.width=128",
    "--set", "devices.count=8",
    "--set", "streams.rates=\"normal-S2\"",
    "--set", "streams.arrivals=\"poisson\"",
    "--set", "train.steps=60",
    "--set", "eval.every=7",
]  # fmt: skip
VARIANTS = {
    "scadles-dense": ["--set", "compress.name=none"],
    "scadles-topk": ["--set", "compress.name=topk"],
    "ddl-dense": ["--set", "policy.name=ddl"],
    "ddl-topk": ["--set", "policy.name=ddl", "--set", "compress.name=topk"],
}


def lines(p: Path) -> int:
    return len(p.read_text().splitlines()) if p.is_file() else 0


def records(p: Path, drop: str) -> list[dict]:  # type: ignore[type-arg]
    return [
        {k: v for k, v in json.loads(x).items() if k != drop} for x in p.read_text().splitlines()
    ]


def run_until_killed(cmd: list[str], steps: Path, at: int) -> None:
    """Start cmd and SIGKILL it as soon as steps.jsonl has `at` lines (or let it finish)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # generous: a loaded 2-core machine is slow
    while proc.poll() is None and time.monotonic() < deadline:
        if lines(steps) >= at:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=30)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_killed_and_resumed_run_equals_uninterrupted(variant: str, tmp_path: Path) -> None:
    args = [*ARGS, *VARIANTS[variant]]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(["run", *args, "--out", str(ref), "--quiet"]) == 0
    exe = [sys.executable, "-m", "scadles.cli", "run", "--quiet"]
    first = [*exe, *args, "--out", str(run), "--checkpoint-every", "4"]
    again = [*exe, "--resume", str(run), "--checkpoint-every", "4"]
    rng = random.Random(variant)
    kills = sorted(rng.sample(range(6, 55), 3))
    run_until_killed(first, run / "steps.jsonl", kills[0])
    for at in kills[1:]:
        assert not (run / "summary.json").exists()  # it really was killed mid-run
        run_until_killed(again, run / "steps.jsonl", at)
    assert not (run / "summary.json").exists()
    assert subprocess.run(again, capture_output=True).returncode == 0
    assert records(run / "steps.jsonl", "host_s") == records(ref / "steps.jsonl", "host_s")
    assert records(run / "evals.jsonl", "") == records(ref / "evals.jsonl", "")
    a = json.loads((run / "summary.json").read_text())
    b = json.loads((ref / "summary.json").read_text())
    for key in ("host_seconds",):
        a.pop(key), b.pop(key)
    assert a == b


def test_checkpoint_of_another_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert main(["run", *ARGS, "--out", str(out), "--checkpoint-every", "5", "--quiet"]) == 0
    assert main(["run", *ARGS, "--set", "train.lr=0.3", "--resume", str(out), "--quiet"]) == 2
    assert "train.lr" in capsys.readouterr().err
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    assert "corrupt checkpoint" in capsys.readouterr().err
