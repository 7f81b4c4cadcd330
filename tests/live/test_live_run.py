"""Real mode end to end: `scadles launch --nproc 2` training from live streams.

Real torchrun processes on gloo, real brokers (Tansu for Kafka, redis-server), data published by
`scadles produce`. Checked: the run finishes, the buffer identity arrived = trained + dropped +
held holds on every device, and it agrees with the broker's own count of messages; a redis-server
restart mid-run loses no sample; a rank killed under --max-restarts=1 is restarted and the job
finishes from its checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.dist

SETS = [
    "data.name=synthetic",
    "data.n_train=1000",
    "data.n_test=200",
    "model.name=mlp",
    "devices.count=2",
    "eval.every=4",
    "live.stall_s=3",
]


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "scadles.cli", *argv]


def _sets(extra: list[str]) -> list[str]:
    return [a for s in SETS + extra for a in ("--set", s)]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path.cwd()))


def _produce(broker: str, url: str, extra: list[str], *count: str) -> subprocess.Popen[str]:
    cmd = _cli("produce", *_sets(extra), "--broker", broker, "--url", url, *count)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _launch(out: Path, extra: list[str], *flags: str) -> subprocess.Popen[str]:
    cmd = _cli("launch", "--nproc", "2", *_sets(extra), "--out", str(out), *flags)
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 180.0) -> str:
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
        raise AssertionError(f"timed out:\n{text[-3000:]}") from None
    assert proc.returncode == 0, text[-3000:]
    return text


def _summary(out: Path) -> dict[str, Any]:
    s: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert s["samples_arrived"] == s["samples_trained"] + s["samples_dropped"] + s["samples_held"]
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == list(range(1, s["steps"] + 1))
    assert sum(r["batch_total"] for r in steps) == s["samples_trained"]
    return s


def test_kafka_run_matches_the_brokers_counts(
    kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    # ddl: batch 64 per device, persistence; 300 messages per topic, then the streams end
    extra = ["policy.name=ddl", "streams.rates=[2000, 2000]", f"live.prefix={uid}"]
    extra += ["live.source=kafka", f"live.url={kafka_bootstrap}", "train.max_time_s=600"]
    _finish(_produce("kafka", kafka_bootstrap, extra, "--count", "300"), 60)
    out = tmp_path / "run"
    _finish(_launch(out, extra))
    s = _summary(out)
    assert s["broker_counts"] == [300, 300]
    assert s["samples_arrived"] + s["samples_skipped"] == 600  # every message was consumed
    assert s["steps"] == 300 // 64
    assert s["samples_trained"] == 2 * 64 * (300 // 64)
    assert s["samples_held"] == 2 * (300 % 64) and s["samples_dropped"] == 0


def _redis_group(url: str, stream: str) -> dict[str, int]:
    """Return the stream's length and the group's delivered and pending counts."""
    import redis

    r = redis.Redis.from_url(url)
    try:
        (info,) = [g for g in r.xinfo_groups(stream) if g["name"] == b"scadles"]
        return {
            "length": int(r.xlen(stream)),
            "delivered": int(info["entries-read"]),
            "pending": int(info["pending"]),
        }
    finally:
        r.close()


def _wait_for(path: Path, lines: int, proc: subprocess.Popen[str]) -> None:
    """Wait until the file exists with at least `lines` lines while proc runs."""
    deadline = time.monotonic() + 120
    while not (path.is_file() and len(path.read_text().splitlines()) >= lines):
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the run ended with status {proc.returncode}:\n{out[-3000:]}")
        assert time.monotonic() < deadline, f"{path.name} did not reach {lines} lines in 120 s"
        time.sleep(0.05)


def _redis_run(url: str, uid: str, tmp_path: Path, restart: Any) -> None:
    # ScaDLES: batch = what arrived in the window (~ rate x window = 100), truncation; the
    # producer streams while training runs
    extra = ["policy.name=scadles", "streams.rates=[200, 200]", "streams.window_s=0.5"]
    extra += [f"live.prefix={uid}", "live.source=redis", f"live.url={url}"]
    extra += ["train.steps=8", "live.stall_s=60"]
    out = tmp_path / "run"
    trainer = _launch(out, extra)
    _wait_for(out / "config.json", 1, trainer)
    producer = _produce("redis", url, extra, "--count", "1000")
    if restart is not None:  # restart the server (append-only file) once training is under way
        _wait_for(out / "steps.jsonl", 2, trainer)
        restart.stop()
        time.sleep(0.5)
        restart.start()
    _finish(trainer)
    sent = _finish(producer, 120)
    s = _summary(out)
    assert s["steps"] == 8
    assert "sent 2000 samples" in sent
    groups = [_redis_group(url, f"{uid}-{d}") for d in range(2)]
    # nothing lost by the broker (a publish retried after a lost reply may add a duplicate)
    assert all(g["length"] >= 1000 for g in groups)
    # acknowledged: everything trained or dropped; pending: what the buffers still hold
    assert sum(g["pending"] for g in groups) == s["samples_held"]
    # every delivered message was trained, dropped on purpose, held at the end, or skipped
    assert s["samples_arrived"] + s["samples_skipped"] == sum(g["delivered"] for g in groups)
    # ScaDLES trains on what each stream delivered during the window, within [b_min, b_max]
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert s["samples_trained"] == sum(r["batch_total"] for r in rows) > 0
    assert all(8 <= b <= 1024 for r in rows for b in r["batch_sizes"]), rows


def test_redis_run_matches_the_brokers_counts(redis_url: str, uid: str, tmp_path: Path) -> None:
    _redis_run(redis_url, uid, tmp_path, None)


def test_redis_restart_mid_run_loses_no_sample(redis_aof: Any, uid: str, tmp_path: Path) -> None:
    _redis_run(f"redis://127.0.0.1:{redis_aof.port}/0", uid, tmp_path, redis_aof)


def _descendants(root: int) -> list[int]:
    """Return the pids of every process below root."""
    parent = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            parent[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _rank_pids(root: int, rank: int) -> list[int]:
    """Return the pids of the `scadles.training.launch` workers of this rank under root."""
    pids = []
    for pid in _descendants(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"scadles.training.launch" in cmd and f"\0RANK={rank}\0".encode() in b"\0" + env:
            pids.append(pid)
    return pids


def test_killed_rank_restarts_and_finishes_from_its_checkpoint(tmp_path: Path) -> None:
    extra = ["policy.name=scadles", "streams.rates=[200, 200]", "streams.window_s=0.5"]
    extra += ["live.source=replay", "train.steps=12"]
    out = tmp_path / "run"
    job = _launch(out, extra, "--max-restarts", "1", "--checkpoint-every", "3")
    steps = out / "steps.jsonl"
    deadline = time.monotonic() + 120
    while not (steps.is_file() and len(steps.read_text().splitlines()) >= 5):
        assert time.monotonic() < deadline and job.poll() is None, "no steps"
        time.sleep(0.05)
    (pid,) = _rank_pids(job.pid, 1)
    os.kill(pid, signal.SIGKILL)
    text = _finish(job)
    assert "exitcode: -9" in text  # torchrun saw the kill, restarted, and the job finished
    s = _summary(out)  # steps 1..12 exactly once, identity intact
    assert s["steps"] == 12
    assert (out / "checkpoint-rank1.pt").is_file()
    assert not _rank_pids(job.pid, 1)


def test_bandwidth_emulation_charges_each_step_its_bytes(tmp_path: Path) -> None:
    # a 1 Mbit/s uplink: each step's gradient all-reduce must take at least its bytes / rate
    extra = ["policy.name=ddl", "streams.rates=[400, 400]", "live.source=replay"]
    extra += ["train.steps=5", "live.bandwidth=true", "clock.bandwidth_bps=1e6"]
    out = tmp_path / "run"
    _finish(_launch(out, extra))
    s = _summary(out)
    import torch

    params = sum(t.numel() for t in torch.load(out / "model.pt").values())
    sent = 2.0 * (2 - 1) / 2 * 4 * params  # ring all-reduce bytes per rank, float32 gradient
    floor = sent / (1e6 / 8)  # seconds at 125 kB/s
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert s["steps"] == 5 and floor > 0.2
    assert all(floor * 0.95 <= r["comm_s"] <= floor * 3 + 1.0 for r in steps[1:]), (floor, steps)


def test_bandwidth_schedule_halves_the_uplink_mid_run(tmp_path: Path) -> None:
    # the same 1 Mbit/s uplink, halved from 2 s of the run on: later steps take twice the floor
    extra = ["policy.name=ddl", "streams.rates=[400, 400]", "live.source=replay"]
    extra += ["train.steps=8", "live.bandwidth=true", "clock.bandwidth_bps=1e6"]
    extra += ["live.bandwidth_schedule=[{at_s=2.0,scale=0.5}]"]
    out = tmp_path / "run"
    _finish(_launch(out, extra))
    import torch

    params = sum(t.numel() for t in torch.load(out / "model.pt").values())
    floor = 4 * params / (1e6 / 8)  # seconds of a 2-rank ring all-reduce at 125 kB/s
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    late = [r for r in steps if r["sim_time_s"] - r["step_time_s"] >= 2.0]
    assert late and all(r["comm_s"] >= 2 * floor * 0.95 for r in late), (floor, steps)
    early = [r for r in steps[1:] if r["sim_time_s"] < 2.0]
    assert all(r["comm_s"] < 2 * floor * 0.95 for r in early), (floor, steps)


def test_time_aware_real_mode_probes_its_candidates_and_ranks_agree(tmp_path: Path) -> None:
    # measured costs: every candidate is probed once at the start, all ranks pick the same
    # candidate every step (the vote stops the run otherwise), and the choice is logged
    extra = ["policy.name=scadles", "streams.rates=[200, 200]", "streams.window_s=0.5"]
    extra += ["live.source=replay", "train.steps=10", "live.bandwidth=true"]
    extra += ["clock.bandwidth_bps=1e7", "compress.policy=time_aware", "compress.probe_every=4"]
    out = tmp_path / "run"
    _finish(_launch(out, extra))
    s = _summary(out)
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    choices = [r["choice"] for r in steps]
    assert s["steps"] == 10
    assert set(choices) == {"none", "fp16", "topk:0.1", "powersgd:4"}, choices
